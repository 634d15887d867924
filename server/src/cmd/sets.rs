//! Set commands.

use super::Replied;
use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use rand::seq::IteratorRandom;
use rand::Rng;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use super::{drop_if_empty, get_set, is, owned, set_or_new, Ctx, Handler, MUST_POSITIVE, SYNTAX};
use crate::db::Value;

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("sadd", sadd);
    m.insert("srem", srem);
    m.insert("scard", scard);
    m.insert("sismember", sismember);
    m.insert("smismember", smismember);
    m.insert("smembers", smembers);
    m.insert("spop", spop);
    m.insert("srandmember", srandmember);
    m.insert("smove", smove);
    m.insert("sinter", sinter);
    m.insert("sinterstore", sinterstore);
    m.insert("sintercard", sintercard);
    m.insert("sunion", sunion);
    m.insert("sunionstore", sunionstore);
    m.insert("sdiff", sdiff);
    m.insert("sdiffstore", sdiffstore);
    m.insert("sscan", sscan);
}

fn sadd(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let Ok(s) = set_or_new(ctx, key) else { return };
    let n = (2..req.len())
        .filter(|&i| s.insert(owned(req.arg(i))))
        .count();
    if n > 0 {
        ctx.db.touch_watched(key);
    }
    ctx.out.int(n as i64);
}

fn srem(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let n = match get_set(ctx, key) {
        Ok(Some(s)) => (2..req.len()).filter(|&i| s.remove(req.arg(i))).count(),
        Ok(None) => 0,
        Err(Replied) => return,
    };
    if n > 0 {
        ctx.db.touch_watched(key);
        drop_if_empty(ctx, key);
    }
    ctx.out.int(n as i64);
}

fn scard(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(s) = get_set(ctx, req.arg(1)) {
        let n = s.map(|s| s.len()).unwrap_or(0);
        ctx.out.int(n as i64);
    }
}

fn sismember(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(s) = get_set(ctx, req.arg(1)) {
        let b = s.is_some_and(|s| s.contains(req.arg(2)));
        ctx.out.int(b as i64);
    }
}

fn smismember(ctx: &mut Ctx<'_>, req: &Request) {
    let res: Vec<bool> = match get_set(ctx, req.arg(1)) {
        Ok(Some(s)) => (2..req.len()).map(|i| s.contains(req.arg(i))).collect(),
        Ok(None) => vec![false; req.len() - 2],
        Err(Replied) => return,
    };
    ctx.out.array(res.len());
    for b in res {
        ctx.out.int(b as i64);
    }
}

fn reply_set(ctx: &mut Ctx<'_>, members: &[Bytes]) {
    ctx.out.set(members.len());
    for m in members {
        ctx.out.bulk(m);
    }
}

/// Puts a set's members in the order Redis lists them when it keeps the set as an intset
/// (ascending integers); any other set's order is its own.
fn intset_order(members: &mut [Bytes]) {
    if members.len() > 1 && members.len() <= crate::db::encoding_limit_of_sets() {
        let nums: Option<Vec<i64>> = members.iter().map(|m| parse_i64(m)).collect();
        if let Some(nums) = nums {
            let mut pairs: Vec<(i64, Bytes)> =
                nums.into_iter().zip(members.iter().cloned()).collect();
            pairs.sort_unstable_by_key(|p| p.0);
            for (slot, (_, m)) in members.iter_mut().zip(pairs) {
                *slot = m;
            }
        }
    }
}

fn smembers(ctx: &mut Ctx<'_>, req: &Request) {
    let mut m: Vec<Bytes> = match get_set(ctx, req.arg(1)) {
        Ok(Some(s)) => s.iter().cloned().collect(),
        Ok(None) => Vec::new(),
        Err(Replied) => return,
    };
    intset_order(&mut m);
    reply_set(ctx, &m);
}

