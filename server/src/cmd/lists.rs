//! List commands (the blocking variants are driven by the connection, which calls these).

use super::Replied;
use bytes::Bytes;
use hashbrown::HashMap;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;
use std::collections::VecDeque;

use super::{
    drop_if_empty, get_list, int_arg, is, list_or_new, owned, range_indexes, Ctx, Handler,
    MUST_POSITIVE, NOT_INT, NO_KEY, SYNTAX,
};

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("lpush", lpush);
    m.insert("rpush", rpush);
    m.insert("lpushx", lpushx);
    m.insert("rpushx", rpushx);
    m.insert("lpop", lpop);
    m.insert("rpop", rpop);
    m.insert("llen", llen);
    m.insert("lrange", lrange);
    m.insert("lindex", lindex);
    m.insert("lset", lset);
    m.insert("linsert", linsert);
    m.insert("lrem", lrem);
    m.insert("ltrim", ltrim);
    m.insert("lpos", lpos);
    m.insert("lmove", lmove);
    m.insert("rpoplpush", rpoplpush);
    m.insert("lmpop", lmpop);
}

fn push(ctx: &mut Ctx<'_>, req: &Request, left: bool, only_existing: bool) {
    let key = req.arg(1);
    if only_existing {
        match get_list(ctx, key) {
            Ok(Some(_)) => {}
            Ok(None) => return ctx.out.int(0),
            Err(Replied) => return,
        }
    }
    let Ok(l) = list_or_new(ctx, key) else { return };
    for i in 2..req.len() {
        let v = owned(req.arg(i));
        if left {
            l.push_front(v)
        } else {
            l.push_back(v)
        }
    }
    let n = l.len();
    ctx.db.touch_watched(key);
    ctx.pushed.push(owned(key));
    ctx.out.int(n as i64);
}

fn lpush(ctx: &mut Ctx<'_>, req: &Request) {
    push(ctx, req, true, false)
}

fn rpush(ctx: &mut Ctx<'_>, req: &Request) {
    push(ctx, req, false, false)
}

fn lpushx(ctx: &mut Ctx<'_>, req: &Request) {
    push(ctx, req, true, true)
}

fn rpushx(ctx: &mut Ctx<'_>, req: &Request) {
    push(ctx, req, false, true)
}

/// Pops up to `count` elements; `None` when the key is missing (WRONGTYPE written on Err).
pub fn pop_n(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    left: bool,
    count: usize,
) -> Result<Option<Vec<Bytes>>, Replied> {
    let Some(l) = get_list(ctx, key)? else {
        return Ok(None);
    };
    let mut v = Vec::with_capacity(count.min(l.len()));
    for _ in 0..count {
        match if left { l.pop_front() } else { l.pop_back() } {
            Some(x) => v.push(x),
            None => break,
        }
    }
    ctx.db.touch_watched(key);
    drop_if_empty(ctx, key);
    Ok(Some(v))
}

fn pop(ctx: &mut Ctx<'_>, req: &Request, left: bool) {
    if req.len() > 3 {
        return ctx.out.err(&format!(
            "ERR wrong number of arguments for '{}' command",
            if left { "lpop" } else { "rpop" }
        ));
    }
    let count = if req.len() == 3 {
        match parse_i64(req.arg(2)) {
            Some(c) if c >= 0 => Some(c as usize),
            _ => return ctx.out.err(MUST_POSITIVE),
        }
    } else {
        None
    };
    let key = req.arg(1);
    match count {
        None => match pop_n(ctx, key, left, 1) {
            Ok(Some(mut v)) if !v.is_empty() => {
                let x = v.pop().unwrap();
                ctx.out.bulk(&x)
            }
            Ok(_) => ctx.out.null(),
            Err(Replied) => {}
        },
        Some(0) => match get_list(ctx, key) {
            Ok(Some(_)) => ctx.out.array(0),
            Ok(None) => ctx.out.null_array(),
            Err(Replied) => {}
        },
        Some(c) => match pop_n(ctx, key, left, c) {
            Ok(Some(v)) => ctx.out.array_of_bulks(v.iter().map(|b| &b[..])),
            Ok(None) => ctx.out.null_array(),
            Err(Replied) => {}
        },
    }
}

