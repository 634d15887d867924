//! Protocol errors, worded exactly as Redis words them.

use std::fmt;

/// A violation of the protocol or of a configured limit. The connection that produced it
/// gets `-ERR <Display>` and is closed, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A bulk length that is not a number, negative, or over the configured limit.
    InvalidBulkLength,
    /// A multibulk count that is not a number or over the configured limit.
    InvalidMultibulkLength,
    /// An element of a request array that is not a bulk string.
    ExpectedDollar(u8),
    /// An inline request line longer than the inline limit.
    TooBigInline,
    /// A multibulk count line longer than the inline limit without its CRLF.
    TooBigMbulkCount,
    /// A bulk count line longer than the inline limit without its CRLF.
    TooBigBulkCount,
    /// Inline request with a quote that is never closed (or not followed by a space).
    UnbalancedQuotes,
    /// A reply frame type byte this decoder does not know.
    InvalidType(u8),
    /// A malformed number in an integer, double, boolean or count line.
    InvalidNumber(&'static str),
    /// A frame without its CRLF terminator where one must be.
    MissingCrlf,
    /// Aggregates nested deeper than the configured limit.
    TooDeep,
    /// A request larger than the decoder can address.
    TooBigRequest,
}

/// Redis prints the offending byte as a character.
fn show(b: u8) -> String {
    (b as char).to_string()
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::ExpectedDollar(b) => write!(f, "expected '$', got '{}'", show(*b)),
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::TooBigMbulkCount => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::InvalidType(b) => write!(f, "invalid frame type '{}'", show(*b)),
            ProtocolError::InvalidNumber(what) => write!(f, "invalid {what}"),
            ProtocolError::MissingCrlf => f.write_str("expected CRLF"),
            ProtocolError::TooDeep => f.write_str("nesting too deep"),
            ProtocolError::TooBigRequest => f.write_str("too big request"),
        }
    }
}

impl ProtocolError {
    /// The complete error reply line, `-ERR Protocol error: ...\r\n`.
    pub fn to_reply(&self) -> Vec<u8> {
        format!("-ERR {self}\r\n").into_bytes()
    }
}
