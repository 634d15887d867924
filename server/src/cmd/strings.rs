//! String commands.

use super::Replied;
use bytes::{Bytes, BytesMut};
use hashbrown::HashMap;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use super::{int_arg, is, owned, Ctx, Handler, NOT_INT, OVERFLOW, SYNTAX, WRONGTYPE};
use crate::db::{Entry, StrEnc, Value};

/// Redis's default proto-max-bulk-len: strings may not grow past it.
const MAX_STRING: usize = 512 * 1024 * 1024;

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("get", get);
    m.insert("set", set);
    m.insert("setnx", setnx);
    m.insert("setex", setex);
    m.insert("psetex", psetex);
    m.insert("getset", getset);
    m.insert("getdel", getdel);
    m.insert("getex", getex);
    m.insert("mget", mget);
    m.insert("mset", mset);
    m.insert("msetnx", msetnx);
    m.insert("incr", incr);
    m.insert("decr", decr);
    m.insert("incrby", incrby);
    m.insert("decrby", decrby);
    m.insert("incrbyfloat", incrbyfloat);
    m.insert("append", append);
    m.insert("strlen", strlen);
    m.insert("getrange", getrange);
    m.insert("substr", getrange);
    m.insert("setrange", setrange);
    m.insert("setbit", setbit);
    m.insert("getbit", getbit);
    m.insert("bitcount", bitcount);
    m.insert("bitpos", bitpos);
    m.insert("bitop", bitop);
    m.insert("lcs", lcs);
}

/// The string at a key (a cheap shared copy): `Ok(None)` absent, `Err(Replied)` wrong type
/// (error written).
pub fn get_str(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<Bytes>, Replied> {
    match ctx.lookup(key).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.clone())),
        Some(_) => {
            ctx.out.err(WRONGTYPE);
            Err(Replied)
        }
    }
}

fn get(ctx: &mut Ctx<'_>, req: &Request) {
    // Disjoint borrows of the database and the reply buffer: no copy of the value.
    let Ctx {
        db,
        out,
        now,
        hits,
        misses,
        ..
    } = ctx;
    match db.get(req.arg(1), *now).map(|e| &e.value) {
        Some(Value::Str(s)) => {
            *hits += 1;
            out.bulk(s)
        }
        Some(_) => out.err(WRONGTYPE),
        None => {
            *misses += 1;
            out.null()
        }
    }
}

/// Parsed SET options.
struct SetOpts {
    nx: bool,
    xx: bool,
    get: bool,
    keepttl: bool,
    expire_at: u64,
}

fn expire_from(
    ctx: &mut Ctx<'_>,
    unit_ms: bool,
    absolute: bool,
    arg: &[u8],
    cmd: &str,
) -> Option<u64> {
    let v = int_arg(ctx.out, arg)?;
    if v <= 0 {
        ctx.out
            .err(&format!("ERR invalid expire time in '{cmd}' command"));
        return None;
    }
    let ms = if unit_ms {
        Some(v)
    } else {
        v.checked_mul(1000)
    };
    let at = ms.and_then(|ms| {
        if absolute {
            Some(ms)
        } else {
            ms.checked_add(ctx.now as i64)
        }
    });
    match at {
        Some(at) if at > 0 => Some(at as u64),
        _ => {
            ctx.out
                .err(&format!("ERR invalid expire time in '{cmd}' command"));
            None
        }
    }
}

fn parse_set_opts(ctx: &mut Ctx<'_>, req: &Request) -> Option<SetOpts> {
    let mut o = SetOpts {
        nx: false,
        xx: false,
        get: false,
        keepttl: false,
        expire_at: 0,
    };
    let mut have_expire = false;
    let mut i = 3;
    while i < req.len() {
        let a = req.arg(i);
        let next = req.get(i + 1);
        if is(a, "nx") && !o.xx {
            o.nx = true;
        } else if is(a, "xx") && !o.nx {
            o.xx = true;
        } else if is(a, "get") {
            o.get = true;
        } else if is(a, "keepttl") && !have_expire {
            o.keepttl = true;
        } else if let (true, Some(v)) = (
            (is(a, "ex") || is(a, "px") || is(a, "exat") || is(a, "pxat"))
                && !o.keepttl
                && !have_expire,
            next,
        ) {
            let unit_ms = is(a, "px") || is(a, "pxat");
            let absolute = is(a, "exat") || is(a, "pxat");
            o.expire_at = expire_from(ctx, unit_ms, absolute, v, "set")?;
            have_expire = true;
            i += 1;
        } else {
            ctx.out.err(SYNTAX);
            return None;
        }
        i += 1;
    }
    Some(o)
}

