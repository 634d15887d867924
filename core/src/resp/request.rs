//! The request-side decoder: what a Redis server accepts from clients.
//!
//! Two forms, as Redis takes them: a multibulk array of bulk strings (`*2\r\n$3\r\nGET...`)
//! and an inline line (`GET key\r\n`, as telnet or `redis-cli` in some modes send), split
//! with Redis's quoting rules. A multibulk request keeps its raw bytes, so a proxy can
//! forward it without encoding it again; arguments are zero-copy slices of those bytes.
//! The scan is resumable: a big request arriving in many reads is not rescanned.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use super::{Limits, ProtocolError};
use crate::num::{parse_i64, scan_count};

type Spans = SmallVec<[(u32, u32); 6]>;

/// One client request: the command name and its arguments. `Request` owns its bytes;
/// [`RequestView`] borrows them from the read buffer ([`RequestDecoder::peek`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Request<B = Bytes> {
    /// Multibulk: the whole raw frame. Inline or built: the arguments back to back.
    buf: B,
    spans: Spans,
    raw_resp: bool,
}

/// A whole request still in the read buffer.
pub type RequestView<'a> = Request<&'a [u8]>;

impl<B: AsRef<[u8]>> std::fmt::Debug for Request<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.args().map(|a| String::from_utf8_lossy(a).into_owned()))
            .finish()
    }
}

impl Request {
    /// Builds a request from arguments (the first is the command name).
    pub fn from_args<I, A>(args: I) -> Request
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let mut buf = BytesMut::new();
        let mut spans = Spans::new();
        for a in args {
            let a = a.as_ref();
            let start = buf.len() as u32;
            buf.extend_from_slice(a);
            spans.push((start, buf.len() as u32));
        }
        Request {
            buf: buf.freeze(),
            spans,
            raw_resp: false,
        }
    }

    /// Argument `i` as a shared, zero-copy `Bytes`.
    #[inline]
    pub fn arg_bytes(&self, i: usize) -> Bytes {
        let (a, b) = self.spans[i];
        self.buf.slice(a as usize..b as usize)
    }

    /// The request's bytes as RESP, if it arrived as a multibulk frame.
    #[inline]
    pub fn raw(&self) -> Option<&Bytes> {
        self.raw_resp.then_some(&self.buf)
    }
}

