//! Codis's asynchronous ("semi-async") slot migration (codis-spec §2.4, §2.5).
//!
//! Source side: `SLOTSMGRT[TAG]{SLOT,ONE}-ASYNC` picks a batch of keys on the shard that owns
//! them, marks them as migrating (writes to them are refused until the batch ends; reads are
//! served), and streams them to the target as `SLOTSRESTORE-ASYNC` messages over a glommio
//! connection from the caller's shard. Every message is built in a short synchronous step on
//! the owning shard (bounded by `maxbulks` elements and `maxbytes` bytes), so other clients
//! of that shard are served between steps. Small values travel whole (a string, or a DUMP
//! payload); big lists, hashes, sets and sorted sets travel in chunks, each with a temporary
//! TTL of 3 × timeout on the target, and the real TTL comes last. Only when the target has
//! acknowledged every message are the keys deleted here (and `DEL` logged). Any failure leaves
//! every key whole on the source; a retry starts each key with `delete` on the target.
//!
//! Target side: `SLOTSRESTORE-ASYNC{,-AUTH,-SELECT}` answer each message with a
//! `SLOTSRESTORE-ASYNC-ACK errno message` array; an error closes the connection.
//!
//! Differences from codis-server: one connection per batch (not cached per database); writes
//! from ordinary clients to a key being migrated get `-ERR the specified key is being
//! migrated` (codis-server accepts them and can lose them); batches of different databases
//! may run at once, one per database.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rcodis_core::cmd::{self as table, CommandFlags};
use rcodis_core::num::parse_i64;
use rcodis_core::resp::{encode, Frame, FrameDecoder, Request};
use rcodis_core::slot::{has_tag, slot_of, tag_crc, NUM_SLOTS};

use crate::db::{dump, now_ms, Db, Entry, Key, Value};
use crate::out::Out;
use crate::shard::{Shard, ShardState};

/// A running batch, visible to STATUS, FENCE and CANCEL (per database).
#[derive(Debug)]
pub struct BatchInfo {
    pub host: String,
    pub port: u16,
    pub timeout_ms: u64,
    pub started: Instant,
    pub keys: usize,
    pub sent_msgs: AtomicU64,
    pub last_progress_ms: AtomicU64,
    pub cancel: AtomicBool,
    /// The longest synchronous step on the owning shard so far (µs).
    pub longest_step_us: AtomicU64,
}

/// Arguments of a batch.
#[derive(Debug, Clone)]
struct Params {
    host: String,
    port: u16,
    timeout: Duration,
    maxbulks: usize,
    maxbytes: usize,
}

fn bad(out: &mut Out, what: &str, arg: &[u8]) {
    out.err(&format!(
        "ERR invalid value of {what} ({})",
        String::from_utf8_lossy(arg)
    ));
}

fn parse_params(req: &Request, out: &mut Out) -> Option<Params> {
    let host = String::from_utf8_lossy(req.arg(1)).into_owned();
    let port = match parse_i64(req.arg(2)) {
        Some(p) if (1..=65535).contains(&p) => p as u16,
        _ => {
            bad(out, "port", req.arg(2));
            return None;
        }
    };
    let timeout = match parse_i64(req.arg(3)) {
        Some(0) => 30_000,
        Some(t) if t > 0 => t as u64,
        _ => {
            bad(out, "timeout", req.arg(3));
            return None;
        }
    };
    let maxbulks = match parse_i64(req.arg(4)) {
        Some(0) => 200,
        Some(n) if n > 0 => (n as usize).min(512 * 1024),
        _ => {
            bad(out, "maxbulks", req.arg(4));
            return None;
        }
    };
    let maxbytes = match parse_i64(req.arg(5)) {
        Some(0) => 512 * 1024,
        Some(n) if n > 0 => (n as usize).min(i32::MAX as usize / 2),
        _ => {
            bad(out, "maxbytes", req.arg(5));
            return None;
        }
    };
    Some(Params {
        host,
        port,
        timeout: Duration::from_millis(timeout),
        maxbulks,
        maxbytes,
    })
}

/// Where a key's transfer stands.
#[derive(Debug, Clone)]
enum Stage {
    Prepare,
    Whole,
    /// Chunks: next element position (list index, or iteration count for hash/set), or for
    /// zsets the last (score, member) sent (walking from the highest rank down).
    Chunked {
        pos: usize,
        zlast: Option<(f64, Bytes)>,
    },
    FillTtl,
    Done,
}

#[derive(Debug, Clone)]
struct KeyIter {
    key: Bytes,
    stage: Stage,
}

fn msg(out: &mut Vec<u8>, args: &[&[u8]]) {
    encode::write_array_len(out, args.len());
    for a in args {
        encode::write_bulk(out, a);
    }
}