fn set(ctx: &mut Ctx<'_>, req: &Request) {
    if req.len() == 3 {
        ctx.db
            .set_plain(req.arg(1), Value::Str(owned(req.arg(2))), ctx.now);
        return ctx.out.ok();
    }
    let Some(o) = parse_set_opts(ctx, req) else {
        return;
    };
    let key = req.arg(1);
    let old = match ctx.db.get(key, ctx.now) {
        None => None,
        Some(e) => match &e.value {
            Value::Str(s) => Some((s.clone(), e.expire_at)),
            _ if o.get => {
                ctx.out.err(WRONGTYPE);
                return;
            }
            _ => Some((Bytes::new(), e.expire_at)),
        },
    };
    let exists = old.is_some();
    if (o.nx && exists) || (o.xx && !exists) {
        if o.get {
            match old {
                Some((v, _)) => ctx.out.bulk(&v),
                None => ctx.out.null(),
            }
        } else {
            ctx.out.null();
        }
        return;
    }
    let mut e = Entry::new(Value::Str(owned(req.arg(2))), ctx.now);
    if o.keepttl {
        e.expire_at = old.as_ref().map(|o| o.1).unwrap_or(0);
    } else {
        e.expire_at = o.expire_at;
    }
    ctx.db.set_entry(key, e);
    if o.get {
        match old {
            Some((v, _)) => ctx.out.bulk(&v),
            None => ctx.out.null(),
        }
    } else {
        ctx.out.ok();
    }
}

fn setnx(ctx: &mut Ctx<'_>, req: &Request) {
    if ctx.db.exists(req.arg(1), ctx.now) {
        ctx.out.int(0);
    } else {
        ctx.db
            .set(req.arg(1), Value::Str(owned(req.arg(2))), ctx.now);
        ctx.out.int(1);
    }
}

fn setex_common(ctx: &mut Ctx<'_>, req: &Request, ms: bool, name: &str) {
    let Some(at) = expire_from(ctx, ms, false, req.arg(2), name) else {
        return;
    };
    let mut e = Entry::new(Value::Str(owned(req.arg(3))), ctx.now);
    e.expire_at = at;
    ctx.db.set_entry(req.arg(1), e);
    ctx.out.ok();
}

fn setex(ctx: &mut Ctx<'_>, req: &Request) {
    setex_common(ctx, req, false, "setex")
}

fn psetex(ctx: &mut Ctx<'_>, req: &Request) {
    setex_common(ctx, req, true, "psetex")
}

fn getset(ctx: &mut Ctx<'_>, req: &Request) {
    let old = match get_str(ctx, req.arg(1)) {
        Ok(v) => v,
        Err(Replied) => return,
    };
    ctx.db
        .set(req.arg(1), Value::Str(owned(req.arg(2))), ctx.now);
    match old {
        Some(v) => ctx.out.bulk(&v),
        None => ctx.out.null(),
    }
}

fn getdel(ctx: &mut Ctx<'_>, req: &Request) {
    match get_str(ctx, req.arg(1)) {
        Ok(Some(v)) => {
            ctx.db.remove(req.arg(1), ctx.now);
            ctx.out.bulk(&v);
        }
        Ok(None) => ctx.out.null(),
        Err(Replied) => {}
    }
}

