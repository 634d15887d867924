//! SORT and SORT_RO.

use std::cmp::Ordering;

use bytes::Bytes;
use hashbrown::HashMap;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use super::{is, parse_float, Ctx, Handler, SYNTAX, WRONGTYPE};
use crate::db::Value;

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    m.insert("sort", sort);
    m.insert("sort_ro", sort_ro);
}

/// Parsed SORT options.
struct Opts {
    by: Option<Bytes>,
    gets: Vec<Bytes>,
    offset: i64,
    count: i64,
    desc: bool,
    alpha: bool,
    store: Option<Bytes>,
}

fn parse(ctx: &mut Ctx<'_>, req: &Request, read_only: bool) -> Option<Opts> {
    let mut o = Opts {
        by: None,
        gets: Vec::new(),
        offset: 0,
        count: -1,
        desc: false,
        alpha: false,
        store: None,
    };
    let mut i = 2;
    while i < req.len() {
        let a = req.arg(i);
        let left = req.len() - i - 1;
        if is(a, "asc") {
            o.desc = false;
        } else if is(a, "desc") {
            o.desc = true;
        } else if is(a, "alpha") {
            o.alpha = true;
        } else if is(a, "limit") && left >= 2 {
            let (Some(off), Some(cnt)) = (parse_i64(req.arg(i + 1)), parse_i64(req.arg(i + 2)))
            else {
                ctx.out.err(super::NOT_INT);
                return None;
            };
            o.offset = off;
            o.count = cnt;
            i += 2;
        } else if is(a, "store") && left >= 1 && !read_only {
            o.store = Some(req.arg_bytes(i + 1));
            i += 1;
        } else if is(a, "by") && left >= 1 {
            let p = req.arg_bytes(i + 1);
            if p.contains(&b'*') && !ctx.db.pattern_is_local(&p) {
                ctx.out.err("ERR BY option of SORT denied in Cluster mode when keys formed by the pattern may be in different slots.");
                return None;
            }
            o.by = Some(p);
            i += 1;
        } else if is(a, "get") && left >= 1 {
            let p = req.arg_bytes(i + 1);
            if &p[..] != b"#" && !ctx.db.pattern_is_local(&p) {
                ctx.out.err("ERR GET option of SORT denied in Cluster mode when keys formed by the pattern may be in different slots.");
                return None;
            }
            o.gets.push(p);
            i += 1;
        } else {
            ctx.out.err(SYNTAX);
            return None;
        }
        i += 1;
    }
    Some(o)
}

/// The value a BY/GET pattern names for `elem`: `*` is replaced by the element (first
/// occurrence); `key->field` reads a hash field. `#` is the element itself.
fn lookup(ctx: &mut Ctx<'_>, pattern: &[u8], elem: &Bytes) -> Option<Bytes> {
    if pattern == b"#" {
        return Some(elem.clone());
    }
    let star = pattern.iter().position(|&b| b == b'*')?;
    let (key_pat, field) = match pattern.windows(2).rposition(|w| w == b"->") {
        Some(p) if p > star && p + 2 < pattern.len() => (&pattern[..p], Some(&pattern[p + 2..])),
        _ => (pattern, None),
    };
    let mut key = Vec::with_capacity(key_pat.len() + elem.len());
    key.extend_from_slice(&key_pat[..star]);
    key.extend_from_slice(elem);
    key.extend_from_slice(&key_pat[star + 1..]);
    match (ctx.db.get(&key, ctx.now).map(|e| &e.value), field) {
        (Some(Value::Str(s)), None) => Some(s.clone()),
        (Some(Value::Hash(h)), Some(f)) => h.get(f).cloned(),
        _ => None,
    }
}

