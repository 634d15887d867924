//! One client session: decode every buffered request, route each, queue on this shard's
//! backend connections, then reply in request order (raw backend bytes where no merge is
//! needed).

use std::rc::Rc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::oneshot;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rcodis_core::cmd::{self as table, CommandSpec, SplitKind};
use rcodis_core::num::parse_i64;
use rcodis_core::resp::encode as enc;
use rcodis_core::resp::{Frame, Limits, Request, RequestDecoder, RequestView};

use crate::backend::{parse, Reply};
use crate::router::{route, Plan};
use crate::Shard;

/// Marks a request of a batch whose reply is not a plain batch-sink copy (sink indices stay
/// far below it: a batch holds at most `session_max_pipeline` requests).
const SLOW: u32 = 1 << 31;

/// A reply slot of the current batch, filled in order.
enum Slot {
    Ready(Bytes),
    /// A reply slot of the session's batch sink.
    Batch(u32),
    One(oneshot::Receiver<Reply>),
    /// A reply on a connection of its own (blocking commands); closed once answered.
    Dedicated(crate::backend::Dedicated, oneshot::Receiver<Reply>),
    Split(
        SplitKind,
        Vec<(oneshot::Receiver<Reply>, Vec<usize>)>,
        usize,
    ),
    Fanout(&'static str, Vec<oneshot::Receiver<Reply>>, Box<Request>),
    /// The request's slot is locked (migration phase 1): it waits for the next table, in a
    /// batch of its own, outside the epoch drain.
    Locked(Box<Request>, u16),
    /// MULTI, the queued commands, EXEC: the reply is EXEC's.
    Multi(Vec<oneshot::Receiver<Reply>>),
}

struct Session {
    shard: Rc<Shard>,
    id: u64,
    db: u16,
    authed: bool,
    name: Bytes,
    /// CLIENT SETINFO's library name and version (shown by CLIENT INFO).
    lib_name: Bytes,
    lib_ver: Bytes,
    /// The session as CLIENT LIST sees it (address, socket, age, and a copy of the state).
    entry: std::sync::Arc<crate::clients::Entry>,
    /// A command may have changed what `entry` shows: copy it there after the command.
    dirty: bool,
    close: bool,
    txn: crate::txn::Txn,
    pubsub: Option<PubSub>,
    /// The client switched to RESP3 (HELLO 3): its requests use RESP3 backend connections.
    resp3: bool,
    /// Where the current batch's forwarded replies land.
    sink: Rc<crate::backend::BatchSink>,
    /// The command id of the request being handled (for statistics).
    cur_cmd: u16,
    /// The last command resolved: pipelines repeat commands, and comparing the name costs
    /// less than a table lookup.
    last_spec: Option<&'static CommandSpec>,
    /// Which of the shard's connection sets this session uses.
    conn_set: usize,
}

/// A subscribed session: its channels (each on its slot's master) and patterns (on every
/// backend), the subscriber connections, and where their messages arrive.
struct PubSub {
    channels: std::collections::BTreeMap<Bytes, (bool, Rc<str>)>,
    patterns: std::collections::BTreeSet<Bytes>,
    subs: std::collections::HashMap<Rc<str>, crate::backend::Subscriber>,
    tx: futures::channel::mpsc::UnboundedSender<Bytes>,
    rx: futures::channel::mpsc::UnboundedReceiver<Bytes>,
    epoch: u64,
}

impl PubSub {
    fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

fn err(msg: &str) -> Bytes {
    let mut b = Vec::with_capacity(msg.len() + 3);
    enc::write_error(&mut b, msg.as_bytes());
    Bytes::from(b)
}

fn simple(s: &str) -> Bytes {
    let mut b = Vec::new();
    enc::write_simple(&mut b, s.as_bytes());
    Bytes::from(b)
}

fn frame(f: &Frame) -> Bytes {
    Bytes::from(rcodis_core::resp::to_vec(f))
}

/// Whether a request is a blocking command (BLPOP, BZPOPMIN, ...).
fn is_blocking(req: &Request) -> bool {
    table::lookup(req.arg(0)).is_some_and(|spec| spec.has(rcodis_core::cmd::CommandFlags::BLOCKING))
}

/// Counts a session in INFO's blocked_clients (and flags it in CLIENT LIST) for as long as
/// it lives.
struct Blocked<'a>(
    &'a std::sync::atomic::AtomicUsize,
    &'a std::sync::atomic::AtomicBool,
);

impl<'a> Blocked<'a> {
    fn count(
        n: &'a std::sync::atomic::AtomicUsize,
        flag: &'a std::sync::atomic::AtomicBool,
    ) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        flag.store(true, Ordering::Relaxed);
        Blocked(n, flag)
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.store(false, Ordering::Relaxed);
    }
}

