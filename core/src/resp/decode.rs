//! The reply-side decoder: any RESP2/RESP3 frame.
//!
//! Decoding is check-then-parse. [`FrameDecoder::check`] walks the buffer without allocating
//! and returns the length of the next whole frame, or `None` (incomplete). It is resumable:
//! a partial frame is not scanned again from its start when more bytes arrive, so a huge
//! reply arriving in many reads costs linear time. Only a whole frame is parsed, and its
//! strings are zero-copy slices of the frame's bytes.

use bytes::{Bytes, BytesMut};

use super::{Frame, Limits, ProtocolError};
use crate::num::{parse_f64, parse_i64, scan_count};

/// Incremental decoder for reply frames (RESP2 and RESP3).
#[derive(Debug, Default)]
pub struct FrameDecoder {
    limits: Limits,
    /// Offset of the first token not yet checked in the current frame.
    pos: usize,
    /// Elements still expected by each open aggregate of the current frame.
    stack: Vec<usize>,
}

/// Result of scanning one token header line.
enum Line {
    Incomplete,
    /// Content range (after the type byte, before `\r`) and offset after `\n`.
    Whole(usize, usize, usize),
}

/// Finds the header line starting at `start` (which holds the type byte).
#[inline]
fn header_line(buf: &[u8], start: usize) -> Result<Line, ProtocolError> {
    match memchr::memchr(b'\n', &buf[start + 1..]) {
        None => Ok(Line::Incomplete),
        Some(off) => {
            let nl = start + 1 + off;
            if nl == start + 1 || buf[nl - 1] != b'\r' {
                return Err(ProtocolError::MissingCrlf);
            }
            Ok(Line::Whole(start + 1, nl - 1, nl + 1))
        }
    }
}

/// Count lines are short; without a CRLF in the first 64 KiB something is wrong.
#[inline]
fn guard_count_line(buf: &[u8], start: usize, limits: &Limits) -> Result<(), ProtocolError> {
    if buf.len() - start > limits.max_inline_len {
        Err(ProtocolError::InvalidNumber("count line"))
    } else {
        Ok(())
    }
}

/// The length of a whole `+text\r\n` (short) or `$len\r\ndata\r\n` frame at the start of
/// `buf`, or `None` for anything else (the caller then runs the full check).
#[inline]
fn fast_simple_or_bulk(buf: &[u8], max_bulk: usize) -> Option<usize> {
    match *buf.first()? {
        b'+' => {
            let cr = buf
                .iter()
                .take(64)
                .position(|&c| c == b'\r' || c == b'\n')?;
            (buf.get(cr) == Some(&b'\r') && buf.get(cr + 1) == Some(&b'\n')).then_some(cr + 2)
        }
        b'$' => {
            // The number as the full parser reads it (no leading zeros): the fast path must
            // accept nothing it would refuse. A null bulk (`$-1`) takes the full path.
            let (len, cr) = scan_count(buf, 1)?;
            if len < 0 || len as u64 > max_bulk as u64 || buf.get(cr + 1) != Some(&b'\n') {
                return None;
            }
            let end = cr + 2 + len as usize + 2;
            (end <= buf.len() && &buf[end - 2..end] == b"\r\n").then_some(end)
        }
        _ => None,
    }
}

impl FrameDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> Self {
        FrameDecoder {
            limits,
            pos: 0,
            stack: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets a partial scan (call when the buffer was replaced).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.stack.clear();
    }

    /// Returns the byte length of the whole frame at the start of `buf`, or `None` when more
    /// bytes are needed. The caller must not change the bytes already scanned between calls
    /// that return `None` (appending is fine).
    pub fn check(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        // The replies a proxy forwards most: a whole `+simple` or `$bulk` at rest. Anything
        // else, partial or malformed takes the full path (which also reports the errors).
        if self.pos == 0 && self.stack.is_empty() {
            if let Some(n) = fast_simple_or_bulk(buf, self.limits.max_bulk_len) {
                return Ok(Some(n));
            }
        }
        let r = self.check_inner(buf);
        if !matches!(r, Ok(None)) {
            self.reset();
        }
        r
    }

