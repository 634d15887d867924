//! Codis slot commands (codis-spec §2.2, §2.3): introspection and synchronous migration.
//!
//! Synchronous migration moves a key (and every key sharing its hash tag) to another
//! server: DUMP on this side, `SLOTSRESTORE` on the target, then delete here. The network
//! round trip runs on the owning shard's thread with a blocking socket bounded by the
//! command's timeout, so that shard serves nothing else meanwhile — exactly as the
//! single-threaded codis-server blocks — and no client can see a key on both servers or on
//! neither. Connections to targets are cached per shard and closed after 15 s idle.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rcodis_core::num::parse_i64;
use rcodis_core::resp::{Frame, FrameDecoder, Request};
use rcodis_core::slot::{has_tag, slot_of, tag_crc, NUM_SLOTS};

use crate::db::{dump, now_ms, Key};
use crate::out::Out;
use crate::shard::{Shard, ShardState};

/// A cached connection to a migration target.
pub struct MgrtConn {
    stream: TcpStream,
    db: usize,
    last_used: Instant,
}

fn parse_slot(out: &mut Out, b: &[u8]) -> Option<u16> {
    match parse_i64(b) {
        Some(s) if (0..NUM_SLOTS as i64).contains(&s) => Some(s as u16),
        Some(s) => {
            out.err(&format!("ERR invalid slot number = {s}"));
            None
        }
        None => {
            out.err("ERR value is out of range");
            None
        }
    }
}

/// SLOTSINFO [start] [count]
pub async fn slotsinfo(shard: &Shard, db: usize, req: &Request, out: &mut Out) {
    if req.len() > 3 {
        return out.err("ERR wrong number of arguments for 'slotsinfo' command");
    }
    let start = match req.get(1) {
        Some(b) => match parse_slot(out, b) {
            Some(s) => s as i64,
            None => return,
        },
        None => 0,
    };
    let count = match req.get(2) {
        Some(b) => match parse_i64(b) {
            Some(c) if c >= 0 => c,
            Some(c) => return out.err(&format!("ERR invalid slot count = {c}")),
            None => return out.err("ERR value is out of range"),
        },
        None => NUM_SLOTS as i64,
    };
    let end = (start + count).min(NUM_SLOTS as i64);
    let per = shard
        .run_on_all(move |st| {
            st.dbs[db]
                .owned_slots()
                .filter(|&s| (start..end).contains(&(s as i64)))
                .map(|s| (s, st.dbs[db].slot_len(s)))
                .filter(|(_, n)| *n > 0)
                .collect::<Vec<_>>()
        })
        .await;
    let mut all: Vec<(u16, usize)> = per.into_iter().flatten().collect();
    all.sort();
    out.array(all.len());
    for (s, n) in all {
        out.array(2);
        out.int(s as i64);
        out.int(n as i64);
    }
}

/// SLOTSSCAN slot cursor [COUNT n]
pub async fn slotsscan(shard: &Shard, db: usize, req: &Request, out: &mut Out) {
    if req.len() != 3 && req.len() != 5 {
        return out.err("ERR syntax error");
    }
    let Some(slot) = parse_slot(out, req.arg(1)) else {
        return;
    };
    let Some(cursor) = std::str::from_utf8(req.arg(2))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    else {
        return out.err("ERR invalid cursor");
    };
    let mut count = 10usize;
    if req.len() == 5 {
        if !req.arg(3).eq_ignore_ascii_case(b"count") {
            return out.err("ERR syntax error");
        }
        match parse_i64(req.arg(4)) {
            Some(n) if n >= 1 => count = n as usize,
            _ => return out.err("ERR syntax error"),
        }
    }
    let owner = slot as usize % shard.nr_shards;
    let (keys, next) = shard
        .run_on(owner, move |st| {
            st.dbs[db].scan_slot(slot, cursor, count, now_ms())
        })
        .await;
    out.array(2);
    out.bulk(next.unwrap_or(0).to_string().as_bytes());
    out.array_of_bulks(keys.iter().map(|k| &k[..]));
}

