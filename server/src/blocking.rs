//! Blocking list and sorted-set pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BLMPOP, BZPOPMIN,
//! BZPOPMAX, BZMPOP).
//!
//! A blocked client registers a [`Waiter`] on every key it waits for, on the shard that owns
//! the key, all sharing one `claimed` flag. After any command pushes to a key, that shard
//! serves the key's waiters in arrival order *in place*: it claims the waiter (compare and
//! swap on the flag; a waiter already claimed by another shard, or timed out, is dropped),
//! performs the pop right there and sends the finished reply. So an element is never handed
//! to a client that has gone, and no later command can take it first.

use crate::cmd::Replied;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::cmd::Ctx;
use crate::db::now_ms;
use crate::out::Out;
use crate::shard::ShardState;

/// What to do for a waiter when its key has data.
#[derive(Debug, Clone)]
pub enum BlockOp {
    /// BLPOP / BRPOP: reply `[key, element]`.
    Pop { left: bool },
    /// BLMOVE / BRPOPLPUSH: pop here, push to `dst` (on its own shard), reply the element.
    Move {
        from_left: bool,
        to_left: bool,
        dst: Bytes,
    },
    /// BLMPOP: reply `[key, [elements]]`.
    MPop { left: bool, count: usize },
    /// BZPOPMIN / BZPOPMAX: reply `[key, member, score]`.
    ZPop { max: bool },
    /// BZMPOP: reply `[key, [[member, score], ...]]`.
    ZMPop { max: bool, count: usize },
    /// XREAD / XREADGROUP: entries after `after` (for a group, its own last ID), at most
    /// `count`; the group, consumer and NOACK.
    XRead {
        after: crate::db::stream::StreamId,
        count: usize,
        group: Option<(Bytes, Bytes, bool)>,
    },
}

/// A blocked client waiting on one key.
#[derive(Debug)]
pub struct Waiter {
    pub claimed: Arc<AtomicBool>,
    pub op: BlockOp,
    pub resp3: bool,
    pub reply: futures::channel::oneshot::Sender<Bytes>,
}

/// Tries to serve `op` on `key` now, writing the reply into `out`. Returns false (and
/// writes nothing) when the key has nothing to give; `Err` means a wrong type (error
/// written).
pub fn try_serve(
    st: &mut ShardState,
    db: usize,
    key: &[u8],
    op: &BlockOp,
    out: &mut Out,
) -> Result<bool, Replied> {
    let now = now_ms();
    let nr = st.nr_shards;
    let me = st.id;
    let mut ctx = Ctx::new(&mut st.dbs[db], out, now);
    let served = match op {
        BlockOp::Pop { left } => match crate::cmd::lists::pop_n(&mut ctx, key, *left, 1)? {
            Some(v) if !v.is_empty() => {
                ctx.out.array(2);
                ctx.out.bulk(key);
                ctx.out.bulk(&v[0]);
                true
            }
            _ => false,
        },
        BlockOp::Move {
            from_left,
            to_left,
            dst,
        } => {
            let dst_here = rcodis_core::slot::slot_of(dst) as usize % nr == me;
            if dst_here {
                match crate::cmd::lists::move_one(&mut ctx, key, dst, *from_left, *to_left)? {
                    Some(v) => {
                        ctx.out.bulk(&v);
                        true
                    }
                    None => false,
                }
            } else {
                match crate::cmd::lists::pop_n(&mut ctx, key, *from_left, 1)? {
                    Some(v) if !v.is_empty() => {
                        let elem = v[0].clone();
                        ctx.out.bulk(&elem);
                        let (dst, to_left) = (dst.clone(), *to_left);
                        let owner = rcodis_core::slot::slot_of(&dst) as usize % nr;
                        st.deferred.push((
                            owner,
                            Box::new(move |st: &mut ShardState| {
                                push_elem(st, db, &dst, elem, to_left)
                            }),
                        ));
                        true
                    }
                    _ => false,
                }
            }
        }
        BlockOp::MPop { left, count } => {
            let args = crate::cmd::lists::MpopArgs {
                keys: vec![Bytes::copy_from_slice(key)],
                left: *left,
                count: *count,
            };
            crate::cmd::lists::mpop_lists(&mut ctx, &args)?
        }
        BlockOp::ZPop { max } => match crate::cmd::zsets::zpop_n(&mut ctx, key, *max, 1)? {
            Some(v) if !v.is_empty() => {
                ctx.out.array(3);
                ctx.out.bulk(key);
                ctx.out.bulk(&v[0].0);
                ctx.out.double(v[0].1);
                true
            }
            _ => false,
        },
        BlockOp::ZMPop { max, count } => {
            let args = crate::cmd::lists::MpopArgs {
                keys: vec![Bytes::copy_from_slice(key)],
                left: !*max,
                count: *count,
            };
            crate::cmd::zsets::mpop_zsets(&mut ctx, &args)?
        }
        BlockOp::XRead {
            after,
            count,
            group,
        } => crate::cmd::streams::serve_blocked(&mut ctx, key, *after, *count, group.as_ref())?,
    };
    Ok(served)
}