/// Serves one client connection until it closes.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let shared = shard.shared.clone();
    let n = shared.clients.fetch_add(1, Ordering::Relaxed) + 1;
    if n > shared.config.max_clients {
        shared.clients.fetch_sub(1, Ordering::Relaxed);
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "rejecting client: max_clients ({}) reached",
            shared.config.max_clients
        );
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    }
    let _ = stream.set_nodelay(true);
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    // Removed from the registry before the stream (a parameter) closes.
    let registered = shared.sessions.register(crate::clients::Entry {
        id,
        addr: stream
            .peer_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string().into()),
        laddr: stream
            .local_addr()
            .map_or_else(|_| "?".into(), |a| a.to_string().into()),
        fd: std::os::fd::AsRawFd::as_raw_fd(&stream),
        since: std::time::Instant::now(),
        state: std::sync::Mutex::new(crate::clients::State {
            resp: 2,
            multi: -1,
            ..Default::default()
        }),
        last_cmd: std::sync::atomic::AtomicU32::new(crate::stats::UNKNOWN as u32),
        last_ticks: std::sync::atomic::AtomicU64::new(0),
        blocked: std::sync::atomic::AtomicBool::new(false),
    });
    let mut s = Session {
        shard: shard.clone(),
        id,
        db: 0,
        authed: shared.config.session_auth.is_empty(),
        name: Bytes::new(),
        lib_name: Bytes::new(),
        lib_ver: Bytes::new(),
        entry: registered.entry.clone(),
        dirty: false,
        close: false,
        txn: Default::default(),
        pubsub: None,
        resp3: false,
        sink: Rc::default(),
        cur_cmd: crate::stats::UNKNOWN,
        last_spec: None,
        conn_set: 0,
    };
    s.conn_set = (s.id % shared.config.backend_connections.max(1) as u64) as usize;
    // Idle clients are closed by the shard's sweeper (lib.rs), which this mark tells of the
    // session's activity. Dropped before the stream (a parameter), so the sweeper never
    // shuts down a descriptor this session no longer owns.
    let idle_mark = (shared.config.session_idle_timeout_secs > 0).then(|| {
        let m = Rc::new(crate::IdleMark {
            id: s.id,
            fd: std::os::fd::AsRawFd::as_raw_fd(&stream),
            last: std::cell::Cell::new(shard.clock_s.get()),
            exempt: std::cell::Cell::new(false),
        });
        shard.idle.borrow_mut().push(Rc::downgrade(&m));
        m
    });
    let stats = &shared.stats[shard.id];
    let limits = Limits {
        max_bulk_len: shared.config.max_request_bytes,
        ..Limits::default()
    };
    let mut dec = RequestDecoder::new(limits);
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut tmp = vec![0u8; 16 * 1024];
    let max_batch = shared.config.session_max_pipeline.max(1);
    let mut pending: Option<Request> = None;
    // Reused by every batch.
    // Per request of a batch, in order: its batch-sink index, or SLOW | its index in `slots`
    // (replies that need more than a copy from the sink).
    let mut order: Vec<u32> = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    let mut ids: Vec<u16> = Vec::new();
    let mut marks: Vec<(u16, usize)> = Vec::new();
    let mut out = BytesMut::with_capacity(16 * 1024);
    'conn: loop {
        if let Some(m) = &idle_mark {
            // Subscribers may stay quiet for as long as they like.
            m.exempt.set(s.pubsub.is_some());
        }
        let n = if s.pubsub.is_some() {
            // Subscribed: published messages come in between the client's commands.
            match s.next_input(&mut stream, &mut tmp).await {
                Input::Read(n) => n,
                Input::Message(m) => {
                    let m = s.push(m);
                    if stream.write_all(&m).await.is_err() {
                        break;
                    }
                    continue;
                }
                Input::Tick => continue,
                Input::Closed => break,
            }
        } else {
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            }
        };
        if let Some(m) = &idle_mark {
            m.last.set(shard.clock_s.get());
        }
        rbuf.extend_from_slice(&tmp[..n]);
        loop {
            // At most session_max_pipeline requests in flight: the rest wait in the buffer.
            shard.refresh();
            let mut batch_epoch = Some(shard.begin_batch());
            let t0 = rcodis_core::clock::ticks();
            order.clear();
            slots.clear();
            ids.clear();
            marks.clear();
            out.clear();
            let mut protocol_error = None;
            let mut stopped_early = false;
            // Bytes of requests taken straight from `rbuf`, dropped from it at once.
            let mut consumed = 0;
            while order.len() < max_batch {
                let req = match pending.take() {
                    Some(r) => r,
                    None => {
                        // The common case straight from the read buffer: no owned copy of
                        // the request (its reference count) at all.
                        let fast = dec
                            .peek(&rbuf[consumed..])
                            .and_then(|(req, n)| s.fast(&req).map(|slot| (slot, n)));
                        if let Some((i, n)) = fast {
                            consumed += n;
                            order.push(i);
                            ids.push(s.cur_cmd);
                            continue;
                        }
                        rbuf.advance(std::mem::take(&mut consumed));
                        match dec.decode(&mut rbuf) {
                            Ok(Some(req)) => req,
                            Ok(None) => break,
                            Err(e) => {
                                protocol_error = Some(e);
                                break;
                            }
                        }
                    }
                };
                // A blocking command runs after everything before it and before anything after
                // it, as on one Redis connection: it waits for a batch of its own (its own
                // connection could otherwise overtake the shared pipeline, or be overtaken).
                let blocking = s.txn.multi.is_none() && s.pubsub.is_none() && is_blocking(&req);
                if blocking && !order.is_empty() {
                    pending = Some(req);
                    stopped_early = true;
                    break;
                }
                let slot = s.handle(req).await;
                if s.dirty {
                    s.publish();
                }
                match slot {
                    Slot::Locked(req, slot) => {
                        if !order.is_empty() {
                            // Finish what is before it first.
                            pending = Some(*req);
                            stopped_early = true;
                            break;
                        }
                        if let Some(e) = batch_epoch.take() {
                            shard.end_batch(e);
                        }
                        let waited = s.wait_unlocked(slot).await;
                        batch_epoch = Some(shard.begin_batch());
                        match waited {
                            Ok(()) => pending = Some(*req),
                            Err(reply) => {
                                order.push(SLOW | slots.len() as u32);
                                slots.push(Slot::Ready(reply));
                                ids.push(s.cur_cmd);
                            }
                        }
                    }
                    Slot::Batch(i) => {
                        order.push(i);
                        ids.push(s.cur_cmd);
                    }
                    slot => {
                        order.push(SLOW | slots.len() as u32);
                        slots.push(slot);
                        ids.push(s.cur_cmd);
                    }
                }
                if s.close {
                    break;
                }
                if blocking && !order.is_empty() {
                    stopped_early = true; // what follows waits for its reply
                    break;
                }
            }
            rbuf.advance(consumed);
            let mut full = order.len() >= max_batch || stopped_early;
            // More than session_max_pipeline requests sent without waiting for a reply: the
            // ones within the limit are answered, then the client gets an error and is closed
            // (as Codis does; its memory stays bounded either way).
            let mut overflow = false;
            if order.len() >= max_batch && pending.is_none() && protocol_error.is_none() && !s.close
            {
                match dec.decode(&mut rbuf) {
                    Ok(Some(_)) => {
                        overflow = true;
                        full = false;
                    }
                    Ok(None) => full = false,
                    Err(e) => {
                        protocol_error = Some(e);
                        full = false;
                    }
                }
            }
            shared.commands[shard.id].fetch_add(order.len() as u64, Ordering::Relaxed);
            let mut slow = slots.drain(..);
            let mut sink_ready = false;
            for (&o, &id) in order.iter().zip(ids.iter()) {
                marks.push((id, out.len()));
                if o & SLOW == 0 {
                    if !sink_ready {
                        // One wait covers the batch: the sink wakes once all its replies are in.
                        s.sink.wait().await;
                        sink_ready = true;
                    }
                    s.sink.write_to(o, &mut out);
                    continue;
                }
                let slot = slow.next().expect("a slot per slow request");
                if let Slot::Dedicated(conn, rx) = slot {
                    // A blocking wait may last forever: it does not hold back new epochs.
                    if let Some(e) = batch_epoch.take() {
                        shard.end_batch(e);
                    }
                    // A blocking command: watch the client meanwhile. If it leaves, closing
                    // the dedicated connection makes the server drop the waiter (nothing is
                    // popped for a client that is gone).
                    let mut rx = rx;
                    // The idle timeout does not apply to a blocked client.
                    if let Some(m) = &idle_mark {
                        m.exempt.set(true);
                    }
                    let _blocked = Blocked::count(&shared.blocked, &s.entry.blocked);
                    s.entry.last_cmd.store(id as u32, Ordering::Relaxed);
                    s.entry.last_ticks.store(t0, Ordering::Relaxed);
                    let reply = loop {
                        let read = stream.read(&mut tmp);
                        futures::pin_mut!(read);
                        match futures::future::select(&mut rx, read).await {
                            futures::future::Either::Left((r, _)) => {
                                break match r {
                                    Ok(Ok(b)) => b,
                                    Ok(Err(e)) => err(&format!("ERR {e}")),
                                    Err(_) => err("ERR backend connection dropped the request"),
                                };
                            }
                            futures::future::Either::Right((Ok(n), _)) if n > 0 => {
                                // Requests pipelined behind the blocking one: handled after
                                // it, without waiting for the client to send more.
                                rbuf.extend_from_slice(&tmp[..n]);
                                full = true;
                            }
                            futures::future::Either::Right(_) => {
                                drop(conn);
                                break 'conn;
                            }
                        }
                    };
                    drop(conn);
                    if let Some(m) = &idle_mark {
                        m.exempt.set(false);
                        m.last.set(shard.clock_s.get());
                    }
                    out.extend_from_slice(&reply);
                    continue;
                }
                out.extend_from_slice(&resolve(slot, &shard).await);
            }
            drop(slow);
            s.sink.clear();
            let usec = rcodis_core::clock::ticks_to_us(t0, rcodis_core::clock::ticks());
            for &(id, at) in &marks {
                let error = out.get(at) == Some(&b'-');
                stats.record(id, error, usec);
                if error {
                    stats.record_error(&out[at..]);
                }
            }
            if let Some(&(id, _)) = marks.last() {
                s.entry.last_cmd.store(id as u32, Ordering::Relaxed);
                s.entry.last_ticks.store(t0, Ordering::Relaxed);
            }
            if let Some(e) = &protocol_error {
                enc::write_error(&mut out, format!("ERR {e}").as_bytes());
                s.close = true;
            } else if overflow {
                tracing::warn!(
                    "closing client {} ({}): more than session_max_pipeline ({max_batch}) pipelined requests",
                    s.id,
                    s.entry.addr
                );
                enc::write_error(
                    &mut out,
                    format!(
                        "ERR too many pipelined requests (session_max_pipeline is {max_batch})"
                    )
                    .as_bytes(),
                );
                s.close = true;
            }
            if let Some(e) = batch_epoch.take() {
                shard.end_batch(e);
            }
            if !out.is_empty() {
                // Let the other sessions woken by the same backend replies build theirs, so
                // the replies leave in one burst (one wake-up of a client for many).
                glommio::executor().yield_now().await;
                if stream.write_all(&out).await.is_err() {
                    break 'conn;
                }
            }
            if out.capacity() > 1 << 20 {
                // Do not keep a huge reply's buffer for the session's lifetime.
                out = BytesMut::with_capacity(16 * 1024);
            }
            if s.close {
                break 'conn;
            }
            if !full {
                break;
            }
        }
    }
    shared.clients.fetch_sub(1, Ordering::Relaxed);
}

/// What a subscribed session waits for.
enum Input {
    Read(usize),
    Message(Bytes),
    Tick,
    Closed,
}

/// Waits for a slot's reply (merging split and fan-out replies).
async fn resolve(slot: Slot, shard: &Shard) -> Bytes {
    let backend_err = |e: String| err(&format!("ERR {e}"));
    match slot {
        Slot::Ready(b) => b,
        Slot::Batch(_) => err("ERR internal: batch reply resolved out of place"),
        Slot::One(rx) => match rx.await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => backend_err(e),
            Err(_) => err("ERR backend connection dropped the request"),
        },
        Slot::Dedicated(conn, rx) => {
            let r = match rx.await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => backend_err(e),
                Err(_) => err("ERR backend connection dropped the request"),
            };
            drop(conn);
            r
        }
        Slot::Split(kind, parts, nkeys) => {
            let mut replies = Vec::with_capacity(parts.len());
            for (rx, positions) in parts {
                let r = match rx.await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return backend_err(e),
                    Err(_) => return err("ERR backend connection dropped the request"),
                };
                if r.first() == Some(&b'-') {
                    return r;
                }
                replies.push((parse(&r), positions));
            }
            match kind {
                SplitKind::Mget => {
                    let mut items = vec![Frame::NullBulk; nkeys];
                    for (f, positions) in replies {
                        let Some(Frame::Array(v)) = f else {
                            return err("ERR unexpected MGET reply from a backend");
                        };
                        for (item, p) in v.into_iter().zip(positions) {
                            items[p] = item;
                        }
                    }
                    frame(&Frame::Array(items))
                }
                SplitKind::Mset => simple("OK"),
                SplitKind::Sum => {
                    let mut n = 0i64;
                    for (f, _) in replies {
                        match f {
                            Some(Frame::Integer(i)) => n += i,
                            _ => return err("ERR unexpected reply from a backend"),
                        }
                    }
                    frame(&Frame::Integer(n))
                }
            }
        }
        Slot::Fanout(name, rxs, req) => fanout_merge(name, rxs, &req, shard).await,
        Slot::Locked(_, slot) => err(&format!("ERR slot {slot} is locked for a migration")),
        Slot::Multi(rxs) => {
            let mut last = err("ERR empty transaction");
            for rx in rxs {
                last = match rx.await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return backend_err(e),
                    Err(_) => return err("ERR backend connection dropped the request"),
                };
            }
            last
        }
    }
}

