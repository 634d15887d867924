//! The RESP2 and RESP3 frame types.

use bytes::Bytes;

/// One RESP value, as read from or written to the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+text`
    Simple(Bytes),
    /// `-ERR text`
    Error(Bytes),
    /// `:123`
    Integer(i64),
    /// `$3\r\nabc`
    Bulk(Bytes),
    /// `$-1`: RESP2's null bulk string.
    NullBulk,
    /// `*-1`: RESP2's null array.
    NullArray,
    /// `*2\r\n...`
    Array(Vec<Frame>),
    /// `_`: RESP3 null.
    Null,
    /// `#t` / `#f`
    Boolean(bool),
    /// `,1.5`, `,inf`, `,-inf`, `,nan`
    Double(f64),
    /// `(12345678901234567890`
    BigNumber(Bytes),
    /// `!5\r\nERR x`: RESP3 bulk error.
    BulkError(Bytes),
    /// `=15\r\ntxt:Some string`
    Verbatim {
        /// The three-letter format (`txt`, `mkd`).
        format: [u8; 3],
        /// The text after `fmt:`.
        text: Bytes,
    },
    /// `%2\r\n...`: key/value pairs in order.
    Map(Vec<(Frame, Frame)>),
    /// `~2\r\n...`
    Set(Vec<Frame>),
    /// `>3\r\n...`: out-of-band data (pub/sub messages in RESP3).
    Push(Vec<Frame>),
}

impl Frame {
    /// A simple string from static text.
    pub fn simple(s: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(s.as_bytes()))
    }

    /// An error reply; `msg` includes the code (`ERR ...`, `WRONGTYPE ...`).
    pub fn error(msg: impl Into<String>) -> Frame {
        Frame::Error(Bytes::from(msg.into()))
    }

    /// A bulk string copied from a slice.
    pub fn bulk(b: impl AsRef<[u8]>) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(b.as_ref()))
    }

    /// An array of bulk strings, handy for building requests.
    pub fn command<I, B>(args: I) -> Frame
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        Frame::Array(args.into_iter().map(Frame::bulk).collect())
    }

    /// Whether this frame is an error (`-` or `!`).
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_) | Frame::BulkError(_))
    }

    /// The payload of a string-like frame.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Simple(b)
            | Frame::Error(b)
            | Frame::Bulk(b)
            | Frame::BigNumber(b)
            | Frame::BulkError(b) => Some(b),
            Frame::Verbatim { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The integer of an `Integer` frame.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Frame::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The elements of an array-like frame.
    pub fn as_array(&self) -> Option<&[Frame]> {
        match self {
            Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => Some(v),
            _ => None,
        }
    }
}
