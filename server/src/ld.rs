//! The arithmetic of INCRBYFLOAT and HINCRBYFLOAT as Redis does it: in the x86 `long double`
//! (a 64-bit significand), parsed as `strtold` parses, added with one rounding, and printed
//! as `"%.17Lf"` with the trailing zeros taken off (Redis's `LD_STR_HUMAN`). So the replies and
//! the stored strings match Redis digit for digit: 0.1 three times is "0.3" (not
//! 0.30000000000000004), and 9223372036854775807 + 1.5 is "9223372036854775808".
//!
//! Exact arithmetic on big integers does the rounding; these commands are rare enough that it
//! costs nothing that matters.

use num_bigint::BigUint;
use num_traits::{One, ToPrimitive, Zero};

/// The exponent of the last significand bit of the smallest values (subnormals included).
const EMIN: i64 = -16382 - 63;
/// The largest exponent of a finite value (the significand below 2^64).
const EMAX: i64 = 16383 - 63;
/// Redis refuses longer numbers (`MAX_LONG_DOUBLE_CHARS`).
const MAX_CHARS: usize = 5 * 1024;

/// A `long double`: `(-1)^neg * mant * 2^exp`, or an infinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ld {
    Finite { neg: bool, mant: u64, exp: i64 },
    Inf { neg: bool },
}

impl Ld {
    pub const ZERO: Ld = Ld::Finite {
        neg: false,
        mant: 0,
        exp: 0,
    };

    pub fn is_finite(&self) -> bool {
        matches!(self, Ld::Finite { .. })
    }
}

/// What rounding an exact value gave.
enum Rounded {
    Value(u64, i64),
    /// Below the smallest subnormal: zero.
    Underflow,
    /// Above the largest finite value.
    Overflow,
}

/// Rounds `num / den * 2^off` (positive) to 64 significant bits, ties to even.
fn round(num: &BigUint, den: &BigUint, off: i64) -> Rounded {
    debug_assert!(!num.is_zero());
    // Find e with 2^63 <= num / den * 2^(off - e) < 2^64.
    let mut e = num.bits() as i64 - den.bits() as i64 + off - 63;
    loop {
        let clamped = e < EMIN;
        if clamped {
            e = EMIN;
        }
        // q = floor(num * 2^(off - e) / den), with what is left over as rem / div.
        let shift = off - e;
        let (n, d) = if shift >= 0 {
            (num << shift as u64, den.clone())
        } else {
            (num.clone(), den << (-shift) as u64)
        };
        let (q, rem) = (&n / &d, &n % &d);
        if q.bits() > 64 {
            e += 1;
            continue;
        }
        if q.bits() < 64 && !clamped && e > EMIN {
            e -= 1;
            continue;
        }
        let mut m = q.to_u64().expect("64 bits");
        let twice = rem << 1u32;
        if twice > d || (twice == d && m & 1 == 1) {
            m = m.wrapping_add(1);
            if m == 0 {
                // Carried out of 64 bits.
                m = 1 << 63;
                e += 1;
            }
        }
        if m == 0 {
            return Rounded::Underflow;
        }
        if e > EMAX {
            return Rounded::Overflow;
        }
        return Rounded::Value(m, e);
    }
}

fn finite(neg: bool, r: Rounded) -> Ld {
    match r {
        Rounded::Value(mant, exp) => Ld::Finite { neg, mant, exp },
        Rounded::Underflow => Ld::Finite {
            neg,
            mant: 0,
            exp: 0,
        },
        Rounded::Overflow => Ld::Inf { neg },
    }
}