async fn fanout_merge(
    name: &'static str,
    rxs: Vec<oneshot::Receiver<Reply>>,
    req: &Request,
    shard: &Shard,
) -> Bytes {
    if name == "info" {
        return info_merge(rxs, req, shard).await;
    }
    let mut frames = Vec::with_capacity(rxs.len());
    for rx in rxs {
        match rx.await {
            Ok(Ok(b)) => {
                if b.first() == Some(&b'-') {
                    return b;
                }
                frames.push(parse(&b).unwrap_or(Frame::Null));
            }
            Ok(Err(e)) => return err(&format!("ERR {e}")),
            Err(_) => return err("ERR backend connection dropped the request"),
        }
    }
    match name {
        "dbsize" => frame(&Frame::Integer(
            frames.iter().filter_map(Frame::as_integer).sum(),
        )),
        "keys" => frame(&Frame::Array(
            frames
                .into_iter()
                .flat_map(|f| match f {
                    Frame::Array(v) => v,
                    _ => Vec::new(),
                })
                .collect(),
        )),
        "randomkey" => frames
            .into_iter()
            .find(|f| matches!(f, Frame::Bulk(_)))
            .map(|f| frame(&f))
            .unwrap_or_else(|| frame(&Frame::NullBulk)),
        "scan" => {
            // One backend per call; the merge maps its cursor back (see `scan_plan`).
            let nb = shard.conns.borrow().first().map_or(0, |c| c.backends.len()) as u64;
            let idx = scan_cursor(req).map_or(0, |c| c.0);
            match frames.into_iter().next() {
                Some(Frame::Array(v)) if v.len() == 2 => {
                    let next = v[0]
                        .as_bytes()
                        .and_then(|b| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
                        .unwrap_or(0);
                    let cursor = if next != 0 {
                        (next << 10) | idx
                    } else if idx + 1 < nb {
                        idx + 1
                    } else {
                        0
                    };
                    frame(&Frame::Array(vec![
                        Frame::bulk(cursor.to_string()),
                        v[1].clone(),
                    ]))
                }
                _ => err("ERR unexpected SCAN reply from a backend"),
            }
        }
        "pubsub|channels" | "pubsub|shardchannels" => {
            let mut all: Vec<Frame> = frames
                .into_iter()
                .flat_map(|f| match f {
                    Frame::Array(v) => v,
                    _ => Vec::new(),
                })
                .collect();
            all.sort_by(|a, b| a.as_bytes().cmp(&b.as_bytes()));
            all.dedup();
            frame(&Frame::Array(all))
        }
        "pubsub|numsub" | "pubsub|shardnumsub" => {
            // Each channel lives on one backend; the others report 0 for it.
            let mut out: Vec<Frame> = Vec::new();
            for f in frames {
                let Frame::Array(v) = f else { continue };
                for (i, pair) in v.chunks(2).enumerate() {
                    let n = pair.get(1).and_then(Frame::as_integer).unwrap_or(0);
                    if out.len() <= 2 * i {
                        out.push(pair[0].clone());
                        out.push(Frame::Integer(n));
                    } else if let Frame::Integer(x) = &mut out[2 * i + 1] {
                        *x += n;
                    }
                }
            }
            frame(&Frame::Array(out))
        }
        // Patterns are subscribed on every backend: any one of them has the count.
        "pubsub|numpat" => frame(&Frame::Integer(
            frames
                .iter()
                .filter_map(Frame::as_integer)
                .max()
                .unwrap_or(0),
        )),
        // A script is known when every group knows it (EVALSHA may run on any of them).
        "script|exists" => {
            let mut all: Vec<Frame> = Vec::new();
            for (i, f) in frames.into_iter().enumerate() {
                let Frame::Array(v) = f else {
                    return err("ERR unexpected SCRIPT EXISTS reply from a backend");
                };
                if i == 0 {
                    all = v;
                } else {
                    for (a, b) in all.iter_mut().zip(v) {
                        if b.as_integer() == Some(0) {
                            *a = Frame::Integer(0);
                        }
                    }
                }
            }
            frame(&Frame::Array(all))
        }
        // The running script, if any group runs one; the engines as every group has them.
        "function|stats" => {
            let absent = |f: &Frame| matches!(f, Frame::NullBulk | Frame::NullArray | Frame::Null);
            let name = |f: &Frame| f.as_bytes().is_some_and(|b| &b[..] == b"running_script");
            let running = |f: &Frame| match f {
                Frame::Array(v) => v.chunks(2).any(|p| name(&p[0]) && !absent(&p[1])),
                Frame::Map(v) => v.iter().any(|(k, x)| name(k) && !absent(x)),
                _ => false,
            };
            let pick = frames.iter().position(running).unwrap_or(0);
            frames
                .into_iter()
                .nth(pick)
                .map(|f| frame(&f))
                .unwrap_or_else(|| frame(&Frame::Array(vec![])))
        }
        "config|get" => frames
            .into_iter()
            .next()
            .map(|f| frame(&f))
            .unwrap_or_else(|| frame(&Frame::Array(vec![]))),
        // FLUSHDB, FLUSHALL, CONFIG SET/RESETSTAT, FUNCTION FLUSH, SCRIPT FLUSH: all OK.
        _ => frames
            .into_iter()
            .next()
            .map(|f| frame(&f))
            .unwrap_or_else(|| simple("OK")),
    }
}

/// SCRIPT KILL and FUNCTION KILL sent to every group: OK when one of them stopped a script;
/// otherwise the most telling error (a script that cannot be killed, a group that did not
/// answer) before "no script running".
fn kill_merge(replies: Vec<Bytes>) -> Bytes {
    if let Some(ok) = replies.iter().find(|r| r.first() == Some(&b'+')) {
        return ok.clone();
    }
    replies
        .iter()
        .find(|r| !r.starts_with(b"-NOTBUSY"))
        .or(replies.first())
        .cloned()
        .unwrap_or_else(|| err("ERR no backend group is configured"))
}

/// The backend index and backend cursor a proxy SCAN cursor encodes.
fn scan_cursor(req: &Request) -> Option<(u64, u64)> {
    // Read as Redis reads a cursor (strtoul): an optional sign, digits, nothing else; a
    // negative one wraps around.
    let a = req.arg(1);
    let (neg, digits) = match a.first() {
        Some(b'-') => (true, &a[1..]),
        Some(b'+') => (false, &a[1..]),
        _ => (false, a),
    };
    let mut c: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        c = c.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        c = c.wrapping_neg();
    }
    Some((c & 0x3ff, c >> 10))
}

impl Session {
    /// The common case, without the async machinery of [`Session::handle`]: an
    /// authenticated session outside MULTI and pub/sub sends a keyed command to its slot's
    /// master, no slot migrating. `None`: anything else, which `handle` then does in full
    /// (`fast` changes nothing then).
    #[inline]
    fn fast(&mut self, req: &RequestView<'_>) -> Option<u32> {
        if !self.authed || self.pubsub.is_some() || self.txn.multi.is_some() {
            return None;
        }
        let spec = table::resolve_request_after(self.last_spec, req).ok()?;
        if spec.has(rcodis_core::cmd::CommandFlags::BLOCKING) {
            return None;
        }
        let raw = req.raw_slice()?;
        let b = {
            let table = self.shard.table.borrow();
            if table.any_migrating {
                return None;
            }
            crate::router::forward_master(spec, req, &table)?
        };
        self.cur_cmd = spec.id;
        self.last_spec = Some(spec);
        Some(self.backends()[b as usize].send_batch(raw, self.db, &self.sink))
    }

