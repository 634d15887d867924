//! Just enough RESP to count replies: the length of one complete reply and what kind it is.

/// What a reply was, as far as the statistics care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything that is neither an error nor nil.
    Value,
    /// Null bulk, null array, RESP3 null.
    Nil,
    /// `-...` or a RESP3 bulk error.
    Error,
}

fn line(buf: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', buf).map(|i| i + 1)
}

fn int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim_end().parse().ok()
}

/// Length and kind of the complete reply at the start of `buf`, or None if more bytes are
/// needed.
pub fn skip_reply(buf: &[u8]) -> Option<(usize, Kind)> {
    let first = *buf.first()?;
    let end = line(buf)?;
    let head = &buf[1..end.saturating_sub(2).max(1)];
    match first {
        b'+' | b':' | b',' | b'#' | b'(' => Some((end, Kind::Value)),
        b'-' => Some((end, Kind::Error)),
        b'_' => Some((end, Kind::Nil)),
        b'$' | b'=' | b'!' => {
            let n = int(head)?;
            if n < 0 {
                return Some((end, Kind::Nil));
            }
            let total = end + n as usize + 2;
            (buf.len() >= total).then_some((
                total,
                if first == b'!' {
                    Kind::Error
                } else {
                    Kind::Value
                },
            ))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = int(head)?;
            if n < 0 {
                return Some((end, Kind::Nil));
            }
            let items = if matches!(first, b'%' | b'|') {
                2 * n
            } else {
                n
            } as usize;
            let mut pos = end;
            for _ in 0..items {
                let (len, _) = skip_reply(&buf[pos..])?;
                pos += len;
            }
            if first == b'|' {
                // An attribute precedes the real reply.
                let (len, kind) = skip_reply(&buf[pos..])?;
                return Some((pos + len, kind));
            }
            Some((pos, Kind::Value))
        }
        _ => Some((end, Kind::Error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_lengths() {
        assert_eq!(skip_reply(b"+OK\r\n"), Some((5, Kind::Value)));
        assert_eq!(skip_reply(b"-ERR x\r\nrest"), Some((8, Kind::Error)));
        assert_eq!(skip_reply(b"$-1\r\n"), Some((5, Kind::Nil)));
        assert_eq!(skip_reply(b"$3\r\nabc\r\n"), Some((9, Kind::Value)));
        assert_eq!(skip_reply(b"$3\r\nab"), None);
        assert_eq!(
            skip_reply(b"*2\r\n$1\r\na\r\n:5\r\n"),
            Some((15, Kind::Value))
        );
        assert_eq!(skip_reply(b"*2\r\n$1\r\na\r\n"), None);
        assert_eq!(skip_reply(b"*-1\r\n"), Some((5, Kind::Nil)));
        assert_eq!(skip_reply(b"%1\r\n+a\r\n:1\r\n"), Some((12, Kind::Value)));
        assert_eq!(skip_reply(b"_\r\n"), Some((3, Kind::Nil)));
        assert_eq!(skip_reply(b""), None);
    }
}