fn getex(ctx: &mut Ctx<'_>, req: &Request) {
    // Parse options first: EX/PX/EXAT/PXAT n, PERSIST; one of them at most.
    let mut new_expire: Option<u64> = None;
    let mut persist = false;
    let mut i = 2;
    while i < req.len() {
        let a = req.arg(i);
        let next = req.get(i + 1);
        if let (true, Some(v)) = (
            (is(a, "ex") || is(a, "px") || is(a, "exat") || is(a, "pxat"))
                && new_expire.is_none()
                && !persist,
            next,
        ) {
            let unit_ms = is(a, "px") || is(a, "pxat");
            let absolute = is(a, "exat") || is(a, "pxat");
            let Some(at) = expire_from(ctx, unit_ms, absolute, v, "getex") else {
                return;
            };
            new_expire = Some(at);
            i += 1;
        } else if is(a, "persist") && new_expire.is_none() && !persist {
            persist = true;
        } else {
            ctx.out.err(SYNTAX);
            return;
        }
        i += 1;
    }
    let v = match get_str(ctx, req.arg(1)) {
        Ok(Some(v)) => v,
        Ok(None) => return ctx.out.null(),
        Err(Replied) => return,
    };
    if let Some(at) = new_expire {
        if at <= ctx.now {
            ctx.db.remove(req.arg(1), ctx.now);
        } else {
            ctx.db.set_expire(req.arg(1), at, ctx.now);
        }
    } else if persist
        && ctx
            .db
            .get(req.arg(1), ctx.now)
            .is_some_and(|e| e.expire_at != 0)
    {
        // Only a TTL removed is a change (for WATCH and keyspace events, as in Redis).
        ctx.db.set_expire(req.arg(1), 0, ctx.now);
    }
    ctx.out.bulk(&v);
}

fn mget(ctx: &mut Ctx<'_>, req: &Request) {
    ctx.out.array(req.len() - 1);
    for i in 1..req.len() {
        match ctx.lookup(req.arg(i)).map(|e| &e.value) {
            Some(Value::Str(s)) => {
                let s = s.clone();
                ctx.out.bulk(&s)
            }
            _ => ctx.out.null(),
        }
    }
}

fn mset(ctx: &mut Ctx<'_>, req: &Request) {
    if req.len().is_multiple_of(2) {
        return ctx
            .out
            .err("ERR wrong number of arguments for 'mset' command");
    }
    for i in (1..req.len()).step_by(2) {
        ctx.db
            .set(req.arg(i), Value::Str(owned(req.arg(i + 1))), ctx.now);
    }
    ctx.out.ok();
}

fn msetnx(ctx: &mut Ctx<'_>, req: &Request) {
    if req.len().is_multiple_of(2) {
        return ctx
            .out
            .err("ERR wrong number of arguments for 'msetnx' command");
    }
    for i in (1..req.len()).step_by(2) {
        if ctx.db.exists(req.arg(i), ctx.now) {
            return ctx.out.int(0);
        }
    }
    for i in (1..req.len()).step_by(2) {
        ctx.db
            .set(req.arg(i), Value::Str(owned(req.arg(i + 1))), ctx.now);
    }
    ctx.out.int(1);
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], by: i64) {
    let (cur, ttl) = match ctx.db.get(key, ctx.now) {
        None => (0, 0),
        Some(e) => match &e.value {
            Value::Str(s) => match parse_i64(s) {
                Some(v) => (v, e.expire_at),
                None => return ctx.out.err(NOT_INT),
            },
            _ => return ctx.out.err(WRONGTYPE),
        },
    };
    let Some(n) = cur.checked_add(by) else {
        return ctx.out.err(OVERFLOW);
    };
    let mut e = Entry::new(
        Value::Str(Bytes::from(itoa::Buffer::new().format(n).to_owned())),
        ctx.now,
    );
    e.expire_at = ttl;
    ctx.db.set_entry(key, e);
    ctx.out.int(n);
}

fn incr(ctx: &mut Ctx<'_>, req: &Request) {
    incr_by(ctx, req.arg(1), 1)
}

fn decr(ctx: &mut Ctx<'_>, req: &Request) {
    incr_by(ctx, req.arg(1), -1)
}

fn incrby(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(by) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    incr_by(ctx, req.arg(1), by)
}

fn decrby(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(by) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    let Some(neg) = by.checked_neg() else {
        return ctx.out.err("ERR decrement would overflow");
    };
    incr_by(ctx, req.arg(1), neg)
}