    async fn handle(&mut self, req: Request) -> Slot {
        let spec = match table::resolve_request_after(self.last_spec, &req) {
            Ok(s) => {
                self.cur_cmd = s.id;
                self.last_spec = Some(s);
                s
            }
            Err(e) => {
                self.cur_cmd = crate::stats::UNKNOWN;
                if self.authed && req.arg(0).eq_ignore_ascii_case(b"exec") {
                    // As Redis: a refused EXEC discards the transaction (and the watches).
                    self.txn.clear();
                    let why = e.message().strip_prefix("ERR ").unwrap_or(e.message());
                    return Slot::Ready(err(&format!(
                        "EXECABORT Transaction discarded because of: {why}"
                    )));
                }
                if let Some(m) = self.txn.multi.as_mut() {
                    m.dirty = true;
                }
                return Slot::Ready(err(e.message()));
            }
        };
        if !self.authed && !matches!(spec.name, "auth" | "hello" | "quit") {
            return Slot::Ready(err("NOAUTH Authentication required."));
        }
        self.dirty |= self.txn.multi.is_some()
            || matches!(
                spec.name,
                "select"
                    | "hello"
                    | "reset"
                    | "client|setname"
                    | "client|setinfo"
                    | "subscribe"
                    | "unsubscribe"
                    | "psubscribe"
                    | "punsubscribe"
                    | "ssubscribe"
                    | "sunsubscribe"
                    | "multi"
            );
        if let Some(b) = self.pubsub_command(spec, &req) {
            return Slot::Ready(b);
        }
        if let Some(slot) = self.transaction(spec, &req).await {
            return slot;
        }
        let shared = &*self.shard.shared;
        let (plan, migrating) = {
            let table = self.shard.table.borrow();
            let plan = route(
                spec,
                &req,
                &table,
                shared.config.admin_commands,
                shared.config.allow_flush,
            );
            (plan, table.any_migrating)
        };
        if let Plan::Locked(slot) = plan {
            return Slot::Locked(Box::new(req), slot);
        }
        if migrating {
            let wait = std::time::Duration::from_millis(shared.config.migration_wait_ms);
            let deadline = std::time::Instant::now() + wait;
            let table = self.shard.table.borrow().clone();
            let moving = crate::router::moving_keys(spec, &req, &table);
            if !moving.is_empty() {
                if let Some(reply) = self.moving(spec, &req, &table, moving, deadline).await {
                    return Slot::Ready(reply);
                }
            }
        }
        match plan {
            Plan::Locked(_) => unreachable!("waited for above"),
            Plan::Reject(e) => Slot::Ready(err(&e)),
            Plan::Local if spec.name == "info" => self.info(req),
            Plan::Local => Slot::Ready(self.local(spec, &req)),
            Plan::Single(b) => {
                if spec.has(rcodis_core::cmd::CommandFlags::BLOCKING) {
                    let raw = raw(&req);
                    let shared = &self.shard.shared;
                    // Its own connection: a blocked pop must not stall the shared pipeline.
                    let addr = self.backends()[b as usize].addr.clone();
                    let timeout =
                        std::time::Duration::from_millis(shared.config.backend_connect_timeout_ms);
                    let (conn, rx) = crate::backend::dedicated(
                        &addr,
                        shared.config.product_auth.clone(),
                        timeout,
                        None,
                        raw,
                        self.db,
                        self.resp3,
                    );
                    return Slot::Dedicated(conn, rx);
                }
                // The request's own bytes, without a reference-count round trip.
                let built;
                let raw = match req.raw_slice() {
                    Some(r) => r,
                    None => {
                        built = raw(&req);
                        &built[..]
                    }
                };
                Slot::Batch(self.backends()[b as usize].send_batch(raw, self.db, &self.sink))
            }
            Plan::Replica(r, master) => {
                let raw = raw(&req);
                let k = self.conn_set;
                let replicas = if self.resp3 {
                    std::cell::Ref::map(self.shard.conns.borrow(), |c| &c[k].replicas3)
                } else {
                    std::cell::Ref::map(self.shard.conns.borrow(), |c| &c[k].replicas)
                };
                // A replica that is down: the master answers until it is back.
                match replicas
                    .get(r as usize)
                    .filter(|b| b.usable(std::time::Duration::from_secs(2)))
                {
                    Some(b) => Slot::Batch(b.send_batch(&raw, self.db, &self.sink)),
                    None => Slot::Batch(
                        self.backends()[master as usize].send_batch(&raw, self.db, &self.sink),
                    ),
                }
            }
            Plan::Split(kind, parts) => {
                let nkeys = match kind {
                    SplitKind::Mset => (req.len() - 1) / 2,
                    _ => req.len() - 1,
                };
                let backends = self.backends();
                let rxs = parts
                    .into_iter()
                    .map(|p| {
                        (
                            backends[p.backend as usize].send(raw(&p.request), self.db),
                            p.positions,
                        )
                    })
                    .collect();
                Slot::Split(kind, rxs, nkeys)
            }
            Plan::Fanout => self.fanout(spec, req),
        }
    }

    /// A pub/sub frame for this client: RESP3 clients get it as a push (`>`).
    fn push(&self, m: Bytes) -> Bytes {
        if self.resp3 && m.first() == Some(&b'*') {
            let mut v = m.to_vec();
            v[0] = b'>';
            Bytes::from(v)
        } else {
            m
        }
    }

