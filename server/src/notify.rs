//! Keyspace notifications (`notify-keyspace-events`), as Redis 7.0 publishes them: for every
//! key a write changed, `__keyspace@<db>__:<key>` carries the event's name and
//! `__keyevent@<db>__:<event>` carries the key, for the classes the setting selects.
//!
//! Which keys a command changed comes from the databases themselves: while notifications
//! are on, every change a database records for WATCH also lists the key
//! ([`crate::db::Db::take_touched`]), and expiry and eviction list theirs. After the command,
//! each changed key gets the command's event ([`events`]), then `del` when the change emptied
//! it. Delivery reaches subscribers on every shard (this one at once, the others through
//! their job queues). Not emitted: `n` (new key) and `m` (key miss) events.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use rcodis_core::resp::Request;

use crate::shard::ShardState;

pub const KEYSPACE: u32 = 1 << 0;
pub const KEYEVENT: u32 = 1 << 1;
pub const GENERIC: u32 = 1 << 2;
pub const STRING: u32 = 1 << 3;
pub const LIST: u32 = 1 << 4;
pub const SET: u32 = 1 << 5;
pub const HASH: u32 = 1 << 6;
pub const ZSET: u32 = 1 << 7;
pub const EXPIRED: u32 = 1 << 8;
pub const EVICTED: u32 = 1 << 9;
pub const STREAM: u32 = 1 << 10;
pub const KEY_MISS: u32 = 1 << 11;
pub const MODULE: u32 = 1 << 12;
pub const NEW: u32 = 1 << 13;
/// `A`: every class but key-miss and new.
const ALL: u32 = GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

static FLAGS: AtomicU32 = AtomicU32::new(0);

