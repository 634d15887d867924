//! Sorted set commands.

use super::Replied;
use std::ops::Bound;

use bytes::Bytes;
use hashbrown::HashMap;
use rand::seq::IteratorRandom;
use rand::Rng;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use super::{
    drop_if_empty, get_zset, int_arg, is, owned, parse_float, zset_or_new, Ctx, Handler, NOT_FLOAT,
    SYNTAX, WRONGTYPE,
};
use crate::db::zset::Score;
use crate::db::{Value, ZSet};
use crate::out::Out;

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("zadd", zadd);
    m.insert("zincrby", zincrby);
    m.insert("zrem", zrem);
    m.insert("zcard", zcard);
    m.insert("zscore", zscore);
    m.insert("zmscore", zmscore);
    m.insert("zrank", zrank);
    m.insert("zrevrank", zrevrank);
    m.insert("zcount", zcount);
    m.insert("zlexcount", zlexcount);
    m.insert("zrange", zrange);
    m.insert("zrangestore", zrangestore);
    m.insert("zrangebyscore", zrangebyscore);
    m.insert("zrevrangebyscore", zrevrangebyscore);
    m.insert("zrangebylex", zrangebylex);
    m.insert("zrevrangebylex", zrevrangebylex);
    m.insert("zrevrange", zrevrange);
    m.insert("zremrangebyrank", zremrangebyrank);
    m.insert("zremrangebyscore", zremrangebyscore);
    m.insert("zremrangebylex", zremrangebylex);
    m.insert("zpopmin", zpopmin);
    m.insert("zpopmax", zpopmax);
    m.insert("zmpop", zmpop);
    m.insert("zunion", zunion);
    m.insert("zinter", zinter);
    m.insert("zdiff", zdiff);
    m.insert("zunionstore", zunionstore);
    m.insert("zinterstore", zinterstore);
    m.insert("zdiffstore", zdiffstore);
    m.insert("zintercard", zintercard);
    m.insert("zrandmember", zrandmember);
    m.insert("zscan", zscan);
}

