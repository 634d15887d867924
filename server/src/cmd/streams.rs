//! Stream commands: XADD, XLEN, XRANGE, XREVRANGE, XDEL, XTRIM, XSETID, XREAD, XREADGROUP,
//! XGROUP, XACK, XPENDING, XCLAIM, XAUTOCLAIM, XINFO — as Redis 7.0 answers them.
//!
//! Writes whose outcome depends on the moment (an ID generated from the clock, an
//! approximate trim, a claim by idle time) are logged as what they did, as Redis propagates
//! them: XADD with the ID it chose and the exact trim it made, XCLAIM/XAUTOCLAIM as one
//! forced XCLAIM per entry (see [`take_log_rewrite`]).

use std::cell::RefCell;

use bytes::Bytes;
use hashbrown::HashMap;
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use super::{is, Ctx, Handler, Replied, NOT_INT, SYNTAX, WRONGTYPE};
use crate::db::stream::{AppendError, Consumer, Group, Nack, Stream, StreamId, INVALID_READ};
use crate::db::Value;
use crate::out::Out;

pub fn register(m: &mut HashMap<&'static str, Handler>) {
    // Each handler starts by forgetting a log rewrite nobody took, so that only its own
    // can be taken after it (see `take_log_rewrite`).
    macro_rules! fresh {
        ($f:expr) => {
            |c: &mut Ctx<'_>, r: &Request| {
                clear_log_rewrite();
                $f(c, r)
            }
        };
    }
    m.insert("xadd", fresh!(xadd));
    m.insert("xlen", fresh!(xlen));
    m.insert("xrange", fresh!(|c, r| xrange(c, r, false)));
    m.insert("xrevrange", fresh!(|c, r| xrange(c, r, true)));
    m.insert("xdel", fresh!(xdel));
    m.insert("xtrim", fresh!(xtrim));
    m.insert("xsetid", fresh!(xsetid));
    m.insert("xread", fresh!(xread));
    m.insert("xreadgroup", fresh!(xread));
    m.insert("xgroup|create", fresh!(xgroup));
    m.insert("xgroup|setid", fresh!(xgroup));
    m.insert("xgroup|destroy", fresh!(xgroup));
    m.insert("xgroup|createconsumer", fresh!(xgroup));
    m.insert("xgroup|delconsumer", fresh!(xgroup));
    m.insert("xack", fresh!(xack));
    m.insert("xpending", fresh!(xpending));
    m.insert("xclaim", fresh!(xclaim));
    m.insert("xautoclaim", fresh!(xautoclaim));
    m.insert("xinfo|stream", fresh!(xinfo_stream));
    m.insert("xinfo|groups", fresh!(xinfo_groups));
    m.insert("xinfo|consumers", fresh!(xinfo_consumers));
}

const INVALID_ID: &str = "ERR Invalid stream ID specified as stream command argument";

thread_local! {
    /// What the command that just ran should be logged as, when not as itself.
    static LOG_AS: RefCell<Option<Vec<Request>>> = const { RefCell::new(None) };
}

/// The records the last stream command asked to be logged as instead of itself (taken:
/// the next call returns None until another command sets them).
pub fn take_log_rewrite() -> Option<Vec<Request>> {
    LOG_AS.with(|l| l.borrow_mut().take())
}

/// Forgets a rewrite nobody took (before a stream command runs).
#[cold]
#[inline(never)]
pub fn clear_log_rewrite() {
    LOG_AS.with(|l| l.borrow_mut().take());
}

fn log_as(reqs: Vec<Request>) {
    LOG_AS.with(|l| *l.borrow_mut() = Some(reqs));
}

fn now_ms() -> u64 {
    crate::db::now_ms()
}

// --- parsing ----------------------------------------------------------------------------

