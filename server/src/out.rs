//! Reply writing for one client, aware of its protocol (RESP2 or RESP3 after `HELLO 3`).

use bytes::{BufMut, BytesMut};
use rcodis_core::resp::encode as enc;

/// The reply buffer of one command (or a batch of commands) for one client.
#[derive(Debug, Default)]
pub struct Out {
    pub buf: BytesMut,
    pub resp3: bool,
}

impl Out {
    /// An empty buffer for the given protocol.
    pub fn new(resp3: bool) -> Self {
        Out {
            buf: BytesMut::with_capacity(256),
            resp3,
        }
    }

    pub fn ok(&mut self) {
        self.buf.put_slice(b"+OK\r\n");
    }

    pub fn simple(&mut self, s: &str) {
        enc::write_simple(&mut self.buf, s.as_bytes());
    }

    /// An error; `msg` includes its code (`ERR ...`).
    pub fn err(&mut self, msg: &str) {
        enc::write_error(&mut self.buf, msg.as_bytes());
    }

    pub fn int(&mut self, n: i64) {
        enc::write_int(&mut self.buf, n);
    }

    pub fn bulk(&mut self, b: &[u8]) {
        enc::write_bulk_fast(&mut self.buf, b);
    }

    /// A bulk string of a number.
    pub fn bulk_int(&mut self, n: i64) {
        self.bulk(itoa::Buffer::new().format(n).as_bytes());
    }

    /// Null bulk (RESP2 `$-1`, RESP3 `_`).
    pub fn null(&mut self) {
        if self.resp3 {
            self.buf.put_slice(b"_\r\n");
        } else {
            self.buf.put_slice(b"$-1\r\n");
        }
    }

    /// Null array (RESP2 `*-1`, RESP3 `_`).
    pub fn null_array(&mut self) {
        if self.resp3 {
            self.buf.put_slice(b"_\r\n");
        } else {
            self.buf.put_slice(b"*-1\r\n");
        }
    }

    pub fn array(&mut self, n: usize) {
        enc::write_array_len(&mut self.buf, n);
    }

    /// A map of `n` pairs (RESP3 `%`, RESP2 a flat array of 2n).
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            enc::write_aggregate_len(&mut self.buf, b'%', n);
        } else {
            enc::write_array_len(&mut self.buf, n * 2);
        }
    }

    /// A set (RESP3 `~`, RESP2 an array).
    pub fn set(&mut self, n: usize) {
        if self.resp3 {
            enc::write_aggregate_len(&mut self.buf, b'~', n);
        } else {
            enc::write_array_len(&mut self.buf, n);
        }
    }

    /// A double (RESP3 `,`, RESP2 a bulk string as Redis 7.0 formats it, `%.17g`).
    pub fn double(&mut self, d: f64) {
        if self.resp3 {
            self.buf.put_u8(b',');
            self.buf.put_slice(fmt_g17(d).as_bytes());
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(fmt_g17(d).as_bytes());
        }
    }

    /// A boolean (RESP3 `#t`/`#f`, RESP2 `:1`/`:0`).
    pub fn boolean(&mut self, b: bool) {
        if self.resp3 {
            self.buf.put_slice(if b { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(b as i64);
        }
    }

    /// A big number given as its digits (RESP3 `(`, RESP2 a bulk string).
    pub fn big_number(&mut self, digits: &[u8]) {
        if self.resp3 {
            self.buf.put_u8(b'(');
            self.buf.put_slice(digits);
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(digits);
        }
    }

    /// Verbatim text with its three-letter format (RESP3 `=`, RESP2 a bulk string).
    pub fn verbatim_as(&mut self, format: &[u8], text: &[u8]) {
        if self.resp3 {
            enc::write_aggregate_len(&mut self.buf, b'=', text.len() + 4);
            self.buf.put_slice(format);
            self.buf.put_u8(b':');
            self.buf.put_slice(text);
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(text);
        }
    }

    /// A boolean-ish integer (RESP3 keeps Redis's integer replies for these commands).
    pub fn bool_int(&mut self, b: bool) {
        self.int(b as i64);
    }

    /// Appends raw, already encoded bytes.
    pub fn raw(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
    }

    pub fn array_of_bulks<'a>(&mut self, items: impl ExactSizeIterator<Item = &'a [u8]>) {
        self.array(items.len());
        for i in items {
            self.bulk(i);
        }
    }

    /// Verbatim text (RESP3 `=`), a bulk string in RESP2 (INFO, CLIENT LIST use it).
    pub fn verbatim(&mut self, text: &str) {
        if self.resp3 {
            enc::write_aggregate_len(&mut self.buf, b'=', text.len() + 4);
            self.buf.put_slice(b"txt:");
            self.buf.put_slice(text.as_bytes());
            self.buf.put_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }
}

/// Formats a double as C's `%.17g` (what Redis 7.0 replies with for scores).
pub fn fmt_g17(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // 17 significant digits, correctly rounded, as mantissa digits and a decimal exponent.
    let sci = format!("{:.16e}", d);
    let (mant, exp) = sci.split_once('e').expect("scientific format");
    let exp: i32 = exp.parse().expect("exponent");
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..17).contains(&exp) {
        let d = digits.trim_end_matches('0');
        out.push_str(&d[..1]);
        if d.len() > 1 {
            out.push('.');
            out.push_str(&d[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
        return out;
    }
    if exp >= 0 {
        let int_len = exp as usize + 1;
        out.push_str(&digits[..int_len]);
        let frac = digits[int_len..].trim_end_matches('0');
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
    } else {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(digits.trim_end_matches('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g17_like_c() {
        assert_eq!(fmt_g17(1.5), "1.5");
        assert_eq!(fmt_g17(0.1), "0.10000000000000001");
        assert_eq!(fmt_g17(3.0), "3");
        assert_eq!(fmt_g17(-2.25), "-2.25");
        assert_eq!(fmt_g17(1e17), "1e+17");
        assert_eq!(fmt_g17(123456789.0), "123456789");
        assert_eq!(fmt_g17(0.0001), "0.0001");
        assert_eq!(fmt_g17(0.00001), "1.0000000000000001e-05");
        assert_eq!(fmt_g17(f64::INFINITY), "inf");
        assert_eq!(fmt_g17(1e300), "1.0000000000000001e+300");
    }
}