/// For a waiter being woken: a key that now holds another type serves nobody (Redis serves
/// list waiters from lists only, and so on) and the waiter stays blocked (`Ok(false)`),
/// except a group reader, whose stream is gone (`Err`, error written). `None`: the key is
/// missing or of the type the waiter wants. (A command's own first attempt gives WRONGTYPE
/// instead, through [`try_serve`].)
fn other_type(
    st: &mut ShardState,
    db: usize,
    key: &[u8],
    op: &BlockOp,
    out: &mut Out,
) -> Option<Result<bool, Replied>> {
    let e = st.dbs[db].get_quiet(key, now_ms())?;
    let wanted = match op {
        BlockOp::Pop { .. } | BlockOp::Move { .. } | BlockOp::MPop { .. } => "list",
        BlockOp::ZPop { .. } | BlockOp::ZMPop { .. } => "zset",
        BlockOp::XRead { .. } => "stream",
    };
    if e.value.type_name() == wanted {
        return None;
    }
    if let BlockOp::XRead { group: Some(_), .. } = op {
        out.err("UNBLOCKED the stream key no longer exists");
        return Some(Err(Replied));
    }
    Some(Ok(false))
}

/// [`try_serve`], then logs what the pop changed (for the append-only log).
pub fn serve_and_log(
    st: &mut ShardState,
    db: usize,
    key: &[u8],
    op: &BlockOp,
    out: &mut Out,
) -> Result<bool, Replied> {
    if crate::notify::on() {
        st.dbs[db].forget_touched();
    }
    let r = try_serve(st, db, key, op, out);
    if crate::notify::on() {
        if let Ok(true) = r {
            let (class, pop, push) = match op {
                BlockOp::Pop { left } | BlockOp::MPop { left, .. } => {
                    (crate::notify::LIST, if *left { "lpop" } else { "rpop" }, "")
                }
                BlockOp::Move {
                    from_left, to_left, ..
                } => (
                    crate::notify::LIST,
                    if *from_left { "lpop" } else { "rpop" },
                    if *to_left { "lpush" } else { "rpush" },
                ),
                BlockOp::ZPop { max } | BlockOp::ZMPop { max, .. } => (
                    crate::notify::ZSET,
                    if *max { "zpopmax" } else { "zpopmin" },
                    "",
                ),
                BlockOp::XRead { .. } => (crate::notify::STREAM, "", ""),
            };
            if !pop.is_empty() {
                crate::notify::collect_served(&mut st.dbs[db], key, class, pop, push, now_ms());
            }
        }
        st.dbs[db].forget_touched();
        crate::notify::flush(st, db);
    }
    // A plain XREAD changes nothing.
    let read_only = matches!(op, BlockOp::XRead { group: None, .. });
    if let (Ok(true), Some(a), false) = (&r, st.aof.as_mut(), read_only) {
        let now = now_ms();
        a.log_key_state(db, &mut st.dbs[db], key, now);
        if let BlockOp::Move { dst, .. } = op {
            if rcodis_core::slot::slot_of(dst) as usize % st.nr_shards == st.id {
                a.log_key_state(db, &mut st.dbs[db], dst, now);
            }
        }
        a.end_batch();
    }
    r
}

/// Pushes an element moved by a blocking move onto its destination (on the owner shard).
fn push_elem(st: &mut ShardState, db: usize, dst: &[u8], elem: Bytes, left: bool) {
    let now = now_ms();
    let mut out = Out::new(false);
    let mut ctx = Ctx::new(&mut st.dbs[db], &mut out, now);
    if let Ok(l) = crate::cmd::list_or_new(&mut ctx, dst) {
        if left {
            l.push_front(elem)
        } else {
            l.push_back(elem)
        }
        ctx.db.touch_watched(dst);
    }
    if let Some(a) = st.aof.as_mut() {
        a.log_key_state(db, &mut st.dbs[db], dst, now);
        a.end_batch();
    }
    if crate::notify::on() {
        st.dbs[db].forget_touched();
        let ev = if left { "lpush" } else { "rpush" };
        st.dbs[db].note(crate::notify::LIST, ev, Bytes::copy_from_slice(dst));
        crate::notify::flush(st, db);
    }
    let key = Bytes::copy_from_slice(dst);
    serve_waiters(st, db, &[key]);
}