/// Number of "bulks" of a value (codis's big-key measure).
fn bulks(v: &Value) -> usize {
    match v {
        Value::Str(_) => 1,
        Value::List(l) => l.len(),
        Value::Hash(h) => 2 * h.len(),
        Value::Set(s) => s.len(),
        Value::ZSet(z) => 2 * z.len(),
        // Sent whole (Codis has no streams to chunk).
        Value::Stream(_) => 1,
    }
}

fn ttl_of(e: &Entry, now: u64) -> u64 {
    if e.expire_at == 0 {
        0
    } else {
        e.expire_at.saturating_sub(now).max(1)
    }
}

/// Builds messages for `iters` (in order) on the owning shard until `maxbytes` are queued.
/// Returns the messages (each one RESP command) and how many there are.
fn build(d: &mut Db, iters: &mut [KeyIter], p: &Params, budget: usize) -> (Vec<u8>, usize) {
    let now = now_ms();
    let mut buf = Vec::new();
    let mut n = 0;
    let chunk_ttl = (3 * p.timeout.as_millis() as u64).to_string();
    for it in iters.iter_mut() {
        loop {
            if buf.len() >= budget {
                return (buf, n);
            }
            match &mut it.stage {
                Stage::Done => break,
                Stage::Prepare => {
                    msg(&mut buf, &[b"SLOTSRESTORE-ASYNC", b"delete", &it.key]);
                    n += 1;
                    it.stage = match d.get_quiet(&it.key, now) {
                        None => Stage::Done,
                        Some(e) if bulks(&e.value) > p.maxbulks => Stage::Chunked {
                            pos: 0,
                            zlast: None,
                        },
                        Some(_) => Stage::Whole,
                    };
                }
                Stage::Whole => {
                    let Some(e) = d.get_quiet(&it.key, now) else {
                        it.stage = Stage::Done;
                        continue;
                    };
                    let ttl = ttl_of(e, now).to_string();
                    match &e.value {
                        Value::Str(s) => msg(
                            &mut buf,
                            &[b"SLOTSRESTORE-ASYNC", b"string", &it.key, ttl.as_bytes(), s],
                        ),
                        v => {
                            let payload = dump::dump(v);
                            msg(
                                &mut buf,
                                &[
                                    b"SLOTSRESTORE-ASYNC",
                                    b"object",
                                    &it.key,
                                    ttl.as_bytes(),
                                    &payload,
                                ],
                            )
                        }
                    }
                    n += 1;
                    it.stage = Stage::Done;
                }
                Stage::Chunked { pos, zlast } => {
                    let Some(e) = d.get_quiet(&it.key, now) else {
                        it.stage = Stage::Done;
                        continue;
                    };
                    let mut c = Chunker {
                        buf: &mut buf,
                        n: &mut n,
                        key: &it.key,
                        ttl: &chunk_ttl,
                        maxbulks: p.maxbulks,
                        maxbytes: p.maxbytes,
                        budget,
                    };
                    // One pass per step: the iterator is positioned once, then yields as
                    // many chunks as the step's byte budget allows.
                    let (used, last) = match &e.value {
                        Value::List(l) => c.emit(
                            b"list",
                            l.len(),
                            1,
                            &mut l.range(*pos..).map(|x| (x.clone(), None)),
                        ),
                        Value::Hash(h) => c.emit(
                            b"hash",
                            h.len(),
                            2,
                            &mut h
                                .iter()
                                .skip(*pos)
                                .map(|(f, v)| (f.clone(), Some(v.clone()))),
                        ),
                        Value::Set(s) => c.emit(
                            b"dict",
                            s.len(),
                            1,
                            &mut s.iter().skip(*pos).map(|m| (m.clone(), None)),
                        ),
                        Value::ZSet(z) => {
                            let iter: Box<dyn Iterator<Item = &(crate::db::zset::Score, Bytes)>> =
                                match zlast {
                                    None => Box::new(z.tree.iter().rev()),
                                    Some((s, m)) => Box::new(
                                        z.tree
                                            .range(..(crate::db::zset::Score(*s), m.clone()))
                                            .rev(),
                                    ),
                                };
                            c.emit(
                                b"zset",
                                z.len(),
                                2,
                                &mut iter.map(|(s, m)| {
                                    (m.clone(), Some(Bytes::copy_from_slice(&s.0.to_le_bytes())))
                                }),
                            )
                        }
                        Value::Str(_) | Value::Stream(_) => {
                            it.stage = Stage::Whole;
                            continue;
                        }
                    };
                    *pos += used;
                    if let Some((m, Some(score))) = last {
                        if let Ok(raw) = <[u8; 8]>::try_from(&score[..]) {
                            *zlast = Some((f64::from_le_bytes(raw), m));
                        }
                    }
                    if used == 0 || buf.len() < budget {
                        // Exhausted (the budget was not what stopped it).
                        it.stage = Stage::FillTtl;
                    }
                }
                Stage::FillTtl => {
                    let ttl = d
                        .get_quiet(&it.key, now)
                        .map(|e| ttl_of(e, now))
                        .unwrap_or(0)
                        .to_string();
                    msg(
                        &mut buf,
                        &[b"SLOTSRESTORE-ASYNC", b"expire", &it.key, ttl.as_bytes()],
                    );
                    n += 1;
                    it.stage = Stage::Done;
                }
            }
        }
    }
    (buf, n)
}