/// Parses a number as Redis does (`string2ld`: `strtold`, nothing before or after it, no
/// NaN, no overflow to infinity, no underflow to zero).
pub fn parse(b: &[u8]) -> Option<Ld> {
    if b.is_empty() || b.len() >= MAX_CHARS {
        return None;
    }
    let (neg, rest) = match b[0] {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    let lower = rest.to_ascii_lowercase();
    if lower == b"inf" || lower == b"infinity" {
        return Some(Ld::Inf { neg });
    }
    let r = if lower.starts_with(b"0x") {
        parse_hex(&lower[2..])?
    } else {
        parse_decimal(rest)?
    };
    match r {
        None => Some(Ld::Finite {
            neg,
            mant: 0,
            exp: 0,
        }),
        Some(Rounded::Value(mant, exp)) => Some(Ld::Finite { neg, mant, exp }),
        // strtold's ERANGE: Redis refuses both.
        Some(Rounded::Underflow | Rounded::Overflow) => None,
    }
}

/// `digits[.digits][<marker>[+-]digits]` in `radix`, the whole of `s`: the digits as one
/// number, how many of them came after the point, and the exponent.
fn mantissa(s: &[u8], radix: u32, markers: &[u8]) -> Option<(BigUint, i64, i64)> {
    let is_digit = |c: &&u8| (**c as char).is_digit(radix);
    let int_len = s.iter().take_while(is_digit).count();
    let mut all = s[..int_len].to_vec();
    let mut i = int_len;
    let mut frac_len = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        frac_len = s[i..].iter().take_while(is_digit).count();
        all.extend_from_slice(&s[i..i + frac_len]);
        i += frac_len;
    }
    if all.is_empty() {
        return None;
    }
    let mut exp = 0i64;
    if s.get(i).is_some_and(|c| markers.contains(c)) {
        let (e, n) = exponent(&s[i + 1..])?;
        exp = e;
        i += 1 + n;
    }
    if i != s.len() {
        return None;
    }
    let v = BigUint::parse_bytes(&all, radix).expect("digits");
    Some((v, frac_len as i64, exp))
}