fn incrbyfloat(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    // As Redis: the key's type, then its value, then the increment; in long double.
    let (cur, ttl) = match ctx.db.get(key, ctx.now) {
        None => (crate::ld::Ld::ZERO, 0),
        Some(e) => match &e.value {
            Value::Str(s) => match crate::ld::parse(s) {
                Some(v) => (v, e.expire_at),
                None => return ctx.out.err(super::NOT_FLOAT),
            },
            _ => return ctx.out.err(WRONGTYPE),
        },
    };
    let Some(by) = crate::ld::parse(req.arg(2)) else {
        return ctx.out.err(super::NOT_FLOAT);
    };
    let Some(n) = crate::ld::add(cur, by).filter(crate::ld::Ld::is_finite) else {
        return ctx.out.err("ERR increment would produce NaN or Infinity");
    };
    let text = crate::ld::to_human(n);
    // Built as a plain string, never an integer (Redis: createStringObjectFromLongDouble).
    let mut e = Entry::string(Bytes::from(text.clone()), ctx.now, StrEnc::Plain);
    e.expire_at = ttl;
    ctx.db.set_entry(key, e);
    ctx.out.bulk(text.as_bytes());
}

/// [`super::edit_string`] for an edit that always changes the string; its new length.
fn edit_in_place(ctx: &mut Ctx<'_>, key: &[u8], f: impl FnOnce(&mut BytesMut)) -> usize {
    super::edit_string(ctx, key, |m| {
        f(m);
        (m.len(), true)
    })
}

fn append(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let add = req.arg(2);
    let cur_len = match get_str(ctx, key) {
        Ok(s) => s.map(|s| s.len()),
        Err(Replied) => return,
    };
    if cur_len.unwrap_or(0) + add.len() > MAX_STRING {
        return ctx
            .out
            .err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    }
    if cur_len.is_some() {
        // Appending to a string makes it raw.
        let len = edit_in_place(ctx, key, |m| m.extend_from_slice(add));
        return ctx.out.int(len as i64);
    }
    // A new key is stored as SET would store it.
    ctx.db.set_entry(
        key,
        Entry::string(Bytes::copy_from_slice(add), ctx.now, StrEnc::Derived),
    );
    ctx.out.int(add.len() as i64);
}

fn strlen(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(s) = get_str(ctx, req.arg(1)) {
        let n = s.map(|s| s.len()).unwrap_or(0);
        ctx.out.int(n as i64)
    }
}

fn getrange(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(start) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    let Some(end) = int_arg(ctx.out, req.arg(3)) else {
        return;
    };
    let s = match get_str(ctx, req.arg(1)) {
        Ok(Some(s)) => s,
        Ok(None) => return ctx.out.bulk(b""),
        Err(Replied) => return,
    };
    // Redis's GETRANGE clamping (unlike LRANGE, an end before 0 becomes 0).
    if start < 0 && end < 0 && start > end {
        return ctx.out.bulk(b"");
    }
    let len = s.len() as i64;
    let (mut a, mut b) = (start, end);
    if a < 0 {
        a += len;
    }
    if b < 0 {
        b += len;
    }
    a = a.max(0);
    b = b.max(0);
    if b >= len {
        b = len - 1;
    }
    if a > b || len == 0 {
        return ctx.out.bulk(b"");
    }
    ctx.out.bulk(&s[a as usize..=b as usize])
}