/// Redis's string2ull: digits (strtoull also takes leading blanks and a sign).
fn parse_u64(s: &[u8]) -> Option<u64> {
    if let Some(v) = parse_i64(s) {
        return (v >= 0).then_some(v as u64);
    }
    let t = std::str::from_utf8(s).ok()?;
    let t = t.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first()? {
        b'+' => (false, &t[1..]),
        b'-' => (true, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: u64 = digits.parse().ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
}

/// Parses an ID (`ms-seq`, `ms` with `missing_seq`, `-`/`+` unless strict, `ms-*` when
/// `seq_star`). Returns (id, whether the sequence was given).
fn parse_id(s: &[u8], missing_seq: u64, strict: bool, seq_star: bool) -> Option<(StreamId, bool)> {
    if s.len() > 127 {
        return None;
    }
    if s == b"-" || s == b"+" {
        if strict {
            return None;
        }
        return Some((
            if s == b"-" {
                StreamId::default()
            } else {
                StreamId::MAX
            },
            true,
        ));
    }
    // C strings end at a NUL.
    let s = s.split(|&b| b == 0).next().unwrap_or(b"");
    match s.iter().position(|&b| b == b'-') {
        Some(dash) => {
            let ms = parse_u64(&s[..dash])?;
            let rest = &s[dash + 1..];
            if seq_star && rest == b"*" {
                return Some((StreamId::new(ms, 0), false));
            }
            Some((StreamId::new(ms, parse_u64(rest)?), true))
        }
        None => Some((StreamId::new(parse_u64(s)?, missing_seq), true)),
    }
}

fn id_arg(
    ctx: &mut Ctx<'_>,
    s: &[u8],
    missing_seq: u64,
    strict: bool,
) -> Result<StreamId, Replied> {
    match parse_id(s, missing_seq, strict, false) {
        Some((id, _)) => Ok(id),
        None => {
            ctx.out.err(INVALID_ID);
            Err(Replied)
        }
    }
}

/// The IDs from argument `from` on (all checked before anything is done, as in Redis).
fn id_list(ctx: &mut Ctx<'_>, req: &Request, from: usize) -> Result<Vec<StreamId>, Replied> {
    (from..req.len())
        .map(|i| id_arg(ctx, req.arg(i), 0, true))
        .collect()
}

/// A range bound: `(id` excludes (start moves up, end down).
fn interval(ctx: &mut Ctx<'_>, s: &[u8], start: bool) -> Result<StreamId, Replied> {
    let missing = if start { 0 } else { u64::MAX };
    if s.len() > 1 && s[0] == b'(' {
        let id = id_arg(ctx, &s[1..], missing, true)?;
        let moved = if start { id.incr() } else { id.decr() };
        return match moved {
            Some(id) => Ok(id),
            None => {
                ctx.out.err(if start {
                    "ERR invalid start ID for the interval"
                } else {
                    "ERR invalid end ID for the interval"
                });
                Err(Replied)
            }
        };
    }
    id_arg(ctx, s, missing, false)
}

fn int_arg(ctx: &mut Ctx<'_>, b: &[u8], msg: &str) -> Result<i64, Replied> {
    match parse_i64(b) {
        Some(v) => Ok(v),
        None => {
            ctx.out.err(msg);
            Err(Replied)
        }
    }
}

// --- access -------------------------------------------------------------------------------

/// The stream at a key: `Ok(None)` absent, `Err` replied (WRONGTYPE).
fn get<'c>(ctx: &'c mut Ctx<'_>, key: &[u8]) -> Result<Option<&'c mut Stream>, Replied> {
    let is_stream = match ctx.lookup(key).map(|e| &e.value) {
        None => return Ok(None),
        Some(v) => matches!(v, Value::Stream(_)),
    };
    if !is_stream {
        ctx.out.err(WRONGTYPE);
        return Err(Replied);
    }
    match ctx.db.get(key, ctx.now).map(|e| &mut e.value) {
        Some(Value::Stream(s)) => Ok(Some(s)),
        _ => unreachable!(),
    }
}

/// Runs `f` on the stream at `key` with the reply buffer alongside: `Ok(None)` absent.
fn with_stream<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(&mut Out, &mut Stream) -> R,
) -> Result<Option<R>, Replied> {
    if get(ctx, key)?.is_none() {
        return Ok(None);
    }
    let Ctx { db, out, now, .. } = ctx;
    match db.get(key, *now).map(|e| &mut e.value) {
        Some(Value::Stream(s)) => Ok(Some(f(out, s))),
        _ => unreachable!(),
    }
}

fn modified(ctx: &mut Ctx<'_>, key: &[u8]) {
    note_created(ctx, key);
    ctx.db.touch_watched(key);
}

// --- replies ------------------------------------------------------------------------------

fn reply_id(out: &mut Out, id: StreamId) {
    out.bulk(format!("{}-{}", id.ms, id.seq).as_bytes());
}

fn reply_entry(out: &mut Out, id: StreamId, fv: &[Bytes]) {
    out.array(2);
    reply_id(out, id);
    out.array_of_bulks(fv.iter().map(|b| &b[..]));
}

/// Entries of `start..=end`, forwards or backwards, at most `count` (0: all).
fn reply_range(
    out: &mut Out,
    s: &Stream,
    start: StreamId,
    end: StreamId,
    count: usize,
    rev: bool,
) -> usize {
    if start > end {
        out.array(0);
        return 0;
    }
    let items: Vec<(&StreamId, &Vec<Bytes>)> = if rev {
        s.entries
            .range(start..=end)
            .rev()
            .take(if count == 0 { usize::MAX } else { count })
            .collect()
    } else {
        s.entries
            .range(start..=end)
            .take(if count == 0 { usize::MAX } else { count })
            .collect()
    };
    out.array(items.len());
    for (id, fv) in &items {
        reply_entry(out, **id, fv);
    }
    items.len()
}

// --- XADD / XTRIM ---------------------------------------------------------------------------

#[derive(Default)]
struct TrimArgs {
    maxlen: Option<u64>,
    minid: Option<StreamId>,
    approx: bool,
    limit: u64,
    /// Index of the threshold argument.
    arg_idx: usize,
    nomkstream: bool,
    id: Option<(StreamId, bool)>,
}

/// XADD's and XTRIM's options (streamParseAddOrTrimArgsOrReply); for XADD, returns the
/// index of the ID argument.
fn parse_add_trim(
    ctx: &mut Ctx<'_>,
    req: &Request,
    xadd: bool,
) -> Result<(TrimArgs, usize), Replied> {
    let mut a = TrimArgs::default();
    let mut limit_given = false;
    let mut limit: i64 = 0;
    let n = req.len();
    let mut i = 2;
    let err = |ctx: &mut Ctx<'_>, m: &str| {
        ctx.out.err(m);
        Err(Replied)
    };
    while i < n {
        let more = n - 1 - i;
        let opt = req.arg(i);
        if xadd && opt == b"*" {
            break;
        } else if (is(opt, "maxlen") || is(opt, "minid")) && more > 0 {
            if a.maxlen.is_some() || a.minid.is_some() {
                return err(ctx, "ERR syntax error, MAXLEN and MINID options at the same time are not compatible");
            }
            a.approx = false;
            let next = req.arg(i + 1);
            if more >= 2 && next == b"~" {
                a.approx = true;
                i += 1;
            } else if more >= 2 && next == b"=" {
                i += 1;
            }
            if is(opt, "maxlen") {
                let v = int_arg(ctx, req.arg(i + 1), NOT_INT)?;
                if v < 0 {
                    return err(ctx, "ERR The MAXLEN argument must be >= 0.");
                }
                a.maxlen = Some(v as u64);
            } else {
                a.minid = Some(id_arg(ctx, req.arg(i + 1), 0, true)?);
            }
            i += 1;
            a.arg_idx = i;
        } else if is(opt, "limit") && more > 0 {
            limit = int_arg(ctx, req.arg(i + 1), NOT_INT)?;
            if limit < 0 {
                return err(ctx, "ERR The LIMIT argument must be >= 0.");
            }
            limit_given = true;
            i += 1;
        } else if xadd && is(opt, "nomkstream") {
            a.nomkstream = true;
        } else if xadd {
            match parse_id(opt, 0, true, true) {
                Some(id) => a.id = Some(id),
                None => return err(ctx, INVALID_ID),
            }
            break;
        } else {
            return err(ctx, SYNTAX);
        }
        i += 1;
    }
    let trims = a.maxlen.is_some() || a.minid.is_some();
    if limit != 0 && !trims {
        return err(
            ctx,
            "ERR syntax error, LIMIT cannot be used without specifying a trimming strategy",
        );
    }
    if !xadd && !trims {
        return err(
            ctx,
            "ERR syntax error, XTRIM must be called with a trimming strategy",
        );
    }
    if limit_given {
        if !a.approx {
            return err(
                ctx,
                "ERR syntax error, LIMIT cannot be used without the special ~ option",
            );
        }
        a.limit = limit as u64;
    } else if a.approx {
        let per =
            crate::db::stream::NODE_MAX_ENTRIES.load(std::sync::atomic::Ordering::Relaxed) as u64;
        a.limit = match 100 * per {
            0 => 10_000,
            l if l > 10_000 => 10_000,
            l => l,
        };
    }
    Ok((a, i))
}

/// The exact form of an approximate trim, for the log: `MAXLEN = <length now>` or
/// `MINID = <first ID now>`.
fn exact_trim(a: &TrimArgs, s: &Stream) -> [Bytes; 3] {
    match a.maxlen {
        Some(_) => [
            Bytes::from_static(b"MAXLEN"),
            Bytes::from_static(b"="),
            Bytes::from(s.len().to_string()),
        ],
        None => [
            Bytes::from_static(b"MINID"),
            Bytes::from_static(b"="),
            s.first_id.to_bytes(),
        ],
    }
}