/// Writes chunk messages of one big value.
struct Chunker<'a> {
    buf: &'a mut Vec<u8>,
    n: &'a mut usize,
    key: &'a [u8],
    ttl: &'a str,
    maxbulks: usize,
    maxbytes: usize,
    budget: usize,
}

impl Chunker<'_> {
    /// Emits chunks of `items` (each `per` bulks: an element, or a field/member with its
    /// value/score) until they run out or the budget is spent. Returns how many items were
    /// sent and the last one.
    #[allow(clippy::type_complexity)]
    fn emit(
        &mut self,
        kind: &[u8],
        hint: usize,
        per: usize,
        items: &mut dyn Iterator<Item = (Bytes, Option<Bytes>)>,
    ) -> (usize, Option<(Bytes, Option<Bytes>)>) {
        let hint = hint.to_string();
        let mut used = 0;
        let mut last = None;
        let mut pending: Option<(Bytes, Option<Bytes>)> = None;
        while self.buf.len() < self.budget {
            let mut args: Vec<Bytes> = Vec::new();
            let mut bytes = 0usize;
            let cap = self.maxbytes.min(self.budget - self.buf.len());
            loop {
                if args.len() + per > self.maxbulks.max(per) || (bytes >= cap && !args.is_empty()) {
                    break;
                }
                let Some((a, b)) = pending.take().or_else(|| items.next()) else {
                    break;
                };
                bytes += a.len() + b.as_ref().map_or(0, |b| b.len());
                args.push(a.clone());
                if let Some(b) = &b {
                    args.push(b.clone());
                }
                last = Some((a, b));
                used += 1;
            }
            if args.is_empty() {
                break;
            }
            let mut all: Vec<&[u8]> = vec![
                b"SLOTSRESTORE-ASYNC",
                kind,
                self.key,
                self.ttl.as_bytes(),
                hint.as_bytes(),
            ];
            all.extend(args.iter().map(|a| &a[..]));
            msg(self.buf, &all);
            *self.n += 1;
        }
        (used, last)
    }
}

/// The keys a batch starts with: for a slot, keys of the slot until `numkeys` (with their tag
/// siblings when `tag`); for keys, those that exist (and siblings).
fn pick(
    st: &ShardState,
    db: usize,
    slot: Option<u16>,
    keys: &[Bytes],
    numkeys: usize,
    tag: bool,
) -> Vec<Bytes> {
    let d = &st.dbs[db];
    let mut chosen: Vec<Bytes> = Vec::new();
    // Tag groups are found once per tag; only untagged keys need a duplicate check.
    let mut crcs_done: hashbrown::HashSet<u32> = hashbrown::HashSet::new();
    let mut seen: hashbrown::HashSet<Bytes> = hashbrown::HashSet::new();
    let mut add = |k: &Bytes, chosen: &mut Vec<Bytes>| {
        if tag && has_tag(k) {
            let crc = tag_crc(k);
            if crcs_done.insert(crc) {
                chosen.extend(
                    d.slot_keys(slot_of(k))
                        .filter(|x| has_tag(x) && tag_crc(x) == crc)
                        .map(Key::to_bytes),
                );
            }
        } else if seen.insert(k.clone()) {
            chosen.push(k.clone());
        }
    };
    match slot {
        Some(s) => {
            let candidates: Vec<Bytes> = d.slot_keys(s).take(numkeys).map(Key::to_bytes).collect();
            for k in &candidates {
                if chosen.len() >= numkeys {
                    break;
                }
                add(k, &mut chosen);
            }
        }
        None => {
            for k in keys {
                if d.slot_len(slot_of(k)) > 0 && d.slot_keys(slot_of(k)).any(|x| x == k) {
                    add(k, &mut chosen);
                }
            }
        }
    }
    chosen
}

/// A connection to the target speaking RESP.
struct Link {
    stream: glommio::net::TcpStream,
    buf: BytesMut,
    dec: FrameDecoder,
}