fn setrange(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let Some(off) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    if off < 0 {
        return ctx.out.err("ERR offset is out of range");
    }
    let val = req.arg(3);
    let cur = match get_str(ctx, key) {
        Ok(s) => s,
        Err(Replied) => return,
    };
    let cur_len = cur.as_ref().map(|c| c.len()).unwrap_or(0);
    if val.is_empty() {
        return ctx.out.int(cur_len as i64);
    }
    let off = off as usize;
    if off + val.len() > MAX_STRING {
        return ctx
            .out
            .err("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    }
    let write = |v: &mut BytesMut| {
        if v.len() < off + val.len() {
            v.resize(off + val.len(), 0);
        }
        v[off..off + val.len()].copy_from_slice(val);
    };
    if cur.is_some() {
        drop(cur);
        let len = edit_in_place(ctx, key, write);
        return ctx.out.int(len as i64);
    }
    let mut v = BytesMut::new();
    write(&mut v);
    let len = v.len();
    ctx.db
        .set_entry(key, Entry::string(v.freeze(), ctx.now, StrEnc::Raw));
    ctx.out.int(len as i64);
}

fn bit_offset(ctx: &mut Ctx<'_>, arg: &[u8]) -> Option<usize> {
    match parse_i64(arg) {
        Some(v) if (0..(MAX_STRING as i64) * 8).contains(&v) => Some(v as usize),
        _ => {
            ctx.out
                .err("ERR bit offset is not an integer or out of range");
            None
        }
    }
}

fn setbit(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let Some(off) = bit_offset(ctx, req.arg(2)) else {
        return;
    };
    let on = match req.arg(3) {
        b"1" => true,
        b"0" => false,
        _ => return ctx.out.err("ERR bit is not an integer or out of range"),
    };
    let (cur, existed) = match get_str(ctx, key) {
        Ok(Some(s)) => (s, true),
        Ok(None) => (Bytes::new(), false),
        Err(Replied) => return,
    };
    let byte = off / 8;
    let bit = 7 - (off % 8);
    // The bit already so, in a string long enough: nothing changes (no write, no event).
    if existed && byte < cur.len() && ((cur[byte] >> bit) & 1 == 1) == on {
        return ctx.out.int(on as i64);
    }
    let flip = |v: &mut BytesMut| {
        if v.len() <= byte {
            v.resize(byte + 1, 0);
        }
        let old = (v[byte] >> bit) & 1;
        if on {
            v[byte] |= 1 << bit;
        } else {
            v[byte] &= !(1 << bit);
        }
        old
    };
    if existed {
        drop(cur);
        let mut old = 0;
        edit_in_place(ctx, key, |v| old = flip(v));
        return ctx.out.int(old as i64);
    }
    let mut v = BytesMut::new();
    let old = flip(&mut v);
    ctx.db
        .set_entry(key, Entry::string(v.freeze(), ctx.now, StrEnc::Raw));
    ctx.out.int(old as i64);
}

fn getbit(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(off) = bit_offset(ctx, req.arg(2)) else {
        return;
    };
    match get_str(ctx, req.arg(1)) {
        Ok(Some(s)) => {
            let byte = off / 8;
            let bit = if byte < s.len() {
                (s[byte] >> (7 - off % 8)) & 1
            } else {
                0
            };
            ctx.out.int(bit as i64)
        }
        Ok(None) => ctx.out.int(0),
        Err(Replied) => {}
    }
}

/// Resolves a BITCOUNT/BITPOS range; `bits` selects BIT units.
fn bit_range(start: i64, end: i64, len_units: i64) -> Option<(i64, i64)> {
    let mut s = if start < 0 { len_units + start } else { start };
    let mut e = if end < 0 { len_units + end } else { end };
    if s < 0 {
        s = 0;
    }
    if e < 0 {
        e = 0;
    }
    if e >= len_units {
        e = len_units - 1;
    }
    if s > e || len_units == 0 {
        return None;
    }
    Some((s, e))
}

fn count_bits(s: &[u8], from_bit: usize, to_bit: usize) -> u64 {
    (from_bit..=to_bit)
        .filter(|&b| (s[b / 8] >> (7 - b % 8)) & 1 == 1)
        .count() as u64
}

fn bitcount(ctx: &mut Ctx<'_>, req: &Request) {
    // As Redis: the key first (a missing one counts 0 whatever follows), then the range.
    let s = match get_str(ctx, req.arg(1)) {
        Ok(Some(s)) => s,
        Ok(None) => return ctx.out.int(0),
        Err(Replied) => return,
    };
    let n = req.len();
    if n == 3 || n > 5 {
        return ctx.out.err(SYNTAX);
    }
    let mut range = None;
    let mut bit_unit = false;
    if n >= 4 {
        let Some(s) = int_arg(ctx.out, req.arg(2)) else {
            return;
        };
        let Some(e) = int_arg(ctx.out, req.arg(3)) else {
            return;
        };
        if n == 5 {
            if is(req.arg(4), "bit") {
                bit_unit = true;
            } else if !is(req.arg(4), "byte") {
                return ctx.out.err(SYNTAX);
            }
        }
        // As Redis: two negative indexes in the wrong order count nothing (before they are
        // clamped into the string, which could make them meet).
        if s < 0 && e < 0 && s > e {
            return ctx.out.int(0);
        }
        range = Some((s, e));
    }
    let total = match range {
        None => s.iter().map(|b| b.count_ones() as u64).sum(),
        Some((a, b)) => {
            let units = if bit_unit {
                s.len() as i64 * 8
            } else {
                s.len() as i64
            };
            match bit_range(a, b, units) {
                None => 0,
                Some((a, b)) if bit_unit => count_bits(&s, a as usize, b as usize),
                Some((a, b)) => s[a as usize..=b as usize]
                    .iter()
                    .map(|x| x.count_ones() as u64)
                    .sum(),
            }
        }
    };
    ctx.out.int(total as i64);
}

fn bitpos(ctx: &mut Ctx<'_>, req: &Request) {
    // As Redis: the bit, then the key, then the range.
    let want = match int_arg(ctx.out, req.arg(2)) {
        None => return,
        Some(1) => 1u8,
        Some(0) => 0u8,
        Some(_) => return ctx.out.err("ERR The bit argument must be 1 or 0."),
    };
    let s = match get_str(ctx, req.arg(1)) {
        Ok(Some(s)) => s,
        Ok(None) => return ctx.out.int(if want == 1 { -1 } else { 0 }),
        Err(Replied) => return,
    };
    let n = req.len();
    if n > 6 {
        return ctx.out.err(SYNTAX);
    }
    let mut start = 0i64;
    let mut end = -1i64;
    let end_given = n >= 5;
    let mut bit_unit = false;
    if n >= 4 {
        let Some(s) = int_arg(ctx.out, req.arg(3)) else {
            return;
        };
        start = s;
    }
    if n >= 5 {
        let Some(e) = int_arg(ctx.out, req.arg(4)) else {
            return;
        };
        end = e;
    }
    if n == 6 {
        if is(req.arg(5), "bit") {
            bit_unit = true;
        } else if !is(req.arg(5), "byte") {
            return ctx.out.err(SYNTAX);
        }
    }
    let units = if bit_unit {
        s.len() as i64 * 8
    } else {
        s.len() as i64
    };
    let Some((a, b)) = bit_range(start, end, units) else {
        return ctx.out.int(-1);
    };
    let (from_bit, to_bit) = if bit_unit {
        (a as usize, b as usize)
    } else {
        (a as usize * 8, b as usize * 8 + 7)
    };
    for bit in from_bit..=to_bit {
        if (s[bit / 8] >> (7 - bit % 8)) & 1 == want {
            return ctx.out.int(bit as i64);
        }
    }
    // Looking for a clear bit with no explicit end: the string is padded with zeros.
    if want == 0 && !end_given {
        return ctx.out.int(to_bit as i64 + 1);
    }
    ctx.out.int(-1);
}

fn bitop(ctx: &mut Ctx<'_>, req: &Request) {
    let op = req.arg(1);
    let (and, or, xor, not) = (is(op, "and"), is(op, "or"), is(op, "xor"), is(op, "not"));
    if !(and || or || xor || not) {
        return ctx.out.err(SYNTAX);
    }
    if not && req.len() != 4 {
        return ctx
            .out
            .err("ERR BITOP NOT must be called with a single source key.");
    }
    let mut srcs = Vec::new();
    for i in 3..req.len() {
        match get_str(ctx, req.arg(i)) {
            Ok(Some(s)) => srcs.push(s),
            Ok(None) => srcs.push(Bytes::new()),
            Err(Replied) => return,
        }
    }
    let maxlen = srcs.iter().map(|s| s.len()).max().unwrap_or(0);
    let dest = req.arg(2);
    if maxlen == 0 {
        ctx.db.remove(dest, ctx.now);
        return ctx.out.int(0);
    }
    let mut res = vec![0u8; maxlen];
    for (i, r) in res.iter_mut().enumerate() {
        let byte = |s: &Bytes| s.get(i).copied().unwrap_or(0);
        *r = if not {
            !byte(&srcs[0])
        } else {
            let mut acc = byte(&srcs[0]);
            for s in &srcs[1..] {
                let b = byte(s);
                if and {
                    acc &= b
                } else if or {
                    acc |= b
                } else {
                    acc ^= b
                }
            }
            acc
        };
    }
    ctx.db
        .set_entry(dest, Entry::string(Bytes::from(res), ctx.now, StrEnc::Raw));
    ctx.out.int(maxlen as i64);
}

/// A common run: its range in the first string, in the second, and its length.
type LcsMatch = ((usize, usize), (usize, usize), usize);

fn lcs(ctx: &mut Ctx<'_>, req: &Request) {
    // As Redis: the keys' types first, then the options.
    let mut get = |k: &[u8]| -> Result<Bytes, Replied> {
        match ctx.lookup(k).map(|e| &e.value) {
            None => Ok(Bytes::new()),
            Some(Value::Str(s)) => Ok(s.clone()),
            Some(_) => Err(Replied),
        }
    };
    let (Ok(a), Ok(b)) = (get(req.arg(1)), get(req.arg(2))) else {
        return ctx
            .out
            .err("ERR The specified keys must contain string values");
    };
    let (mut want_len, mut want_idx, mut with_len) = (false, false, false);
    let mut min_len = 0i64;
    let mut i = 3;
    while i < req.len() {
        let a = req.arg(i);
        if is(a, "len") {
            want_len = true;
        } else if is(a, "idx") {
            want_idx = true;
        } else if is(a, "withmatchlen") {
            with_len = true;
        } else if is(a, "minmatchlen") && i + 1 < req.len() {
            let Some(v) = int_arg(ctx.out, req.arg(i + 1)) else {
                return;
            };
            min_len = v.max(0);
            i += 1;
        } else {
            return ctx.out.err(SYNTAX);
        }
        i += 1;
    }
    if want_len && want_idx {
        return ctx
            .out
            .err("ERR If you want both the length and indexes, please just use IDX.");
    }
    let (n, m) = (a.len(), b.len());
    // As Redis: the table may not take more than proto-max-bulk-len (512 MB by default);
    // two long strings would otherwise hold the shard for minutes and all its memory.
    let cells = (n as u128 + 1) * (m as u128 + 1);
    if cells * 4 > MAX_STRING as u128 {
        return ctx
            .out
            .err("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
    }
    let mut dp = vec![0u32; (n + 1) * (m + 1)];
    let w = m + 1;
    for i in 1..=n {
        for j in 1..=m {
            dp[i * w + j] = if a[i - 1] == b[j - 1] {
                dp[(i - 1) * w + j - 1] + 1
            } else {
                dp[(i - 1) * w + j].max(dp[i * w + j - 1])
            };
        }
    }
    let total = dp[n * w + m] as usize;
    if want_len {
        return ctx.out.int(total as i64);
    }
    // Walk back collecting the string and the matching ranges (as Redis does).
    let mut out = vec![0u8; total];
    let mut idx = total;
    let (mut i, mut j) = (n, m);
    let mut matches: Vec<LcsMatch> = Vec::new();
    let mut cur: Option<((usize, usize), (usize, usize))> = None;
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            idx -= 1;
            out[idx] = a[i - 1];
            match &mut cur {
                Some((ra, rb)) if ra.0 == i && rb.0 == j => {
                    ra.0 = i - 1;
                    rb.0 = j - 1;
                }
                _ => {
                    if let Some((ra, rb)) = cur.take() {
                        matches.push((ra, rb, ra.1 - ra.0 + 1));
                    }
                    cur = Some(((i - 1, i - 1), (j - 1, j - 1)));
                }
            }
            i -= 1;
            j -= 1;
        } else if dp[(i - 1) * w + j] > dp[i * w + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    if let Some((ra, rb)) = cur {
        matches.push((ra, rb, ra.1 - ra.0 + 1));
    }
    if !want_idx {
        return ctx.out.bulk(&out);
    }
    let kept: Vec<_> = matches
        .into_iter()
        .filter(|m| m.2 as i64 >= min_len)
        .collect();
    ctx.out.map(2);
    ctx.out.bulk(b"matches");
    ctx.out.array(kept.len());
    for (ra, rb, len) in kept {
        ctx.out.array(if with_len { 3 } else { 2 });
        ctx.out.array(2);
        ctx.out.int(ra.0 as i64);
        ctx.out.int(ra.1 as i64);
        ctx.out.array(2);
        ctx.out.int(rb.0 as i64);
        ctx.out.int(rb.1 as i64);
        if with_len {
            ctx.out.int(len as i64);
        }
    }
    ctx.out.bulk(b"len");
    ctx.out.int(total as i64);
}
