//! Writing frames. The `write_*` helpers let hot paths reply without building a [`Frame`].

use bytes::BufMut;

use super::Frame;

#[inline]
fn put_header(out: &mut impl BufMut, ty: u8, n: i64) {
    let mut b = itoa::Buffer::new();
    out.put_u8(ty);
    out.put_slice(b.format(n).as_bytes());
    out.put_slice(b"\r\n");
}

/// `+text\r\n`
#[inline]
pub fn write_simple(out: &mut impl BufMut, s: &[u8]) {
    out.put_u8(b'+');
    out.put_slice(s);
    out.put_slice(b"\r\n");
}

/// `-msg\r\n`; `msg` starts with the error code (`ERR`, `WRONGTYPE`, ...).
#[inline]
pub fn write_error(out: &mut impl BufMut, msg: &[u8]) {
    out.put_u8(b'-');
    out.put_slice(msg);
    out.put_slice(b"\r\n");
}

/// `:n\r\n`
#[inline]
pub fn write_int(out: &mut impl BufMut, n: i64) {
    put_header(out, b':', n);
}

/// `$len\r\ndata\r\n`
#[inline]
pub fn write_bulk(out: &mut impl BufMut, data: &[u8]) {
    put_header(out, b'$', data.len() as i64);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// `$len\r\ndata\r\n` into a `BytesMut` with one capacity check and straight copies (the
/// reply of every GET).
#[inline]
pub fn write_bulk_fast(out: &mut bytes::BytesMut, data: &[u8]) {
    let mut it = itoa::Buffer::new();
    let digits = it.format(data.len()).as_bytes();
    let need = digits.len() + data.len() + 5;
    out.reserve(need);
    let spare = out.spare_capacity_mut();
    debug_assert!(spare.len() >= need);
    // SAFETY: `reserve` made room for `need` bytes; all of them are written below (header,
    // data, trailer) before the length grows by `need`.
    unsafe {
        let dst = spare.as_mut_ptr() as *mut u8;
        *dst = b'$';
        std::ptr::copy_nonoverlapping(digits.as_ptr(), dst.add(1), digits.len());
        let mut at = 1 + digits.len();
        *dst.add(at) = b'\r';
        *dst.add(at + 1) = b'\n';
        at += 2;
        std::ptr::copy_nonoverlapping(data.as_ptr(), dst.add(at), data.len());
        at += data.len();
        *dst.add(at) = b'\r';
        *dst.add(at + 1) = b'\n';
        out.set_len(out.len() + need);
    }
}

/// `$-1\r\n`
#[inline]
pub fn write_null_bulk(out: &mut impl BufMut) {
    out.put_slice(b"$-1\r\n");
}

/// `*n\r\n`
#[inline]
pub fn write_array_len(out: &mut impl BufMut, n: usize) {
    put_header(out, b'*', n as i64);
}

/// Any aggregate header: `*`, `%`, `~`, `>` followed by its count.
#[inline]
pub fn write_aggregate_len(out: &mut impl BufMut, ty: u8, n: usize) {
    put_header(out, ty, n as i64);
}

/// `,d\r\n` (RESP3 double).
pub fn write_double(out: &mut impl BufMut, d: f64) {
    out.put_u8(b',');
    if d.is_nan() {
        out.put_slice(b"nan");
    } else if d.is_infinite() {
        out.put_slice(if d > 0.0 { b"inf" } else { b"-inf" });
    } else {
        // Debug formatting is the shortest text that reads back to the same value.
        out.put_slice(format!("{d:?}").as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// Writes any frame.
pub fn encode(frame: &Frame, out: &mut impl BufMut) {
    match frame {
        Frame::Simple(s) => write_simple(out, s),
        Frame::Error(e) => write_error(out, e),
        Frame::Integer(i) => write_int(out, *i),
        Frame::Bulk(b) => write_bulk(out, b),
        Frame::NullBulk => write_null_bulk(out),
        Frame::NullArray => out.put_slice(b"*-1\r\n"),
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            let ty = match frame {
                Frame::Array(_) => b'*',
                Frame::Set(_) => b'~',
                _ => b'>',
            };
            write_aggregate_len(out, ty, items.len());
            for item in items {
                encode(item, out);
            }
        }
        Frame::Null => out.put_slice(b"_\r\n"),
        Frame::Boolean(b) => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Double(d) => write_double(out, *d),
        Frame::BigNumber(n) => {
            out.put_u8(b'(');
            out.put_slice(n);
            out.put_slice(b"\r\n");
        }
        Frame::BulkError(e) => {
            put_header(out, b'!', e.len() as i64);
            out.put_slice(e);
            out.put_slice(b"\r\n");
        }
        Frame::Verbatim { format, text } => {
            put_header(out, b'=', text.len() as i64 + 4);
            out.put_slice(format);
            out.put_u8(b':');
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        Frame::Map(pairs) => {
            write_aggregate_len(out, b'%', pairs.len());
            for (k, v) in pairs {
                encode(k, out);
                encode(v, out);
            }
        }
    }
}

/// Encodes a frame into a new vector.
pub fn to_vec(frame: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    encode(frame, &mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn byte_exact() {
        assert_eq!(to_vec(&Frame::simple("OK")), b"+OK\r\n");
        assert_eq!(to_vec(&Frame::error("ERR x")), b"-ERR x\r\n");
        assert_eq!(to_vec(&Frame::Integer(-3)), b":-3\r\n");
        assert_eq!(to_vec(&Frame::bulk("ab")), b"$2\r\nab\r\n");
        assert_eq!(to_vec(&Frame::NullBulk), b"$-1\r\n");
        assert_eq!(to_vec(&Frame::NullArray), b"*-1\r\n");
        assert_eq!(to_vec(&Frame::Null), b"_\r\n");
        assert_eq!(to_vec(&Frame::Boolean(false)), b"#f\r\n");
        assert_eq!(to_vec(&Frame::Double(1.5)), b",1.5\r\n");
        assert_eq!(to_vec(&Frame::Double(f64::INFINITY)), b",inf\r\n");
        assert_eq!(to_vec(&Frame::Double(f64::NAN)), b",nan\r\n");
        assert_eq!(
            to_vec(&Frame::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"hi")
            }),
            b"=6\r\ntxt:hi\r\n"
        );
        assert_eq!(
            to_vec(&Frame::Map(vec![(Frame::bulk("a"), Frame::Integer(1))])),
            b"%1\r\n$1\r\na\r\n:1\r\n"
        );
        assert_eq!(
            to_vec(&Frame::Push(vec![Frame::bulk("m")])),
            b">1\r\n$1\r\nm\r\n"
        );
        assert_eq!(
            to_vec(&Frame::BulkError(Bytes::from_static(b"ERR"))),
            b"!3\r\nERR\r\n"
        );
        assert_eq!(
            to_vec(&Frame::command(["GET", "k"])),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }
}
