//! Hash commands.

use super::Replied;
use bytes::Bytes;
use hashbrown::HashMap;
use rand::seq::IteratorRandom;
use rand::Rng;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use super::{
    drop_if_empty, get_hash, hash_or_new, int_arg, is, owned, Ctx, Handler, OVERFLOW, SYNTAX,
};

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("hset", hset);
    m.insert("hmset", hmset);
    m.insert("hsetnx", hsetnx);
    m.insert("hget", hget);
    m.insert("hmget", hmget);
    m.insert("hdel", hdel);
    m.insert("hlen", hlen);
    m.insert("hstrlen", hstrlen);
    m.insert("hexists", hexists);
    m.insert("hkeys", hkeys);
    m.insert("hvals", hvals);
    m.insert("hgetall", hgetall);
    m.insert("hincrby", hincrby);
    m.insert("hincrbyfloat", hincrbyfloat);
    m.insert("hscan", hscan);
    m.insert("hrandfield", hrandfield);
}

fn hset_common(ctx: &mut Ctx<'_>, req: &Request, name: &str) -> Option<i64> {
    if !req.len().is_multiple_of(2) {
        ctx.out.err(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
        return None;
    }
    let key = req.arg(1);
    let h = hash_or_new(ctx, key).ok()?;
    let mut added = 0;
    for i in (2..req.len()).step_by(2) {
        if h.insert(owned(req.arg(i)), owned(req.arg(i + 1))).is_none() {
            added += 1;
        }
    }
    ctx.db.touch_watched(key);
    Some(added)
}

fn hset(ctx: &mut Ctx<'_>, req: &Request) {
    if let Some(n) = hset_common(ctx, req, "hset") {
        ctx.out.int(n);
    }
}

fn hmset(ctx: &mut Ctx<'_>, req: &Request) {
    if hset_common(ctx, req, "hmset").is_some() {
        ctx.out.ok();
    }
}

fn hsetnx(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let Ok(h) = hash_or_new(ctx, key) else { return };
    if h.contains_key(req.arg(2)) {
        return ctx.out.int(0);
    }
    h.insert(owned(req.arg(2)), owned(req.arg(3)));
    ctx.db.touch_watched(key);
    ctx.out.int(1);
}

fn hget(ctx: &mut Ctx<'_>, req: &Request) {
    match get_hash(ctx, req.arg(1)) {
        Ok(Some(h)) => match h.get(req.arg(2)).cloned() {
            Some(v) => ctx.out.bulk(&v),
            None => ctx.out.null(),
        },
        Ok(None) => ctx.out.null(),
        Err(Replied) => {}
    }
}

fn hmget(ctx: &mut Ctx<'_>, req: &Request) {
    let vals: Vec<Option<Bytes>> = match get_hash(ctx, req.arg(1)) {
        Ok(Some(h)) => (2..req.len()).map(|i| h.get(req.arg(i)).cloned()).collect(),
        Ok(None) => vec![None; req.len() - 2],
        Err(Replied) => return,
    };
    ctx.out.array(vals.len());
    for v in vals {
        match v {
            Some(v) => ctx.out.bulk(&v),
            None => ctx.out.null(),
        }
    }
}

fn hdel(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let n = match get_hash(ctx, key) {
        Ok(Some(h)) => (2..req.len())
            .filter(|&i| crate::db::hash_remove(h, req.arg(i)).is_some())
            .count(),
        Ok(None) => 0,
        Err(Replied) => return,
    };
    if n > 0 {
        ctx.db.touch_watched(key);
        drop_if_empty(ctx, key);
    }
    ctx.out.int(n as i64);
}

fn hlen(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(h) = get_hash(ctx, req.arg(1)) {
        let n = h.map(|h| h.len()).unwrap_or(0);
        ctx.out.int(n as i64);
    }
}

fn hstrlen(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(h) = get_hash(ctx, req.arg(1)) {
        let n = h
            .and_then(|h| h.get(req.arg(2)).map(|v| v.len()))
            .unwrap_or(0);
        ctx.out.int(n as i64);
    }
}

fn hexists(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(h) = get_hash(ctx, req.arg(1)) {
        let n = h.is_some_and(|h| h.contains_key(req.arg(2)));
        ctx.out.int(n as i64);
    }
}

fn hgetall_generic(ctx: &mut Ctx<'_>, req: &Request, keys: bool, vals: bool) {
    let items: Vec<(Bytes, Bytes)> = match get_hash(ctx, req.arg(1)) {
        Ok(Some(h)) => h.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Ok(None) => Vec::new(),
        Err(Replied) => return,
    };
    if keys && vals {
        ctx.out.map(items.len());
    } else {
        ctx.out.array(items.len());
    }
    for (k, v) in items {
        if keys {
            ctx.out.bulk(&k);
        }
        if vals {
            ctx.out.bulk(&v);
        }
    }
}

fn hkeys(ctx: &mut Ctx<'_>, req: &Request) {
    hgetall_generic(ctx, req, true, false)
}

fn hvals(ctx: &mut Ctx<'_>, req: &Request) {
    hgetall_generic(ctx, req, false, true)
}

fn hgetall(ctx: &mut Ctx<'_>, req: &Request) {
    hgetall_generic(ctx, req, true, true)
}

fn hincrby(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(by) = int_arg(ctx.out, req.arg(3)) else {
        return;
    };
    let key = req.arg(1);
    let field = req.arg(2);
    let cur = match get_hash(ctx, key) {
        Ok(Some(h)) => match h.get(field) {
            Some(v) => match parse_i64(v) {
                Some(n) => n,
                None => return ctx.out.err("ERR hash value is not an integer"),
            },
            None => 0,
        },
        Ok(None) => 0,
        Err(Replied) => return,
    };
    let Some(n) = cur.checked_add(by) else {
        return ctx.out.err(OVERFLOW);
    };
    let Ok(h) = hash_or_new(ctx, key) else { return };
    h.insert(
        owned(field),
        Bytes::from(itoa::Buffer::new().format(n).to_owned()),
    );
    ctx.db.touch_watched(key);
    ctx.out.int(n);
}

fn hincrbyfloat(ctx: &mut Ctx<'_>, req: &Request) {
    // In long double, as Redis (crate::ld).
    let Some(by) = crate::ld::parse(req.arg(3)) else {
        return ctx.out.err(super::NOT_FLOAT);
    };
    if !by.is_finite() {
        return ctx.out.err("ERR value is NaN or Infinity");
    }
    let key = req.arg(1);
    let field = req.arg(2);
    let cur = match get_hash(ctx, key) {
        Ok(Some(h)) => match h.get(field) {
            Some(v) => match crate::ld::parse(v) {
                Some(n) => n,
                None => return ctx.out.err("ERR hash value is not a float"),
            },
            None => crate::ld::Ld::ZERO,
        },
        Ok(None) => crate::ld::Ld::ZERO,
        Err(Replied) => return,
    };
    let Some(n) = crate::ld::add(cur, by).filter(crate::ld::Ld::is_finite) else {
        return ctx.out.err("ERR increment would produce NaN or Infinity");
    };
    let text = crate::ld::to_human(n);
    let Ok(h) = hash_or_new(ctx, key) else { return };
    h.insert(owned(field), Bytes::from(text.clone()));
    ctx.db.touch_watched(key);
    ctx.out.bulk(text.as_bytes());
}

/// Parses `cursor [MATCH p] [COUNT n] [TYPE t]` for the *SCAN commands (cursor at `at`).
pub struct ScanArgs {
    pub cursor: u64,
    pub pattern: Option<Bytes>,
    pub count: usize,
    pub type_: Option<Bytes>,
}

pub fn parse_scan(
    ctx: &mut Ctx<'_>,
    req: &Request,
    at: usize,
    allow_type: bool,
) -> Option<ScanArgs> {
    parse_scan_args(ctx.out, req, at, allow_type)
}

/// Parses SCAN-style arguments, writing Redis's errors.
pub fn parse_scan_args(
    out: &mut crate::out::Out,
    req: &Request,
    at: usize,
    allow_type: bool,
) -> Option<ScanArgs> {
    let cursor = match std::str::from_utf8(req.arg(at))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(c) => c,
        None => {
            out.err("ERR invalid cursor");
            return None;
        }
    };
    let mut a = ScanArgs {
        cursor,
        pattern: None,
        count: 10,
        type_: None,
    };
    let mut i = at + 1;
    while i < req.len() {
        let Some(v) = req.get(i + 1) else {
            out.err(SYNTAX);
            return None;
        };
        let o = req.arg(i);
        if is(o, "match") {
            a.pattern = Some(owned(v));
        } else if is(o, "count") {
            match parse_i64(v) {
                Some(c) if c >= 1 => a.count = c as usize,
                Some(_) => {
                    out.err(SYNTAX);
                    return None;
                }
                None => {
                    out.err(super::NOT_INT);
                    return None;
                }
            }
        } else if allow_type && is(o, "type") {
            a.type_ = Some(owned(v));
        } else {
            out.err(SYNTAX);
            return None;
        }
        i += 2;
    }
    Some(a)
}