fn xadd(ctx: &mut Ctx<'_>, req: &Request) {
    let Ok((a, idpos)) = parse_add_trim(ctx, req, true) else {
        return;
    };
    let fields = idpos + 1;
    // Options to the end and no ID: as Redis, a wrong number of arguments.
    let nf = req.len().saturating_sub(fields);
    if nf < 2 || nf % 2 == 1 {
        return ctx
            .out
            .err("ERR wrong number of arguments for 'xadd' command");
    }
    if let Some((id, true)) = a.id {
        if id.is_zero() {
            return ctx
                .out
                .err("ERR The ID specified in XADD must be greater than 0-0");
        }
    }
    let key = req.arg(1);
    let exists = match get(ctx, key) {
        Err(Replied) => return,
        Ok(s) => s.is_some(),
    };
    if !exists {
        if a.nomkstream {
            return ctx.out.null();
        }
        ctx.db.set(key, Value::Stream(Box::default()), ctx.now);
    }
    let now = ctx.now;
    let Ok(Some(s)) = get(ctx, key) else { return };
    if s.last_id == StreamId::MAX {
        return ctx
            .out
            .err("ERR The stream has exhausted the last possible ID, unable to add more items");
    }
    let id = match a.id {
        Some((id, true)) => Some(id),
        Some((id, false)) => {
            if s.last_id.ms == id.ms {
                if s.last_id.seq == u64::MAX {
                    None
                } else {
                    Some(StreamId::new(id.ms, s.last_id.seq + 1))
                }
            } else {
                Some(id)
            }
        }
        None => {
            if now > s.last_id.ms {
                Some(StreamId::new(now, 0))
            } else {
                s.last_id.incr()
            }
        }
    };
    let fv: Vec<Bytes> = (fields..req.len()).map(|i| req.arg_bytes(i)).collect();
    let res = match id {
        Some(id) => s.append(id, fv).map(|_| id),
        None => Err(AppendError::Order),
    };
    let id = match res {
        Ok(id) => id,
        Err(e) => {
            let msg = match e {
                AppendError::Order => "ERR The ID specified in XADD is equal or smaller than the target stream top item",
                AppendError::TooLarge => "ERR Elements are too large to be stored",
            };
            // A stream XADD just created stays (empty), as in Redis.
            return ctx.out.err(msg);
        }
    };
    if a.maxlen.is_some() || a.minid.is_some() {
        s.trim(a.maxlen, a.minid, a.approx, a.limit);
    }
    // Logged with the ID it got and, for `~`, the exact trim it made.
    let mut args: Vec<Bytes> = (0..req.len()).map(|i| req.arg_bytes(i)).collect();
    args[idpos] = id.to_bytes();
    if a.approx {
        let exact = exact_trim(&a, s);
        // Replace "<STRATEGY> ~ <threshold>" (and LIMIT n) by the exact form.
        args = rewrite_trim(&args, a.arg_idx, &exact);
    }
    log_as(vec![Request::from_args(args.iter())]);
    reply_id(ctx.out, id);
    modified(ctx, key);
}

/// `args` with the trim option ending at `arg_idx` replaced by `exact` and any LIMIT
/// dropped.
fn rewrite_trim(args: &[Bytes], arg_idx: usize, exact: &[Bytes; 3]) -> Vec<Bytes> {
    let start = arg_idx - 2; // STRATEGY ~ threshold
    let mut out: Vec<Bytes> = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        if i == start {
            out.extend(exact.iter().cloned());
            i = arg_idx + 1;
            continue;
        }
        if args[i].eq_ignore_ascii_case(b"limit")
            && i + 1 < args.len()
            && i >= 2
            && i < start.max(arg_idx + 1) + 3
        {
            i += 2;
            continue;
        }
        out.push(args[i].clone());
        i += 1;
    }
    out
}

fn xtrim(ctx: &mut Ctx<'_>, req: &Request) {
    let Ok((a, _)) = parse_add_trim(ctx, req, false) else {
        return;
    };
    let key = req.arg(1);
    let s = match get(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(s)) => s,
    };
    let deleted = s.trim(a.maxlen, a.minid, a.approx, a.limit);
    if deleted > 0 && a.approx {
        let args: Vec<Bytes> = (0..req.len()).map(|i| req.arg_bytes(i)).collect();
        let exact = exact_trim(&a, s);
        log_as(vec![Request::from_args(
            rewrite_trim(&args, a.arg_idx, &exact).iter(),
        )]);
    }
    ctx.out.int(deleted as i64);
    if deleted > 0 {
        modified(ctx, key);
    }
}

fn xlen(ctx: &mut Ctx<'_>, req: &Request) {
    if let Ok(s) = get(ctx, req.arg(1)) {
        let n = s.map_or(0, |s| s.len());
        ctx.out.int(n as i64)
    }
}

fn xrange(ctx: &mut Ctx<'_>, req: &Request, rev: bool) {
    let (sa, ea) = if rev {
        (req.arg(3), req.arg(2))
    } else {
        (req.arg(2), req.arg(3))
    };
    let Ok(start) = interval(ctx, sa, true) else {
        return;
    };
    let Ok(end) = interval(ctx, ea, false) else {
        return;
    };
    let mut count: i64 = -1;
    let mut j = 4;
    while j < req.len() {
        if is(req.arg(j), "count") && j + 1 < req.len() {
            let Ok(c) = int_arg(ctx, req.arg(j + 1), NOT_INT) else {
                return;
            };
            count = c.max(0);
            j += 2;
        } else {
            return ctx.out.err(SYNTAX);
        }
    }
    let r = with_stream(ctx, req.arg(1), |out, s| {
        if count == 0 {
            return out.null_array();
        }
        let count = if count < 0 { 0 } else { count as usize };
        reply_range(out, s, start, end, count, rev);
    });
    if let Ok(None) = r {
        ctx.out.array(0)
    }
}

fn xdel(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    match get(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.int(0),
        Ok(Some(_)) => {}
    }
    let Ok(ids) = id_list(ctx, req, 2) else {
        return;
    };
    let Ok(Some(s)) = get(ctx, key) else { return };
    let mut deleted = 0;
    let mut first = false;
    for id in ids {
        if s.delete(id) {
            if id == s.first_id {
                first = true;
            }
            if id > s.max_deleted_id {
                s.max_deleted_id = id;
            }
            deleted += 1;
        }
    }
    if deleted > 0 {
        if s.is_empty() {
            s.first_id = StreamId::default();
        } else if first {
            s.refresh_first();
        }
    }
    ctx.out.int(deleted);
    if deleted > 0 {
        modified(ctx, key);
    }
}

fn xsetid(ctx: &mut Ctx<'_>, req: &Request) {
    let Ok(id) = id_arg(ctx, req.arg(2), 0, true) else {
        return;
    };
    let mut added: i64 = -1;
    let mut max_del = StreamId::default();
    let mut i = 3;
    while i < req.len() {
        let more = req.len() - 1 - i;
        if is(req.arg(i), "entriesadded") && more > 0 {
            let Ok(v) = int_arg(ctx, req.arg(i + 1), NOT_INT) else {
                return;
            };
            if v < 0 {
                return ctx.out.err("ERR entries_added must be positive");
            }
            added = v;
        } else if is(req.arg(i), "maxdeletedid") && more > 0 {
            let Ok(m) = id_arg(ctx, req.arg(i + 1), 0, true) else {
                return;
            };
            if id < m {
                return ctx
                    .out
                    .err("ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id");
            }
            max_del = m;
        } else {
            return ctx.out.err(SYNTAX);
        }
        i += 2;
    }
    let key = req.arg(1);
    let s = match get(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.err("ERR no such key"),
        Ok(Some(s)) => s,
    };
    if !s.is_empty() {
        if id < s.last_valid_id() {
            return ctx
                .out
                .err("ERR The ID specified in XSETID is smaller than the target stream top item");
        }
        if added != -1 && s.len() as u64 > added as u64 {
            return ctx
                .out
                .err("ERR The entries_added specified in XSETID is smaller than the target stream length");
        }
    }
    s.last_id = id;
    if added != -1 {
        s.entries_added = added as u64;
    }
    if !max_del.is_zero() {
        s.max_deleted_id = max_del;
    }
    ctx.out.ok();
    modified(ctx, key);
}

// --- consumer groups ----------------------------------------------------------------------