fn spop(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let count = match req.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(c) if c >= 0 => Some(c as usize),
            _ => return ctx.out.err(MUST_POSITIVE),
        },
    };
    if req.len() > 3 {
        return ctx.out.err(SYNTAX);
    }
    let popped: Vec<Bytes> = match get_set(ctx, key) {
        Ok(Some(s)) => {
            let n = count.unwrap_or(1).min(s.len());
            let picked: Vec<Bytes> = s
                .iter()
                .cloned()
                .choose_multiple(&mut rand::thread_rng(), n);
            for p in &picked {
                s.remove(p);
            }
            picked
        }
        Ok(None) => {
            return match count {
                None => ctx.out.null(),
                Some(_) => ctx.out.set(0),
            }
        }
        Err(Replied) => return,
    };
    if !popped.is_empty() {
        ctx.db.touch_watched(key);
        drop_if_empty(ctx, key);
    }
    match count {
        None => match popped.first() {
            Some(p) => ctx.out.bulk(p),
            None => ctx.out.null(),
        },
        Some(_) => reply_set(ctx, &popped),
    }
}

fn srandmember(ctx: &mut Ctx<'_>, req: &Request) {
    if req.len() > 3 {
        return ctx.out.err(SYNTAX);
    }
    let Ok(count) = super::rand_count(ctx.out, req.get(2), false) else {
        return;
    };
    let members: Vec<Bytes> = match get_set(ctx, req.arg(1)) {
        Ok(Some(s)) => s.iter().cloned().collect(),
        Ok(None) => {
            return match count {
                None => ctx.out.null(),
                Some(_) => ctx.out.array(0),
            }
        }
        Err(Replied) => return,
    };
    let mut rng = rand::thread_rng();
    match count {
        None => {
            let m = &members[rng.gen_range(0..members.len())];
            ctx.out.bulk(m)
        }
        Some(c) if c >= 0 => {
            let picked = members
                .iter()
                .choose_multiple(&mut rng, (c as usize).min(members.len()));
            ctx.out.array(picked.len());
            for p in picked {
                ctx.out.bulk(p);
            }
        }
        Some(c) => {
            let n = c.unsigned_abs().min(1 << 24) as usize;
            ctx.out.array(n);
            for _ in 0..n {
                let m = &members[rng.gen_range(0..members.len())];
                ctx.out.bulk(m);
            }
        }
    }
}

fn smove(ctx: &mut Ctx<'_>, req: &Request) {
    // Redis's order: a missing source is 0 whatever the destination; then both types.
    let (src, dst, m) = (req.arg(1), req.arg(2), req.arg(3));
    let src_has = match get_set(ctx, src) {
        Ok(Some(s)) => s.contains(m),
        Ok(None) => return ctx.out.int(0),
        Err(Replied) => return,
    };
    if get_set(ctx, dst).is_err() {
        return;
    }
    if src == dst {
        return ctx.out.int(src_has as i64);
    }
    if !src_has {
        return ctx.out.int(0);
    }
    if let Ok(Some(s)) = get_set(ctx, src) {
        s.remove(m);
    }
    ctx.db.touch_watched(src);
    drop_if_empty(ctx, src);
    let Ok(d) = set_or_new(ctx, dst) else { return };
    d.insert(owned(m));
    ctx.db.touch_watched(dst);
    ctx.out.int(1);
}

/// The sets named by `keys` (missing keys as empty sets); `Err` on a wrong type.
fn load_sets(ctx: &mut Ctx<'_>, keys: &[&[u8]]) -> Result<Vec<Option<HashSet<Bytes>>>, Replied> {
    keys.iter()
        .map(|k| get_set(ctx, k).map(|s| s.cloned()))
        .collect()
}

enum Op {
    Inter,
    Union,
    Diff,
}

fn combine(sets: Vec<Option<HashSet<Bytes>>>, op: Op) -> HashSet<Bytes> {
    let mut it = sets.into_iter();
    let first = it.next().flatten().unwrap_or_default();
    match op {
        Op::Inter => {
            let rest: Vec<Option<HashSet<Bytes>>> = it.collect();
            if rest.iter().any(|s| s.is_none()) {
                return HashSet::new();
            }
            first
                .into_iter()
                .filter(|m| rest.iter().all(|s| s.as_ref().unwrap().contains(m)))
                .collect()
        }
        Op::Union => {
            let mut acc = first;
            for s in it.flatten() {
                acc.extend(s);
            }
            acc
        }
        Op::Diff => {
            let mut acc = first;
            for s in it.flatten() {
                acc.retain(|m| !s.contains(m));
            }
            acc
        }
    }
}