/// `[eE|pP][+-]digits` (saturating), and how many bytes it took.
fn exponent(s: &[u8]) -> Option<(i64, usize)> {
    let (neg, start) = match s.first() {
        Some(b'-') => (true, 1),
        Some(b'+') => (false, 1),
        _ => (false, 0),
    };
    let n = s[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let mut v: i64 = 0;
    for &c in &s[start..start + n] {
        v = v.saturating_mul(10).saturating_add(i64::from(c - b'0'));
    }
    Some((if neg { -v } else { v }, start + n))
}

/// `None` inside: the value is zero.
fn parse_decimal(s: &[u8]) -> Option<Option<Rounded>> {
    let (d, frac_len, exp10) = mantissa(s, 10, b"eE")?;
    if d.is_zero() {
        return Some(None);
    }
    // d * 10^e, with the value's magnitude about 10^(significant digits + e).
    let e = exp10.saturating_sub(frac_len);
    let sig = d.to_string().len() as i64;
    if sig.saturating_add(e) > 4934 {
        return Some(Some(Rounded::Overflow));
    }
    if sig.saturating_add(e) < -4952 {
        return Some(Some(Rounded::Underflow));
    }
    let ten = BigUint::from(10u32);
    Some(Some(if e >= 0 {
        round(&(d * ten.pow(e as u32)), &BigUint::one(), 0)
    } else {
        round(&d, &ten.pow((-e) as u32), 0)
    }))
}

/// After `0x` (lower-cased): hex digits, an optional fraction, an optional binary exponent.
fn parse_hex(s: &[u8]) -> Option<Option<Rounded>> {
    let (h, frac_len, exp2) = mantissa(s, 16, b"p")?;
    if h.is_zero() {
        return Some(None);
    }
    let off = exp2.saturating_sub(4 * frac_len);
    let magnitude = (h.bits() as i64).saturating_add(off);
    if magnitude > 16400 {
        return Some(Some(Rounded::Overflow));
    }
    if magnitude < -16500 {
        return Some(Some(Rounded::Underflow));
    }
    Some(Some(round(&h, &BigUint::one(), off)))
}

/// `a + b` with one rounding; `None` for infinity minus infinity (NaN).
pub fn add(a: Ld, b: Ld) -> Option<Ld> {
    match (a, b) {
        (Ld::Inf { neg: x }, Ld::Inf { neg: y }) if x != y => None,
        (Ld::Inf { neg }, _) | (_, Ld::Inf { neg }) => Some(Ld::Inf { neg }),
        (
            Ld::Finite {
                neg: na,
                mant: ma,
                exp: ea,
            },
            Ld::Finite {
                neg: nb,
                mant: mb,
                exp: eb,
            },
        ) => {
            if ma == 0 && mb == 0 {
                // -0 + -0 is -0; any other sum of zeros is +0.
                return Some(Ld::Finite {
                    neg: na && nb,
                    mant: 0,
                    exp: 0,
                });
            }
            if ma == 0 {
                return Some(b);
            }
            if mb == 0 {
                return Some(a);
            }
            let e0 = ea.min(eb);
            let x = BigUint::from(ma) << (ea - e0) as u64;
            let y = BigUint::from(mb) << (eb - e0) as u64;
            let (neg, m) = if na == nb {
                (na, x + y)
            } else if x >= y {
                (na, x - y)
            } else {
                (nb, y - x)
            };
            if m.is_zero() {
                return Some(Ld::ZERO);
            }
            Some(finite(neg, round(&m, &BigUint::one(), e0)))
        }
    }
}

/// `"%.17Lf"` without trailing zeros (and "-0" as "0"), as Redis prints these results.
pub fn to_human(v: Ld) -> String {
    let Ld::Finite { neg, mant, exp } = v else {
        return if matches!(v, Ld::Inf { neg: true }) {
            "-inf".into()
        } else {
            "inf".into()
        };
    };
    let scale = BigUint::from(10u32).pow(17);
    // round(mant * 2^exp * 10^17), ties to even, as glibc's printf rounds.
    let n = if exp >= 0 {
        (BigUint::from(mant) << exp as u64) * scale
    } else {
        let num = BigUint::from(mant) * scale;
        let sh = (-exp) as u64;
        let q = &num >> sh;
        let rem = &num - (&q << sh);
        let half = BigUint::one() << (sh - 1);
        if rem > half || (rem == half && q.bit(0)) {
            q + 1u32
        } else {
            q
        }
    };
    let mut digits = n.to_string();
    if digits.len() < 18 {
        digits = format!("{}{digits}", "0".repeat(18 - digits.len()));
    }
    let (int, frac) = digits.split_at(digits.len() - 17);
    let frac = frac.trim_end_matches('0');
    let mut s = String::with_capacity(digits.len() + 2);
    if neg {
        s.push('-');
    }
    s.push_str(int);
    if !frac.is_empty() {
        s.push('.');
        s.push_str(frac);
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr(a: &str, b: &str) -> String {
        to_human(add(parse(a.as_bytes()).unwrap(), parse(b.as_bytes()).unwrap()).unwrap())
    }

    /// Expected values are what redis-server 7.0.15 answers on x86-64.
    #[test]
    fn as_redis_adds_and_prints() {
        assert_eq!(incr("0.1", "0.1"), "0.2");
        assert_eq!(incr("0.2", "0.1"), "0.3");
        assert_eq!(incr("10.5", "0.1"), "10.6");
        assert_eq!(incr("9223372036854775807", "1.5"), "9223372036854775808");
        assert_eq!(incr("9223372036854775807", "-2"), "9223372036854775805");
        assert_eq!(incr("9223372036854775807", "1e3"), "9223372036854776807");
        assert_eq!(incr("3.0e3", "2.0e2"), "3200");
        assert_eq!(incr("5.0e3", "2.0e2"), "5200");
        assert_eq!(incr("0", "-5"), "-5");
        assert_eq!(incr("1", "-1"), "0");
        assert_eq!(incr("0", "1e-20"), "0");
        assert_eq!(incr("0", "-1e-20"), "0");
        assert_eq!(incr("0", "0x10"), "16");
        assert_eq!(incr("0", "1.5"), "1.5");
        assert!(incr("0", "1e300")
            .starts_with("100000000000000000000899732407955919387052394427329074793826"));
        assert_eq!(incr("0", "1e300").len(), 301);
    }

    #[test]
    fn parses_as_strtold_within_redis_rules() {
        for ok in [
            "1",
            "-1",
            "+1",
            ".5",
            "5.",
            "1e5",
            "1E-5",
            "0x1p3",
            "inf",
            "-Infinity",
            "0",
        ] {
            assert!(parse(ok.as_bytes()).is_some(), "{ok}");
        }
        for bad in [
            "", " 1", "1 ", "abc", "1e", "nan", "1e99999", "1e-99999", ".", "e5", "0x",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad}");
        }
        // Beyond a double, within a long double.
        assert!(parse(b"1e400").unwrap().is_finite());
        assert_eq!(add(Ld::Inf { neg: false }, Ld::Inf { neg: true }), None);
    }

    #[test]
    fn rounds_ties_to_even() {
        // 2^64 + 1 is a tie between 2^64 and 2^64 + 2: even is 2^64.
        assert_eq!(incr("18446744073709551616", "1"), "18446744073709551616");
        // 2^64 + 3 ties between 2^64 + 2 and 2^64 + 4: even is 2^64 + 4.
        assert_eq!(incr("18446744073709551616", "3"), "18446744073709551620");
    }
}