/// SLOTSDEL slot [slot ...]
pub async fn slotsdel(shard: &Shard, db: usize, req: &Request, out: &mut Out) {
    let mut slots = Vec::new();
    for i in 1..req.len() {
        match parse_slot(out, req.arg(i)) {
            Some(s) => slots.push(s),
            None => return,
        }
    }
    let mut res = Vec::new();
    for s in slots {
        let owner = s as usize % shard.nr_shards;
        let left = shard
            .run_on(owner, move |st| {
                st.dbs[db].clear_slot(s);
                if let Some(a) = st.aof.as_mut() {
                    a.log(db, &[b"SLOTSDEL", s.to_string().as_bytes()]);
                    a.end_batch();
                }
                st.dbs[db].slot_len(s)
            })
            .await;
        res.push((s, left));
    }
    out.array(res.len());
    for (s, n) in res {
        out.array(2);
        out.int(s as i64);
        out.int(n as i64);
    }
}

/// SLOTSHASHKEY [key ...]
pub fn slotshashkey(req: &Request, out: &mut Out) {
    out.array(req.len() - 1);
    for i in 1..req.len() {
        out.int(slot_of(req.arg(i)) as i64);
    }
}

/// SLOTSCHECK: every key sits in the table of its own slot.
pub async fn slotscheck(shard: &Shard, out: &mut Out) {
    let bad = shard
        .run_on_all(|st| {
            for db in &st.dbs {
                for s in db.owned_slots() {
                    if let Some(k) = db.slot_keys(s).find(|k| slot_of(k) != s) {
                        return Some(k.clone());
                    }
                }
            }
            None
        })
        .await;
    match bad.into_iter().flatten().next() {
        Some(k) => out.err(&format!(
            "ERR step 1, miss = '{}'",
            String::from_utf8_lossy(&k)
        )),
        None => out.ok(),
    }
}

/// Keys that move with `key`: itself, plus every key of its slot with the same tag CRC.
fn tag_siblings(st: &ShardState, db: usize, key: &[u8]) -> Vec<Bytes> {
    if !has_tag(key) {
        return vec![Bytes::copy_from_slice(key)];
    }
    let crc = tag_crc(key);
    let mut v: Vec<Bytes> = st.dbs[db]
        .slot_keys(slot_of(key))
        .filter(|k| has_tag(k) && tag_crc(k) == crc)
        .map(Key::to_bytes)
        .collect();
    if !v.iter().any(|k| &k[..] == key) {
        v.push(Bytes::copy_from_slice(key));
    }
    v
}

/// Parsed `host port timeout` of the sync migration commands.
pub struct Target {
    pub addr: String,
    pub timeout: Duration,
}

pub fn parse_target(req: &Request, out: &mut Out) -> Option<Target> {
    let host = String::from_utf8_lossy(req.arg(1)).into_owned();
    let port = match parse_i64(req.arg(2)) {
        Some(p) if (0..=65535).contains(&p) => p,
        _ => {
            out.err(&format!(
                "ERR invalid port = {}",
                String::from_utf8_lossy(req.arg(2))
            ));
            return None;
        }
    };
    let timeout = match parse_i64(req.arg(3)) {
        Some(t) if t < 0 => {
            out.err(&format!("ERR invalid timeout = {t}"));
            return None;
        }
        Some(0) => 100,
        Some(t) => t,
        None => {
            out.err("ERR value is out of range");
            return None;
        }
    };
    Some(Target {
        addr: format!("{host}:{port}"),
        timeout: Duration::from_millis(timeout as u64),
    })
}