fn hscan(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(a) = parse_scan(ctx, req, 2, false) else {
        return;
    };
    let items: Vec<(Bytes, Bytes)> = match get_hash(ctx, req.arg(1)) {
        Ok(Some(h)) => h.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Ok(None) => Vec::new(),
        Err(Replied) => return,
    };
    let items: Vec<_> = items
        .into_iter()
        .filter(|(k, _)| {
            a.pattern
                .as_ref()
                .is_none_or(|p| crate::glob::matches(p, k, false))
        })
        .collect();
    // The whole hash in one reply: cursor 0 (a valid, complete iteration).
    ctx.out.array(2);
    ctx.out.bulk(b"0");
    ctx.out.array(items.len() * 2);
    for (k, v) in items {
        ctx.out.bulk(&k);
        ctx.out.bulk(&v);
    }
}

fn hrandfield(ctx: &mut Ctx<'_>, req: &Request) {
    let Ok(count) = super::rand_count(ctx.out, req.get(2), false) else {
        return;
    };
    let withvalues = match req.get(3) {
        None => false,
        Some(a) if is(a, "withvalues") && req.len() == 4 => true,
        Some(_) => return ctx.out.err(SYNTAX),
    };
    if withvalues && super::rand_count(ctx.out, req.get(2), true).is_err() {
        return;
    }
    let h: Vec<(Bytes, Bytes)> = match get_hash(ctx, req.arg(1)) {
        Ok(Some(h)) => h.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Ok(None) => {
            return match count {
                None => ctx.out.null(),
                Some(_) => ctx.out.array(0),
            }
        }
        Err(Replied) => return,
    };
    let mut rng = rand::thread_rng();
    let Some(count) = count else {
        let (k, _) = &h[rng.gen_range(0..h.len())];
        return ctx.out.bulk(k);
    };
    let picked: Vec<&(Bytes, Bytes)> = if count >= 0 {
        h.iter()
            .choose_multiple(&mut rng, (count as usize).min(h.len()))
    } else {
        let n = count.unsigned_abs().min(1 << 24) as usize;
        (0..n).map(|_| &h[rng.gen_range(0..h.len())]).collect()
    };
    if withvalues && ctx.out.resp3 {
        ctx.out.array(picked.len());
        for (k, v) in picked {
            ctx.out.array(2);
            ctx.out.bulk(k);
            ctx.out.bulk(v);
        }
        return;
    }
    ctx.out.array(picked.len() * if withvalues { 2 } else { 1 });
    for (k, v) in picked {
        ctx.out.bulk(k);
        if withvalues {
            ctx.out.bulk(v);
        }
    }
}