    fn check_inner(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            let start = self.pos;
            if start >= buf.len() {
                return Ok(None);
            }
            let ty = buf[start];
            let (a, b, next) = match header_line(buf, start)? {
                Line::Incomplete => {
                    if !matches!(ty, b'+' | b'-') {
                        guard_count_line(buf, start, &self.limits)?;
                    }
                    return Ok(None);
                }
                Line::Whole(a, b, next) => (a, b, next),
            };
            let body = &buf[a..b];
            // `Some(n)`: an aggregate of n elements opens; `None`: a whole element ended at `end`.
            let mut end = next;
            let mut open: Option<usize> = None;
            match ty {
                b'+' | b'-' | b'(' => {}
                b':' => {
                    parse_i64(body).ok_or(ProtocolError::InvalidNumber("integer"))?;
                }
                b'_' => {
                    if !body.is_empty() {
                        return Err(ProtocolError::InvalidNumber("null"));
                    }
                }
                b'#' => {
                    if body != b"t" && body != b"f" {
                        return Err(ProtocolError::InvalidNumber("boolean"));
                    }
                }
                b',' => {
                    parse_f64(body).ok_or(ProtocolError::InvalidNumber("double"))?;
                }
                b'$' | b'!' | b'=' => {
                    let len = parse_i64(body).ok_or(ProtocolError::InvalidBulkLength)?;
                    if len == -1 && ty == b'$' {
                        // null bulk
                    } else {
                        if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                            return Err(ProtocolError::InvalidBulkLength);
                        }
                        if ty == b'=' && len < 4 {
                            return Err(ProtocolError::InvalidBulkLength);
                        }
                        end = next + len as usize + 2;
                        if end > buf.len() {
                            return Ok(None);
                        }
                        if &buf[end - 2..end] != b"\r\n" {
                            return Err(ProtocolError::MissingCrlf);
                        }
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let n = parse_i64(body).ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if n == -1 && ty == b'*' {
                        // null array
                    } else {
                        if n < 0 || n as u64 > self.limits.max_array_len as u64 {
                            return Err(ProtocolError::InvalidMultibulkLength);
                        }
                        let n = n as usize * if matches!(ty, b'%' | b'|') { 2 } else { 1 };
                        // An attribute is followed by the frame it annotates.
                        let n = if ty == b'|' { n + 1 } else { n };
                        if n > 0 {
                            if self.stack.len() >= self.limits.max_depth {
                                return Err(ProtocolError::TooDeep);
                            }
                            open = Some(n);
                        }
                    }
                }
                other => return Err(ProtocolError::InvalidType(other)),
            }
            self.pos = end;
            if let Some(n) = open {
                self.stack.push(n);
                continue;
            }
            // An element ended: close every aggregate it completes.
            loop {
                match self.stack.last_mut() {
                    None => return Ok(Some(end)),
                    Some(rem) => {
                        *rem -= 1;
                        if *rem == 0 {
                            self.stack.pop();
                        } else {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Decodes the next whole frame, removing its bytes from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        match self.check(buf)? {
            None => Ok(None),
            Some(n) => {
                let bytes = buf.split_to(n).freeze();
                let mut pos = 0;
                Ok(Some(parse_checked(&bytes, &mut pos)))
            }
        }
    }

    /// Removes the next whole frame from `buf` and returns its raw bytes, unparsed (for
    /// forwarding replies as they are).
    pub fn decode_raw(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, ProtocolError> {
        match self.check(buf)? {
            None => Ok(None),
            Some(n) => Ok(Some(buf.split_to(n).freeze())),
        }
    }
}

/// Parses a frame that [`FrameDecoder::check`] has accepted. Never fails on checked input.
pub fn parse_checked(b: &Bytes, pos: &mut usize) -> Frame {
    let start = *pos;
    let ty = b[start];
    let nl = start + 1 + memchr::memchr(b'\n', &b[start + 1..]).expect("checked frame");
    let body = &b[start + 1..nl - 1];
    *pos = nl + 1;
    let int = |s: &[u8]| parse_i64(s).expect("checked frame");
    match ty {
        b'+' => Frame::Simple(b.slice(start + 1..nl - 1)),
        b'-' => Frame::Error(b.slice(start + 1..nl - 1)),
        b'(' => Frame::BigNumber(b.slice(start + 1..nl - 1)),
        b':' => Frame::Integer(int(body)),
        b'_' => Frame::Null,
        b'#' => Frame::Boolean(body == b"t"),
        b',' => Frame::Double(parse_f64(body).expect("checked frame")),
        b'$' | b'!' | b'=' => {
            let len = int(body);
            if len < 0 {
                return Frame::NullBulk;
            }
            let data = b.slice(*pos..*pos + len as usize);
            *pos += len as usize + 2;
            match ty {
                b'$' => Frame::Bulk(data),
                b'!' => Frame::BulkError(data),
                _ => {
                    let mut format = [0u8; 3];
                    format.copy_from_slice(&data[..3]);
                    Frame::Verbatim {
                        format,
                        text: data.slice(4..),
                    }
                }
            }
        }
        b'*' | b'~' | b'>' => {
            let n = int(body);
            if n < 0 {
                return Frame::NullArray;
            }
            let items: Vec<Frame> = (0..n).map(|_| parse_checked(b, pos)).collect();
            match ty {
                b'*' => Frame::Array(items),
                b'~' => Frame::Set(items),
                _ => Frame::Push(items),
            }
        }
        b'%' => {
            let n = int(body);
            Frame::Map(
                (0..n)
                    .map(|_| (parse_checked(b, pos), parse_checked(b, pos)))
                    .collect(),
            )
        }
        b'|' => {
            // Attributes carry out-of-band metadata; skip them and return the annotated frame.
            let n = int(body);
            for _ in 0..2 * n {
                parse_checked(b, pos);
            }
            parse_checked(b, pos)
        }
        _ => unreachable!("checked frame"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(input: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        FrameDecoder::default().decode(&mut buf)
    }

    #[test]
    fn fast_path_agrees_with_the_full_check() {
        let inputs: &[&[u8]] = &[
            b"+OK\r\n",
            b"+OK\r",
            b"+O\rK\r\n",
            b"+\r\n",
            b"$3\r\nabc\r\n",
            b"$3\r\nabc\r\n+OK\r\n",
            b"$3\r\nabc\r",
            b"$3\r\nabcd\r\n",
            b"$0\r\n\r\n",
            b"$03\r\nabc\r\n",
            b"$-1\r\n",
            b"$\r\n",
            b"$12345678901\r\n",
            b"$3\rxabc\r\n",
            b"$4294967296\r\n",
            b":12\r\n",
            b"*1\r\n$1\r\na\r\n",
        ];
        for input in inputs {
            for cut in 0..=input.len() {
                let buf = &input[..cut];
                let mut fast = FrameDecoder::default();
                let mut slow = FrameDecoder::default();
                let want = slow.check_inner(buf);
                let got = fast.check(buf);
                assert_eq!(
                    format!("{got:?}"),
                    format!("{want:?}"),
                    "{:?}",
                    String::from_utf8_lossy(buf)
                );
            }
        }
    }

    #[test]
    fn resp2_types() {
        assert_eq!(dec(b"+OK\r\n").unwrap(), Some(Frame::simple("OK")));
        assert_eq!(dec(b"-ERR x\r\n").unwrap(), Some(Frame::error("ERR x")));
        assert_eq!(dec(b":-42\r\n").unwrap(), Some(Frame::Integer(-42)));
        assert_eq!(dec(b"$3\r\nabc\r\n").unwrap(), Some(Frame::bulk("abc")));
        assert_eq!(dec(b"$0\r\n\r\n").unwrap(), Some(Frame::bulk("")));
        assert_eq!(dec(b"$-1\r\n").unwrap(), Some(Frame::NullBulk));
        assert_eq!(dec(b"*-1\r\n").unwrap(), Some(Frame::NullArray));
        assert_eq!(dec(b"*0\r\n").unwrap(), Some(Frame::Array(vec![])));
        assert_eq!(
            dec(b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n").unwrap(),
            Some(Frame::Array(vec![
                Frame::Array(vec![Frame::Integer(1)]),
                Frame::bulk("x")
            ]))
        );
    }

    #[test]
    fn resp3_types() {
        assert_eq!(dec(b"_\r\n").unwrap(), Some(Frame::Null));
        assert_eq!(dec(b"#t\r\n").unwrap(), Some(Frame::Boolean(true)));
        assert_eq!(dec(b",1.25\r\n").unwrap(), Some(Frame::Double(1.25)));
        assert_eq!(
            dec(b",-inf\r\n").unwrap(),
            Some(Frame::Double(f64::NEG_INFINITY))
        );
        assert_eq!(
            dec(b"(123456789012345678901234\r\n").unwrap(),
            Some(Frame::BigNumber(Bytes::from_static(
                b"123456789012345678901234"
            )))
        );
        assert_eq!(
            dec(b"=8\r\ntxt:abcd\r\n").unwrap(),
            Some(Frame::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"abcd")
            })
        );
        assert_eq!(
            dec(b"%1\r\n+a\r\n:1\r\n").unwrap(),
            Some(Frame::Map(vec![(Frame::simple("a"), Frame::Integer(1))]))
        );
        assert_eq!(
            dec(b"~1\r\n+a\r\n").unwrap(),
            Some(Frame::Set(vec![Frame::simple("a")]))
        );
        assert_eq!(
            dec(b">2\r\n+message\r\n+x\r\n").unwrap(),
            Some(Frame::Push(vec![
                Frame::simple("message"),
                Frame::simple("x")
            ]))
        );
        assert_eq!(
            dec(b"!3\r\nERR\r\n").unwrap(),
            Some(Frame::BulkError(Bytes::from_static(b"ERR")))
        );
        assert_eq!(
            dec(b"|1\r\n+k\r\n+v\r\n:5\r\n").unwrap(),
            Some(Frame::Integer(5))
        );
    }

    #[test]
    fn incomplete_and_resume() {
        let whole = b"*3\r\n$3\r\nfoo\r\n%1\r\n:1\r\n:2\r\n$5\r\nhello\r\n";
        let mut d = FrameDecoder::default();
        let mut buf = BytesMut::new();
        for (i, &c) in whole.iter().enumerate() {
            buf.extend_from_slice(&[c]);
            let r = d.decode(&mut buf).unwrap();
            if i + 1 < whole.len() {
                assert!(r.is_none(), "complete too early at {i}");
            } else {
                assert!(r.is_some());
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(dec(b"?x\r\n"), Err(ProtocolError::InvalidType(b'?')));
        assert_eq!(dec(b"$x\r\n"), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(dec(b"$-2\r\n"), Err(ProtocolError::InvalidBulkLength));
        assert_eq!(dec(b"*x\r\n"), Err(ProtocolError::InvalidMultibulkLength));
        assert_eq!(dec(b"$1\r\nab\r\n"), Err(ProtocolError::MissingCrlf));
        assert_eq!(dec(b":1\n"), Err(ProtocolError::MissingCrlf));
        let mut deep = Vec::new();
        for _ in 0..200 {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(dec(&deep), Err(ProtocolError::TooDeep));
        let limits = Limits {
            max_bulk_len: 4,
            max_array_len: 2,
            ..Limits::default()
        };
        let mut d = FrameDecoder::new(limits);
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"$5\r\nhello\r\n"[..])),
            Err(ProtocolError::InvalidBulkLength)
        );
        assert_eq!(
            d.decode(&mut BytesMut::from(&b"*3\r\n"[..])),
            Err(ProtocolError::InvalidMultibulkLength)
        );
    }

    #[test]
    fn raw_passthrough() {
        let mut buf = BytesMut::from(&b"+OK\r\n:1\r\n"[..]);
        let mut d = FrameDecoder::default();
        assert_eq!(&d.decode_raw(&mut buf).unwrap().unwrap()[..], b"+OK\r\n");
        assert_eq!(&d.decode_raw(&mut buf).unwrap().unwrap()[..], b":1\r\n");
        assert!(d.decode_raw(&mut buf).unwrap().is_none());
    }
}