fn lpop(ctx: &mut Ctx<'_>, req: &Request) {
    pop(ctx, req, true)
}

fn rpop(ctx: &mut Ctx<'_>, req: &Request) {
    pop(ctx, req, false)
}

fn llen(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(l) = get_list(ctx, req.arg(1)) {
        let n = l.map(|l| l.len()).unwrap_or(0);
        ctx.out.int(n as i64)
    }
}

fn lrange(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(s) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    let Some(e) = int_arg(ctx.out, req.arg(3)) else {
        return;
    };
    let Ctx { db, out, now, .. } = ctx;
    match db.get(req.arg(1), *now).map(|e| &e.value) {
        None => out.array(0),
        Some(crate::db::Value::List(l)) => match range_indexes(s, e, l.len()) {
            None => out.array(0),
            Some((a, b)) => {
                out.array(b - a + 1);
                for x in l.range(a..=b) {
                    out.bulk(x);
                }
            }
        },
        Some(_) => out.err(super::WRONGTYPE),
    }
}

fn norm_index(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

fn lindex(ctx: &mut Ctx<'_>, req: &Request) {
    // Redis looks the key up (and checks its type) before parsing the index.
    let len = match get_list(ctx, req.arg(1)) {
        Ok(Some(l)) => l.len(),
        Ok(None) => return ctx.out.null(),
        Err(Replied) => return,
    };
    let Some(i) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    match norm_index(i, len) {
        Some(i) => {
            let v = get_list(ctx, req.arg(1))
                .ok()
                .flatten()
                .map(|l| l[i].clone());
            match v {
                Some(v) => ctx.out.bulk(&v),
                None => ctx.out.null(),
            }
        }
        None => ctx.out.null(),
    }
}

fn lset(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let len = match get_list(ctx, key) {
        Ok(Some(l)) => l.len(),
        Ok(None) => return ctx.out.err(NO_KEY),
        Err(Replied) => return,
    };
    let Some(i) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    match norm_index(i, len) {
        Some(i) => {
            if let Ok(Some(l)) = get_list(ctx, key) {
                l[i] = owned(req.arg(3));
            }
            ctx.db.touch_watched(key);
            ctx.out.ok()
        }
        None => ctx.out.err("ERR index out of range"),
    }
}

fn linsert(ctx: &mut Ctx<'_>, req: &Request) {
    let before = if is(req.arg(2), "before") {
        true
    } else if is(req.arg(2), "after") {
        false
    } else {
        return ctx.out.err(SYNTAX);
    };
    let key = req.arg(1);
    match get_list(ctx, key) {
        Ok(Some(l)) => match l.iter().position(|x| &x[..] == req.arg(3)) {
            Some(p) => {
                l.insert(if before { p } else { p + 1 }, owned(req.arg(4)));
                let n = l.len();
                ctx.db.touch_watched(key);
                ctx.out.int(n as i64)
            }
            None => ctx.out.int(-1),
        },
        Ok(None) => ctx.out.int(0),
        Err(Replied) => {}
    }
}

fn lrem(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(count) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    let key = req.arg(1);
    let elem = req.arg(3);
    let removed = match get_list(ctx, key) {
        Ok(Some(l)) => {
            let limit = if count == 0 {
                usize::MAX
            } else {
                count.unsigned_abs() as usize
            };
            let mut removed = 0;
            if count >= 0 {
                let mut i = 0;
                while i < l.len() && removed < limit {
                    if &l[i][..] == elem {
                        l.remove(i);
                        removed += 1;
                    } else {
                        i += 1;
                    }
                }
            } else {
                let mut i = l.len();
                while i > 0 && removed < limit {
                    i -= 1;
                    if &l[i][..] == elem {
                        l.remove(i);
                        removed += 1;
                    }
                }
            }
            removed
        }
        Ok(None) => 0,
        Err(Replied) => return,
    };
    if removed > 0 {
        ctx.db.touch_watched(key);
        drop_if_empty(ctx, key);
    }
    ctx.out.int(removed as i64);
}

fn ltrim(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(s) = int_arg(ctx.out, req.arg(2)) else {
        return;
    };
    let Some(e) = int_arg(ctx.out, req.arg(3)) else {
        return;
    };
    let key = req.arg(1);
    match get_list(ctx, key) {
        Ok(Some(l)) => {
            match range_indexes(s, e, l.len()) {
                Some((a, b)) => {
                    l.truncate(b + 1);
                    l.drain(..a);
                }
                None => l.clear(),
            }
            ctx.db.touch_watched(key);
            drop_if_empty(ctx, key);
            ctx.out.ok()
        }
        Ok(None) => ctx.out.ok(),
        Err(Replied) => {}
    }
}

fn lpos(ctx: &mut Ctx<'_>, req: &Request) {
    let mut rank: i64 = 1;
    let mut count: Option<i64> = None;
    let mut maxlen: i64 = 0;
    let mut i = 3;
    while i < req.len() {
        let a = req.arg(i);
        let Some(v) = req.get(i + 1) else {
            return ctx.out.err(SYNTAX);
        };
        if is(a, "rank") {
            let Some(r) = int_arg(ctx.out, v) else { return };
            if r == 0 {
                return ctx.out.err(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the \
                     second ... or use negative to start from the end of the list",
                );
            }
            if r == i64::MIN {
                return ctx.out.err(NOT_INT);
            }
            rank = r;
        } else if is(a, "count") {
            // As Redis: not a number is told as "can't be negative" too.
            match rcodis_core::num::parse_i64(v) {
                Some(c) if c >= 0 => count = Some(c),
                _ => return ctx.out.err("ERR COUNT can't be negative"),
            }
        } else if is(a, "maxlen") {
            match rcodis_core::num::parse_i64(v) {
                Some(m) if m >= 0 => maxlen = m,
                _ => return ctx.out.err("ERR MAXLEN can't be negative"),
            }
        } else {
            return ctx.out.err(SYNTAX);
        }
        i += 2;
    }
    let elem = req.arg(2);
    let l = match get_list(ctx, req.arg(1)) {
        Ok(Some(l)) => l.clone(),
        Ok(None) => {
            return if count.is_some() {
                ctx.out.array(0)
            } else {
                ctx.out.null()
            };
        }
        Err(Replied) => return,
    };
    let want = match count {
        Some(0) => usize::MAX,
        Some(c) => c as usize,
        None => 1,
    };
    let mut found = Vec::new();
    let mut skip = rank.unsigned_abs() - 1;
    let n = l.len();
    let limit = if maxlen == 0 {
        n
    } else {
        (maxlen as usize).min(n)
    };
    for step in 0..limit {
        let idx = if rank > 0 { step } else { n - 1 - step };
        if &l[idx][..] == elem {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(idx as i64);
            if found.len() >= want {
                break;
            }
        }
    }
    match count {
        Some(_) => {
            ctx.out.array(found.len());
            for f in found {
                ctx.out.int(f);
            }
        }
        None => match found.first() {
            Some(&f) => ctx.out.int(f),
            None => ctx.out.null(),
        },
    }
}

fn side(arg: &[u8]) -> Option<bool> {
    if is(arg, "left") {
        Some(true)
    } else if is(arg, "right") {
        Some(false)
    } else {
        None
    }
}

/// Moves one element; `None` when the source is empty. Used by LMOVE and BLMOVE.
pub fn move_one(
    ctx: &mut Ctx<'_>,
    src: &[u8],
    dst: &[u8],
    from_left: bool,
    to_left: bool,
) -> Result<Option<Bytes>, Replied> {
    // As Redis: a missing source is a nil reply whatever the destination holds; with a
    // source, the destination is type-checked before anything is popped.
    match get_list(ctx, src)? {
        Some(l) if !l.is_empty() => {}
        _ => return Ok(None),
    }
    if get_list(ctx, dst).is_err() {
        return Err(Replied);
    }
    let Some(l) = get_list(ctx, src)? else {
        return Ok(None);
    };
    let pop = |l: &mut VecDeque<Bytes>| {
        if from_left {
            l.pop_front()
        } else {
            l.pop_back()
        }
    };
    let push = |l: &mut VecDeque<Bytes>, v: Bytes| {
        if to_left {
            l.push_front(v)
        } else {
            l.push_back(v)
        }
    };
    let Some(v) = pop(l) else {
        return Ok(None);
    };
    if src == dst {
        // A rotation: the list never empties, so the key (and its TTL) stays.
        push(l, v.clone());
    } else {
        ctx.db.touch_watched(src);
        drop_if_empty(ctx, src);
        push(list_or_new(ctx, dst)?, v.clone());
    }
    ctx.db.touch_watched(dst);
    ctx.pushed.push(owned(dst));
    Ok(Some(v))
}

fn lmove(ctx: &mut Ctx<'_>, req: &Request) {
    let (Some(f), Some(t)) = (side(req.arg(3)), side(req.arg(4))) else {
        return ctx.out.err(SYNTAX);
    };
    match move_one(ctx, req.arg(1), req.arg(2), f, t) {
        Ok(Some(v)) => ctx.out.bulk(&v),
        Ok(None) => ctx.out.null(),
        Err(Replied) => {}
    }
}

fn rpoplpush(ctx: &mut Ctx<'_>, req: &Request) {
    match move_one(ctx, req.arg(1), req.arg(2), false, true) {
        Ok(Some(v)) => ctx.out.bulk(&v),
        Ok(None) => ctx.out.null(),
        Err(Replied) => {}
    }
}

/// Parsed `numkeys key... LEFT|RIGHT [COUNT n]` (LMPOP at 1, BLMPOP at 2).
pub struct MpopArgs {
    pub keys: Vec<Bytes>,
    pub left: bool,
    pub count: usize,
}

/// Parses the MPOP argument shape starting at `at` (the numkeys position).
pub fn parse_mpop(ctx: &mut Ctx<'_>, req: &Request, at: usize, zset: bool) -> Option<MpopArgs> {
    let Some(n) = parse_i64(req.arg(at)) else {
        ctx.out.err("ERR numkeys should be greater than 0");
        return None;
    };
    if n <= 0 {
        ctx.out.err("ERR numkeys should be greater than 0");
        return None;
    }
    let n = n as usize;
    if req.len() < at + 1 + n + 1 {
        ctx.out.err(SYNTAX);
        return None;
    }
    let keys = (at + 1..at + 1 + n).map(|i| owned(req.arg(i))).collect();
    let dir = req.arg(at + 1 + n);
    let left = if zset {
        if is(dir, "min") {
            true
        } else if is(dir, "max") {
            false
        } else {
            ctx.out.err(SYNTAX);
            return None;
        }
    } else {
        match side(dir) {
            Some(l) => l,
            None => {
                ctx.out.err(SYNTAX);
                return None;
            }
        }
    };
    let mut count = 1;
    let rest = at + 2 + n;
    if rest < req.len() {
        if rest + 2 != req.len() || !is(req.arg(rest), "count") {
            ctx.out.err(SYNTAX);
            return None;
        }
        match parse_i64(req.arg(rest + 1)) {
            Some(c) if c > 0 => count = c as usize,
            _ => {
                ctx.out.err("ERR count should be greater than 0");
                return None;
            }
        }
    }
    Some(MpopArgs { keys, left, count })
}

/// Pops from the first non-empty list; writes `[key, [elems]]`. Returns whether it did.
pub fn mpop_lists(ctx: &mut Ctx<'_>, a: &MpopArgs) -> Result<bool, Replied> {
    for k in &a.keys {
        if let Some(v) = pop_n(ctx, k, a.left, a.count)? {
            if !v.is_empty() {
                ctx.out.array(2);
                ctx.out.bulk(k);
                ctx.out.array_of_bulks(v.iter().map(|b| &b[..]));
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn lmpop(ctx: &mut Ctx<'_>, req: &Request) {
    let Some(a) = parse_mpop(ctx, req, 1, false) else {
        return;
    };
    match mpop_lists(ctx, &a) {
        Ok(true) | Err(Replied) => {}
        Ok(false) => ctx.out.null_array(),
    }
}