/// Serves the waiters of keys that just received data, in arrival order.
pub fn serve_waiters(st: &mut ShardState, db: usize, keys: &[Bytes]) {
    if st.blocked.is_empty() {
        return;
    }
    let mut work: std::collections::VecDeque<Bytes> = keys.iter().cloned().collect();
    while let Some(key) = work.pop_front() {
        let key = &key;
        let slot = (db, key.clone());
        let Some(mut queue) = st.blocked.remove(&slot) else {
            continue;
        };
        // Every waiter is tried in arrival order: one that cannot be served (nothing for it,
        // the key holds another type, a stream ID still ahead) keeps its place and does not
        // hold back those behind it.
        let mut kept = std::collections::VecDeque::new();
        while let Some(w) = queue.pop_front() {
            if w.claimed.load(Ordering::Acquire) {
                continue; // timed out, disconnected, or served through another key
            }
            let mut out = Out::new(w.resp3);
            let served = match other_type(st, db, key, &w.op, &mut out) {
                Some(r) => r,
                None => serve_and_log(st, db, key, &w.op, &mut out),
            };
            match served {
                Ok(false) => kept.push_back(w),
                Ok(true) | Err(Replied) => {
                    // A real pop already happened (or an error was written); claim so the
                    // client takes exactly this reply. Losing the claim race cannot happen
                    // here: only this shard pops for this waiter on this key, and a client
                    // that timed out set the flag before we looked.
                    if w.claimed.swap(true, Ordering::AcqRel) {
                        // The client gave up between our check and now: undo is not
                        // possible for a pop, so hand the data back by re-queueing it.
                        requeue(st, db, key, &w.op, out);
                        continue;
                    }
                    let _ = w.reply.send(out.buf.freeze());
                    // What a move pushed here may serve the destination's own waiters (a
                    // cross-shard move serves them where it pushes, `push_elem`).
                    if let BlockOp::Move { dst, .. } = &w.op {
                        if rcodis_core::slot::slot_of(dst) as usize % st.nr_shards == st.id
                            && st.blocked.contains_key(&(db, dst.clone()))
                        {
                            work.push_back(dst.clone());
                        }
                    }
                }
            }
        }
        if let Some(newer) = st.blocked.remove(&slot) {
            kept.extend(newer);
        }
        if !kept.is_empty() {
            st.blocked.insert(slot, kept);
        }
    }
}

/// Puts back what a pop took when its client vanished at the last moment (the element goes
/// back where it came from, so nothing is lost).
fn requeue(st: &mut ShardState, db: usize, key: &[u8], op: &BlockOp, reply: Out) {
    let frame = {
        let mut b = bytes::BytesMut::from(&reply.buf[..]);
        rcodis_core::resp::FrameDecoder::default()
            .decode(&mut b)
            .ok()
            .flatten()
    };
    let Some(frame) = frame else { return };
    let now = now_ms();
    let mut out = Out::new(false);
    let mut ctx = Ctx::new(&mut st.dbs[db], &mut out, now);
    use rcodis_core::resp::Frame;
    match (op, frame) {
        (BlockOp::Pop { left } | BlockOp::MPop { left, .. }, Frame::Array(items)) => {
            let elems: Vec<Bytes> = match items.get(1) {
                Some(Frame::Array(v)) => v.iter().filter_map(|f| f.as_bytes().cloned()).collect(),
                Some(f) => f.as_bytes().cloned().into_iter().collect(),
                None => Vec::new(),
            };
            if let Ok(l) = crate::cmd::list_or_new(&mut ctx, key) {
                for e in elems.into_iter().rev() {
                    if *left {
                        l.push_front(e)
                    } else {
                        l.push_back(e)
                    }
                }
            }
        }
        (BlockOp::ZPop { .. }, Frame::Array(items)) if items.len() == 3 => {
            if let (Some(m), Some(s)) = (items[1].as_bytes(), score_of(&items[2])) {
                if let Ok(z) = crate::cmd::zset_or_new(&mut ctx, key) {
                    z.insert(m.clone(), s);
                }
            }
        }
        (BlockOp::ZMPop { .. }, Frame::Array(items)) => {
            if let Some(Frame::Array(pairs)) = items.get(1) {
                if let Ok(z) = crate::cmd::zset_or_new(&mut ctx, key) {
                    for p in pairs {
                        if let Some([m, s]) =
                            p.as_array().map(|a| [a[0].clone(), a[1].clone()]).as_ref()
                        {
                            if let (Some(m), Some(s)) = (m.as_bytes(), score_of(s)) {
                                z.insert(m.clone(), s);
                            }
                        }
                    }
                }
            }
        }
        // A move already pushed to its destination: the element is not lost.
        _ => {}
    }
}

fn score_of(f: &rcodis_core::resp::Frame) -> Option<f64> {
    match f {
        rcodis_core::resp::Frame::Double(d) => Some(*d),
        other => other.as_bytes().and_then(|b| crate::cmd::parse_float(b)),
    }
}

/// Parses a blocking timeout in seconds (float) into milliseconds; 0 means forever.
pub fn parse_timeout(b: &[u8]) -> Result<u64, &'static str> {
    let Some(v) = crate::cmd::parse_float(b) else {
        return Err("ERR timeout is not a float or out of range");
    };
    if v < 0.0 {
        return Err("ERR timeout is negative");
    }
    if !v.is_finite() || v * 1000.0 > i64::MAX as f64 / 2.0 {
        return Err("ERR timeout is out of range");
    }
    Ok((v * 1000.0).round() as u64)
}