fn nogroup(key: &[u8], group: &[u8]) -> String {
    format!(
        "NOGROUP No such consumer group '{}' for key name '{}'",
        String::from_utf8_lossy(group),
        String::from_utf8_lossy(key)
    )
}

fn nogroup_or_key(key: &[u8], group: &[u8]) -> String {
    format!(
        "NOGROUP No such key '{}' or consumer group '{}'",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(group)
    )
}

thread_local! {
    /// Set when a read or claim made a consumer (a keyspace event, `xgroup-createconsumer`).
    static CREATED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Notes the `xgroup-createconsumer` event for `key` if a consumer was just made.
fn note_created(ctx: &mut Ctx<'_>, key: &[u8]) {
    if CREATED.take() {
        ctx.db.note(
            crate::notify::STREAM,
            "xgroup-createconsumer",
            Bytes::copy_from_slice(key),
        );
    }
}

/// Looks a consumer up (refreshing its seen time) or creates it.
fn consumer<'g>(g: &'g mut Group, name: &[u8], now: u64) -> &'g mut Consumer {
    let c = g
        .consumers
        .entry(Bytes::copy_from_slice(name))
        .or_insert_with(|| {
            CREATED.set(true);
            Consumer {
                seen_time: now,
                pel: Default::default(),
            }
        });
    c.seen_time = now;
    c
}

fn xgroup(ctx: &mut Ctx<'_>, req: &Request) {
    let sub = req.arg(1);
    let key = req.arg(2);
    let group = req.arg(3);
    let create = is(sub, "create");
    let setid = is(sub, "setid");
    let subcommand_error = |ctx: &mut Ctx<'_>| {
        ctx.out.err(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try {} HELP.",
            String::from_utf8_lossy(sub),
            String::from_utf8_lossy(req.arg(0)).to_ascii_uppercase()
        ))
    };
    let mut mkstream = false;
    let mut entries_read: i64 = INVALID_READ;
    if (create || setid) && req.len() >= 5 {
        let mut i = 5;
        while i < req.len() {
            if create && is(req.arg(i), "mkstream") {
                mkstream = true;
                i += 1;
            } else if is(req.arg(i), "entriesread") && i + 1 < req.len() {
                let Ok(v) = int_arg(ctx, req.arg(i + 1), NOT_INT) else {
                    return;
                };
                if v < 0 && v != INVALID_READ {
                    return ctx
                        .out
                        .err("ERR value for ENTRIESREAD must be positive or -1");
                }
                entries_read = v;
                i += 2;
            } else {
                return subcommand_error(ctx);
            }
        }
    }
    let exists = match get(ctx, key) {
        Err(Replied) => return,
        Ok(s) => s.is_some(),
    };
    if !mkstream {
        if !exists {
            return ctx.out.err(
                "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may want to use the MKSTREAM option to create an empty stream automatically.",
            );
        }
        let has_group = matches!(get(ctx, key), Ok(Some(s)) if s.groups.contains_key(group));
        if !has_group && !create && !is(sub, "destroy") {
            return ctx.out.err(&nogroup(key, group));
        }
    }
    let now = ctx.now;
    if create && (5..=8).contains(&req.len()) {
        let id = if req.arg(4) == b"$" {
            match get(ctx, key) {
                Ok(Some(s)) => s.last_id,
                _ => StreamId::default(),
            }
        } else {
            let Ok(id) = id_arg(ctx, req.arg(4), 0, true) else {
                return;
            };
            id
        };
        if !exists {
            ctx.db.set(key, Value::Stream(Box::default()), now);
        }
        let Ok(Some(s)) = get(ctx, key) else { return };
        if s.groups.contains_key(group) {
            return ctx.out.err("BUSYGROUP Consumer Group name already exists");
        }
        s.groups
            .insert(Bytes::copy_from_slice(group), Group::new(id, entries_read));
        ctx.out.ok();
    } else if setid && (req.len() == 5 || req.len() == 7) {
        let Ok(Some(s)) = get(ctx, key) else { return };
        let last = s.last_id;
        let id = if req.arg(4) == b"$" {
            last
        } else {
            let Ok(id) = id_arg(ctx, req.arg(4), 0, false) else {
                return;
            };
            id
        };
        let Ok(Some(s)) = get(ctx, key) else { return };
        let g = s.groups.get_mut(group).expect("checked");
        g.last_id = id;
        g.entries_read = entries_read;
        ctx.out.ok();
    } else if is(sub, "destroy") && req.len() == 4 {
        let removed = match get(ctx, key) {
            Ok(Some(s)) => s.groups.remove(group).is_some(),
            _ => false,
        };
        ctx.out.int(removed as i64);
        if !removed {
            return;
        }
    } else if is(sub, "createconsumer") && req.len() == 5 {
        let Ok(Some(s)) = get(ctx, key) else { return };
        let g = s.groups.get_mut(group).expect("checked");
        let created = !g.consumers.contains_key(req.arg(4));
        if created {
            consumer(g, req.arg(4), now);
            // XGROUP CREATECONSUMER's own event says so.
            CREATED.set(false);
        }
        ctx.out.int(created as i64);
        if !created {
            return;
        }
    } else if is(sub, "delconsumer") && req.len() == 5 {
        let Ok(Some(s)) = get(ctx, key) else { return };
        let g = s.groups.get_mut(group).expect("checked");
        let pending = match g.consumers.remove(req.arg(4)) {
            Some(c) => {
                for id in &c.pel {
                    g.pel.remove(id);
                }
                c.pel.len()
            }
            // No such consumer: nothing changed (no event, WATCH untouched), as in Redis.
            None => return ctx.out.int(0),
        };
        ctx.out.int(pending as i64);
    } else {
        return subcommand_error(ctx);
    }
    modified(ctx, key);
}

fn xack(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    // No key or group: nothing to acknowledge (before the IDs are read, as in Redis).
    let has = match get(ctx, key) {
        Err(Replied) => return,
        Ok(s) => s.is_some_and(|s| s.groups.contains_key(req.arg(2))),
    };
    if !has {
        return ctx.out.int(0);
    }
    let Ok(ids) = id_list(ctx, req, 3) else {
        return;
    };
    let Ok(Some(s)) = get(ctx, key) else { return };
    let g = s.groups.get_mut(req.arg(2)).expect("checked");
    let mut acked = 0;
    for id in ids {
        if let Some(n) = g.pel.remove(&id) {
            if let Some(c) = g.consumers.get_mut(&n.consumer) {
                c.pel.remove(&id);
            }
            acked += 1;
        }
    }
    ctx.out.int(acked);
    if acked > 0 {
        modified(ctx, key);
    }
}