fn read_reply(stream: &mut TcpStream) -> Result<Frame, String> {
    let mut buf = BytesMut::new();
    let mut dec = FrameDecoder::default();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(f) = dec.decode(&mut buf).map_err(|e| e.to_string())? {
            return Ok(f);
        }
        let n = match stream.read(&mut tmp) {
            Ok(n) => n,
            // A signal landed on this thread mid-read: read again.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.to_string()),
        };
        if n == 0 {
            return Err("connection closed by target".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn call(stream: &mut TcpStream, args: &[&[u8]]) -> Result<Frame, String> {
    let mut out = Vec::new();
    Request::from_args(args).write_resp(&mut out);
    stream.write_all(&out).map_err(|e| e.to_string())?;
    read_reply(stream)
}

/// A connection to `addr` in database `db`, authenticated with `password` (cached).
fn connect(st: &mut ShardState, t: &Target, db: usize, password: &str) -> Result<(), String> {
    let now = Instant::now();
    st.mgrt_conns
        .retain(|_, c| now.duration_since(c.last_used) < Duration::from_secs(15));
    if let Some(c) = st.mgrt_conns.get_mut(&t.addr) {
        c.stream.set_read_timeout(Some(t.timeout)).ok();
        c.stream.set_write_timeout(Some(t.timeout)).ok();
        if c.db != db {
            let r = call(&mut c.stream, &[b"SELECT", db.to_string().as_bytes()]);
            if !matches!(r, Ok(Frame::Simple(_))) {
                st.mgrt_conns.remove(&t.addr);
                return Err(format!("SELECT {db} on {} failed: {r:?}", t.addr));
            }
            c.db = db;
        }
        return Ok(());
    }
    let addr: std::net::SocketAddr = t
        .addr
        .parse()
        .map_err(|e| format!("bad address {}: {e}", t.addr))?;
    let mut stream = TcpStream::connect_timeout(&addr, t.timeout)
        .map_err(|e| format!("connect {}: {e}", t.addr))?;
    stream.set_nodelay(true).ok();
    stream.set_read_timeout(Some(t.timeout)).ok();
    stream.set_write_timeout(Some(t.timeout)).ok();
    if !password.is_empty() {
        match call(&mut stream, &[b"AUTH", password.as_bytes()])? {
            Frame::Simple(_) => {}
            other => return Err(format!("AUTH on {} failed: {other:?}", t.addr)),
        }
    }
    match call(&mut stream, &[b"SELECT", db.to_string().as_bytes()])? {
        Frame::Simple(_) => {}
        other => return Err(format!("SELECT {db} on {} failed: {other:?}", t.addr)),
    }
    st.mgrt_conns.insert(
        t.addr.clone(),
        MgrtConn {
            stream,
            db,
            last_used: now,
        },
    );
    Ok(())
}

/// Moves `keys` (all on this shard, database `db`) to the target. Returns how many moved.
/// On any failure every key stays here whole.
pub fn migrate_keys(
    st: &mut ShardState,
    t: &Target,
    db: usize,
    password: &str,
    keys: &[Bytes],
) -> Result<usize, String> {
    let now = now_ms();
    let mut batch: Vec<(Bytes, u64, Vec<u8>)> = Vec::new();
    for k in keys {
        if let Some(e) = st.dbs[db].get_quiet(k, now) {
            let ttl = if e.expire_at == 0 {
                0
            } else {
                e.expire_at.saturating_sub(now).max(1)
            };
            batch.push((k.clone(), ttl, dump::dump(&e.value)));
        }
    }
    if batch.is_empty() {
        return Ok(0);
    }
    connect(st, t, db, password)?;
    let mut args: Vec<Vec<u8>> = vec![b"SLOTSRESTORE".to_vec()];
    for (k, ttl, p) in &batch {
        args.push(k.to_vec());
        args.push(ttl.to_string().into_bytes());
        args.push(p.clone());
    }
    let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
    let c = st.mgrt_conns.get_mut(&t.addr).expect("connected");
    let r = call(&mut c.stream, &refs);
    match r {
        Ok(Frame::Simple(s)) if &s[..] == b"OK" => {
            c.last_used = Instant::now();
            for (k, _, _) in &batch {
                st.dbs[db].remove(k, now);
                if let Some(a) = st.aof.as_mut() {
                    a.log(db, &[b"DEL", k]);
                }
            }
            if let Some(a) = st.aof.as_mut() {
                a.end_batch();
            }
            Ok(batch.len())
        }
        Ok(other) => {
            st.mgrt_conns.remove(&t.addr);
            Err(format!(
                "target {} refused SLOTSRESTORE: {}",
                t.addr,
                describe(&other)
            ))
        }
        Err(e) => {
            st.mgrt_conns.remove(&t.addr);
            Err(format!("migration to {} failed: {e}", t.addr))
        }
    }
}

fn describe(f: &Frame) -> String {
    match f.as_bytes() {
        Some(b) => String::from_utf8_lossy(b).into_owned(),
        None => format!("{f:?}"),
    }
}

/// SLOTSMGRTONE / SLOTSMGRTTAGONE host port timeout key
pub async fn mgrt_one(
    shard: &Shard,
    db: usize,
    req: &Request,
    tag: bool,
    password: String,
    out: &mut Out,
) {
    let Some(t) = parse_target(req, out) else {
        return;
    };
    let key = req.arg_bytes(4);
    let owner = shard.shard_of(&key);
    let r = shard
        .run_on(owner, move |st| {
            if !st.dbs[db].exists(&key, now_ms()) {
                return Ok(0);
            }
            if crate::slots_async::migrating(st, db, &key) {
                return Err("the specified key is being migrated".to_string());
            }
            let keys = if tag {
                tag_siblings(st, db, &key)
            } else {
                vec![key.clone()]
            };
            migrate_keys(st, &t, db, &password, &keys)
        })
        .await;
    match r {
        Ok(n) => out.int(n as i64),
        Err(e) => out.err(&format!("ERR {e}")),
    }
}

/// SLOTSMGRTSLOT / SLOTSMGRTTAGSLOT host port timeout slot
pub async fn mgrt_slot(
    shard: &Shard,
    db: usize,
    req: &Request,
    tag: bool,
    password: String,
    out: &mut Out,
) {
    let Some(t) = parse_target(req, out) else {
        return;
    };
    let Some(slot) = parse_slot(out, req.arg(4)) else {
        return;
    };
    let owner = slot as usize % shard.nr_shards;
    let r = shard
        .run_on(owner, move |st| {
            let now = now_ms();
            let pick = st.dbs[db].slot_keys(slot).next().map(Key::to_bytes);
            let moved = match pick {
                None => 0,
                Some(k) => {
                    if !st.dbs[db].exists(&k, now) {
                        0
                    } else {
                        let keys = if tag {
                            tag_siblings(st, db, &k)
                        } else {
                            vec![k]
                        };
                        migrate_keys(st, &t, db, &password, &keys)?
                    }
                }
            };
            Ok::<_, String>((moved, st.dbs[db].slot_len(slot)))
        })
        .await;
    match r {
        Ok((moved, left)) => {
            out.array(2);
            out.int(moved as i64);
            out.int(left as i64);
        }
        Err(e) => out.err(&format!("ERR {e}")),
    }
}

/// SLOTSRESTORE key ttl_ms payload [key ttl_ms payload ...]: always replaces.
pub async fn slotsrestore(shard: &Shard, db: usize, req: &Request, out: &mut Out) {
    if !(req.len() - 1).is_multiple_of(3) {
        return out.err("ERR wrong number of arguments for 'slotsrestore' command");
    }
    let mut items: Vec<(Bytes, u64, crate::db::Value)> = Vec::new();
    for i in (1..req.len()).step_by(3) {
        let ttl = match parse_i64(req.arg(i + 1)) {
            Some(t) if t >= 0 => t as u64,
            Some(t) => return out.err(&format!("ERR invalid ttl value = {t}")),
            None => return out.err("ERR value is out of range"),
        };
        match dump::restore(req.arg(i + 2)) {
            Ok(v) => items.push((req.arg_bytes(i), ttl, v)),
            Err(e) => return out.err(e.message()),
        }
    }
    let mut by_shard: Vec<Vec<(Bytes, u64, crate::db::Value)>> =
        (0..shard.nr_shards).map(|_| Vec::new()).collect();
    for it in items {
        let s = shard.shard_of(&it.0);
        by_shard[s].push(it);
    }
    for (s, items) in by_shard.into_iter().enumerate() {
        if items.is_empty() {
            continue;
        }
        shard
            .run_on(s, move |st| {
                let now = now_ms();
                for (k, ttl, v) in items {
                    let mut e = crate::db::Entry::new(v, now);
                    e.expire_at = if ttl == 0 { 0 } else { now + ttl };
                    st.dbs[db].set_entry(&k, e);
                    if let Some(a) = st.aof.as_mut() {
                        a.log_key_state(db, &mut st.dbs[db], &k, now);
                    }
                    crate::blocking::serve_waiters(st, db, &[k]);
                }
                if let Some(a) = st.aof.as_mut() {
                    a.end_batch();
                }
            })
            .await;
    }
    out.ok()
}