fn run(ctx: &mut Ctx<'_>, req: &Request, read_only: bool) {
    let Some(mut o) = parse(ctx, req, read_only) else {
        return;
    };
    let key = req.arg(1);
    let (mut elems, ordered): (Vec<Bytes>, bool) = match ctx.lookup(key).map(|e| &e.value) {
        None => (Vec::new(), false),
        Some(Value::List(l)) => (l.iter().cloned().collect(), true),
        Some(Value::Set(s)) => (s.iter().cloned().collect(), false),
        Some(Value::ZSet(z)) => (z.iter().map(|(_, m)| m.clone()).collect(), true),
        Some(_) => return ctx.out.err(WRONGTYPE),
    };
    let mut dont_sort = o.by.as_ref().is_some_and(|p| !p.contains(&b'*'));
    // A set's own order is not one a replica or a log replay would see again: what is stored
    // or handed to a script is sorted (by the elements, ALPHA), as Redis does.
    if dont_sort && !ordered && (o.store.is_some() || super::script::running()) {
        dont_sort = false;
        o.alpha = true;
        o.by = None;
    }
    if !dont_sort {
        // Weights: the element itself or the BY value; numeric unless ALPHA.
        let mut keyed: Vec<(Option<Bytes>, Option<f64>, Bytes)> = Vec::with_capacity(elems.len());
        for e in &elems {
            let w = match &o.by {
                Some(p) => lookup(ctx, p, e),
                None => Some(e.clone()),
            };
            let score = if o.alpha {
                None
            } else {
                match &w {
                    None => Some(0.0),
                    // As Redis's strtod: leading spaces are skipped, an empty string is 0.
                    Some(v) => match parse_float(v.trim_ascii_start())
                        .or_else(|| v.is_empty().then_some(0.0))
                    {
                        Some(f) => Some(f),
                        None => {
                            return ctx
                                .out
                                .err("ERR One or more scores can't be converted into double")
                        }
                    },
                }
            };
            keyed.push((w, score, e.clone()));
        }
        keyed.sort_by(|a, b| {
            let c = if o.alpha {
                match (&a.0, &b.0) {
                    (None, None) => Ordering::Equal,
                    (None, _) => Ordering::Less,
                    (_, None) => Ordering::Greater,
                    (Some(x), Some(y)) => x.cmp(y),
                }
            } else {
                a.1.unwrap_or(0.0)
                    .partial_cmp(&b.1.unwrap_or(0.0))
                    .unwrap_or(Ordering::Equal)
            };
            // Equal weights: order by the element, so the result is deterministic.
            let c = if c == Ordering::Equal {
                a.2.cmp(&b.2)
            } else {
                c
            };
            if o.desc {
                c.reverse()
            } else {
                c
            }
        });
        elems = keyed.into_iter().map(|k| k.2).collect();
    } else if o.desc && ordered {
        elems.reverse();
    }
    // LIMIT
    let n = elems.len() as i64;
    let start = o.offset.clamp(0, n);
    let end = if o.count < 0 {
        n
    } else {
        (start + o.count).min(n)
    };
    let elems: Vec<Bytes> = elems[start as usize..end.max(start) as usize].to_vec();
    // GET
    let mut out_items: Vec<Option<Bytes>> = Vec::new();
    if o.gets.is_empty() {
        out_items.extend(elems.iter().cloned().map(Some));
    } else {
        for e in &elems {
            for g in &o.gets {
                let v = lookup(ctx, g, e);
                out_items.push(v);
            }
        }
    }
    match &o.store {
        Some(dst) => {
            let list: std::collections::VecDeque<Bytes> = out_items
                .into_iter()
                .map(|v| v.unwrap_or_default())
                .collect();
            let len = list.len();
            if len == 0 {
                ctx.db.remove(dst, ctx.now);
            } else {
                ctx.db.set(dst, Value::List(list), ctx.now);
            }
            ctx.out.int(len as i64);
        }
        None => {
            ctx.out.array(out_items.len());
            for v in out_items {
                match v {
                    Some(v) => ctx.out.bulk(&v),
                    None => ctx.out.null(),
                }
            }
        }
    }
}

fn sort(ctx: &mut Ctx<'_>, req: &Request) {
    run(ctx, req, false)
}

fn sort_ro(ctx: &mut Ctx<'_>, req: &Request) {
    run(ctx, req, true)
}