/// An event gathered for publishing: its class, its name, the key.
pub type Note = (u32, &'static str, Bytes);

/// Whether anything may be published (checked on the write path: one relaxed load).
#[inline]
pub fn on() -> bool {
    FLAGS.load(Ordering::Relaxed) != 0
}

/// Whether events of `class` are published.
pub fn wants(class: u32) -> bool {
    let f = FLAGS.load(Ordering::Relaxed);
    f & class != 0 && f & (KEYSPACE | KEYEVENT) != 0
}

/// Parses a `notify-keyspace-events` value as Redis does (`None`: a character it does not
/// know).
pub fn parse(v: &str) -> Option<u32> {
    let mut f = 0;
    for c in v.chars() {
        f |= match c {
            'A' => ALL,
            'g' => GENERIC,
            '$' => STRING,
            'l' => LIST,
            's' => SET,
            'h' => HASH,
            'z' => ZSET,
            'x' => EXPIRED,
            'e' => EVICTED,
            'K' => KEYSPACE,
            'E' => KEYEVENT,
            't' => STREAM,
            'm' => KEY_MISS,
            'd' => MODULE,
            'n' => NEW,
            _ => return None,
        };
    }
    Some(f)
}

/// The setting as CONFIG GET shows it (Redis's canonical order: `A` or the classes, then
/// `K`, `E`, `m`, `n`).
pub fn format(f: u32) -> String {
    let mut s = String::new();
    if f & ALL == ALL {
        s.push('A');
    } else {
        for (bit, c) in [
            (GENERIC, 'g'),
            (STRING, '$'),
            (LIST, 'l'),
            (SET, 's'),
            (HASH, 'h'),
            (ZSET, 'z'),
            (EXPIRED, 'x'),
            (EVICTED, 'e'),
            (STREAM, 't'),
            (MODULE, 'd'),
        ] {
            if f & bit != 0 {
                s.push(c);
            }
        }
    }
    for (bit, c) in [
        (KEYSPACE, 'K'),
        (KEYEVENT, 'E'),
        (KEY_MISS, 'm'),
        (NEW, 'n'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    s
}

/// Applies the setting (CONFIG SET and start-up); the value was checked with [`parse`].
pub fn set(v: &str) {
    FLAGS.store(parse(v).unwrap_or(0), Ordering::Relaxed);
}

/// Publishes one event for `key` in database `db`, to this shard's subscribers now and to
/// the other shards' through their job queues.
pub fn publish(st: &mut ShardState, db: usize, class: u32, event: &'static str, key: &[u8]) {
    let f = FLAGS.load(Ordering::Relaxed);
    if f & class == 0 {
        return;
    }
    let mut msgs: Vec<(Bytes, Bytes)> = Vec::with_capacity(2);
    if f & KEYSPACE != 0 {
        let mut ch = format!("__keyspace@{db}__:").into_bytes();
        ch.extend_from_slice(key);
        msgs.push((Bytes::from(ch), Bytes::from_static(event.as_bytes())));
    }
    if f & KEYEVENT != 0 {
        let ch = format!("__keyevent@{db}__:{event}");
        msgs.push((Bytes::from(ch), Bytes::copy_from_slice(key)));
    }
    for (ch, payload) in &msgs {
        st.pubsub.publish(ch, payload, false, 32 << 20);
    }
    for other in (0..st.nr_shards).filter(|&s| s != st.id) {
        let msgs = msgs.clone();
        st.deferred.push((
            other,
            Box::new(move |st: &mut ShardState| {
                for (ch, payload) in &msgs {
                    st.pubsub.publish(ch, payload, false, 32 << 20);
                }
            }),
        ));
    }
}

/// Publishes the events database `db` has gathered ([`collect`], expiry, eviction).
pub fn flush(st: &mut ShardState, db: usize) {
    let notes = st.dbs[db].take_notes();
    for (class, ev, key) in notes {
        publish(st, db, class, ev, &key);
    }
}

/// After command `name` ran on `d` (a client's, or one a script called): turns the keys it
/// changed into their events, gathered in `d` until [`flush`].
pub fn collect(d: &mut crate::db::Db, name: &str, req: &Request, now: u64) {
    let mut keys = dedup(d.take_touched());
    // A move tells of its push before its pop, as Redis does.
    if matches!(name, "lmove" | "rpoplpush") {
        keys.reverse();
    }
    for key in keys {
        let gone = d.get_quiet(&key, now).is_none();
        let evs = events(name, req, &key, gone);
        // (A renamed key is gone without being deleted.)
        let said_del = evs.iter().any(|e| e.1 == "del" || e.1 == "rename_from");
        let any = !evs.is_empty();
        for (class, ev) in evs {
            d.note(class, ev, key.clone());
        }
        // A change that emptied the key (a pop, a removal, a trim) also deletes it.
        if gone && any && !said_del {
            d.note(GENERIC, "del", key);
        }
    }
}

/// A blocked client was served: `pop` (class `class`) from `key`, and for a move `push`
/// onto the other key it changed here.
pub fn collect_served(
    d: &mut crate::db::Db,
    key: &[u8],
    class: u32,
    pop: &'static str,
    push: &'static str,
    now: u64,
) {
    let mut keys = dedup(d.take_touched());
    // The push (a move's destination) first, as Redis tells it.
    keys.sort_by_key(|k| k == key);
    for k in keys {
        let ev = if k == key { pop } else { push };
        d.note(class, ev, k.clone());
        if d.get_quiet(&k, now).is_none() {
            d.note(GENERIC, "del", k);
        }
    }
}

fn dedup(keys: Vec<Bytes>) -> Vec<Bytes> {
    let mut seen: Vec<Bytes> = Vec::with_capacity(keys.len());
    for k in keys {
        if !seen.contains(&k) {
            seen.push(k);
        }
    }
    seen
}

fn has_opt(req: &Request, from: usize, names: &[&str]) -> bool {
    req.args()
        .skip(from)
        .any(|a| names.iter().any(|n| a.eq_ignore_ascii_case(n.as_bytes())))
}

fn is_arg(req: &Request, i: usize, key: &[u8]) -> bool {
    req.len() > i && req.arg(i) == key
}

/// The events of command `name` for one key it changed (`gone`: the key no longer exists).
fn events(name: &str, req: &Request, key: &[u8], gone: bool) -> Vec<(u32, &'static str)> {
    let one = |c: u32, e: &'static str| vec![(c, e)];
    let side = |left: bool, l: &'static str, r: &'static str| if left { l } else { r };
    let left_at = |i: usize| req.len() > i && req.arg(i).eq_ignore_ascii_case(b"left");
    match name {
        "set" => {
            let mut v = vec![(STRING, "set")];
            if has_opt(req, 3, &["ex", "px", "exat", "pxat"]) {
                v.push((GENERIC, "expire"));
            }
            v
        }
        "setex" | "psetex" => vec![(STRING, "set"), (GENERIC, "expire")],
        "setnx" | "getset" | "mset" | "msetnx" | "bitop" => {
            if gone {
                one(GENERIC, "del")
            } else {
                one(STRING, "set")
            }
        }
        "getex" => {
            if gone {
                one(GENERIC, "del")
            } else if has_opt(req, 2, &["persist"]) {
                one(GENERIC, "persist")
            } else {
                one(GENERIC, "expire")
            }
        }
        "append" => one(STRING, "append"),
        "setrange" => one(STRING, "setrange"),
        "incr" | "decr" | "incrby" | "decrby" => one(STRING, "incrby"),
        "incrbyfloat" => one(STRING, "incrbyfloat"),
        "setbit" | "bitfield" => one(STRING, "setbit"),
        "pfadd" | "pfmerge" => one(STRING, "pfadd"),
        "del" | "unlink" | "getdel" => one(GENERIC, "del"),
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            if gone {
                one(GENERIC, "del")
            } else {
                one(GENERIC, "expire")
            }
        }
        "persist" => one(GENERIC, "persist"),
        "rename" | "renamenx" => {
            if is_arg(req, 1, key) {
                one(GENERIC, "rename_from")
            } else {
                one(GENERIC, "rename_to")
            }
        }
        "copy" => one(GENERIC, "copy_to"),
        "restore" => one(GENERIC, "restore"),
        "sort" => {
            if gone {
                one(GENERIC, "del")
            } else {
                one(LIST, "sortstore")
            }
        }
        "lpush" | "lpushx" => one(LIST, "lpush"),
        "rpush" | "rpushx" => one(LIST, "rpush"),
        "lpop" => one(LIST, "lpop"),
        "rpop" => one(LIST, "rpop"),
        "linsert" => one(LIST, "linsert"),
        "lset" => one(LIST, "lset"),
        "lrem" => one(LIST, "lrem"),
        "ltrim" => one(LIST, "ltrim"),
        "rpoplpush" => {
            if is_arg(req, 1, key) {
                one(LIST, "rpop")
            } else {
                one(LIST, "lpush")
            }
        }
        "lmove" => {
            if is_arg(req, 1, key) {
                one(LIST, side(left_at(3), "lpop", "rpop"))
            } else {
                one(LIST, side(left_at(4), "lpush", "rpush"))
            }
        }
        "lmpop" => {
            let n = req
                .get(1)
                .and_then(rcodis_core::num::parse_i64)
                .unwrap_or(0);
            let at = 2 + n.max(0) as usize;
            one(LIST, side(left_at(at), "lpop", "rpop"))
        }
        "hset" | "hmset" | "hsetnx" => one(HASH, "hset"),
        "hdel" => one(HASH, "hdel"),
        "hincrby" => one(HASH, "hincrby"),
        "hincrbyfloat" => one(HASH, "hincrbyfloat"),
        "sadd" => one(SET, "sadd"),
        "srem" => one(SET, "srem"),
        "spop" => one(SET, "spop"),
        "smove" => {
            if is_arg(req, 1, key) {
                one(SET, "srem")
            } else {
                one(SET, "sadd")
            }
        }
        "sinterstore" | "sunionstore" | "sdiffstore" | "zunionstore" | "zinterstore"
        | "zdiffstore" | "zrangestore" | "georadius" | "georadiusbymember" | "geosearchstore" => {
            if gone {
                return one(GENERIC, "del");
            }
            let class = if name.starts_with('s') { SET } else { ZSET };
            let ev = match name {
                "sinterstore" => "sinterstore",
                "sunionstore" => "sunionstore",
                "sdiffstore" => "sdiffstore",
                "zunionstore" => "zunionstore",
                "zinterstore" => "zinterstore",
                "zdiffstore" => "zdiffstore",
                "zrangestore" => "zrangestore",
                "geosearchstore" => "geosearchstore",
                _ => "georadiusstore",
            };
            one(class, ev)
        }
        "zadd" => {
            if has_opt(req, 2, &["incr"]) {
                one(ZSET, "zincr")
            } else {
                one(ZSET, "zadd")
            }
        }
        "geoadd" => one(ZSET, "zadd"),
        "zincrby" => one(ZSET, "zincr"),
        "zrem" => one(ZSET, "zrem"),
        "zremrangebyscore" => one(ZSET, "zremrangebyscore"),
        "zremrangebyrank" => one(ZSET, "zremrangebyrank"),
        "zremrangebylex" => one(ZSET, "zremrangebylex"),
        "zpopmin" => one(ZSET, "zpopmin"),
        "zpopmax" => one(ZSET, "zpopmax"),
        "zmpop" => {
            let n = req
                .get(1)
                .and_then(rcodis_core::num::parse_i64)
                .unwrap_or(0);
            let at = 2 + n.max(0) as usize;
            let min = req.len() > at && req.arg(at).eq_ignore_ascii_case(b"min");
            one(ZSET, side(min, "zpopmin", "zpopmax"))
        }
        "xadd" => one(STREAM, "xadd"),
        "xtrim" => one(STREAM, "xtrim"),
        "xdel" => one(STREAM, "xdel"),
        "xsetid" => one(STREAM, "xsetid"),
        "xgroup|create" => one(STREAM, "xgroup-create"),
        "xgroup|setid" => one(STREAM, "xgroup-setid"),
        "xgroup|destroy" => one(STREAM, "xgroup-destroy"),
        "xgroup|createconsumer" => one(STREAM, "xgroup-createconsumer"),
        "xgroup|delconsumer" => one(STREAM, "xgroup-delconsumer"),
        // Reads that keep state (PFCOUNT's cache, group reads and claims) and anything
        // else: no event.
        _ => Vec::new(),
    }
}