pub(super) fn zadd(ctx: &mut Ctx<'_>, req: &Request) {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) =
        (false, false, false, false, false, false);
    let mut i = 2;
    while i < req.len() {
        let a = req.arg(i);
        if is(a, "nx") {
            nx = true
        } else if is(a, "xx") {
            xx = true
        } else if is(a, "gt") {
            gt = true
        } else if is(a, "lt") {
            lt = true
        } else if is(a, "ch") {
            ch = true
        } else if is(a, "incr") {
            incr = true
        } else {
            break;
        }
        i += 1;
    }
    let pairs = req.len() - i;
    if pairs == 0 || !pairs.is_multiple_of(2) {
        return ctx.out.err(SYNTAX);
    }
    if nx && xx {
        return ctx
            .out
            .err("ERR XX and NX options at the same time are not compatible");
    }
    if (nx && (gt || lt)) || (gt && lt) {
        return ctx
            .out
            .err("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && pairs > 2 {
        return ctx
            .out
            .err("ERR INCR option supports a single increment-element pair");
    }
    let mut items = Vec::with_capacity(pairs / 2);
    for j in (i..req.len()).step_by(2) {
        let Some(s) = parse_float(req.arg(j)) else {
            return ctx.out.err(NOT_FLOAT);
        };
        items.push((s, req.arg(j + 1)));
    }
    let key = req.arg(1);
    if get_zset(ctx, key).is_err() {
        return;
    }
    if xx && get_zset(ctx, key).ok().flatten().is_none() {
        return if incr { ctx.out.null() } else { ctx.out.int(0) };
    }
    let Ok(z) = zset_or_new(ctx, key) else { return };
    let (mut added, mut changed) = (0, 0);
    let mut incr_result = None;
    for (score, m) in items {
        let cur = z.score(m);
        let new = match (cur, incr) {
            (Some(c), true) => c + score,
            (_, _) => score,
        };
        if new.is_nan() {
            drop_if_empty(ctx, key);
            return ctx.out.err("ERR resulting score is not a number (NaN)");
        }
        match cur {
            None => {
                if xx {
                    continue;
                }
                z.insert(owned(m), new);
                added += 1;
                incr_result = Some(new);
            }
            Some(c) => {
                if nx || (gt && new <= c) || (lt && new >= c) {
                    continue;
                }
                if new != c {
                    z.insert(owned(m), new);
                    changed += 1;
                }
                incr_result = Some(new);
            }
        }
    }
    if added + changed > 0 {
        ctx.db.touch_watched(key);
    }
    drop_if_empty(ctx, key);
    if incr {
        match incr_result {
            Some(s) => ctx.out.double(s),
            None => ctx.out.null(),
        }
    } else {
        ctx.out.int(if ch { added + changed } else { added });
    }
}

fn zincrby(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(by) = parse_float(req.arg(2)) else {
        return ctx.out.err(NOT_FLOAT);
    };
    let key = req.arg(1);
    let Ok(z) = zset_or_new(ctx, key) else { return };
    let new = z.score(req.arg(3)).unwrap_or(0.0) + by;
    if new.is_nan() {
        drop_if_empty(ctx, key);
        return ctx.out.err("ERR resulting score is not a number (NaN)");
    }
    z.insert(owned(req.arg(3)), new);
    ctx.db.touch_watched(key);
    ctx.out.double(new);
}

fn zrem(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let n = match get_zset(ctx, key) {
        Ok(Some(z)) => (2..req.len())
            .filter(|&i| z.remove(req.arg(i)).is_some())
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

fn zcard(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(z) = get_zset(ctx, req.arg(1)) {
        let n = z.map(|z| z.len()).unwrap_or(0);
        ctx.out.int(n as i64);
    }
}

fn zscore(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(z) = get_zset(ctx, req.arg(1)) {
        match z.and_then(|z| z.score(req.arg(2))) {
            Some(s) => ctx.out.double(s),
            None => ctx.out.null(),
        }
    }
}

fn zmscore(ctx: &mut Ctx<'_>, req: &Request) {
    let scores: Vec<Option<f64>> = match get_zset(ctx, req.arg(1)) {
        Ok(Some(z)) => (2..req.len()).map(|i| z.score(req.arg(i))).collect(),
        Ok(None) => vec![None; req.len() - 2],
        Err(Replied) => return,
    };
    ctx.out.array(scores.len());
    for s in scores {
        match s {
            Some(s) => ctx.out.double(s),
            None => ctx.out.null(),
        }
    }
}

fn rank_generic(ctx: &mut Ctx<'_>, req: &Request, rev: bool) {
    match get_zset(ctx, req.arg(1)) {
        Ok(Some(z)) => match z.rank(req.arg(2)) {
            Some(r) => {
                let r = if rev { z.len() - 1 - r } else { r };
                ctx.out.int(r as i64)
            }
            None => ctx.out.null(),
        },
        Ok(None) => ctx.out.null(),
        Err(Replied) => {}
    }
}

fn zrank(ctx: &mut Ctx<'_>, req: &Request) {
    rank_generic(ctx, req, false)
}

fn zrevrank(ctx: &mut Ctx<'_>, req: &Request) {
    rank_generic(ctx, req, true)
}

/// A score bound: value and exclusiveness.
#[derive(Clone, Copy)]
struct ScoreBound {
    v: f64,
    excl: bool,
}

fn parse_score_bound(b: &[u8]) -> Option<ScoreBound> {
    let (excl, rest) = match b.first() {
        Some(b'(') => (true, &b[1..]),
        _ => (false, b),
    };
    let v = match rest {
        b"+inf" | b"inf" => f64::INFINITY,
        b"-inf" => f64::NEG_INFINITY,
        _ => parse_float(rest)?,
    };
    Some(ScoreBound { v, excl })
}

fn in_score(s: f64, min: ScoreBound, max: ScoreBound) -> bool {
    (if min.excl { s > min.v } else { s >= min.v })
        && (if max.excl { s < max.v } else { s <= max.v })
}

/// A lex bound: `-`, `+`, `[x`, `(x`.
#[derive(Clone)]
enum LexBound {
    Min,
    Max,
    Incl(Bytes),
    Excl(Bytes),
}

fn parse_lex_bound(b: &[u8]) -> Option<LexBound> {
    match b.first()? {
        b'-' if b.len() == 1 => Some(LexBound::Min),
        b'+' if b.len() == 1 => Some(LexBound::Max),
        b'[' => Some(LexBound::Incl(owned(&b[1..]))),
        b'(' => Some(LexBound::Excl(owned(&b[1..]))),
        _ => None,
    }
}

fn lex_ge_min(m: &[u8], min: &LexBound) -> bool {
    match min {
        LexBound::Min => true,
        LexBound::Max => false,
        LexBound::Incl(x) => m >= &x[..],
        LexBound::Excl(x) => m > &x[..],
    }
}

fn lex_le_max(m: &[u8], max: &LexBound) -> bool {
    match max {
        LexBound::Min => false,
        LexBound::Max => true,
        LexBound::Incl(x) => m <= &x[..],
        LexBound::Excl(x) => m < &x[..],
    }
}

fn zcount(ctx: &mut Ctx<'_>, req: &Request) {
    let (Some(min), Some(max)) = (parse_score_bound(req.arg(2)), parse_score_bound(req.arg(3)))
    else {
        return ctx.out.err("ERR min or max is not a float");
    };
    if let Ok(z) = get_zset(ctx, req.arg(1)) {
        let n = z.map(|z| score_range(z, min, max).count()).unwrap_or(0);
        ctx.out.int(n as i64)
    }
}

fn score_range(
    z: &ZSet,
    min: ScoreBound,
    max: ScoreBound,
) -> impl DoubleEndedIterator<Item = &(Score, Bytes)> {
    let lo = Bound::Included((Score(min.v), Bytes::new()));
    z.tree
        .range((lo, Bound::Unbounded))
        .take_while(move |(s, _)| if max.excl { s.0 < max.v } else { s.0 <= max.v })
        .filter(move |(s, _)| in_score(s.0, min, max))
        .collect::<Vec<_>>()
        .into_iter()
}

fn zlexcount(ctx: &mut Ctx<'_>, req: &Request) {
    let (Some(min), Some(max)) = (parse_lex_bound(req.arg(2)), parse_lex_bound(req.arg(3))) else {
        return ctx.out.err("ERR min or max not valid string range item");
    };
    if let Ok(z) = get_zset(ctx, req.arg(1)) {
        let n = z
            .map(|z| {
                z.iter()
                    .filter(|(_, m)| lex_ge_min(m, &min) && lex_le_max(m, &max))
                    .count()
            })
            .unwrap_or(0);
        ctx.out.int(n as i64)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum RangeBy {
    Rank,
    Score,
    Lex,
}

/// Everything a ZRANGE-family call asks for.
struct RangeSpec {
    by: RangeBy,
    rev: bool,
    offset: i64,
    count: i64,
    withscores: bool,
    start: Bytes,
    stop: Bytes,
}

/// Computes the selected (member, score) pairs, or writes an error and returns None.
fn select(out: &mut Out, z: &ZSet, r: &RangeSpec) -> Option<Vec<(Bytes, f64)>> {
    let limit = |v: Vec<(Bytes, f64)>| -> Vec<(Bytes, f64)> {
        if r.offset < 0 {
            return Vec::new();
        }
        let it = v.into_iter().skip(r.offset as usize);
        if r.count < 0 {
            it.collect()
        } else {
            it.take(r.count as usize).collect()
        }
    };
    match r.by {
        RangeBy::Rank => {
            let (Some(s), Some(e)) = (parse_i64(&r.start), parse_i64(&r.stop)) else {
                out.err(super::NOT_INT);
                return None;
            };
            let Some((a, b)) = super::range_indexes(s, e, z.len()) else {
                return Some(Vec::new());
            };
            let pick = |(s, m): &(Score, Bytes)| (m.clone(), s.0);
            Some(if r.rev {
                z.iter().rev().skip(a).take(b - a + 1).map(pick).collect()
            } else {
                z.iter().skip(a).take(b - a + 1).map(pick).collect()
            })
        }
        RangeBy::Score => {
            // With REV the first bound is the max.
            let (lo, hi) = if r.rev {
                (&r.stop, &r.start)
            } else {
                (&r.start, &r.stop)
            };
            let (Some(min), Some(max)) = (parse_score_bound(lo), parse_score_bound(hi)) else {
                out.err("ERR min or max is not a float");
                return None;
            };
            let v: Vec<(Bytes, f64)> = score_range(z, min, max)
                .map(|(s, m)| (m.clone(), s.0))
                .collect();
            let v = if r.rev {
                v.into_iter().rev().collect()
            } else {
                v
            };
            Some(limit(v))
        }
        RangeBy::Lex => {
            let (lo, hi) = if r.rev {
                (&r.stop, &r.start)
            } else {
                (&r.start, &r.stop)
            };
            let (Some(min), Some(max)) = (parse_lex_bound(lo), parse_lex_bound(hi)) else {
                out.err("ERR min or max not valid string range item");
                return None;
            };
            let v: Vec<(Bytes, f64)> = z
                .iter()
                .filter(|(_, m)| lex_ge_min(m, &min) && lex_le_max(m, &max))
                .map(|(s, m)| (m.clone(), s.0))
                .collect();
            let v = if r.rev {
                v.into_iter().rev().collect()
            } else {
                v
            };
            Some(limit(v))
        }
    }
}

fn reply_scored(ctx: &mut Ctx<'_>, items: &[(Bytes, f64)], withscores: bool) {
    if withscores && ctx.out.resp3 {
        ctx.out.array(items.len());
        for (m, s) in items {
            ctx.out.array(2);
            ctx.out.bulk(m);
            ctx.out.double(*s);
        }
        return;
    }
    ctx.out.array(items.len() * if withscores { 2 } else { 1 });
    for (m, s) in items {
        ctx.out.bulk(m);
        if withscores {
            ctx.out.double(*s);
        }
    }
}

/// Parses ZRANGE's options from `at`; `store` forbids WITHSCORES.
fn parse_range(
    ctx: &mut Ctx<'_>,
    req: &Request,
    start: usize,
    at: usize,
    store: bool,
) -> Option<RangeSpec> {
    let mut r = RangeSpec {
        by: RangeBy::Rank,
        rev: false,
        offset: 0,
        count: -1,
        withscores: false,
        start: owned(req.arg(start)),
        stop: owned(req.arg(start + 1)),
    };
    let mut have_limit = false;
    let mut i = at;
    while i < req.len() {
        let a = req.arg(i);
        if is(a, "byscore") {
            r.by = RangeBy::Score;
        } else if is(a, "bylex") {
            r.by = RangeBy::Lex;
        } else if is(a, "rev") {
            r.rev = true;
        } else if is(a, "withscores") && !store {
            r.withscores = true;
        } else if is(a, "limit") && i + 2 < req.len() {
            let o = int_arg(ctx.out, req.arg(i + 1))?;
            let c = int_arg(ctx.out, req.arg(i + 2))?;
            r.offset = o;
            r.count = c;
            have_limit = true;
            i += 2;
        } else {
            ctx.out.err(SYNTAX);
            return None;
        }
        i += 1;
    }
    if have_limit && r.by == RangeBy::Rank {
        ctx.out.err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX",
        );
        return None;
    }
    if r.withscores && r.by == RangeBy::Lex {
        ctx.out
            .err("ERR syntax error, WITHSCORES not supported in combination with BYLEX");
        return None;
    }
    Some(r)
}

fn run_range(ctx: &mut Ctx<'_>, key: &[u8], r: &RangeSpec) {
    // Redis parses the bounds before looking the key up.
    if select(ctx.out, &ZSet::default(), r).is_none() {
        return;
    }
    match get_zset(ctx, key) {
        Ok(Some(_)) => {}
        Ok(None) => return ctx.out.array(0),
        Err(Replied) => return,
    }
    // Borrow the set and the reply buffer apart (no copy of the set).
    let items = match ctx.db.get_quiet(key, ctx.now).map(|e| &e.value) {
        Some(crate::db::Value::ZSet(z)) => select(ctx.out, z, r),
        _ => None,
    };
    if let Some(items) = items {
        reply_scored(ctx, &items, r.withscores);
    }
}

fn zrange(ctx: &mut Ctx<'_>, req: &Request) {
    if let Some(r) = parse_range(ctx, req, 2, 4, false) {
        run_range(ctx, req.arg(1), &r);
    }
}

fn zrangestore(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(r) = parse_range(ctx, req, 3, 5, true) else {
        return;
    };
    // Redis parses the bounds before looking the source up.
    if select(ctx.out, &ZSet::default(), &r).is_none() {
        return;
    }
    let src = match get_zset(ctx, req.arg(2)) {
        Ok(z) => z.cloned().map(|b| *b).unwrap_or_default(),
        Err(Replied) => return,
    };
    let Some(items) = select(ctx.out, &src, &r) else {
        return;
    };
    let dst = req.arg(1);
    let n = items.len();
    if n == 0 {
        ctx.db.remove(dst, ctx.now);
    } else {
        let mut z = ZSet::default();
        for (m, s) in items {
            z.insert(m, s);
        }
        ctx.db.set(dst, Value::ZSet(Box::new(z)), ctx.now);
    }
    ctx.out.int(n as i64);
}

/// The legacy ZRANGEBYSCORE/ZRANGEBYLEX/ZREVRANGE* forms.
fn legacy_range(ctx: &mut Ctx<'_>, req: &Request, by: RangeBy, rev: bool) {
    let mut r = RangeSpec {
        by,
        rev,
        offset: 0,
        count: -1,
        withscores: false,
        start: owned(req.arg(2)),
        stop: owned(req.arg(3)),
    };
    let mut i = 4;
    while i < req.len() {
        let a = req.arg(i);
        if is(a, "withscores") && by != RangeBy::Lex {
            r.withscores = true;
        } else if is(a, "limit") && by != RangeBy::Rank && i + 2 < req.len() {
            let Some(o) = int_arg(ctx.out, req.arg(i + 1)) else {
                return;
            };
            let Some(c) = int_arg(ctx.out, req.arg(i + 2)) else {
                return;
            };
            r.offset = o;
            r.count = c;
            i += 2;
        } else {
            return ctx.out.err(SYNTAX);
        }
        i += 1;
    }
    run_range(ctx, req.arg(1), &r);
}

fn zrangebyscore(ctx: &mut Ctx<'_>, req: &Request) {
    legacy_range(ctx, req, RangeBy::Score, false)
}

fn zrevrangebyscore(ctx: &mut Ctx<'_>, req: &Request) {
    legacy_range(ctx, req, RangeBy::Score, true)
}

fn zrangebylex(ctx: &mut Ctx<'_>, req: &Request) {
    legacy_range(ctx, req, RangeBy::Lex, false)
}

fn zrevrangebylex(ctx: &mut Ctx<'_>, req: &Request) {
    legacy_range(ctx, req, RangeBy::Lex, true)
}

fn zrevrange(ctx: &mut Ctx<'_>, req: &Request) {
    legacy_range(ctx, req, RangeBy::Rank, true)
}

fn zrem_range(ctx: &mut Ctx<'_>, req: &Request, by: RangeBy) {
    let r = RangeSpec {
        by,
        rev: false,
        offset: 0,
        count: -1,
        withscores: false,
        start: owned(req.arg(2)),
        stop: owned(req.arg(3)),
    };
    let key = req.arg(1);
    if select(ctx.out, &ZSet::default(), &r).is_none() {
        return;
    }
    match get_zset(ctx, key) {
        Ok(Some(_)) => {}
        Ok(None) => return ctx.out.int(0),
        Err(Replied) => return,
    }
    let items = match ctx.db.get_quiet(key, ctx.now).map(|e| &e.value) {
        Some(crate::db::Value::ZSet(z)) => select(ctx.out, z, &r),
        _ => None,
    };
    let Some(items) = items else {
        return;
    };
    if let Ok(Some(z)) = get_zset(ctx, key) {
        for (m, _) in &items {
            z.remove(m);
        }
    }
    if !items.is_empty() {
        ctx.db.touch_watched(key);
        drop_if_empty(ctx, key);
    }
    ctx.out.int(items.len() as i64);
}

fn zremrangebyrank(ctx: &mut Ctx<'_>, req: &Request) {
    zrem_range(ctx, req, RangeBy::Rank)
}

fn zremrangebyscore(ctx: &mut Ctx<'_>, req: &Request) {
    zrem_range(ctx, req, RangeBy::Score)
}

fn zremrangebylex(ctx: &mut Ctx<'_>, req: &Request) {
    zrem_range(ctx, req, RangeBy::Lex)
}

/// Pops up to `count` members from the low (or high) end. `None`: key missing.
pub fn zpop_n(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    max: bool,
    count: usize,
) -> Result<Option<Vec<(Bytes, f64)>>, Replied> {
    let Some(z) = get_zset(ctx, key)? else {
        return Ok(None);
    };
    let mut v = Vec::new();
    for _ in 0..count {
        match z.pop(max) {
            Some(p) => v.push(p),
            None => break,
        }
    }
    ctx.db.touch_watched(key);
    drop_if_empty(ctx, key);
    Ok(Some(v))
}

fn zpop(ctx: &mut Ctx<'_>, req: &Request, max: bool) {
    if req.len() > 3 {
        return ctx.out.err(SYNTAX);
    }
    let count = match req.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(c) if c >= 0 => Some(c as usize),
            _ => return ctx.out.err(super::MUST_POSITIVE),
        },
    };
    match zpop_n(ctx, req.arg(1), max, count.unwrap_or(1)) {
        Ok(Some(v)) => {
            if count.is_some() {
                reply_scored(ctx, &v, true)
            } else {
                ctx.out.array(v.len() * 2);
                for (m, s) in v {
                    ctx.out.bulk(&m);
                    ctx.out.double(s);
                }
            }
        }
        Ok(None) => ctx.out.array(0),
        Err(Replied) => {}
    }
}

fn zpopmin(ctx: &mut Ctx<'_>, req: &Request) {
    zpop(ctx, req, false)
}

fn zpopmax(ctx: &mut Ctx<'_>, req: &Request) {
    zpop(ctx, req, true)
}

/// ZMPOP/BZMPOP body: pops from the first non-empty zset. Returns whether it did.
pub fn mpop_zsets(ctx: &mut Ctx<'_>, a: &super::lists::MpopArgs) -> Result<bool, Replied> {
    for k in &a.keys {
        if let Some(v) = zpop_n(ctx, k, !a.left, a.count)? {
            if !v.is_empty() {
                // [key, [[member, score], ...]] in both protocols.
                ctx.out.array(2);
                ctx.out.bulk(k);
                ctx.out.array(v.len());
                for (m, s) in &v {
                    ctx.out.array(2);
                    ctx.out.bulk(m);
                    ctx.out.double(*s);
                }
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn zmpop(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(a) = super::lists::parse_mpop(ctx, req, 1, true) else {
        return;
    };
    match mpop_zsets(ctx, &a) {
        Ok(true) | Err(Replied) => {}
        Ok(false) => ctx.out.null_array(),
    }
}

#[derive(Clone, Copy)]
enum Agg {
    Sum,
    Min,
    Max,
}

enum SetOp {
    Union,
    Inter,
    Diff,
}

/// Loads a zset or a plain set (members scored 1) as a zset.
fn load_scored(ctx: &mut Ctx<'_>, key: &[u8]) -> Result<Option<HashMap<Bytes, f64>>, Replied> {
    match ctx.lookup(key).map(|e| &e.value) {
        None => Ok(None),
        Some(Value::ZSet(z)) => Ok(Some(z.dict.clone())),
        Some(Value::Set(s)) => Ok(Some(s.iter().map(|m| (m.clone(), 1.0)).collect())),
        Some(_) => {
            ctx.out.err(WRONGTYPE);
            Err(Replied)
        }
    }
}

/// ZUNION/ZINTER/ZDIFF[STORE]: `at` is the numkeys position.
fn zsetop(
    ctx: &mut Ctx<'_>,
    req: &Request,
    at: usize,
    op: SetOp,
    store: Option<&[u8]>,
    name: &str,
) {
    let n = match parse_i64(req.arg(at)) {
        Some(n) if n > 0 => n as usize,
        Some(_) | None if parse_i64(req.arg(at)).is_none() => return ctx.out.err(super::NOT_INT),
        _ => {
            return ctx.out.err(&format!(
                "ERR at least 1 input key is needed for '{name}' command"
            ));
        }
    };
    if at + 1 + n > req.len() {
        return ctx.out.err(SYNTAX);
    }
    let mut weights = vec![1.0; n];
    let mut agg = Agg::Sum;
    let mut withscores = false;
    let mut i = at + 1 + n;
    while i < req.len() {
        let a = req.arg(i);
        if is(a, "weights") && !matches!(op, SetOp::Diff) && i + n < req.len() {
            for (j, w) in weights.iter_mut().enumerate() {
                match parse_float(req.arg(i + 1 + j)) {
                    Some(v) => *w = v,
                    None => return ctx.out.err("ERR weight value is not a float"),
                }
            }
            i += n;
        } else if is(a, "aggregate") && !matches!(op, SetOp::Diff) && i + 1 < req.len() {
            let v = req.arg(i + 1);
            agg = if is(v, "sum") {
                Agg::Sum
            } else if is(v, "min") {
                Agg::Min
            } else if is(v, "max") {
                Agg::Max
            } else {
                return ctx.out.err(SYNTAX);
            };
            i += 1;
        } else if is(a, "withscores") && store.is_none() {
            withscores = true;
        } else {
            return ctx.out.err(SYNTAX);
        }
        i += 1;
    }
    let mut sets = Vec::with_capacity(n);
    for j in 0..n {
        match load_scored(ctx, req.arg(at + 1 + j)) {
            Ok(s) => sets.push(s),
            Err(Replied) => return,
        }
    }
    let combine = |a: f64, b: f64| -> f64 {
        let r = match agg {
            Agg::Sum => a + b,
            Agg::Min => a.min(b),
            Agg::Max => a.max(b),
        };
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let weighted = |s: f64, w: f64| -> f64 {
        let r = s * w;
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let mut acc: HashMap<Bytes, f64> = HashMap::new();
    match op {
        SetOp::Union => {
            for (j, s) in sets.iter().enumerate() {
                for (m, sc) in s.iter().flatten() {
                    let v = weighted(*sc, weights[j]);
                    acc.entry(m.clone())
                        .and_modify(|x| *x = combine(*x, v))
                        .or_insert(v);
                }
            }
        }
        SetOp::Inter => {
            if sets.iter().all(|s| s.is_some()) {
                let first = sets[0].as_ref().unwrap();
                'm: for (m, sc) in first {
                    let mut v = weighted(*sc, weights[0]);
                    for (j, s) in sets.iter().enumerate().skip(1) {
                        match s.as_ref().unwrap().get(m) {
                            Some(x) => v = combine(v, weighted(*x, weights[j])),
                            None => continue 'm,
                        }
                    }
                    acc.insert(m.clone(), v);
                }
            }
        }
        SetOp::Diff => {
            if let Some(first) = &sets[0] {
                for (m, sc) in first {
                    if sets[1..].iter().flatten().all(|s| !s.contains_key(m)) {
                        acc.insert(m.clone(), *sc);
                    }
                }
            }
        }
    }
    let mut z = ZSet::default();
    for (m, s) in acc {
        z.insert(m, s);
    }
    match store {
        Some(dst) => {
            let len = z.len();
            if len == 0 {
                ctx.db.remove(dst, ctx.now);
            } else {
                ctx.db.set(dst, Value::ZSet(Box::new(z)), ctx.now);
            }
            ctx.out.int(len as i64);
        }
        None => {
            let items: Vec<(Bytes, f64)> = z.iter().map(|(s, m)| (m.clone(), s.0)).collect();
            reply_scored(ctx, &items, withscores);
        }
    }
}

fn zunion(ctx: &mut Ctx<'_>, req: &Request) {
    zsetop(ctx, req, 1, SetOp::Union, None, "zunion")
}

fn zinter(ctx: &mut Ctx<'_>, req: &Request) {
    zsetop(ctx, req, 1, SetOp::Inter, None, "zinter")
}

fn zdiff(ctx: &mut Ctx<'_>, req: &Request) {
    zsetop(ctx, req, 1, SetOp::Diff, None, "zdiff")
}

fn zunionstore(ctx: &mut Ctx<'_>, req: &Request) {
    zsetop(ctx, req, 2, SetOp::Union, Some(req.arg(1)), "zunionstore")
}

fn zinterstore(ctx: &mut Ctx<'_>, req: &Request) {
    zsetop(ctx, req, 2, SetOp::Inter, Some(req.arg(1)), "zinterstore")
}

fn zdiffstore(ctx: &mut Ctx<'_>, req: &Request) {
    zsetop(ctx, req, 2, SetOp::Diff, Some(req.arg(1)), "zdiffstore")
}

fn zintercard(ctx: &mut Ctx<'_>, req: &Request) {
    let Some((keys, limit)) = super::sets::parse_card(ctx, req, true) else {
        return;
    };
    let mut sets = Vec::new();
    for k in &keys {
        match load_scored(ctx, k) {
            Ok(s) => sets.push(s),
            Err(Replied) => return,
        }
    }
    let n = if sets.iter().any(|s| s.is_none()) {
        0
    } else {
        let first = sets[0].as_ref().unwrap();
        first
            .keys()
            .filter(|m| {
                sets[1..]
                    .iter()
                    .all(|s| s.as_ref().unwrap().contains_key(*m))
            })
            .count()
    };
    let n = if limit > 0 { n.min(limit) } else { n };
    ctx.out.int(n as i64);
}

fn zrandmember(ctx: &mut Ctx<'_>, req: &Request) {
    let Ok(count) = super::rand_count(ctx.out, req.get(2), false) else {
        return;
    };
    let withscores = match req.get(3) {
        None => false,
        Some(a) if is(a, "withscores") && req.len() == 4 => true,
        Some(_) => return ctx.out.err(SYNTAX),
    };
    if withscores && super::rand_count(ctx.out, req.get(2), true).is_err() {
        return;
    }
    let items: Vec<(Bytes, f64)> = match get_zset(ctx, req.arg(1)) {
        Ok(Some(z)) => z.iter().map(|(s, m)| (m.clone(), s.0)).collect(),
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
        let (m, _) = &items[rng.gen_range(0..items.len())];
        return ctx.out.bulk(m);
    };
    let picked: Vec<(Bytes, f64)> = if count >= 0 {
        items
            .iter()
            .cloned()
            .choose_multiple(&mut rng, (count as usize).min(items.len()))
    } else {
        let n = count.unsigned_abs().min(1 << 24) as usize;
        (0..n)
            .map(|_| items[rng.gen_range(0..items.len())].clone())
            .collect()
    };
    reply_scored(ctx, &picked, withscores);
}

fn zscan(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(a) = super::hashes::parse_scan(ctx, req, 2, false) else {
        return;
    };
    let items: Vec<(Bytes, f64)> = match get_zset(ctx, req.arg(1)) {
        Ok(Some(z)) => z.iter().map(|(s, m)| (m.clone(), s.0)).collect(),
        Ok(None) => Vec::new(),
        Err(Replied) => return,
    };
    let items: Vec<_> = items
        .into_iter()
        .filter(|(m, _)| {
            a.pattern
                .as_ref()
                .is_none_or(|p| crate::glob::matches(p, m, false))
        })
        .collect();
    ctx.out.array(2);
    ctx.out.bulk(b"0");
    ctx.out.array(items.len() * 2);
    for (m, s) in items {
        ctx.out.bulk(&m);
        ctx.out.double(s);
    }
}