fn xpending(ctx: &mut Ctx<'_>, req: &Request) {
    let n = req.len();
    let justinfo = n == 3;
    if n != 3 && !(6..=9).contains(&n) {
        return ctx.out.err(SYNTAX);
    }
    let mut minidle = 0i64;
    let (mut start, mut end, mut count) = (StreamId::default(), StreamId::MAX, 0i64);
    let mut consumer_name = None;
    if n >= 6 {
        let mut at = 3;
        if is(req.arg(3), "idle") {
            let Ok(v) = int_arg(ctx, req.arg(4), NOT_INT) else {
                return;
            };
            minidle = v;
            if n < 8 {
                return ctx.out.err(SYNTAX);
            }
            at += 2;
        }
        let Ok(c) = int_arg(ctx, req.arg(at + 2), NOT_INT) else {
            return;
        };
        count = c.max(0);
        let Ok(s) = interval(ctx, req.arg(at), true) else {
            return;
        };
        let Ok(e) = interval(ctx, req.arg(at + 1), false) else {
            return;
        };
        (start, end) = (s, e);
        if at + 3 < n {
            consumer_name = Some(req.arg(at + 3));
        }
    }
    let key = req.arg(1);
    let gname = req.arg(2);
    let now = now_ms();
    let has = match get(ctx, key) {
        Err(Replied) => return,
        Ok(s) => s.is_some_and(|s| s.groups.contains_key(gname)),
    };
    if !has {
        return ctx.out.err(&nogroup_or_key(key, gname));
    }
    let _ = with_stream(ctx, key, |out, s| {
        let g = &s.groups[gname];
        if justinfo {
            out.array(4);
            out.int(g.pel.len() as i64);
            match (g.pel.keys().next(), g.pel.keys().next_back()) {
                (Some(&a), Some(&b)) => {
                    reply_id(out, a);
                    reply_id(out, b);
                    let with: Vec<(&Bytes, &Consumer)> = g
                        .consumers
                        .iter()
                        .filter(|(_, c)| !c.pel.is_empty())
                        .collect();
                    out.array(with.len());
                    for (name, c) in with {
                        out.array(2);
                        out.bulk(name);
                        out.bulk(c.pel.len().to_string().as_bytes());
                    }
                }
                _ => {
                    out.null();
                    out.null();
                    out.null_array();
                }
            }
            return;
        }
        let ids: Vec<StreamId> = match consumer_name {
            Some(c) => match g.consumers.get(c) {
                Some(c) => c.pel.iter().copied().collect(),
                None => return out.array(0),
            },
            None => g.pel.keys().copied().collect(),
        };
        let mut rows = Vec::new();
        for id in ids.into_iter().filter(|id| *id >= start && *id <= end) {
            if rows.len() as i64 >= count {
                break;
            }
            let nack = &g.pel[&id];
            if minidle != 0 && (now as i64 - nack.delivery_time as i64) < minidle {
                continue;
            }
            rows.push((id, nack));
        }
        out.array(rows.len());
        for (id, nack) in rows {
            out.array(4);
            reply_id(out, id);
            out.bulk(&nack.consumer);
            out.int((now as i64 - nack.delivery_time as i64).max(0));
            out.int(nack.delivery_count as i64);
        }
    });
}

/// The log record for a claimed (or dropped) pending entry, as Redis propagates it.
fn claim_record(key: &[u8], group: &[u8], g: &Group, id: StreamId, nack: Option<&Nack>) -> Request {
    let id = id.to_bytes();
    let last = g.last_id.to_bytes();
    match nack {
        Some(n) => {
            let (t, c) = (n.delivery_time.to_string(), n.delivery_count.to_string());
            Request::from_args([
                &b"XCLAIM"[..],
                key,
                group,
                &n.consumer,
                b"0",
                &id,
                b"TIME",
                t.as_bytes(),
                b"RETRYCOUNT",
                c.as_bytes(),
                b"FORCE",
                b"JUSTID",
                b"LASTID",
                &last,
            ])
        }
        // Acknowledging drops it the same way on replay.
        None => Request::from_args([&b"XACK"[..], key, group, &id]),
    }
}

fn group_setid_record(key: &[u8], group: &[u8], g: &Group) -> Request {
    let last = g.last_id.to_bytes();
    let read = g.entries_read.to_string();
    Request::from_args([
        &b"XGROUP"[..],
        b"SETID",
        key,
        group,
        &last,
        b"ENTRIESREAD",
        read.as_bytes(),
    ])
}

fn xclaim(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(1);
    let gname = req.arg(2);
    let has = match get(ctx, key) {
        Err(Replied) => return,
        Ok(s) => s.is_some_and(|s| s.groups.contains_key(gname)),
    };
    if !has {
        return ctx.out.err(&nogroup_or_key(key, gname));
    }
    let Ok(minidle) = int_arg(
        ctx,
        req.arg(4),
        "ERR Invalid min-idle-time argument for XCLAIM",
    ) else {
        return;
    };
    let minidle = minidle.max(0);
    let mut j = 5;
    let mut ids = Vec::new();
    while j < req.len() {
        match parse_id(req.arg(j), 0, true, false) {
            Some((id, _)) => ids.push(id),
            None => break,
        }
        j += 1;
    }
    let now = now_ms() as i64;
    let (mut force, mut justid) = (false, false);
    let mut delivery: i64 = -1;
    let mut retry: i64 = -1;
    let mut last_id = StreamId::default();
    while j < req.len() {
        let more = req.len() - 1 - j;
        let opt = req.arg(j);
        if is(opt, "force") {
            force = true;
        } else if is(opt, "justid") {
            justid = true;
        } else if (is(opt, "idle") || is(opt, "time") || is(opt, "retrycount")) && more > 0 {
            j += 1;
            let msg = format!(
                "ERR Invalid {} option argument for XCLAIM",
                String::from_utf8_lossy(opt).to_ascii_uppercase()
            );
            let Ok(v) = int_arg(ctx, req.arg(j), &msg) else {
                return;
            };
            if is(opt, "idle") {
                delivery = now - v;
            } else if is(opt, "time") {
                delivery = v;
            } else {
                retry = v;
            }
        } else if is(opt, "lastid") && more > 0 {
            j += 1;
            let Ok(id) = id_arg(ctx, req.arg(j), 0, true) else {
                return;
            };
            last_id = id;
        } else {
            return ctx.out.err(&format!(
                "ERR Unrecognized XCLAIM option '{}'",
                String::from_utf8_lossy(opt)
            ));
        }
        j += 1;
    }
    let delivery = if delivery < 0 || delivery > now {
        now
    } else {
        delivery
    } as u64;
    let name = req.arg(3);
    let _ = with_stream(ctx, key, |out, s| {
        let entries = &s.entries;
        let g = s.groups.get_mut(gname).expect("checked");
        let mut records = Vec::new();
        let mut propagate_last = false;
        if last_id > g.last_id {
            g.last_id = last_id;
            propagate_last = true;
        }
        let mut claimed: Vec<StreamId> = Vec::new();
        for id in ids {
            let exists = entries.contains_key(&id);
            if !exists {
                if let Some(n) = g.pel.remove(&id) {
                    if let Some(c) = g.consumers.get_mut(&n.consumer) {
                        c.pel.remove(&id);
                    }
                    records.push(claim_record(key, gname, g, id, None));
                    propagate_last = false;
                }
                continue;
            }
            if force && !g.pel.contains_key(&id) {
                g.pel.insert(
                    id,
                    Nack {
                        consumer: Bytes::new(),
                        delivery_time: now as u64,
                        delivery_count: 1,
                    },
                );
            }
            let Some(nack) = g.pel.get(&id) else { continue };
            if !nack.consumer.is_empty()
                && minidle != 0
                && now - (nack.delivery_time as i64) < minidle
            {
                continue;
            }
            let old = nack.consumer.clone();
            consumer(g, name, now as u64);
            if old != name {
                if let Some(c) = g.consumers.get_mut(&old) {
                    c.pel.remove(&id);
                }
            }
            let nack = g.pel.get_mut(&id).expect("present");
            nack.delivery_time = delivery;
            if retry >= 0 {
                nack.delivery_count = retry as u64;
            } else if !justid {
                nack.delivery_count += 1;
            }
            nack.consumer = Bytes::copy_from_slice(name);
            g.consumers.get_mut(name).expect("made").pel.insert(id);
            let nack = g.pel[&id].clone();
            records.push(claim_record(key, gname, g, id, Some(&nack)));
            propagate_last = false;
            claimed.push(id);
        }
        if propagate_last {
            records.push(group_setid_record(key, gname, g));
        }
        log_as(records);
        out.array(claimed.len());
        for id in &claimed {
            if justid {
                reply_id(out, *id);
            } else {
                reply_entry(out, *id, &entries[id]);
            }
        }
    });
    modified(ctx, key);
}

