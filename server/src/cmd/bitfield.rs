//! BITFIELD and BITFIELD_RO: integers of any width (i1..i64, u1..u63) at any bit offset.

use bytes::BytesMut;
use hashbrown::HashMap;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use super::strings::get_str;
use super::{is, Ctx, Handler, Replied, NOT_INT, SYNTAX};
use crate::db::{Entry, StrEnc};
use crate::out::Out;

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("bitfield", bitfield);
    m.insert("bitfield_ro", bitfield_ro);
}

#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

#[derive(Clone, Copy)]
struct Field {
    signed: bool,
    bits: u32,
    offset: u64,
}

/// One subcommand; SET and INCRBY carry the OVERFLOW policy in force where they appear.
enum Op {
    Get(Field),
    Set(Field, i64, Overflow),
    Incr(Field, i64, Overflow),
}

fn parse_type(b: &[u8]) -> Option<(bool, u32)> {
    let signed = match b.first()? {
        b'i' | b'I' => true,
        b'u' | b'U' => false,
        _ => return None,
    };
    let bits: u32 = std::str::from_utf8(&b[1..]).ok()?.parse().ok()?;
    let ok = if signed {
        (1..=64).contains(&bits)
    } else {
        (1..=63).contains(&bits)
    };
    ok.then_some((signed, bits))
}

fn parse_offset(b: &[u8], bits: u32) -> Option<u64> {
    let (mul, num) = match b.first() {
        Some(b'#') => (bits as i64, &b[1..]),
        _ => (1, b),
    };
    let v = parse_i64(num)?.checked_mul(mul)?;
    (0..(512i64 * 1024 * 1024 * 8))
        .contains(&v)
        .then_some(v as u64)
}

fn read_bits(s: &[u8], offset: u64, bits: u32) -> u64 {
    let mut v = 0u64;
    for i in 0..bits as u64 {
        let bit = offset + i;
        let byte = (bit / 8) as usize;
        let b = if byte < s.len() {
            (s[byte] >> (7 - bit % 8)) & 1
        } else {
            0
        };
        v = (v << 1) | b as u64;
    }
    v
}

fn write_bits(s: &mut BytesMut, offset: u64, bits: u32, v: u64) {
    let need = ((offset + bits as u64).div_ceil(8)) as usize;
    if s.len() < need {
        s.resize(need, 0);
    }
    for i in 0..bits as u64 {
        let bit = offset + i;
        let byte = (bit / 8) as usize;
        let mask = 1u8 << (7 - bit % 8);
        if (v >> (bits as u64 - 1 - i)) & 1 == 1 {
            s[byte] |= mask;
        } else {
            s[byte] &= !mask;
        }
    }
}

fn to_value(raw: u64, f: Field) -> i64 {
    if f.signed && f.bits < 64 && raw & (1 << (f.bits - 1)) != 0 {
        (raw | (!0u64 << f.bits)) as i64
    } else {
        raw as i64
    }
}

fn range(f: Field) -> (i128, i128) {
    if f.signed {
        (-(1i128 << (f.bits - 1)), (1i128 << (f.bits - 1)) - 1)
    } else {
        (0, (1i128 << f.bits) - 1)
    }
}

/// Applies the overflow policy; `None` means FAIL.
fn fit(v: i128, f: Field, o: Overflow) -> Option<i64> {
    let (lo, hi) = range(f);
    if (lo..=hi).contains(&v) {
        return Some(v as i64);
    }
    match o {
        Overflow::Fail => None,
        Overflow::Sat => Some(if v < lo { lo } else { hi } as i64),
        Overflow::Wrap => {
            let m = 1i128 << f.bits;
            let mut w = v.rem_euclid(m);
            if f.signed && w > hi {
                w -= m;
            }
            Some(w as i64)
        }
    }
}