impl<B: AsRef<[u8]>> Request<B> {
    /// Number of arguments, the command name included.
    #[inline]
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no arguments at all (never true for decoded requests).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i` (0 is the command name). Panics if out of range.
    #[inline]
    pub fn arg(&self, i: usize) -> &[u8] {
        let (a, b) = self.spans[i];
        &self.buf.as_ref()[a as usize..b as usize]
    }

    /// Argument `i` if it exists.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.spans
            .get(i)
            .map(|&(a, b)| &self.buf.as_ref()[a as usize..b as usize])
    }

    /// The command name as sent (not case-folded).
    #[inline]
    pub fn name(&self) -> &[u8] {
        self.arg(0)
    }

    /// Every argument, in order.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.spans
            .iter()
            .map(move |&(a, b)| &self.buf.as_ref()[a as usize..b as usize])
    }

    /// The request's bytes as RESP, if it arrived as a multibulk frame.
    #[inline]
    pub fn raw_slice(&self) -> Option<&[u8]> {
        self.raw_resp.then(|| self.buf.as_ref())
    }

    /// Writes the request as a RESP multibulk frame (the raw bytes when it has them).
    pub fn write_resp(&self, out: &mut impl BufMut) {
        if let Some(raw) = self.raw_slice() {
            out.put_slice(raw);
            return;
        }
        super::encode::write_array_len(out, self.len());
        for a in self.args() {
            super::encode::write_bulk(out, a);
        }
    }
}

/// A multibulk request whose bytes have not all arrived.
#[derive(Debug)]
struct Partial {
    remaining: usize,
    pos: usize,
    spans: Spans,
}

/// Incremental decoder for client requests.
#[derive(Debug, Default)]
pub struct RequestDecoder {
    limits: Limits,
    partial: Option<Partial>,
}

#[inline]
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline line into arguments with the quoting rules of Redis's `sdssplitargs`:
/// `"..."` with backslash escapes (`\n \r \t \b \a \xHH`), `'...'` with `\'`, and a closing
/// quote must be followed by a space or the end of the line.
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut out = Vec::new();
    let mut p = 0;
    let n = line.len();
    loop {
        while p < n && is_space(line[p]) {
            p += 1;
        }
        if p >= n {
            return Ok(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq, mut done) = (false, false, false);
        while !done {
            if inq {
                if p >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[p];
                if c == b'\\'
                    && p + 3 < n
                    && line[p + 1] == b'x'
                    && hex_val(line[p + 2]).is_some()
                    && hex_val(line[p + 3]).is_some()
                {
                    cur.push(hex_val(line[p + 2]).unwrap() * 16 + hex_val(line[p + 3]).unwrap());
                    p += 3;
                } else if c == b'\\' && p + 1 < n {
                    p += 1;
                    cur.push(match line[p] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if p + 1 < n && !is_space(line[p + 1]) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else {
                    cur.push(c);
                }
            } else if insq {
                if p >= n {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                let c = line[p];
                if c == b'\\' && p + 1 < n && line[p + 1] == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if p + 1 < n && !is_space(line[p + 1]) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else {
                    cur.push(c);
                }
            } else if p >= n {
                done = true;
            } else {
                match line[p] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            if p < n {
                p += 1;
            }
        }
        out.push(cur);
    }
}

impl RequestDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> Self {
        RequestDecoder {
            limits,
            partial: None,
        }
    }

    /// Changes the limits (for example once a client has authenticated).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether part of a request has been scanned and is waiting for more bytes.
    pub fn has_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// Decodes the next whole request, removing its bytes from `buf`. `Ok(None)` means more
    /// bytes are needed. Empty multibulk arrays and empty inline lines are skipped, as Redis
    /// skips them. After an error the connection must be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        loop {
            if self.partial.is_none() {
                if buf.is_empty() {
                    return Ok(None);
                }
                if buf[0] == b'*' {
                    if let Some(req) = self.decode_whole(buf) {
                        return Ok(Some(req));
                    }
                } else {
                    match self.decode_inline(buf)? {
                        Some(Some(req)) => return Ok(Some(req)),
                        Some(None) => continue,
                        None => return Ok(None),
                    }
                }
                if let Some((count, cr)) = scan_count(buf, 1) {
                    if cr + 1 < buf.len() && count > 0 && count <= self.limits.max_array_len as i64
                    {
                        self.partial = Some(Partial {
                            remaining: count as usize,
                            pos: cr + 2,
                            spans: Spans::with_capacity(count.min(64) as usize),
                        });
                        return self.decode_bulks(buf);
                    }
                }
                let Some(cr) = memchr::memchr(b'\r', buf) else {
                    if buf.len() > self.limits.max_inline_len {
                        return Err(ProtocolError::TooBigMbulkCount);
                    }
                    return Ok(None);
                };
                if cr > self.limits.max_inline_len {
                    return Err(ProtocolError::TooBigMbulkCount);
                }
                if cr + 1 >= buf.len() {
                    return Ok(None);
                }
                let count = parse_i64(&buf[1..cr]).ok_or(ProtocolError::InvalidMultibulkLength)?;
                if count > self.limits.max_array_len as i64 {
                    return Err(ProtocolError::InvalidMultibulkLength);
                }
                if count <= 0 {
                    let _ = buf.split_to(cr + 2);
                    continue;
                }
                self.partial = Some(Partial {
                    remaining: count as usize,
                    pos: cr + 2,
                    spans: Spans::with_capacity(count.min(64) as usize),
                });
            }
            return self.decode_bulks(buf);
        }
    }

    /// The common case in one pass: a whole multibulk request (`buf` starts with `*`) with
    /// plain lengths within the limits, all of it buffered: its argument spans and length.
    /// `None` for anything else (incomplete, unusual, or wrong), which the general path then
    /// decodes from the start.
    #[inline]
    fn scan_whole(&self, b: &[u8]) -> Option<(Spans, usize)> {
        if b.first() != Some(&b'*') {
            return None;
        }
        let (count, cr) = scan_count(b, 1)?;
        if count <= 0 || count > self.limits.max_array_len as i64 {
            return None;
        }
        let mut spans = Spans::new();
        let mut pos = cr + 2;
        for _ in 0..count {
            if b.get(pos) != Some(&b'$') {
                return None;
            }
            let (len, cr) = scan_count(b, pos + 1)?;
            if len < 0 || len as u64 > self.limits.max_bulk_len as u64 {
                return None;
            }
            let start = cr + 2;
            let end = start + len as usize;
            if end + 2 > b.len() || end + 2 > u32::MAX as usize {
                return None;
            }
            spans.push((start as u32, end as u32));
            pos = end + 2;
        }
        Some((spans, pos))
    }

    #[inline]
    fn decode_whole(&self, buf: &mut BytesMut) -> Option<Request> {
        let (spans, len) = self.scan_whole(buf)?;
        Some(Request {
            buf: buf.split_to(len).freeze(),
            spans,
            raw_resp: true,
        })
    }

    /// The next request when it is a whole multibulk frame at the start of `buf`, borrowed
    /// in place, with its length: a caller that handles it advances `buf` by that much
    /// (no reference-counted copy of the bytes); otherwise [`RequestDecoder::decode`]
    /// decodes it as usual. `None` while a request is partly decoded, or for anything
    /// `decode` must look at.
    #[inline]
    pub fn peek<'a>(&self, buf: &'a [u8]) -> Option<(RequestView<'a>, usize)> {
        if self.partial.is_some() {
            return None;
        }
        let (spans, len) = self.scan_whole(buf)?;
        Some((
            Request {
                buf: &buf[..len],
                spans,
                raw_resp: true,
            },
            len,
        ))
    }

    /// `None`: need more bytes; `Some(None)`: an empty line was skipped.
    #[allow(clippy::option_option)]
    fn decode_inline(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Option<Request>>, ProtocolError> {
        let Some(nl) = memchr::memchr(b'\n', buf) else {
            if buf.len() > self.limits.max_inline_len {
                return Err(ProtocolError::TooBigInline);
            }
            return Ok(None);
        };
        if nl > self.limits.max_inline_len {
            return Err(ProtocolError::TooBigInline);
        }
        let line = buf.split_to(nl + 1);
        let mut body = &line[..nl];
        if body.last() == Some(&b'\r') {
            body = &body[..body.len() - 1];
        }
        let args = split_inline(body)?;
        if args.is_empty() {
            return Ok(Some(None));
        }
        if args.len() > self.limits.max_array_len {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        Ok(Some(Some(Request::from_args(args))))
    }

    fn decode_bulks(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        let p = self.partial.as_mut().expect("partial request");
        while p.remaining > 0 {
            let pos = p.pos;
            if pos >= buf.len() {
                return Ok(None);
            }
            if buf[pos] != b'$' {
                let got = buf[pos];
                self.partial = None;
                return Err(ProtocolError::ExpectedDollar(got));
            }
            // Fast path: a plain length, then the payload already buffered.
            if let Some((len, cr)) = scan_count(buf, pos + 1)
                .filter(|&(len, _)| len >= 0 && len as u64 <= self.limits.max_bulk_len as u64)
            {
                let start = cr + 2;
                let end = start + len as usize;
                if end + 2 <= buf.len() && end + 2 <= u32::MAX as usize {
                    p.spans.push((start as u32, end as u32));
                    p.pos = end + 2;
                    p.remaining -= 1;
                    continue;
                }
            }
            let Some(off) = memchr::memchr(b'\r', &buf[pos..]) else {
                if buf.len() - pos > self.limits.max_inline_len {
                    self.partial = None;
                    return Err(ProtocolError::TooBigBulkCount);
                }
                return Ok(None);
            };
            let cr = pos + off;
            if off > self.limits.max_inline_len {
                self.partial = None;
                return Err(ProtocolError::TooBigBulkCount);
            }
            if cr + 1 >= buf.len() {
                return Ok(None);
            }
            let len = match parse_i64(&buf[pos + 1..cr]) {
                Some(l) if l >= 0 && l as u64 <= self.limits.max_bulk_len as u64 => l as usize,
                _ => {
                    self.partial = None;
                    return Err(ProtocolError::InvalidBulkLength);
                }
            };
            let start = cr + 2;
            let end = start + len;
            if end + 2 > buf.len() {
                // Make room for the rest of a big argument in one allocation.
                if len >= 64 * 1024 {
                    buf.reserve(end + 2 - buf.len());
                }
                return Ok(None);
            }
            if end + 2 > u32::MAX as usize {
                self.partial = None;
                return Err(ProtocolError::TooBigRequest);
            }
            p.spans.push((start as u32, end as u32));
            p.pos = end + 2;
            p.remaining -= 1;
        }
        let p = self.partial.take().expect("partial request");
        let frame = buf.split_to(p.pos).freeze();
        Ok(Some(Request {
            buf: frame,
            spans: p.spans,
            raw_resp: true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut d = RequestDecoder::default();
        let mut out = Vec::new();
        while let Some(r) = d.decode(&mut buf)? {
            out.push(r.args().map(|a| a.to_vec()).collect());
        }
        Ok(out)
    }

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk() {
        let r = decode_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(r, vec![v(&["GET", "k"]), v(&["PING"])]);
        // Empty and negative counts are skipped.
        let r = decode_all(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").unwrap();
        assert_eq!(r, vec![v(&["PING"])]);
    }

    #[test]
    fn raw_kept() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..]);
        let r = RequestDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(&r.raw().unwrap()[..], b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        let mut out = Vec::new();
        Request::from_args(["GET", "k"]).write_resp(&mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }

    #[test]
    fn inline() {
        let r = decode_all(b"set a \"b c\"\r\n\r\nget 'a'\n  ping  \r\n").unwrap();
        assert_eq!(
            r,
            vec![v(&["set", "a", "b c"]), v(&["get", "a"]), v(&["ping"])]
        );
        let r = decode_all(b"echo \"\\x41\\n\" 'it\\'s'\r\n").unwrap();
        assert_eq!(r, vec![v(&["echo", "A\n", "it's"])]);
        assert_eq!(
            decode_all(b"set a \"b\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(
            decode_all(b"set a \"b\"c\r\n"),
            Err(ProtocolError::UnbalancedQuotes)
        );
        assert_eq!(decode_all(b"echo ''\r\n").unwrap(), vec![v(&["echo", ""])]);
    }

    #[test]
    fn incremental() {
        let whole = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$10\r\n0123456789\r\nPING\r\n";
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &c in whole.iter() {
            buf.extend_from_slice(&[c]);
            while let Some(r) = d.decode(&mut buf).unwrap() {
                got.push(r.args().map(|a| a.to_vec()).collect::<Vec<_>>());
            }
        }
        assert_eq!(got, vec![v(&["SET", "key", "0123456789"]), v(&["PING"])]);
    }

    #[test]
    fn error_wording() {
        let msg = |input: &[u8]| decode_all(input).unwrap_err().to_string();
        assert_eq!(msg(b"*1\r\nx\r\n"), "Protocol error: expected '$', got 'x'");
        assert_eq!(msg(b"*1\r\n$x\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(msg(b"*1\r\n$-1\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(msg(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            msg(b"*1048577\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            msg(b"*1\r\n$536870913\r\n"),
            "Protocol error: invalid bulk length"
        );
        let long = vec![b'a'; 70 * 1024];
        assert_eq!(msg(&long), "Protocol error: too big inline request");
        let mut mb = b"*".to_vec();
        mb.extend(vec![b'1'; 70 * 1024]);
        assert_eq!(msg(&mb), "Protocol error: too big mbulk count string");
        let mut bb = b"*1\r\n$".to_vec();
        bb.extend(vec![b'1'; 70 * 1024]);
        assert_eq!(msg(&bb), "Protocol error: too big bulk count string");
        assert_eq!(
            msg(b"\"a\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        let e = ProtocolError::ExpectedDollar(b'x');
        assert_eq!(
            e.to_reply(),
            b"-ERR Protocol error: expected '$', got 'x'\r\n"
        );
    }

    /// What a decoder makes of `input` given whole, and given one byte at a time (which
    /// never takes the one-pass path): requests (raw bytes and arguments), then the error.
    type Decoded = (Vec<u8>, Vec<Vec<u8>>);

    fn outcomes(input: &[u8], whole: bool) -> (Vec<Decoded>, Option<String>) {
        let mut d = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let chunks: Vec<&[u8]> = if whole {
            vec![input]
        } else {
            input.chunks(1).collect()
        };
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(r)) => got.push((
                        r.raw().map(|b| b.to_vec()).unwrap_or_default(),
                        r.args().map(|a| a.to_vec()).collect(),
                    )),
                    Ok(None) => break,
                    Err(e) => return (got, Some(e.to_string())),
                }
            }
        }
        (got, None)
    }

    #[test]
    fn one_pass_agrees_with_incremental() {
        let inputs: &[&[u8]] = &[
            b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000012345\r\n",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n",
            b"*7\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n$1\r\ne\r\n$1\r\nf\r\n$1\r\ng\r\n",
            b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n",
            b"*1\r\n$04\r\nPING\r\n",
            b"*01\r\n$4\r\nPING\r\n",
            b"*2\r\n$3\r\nGET\r\nx\r\n",
            b"*1\r\n$-1\r\n",
            b"*1\r\n$x\r\n",
            b"*1048577\r\n",
            b"*1\r\n$536870913\r\n",
            b"*2\r\n$3\r\nGET\r\n$5\r\nab",
            b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n",
            b"PING\r\n*1\r\n$4\r\nPING\r\n",
        ];
        for input in inputs {
            assert_eq!(
                outcomes(input, true),
                outcomes(input, false),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // The first request went through the one-pass path whole.
        let (got, e) = outcomes(inputs[0], true);
        assert_eq!(e, None);
        assert_eq!(got[0].0, inputs[0]);
        assert_eq!(got[0].1, v(&["GET", "key:000000012345"]));
    }

    #[test]
    fn peek_borrows_what_decode_would_return() {
        let input = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n*1\r\n$4\r\nPING\r\n";
        let mut d = RequestDecoder::default();
        let (view, n) = d.peek(input).unwrap();
        let mut buf = BytesMut::from(&input[..]);
        let owned = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(n, input.len() - buf.len());
        assert_eq!(view.raw_slice(), owned.raw_slice());
        assert!(view.args().eq(owned.args()));
        assert_eq!(view.name(), b"GET");
        // Not a whole multibulk frame: left to decode.
        assert!(d.peek(&input[..10]).is_none());
        assert!(d.peek(b"PING\r\n").is_none());
        assert!(d.peek(b"*1\r\n$04\r\nPING\r\n").is_none());
        // Nor while a request is half decoded.
        let mut half = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n"[..]);
        assert_eq!(d.decode(&mut half), Ok(None));
        assert!(d.peek(b"*1\r\n$4\r\nPING\r\n").is_none());
    }

    #[test]
    fn unauthenticated_limits() {
        let mut d = RequestDecoder::new(Limits::unauthenticated());
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(ProtocolError::InvalidMultibulkLength)
        );
        let mut d = RequestDecoder::new(Limits::unauthenticated());
        let mut buf = BytesMut::from(&b"*1\r\n$16385\r\n"[..]);
        assert_eq!(d.decode(&mut buf), Err(ProtocolError::InvalidBulkLength));
    }
}