impl Link {
    async fn connect(p: &Params) -> Result<Link, String> {
        let addr = format!("{}:{}", p.host, p.port);
        let sa: std::net::SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&addr)
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("create client to {addr} failed"))?;
        let stream = glommio::net::TcpStream::connect_timeout(
            sa,
            p.timeout.min(Duration::from_millis(1000)),
        )
        .await
        .map_err(|e| format!("create client to {addr} failed: {e}"))?;
        stream.set_nodelay(true).ok();
        stream.set_read_timeout(Some(p.timeout)).ok();
        stream.set_write_timeout(Some(p.timeout)).ok();
        Ok(Link {
            stream,
            buf: BytesMut::new(),
            dec: FrameDecoder::default(),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("write to target: {e}"))
    }

    async fn read(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf).map_err(|e| e.to_string())? {
                return Ok(f);
            }
            let mut tmp = vec![0u8; 16 * 1024];
            let n = self
                .stream
                .read(&mut tmp)
                .await
                .map_err(|e| format!("read from target: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Reads one ACK; Ok(()) when its errno is 0.
    async fn ack(&mut self) -> Result<(), String> {
        let f = self.read().await?;
        let parts = match &f {
            Frame::Array(v) if v.len() == 3 => v,
            Frame::Error(e) => return Err(format!("target: {}", String::from_utf8_lossy(e))),
            other => return Err(format!("unexpected reply from target: {other:?}")),
        };
        let errno = parts[1].as_bytes().and_then(|b| parse_i64(b));
        if errno == Some(0) {
            Ok(())
        } else {
            let m = parts[2]
                .as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(format!("ack[{}] {m}", errno.unwrap_or(-1)))
        }
    }
}

/// SLOTSMGRTSLOT-ASYNC / SLOTSMGRTTAGSLOT-ASYNC host port timeout maxbulks maxbytes slot
/// numkeys, and SLOTSMGRTONE-ASYNC / SLOTSMGRTTAGONE-ASYNC host port timeout maxbulks
/// maxbytes key [key ...].
pub async fn mgrt_async(
    shard: &Rc<Shard>,
    db: usize,
    req: &Request,
    tag: bool,
    by_slot: bool,
    password: String,
    out: &mut Out,
) {
    let Some(p) = parse_params(req, out) else {
        return;
    };
    let (slot, numkeys, keys) = if by_slot {
        let slot = match parse_i64(req.arg(6)) {
            Some(s) if (0..NUM_SLOTS as i64).contains(&s) => s as u16,
            _ => return bad(out, "slot", req.arg(6)),
        };
        let numkeys = match parse_i64(req.arg(7)) {
            Some(0) => 100,
            Some(n) if n > 0 => n as usize,
            _ => return bad(out, "numkeys", req.arg(7)),
        };
        (Some(slot), numkeys, Vec::new())
    } else {
        let keys: Vec<Bytes> = (6..req.len()).map(|i| req.arg_bytes(i)).collect();
        (None, keys.len(), keys)
    };
    let info = Arc::new(BatchInfo {
        host: p.host.clone(),
        port: p.port,
        timeout_ms: p.timeout.as_millis() as u64,
        started: Instant::now(),
        keys: 0,
        sent_msgs: AtomicU64::new(0),
        last_progress_ms: AtomicU64::new(now_ms()),
        cancel: AtomicBool::new(false),
        longest_step_us: AtomicU64::new(0),
    });
    {
        let mut reg = shard.shared.mgrt_async.lock().expect("mgrt lock");
        if reg.contains_key(&db) {
            return out.err("ERR the specified DB is being migrated");
        }
        reg.insert(db, info.clone());
    }
    // Owners: one shard for a slot; the keys' shards for the ONE variants (in turn).
    let mut owners: Vec<(usize, Vec<Bytes>)> = Vec::new();
    match slot {
        Some(s) => owners.push((s as usize % shard.nr_shards, Vec::new())),
        None => {
            for k in keys {
                let o = shard.shard_of(&k);
                match owners.iter_mut().find(|(x, _)| *x == o) {
                    Some((_, v)) => v.push(k),
                    None => owners.push((o, vec![k])),
                }
            }
        }
    }
    let mut moved = 0usize;
    let mut remaining = 0usize;
    let mut failure = None;
    for (owner, keys) in owners {
        match run_batch(
            shard, owner, db, slot, keys, numkeys, tag, &p, &password, &info,
        )
        .await
        {
            Ok((m, r)) => {
                moved += m;
                remaining = r;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    shard
        .shared
        .mgrt_async
        .lock()
        .expect("mgrt lock")
        .remove(&db);
    tracing::info!(
        db,
        to = %format!("{}:{}", p.host, p.port),
        moved,
        messages = info.sent_msgs.load(Ordering::Relaxed),
        ms = info.started.elapsed().as_millis() as u64,
        longest_step_us = info.longest_step_us.load(Ordering::Relaxed),
        error = failure.as_deref().unwrap_or(""),
        "async migration batch"
    );
    if let Some(e) = failure {
        return out.err(&format!("ERR interrupted: {e}"));
    }
    if by_slot {
        out.array(2);
        out.int(moved as i64);
        out.int(remaining as i64);
    } else {
        out.int(moved as i64);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_batch(
    shard: &Rc<Shard>,
    owner: usize,
    db: usize,
    slot: Option<u16>,
    keys: Vec<Bytes>,
    numkeys: usize,
    tag: bool,
    p: &Params,
    password: &str,
    info: &Arc<BatchInfo>,
) -> Result<(usize, usize), String> {
    // Pick the keys and mark them migrating, in one step on the owner.
    let chosen = shard
        .run_on(owner, move |st| {
            let t = Instant::now();
            let chosen = pick(st, db, slot, &keys, numkeys, tag);
            if !chosen.is_empty() {
                let mut m = Migrating::default();
                for k in &chosen {
                    if has_tag(k) {
                        m.tags.insert(tag_crc(k));
                    } else {
                        m.keys.insert(k.clone());
                    }
                }
                st.mgrt_keys.insert(db, m);
            }
            (chosen, t.elapsed())
        })
        .await;
    let (chosen, took) = chosen;
    info.longest_step_us
        .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
    let slot_len = move |st: &mut ShardState| slot.map(|s| st.dbs[db].slot_len(s)).unwrap_or(0);
    if chosen.is_empty() {
        return Ok((0, shard.run_on(owner, slot_len).await));
    }
    let result = transfer(shard, owner, db, &chosen, p, password, info).await;
    let chosen_n = chosen.len();
    let ok = result.is_ok();
    if ok {
        // Delete in slices, letting client requests in between (the keys stay marked
        // migrating, so nobody writes them meanwhile); big values are freed off-thread.
        for part in chosen.chunks(1000) {
            let part = part.to_vec();
            let took = shard
                .run_on(owner, move |st| {
                    let t = Instant::now();
                    let now = now_ms();
                    for k in &part {
                        if let Some(e) = st.dbs[db].remove(k, now) {
                            if let Some(a) = st.aof.as_mut() {
                                a.log(db, &[b"DEL", k]);
                            }
                            if bulks(&e.value) > 64 {
                                lazy_free(e);
                            }
                        }
                    }
                    if let Some(a) = st.aof.as_mut() {
                        a.end_batch();
                    }
                    t.elapsed()
                })
                .await;
            info.longest_step_us
                .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
            glommio::yield_if_needed().await;
        }
    }
    let remaining = shard
        .run_on(owner, move |st| {
            st.mgrt_keys.remove(&db);
            slot_len(st)
        })
        .await;
    result.map(|()| (chosen_n, remaining))
}

async fn transfer(
    shard: &Rc<Shard>,
    owner: usize,
    db: usize,
    chosen: &[Bytes],
    p: &Params,
    password: &str,
    info: &Arc<BatchInfo>,
) -> Result<(), String> {
    let mut link = Link::connect(p).await?;
    let mut hello = Vec::new();
    let mut expect = 0;
    if !password.is_empty() {
        msg(
            &mut hello,
            &[b"SLOTSRESTORE-ASYNC-AUTH", password.as_bytes()],
        );
        expect += 1;
    }
    msg(
        &mut hello,
        &[b"SLOTSRESTORE-ASYNC-SELECT", db.to_string().as_bytes()],
    );
    expect += 1;
    link.send(&hello).await?;
    for _ in 0..expect {
        link.ack().await?;
    }
    let mut iters: Vec<KeyIter> = chosen
        .iter()
        .map(|k| KeyIter {
            key: k.clone(),
            stage: Stage::Prepare,
        })
        .collect();
    loop {
        if info.cancel.load(Ordering::Relaxed) {
            return Err("canceled".into());
        }
        let params = p.clone();
        let (bytes, n, back) = shard
            .run_on(owner, move |st| {
                let t = Instant::now();
                let mut iters = iters;
                // A step builds at most 128 KiB of messages: short pauses for other clients.
                let (bytes, n) = build(
                    &mut st.dbs[db],
                    &mut iters,
                    &params,
                    params.maxbytes.min(128 << 10),
                );
                (bytes, n, (iters, t.elapsed()))
            })
            .await;
        let (back, took) = back;
        info.longest_step_us
            .fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        iters = back;
        if n == 0 {
            return Ok(());
        }
        link.send(&bytes).await?;
        for _ in 0..n {
            link.ack().await?;
        }
        info.sent_msgs.fetch_add(n as u64, Ordering::Relaxed);
        info.last_progress_ms.store(now_ms(), Ordering::Relaxed);
        // Client requests first: the migration only takes what is left over.
        glommio::yield_if_needed().await;
    }
}

/// SLOTSMGRTONE-ASYNC-DUMP / SLOTSMGRTTAGONE-ASYNC-DUMP timeout maxbulks key [key ...]:
/// the messages a migration of these keys would send (nothing is sent or deleted).
pub async fn async_dump(shard: &Shard, db: usize, req: &Request, tag: bool, out: &mut Out) {
    let timeout = match parse_i64(req.arg(1)) {
        Some(0) => 30_000,
        Some(t) if t > 0 => t as u64,
        _ => return bad(out, "timeout", req.arg(1)),
    };
    let maxbulks = match parse_i64(req.arg(2)) {
        Some(0) => 200,
        Some(n) if n > 0 => (n as usize).min(512 * 1024),
        _ => return bad(out, "maxbulks", req.arg(2)),
    };
    let p = Params {
        host: String::new(),
        port: 0,
        timeout: Duration::from_millis(timeout),
        maxbulks,
        maxbytes: usize::MAX,
    };
    let keys: Vec<Bytes> = (3..req.len()).map(|i| req.arg_bytes(i)).collect();
    let mut all = Vec::new();
    let mut total = 0;
    for owner in 0..shard.nr_shards {
        let mine: Vec<Bytes> = keys
            .iter()
            .filter(|k| shard.shard_of(k) == owner)
            .cloned()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let p = p.clone();
        let (bytes, n) = shard
            .run_on(owner, move |st| {
                let chosen = pick(st, db, None, &mine, mine.len(), tag);
                let mut iters: Vec<KeyIter> = chosen
                    .into_iter()
                    .map(|key| KeyIter {
                        key,
                        stage: Stage::Prepare,
                    })
                    .collect();
                build(&mut st.dbs[db], &mut iters, &p, usize::MAX)
            })
            .await;
        all.extend_from_slice(&bytes);
        total += n;
    }
    out.array(total);
    out.buf.extend_from_slice(&all);
}

/// Drops a big value on a background thread (as codis's lazy release): freeing millions of
/// elements would stall the shard.
fn lazy_free(e: Entry) {
    static TX: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Entry>>> =
        std::sync::OnceLock::new();
    let tx = TX.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Entry>();
        let _ = std::thread::Builder::new()
            .name("rcodis-lazyfree".into())
            .spawn(move || rx.into_iter().for_each(drop));
        std::sync::Mutex::new(tx)
    });
    if let Ok(tx) = tx.lock() {
        let _ = tx.send(e);
    }
}

/// SLOTSMGRT-ASYNC-FENCE: waits until no batch runs in the caller's database.
pub async fn fence(shard: &Shard, db: usize, out: &mut Out) {
    loop {
        if !shard
            .shared
            .mgrt_async
            .lock()
            .expect("mgrt lock")
            .contains_key(&db)
        {
            return out.ok();
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// SLOTSMGRT-ASYNC-CANCEL: stops the batch of the caller's database (its caller gets
/// `interrupted: canceled`); 1 if there was one.
pub fn cancel(shard: &Shard, db: usize, out: &mut Out) {
    let reg = shard.shared.mgrt_async.lock().expect("mgrt lock");
    match reg.get(&db) {
        Some(b) => {
            b.cancel.store(true, Ordering::Relaxed);
            out.int(1)
        }
        None => out.int(0),
    }
}

/// SLOTSMGRT-ASYNC-STATUS: nil, or a flat name/value list.
pub fn status(shard: &Shard, db: usize, out: &mut Out) {
    let reg = shard.shared.mgrt_async.lock().expect("mgrt lock");
    let Some(b) = reg.get(&db) else {
        return out.null();
    };
    let now = now_ms();
    let last = b.last_progress_ms.load(Ordering::Relaxed);
    out.array(14);
    out.bulk(b"host");
    out.bulk(b.host.as_bytes());
    out.bulk(b"port");
    out.int(b.port as i64);
    out.bulk(b"used");
    out.int(1);
    out.bulk(b"timeout");
    out.int(b.timeout_ms as i64);
    out.bulk(b"lastuse");
    out.int(last as i64);
    out.bulk(b"since_lastuse");
    out.int(now.saturating_sub(last) as i64);
    out.bulk(b"sending_msgs");
    out.int(b.sent_msgs.load(Ordering::Relaxed) as i64);
}

/// SLOTSMGRT-EXEC-WRAPPER hashkey command [arg ...] (codis-spec §2.5).
pub async fn exec_wrapper(shard: &Shard, db: usize, resp3: bool, req: &Request, out: &mut Out) {
    let hashkey = req.arg_bytes(1);
    let inner_args: Vec<&[u8]> = (2..req.len()).map(|i| req.arg(i)).collect();
    let inner = Request::from_args(&inner_args);
    let spec = match table::resolve_request(&inner) {
        Ok(s) if crate::cmd::handler(s).is_some() => s,
        Ok(s) => {
            out.array(2);
            out.int(-1);
            return out.err(&format!(
                "ERR command '{}' is not supported by SLOTSMGRT-EXEC-WRAPPER",
                s.name
            ));
        }
        Err(e) => {
            out.array(2);
            out.int(-1);
            return out.err(e.message());
        }
    };
    let owner = shard.shard_of(&hashkey);
    let keys_elsewhere = {
        let args: Vec<&[u8]> = inner.args().collect();
        match table::key_indexes(spec, &args, false) {
            Ok(idx) => idx.iter().any(|&i| shard.shard_of(args[i]) != owner),
            Err(_) => false,
        }
    };
    if keys_elsewhere {
        out.array(2);
        out.int(-1);
        return out.err("ERR the command's keys are not on the shard of the hash key");
    }
    let write = spec.has(CommandFlags::WRITE);
    let (code, body) = shard
        .run_on(owner, move |st| {
            let now = now_ms();
            if !st.dbs[db].exists(&hashkey, now) {
                let mut o = Out::new(resp3);
                o.err("ERR the specified key doesn't exist");
                return (0, o.buf);
            }
            if write && migrating(st, db, &hashkey) {
                let mut o = Out::new(resp3);
                o.err("ERR the specified key is being migrated");
                return (1, o.buf);
            }
            let mut o = Out::new(resp3);
            let mut clock = crate::exec::Clock::start();
            crate::exec::exec_local(st, db, spec, &inner, &mut o, &mut clock, None);
            (2, o.buf)
        })
        .await;
    out.array(2);
    out.int(code);
    out.buf.extend_from_slice(&body);
}

/// The keys of a running batch: untagged ones by name, tagged ones by their tag's CRC (so
/// every sibling counts, as codis matches tags).
#[derive(Debug, Default)]
pub struct Migrating {
    keys: HashSet<Bytes>,
    tags: HashSet<u32>,
}

/// Whether `key` (or, tag-aware, a key sharing its tag) is in this database's running batch.
pub fn migrating(st: &ShardState, db: usize, key: &[u8]) -> bool {
    let Some(m) = st.mgrt_keys.get(&db) else {
        return false;
    };
    if has_tag(key) {
        m.tags.contains(&tag_crc(key))
    } else {
        m.keys.contains(key)
    }
}

/// Target side: SLOTSRESTORE-ASYNC <op> ... Returns the ACK (errno, message); a non-zero
/// errno means the connection must close after the reply.
pub async fn restore_async(shard: &Shard, db: usize, req: &Request) -> (i64, String) {
    let wrong = || {
        (
            1,
            format!(
                "wrong number of arguments (argc={},cmd={})",
                req.len(),
                String::from_utf8_lossy(req.get(1).unwrap_or(b""))
            ),
        )
    };
    if req.len() < 3 {
        return wrong();
    }
    let op = req.arg(1).to_ascii_lowercase();
    let key = req.arg_bytes(2);
    let parse_ttl = |i: usize| -> Result<u64, (i64, String)> {
        match parse_i64(req.arg(i)) {
            Some(t) if t >= 0 => Ok(t as u64),
            _ => Err((
                1,
                format!(
                    "invalid TTL value (TTL={})",
                    String::from_utf8_lossy(req.arg(i))
                ),
            )),
        }
    };
    let kname = String::from_utf8_lossy(&key).into_owned();
    enum Op {
        Delete,
        Whole(Value),
        Chunk(&'static str, Vec<Bytes>),
        Expire,
    }
    let (ttl, op) = match &op[..] {
        b"delete" if req.len() == 3 => (0, Op::Delete),
        b"string" if req.len() == 5 => match parse_ttl(3) {
            Ok(t) => (t, Op::Whole(Value::Str(req.arg_bytes(4)))),
            Err(e) => return e,
        },
        b"object" if req.len() == 5 => {
            let t = match parse_ttl(3) {
                Ok(t) => t,
                Err(e) => return e,
            };
            match dump::restore(req.arg(4)) {
                Ok(v) => (t, Op::Whole(v)),
                Err(e) => return (1, format!("invalid payload ({})", e.message())),
            }
        }
        b"expire" if req.len() == 4 => match parse_ttl(3) {
            Ok(t) => (t, Op::Expire),
            Err(e) => return e,
        },
        b"list" | b"hash" | b"dict" | b"zset" if req.len() >= 5 => {
            let t = match parse_ttl(3) {
                Ok(t) => t,
                Err(e) => return e,
            };
            if parse_i64(req.arg(4)).is_none_or(|h| h < 0) {
                return (
                    1,
                    format!(
                        "invalid Hint value (Hint={})",
                        String::from_utf8_lossy(req.arg(4))
                    ),
                );
            }
            let elems: Vec<Bytes> = (5..req.len()).map(|i| req.arg_bytes(i)).collect();
            let kind = match &op[..] {
                b"list" => "list",
                b"hash" => "hash",
                b"dict" => "set",
                _ => "zset",
            };
            if (kind == "hash" || kind == "zset") && !elems.len().is_multiple_of(2) {
                return wrong();
            }
            if kind == "zset" {
                for (i, s) in elems.iter().skip(1).step_by(2).enumerate() {
                    if s.len() != 8
                        || f64::from_le_bytes(s[..].try_into().unwrap_or([0; 8])).is_nan()
                    {
                        return (1, format!("invalid zset score ([{i}]), bad raw bits"));
                    }
                }
            }
            (t, Op::Chunk(kind, elems))
        }
        b"delete" | b"string" | b"object" | b"expire" | b"list" | b"hash" | b"dict" | b"zset" => {
            return wrong()
        }
        _ => {
            return (
                1,
                format!(
                    "unknown command (argc={},cmd={})",
                    req.len(),
                    String::from_utf8_lossy(req.arg(1))
                ),
            )
        }
    };
    let owner = shard.shard_of(&key);
    shard
        .run_on(owner, move |st| {
            let now = now_ms();
            let d = &mut st.dbs[db];
            let mut log: Vec<Vec<Bytes>> = Vec::new();
            let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
            let reply = match op {
                Op::Delete => {
                    let gone = d.remove(&key, now).is_some();
                    if gone {
                        log.push(vec![b("DEL"), key.clone()]);
                    }
                    if gone { "1" } else { "0" }.to_string()
                }
                Op::Whole(v) => {
                    if d.exists(&key, now) {
                        return (1, format!("the specified key already exists ({kname})"));
                    }
                    d.set(&key, v, now);
                    "1".to_string()
                }
                Op::Expire => {
                    if !d.exists(&key, now) {
                        return (1, format!("the specified key doesn't exist ({kname})"));
                    }
                    "1".to_string()
                }
                Op::Chunk(kind, elems) => {
                    let existing = d.get(&key, now).map(|e| e.value.type_name());
                    match existing {
                        None if elems.is_empty() => {
                            return (1, format!("the specified key doesn't exist ({kname})"))
                        }
                        None => d.set(
                            &key,
                            match kind {
                                "list" => Value::List(Default::default()),
                                "hash" => Value::Hash(Default::default()),
                                "set" => Value::Set(Default::default()),
                                _ => Value::ZSet(Default::default()),
                            },
                            now,
                        ),
                        Some(t) if t != kind => {
                            return (1, format!("wrong type (expect={kind},got={t})"))
                        }
                        Some(_) => {}
                    }
                    let e = d.get(&key, now).expect("just made");
                    let len = match &mut e.value {
                        Value::List(l) => {
                            l.extend(elems.iter().cloned());
                            log.push([vec![b("RPUSH"), key.clone()], elems].concat());
                            l.len()
                        }
                        Value::Hash(h) => {
                            for pair in elems.chunks_exact(2) {
                                h.insert(pair[0].clone(), pair[1].clone());
                            }
                            log.push([vec![b("HSET"), key.clone()], elems].concat());
                            h.len()
                        }
                        Value::Set(s) => {
                            for m in &elems {
                                s.insert(m.clone());
                            }
                            log.push([vec![b("SADD"), key.clone()], elems].concat());
                            s.len()
                        }
                        Value::ZSet(z) => {
                            let mut args = vec![b("ZADD"), key.clone()];
                            for pair in elems.chunks_exact(2) {
                                let s =
                                    f64::from_le_bytes(pair[1][..].try_into().unwrap_or([0; 8]));
                                z.insert(pair[0].clone(), s);
                                args.push(b(&crate::out::fmt_g17(s)));
                                args.push(pair[0].clone());
                            }
                            log.push(args);
                            z.len()
                        }
                        Value::Str(_) | Value::Stream(_) => 0,
                    };
                    d.touch_watched(&key);
                    len.to_string()
                }
            };
            // Every message but `delete` ends by setting or clearing the TTL.
            let is_delete =
                log.first().is_some_and(|a| &a[0][..] == b"DEL") || !d.exists(&key, now);
            if !is_delete {
                let at = if ttl == 0 { 0 } else { now + ttl };
                d.set_expire(&key, at, now);
            }
            if let Some(a) = st.aof.as_mut() {
                let d = &mut st.dbs[db];
                if log.is_empty() {
                    a.log_key_state(db, d, &key, now);
                } else {
                    for args in &log {
                        let refs: Vec<&[u8]> = args.iter().map(|x| &x[..]).collect();
                        a.log(db, &refs);
                    }
                    if !is_delete {
                        match d.get_quiet(&key, now).map(|e| e.expire_at) {
                            Some(0) => a.log(db, &[b"PERSIST", &key]),
                            Some(at) => a.log_ttl(db, &key, at),
                            None => {}
                        }
                    }
                }
                a.end_batch();
            }
            crate::blocking::serve_waiters(st, db, std::slice::from_ref(&key));
            (0, reply)
        })
        .await
}

/// Writes an ACK as codis does: a `SLOTSRESTORE-ASYNC-ACK errno message` array.
pub fn ack(out: &mut Out, errno: i64, message: &str) {
    out.array(3);
    out.bulk(b"SLOTSRESTORE-ASYNC-ACK");
    out.bulk(errno.to_string().as_bytes());
    out.bulk(message.as_bytes());
}