fn parse(ctx: &mut Ctx<'_>, req: &Request, read_only: bool) -> Option<Vec<Op>> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut i = 2;
    while i < req.len() {
        let a = req.arg(i);
        let need = if is(a, "get") {
            3
        } else if is(a, "set") || is(a, "incrby") {
            4
        } else if is(a, "overflow") {
            2
        } else {
            ctx.out.err(SYNTAX);
            return None;
        };
        if i + need > req.len() {
            ctx.out.err(SYNTAX);
            return None;
        }
        if is(a, "overflow") {
            let o = req.arg(i + 1);
            overflow = if is(o, "wrap") {
                Overflow::Wrap
            } else if is(o, "sat") {
                Overflow::Sat
            } else if is(o, "fail") {
                Overflow::Fail
            } else {
                ctx.out.err("ERR Invalid OVERFLOW type specified");
                return None;
            };
            i += 2;
            continue;
        }
        if read_only && !is(a, "get") {
            ctx.out
                .err("ERR BITFIELD_RO only supports the GET subcommand");
            return None;
        }
        let Some((signed, bits)) = parse_type(req.arg(i + 1)) else {
            ctx.out.err("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.");
            return None;
        };
        let Some(offset) = parse_offset(req.arg(i + 2), bits) else {
            ctx.out
                .err("ERR bit offset is not an integer or out of range");
            return None;
        };
        let f = Field {
            signed,
            bits,
            offset,
        };
        if is(a, "get") {
            ops.push(Op::Get(f));
        } else {
            let Some(v) = parse_i64(req.arg(i + 3)) else {
                ctx.out.err(NOT_INT);
                return None;
            };
            ops.push(if is(a, "set") {
                Op::Set(f, v, overflow)
            } else {
                Op::Incr(f, v, overflow)
            });
        }
        i += need;
    }
    Some(ops)
}

fn run(ctx: &mut Ctx<'_>, req: &Request, read_only: bool) {
    let Some(ops) = parse(ctx, req, read_only) else {
        return;
    };
    let key = req.arg(1);
    let cur = match get_str(ctx, key) {
        Ok(s) => s,
        Err(Replied) => return,
    };
    let writes = ops.iter().any(|o| !matches!(o, Op::Get(_)));
    ctx.out.array(ops.len());
    match cur {
        // Reads only: from the stored bytes, no copy.
        Some(s) if !writes => {
            for op in &ops {
                if let Op::Get(f) = *op {
                    ctx.out.int(to_value(read_bits(&s, f.offset, f.bits), f));
                }
            }
        }
        // Writes to a string: edited in place.
        Some(s) => {
            drop(s);
            let mut out = std::mem::replace(ctx.out, Out::new(ctx.out.resp3));
            super::edit_string(ctx, key, |s| ((), apply(&ops, s, &mut out)));
            *ctx.out = out;
        }
        None => {
            let mut s = BytesMut::new();
            if apply(&ops, &mut s, ctx.out) {
                ctx.db
                    .set_entry(key, Entry::string(s.freeze(), ctx.now, StrEnc::Raw));
            }
        }
    }
}

/// Runs the operations on `s`, replying to each; whether one wrote.
fn apply(ops: &[Op], s: &mut BytesMut, out: &mut Out) -> bool {
    let mut changed = false;
    for op in ops {
        match *op {
            Op::Get(f) => out.int(to_value(read_bits(s, f.offset, f.bits), f)),
            Op::Set(f, v, policy) => {
                let old = to_value(read_bits(s, f.offset, f.bits), f);
                match fit(v as i128, f, policy) {
                    Some(nv) => {
                        write_bits(s, f.offset, f.bits, nv as u64 & mask(f.bits));
                        changed = true;
                        out.int(old);
                    }
                    None => out.null(),
                }
            }
            Op::Incr(f, by, policy) => {
                let old = to_value(read_bits(s, f.offset, f.bits), f);
                match fit(old as i128 + by as i128, f, policy) {
                    Some(nv) => {
                        write_bits(s, f.offset, f.bits, nv as u64 & mask(f.bits));
                        changed = true;
                        out.int(nv);
                    }
                    None => out.null(),
                }
            }
        }
    }
    changed
}

fn mask(bits: u32) -> u64 {
    if bits == 64 {
        !0
    } else {
        (1u64 << bits) - 1
    }
}

fn bitfield(ctx: &mut Ctx<'_>, req: &Request) {
    run(ctx, req, false)
}

fn bitfield_ro(ctx: &mut Ctx<'_>, req: &Request) {
    run(ctx, req, true)
}