fn xautoclaim(ctx: &mut Ctx<'_>, req: &Request) {
    let Ok(minidle) = int_arg(
        ctx,
        req.arg(4),
        "ERR Invalid min-idle-time argument for XAUTOCLAIM",
    ) else {
        return;
    };
    let minidle = minidle.max(0);
    let Ok(start) = interval(ctx, req.arg(5), true) else {
        return;
    };
    let mut count: i64 = 100;
    let mut justid = false;
    let mut j = 6;
    while j < req.len() {
        let more = req.len() - 1 - j;
        if is(req.arg(j), "count") && more > 0 {
            let max = i64::MAX / 16;
            match parse_i64(req.arg(j + 1)) {
                Some(v) if (1..=max).contains(&v) => count = v,
                _ => return ctx.out.err("ERR COUNT must be > 0"),
            }
            j += 1;
        } else if is(req.arg(j), "justid") {
            justid = true;
        } else {
            return ctx.out.err(SYNTAX);
        }
        j += 1;
    }
    let key = req.arg(1);
    let gname = req.arg(2);
    let has = match get(ctx, key) {
        Err(Replied) => return,
        Ok(s) => s.is_some_and(|s| s.groups.contains_key(gname)),
    };
    if !has {
        return ctx.out.err(&nogroup_or_key(key, gname));
    }
    let now = now_ms();
    let name = req.arg(3);
    let _ = with_stream(ctx, key, |out, s| {
        let entries = &s.entries;
        let g = s.groups.get_mut(gname).expect("checked");
        let mut attempts = count.saturating_mul(10);
        let mut cur = Some(start);
        let mut eof = false;
        let mut claimed = Vec::new();
        let mut deleted = Vec::new();
        let mut records = Vec::new();
        loop {
            if attempts == 0 {
                break;
            }
            attempts -= 1;
            if count == 0 {
                break;
            }
            let Some(id) = cur.and_then(|c| g.pel.range(c..).next().map(|(k, _)| *k)) else {
                eof = true;
                break;
            };
            cur = id.incr();
            if !entries.contains_key(&id) {
                let n = g.pel.remove(&id).expect("listed");
                if let Some(c) = g.consumers.get_mut(&n.consumer) {
                    c.pel.remove(&id);
                }
                records.push(claim_record(key, gname, g, id, None));
                deleted.push(id);
                count -= 1;
                continue;
            }
            let nack = &g.pel[&id];
            if minidle != 0 && (now as i64 - nack.delivery_time as i64) < minidle {
                continue;
            }
            let old = nack.consumer.clone();
            consumer(g, name, now);
            if old != name {
                if let Some(c) = g.consumers.get_mut(&old) {
                    c.pel.remove(&id);
                }
            }
            let nack = g.pel.get_mut(&id).expect("present");
            nack.delivery_time = now;
            if !justid {
                nack.delivery_count += 1;
            }
            nack.consumer = Bytes::copy_from_slice(name);
            g.consumers.get_mut(name).expect("made").pel.insert(id);
            let nack = g.pel[&id].clone();
            records.push(claim_record(key, gname, g, id, Some(&nack)));
            claimed.push(id);
            count -= 1;
        }
        let next = if eof {
            StreamId::default()
        } else {
            cur.and_then(|c| g.pel.range(c..).next().map(|(k, _)| *k))
                .unwrap_or_default()
        };
        log_as(records);
        out.array(3);
        reply_id(out, next);
        out.array(claimed.len());
        for id in &claimed {
            if justid {
                reply_id(out, *id);
            } else {
                reply_entry(out, *id, &entries[id]);
            }
        }
        out.array(deleted.len());
        for id in deleted {
            reply_id(out, id);
        }
    });
    modified(ctx, key);
}

// --- XREAD / XREADGROUP ----------------------------------------------------------------------

/// XREAD's and XREADGROUP's arguments.
pub struct ReadArgs {
    pub count: usize,
    /// Milliseconds; None without BLOCK.
    pub block: Option<u64>,
    pub group: Option<(Bytes, Bytes)>,
    pub noack: bool,
    pub keys: Vec<Bytes>,
    /// Raw ID arguments ("$", ">" or IDs).
    pub ids: Vec<Bytes>,
}

/// Parses XREAD / XREADGROUP (`group` says which), writing Redis's error on failure.
pub fn parse_read(
    out: &mut Out,
    req: &Request,
    group_cmd: bool,
    in_script: bool,
) -> Option<ReadArgs> {
    let mut a = ReadArgs {
        count: 0,
        block: None,
        group: None,
        noack: false,
        keys: Vec::new(),
        ids: Vec::new(),
    };
    let name = String::from_utf8_lossy(req.arg(0)).into_owned();
    let n = req.len();
    let mut streams_at = 0;
    let mut i = 1;
    while i < n {
        let more = n - 1 - i;
        let o = req.arg(i);
        if is(o, "block") && more > 0 {
            if in_script {
                out.err(&format!(
                    "ERR {name} command is not allowed with BLOCK option from scripts"
                ));
                return None;
            }
            i += 1;
            match parse_i64(req.arg(i)) {
                Some(v) if v >= 0 => a.block = Some(v as u64),
                Some(_) => {
                    out.err("ERR timeout is negative");
                    return None;
                }
                None => {
                    out.err("ERR timeout is not an integer or out of range");
                    return None;
                }
            }
        } else if is(o, "count") && more > 0 {
            i += 1;
            match parse_i64(req.arg(i)) {
                Some(v) => a.count = v.max(0) as usize,
                None => {
                    out.err(NOT_INT);
                    return None;
                }
            }
        } else if is(o, "streams") && more > 0 {
            streams_at = i + 1;
            let rest = n - streams_at;
            if rest % 2 != 0 {
                out.err("ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.");
                return None;
            }
            break;
        } else if is(o, "group") && more >= 2 {
            if !group_cmd {
                out.err("ERR The GROUP option is only supported by XREADGROUP. You called XREAD instead.");
                return None;
            }
            a.group = Some((req.arg_bytes(i + 1), req.arg_bytes(i + 2)));
            i += 2;
        } else if is(o, "noack") {
            if !group_cmd {
                out.err("ERR The NOACK option is only supported by XREADGROUP. You called XREAD instead.");
                return None;
            }
            a.noack = true;
        } else {
            out.err(SYNTAX);
            return None;
        }
        i += 1;
    }
    if streams_at == 0 {
        out.err(SYNTAX);
        return None;
    }
    if group_cmd && a.group.is_none() {
        out.err("ERR Missing GROUP option for XREADGROUP");
        return None;
    }
    let k = (n - streams_at) / 2;
    a.keys = (streams_at..streams_at + k)
        .map(|i| req.arg_bytes(i))
        .collect();
    a.ids = (streams_at + k..n).map(|i| req.arg_bytes(i)).collect();
    Some(a)
}