    /// This shard's backend connections in the session's protocol.
    fn backends(&self) -> std::cell::Ref<'_, Vec<crate::backend::Backend>> {
        if self.resp3 {
            std::cell::Ref::map(self.shard.conns.borrow(), |c| &c[self.conn_set].backends3)
        } else {
            std::cell::Ref::map(self.shard.conns.borrow(), |c| &c[self.conn_set].backends)
        }
    }

    /// Waits for client bytes, a published message, or a periodic tick (to follow slot
    /// owner changes).
    async fn next_input(&mut self, stream: &mut TcpStream, tmp: &mut [u8]) -> Input {
        use futures::StreamExt;
        self.pubsub_follow();
        let Some(ps) = self.pubsub.as_mut() else {
            return Input::Tick;
        };
        let read = stream.read(tmp);
        let msg = ps.rx.next();
        let tick = glommio::timer::sleep(std::time::Duration::from_millis(100));
        futures::pin_mut!(read, msg, tick);
        match futures::future::select(read, futures::future::select(msg, tick)).await {
            futures::future::Either::Left((Ok(n), _)) if n > 0 => Input::Read(n),
            futures::future::Either::Left(_) => Input::Closed,
            futures::future::Either::Right((futures::future::Either::Left((Some(m), _)), _)) => {
                Input::Message(m)
            }
            futures::future::Either::Right(_) => Input::Tick,
        }
    }

    /// The subscriber connection to `addr` (started on first use).
    fn sub_conn<'a>(
        shard: &Shard,
        ps: &'a mut PubSub,
        addr: &Rc<str>,
    ) -> &'a crate::backend::Subscriber {
        let tx = ps.tx.clone();
        ps.subs.entry(addr.clone()).or_insert_with(|| {
            crate::backend::Subscriber::start(
                addr,
                shard.shared.config.product_auth.clone(),
                std::time::Duration::from_millis(shard.shared.config.backend_connect_timeout_ms),
                tx,
            )
        })
    }

    /// After a slot table change: channels move to their slot's new master, patterns reach
    /// every backend.
    fn pubsub_follow(&mut self) {
        let table = self.shard.table.borrow().clone();
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        if ps.epoch == table.epoch {
            return;
        }
        ps.epoch = table.epoch;
        let moves: Vec<(Bytes, bool, Rc<str>, Rc<str>)> = ps
            .channels
            .iter()
            .filter_map(|(ch, (shard_ch, on))| {
                let b = table.route(rcodis_core::slot::slot_of(ch)).backend?;
                let now: Rc<str> = Rc::from(table.backends[b as usize].as_str());
                (now != *on).then(|| (ch.clone(), *shard_ch, on.clone(), now))
            })
            .collect();
        for (ch, shard_ch, old, new) in moves {
            let (sub, unsub): (&[u8], &[u8]) = if shard_ch {
                (b"SSUBSCRIBE", b"SUNSUBSCRIBE")
            } else {
                (b"SUBSCRIBE", b"UNSUBSCRIBE")
            };
            if let Some(s) = ps.subs.get(&old) {
                s.send(&[unsub, &ch[..]]);
            }
            Self::sub_conn(&self.shard, ps, &new).send(&[sub, &ch[..]]);
            ps.channels.insert(ch, (shard_ch, new));
        }
        if !ps.patterns.is_empty() {
            for a in &table.backends {
                let addr: Rc<str> = Rc::from(a.as_str());
                if !ps.subs.contains_key(&addr) {
                    let pats: Vec<Bytes> = ps.patterns.iter().cloned().collect();
                    let s = Self::sub_conn(&self.shard, ps, &addr);
                    for p in pats {
                        s.send(&[&b"PSUBSCRIBE"[..], &p[..]]);
                    }
                }
            }
        }
    }

    /// (P|S)SUBSCRIBE, (P|S)UNSUBSCRIBE, and what a subscribed session may not do.
    fn pubsub_command(&mut self, spec: &'static CommandSpec, req: &Request) -> Option<Bytes> {
        let name = spec.name;
        let subscribed = self.pubsub.is_some();
        let is_sub = matches!(
            name,
            "subscribe"
                | "ssubscribe"
                | "psubscribe"
                | "unsubscribe"
                | "sunsubscribe"
                | "punsubscribe"
        );
        if !is_sub {
            // RESP3 clients may run any command while subscribed.
            if !subscribed || self.resp3 {
                return None;
            }
            return match name {
                "ping" => {
                    let msg = req.get(1).unwrap_or(b"");
                    Some(frame(&Frame::Array(vec![Frame::bulk("pong"), Frame::bulk(msg)])))
                }
                "quit" => None,
                "reset" => {
                    self.pubsub = None;
                    None
                }
                _ => Some(err(&format!(
                    "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
                ))),
            };
        }
        if self.txn.multi.is_some() {
            if let Some(m) = self.txn.multi.as_mut() {
                m.dirty = true;
            }
            return Some(err(&format!(
                "ERR command '{name}' is not allowed inside a transaction through the proxy"
            )));
        }
        let table = self.shard.table.borrow().clone();
        if self.pubsub.is_none() {
            if name.contains("unsubscribe") {
                // Not subscribed: one confirmation with no channel and a count of 0.
                let kind = name.to_string();
                return Some(frame(&Frame::Array(vec![
                    Frame::bulk(kind),
                    Frame::NullBulk,
                    Frame::Integer(0),
                ])));
            }
            let (tx, rx) = futures::channel::mpsc::unbounded();
            self.pubsub = Some(PubSub {
                channels: Default::default(),
                patterns: Default::default(),
                subs: Default::default(),
                tx,
                rx,
                epoch: table.epoch,
            });
        }
        let shard = self.shard.clone();
        let ps = self.pubsub.as_mut().expect("subscribed");
        let mut out = Vec::new();
        let confirm = |out: &mut Vec<u8>, kind: &str, what: Frame, n: usize| {
            out.extend_from_slice(&frame(&Frame::Array(vec![
                Frame::bulk(kind),
                what,
                Frame::Integer(n as i64),
            ])));
        };
        let args: Vec<Bytes> = (1..req.len()).map(|i| req.arg_bytes(i)).collect();
        match name {
            "subscribe" | "ssubscribe" => {
                let shard_ch = name == "ssubscribe";
                for ch in args {
                    if !ps.channels.contains_key(&ch) {
                        let Some(b) = table.route(rcodis_core::slot::slot_of(&ch)).backend else {
                            return Some(err(&format!(
                                "ERR channel '{}' hashes to a slot no group serves",
                                String::from_utf8_lossy(&ch)
                            )));
                        };
                        let addr: Rc<str> = Rc::from(table.backends[b as usize].as_str());
                        let cmd: &[u8] = if shard_ch {
                            b"SSUBSCRIBE"
                        } else {
                            b"SUBSCRIBE"
                        };
                        Self::sub_conn(&shard, ps, &addr).send(&[cmd, &ch[..]]);
                        ps.channels.insert(ch.clone(), (shard_ch, addr));
                    }
                    let n = ps.count();
                    confirm(&mut out, name, Frame::Bulk(ch), n);
                }
            }
            "psubscribe" => {
                for p in args {
                    if ps.patterns.insert(p.clone()) {
                        for a in &table.backends {
                            let addr: Rc<str> = Rc::from(a.as_str());
                            Self::sub_conn(&shard, ps, &addr).send(&[&b"PSUBSCRIBE"[..], &p[..]]);
                        }
                    }
                    let n = ps.count();
                    confirm(&mut out, name, Frame::Bulk(p), n);
                }
            }
            "unsubscribe" | "sunsubscribe" => {
                let list: Vec<Bytes> = if args.is_empty() {
                    ps.channels.keys().cloned().collect()
                } else {
                    args
                };
                if list.is_empty() {
                    let n = ps.count();
                    confirm(&mut out, name, Frame::NullBulk, n);
                }
                for ch in list {
                    if let Some((shard_ch, addr)) = ps.channels.remove(&ch) {
                        let cmd: &[u8] = if shard_ch {
                            b"SUNSUBSCRIBE"
                        } else {
                            b"UNSUBSCRIBE"
                        };
                        if let Some(s) = ps.subs.get(&addr) {
                            s.send(&[cmd, &ch[..]]);
                        }
                    }
                    let n = ps.count();
                    confirm(&mut out, name, Frame::Bulk(ch), n);
                }
            }
            _ => {
                let list: Vec<Bytes> = if args.is_empty() {
                    ps.patterns.iter().cloned().collect()
                } else {
                    args
                };
                if list.is_empty() {
                    let n = ps.count();
                    confirm(&mut out, name, Frame::NullBulk, n);
                }
                for p in list {
                    if ps.patterns.remove(&p) {
                        for s in ps.subs.values() {
                            s.send(&[&b"PUNSUBSCRIBE"[..], &p[..]]);
                        }
                    }
                    let n = ps.count();
                    confirm(&mut out, name, Frame::Bulk(p), n);
                }
            }
        }
        if ps.count() == 0 {
            // Back to normal: the subscriber connections close.
            self.pubsub = None;
        }
        if self.resp3 {
            // Each confirmation is a push: re-frame them one by one.
            let mut buf = bytes::BytesMut::from(&out[..]);
            let mut dec = rcodis_core::resp::FrameDecoder::default();
            let mut pushed = Vec::new();
            while let Ok(Some(f)) = dec.decode_raw(&mut buf) {
                pushed.extend_from_slice(&self.push(f));
            }
            return Some(Bytes::from(pushed));
        }
        Some(Bytes::from(out))
    }

    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH, and queueing inside MULTI (see `txn`). None when
    /// the request is not the transaction's business.
    async fn transaction(&mut self, spec: &'static CommandSpec, req: &Request) -> Option<Slot> {
        use crate::txn;
        let in_multi = self.txn.multi.is_some();
        let ready = |b: Bytes| Some(Slot::Ready(b));
        match spec.name {
            "multi" if in_multi => return ready(err("ERR MULTI calls can not be nested")),
            "multi" => {
                self.txn.multi = Some(txn::Multi::default());
                return ready(simple("OK"));
            }
            "discard" if !in_multi => return ready(err("ERR DISCARD without MULTI")),
            "discard" => {
                self.txn.clear();
                return ready(simple("OK"));
            }
            "exec" if !in_multi => return ready(err("ERR EXEC without MULTI")),
            "exec" => return Some(self.exec()),
            "watch" if in_multi => {
                if let Some(m) = self.txn.multi.as_mut() {
                    m.dirty = true;
                }
                return ready(err("ERR WATCH inside MULTI is not allowed"));
            }
            "watch" => return Some(self.watch(spec, req)),
            "unwatch" if !in_multi => {
                self.txn.clear();
                return ready(simple("OK"));
            }
            "quit" | "reset" => return None,
            _ if !in_multi => return None,
            _ => {}
        }
        let refused = txn::refuse_in_multi(spec)
            .map(Err)
            .unwrap_or_else(|| txn::bind(&mut self.txn, spec, req));
        let m = self.txn.multi.as_mut().expect("in MULTI");
        match refused {
            Err(e) => {
                m.dirty = true;
                ready(err(&e))
            }
            Ok(()) => {
                m.queued.push(raw(req));
                ready(simple("QUEUED"))
            }
        }
    }

    /// WATCH: pins a connection of the session's own to the keys' slot owner.
    fn watch(&mut self, spec: &'static CommandSpec, req: &Request) -> Slot {
        let slot = match crate::txn::slot_of_request(spec, req) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Slot::Ready(err("ERR wrong number of arguments for 'watch' command"))
            }
            Err(crate::txn::CrossSlot) => return Slot::Ready(err(crate::router::CROSSSLOT)),
        };
        if self.txn.slot.is_some_and(|x| x != slot) {
            return Slot::Ready(err(crate::router::CROSSSLOT));
        }
        let table = self.shard.table.borrow().clone();
        let r = table.route(slot);
        if r.locked || r.migrate_from.is_some() {
            return Slot::Ready(err(&format!(
                "ERR slot {slot} is being migrated, retry WATCH shortly"
            )));
        }
        let Some(b) = r.backend else {
            return Slot::Ready(err(&format!(
                "ERR slot {slot} is not served by any group (offline)"
            )));
        };
        let shared = &self.shard.shared;
        let resp3 = self.resp3;
        let pinned = self.txn.pinned.get_or_insert_with(|| {
            crate::backend::Backend::start_proto(
                &table.backends[b as usize],
                shared.config.product_auth.clone(),
                std::time::Duration::from_millis(shared.config.backend_connect_timeout_ms),
                shared.config.backend_read_timeout(),
                resp3,
                None,
            )
        });
        self.txn.slot = Some(slot);
        Slot::One(pinned.send(raw(req), self.db))
    }

    /// EXEC: MULTI + queued + EXEC back to back on one connection.
    fn exec(&mut self) -> Slot {
        let m = self.txn.multi.take().expect("in MULTI");
        let slot = self.txn.slot;
        let pinned = self.txn.pinned.take();
        self.txn.clear();
        if m.dirty {
            return Slot::Ready(err(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
        }
        let table = self.shard.table.borrow().clone();
        let backend = match (pinned, slot) {
            (Some(p), Some(s)) => {
                let r = table.route(s);
                let same = r.backend.map(|b| &*table.backends[b as usize]) == Some(&*p.addr);
                if r.locked || r.migrate_from.is_some() || !same {
                    // The watched keys changed owner: as if they had been modified.
                    return Slot::Ready(frame(&Frame::NullArray));
                }
                p
            }
            (_, Some(s)) => {
                let r = table.route(s);
                if r.locked || r.migrate_from.is_some() {
                    return Slot::Ready(err(&format!(
                        "ERR slot {s} is being migrated: transaction discarded, retry"
                    )));
                }
                match r.backend {
                    Some(b) => self.backends()[b as usize].clone(),
                    None => {
                        return Slot::Ready(err(&format!(
                            "ERR slot {s} is not served by any group (offline)"
                        )))
                    }
                }
            }
            (p, None) => match p.or_else(|| self.backends().first().cloned()) {
                Some(b) => b,
                None => return Slot::Ready(err("ERR no backend group is configured")),
            },
        };
        let mut rxs = Vec::with_capacity(m.queued.len() + 2);
        rxs.push(backend.send_args(&["MULTI"], self.db));
        for q in m.queued {
            rxs.push(backend.send(q, self.db));
        }
        rxs.push(backend.send_args(&["EXEC"], self.db));
        Slot::Multi(rxs)
    }

    /// Waits (outside any batch) until the shard's table no longer locks `slot`.
    async fn wait_unlocked(&mut self, slot: u16) -> Result<(), Bytes> {
        let wait = std::time::Duration::from_millis(self.shard.shared.config.migration_wait_ms);
        let deadline = std::time::Instant::now() + wait;
        loop {
            self.shard.refresh();
            if !self.shard.table.borrow().route(slot).locked {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(err(&format!(
                    "ERR slot {slot} is locked for a migration: no new slot table within {} ms",
                    wait.as_millis()
                )));
            }
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Keys in migrating slots must leave the source before the request goes to the target.
    /// A single-key command with the semi-async method runs through SLOTSMGRT-EXEC-WRAPPER
    /// on the source (answered there if the key is still there and not being moved; sent on
    /// to the target if it is gone; retried while it is mid-move). Anything else first moves
    /// each of its keys with SLOTSMGRTTAGONE. Returns the reply when the source answered it
    /// (or an error), None when the request may now go to the target as planned.
    async fn moving(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
        table: &crate::table::SlotTable,
        moving: Vec<crate::router::Moving>,
        deadline: std::time::Instant,
    ) -> Option<Bytes> {
        let backends = self.backends().clone();
        let single = moving.len() == 1
            && matches!(
                spec.proxy,
                rcodis_core::cmd::ProxyPolicy::Forward | rcodis_core::cmd::ProxyPolicy::SameSlot
            )
            && !spec.has(rcodis_core::cmd::CommandFlags::BLOCKING);
        let pause = || glommio::timer::sleep(std::time::Duration::from_millis(2));
        if single && moving[0].method == rcodis_core::topology::MigrationMethod::SemiAsync {
            let m = &moving[0];
            let mut args: Vec<&[u8]> = vec![b"SLOTSMGRT-EXEC-WRAPPER", &m.key];
            args.extend(req.args());
            let wrapped = raw(&Request::from_args(&args));
            loop {
                let r = match backends[m.source as usize]
                    .send(wrapped.clone(), self.db)
                    .await
                {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        return Some(err(&format!("ERR source of a migrating slot: {e}")))
                    }
                    Err(_) => return Some(err("ERR backend connection dropped the request")),
                };
                match parse(&r) {
                    Some(Frame::Array(v)) if v.len() == 2 => match v[0] {
                        Frame::Integer(2) | Frame::Integer(-1) => return Some(frame(&v[1])),
                        // Gone from the source: the target has it (or nobody does).
                        Frame::Integer(0) => return None,
                        // Being moved right now: ask again shortly.
                        _ => {}
                    },
                    _ => return Some(r),
                }
                if std::time::Instant::now() >= deadline {
                    return Some(err(
                        "ERR key is being migrated: still moving after the wait limit, retry",
                    ));
                }
                pause().await;
            }
        }
        let timeout = self
            .shard
            .shared
            .config
            .backend_connect_timeout_ms
            .to_string();
        for m in moving {
            let target = &table.backends[m.target as usize];
            let (host, port) = target.rsplit_once(':').unwrap_or((target, "0"));
            let args: [&[u8]; 5] = [
                b"SLOTSMGRTTAGONE",
                host.as_bytes(),
                port.as_bytes(),
                timeout.as_bytes(),
                &m.key,
            ];
            let cmd = raw(&Request::from_args(args));
            loop {
                let r = match backends[m.source as usize].send(cmd.clone(), self.db).await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        return Some(err(&format!("ERR source of a migrating slot: {e}")))
                    }
                    Err(_) => return Some(err("ERR backend connection dropped the request")),
                };
                if r.first() != Some(&b'-') {
                    break;
                }
                let busy = r.windows(14).any(|w| w == b"being migrated");
                if !busy || std::time::Instant::now() >= deadline {
                    return Some(err(&format!(
                        "ERR cannot move key out of a migrating slot: {}",
                        String::from_utf8_lossy(&r[1..]).trim_end()
                    )));
                }
                pause().await;
            }
        }
        None
    }

    fn fanout(&mut self, spec: &'static CommandSpec, req: Request) -> Slot {
        let backends = self.backends();
        if backends.is_empty() {
            return Slot::Ready(err("ERR no backend group is configured"));
        }
        if spec.name == "scan" {
            let Some((idx, cursor)) = scan_cursor(&req) else {
                return Slot::Ready(err("ERR invalid cursor"));
            };
            let Some(b) = backends.get(idx as usize) else {
                // Past the last group: an iteration that has ended.
                return Slot::Ready(frame(&Frame::Array(vec![
                    Frame::bulk("0"),
                    Frame::Array(vec![]),
                ])));
            };
            let mut args: Vec<Vec<u8>> = req.args().map(|a| a.to_vec()).collect();
            args[1] = cursor.to_string().into_bytes();
            let rx = b.send_args(&args, self.db);
            return Slot::Fanout(spec.name, vec![rx], Box::new(req));
        }
        let raw = raw(&req);
        if matches!(spec.name, "script|kill" | "function|kill") {
            // A busy script holds the shared connection it runs on (and every request queued
            // behind it): the kill goes to each group on a connection of its own.
            let shared = &self.shard.shared;
            let timeout =
                std::time::Duration::from_millis(shared.config.backend_connect_timeout_ms);
            let conns: Vec<_> = backends
                .iter()
                .map(|b| {
                    // A server whose one shard runs the script answers when it ends:
                    // waited for as long as any reply.
                    crate::backend::dedicated(
                        &b.addr,
                        shared.config.product_auth.clone(),
                        timeout,
                        Some(shared.config.backend_read_timeout().unwrap_or(timeout)),
                        raw.clone(),
                        // Neither the database nor the protocol matters to a kill, and a
                        // busy server answers little besides AUTH and the kill itself.
                        0,
                        false,
                    )
                })
                .collect();
            let (tx, rx) = oneshot::channel();
            glommio::spawn_local(async move {
                let mut replies = Vec::with_capacity(conns.len());
                for (conn, rx) in conns {
                    replies.push(match rx.await {
                        Ok(Ok(b)) => b,
                        Ok(Err(e)) => err(&format!("ERR {e}")),
                        Err(_) => err("ERR backend connection dropped the request"),
                    });
                    drop(conn);
                }
                let _ = tx.send(Ok(kill_merge(replies)));
            })
            .detach();
            return Slot::One(rx);
        }
        let rxs = backends
            .iter()
            .map(|b| b.send(raw.clone(), self.db))
            .collect();
        Slot::Fanout(spec.name, rxs, Box::new(req))
    }

    /// Commands the proxy answers itself.
    fn local(&mut self, spec: &'static CommandSpec, req: &Request) -> Bytes {
        let shared = self.shard.shared.clone();
        match spec.name {
            "ping" => match req.get(1) {
                _ if req.len() > 2 => err("ERR wrong number of arguments for 'ping' command"),
                Some(m) => frame(&Frame::bulk(m)),
                None => simple("PONG"),
            },
            "echo" => frame(&Frame::bulk(req.arg(1))),
            "quit" => {
                self.close = true;
                simple("OK")
            }
            "select" => match parse_i64(req.arg(1)) {
                Some(d) if d >= 0 && (d as usize) < shared.config.databases => {
                    self.db = d as u16;
                    simple("OK")
                }
                Some(_) => err("ERR DB index is out of range"),
                None => err("ERR value is not an integer or out of range"),
            },
            "auth" => {
                let pass = match req.len() {
                    2 => req.arg(1),
                    3 if req.arg(1) == b"default" => req.arg(2),
                    3 => {
                        return err("WRONGPASS invalid username-password pair or user is disabled.")
                    }
                    _ => return err("ERR syntax error"),
                };
                if shared.config.session_auth.is_empty() {
                    // Without a password the default user takes any (Redis's `nopass`); only
                    // the one-argument form is refused, as Redis refuses it.
                    if req.len() == 3 {
                        self.authed = true;
                        return simple("OK");
                    }
                    return err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
                }
                if pass == shared.config.session_auth.as_bytes() {
                    self.authed = true;
                    simple("OK")
                } else {
                    err("WRONGPASS invalid username-password pair or user is disabled.")
                }
            }
            "hello" => self.hello(req),
            "reset" => {
                self.txn.clear();
                self.resp3 = false;
                self.db = 0;
                self.name = Bytes::new();
                self.authed = shared.config.session_auth.is_empty();
                simple("RESET")
            }
            "readonly" | "readwrite" => simple("OK"),
            "time" => {
                let us = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros())
                    .unwrap_or(0);
                frame(&Frame::Array(vec![
                    Frame::bulk((us / 1_000_000).to_string()),
                    Frame::bulk((us % 1_000_000).to_string()),
                ]))
            }
            // What INFO says: a master (the cluster as one Redis), no replicas of its own.
            "role" => frame(&Frame::Array(vec![
                Frame::bulk("master"),
                Frame::Integer(0),
                Frame::Array(vec![]),
            ])),
            "lastsave" => frame(&Frame::Integer(
                (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    - shared.started.elapsed().as_secs()) as i64,
            )),
            "client|id" => frame(&Frame::Integer(self.id as i64)),
            "client|getname" => frame(&if self.name.is_empty() {
                Frame::NullBulk
            } else {
                Frame::Bulk(self.name.clone())
            }),
            "client|setname" => {
                if req.arg(2).iter().any(|&b| b <= b' ' || b > b'~') {
                    return err(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = Bytes::copy_from_slice(req.arg(2));
                simple("OK")
            }
            "client|setinfo" => {
                let (attr, v) = (req.arg(2), req.arg(3));
                let field = if attr.eq_ignore_ascii_case(b"lib-name") {
                    &mut self.lib_name
                } else if attr.eq_ignore_ascii_case(b"lib-ver") {
                    &mut self.lib_ver
                } else {
                    return err(&format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(attr)
                    ));
                };
                if v.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                    return err(&format!(
                        "ERR {} cannot contain spaces, newlines or special characters.",
                        String::from_utf8_lossy(attr).to_ascii_lowercase()
                    ));
                }
                *field = Bytes::copy_from_slice(v);
                simple("OK")
            }
            "client|no-evict" => match req.arg(2).to_ascii_lowercase().as_slice() {
                b"on" | b"off" => simple("OK"),
                _ => err("ERR syntax error"),
            },
            "client|info" => {
                self.publish();
                frame(&Frame::bulk(self.entry.line(Some("client|info"))))
            }
            "client|list" => self.client_list(req),
            "client|kill" => self.client_kill(req),
            "command" | "command|count" | "command|info" | "command|list" | "command|docs"
            | "command|getkeys" => command(spec, req),
            _ => err(&format!(
                "ERR command '{}' is not supported by rcodis-proxy",
                spec.name.replace('|', " ")
            )),
        }
    }

    /// Copies what CLIENT LIST shows of this session into its registry entry.
    fn publish(&mut self) {
        self.dirty = false;
        let (sub, ssub, psub) = self.pubsub.as_ref().map_or((0, 0, 0), |p| {
            let sharded = p.channels.values().filter(|(sh, _)| *sh).count();
            (p.channels.len() - sharded, sharded, p.patterns.len())
        });
        *self.entry.state() = crate::clients::State {
            name: self.name.clone(),
            lib_name: self.lib_name.clone(),
            lib_ver: self.lib_ver.clone(),
            db: self.db,
            resp: if self.resp3 { 3 } else { 2 },
            sub,
            psub,
            ssub,
            multi: self
                .txn
                .multi
                .as_ref()
                .map_or(-1, |m| m.queued.len() as i64),
        };
    }

    /// CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...]: the proxy's sessions, on
    /// every shard.
    fn client_list(&mut self, req: &Request) -> Bytes {
        self.publish();
        // As Redis 7.0: TYPE alone, or ID followed by ids only.
        let mut kind = None;
        let mut ids: Option<Vec<u64>> = None;
        if req.len() == 4 && req.arg(2).eq_ignore_ascii_case(b"type") {
            match crate::clients::Kind::parse(req.arg(3)) {
                Ok(k) => kind = Some(k),
                Err(e) => return err(&e),
            }
        } else if req.len() > 3 && req.arg(2).eq_ignore_ascii_case(b"id") {
            let mut v = Vec::new();
            for a in req.args().skip(3) {
                match parse_i64(a) {
                    // No session has an id below 1: such ids match nothing.
                    Some(n) => v.push(n.max(0) as u64),
                    None => return err("ERR Invalid client ID"),
                }
            }
            ids = Some(v);
        } else if req.len() != 2 {
            return err("ERR syntax error");
        }
        let me = self.id;
        let mut out = String::new();
        for e in self.shard.shared.sessions.select(|e| {
            kind.is_none_or(|k| e.kind() == k) && ids.as_ref().is_none_or(|v| v.contains(&e.id))
        }) {
            out.push_str(&e.line((e.id == me).then_some("client|list")));
        }
        frame(&Frame::Bulk(Bytes::from(out)))
    }

    /// CLIENT KILL addr:port, or CLIENT KILL with filters (ID, ADDR, LADDR, TYPE, USER,
    /// SKIPME), as Redis 7.0: the old form answers OK or an error, the new one the number
    /// of clients killed. A session killing itself is closed once the reply is sent.
    fn client_kill(&mut self, req: &Request) -> Bytes {
        self.publish();
        let me = self.id;
        let sessions = &self.shard.shared.sessions;
        if req.len() == 3 {
            let addr = req.arg(2);
            let (n, killed_me) = sessions.kill(me, |e| e.addr.as_bytes() == addr);
            if n == 0 {
                return err("ERR No such client");
            }
            self.close |= killed_me;
            return simple("OK");
        }
        if req.len() % 2 != 0 {
            return err("ERR syntax error");
        }
        let (mut id, mut addr, mut laddr, mut kind) = (None, None, None, None);
        let mut skipme = true;
        for pair in req.args().skip(2).collect::<Vec<_>>().chunks(2) {
            let (opt, v) = (pair[0].to_ascii_lowercase(), pair[1]);
            match opt.as_slice() {
                b"id" => match parse_i64(v) {
                    Some(n) if n > 0 => id = Some(n as u64),
                    _ => return err("ERR client-id should be greater than 0"),
                },
                b"addr" => addr = Some(v.to_vec()),
                b"laddr" => laddr = Some(v.to_vec()),
                b"type" => match crate::clients::Kind::parse(v) {
                    Ok(k) => kind = Some(k),
                    Err(e) => return err(&e),
                },
                b"user" if v == b"default" => {}
                b"user" => {
                    return err(&format!(
                        "ERR No such user '{}'",
                        String::from_utf8_lossy(v)
                    ))
                }
                b"skipme" => match v.to_ascii_lowercase().as_slice() {
                    b"yes" => skipme = true,
                    b"no" => skipme = false,
                    _ => return err("ERR syntax error"),
                },
                _ => return err("ERR syntax error"),
            }
        }
        let (n, killed_me) = sessions.kill(me, |e| {
            id.is_none_or(|i| e.id == i)
                && addr.as_deref().is_none_or(|a| e.addr.as_bytes() == a)
                && laddr.as_deref().is_none_or(|a| e.laddr.as_bytes() == a)
                && kind.is_none_or(|k| e.kind() == k)
                && !(skipme && e.id == me)
        });
        self.close |= killed_me;
        frame(&Frame::Integer(n as i64))
    }

    fn hello(&mut self, req: &Request) -> Bytes {
        if let Some(v) = req.get(1) {
            match parse_i64(v) {
                Some(2) | Some(3) => {}
                Some(_) => return err("NOPROTO unsupported protocol version"),
                None => return err("ERR Protocol version is not an integer or out of range"),
            }
        }
        let mut i = 2;
        while i < req.len() {
            if req.arg(i).eq_ignore_ascii_case(b"auth") && i + 2 < req.len() {
                let pass = &self.shard.shared.config.session_auth;
                // Without a password the default user takes any, as in Redis.
                if req.arg(i + 1) != b"default"
                    || (!pass.is_empty() && req.arg(i + 2) != pass.as_bytes())
                {
                    return err("WRONGPASS invalid username-password pair or user is disabled.");
                }
                self.authed = true;
                i += 3;
            } else if req.arg(i).eq_ignore_ascii_case(b"setname") && i + 1 < req.len() {
                self.name = Bytes::copy_from_slice(req.arg(i + 1));
                i += 2;
            } else {
                return err(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(req.arg(i))
                ));
            }
        }
        if !self.authed {
            return err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
        }
        if let Some(v) = req.get(1) {
            self.resp3 = parse_i64(v) == Some(3);
        }
        let fields = vec![
            (Frame::bulk("server"), Frame::bulk("redis")),
            (Frame::bulk("version"), Frame::bulk("7.0.15")),
            (
                Frame::bulk("proto"),
                Frame::Integer(if self.resp3 { 3 } else { 2 }),
            ),
            (Frame::bulk("id"), Frame::Integer(self.id as i64)),
            (Frame::bulk("mode"), Frame::bulk("standalone")),
            (Frame::bulk("role"), Frame::bulk("master")),
            (Frame::bulk("modules"), Frame::Array(vec![])),
        ];
        if self.resp3 {
            frame(&Frame::Map(fields))
        } else {
            frame(&Frame::Array(
                fields.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            ))
        }
    }

    /// INFO: the proxy's own sections; the memory, stats and keyspace sections also ask every
    /// group's master (see [`info_merge`]).
    fn info(&mut self, req: Request) -> Slot {
        let want = InfoSections::of(&req);
        let mut ask = vec!["INFO"];
        ask.extend(GROUP_SECTIONS.iter().copied().filter(|s| want.wants(s)));
        if ask.len() == 1 {
            return Slot::Ready(frame(&Frame::Bulk(Bytes::from(info_text(
                &self.shard,
                &want,
                &GroupInfo::default(),
            )))));
        }
        let rxs = self
            .backends()
            .iter()
            .map(|b| b.send_args(&ask, self.db))
            .collect();
        Slot::Fanout("info", rxs, Box::new(req))
    }
}