fn setop(ctx: &mut Ctx<'_>, req: &Request, from: usize, op: Op, store: Option<&[u8]>) {
    let keys: Vec<&[u8]> = (from..req.len()).map(|i| req.arg(i)).collect();
    let Ok(sets) = load_sets(ctx, &keys) else {
        return;
    };
    let res = combine(sets, op);
    match store {
        None => {
            let mut v: Vec<Bytes> = res.into_iter().collect();
            intset_order(&mut v);
            reply_set(ctx, &v)
        }
        Some(dst) => {
            let n = res.len();
            if n == 0 {
                ctx.db.remove(dst, ctx.now);
            } else {
                ctx.db.set(dst, Value::Set(Box::new(res)), ctx.now);
            }
            ctx.out.int(n as i64)
        }
    }
}

fn sinter(ctx: &mut Ctx<'_>, req: &Request) {
    setop(ctx, req, 1, Op::Inter, None)
}

fn sunion(ctx: &mut Ctx<'_>, req: &Request) {
    setop(ctx, req, 1, Op::Union, None)
}

fn sdiff(ctx: &mut Ctx<'_>, req: &Request) {
    setop(ctx, req, 1, Op::Diff, None)
}

fn sinterstore(ctx: &mut Ctx<'_>, req: &Request) {
    setop(ctx, req, 2, Op::Inter, Some(req.arg(1)))
}

fn sunionstore(ctx: &mut Ctx<'_>, req: &Request) {
    setop(ctx, req, 2, Op::Union, Some(req.arg(1)))
}

fn sdiffstore(ctx: &mut Ctx<'_>, req: &Request) {
    setop(ctx, req, 2, Op::Diff, Some(req.arg(1)))
}

/// Parses `numkeys key... [LIMIT n]` (SINTERCARD, ZINTERCARD: `zset`, which words its
/// numkeys errors as the other sorted-set operations do).
pub fn parse_card(ctx: &mut Ctx<'_>, req: &Request, zset: bool) -> Option<(Vec<Bytes>, usize)> {
    let n = match parse_i64(req.arg(1)) {
        Some(n) if n > 0 => n as usize,
        Some(_) if zset => {
            ctx.out
                .err("ERR at least 1 input key is needed for 'zintercard' command");
            return None;
        }
        None if zset => {
            ctx.out.err(super::NOT_INT);
            return None;
        }
        _ => {
            ctx.out.err("ERR numkeys should be greater than 0");
            return None;
        }
    };
    if n > req.len() - 2 {
        ctx.out.err(if zset {
            SYNTAX
        } else {
            "ERR Number of keys can't be greater than number of args"
        });
        return None;
    }
    let keys = (2..2 + n).map(|i| owned(req.arg(i))).collect();
    let mut limit = 0usize;
    let mut i = 2 + n;
    while i < req.len() {
        if is(req.arg(i), "limit") && i + 1 < req.len() {
            // Redis gives this one error for anything not a count (not an integer too).
            match parse_i64(req.arg(i + 1)) {
                Some(l) if l >= 0 => limit = l as usize,
                _ => {
                    ctx.out.err("ERR LIMIT can't be negative");
                    return None;
                }
            }
            i += 2;
        } else {
            ctx.out.err(SYNTAX);
            return None;
        }
    }
    Some((keys, limit))
}

fn sintercard(ctx: &mut Ctx<'_>, req: &Request) {
    let Some((keys, limit)) = parse_card(ctx, req, false) else {
        return;
    };
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let Ok(sets) = load_sets(ctx, &refs) else {
        return;
    };
    let n = combine(sets, Op::Inter).len();
    let n = if limit > 0 { n.min(limit) } else { n };
    ctx.out.int(n as i64);
}

fn sscan(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(a) = super::hashes::parse_scan(ctx, req, 2, false) else {
        return;
    };
    let members: Vec<Bytes> = match get_set(ctx, req.arg(1)) {
        Ok(Some(s)) => s.iter().cloned().collect(),
        Ok(None) => Vec::new(),
        Err(Replied) => return,
    };
    let mut members = members;
    intset_order(&mut members);
    let members: Vec<Bytes> = members
        .into_iter()
        .filter(|m| {
            a.pattern
                .as_ref()
                .is_none_or(|p| crate::glob::matches(p, m, false))
        })
        .collect();
    ctx.out.array(2);
    ctx.out.bulk(b"0");
    ctx.out.array_of_bulks(members.iter().map(|m| &m[..]));
}