/// Delivers entries after `after` to a group's consumer (the ">" form) or replays the
/// consumer's pending entries from `after` on (history), writing the entries array.
#[allow(clippy::too_many_arguments)]
fn serve_group(
    out: &mut Out,
    s: &mut Stream,
    gname: &[u8],
    cname: &[u8],
    after: StreamId,
    history: bool,
    count: usize,
    noack: bool,
    now: u64,
) {
    let limit = if count == 0 { usize::MAX } else { count };
    // Taken out while it changes, so the stream can be read alongside.
    let Some((gkey, mut group)) = s.groups.remove_entry(gname) else {
        return;
    };
    serve_group_in(out, s, &mut group, cname, after, history, limit, noack, now);
    s.groups.insert(gkey, group);
}

#[allow(clippy::too_many_arguments)]
fn serve_group_in(
    out: &mut Out,
    s: &Stream,
    g: &mut Group,
    cname: &[u8],
    after: StreamId,
    history: bool,
    limit: usize,
    noack: bool,
    now: u64,
) {
    consumer(g, cname, now);
    if history {
        let start = after.incr().unwrap_or(StreamId::MAX);
        let ids: Vec<StreamId> = g.consumers[cname]
            .pel
            .range(start..)
            .take(limit)
            .copied()
            .collect();
        out.array(ids.len());
        for id in ids {
            match s.entries.get(&id) {
                Some(fv) => {
                    reply_entry(out, id, fv);
                    if let Some(n) = g.pel.get_mut(&id) {
                        n.delivery_time = now;
                        n.delivery_count += 1;
                    }
                }
                None => {
                    out.array(2);
                    reply_id(out, id);
                    out.null_array();
                }
            }
        }
        return;
    }
    let Some(start) = after.incr() else {
        out.array(0);
        return;
    };
    let ids: Vec<StreamId> = s
        .entries
        .range(start..)
        .take(limit)
        .map(|(k, _)| *k)
        .collect();
    out.array(ids.len());
    for id in ids {
        reply_entry(out, id, &s.entries[&id]);
        if id > g.last_id {
            if g.entries_read != INVALID_READ && !s.has_tombstones(Some(id), None) {
                g.entries_read += 1;
            } else if s.entries_added > 0 {
                g.entries_read = s.distance_from_first(id);
            }
            g.last_id = id;
        }
        if !noack {
            let cn = Bytes::copy_from_slice(cname);
            if let Some(old) = g.pel.insert(
                id,
                Nack {
                    consumer: cn.clone(),
                    delivery_time: now,
                    delivery_count: 1,
                },
            ) {
                if old.consumer != cn {
                    if let Some(c) = g.consumers.get_mut(&old.consumer) {
                        c.pel.remove(&id);
                    }
                }
            }
            g.consumers.get_mut(cname).expect("made").pel.insert(id);
        }
    }
}

/// Serves one key of a blocked XREAD/XREADGROUP if it has something for it: writes the
/// whole reply (one stream) and returns true.
pub fn serve_blocked(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    after: StreamId,
    count: usize,
    group: Option<&(Bytes, Bytes, bool)>,
) -> Result<bool, Replied> {
    let now = ctx.now;
    let resp3 = ctx.out.resp3;
    let Some(s) = get(ctx, key)? else {
        // A group reader is told its stream went (as Redis 7.0 tells it); a plain reader
        // goes on waiting for the key to come back.
        if group.is_some() {
            ctx.out.err("UNBLOCKED the stream key no longer exists");
            return Err(Replied);
        }
        return Ok(false);
    };
    let mut tmp = Out::new(resp3);
    match group {
        Some((g, c, noack)) => {
            let Some(grp) = s.groups.get(&g[..]) else {
                ctx.out
                    .err("NOGROUP the consumer group this client was blocked on no longer exists");
                return Err(Replied);
            };
            let last = grp.last_id;
            if s.last_valid_id() <= last || s.is_empty() {
                return Ok(false);
            }
            serve_group(&mut tmp, s, g, c, last, false, count, *noack, now);
            note_created(ctx, key);
        }
        None => {
            if s.is_empty() || s.last_valid_id() <= after {
                return Ok(false);
            }
            let start = after.incr().unwrap_or(StreamId::MAX);
            reply_range(&mut tmp, s, start, StreamId::MAX, count, false);
        }
    }
    if resp3 {
        ctx.out.map(1);
    } else {
        ctx.out.array(1);
        ctx.out.array(2);
    }
    ctx.out.bulk(key);
    ctx.out.raw(&tmp.buf);
    if group.is_some() {
        modified(ctx, key);
    }
    Ok(true)
}

/// The ID after which a blocked read of `key` waits ("$" resolved now, ">" as MAX).
pub fn resolve_id(ctx: &mut Ctx<'_>, key: &[u8], raw: &[u8]) -> Option<StreamId> {
    if raw == b"$" {
        return Some(match get(ctx, key) {
            Ok(Some(s)) => s.last_id,
            _ => StreamId::default(),
        });
    }
    if raw == b">" {
        return Some(StreamId::MAX);
    }
    parse_id(raw, 0, true, false).map(|(id, _)| id)
}

fn xread(ctx: &mut Ctx<'_>, req: &Request) {
    let group_cmd = req.arg(0).len() == 10;
    let in_script = super::script::running();
    let Some(a) = parse_read(ctx.out, req, group_cmd, in_script) else {
        return;
    };
    let now = ctx.now;
    // Check every key (type, group) and ID first.
    let mut ids = Vec::with_capacity(a.keys.len());
    for (key, raw) in a.keys.iter().zip(&a.ids) {
        let s = match get(ctx, key) {
            Err(Replied) => return,
            Ok(s) => s,
        };
        if let Some((g, _)) = &a.group {
            if !s.as_ref().is_some_and(|s| s.groups.contains_key(&g[..])) {
                return ctx.out.err(&format!(
                    "NOGROUP No such key '{}' or consumer group '{}' in XREADGROUP with GROUP option",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(g)
                ));
            }
        }
        let id = if raw.as_ref() == b"$" {
            if group_cmd {
                return ctx.out.err("ERR The $ ID is meaningless in the context of XREADGROUP: you want to read the history of this consumer by specifying a proper ID, or use the > ID to get new messages. The $ ID would just return an empty result set.");
            }
            s.map_or(StreamId::default(), |s| s.last_id)
        } else if raw.as_ref() == b">" {
            if !group_cmd {
                return ctx.out.err("ERR The > ID can be specified only when calling XREADGROUP using the GROUP <group> <consumer> option.");
            }
            StreamId::MAX
        } else {
            match parse_id(raw, 0, true, false) {
                Some((id, _)) => id,
                None => return ctx.out.err(INVALID_ID),
            }
        };
        ids.push(id);
    }
    let mut parts: Vec<(usize, Out)> = Vec::new();
    let resp3 = ctx.out.resp3;
    let mut wrote = false;
    for (i, key) in a.keys.iter().enumerate() {
        let Ok(Some(s)) = get(ctx, key) else { continue };
        let mut gt = ids[i];
        let mut part = Out::new(resp3);
        match &a.group {
            Some((g, c)) => {
                let history = gt != StreamId::MAX;
                let last = s.groups[&g[..]].last_id;
                if !history {
                    if s.is_empty() || s.last_valid_id() <= last {
                        continue;
                    }
                    gt = last;
                }
                serve_group(&mut part, s, g, c, gt, history, a.count, a.noack, now);
                wrote = true;
                note_created(ctx, key);
            }
            None => {
                if s.is_empty() || s.last_valid_id() <= gt {
                    continue;
                }
                let start = gt.incr().unwrap_or(StreamId::MAX);
                reply_range(&mut part, s, start, StreamId::MAX, a.count, false);
            }
        }
        parts.push((i, part));
    }
    if parts.is_empty() {
        return ctx.out.null_array();
    }
    if resp3 {
        ctx.out.map(parts.len());
    } else {
        ctx.out.array(parts.len());
    }
    for (i, part) in parts {
        if !resp3 {
            ctx.out.array(2);
        }
        ctx.out.bulk(&a.keys[i]);
        ctx.out.raw(&part.buf);
        if wrote {
            modified(ctx, &a.keys[i]);
        }
    }
}