/// The INFO sections that sum what the groups' masters report.
const GROUP_SECTIONS: [&str; 3] = ["memory", "stats", "keyspace"];

/// The fields of the groups' INFO that the proxy's INFO adds up.
const SUMMED: [&str; 8] = [
    "used_memory",
    "used_memory_rss",
    "used_memory_peak",
    "maxmemory",
    "expired_keys",
    "evicted_keys",
    "keyspace_hits",
    "keyspace_misses",
];

/// What the groups' masters said to INFO, summed.
#[derive(Default)]
struct GroupInfo {
    /// Groups that did not answer.
    missing: usize,
    /// The fields of [`SUMMED`], in that order.
    sums: [u64; SUMMED.len()],
    /// Some group has no memory limit (maxmemory 0), so neither has the cluster.
    unlimited: bool,
    policies: std::collections::BTreeSet<String>,
    allocator: Option<String>,
    /// Per database: keys, expiring keys, and the sum of avg_ttl weighted by expiring keys.
    dbs: std::collections::BTreeMap<u64, (u64, u64, u128)>,
}

impl GroupInfo {
    fn sum(&self, field: &str) -> u64 {
        SUMMED
            .iter()
            .position(|f| *f == field)
            .map_or(0, |i| self.sums[i])
    }

    /// Adds one group's INFO text.
    fn add(&mut self, text: &str) {
        for line in text.lines() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if let Some(i) = SUMMED.iter().position(|f| *f == name) {
                let v = value.trim().parse::<u64>().unwrap_or(0);
                self.sums[i] += v;
                if name == "maxmemory" && v == 0 {
                    self.unlimited = true;
                }
            } else if name == "maxmemory_policy" {
                self.policies.insert(value.trim().to_string());
            } else if name == "mem_allocator" {
                self.allocator
                    .get_or_insert_with(|| value.trim().to_string());
            } else if let Some(n) = name.strip_prefix("db").and_then(|n| n.parse::<u64>().ok()) {
                let field = |name: &str| -> u64 {
                    value
                        .split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == name)
                        .and_then(|(_, v)| v.trim().parse().ok())
                        .unwrap_or(0)
                };
                let e = self.dbs.entry(n).or_default();
                let expires = field("expires");
                e.0 += field("keys");
                e.1 += expires;
                e.2 += field("avg_ttl") as u128 * expires as u128;
            }
        }
    }
}

