//! Number parsing and formatting with Redis's exact rules.

/// Parses a signed 64-bit integer the way Redis's `string2ll` does: an optional `-`, then
/// digits, no leading zeros (except `0` itself), no `+`, no spaces, no overflow.
#[inline]
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let first = *digits.first()?;
    if digits.len() > 1 && first == b'0' || !first.is_ascii_digit() {
        return None;
    }
    if first == b'0' {
        // "0" is fine, "-0" is not (as in string2ll).
        return if neg { None } else { Some(0) };
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(d as u64)?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 {
            None
        } else {
            Some((v as i64).wrapping_neg())
        }
    } else if v > i64::MAX as u64 {
        None
    } else {
        Some(v as i64)
    }
}

/// Parses a non-negative length (bulk or array count) with an upper bound.
#[inline]
pub fn parse_len(s: &[u8]) -> Option<i64> {
    // Redis accepts "-1" for nulls and rejects anything that is not a clean integer.
    parse_i64(s)
}

/// Parses a RESP3 double line (`inf`, `-inf`, `nan`, or a decimal/exponent number).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    match s {
        b"inf" | b"+inf" => return Some(f64::INFINITY),
        b"-inf" => return Some(f64::NEG_INFINITY),
        b"nan" => return Some(f64::NAN),
        _ => {}
    }
    if s.is_empty() || s.iter().any(|c| c.is_ascii_whitespace()) {
        return None;
    }
    let txt = std::str::from_utf8(s).ok()?;
    let v: f64 = txt.parse().ok()?;
    // Rust accepts "infinity"/"NaN" spellings; RESP does not.
    if txt
        .bytes()
        .any(|c| c.is_ascii_alphabetic() && c != b'e' && c != b'E')
    {
        return None;
    }
    Some(v)
}

/// A byte count as Redis's INFO writes it (`bytesToHuman`): `912B`, `893.05K`, `4.31M`, `1.50G`,
/// two decimals from a kibibyte up to pebibytes, plain bytes beyond.
pub fn bytes_to_human(n: u64) -> String {
    const UNITS: [(u32, char); 5] = [(1, 'K'), (2, 'M'), (3, 'G'), (4, 'T'), (5, 'P')];
    if n < 1024 {
        return format!("{n}B");
    }
    for (power, unit) in UNITS {
        if n < 1024u64.pow(power + 1) {
            return format!("{:.2}{unit}", n as f64 / 1024f64.powi(power as i32));
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string2ll_rules() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-0"), None);
        assert_eq!(parse_i64(b"007"), None);
        assert_eq!(parse_i64(b"+7"), None);
        assert_eq!(parse_i64(b" 7"), None);
        assert_eq!(parse_i64(b""), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_i64(b"12a"), None);
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"-9223372036854775809"), None);
        assert_eq!(parse_i64(b"-15"), Some(-15));
    }

    #[test]
    fn doubles() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-2e3"), Some(-2000.0));
        assert_eq!(parse_f64(b"inf"), Some(f64::INFINITY));
        assert!(parse_f64(b"nan").unwrap().is_nan());
        assert_eq!(parse_f64(b"infinity"), None);
        assert_eq!(parse_f64(b""), None);
        assert_eq!(parse_f64(b"1 "), None);
    }

    #[test]
    fn human_bytes_as_redis() {
        assert_eq!(bytes_to_human(0), "0B");
        assert_eq!(bytes_to_human(1023), "1023B");
        assert_eq!(bytes_to_human(1024), "1.00K");
        assert_eq!(bytes_to_human(914_480), "893.05K");
        assert_eq!(bytes_to_human(6_819_840), "6.50M");
        assert_eq!(bytes_to_human(25_276_502_016), "23.54G");
        assert_eq!(bytes_to_human(3 << 40), "3.00T");
        assert_eq!(bytes_to_human(1 << 50), "1.00P");
        assert_eq!(bytes_to_human(1 << 60), "1152921504606846976B");
    }
}

/// Fast path for RESP count lines: scans a plain decimal integer starting at `buf[pos]` and
/// ended by `\r`, parsing as it goes. Returns the value and the index of the `\r`. Returns
/// `None` for anything unusual (no `\r` yet, a non-digit, leading zeros, `-0`, more than 18
/// digits): callers then take the exact slow path, which finds the right error.
#[inline]
pub fn scan_count(buf: &[u8], pos: usize) -> Option<(i64, usize)> {
    // One or two digits then `\r`: nearly every count and length in practice.
    if let Some(w) = buf.get(pos..pos + 3) {
        let (d0, d1) = (w[0].wrapping_sub(b'0'), w[1].wrapping_sub(b'0'));
        if d0 <= 9 {
            if w[1] == b'\r' {
                return Some((d0 as i64, pos + 1));
            }
            if d1 <= 9 && d0 != 0 && w[2] == b'\r' {
                return Some(((d0 * 10 + d1) as i64, pos + 2));
            }
        }
    }
    let mut i = pos;
    let neg = buf.get(i) == Some(&b'-');
    if neg {
        i += 1;
    }
    let start = i;
    let mut v: i64 = 0;
    // At most 18 digits: they cannot overflow an i64. Longer numbers take the slow path.
    let end = buf.len().min(start + 18);
    while i < end {
        let c = buf[i];
        if c == b'\r' {
            break;
        }
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as i64;
        i += 1;
    }
    if i >= buf.len() || buf[i] != b'\r' || i == start || (buf[start] == b'0' && i - start > 1) {
        return None;
    }
    if neg {
        if v == 0 {
            return None;
        }
        v = -v;
    }
    Some((v, i))
}

#[cfg(test)]
mod scan_tests {
    use super::*;

    #[test]
    fn scan_count_agrees_with_parse() {
        for s in [
            "0",
            "1",
            "9",
            "10",
            "42",
            "99",
            "100",
            "-1",
            "123456789012345678",
            "-7",
        ] {
            let line = format!("{s}\r\n");
            assert_eq!(
                scan_count(line.as_bytes(), 0),
                Some((s.parse().unwrap(), s.len()))
            );
        }
        for s in [
            "",
            "-",
            "-0",
            "01",
            "00",
            "05",
            "1x",
            "1\n",
            "12x",
            "1234567890123456789",
            "9999999999999999999",
            "99999999999999999999999",
            "+1",
        ] {
            let line = format!("{s}\r\n");
            assert_eq!(scan_count(line.as_bytes(), 0), None, "{s}");
        }
        assert_eq!(scan_count(b"12", 0), None);
        assert_eq!(scan_count(b"1\r", 0), Some((1, 1)));
        assert_eq!(scan_count(b"12\r", 0), Some((12, 2)));
        assert_eq!(scan_count(b"*12\r\n", 1), Some((12, 3)));
    }
}