// --- XINFO ------------------------------------------------------------------------------------

fn lag(out: &mut Out, s: &Stream, g: &Group) {
    if s.entries_added == 0 {
        return out.int(0);
    }
    if g.entries_read != INVALID_READ && !s.has_tombstones(Some(g.last_id), None) {
        return out.int(s.entries_added as i64 - g.entries_read);
    }
    match s.distance_from_first(g.last_id) {
        INVALID_READ => out.null(),
        read => out.int(s.entries_added as i64 - read),
    }
}

fn entries_read(out: &mut Out, g: &Group) {
    if g.entries_read != INVALID_READ {
        out.int(g.entries_read)
    } else {
        out.null()
    }
}

fn xinfo_stream(ctx: &mut Ctx<'_>, req: &Request) {
    let mut full = false;
    let mut count: i64 = 10;
    let subcommand_error = |ctx: &mut Ctx<'_>| {
        ctx.out.err(&format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try XINFO HELP.",
            String::from_utf8_lossy(req.arg(1))
        ))
    };
    if req.len() > 3 {
        if !is(req.arg(3), "full") {
            return subcommand_error(ctx);
        }
        full = true;
        if req.len() > 4 {
            if req.len() != 6 || !is(req.arg(4), "count") {
                return subcommand_error(ctx);
            }
            let Ok(c) = int_arg(ctx, req.arg(5), NOT_INT) else {
                return;
            };
            count = c.max(0);
        }
    }
    if let Ok(None) = with_stream(ctx, req.arg(2), |out, s| stream_info(out, s, full, count)) {
        ctx.out.err("ERR no such key")
    }
}

fn stream_info(out: &mut Out, s: &Stream, full: bool, count: i64) {
    out.map(if full { 9 } else { 10 });
    out.bulk(b"length");
    out.int(s.len() as i64);
    out.bulk(b"radix-tree-keys");
    out.int(s.nodes.len() as i64);
    out.bulk(b"radix-tree-nodes");
    // Redis's radix tree has its own inner nodes; the closest figure here is one per key.
    out.int((s.nodes.len() + 1) as i64);
    out.bulk(b"last-generated-id");
    reply_id(out, s.last_id);
    out.bulk(b"max-deleted-entry-id");
    reply_id(out, s.max_deleted_id);
    out.bulk(b"entries-added");
    out.int(s.entries_added as i64);
    out.bulk(b"recorded-first-entry-id");
    reply_id(out, s.first_id);
    if !full {
        out.bulk(b"groups");
        out.int(s.groups.len() as i64);
        out.bulk(b"first-entry");
        match s.entries.iter().next() {
            Some((id, fv)) => reply_entry(out, *id, fv),
            None => out.null(),
        }
        out.bulk(b"last-entry");
        match s.entries.iter().next_back() {
            Some((id, fv)) => reply_entry(out, *id, fv),
            None => out.null(),
        }
        return;
    }
    let limit = if count == 0 {
        usize::MAX
    } else {
        count as usize
    };
    out.bulk(b"entries");
    reply_range(
        out,
        s,
        StreamId::default(),
        StreamId::MAX,
        if count == 0 { 0 } else { count as usize },
        false,
    );
    out.bulk(b"groups");
    out.array(s.groups.len());
    for (name, g) in &s.groups {
        out.map(7);
        out.bulk(b"name");
        out.bulk(name);
        out.bulk(b"last-delivered-id");
        reply_id(out, g.last_id);
        out.bulk(b"entries-read");
        entries_read(out, g);
        out.bulk(b"lag");
        lag(out, s, g);
        out.bulk(b"pel-count");
        out.int(g.pel.len() as i64);
        out.bulk(b"pending");
        let pel: Vec<_> = g.pel.iter().take(limit).collect();
        out.array(pel.len());
        for (id, n) in pel {
            out.array(4);
            reply_id(out, *id);
            out.bulk(&n.consumer);
            out.int(n.delivery_time as i64);
            out.int(n.delivery_count as i64);
        }
        out.bulk(b"consumers");
        out.array(g.consumers.len());
        for (cname, c) in &g.consumers {
            out.map(4);
            out.bulk(b"name");
            out.bulk(cname);
            out.bulk(b"seen-time");
            out.int(c.seen_time as i64);
            out.bulk(b"pel-count");
            out.int(c.pel.len() as i64);
            out.bulk(b"pending");
            let pel: Vec<_> = c.pel.iter().take(limit).collect();
            out.array(pel.len());
            for id in pel {
                let n = &g.pel[id];
                out.array(3);
                reply_id(out, *id);
                out.int(n.delivery_time as i64);
                out.int(n.delivery_count as i64);
            }
        }
    }
}

fn xinfo_groups(ctx: &mut Ctx<'_>, req: &Request) {
    let r = with_stream(ctx, req.arg(2), |out, s| {
        out.array(s.groups.len());
        for (name, g) in &s.groups {
            out.map(6);
            out.bulk(b"name");
            out.bulk(name);
            out.bulk(b"consumers");
            out.int(g.consumers.len() as i64);
            out.bulk(b"pending");
            out.int(g.pel.len() as i64);
            out.bulk(b"last-delivered-id");
            reply_id(out, g.last_id);
            out.bulk(b"entries-read");
            entries_read(out, g);
            out.bulk(b"lag");
            lag(out, s, g);
        }
    });
    if let Ok(None) = r {
        ctx.out.err("ERR no such key")
    }
}

fn xinfo_consumers(ctx: &mut Ctx<'_>, req: &Request) {
    let key = req.arg(2);
    let gname = req.arg(3);
    let g = match get(ctx, key) {
        Err(Replied) => return,
        Ok(None) => return ctx.out.err("ERR no such key"),
        Ok(Some(s)) => s.groups.get(gname).cloned(),
    };
    let Some(g) = g else {
        return ctx.out.err(&nogroup(key, gname));
    };
    let now = now_ms() as i64;
    let out = &mut *ctx.out;
    out.array(g.consumers.len());
    for (name, c) in &g.consumers {
        out.map(3);
        out.bulk(b"name");
        out.bulk(name);
        out.bulk(b"pending");
        out.int(c.pel.len() as i64);
        out.bulk(b"idle");
        out.int((now - c.seen_time as i64).max(0));
    }
}