/// The INFO sections a request asks for (`INFO [section ...]`, case-insensitive): none or
/// `default` gives the default ones, `all` and `everything` add the per-command statistics.
struct InfoSections(Vec<String>);

impl InfoSections {
    fn of(req: &Request) -> InfoSections {
        InfoSections(
            req.args()
                .skip(1)
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                .collect(),
        )
    }

    fn wants(&self, section: &str) -> bool {
        let default = !matches!(section, "commandstats");
        if self.0.is_empty() {
            return default;
        }
        self.0
            .iter()
            .any(|w| w == section || w == "all" || w == "everything" || (w == "default" && default))
    }
}

/// The INFO text: the proxy's own sections, with what the groups reported (`groups`) in
/// the memory, stats and keyspace sections.
fn info_text(shard: &Shard, want: &InfoSections, groups: &GroupInfo) -> String {
    let sh = &shard.shared;
    let t = shard.table.borrow();
    let mut s = String::new();
    let mut section = |name: &str, body: String| {
        if want.wants(&name.to_ascii_lowercase()) {
            s.push_str("# ");
            s.push_str(name);
            s.push_str("\r\n");
            s.push_str(&body);
            s.push_str("\r\n");
        }
    };
    let uptime = sh.started.elapsed().as_secs();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    section(
        "Server",
        format!(
            "redis_version:7.0.15\r\nrcodis_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmonotonic_clock:POSIX clock_gettime\r\nmultiplexing_api:io_uring\r\natomicvar_api:c11-builtin\r\ngcc_version:0.0.0\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{:0>40}\r\ntcp_port:{}\r\nserver_time_usec:{now_us}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:10\r\nconfigured_hz:10\r\nlru_clock:{}\r\nexecutable:rcodis-proxy\r\nconfig_file:\r\nio_threads_active:0\r\nshards:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            sh.token,
            sh.port.load(Ordering::Relaxed),
            uptime / 86400,
            (now_us / 1_000_000) & 0xFF_FFFF,
            sh.commands.len(),
        ),
    );
    section(
        "Clients",
        format!(
            "connected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n",
            sh.clients.load(Ordering::Relaxed),
            sh.config.max_clients,
            sh.blocked.load(Ordering::Relaxed),
        ),
    );
    let human = rcodis_core::num::bytes_to_human;
    let missing = |name: &str| missing_line(name, groups.missing);
    let (used, rss, peak) = (
        groups.sum("used_memory"),
        groups.sum("used_memory_rss"),
        groups.sum("used_memory_peak"),
    );
    let maxmemory = if groups.unlimited {
        0
    } else {
        groups.sum("maxmemory")
    };
    let policy = groups
        .policies
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    section(
        "Memory",
        format!(
            "used_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nmaxmemory:{maxmemory}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{:.2}\r\nmem_allocator:{}\r\nproxy_used_memory_rss:{}\r\n{}",
            human(used),
            human(rss),
            human(peak),
            human(maxmemory),
            if policy.is_empty() { "noeviction" } else { &policy },
            if used > 0 { rss as f64 / used as f64 } else { 1.0 },
            groups.allocator.as_deref().unwrap_or("libc"),
            rcodis_core::process::rss_bytes(),
            missing("memory"),
        ),
    );
    let commands: u64 = sh.commands.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    section(
        "Stats",
        format!(
            "total_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\ntotal_error_replies:{}\r\n{}",
            sh.total_connections.load(Ordering::Relaxed),
            commands,
            sh.ops.lock().expect("ops lock").per_sec(),
            sh.rejected.load(Ordering::Relaxed),
            groups.sum("expired_keys"),
            groups.sum("evicted_keys"),
            groups.sum("keyspace_hits"),
            groups.sum("keyspace_misses"),
            sh.command_stats().iter().map(|(_, c)| c.errors).sum::<u64>(),
            missing("stats"),
        ),
    );
    section(
        "Replication",
        "role:master\r\nconnected_slaves:0\r\n".to_string(),
    );
    let (sys, user) = rcodis_core::process::cpu_times();
    section(
        "CPU",
        format!(
            "used_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n"
        ),
    );
    section("Errorstats", {
        let mut body = String::new();
        for (kind, n) in crate::stats::error_kinds(&sh.stats) {
            body.push_str(&format!("errorstat_{kind}:count={n}\r\n"));
        }
        body
    });
    section("Cluster", "cluster_enabled:0\r\n".to_string());
    section(
        "Proxy",
        format!(
            "product:{}\r\ntoken:{}\r\nslot_table_epoch:{}\r\napplied_epoch:{}\r\ncoordinator:{}\r\ncoordinator_reachable:{}\r\nbackends:{}\r\nadmin_addr:{}\r\n",
            sh.config.product,
            sh.token,
            t.epoch,
            sh.applied_epoch(),
            if sh.config.coordinator.is_empty() {
                "none (static table)"
            } else {
                sh.config.coordinator.as_str()
            },
            if sh.config.coordinator.is_empty() {
                1
            } else {
                sh.coordinator_ok.load(Ordering::Relaxed) as u8
            },
            t.backends.join(","),
            sh.admin_addr.lock().expect("admin lock"),
        ),
    );
    if want.wants("commandstats") {
        let mut body = String::new();
        for (name, c) in sh.command_stats() {
            body.push_str(&format!(
                "cmdstat_{}:calls={},usec={},usec_per_call={:.2},rejected_calls=0,failed_calls={}\r\n",
                name,
                c.calls,
                c.usec,
                c.usec as f64 / c.calls as f64,
                c.errors
            ));
        }
        section("Commandstats", body);
    }
    s
}

/// INFO: the proxy's sections, with the memory and stats figures and the keyspace summed
/// over the groups' masters (`dbN:keys=..,expires=..,avg_ttl=..`, avg_ttl weighted by each
/// group's expiring keys). A group that does not answer is left out and counted in
/// `<section>_missing_groups`: INFO keeps answering while a backend is down.
async fn info_merge(rxs: Vec<oneshot::Receiver<Reply>>, req: &Request, shard: &Shard) -> Bytes {
    let want = InfoSections::of(req);
    let mut groups = GroupInfo::default();
    for rx in rxs {
        let text = match rx.await {
            Ok(Ok(b)) if b.first() != Some(&b'-') => parse(&b).and_then(|f| f.as_bytes().cloned()),
            _ => None,
        };
        match text {
            Some(text) => groups.add(&String::from_utf8_lossy(&text)),
            None => groups.missing += 1,
        }
    }
    let mut s = info_text(shard, &want, &groups);
    if want.wants("keyspace") {
        s.push_str("# Keyspace\r\n");
        for (db, (keys, expires, ttl_sum)) in &groups.dbs {
            let avg = if *expires > 0 {
                ttl_sum / *expires as u128
            } else {
                0
            };
            s.push_str(&format!(
                "db{db}:keys={keys},expires={expires},avg_ttl={avg}\r\n"
            ));
        }
        s.push_str(&missing_line("keyspace", groups.missing));
        s.push_str("\r\n");
    }
    frame(&Frame::Bulk(Bytes::from(s)))
}

/// `<section>_missing_groups:N` when some group did not answer INFO, else nothing.
fn missing_line(section: &str, missing: usize) -> String {
    if missing > 0 {
        format!("{section}_missing_groups:{missing}\r\n")
    } else {
        String::new()
    }
}

/// COMMAND and its subcommands, from rcodis-core's table.
fn command(spec: &CommandSpec, req: &Request) -> Bytes {
    match spec.name {
        "command|count" => frame(&Frame::Integer(table::COMMANDS.len() as i64)),
        "command|list" => frame(&Frame::Array(
            table::COMMANDS
                .iter()
                .map(|c| Frame::bulk(c.name))
                .collect(),
        )),
        "command|docs" => {
            // A map (flat in RESP2): name -> {summary, since}, as rcodis-server answers.
            let specs: Vec<&CommandSpec> = if req.len() == 2 {
                table::COMMANDS.iter().collect()
            } else {
                (2..req.len())
                    .filter_map(|i| table::lookup(req.arg(i)))
                    .collect()
            };
            let mut items = Vec::with_capacity(specs.len() * 2);
            for c in specs {
                items.push(Frame::bulk(c.name));
                items.push(Frame::Array(vec![
                    Frame::bulk("summary"),
                    Frame::bulk(""),
                    Frame::bulk("since"),
                    Frame::bulk("1.0.0"),
                ]));
            }
            frame(&Frame::Array(items))
        }
        "command|getkeys" => {
            let args: Vec<&[u8]> = (2..req.len()).map(|i| req.arg(i)).collect();
            match table::resolve(|i| args.get(i).copied()) {
                Ok(s) => match table::key_indexes(s, &args, false) {
                    Ok(idx) if !idx.is_empty() => frame(&Frame::Array(
                        idx.iter().map(|&i| Frame::bulk(args[i])).collect(),
                    )),
                    Ok(_) => err("ERR The command has no key arguments"),
                    Err(_) => err("ERR Invalid arguments specified for command"),
                },
                Err(_) => err("ERR Invalid command specified"),
            }
        }
        _ => {
            let entry = |c: &CommandSpec| {
                Frame::Array(vec![
                    Frame::bulk(c.name),
                    Frame::Integer(c.arity as i64),
                    Frame::Array(
                        c.flags
                            .names()
                            .map(|n| Frame::Simple(Bytes::from_static(n.as_bytes())))
                            .collect(),
                    ),
                    Frame::Integer(c.first_key as i64),
                    Frame::Integer(c.last_key as i64),
                    Frame::Integer(c.key_step as i64),
                ])
            };
            let specs: Vec<Option<&CommandSpec>> = if spec.name == "command" || req.len() == 2 {
                table::COMMANDS.iter().map(Some).collect()
            } else {
                (2..req.len()).map(|i| table::lookup(req.arg(i))).collect()
            };
            frame(&Frame::Array(
                specs
                    .into_iter()
                    .map(|s| s.map(entry).unwrap_or(Frame::NullArray))
                    .collect(),
            ))
        }
    }
}

fn raw(req: &Request) -> Bytes {
    match req.raw() {
        Some(r) => r.clone(),
        None => {
            let mut b = Vec::new();
            req.write_resp(&mut b);
            Bytes::from(b)
        }
    }
}
