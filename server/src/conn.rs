//! One client connection: read, decode every buffered request, run them, reply in order.
//!
//! A batch of pipelined requests is processed in order. A data command whose keys all live
//! on this shard runs inline; one whose keys live on one other shard is queued for that
//! shard, and the queued requests of a batch go out as one job per shard, run in parallel
//! across shards and in order within each. Replies are assembled in request order. Commands
//! that depend on earlier ones (connection state, cross-shard keys, transactions, blocking)
//! first flush what is queued. Same key, same shard, so per-key order always holds.

use crate::cmd::Replied;
use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc::UnboundedReceiver;
use futures::{FutureExt, StreamExt};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rcodis_core::cmd::{self as table, CommandFlags, CommandSpec};
use rcodis_core::resp::{Limits, Request, RequestDecoder};
use smallvec::SmallVec;

use crate::blocking::{BlockOp, Waiter};
use crate::exec::{exec_atomic, exec_batch, exec_local, Queued};
use crate::out::Out;
use crate::pubsub::Sub;
use crate::shard::Shard;

/// What CLIENT LIST shows about a connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub laddr: String,
    pub fd: i32,
    pub name: Bytes,
    pub db: usize,
    pub created: Instant,
    pub last_active: Instant,
    pub last_cmd: &'static str,
    pub resp: u8,
    pub sub: usize,
    pub psub: usize,
    pub multi: i64,
    pub lib_name: Bytes,
    pub lib_ver: Bytes,
    pub no_evict: bool,
    /// In a blocking command now (CLIENT LIST's `b` flag).
    pub blocked: bool,
    /// Where this connection's messages go (for CLIENT TRACKING ... REDIRECT to it).
    pub mailbox: Arc<crate::tracking::Mailbox>,
    /// Its CLIENT TRACKING state.
    pub tracking: Option<Arc<crate::tracking::Tracker>>,
}

impl ClientInfo {
    /// One CLIENT LIST line (without the newline), in Redis 7.0's field order.
    pub fn line(&self) -> String {
        let now = Instant::now();
        // Redis's flags: b blocked, P subscribed, x in MULTI; N none of them.
        let mut flags = String::new();
        if self.blocked {
            flags.push('b');
        }
        if self.sub + self.psub > 0 {
            flags.push('P');
        }
        if self.multi >= 0 {
            flags.push('x');
        }
        let mut redir = -1;
        if let Some(t) = &self.tracking {
            flags.push('t');
            if t.broken.load(Ordering::Relaxed) {
                flags.push('R');
            }
            if t.opts.bcast {
                flags.push('B');
            }
            redir = t.opts.redirect as i64;
        }
        if flags.is_empty() {
            flags.push('N');
        }
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=16384 rbp=16384 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir={} resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            String::from_utf8_lossy(&self.name),
            now.duration_since(self.created).as_secs(),
            now.duration_since(self.last_active).as_secs(),
            flags,
            self.db,
            self.sub,
            self.psub,
            self.multi,
            self.last_cmd,
            redir,
            self.resp,
            String::from_utf8_lossy(&self.lib_name),
            String::from_utf8_lossy(&self.lib_ver),
        )
    }
}

/// A reply part: local bytes in the batch buffer, a slot for a queued remote reply, or
/// bytes that came back from another shard.
enum Part {
    Local(usize, usize),
    Pending {
        shard: usize,
        idx: usize,
    },
    /// A pending reply the client does not want (CLIENT REPLY).
    Dropped,
    Remote(Bytes),
}

/// The replies of one batch of pipelined requests, in order.
struct Batch {
    resp3: bool,
    out: BytesMut,
    parts: Vec<Part>,
    first_unflushed: usize,
    pending: Vec<Vec<(Queued, Option<u16>)>>,
    any_pending: bool,
    /// How many times the replies were taken (sent).
    taken: u64,
    /// The client whose batch this is, and whether its reads are tracked.
    client: (u64, bool),
}

impl Batch {
    fn new(nr_shards: usize, resp3: bool, client: u64) -> Self {
        let client = (client, false);
        Batch {
            client,
            resp3,
            out: BytesMut::with_capacity(4096),
            parts: Vec::new(),
            first_unflushed: 0,
            pending: (0..nr_shards).map(|_| Vec::new()).collect(),
            any_pending: false,
            taken: 0,
        }
    }

    /// Appends locally produced reply bytes.
    fn local(&mut self, bytes: &[u8]) {
        let start = self.out.len();
        self.out.extend_from_slice(bytes);
        self.mark_local(start);
    }

    fn mark_local(&mut self, start: usize) {
        let end = self.out.len();
        if let Some(Part::Local(_, e)) = self.parts.last_mut() {
            if *e == start {
                *e = end;
                return;
            }
        }
        self.parts.push(Part::Local(start, end));
    }

    fn err(&mut self, msg: &str) {
        let start = self.out.len();
        rcodis_core::resp::encode::write_error(&mut self.out, msg.as_bytes());
        self.mark_local(start);
    }

    /// Where the replies stand now (for [`Batch::drop_since`]).
    fn mark(&self) -> (u64, usize, usize) {
        (self.taken, self.out.len(), self.parts.len())
    }

    /// Drops the replies added since `mark` (CLIENT REPLY OFF/SKIP); a reply still to come
    /// from another shard is dropped when it arrives.
    fn drop_since(&mut self, (taken, out_len, parts_len): (u64, usize, usize)) {
        // The batch went out meanwhile (a blocking command sends what preceded it): all
        // that is left is this command's.
        let (out_len, parts_len) = if taken == self.taken {
            (out_len, parts_len)
        } else {
            (0, 0)
        };
        for p in &mut self.parts[parts_len..] {
            match *p {
                Part::Pending { .. } => *p = Part::Dropped,
                _ => *p = Part::Remote(Bytes::new()),
            }
        }
        if let Some(Part::Local(_, e)) = self.parts[..parts_len].last_mut() {
            *e = (*e).min(out_len);
        }
        // The bytes past the mark belonged to this reply only.
        self.out.truncate(out_len);
    }

    fn queue_remote(&mut self, shard: usize, item: Queued, slot: Option<u16>) {
        let idx = self.pending[shard].len();
        self.pending[shard].push((item, slot));
        self.parts.push(Part::Pending { shard, idx });
        self.any_pending = true;
    }

    /// Sends every queued remote request and fills in the replies.
    async fn flush(&mut self, shard: &Rc<Shard>) {
        if !self.any_pending {
            return;
        }
        self.any_pending = false;
        let resp3 = self.resp3;
        let client = self.client;
        self.client.1 = false;
        let mut futs = Vec::new();
        for (target, items) in self.pending.iter_mut().enumerate() {
            if items.is_empty() {
                continue;
            }
            let items = std::mem::take(items);
            futs.push(async move {
                let r = shard
                    .run_on(target, move |st| exec_batch(st, &items, resp3, client))
                    .await;
                (target, r)
            });
        }
        let results = futures::future::join_all(futs).await;
        let mut by_shard: Vec<Option<(Bytes, Vec<usize>)>> =
            (0..self.pending.len()).map(|_| None).collect();
        for (target, (bytes, lens)) in results {
            let mut offs = Vec::with_capacity(lens.len() + 1);
            let mut o = 0;
            offs.push(0);
            for l in lens {
                o += l;
                offs.push(o);
            }
            by_shard[target] = Some((bytes, offs));
        }
        for p in &mut self.parts[self.first_unflushed..] {
            match *p {
                Part::Pending { shard: s, idx } => {
                    let (bytes, offs) = by_shard[s].as_ref().expect("remote batch replied");
                    *p = Part::Remote(bytes.slice(offs[idx]..offs[idx + 1]));
                }
                Part::Dropped => *p = Part::Remote(Bytes::new()),
                _ => {}
            }
        }
        self.first_unflushed = self.parts.len();
    }

    /// Gives the reply buffer back after writing, keeping its capacity for the next batch.
    fn recycle(&mut self, mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() >= self.out.capacity() {
            self.out = buf;
        }
    }

    /// The finished reply bytes of the batch.
    fn take(&mut self) -> BytesMut {
        self.taken += 1;
        if self.parts.iter().all(|p| matches!(p, Part::Local(..))) {
            self.parts.clear();
            self.first_unflushed = 0;
            return std::mem::take(&mut self.out);
        }
        let total: usize = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Local(a, b) => b - a,
                Part::Remote(b) => b.len(),
                Part::Pending { .. } | Part::Dropped => 0,
            })
            .sum();
        let mut buf = BytesMut::with_capacity(total);
        for p in &self.parts {
            match p {
                Part::Local(a, b) => buf.extend_from_slice(&self.out[*a..*b]),
                Part::Remote(b) => buf.extend_from_slice(b),
                Part::Pending { .. } | Part::Dropped => {
                    unreachable!("flushed before take")
                }
            }
        }
        self.parts.clear();
        self.first_unflushed = 0;
        self.out.clear();
        buf
    }
}

/// A connection's state.
pub struct Conn {
    pub shard: Rc<Shard>,
    pub id: u64,
    pub db: usize,
    pub resp3: bool,
    pub authed: bool,
    pub name: Bytes,
    pub lib_name: Bytes,
    pub lib_ver: Bytes,
    pub no_evict: bool,
    pub addr: String,
    pub laddr: String,
    pub fd: i32,
    pub created: Instant,
    multi: Option<Vec<Queued>>,
    multi_dirty: bool,
    multi_db: usize,
    watched: Vec<(usize, Bytes, u64)>,
    pub subs: HashSet<Bytes>,
    pub psubs: HashSet<Bytes>,
    pub ssubs: HashSet<Bytes>,
    msg_rx: Option<UnboundedReceiver<Bytes>>,
    msg_overflow: Arc<AtomicBool>,
    pub close: bool,
    /// The replication link of this (replica) server: its writes are allowed while its
    /// generation is current (a later REPLICAOF ends it).
    master_link: bool,
    link_generation: u64,
    /// An rcodis replica (REPLCONF capa rcodis): its full sync comes as commands.
    repl_rcodis: bool,
    /// CLIENT REPLY OFF: no replies; CLIENT REPLY SKIP: none for the next command.
    pub reply_off: bool,
    pub reply_skip_next: bool,
    /// A replica's port (REPLCONF listening-port).
    repl_port: u16,
    last_cmd: &'static str,
    /// Bytes already read while blocked, to process next.
    stash: BytesMut,
    /// Inside EXEC: blocking commands must not block.
    in_exec: bool,
    /// Time of the current batch (and of the last command run inline).
    clock: crate::exec::Clock,
    /// The last command resolved, reused while a pipeline repeats it.
    last_spec: Option<&'static CommandSpec>,
    /// The slot of the current request's first argument, when a prefetch already took it.
    slot_memo: Option<u16>,
    /// Whether CLIENT LIST's view of this connection needs a full refresh.
    info_dirty: bool,
    pub mailbox: Arc<crate::tracking::Mailbox>,
    /// CLIENT TRACKING on: this client's tracker.
    pub tracking: Option<Arc<crate::tracking::Tracker>>,
    /// CLIENT CACHING yes/no given for the next command (or transaction), and whether the
    /// command now running ends that.
    pub caching: bool,
    caching_ends: bool,
}

const SUBSCRIBED_ONLY: &str =
    "only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context";

/// Serves one accepted connection until it closes.
pub async fn serve(shard: Rc<Shard>, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let shared = shard.shared.clone();
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let addr = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let laddr = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let fd = stream.as_raw_fd();
    let requirepass = shared.requirepass();
    let (msg_tx, msg_rx) = futures::channel::mpsc::unbounded();
    let mailbox = Arc::new(crate::tracking::Mailbox {
        tx: msg_tx,
        queued: Arc::new(AtomicUsize::new(0)),
        resp3: AtomicBool::new(false),
        pubsub: AtomicBool::new(false),
    });
    let mut conn = Conn {
        shard: shard.clone(),
        id,
        db: 0,
        resp3: false,
        authed: requirepass.is_empty(),
        name: Bytes::new(),
        lib_name: Bytes::new(),
        lib_ver: Bytes::new(),
        no_evict: false,
        addr,
        laddr,
        fd,
        created: Instant::now(),
        multi: None,
        multi_dirty: false,
        multi_db: 0,
        watched: Vec::new(),
        subs: HashSet::new(),
        psubs: HashSet::new(),
        ssubs: HashSet::new(),
        msg_rx: Some(msg_rx),
        msg_overflow: Arc::new(AtomicBool::new(false)),
        close: false,
        master_link: false,
        link_generation: 0,
        repl_port: 0,
        repl_rcodis: false,
        reply_off: false,
        reply_skip_next: false,
        last_cmd: "NULL",
        stash: BytesMut::new(),
        in_exec: false,
        clock: crate::exec::Clock::start(),
        last_spec: None,
        slot_memo: None,
        info_dirty: false,
        mailbox,
        tracking: None,
        caching: false,
        caching_ends: false,
    };
    shard.state.borrow_mut().clients.insert(id, conn.info());
    let config = shared.config();
    let max_bulk = crate::config::parse_memory(&shared.param("proto-max-bulk-len"))
        .unwrap_or(512 << 20) as usize;
    let qbuf_limit =
        crate::config::parse_memory(&config.client_query_buffer_limit).unwrap_or(1 << 30) as usize;
    let full_limits = Limits {
        max_bulk_len: max_bulk,
        ..Limits::default()
    };
    let mut decoder = RequestDecoder::new(if conn.authed {
        full_limits
    } else {
        Limits::unauthenticated()
    });
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut tmp = vec![0u8; 16 * 1024];
    let mut msg_rx = conn.msg_rx.take().expect("message receiver");
    let mut batch = Batch::new(shard.nr_shards, conn.resp3, id);
    let mut decoded: std::collections::VecDeque<Request> = std::collections::VecDeque::new();
    let mut slots: Vec<Option<u16>> = Vec::new();
    let mut pending_error = None;
    'outer: loop {
        // Wait for input, or for pub/sub messages while subscribed.
        let n = if conn.stash.is_empty() {
            let subscribed = conn.subscribed();
            // Messages may come while subscribed, tracking, or (RESP3) as a redirect target.
            conn.mailbox.pubsub.store(subscribed, Ordering::Relaxed);
            conn.mailbox.resp3.store(conn.resp3, Ordering::Relaxed);
            if subscribed || conn.resp3 || conn.tracking.is_some() {
                futures::select_biased! {
                    m = msg_rx.next() => {
                        if let Some(m) = m {
                            let mut out = BytesMut::from(&m[..]);
                            conn.mailbox.queued.fetch_sub(m.len(), Ordering::AcqRel);
                            while let Ok(m) = msg_rx.try_recv() {
                                conn.mailbox.queued.fetch_sub(m.len(), Ordering::AcqRel);
                                out.extend_from_slice(&m);
                            }
                            if conn.msg_overflow.load(Ordering::Acquire) {
                                tracing::warn!(client = id, "subscriber closed: output buffer limit reached");
                                break 'outer;
                            }
                            if stream.write_all(&out).await.is_err() {
                                break 'outer;
                            }
                        }
                        continue 'outer;
                    }
                    r = stream.read(&mut tmp).fuse() => match r {
                        Ok(0) | Err(_) => break 'outer,
                        Ok(n) => n,
                    },
                }
            } else {
                match stream.read(&mut tmp).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                }
            }
        } else {
            let s = std::mem::take(&mut conn.stash);
            rbuf.extend_from_slice(&s);
            0
        };
        rbuf.extend_from_slice(&tmp[..n]);
        shared
            .net_input_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        if rbuf.len() > qbuf_limit {
            tracing::warn!(client = id, addr = %conn.addr, "closing client: query buffer limit ({qbuf_limit} bytes) reached");
            break;
        }
        batch.resp3 = conn.resp3;
        conn.clock = crate::exec::Clock::start();
        // A pipelined batch: decode it whole, then look every first key up once before
        // running anything, so the cache misses of many lookups overlap instead of stalling
        // one command after another. Only once authenticated (the limits change with AUTH).
        let mut ahead = 0;
        if conn.authed {
            let mut failed = None;
            while decoded.len() < 256 {
                match decoder.decode(&mut rbuf) {
                    Ok(Some(req)) => decoded.push_back(req),
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            ahead = decoded.len();
            if ahead > 1 {
                conn.prefetch(&decoded, &mut slots);
            }
            pending_error = failed;
        }
        loop {
            let next = if let Some(req) = decoded.pop_front() {
                conn.slot_memo = slots.get(ahead - decoded.len() - 1).copied().flatten();
                Ok(Some(req))
            } else if let Some(e) = pending_error.take() {
                Err(e)
            } else {
                decoder.decode(&mut rbuf)
            };
            match next {
                Ok(Some(req)) => {
                    let quiet = (conn.reply_off || conn.reply_skip_next)
                        .then(|| conn.quiet_start(&req, &batch));
                    conn.handle(req, &mut batch, &mut stream).await;
                    if let Some(q) = quiet {
                        conn.quiet_end(q, &mut batch);
                    }
                    conn.slot_memo = None;
                    if conn.authed && decoder.limits().max_array_len != full_limits.max_array_len {
                        decoder.set_limits(full_limits);
                    }
                    if conn.close {
                        decoded.clear();
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(client = id, error = %e, "protocol error");
                    batch.flush(&shard).await;
                    batch.err(&format!("ERR {e}"));
                    conn.close = true;
                    break;
                }
            }
        }
        slots.clear();
        batch.flush(&shard).await;
        // appendfsync always: this batch's writes are durable before any reply goes out. One
        // fsync serves every connection that appended meanwhile (group commit): yield once
        // so they can, then sync unless someone already did.
        let point = shard
            .state
            .borrow_mut()
            .aof
            .as_mut()
            .and_then(|a| a.commit_point());
        if let Some(point) = point {
            glommio::executor().yield_now().await;
            if let Some(a) = shard.state.borrow_mut().aof.as_mut() {
                a.commit(point);
            }
        }
        shard.send_deferred();
        let out = batch.take();
        if !out.is_empty() {
            // Replies leave after every connection that was ready has run its batch (as
            // Redis writes all replies before it waits again): a client with many
            // connections is then woken once for many replies, not once per reply, which on
            // a virtual machine costs both sides a wake-up each time.
            glommio::executor().yield_now().await;
            shared
                .net_output_bytes
                .fetch_add(out.len() as u64, Ordering::Relaxed);
            if stream.write_all(&out).await.is_err() {
                break;
            }
        }
        batch.recycle(out);
        conn.touch_info();
        if conn.close {
            break;
        }
    }
    conn.cleanup().await;
    shared.connected_clients.fetch_sub(1, Ordering::Relaxed);
}

impl Conn {
    fn info(&self) -> ClientInfo {
        ClientInfo {
            id: self.id,
            addr: self.addr.clone(),
            laddr: self.laddr.clone(),
            fd: self.fd,
            name: self.name.clone(),
            db: self.db,
            created: self.created,
            last_active: Instant::now(),
            last_cmd: self.last_cmd,
            resp: if self.resp3 { 3 } else { 2 },
            sub: self.subs.len() + self.ssubs.len(),
            psub: self.psubs.len(),
            multi: self.multi.as_ref().map(|m| m.len() as i64).unwrap_or(-1),
            lib_name: self.lib_name.clone(),
            lib_ver: self.lib_ver.clone(),
            no_evict: self.no_evict,
            blocked: false,
            mailbox: self.mailbox.clone(),
            tracking: self.tracking.clone(),
        }
    }

    /// Shows this connection as blocked (or not) in CLIENT LIST.
    fn show_blocked(&self, blocked: bool) {
        let mut st = self.shard.state.borrow_mut();
        if let Some(ci) = st.clients.get_mut(&self.id) {
            ci.blocked = blocked;
            ci.last_cmd = self.last_cmd;
            ci.last_active = Instant::now();
        }
    }

    fn update_info(&self) {
        let info = self.info();
        self.shard.state.borrow_mut().clients.insert(self.id, info);
    }

    /// Cheap per-batch refresh of CLIENT LIST's view; a full one when something changed.
    fn touch_info(&mut self) {
        if self.info_dirty {
            self.info_dirty = false;
            return self.update_info();
        }
        let mut st = self.shard.state.borrow_mut();
        if let Some(ci) = st.clients.get_mut(&self.id) {
            ci.last_active = Instant::now();
            ci.last_cmd = self.last_cmd;
            ci.db = self.db;
        }
    }

    /// Whether a RESP2 connection is in subscribed mode (PING replies differently).
    pub fn subscribed_resp2(&self) -> bool {
        !self.resp3 && self.subscribed()
    }

    /// Refreshes this connection's CLIENT LIST entry now.
    pub fn update_info_now(&self) {
        self.update_info();
    }

    /// This connection's CLIENT INFO line.
    pub fn info_line(&self) -> String {
        self.info().line()
    }

    pub fn subscribed(&self) -> bool {
        !(self.subs.is_empty() && self.psubs.is_empty() && self.ssubs.is_empty())
    }

    /// Leaves every subscription, watch and registry entry.
    async fn cleanup(&mut self) {
        self.unwatch_all().await;
        if self.tracking.take().is_some() {
            crate::tracking::disable(self.id);
        }
        let id = self.id;
        if self.subscribed() {
            self.shard
                .run_on_all(move |st| st.pubsub.remove_client(id))
                .await;
        }
        self.shard.state.borrow_mut().clients.remove(&id);
    }

    async fn unwatch_all(&mut self) {
        for (db, key, _) in std::mem::take(&mut self.watched) {
            let owner = self.shard.shard_of(&key);
            self.shard
                .run_on(owner, move |st| st.dbs[db].unwatch(&key))
                .await;
        }
    }

    /// CLIENT PAUSE: waits while the server is paused for this command (every command, or
    /// with WRITE those that write or may: scripts, PUBLISH, PFCOUNT), as Redis holds them.
    #[cold]
    async fn wait_while_paused(&mut self, spec: &'static CommandSpec) {
        let sh = self.shard.shared.clone();
        let mut held = false;
        loop {
            let until = sh.pause_until_ms.load(Ordering::Relaxed);
            let now = crate::db::now_ms();
            let writes = spec.has(CommandFlags::WRITE)
                || matches!(
                    spec.name,
                    "eval" | "evalsha" | "fcall" | "pfcount" | "publish" | "spublish"
                );
            if until <= now || (!sh.pause_all.load(Ordering::Relaxed) && !writes) {
                if held {
                    sh.paused_clients.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
            if !held {
                held = true;
                sh.paused_clients.fetch_add(1, Ordering::Relaxed);
            }
            // Short waits: CLIENT UNPAUSE from another client ends the pause early.
            glommio::timer::sleep(Duration::from_millis((until - now).min(10))).await;
        }
    }

    /// Under CLIENT REPLY OFF or SKIP, before a command: whether its reply is skipped (SKIP
    /// covers one command), whether it is a subscription (its confirmations are pushes, which
    /// still go out, as in Redis, in RESP2 too), and where the replies stand.
    #[cold]
    fn quiet_start(&mut self, req: &Request, b: &Batch) -> (bool, bool, (u64, usize, usize)) {
        let skip = std::mem::take(&mut self.reply_skip_next);
        let name = req.get(0).unwrap_or(b"");
        let push = name.len() >= 9 && name[name.len() - 9..].eq_ignore_ascii_case(b"subscribe");
        (skip, push, b.mark())
    }

    /// After it: its reply dropped unless the client turned replies back on.
    #[cold]
    fn quiet_end(&mut self, (skip, push, mark): (bool, bool, (u64, usize, usize)), b: &mut Batch) {
        if (self.reply_off || skip) && !push {
            b.drop_since(mark);
        }
    }

    /// Handles one request, appending its reply to the batch.
    async fn handle(&mut self, req: Request, b: &mut Batch, stream: &mut TcpStream) {
        let spec = match table::resolve_request_after(self.last_spec, &req) {
            Ok(s) => {
                self.last_spec = Some(s);
                s
            }
            Err(e) => {
                // Unknown commands and wrong arity are told before NOAUTH, as Redis does.
                if req.arg(0).eq_ignore_ascii_case(b"exec") {
                    // As Redis: a refused EXEC discards the transaction (and the watches).
                    self.multi = None;
                    self.multi_dirty = false;
                    self.unwatch_all().await;
                    let why = e.message().strip_prefix("ERR ").unwrap_or(e.message());
                    return b.err(&format!(
                        "EXECABORT Transaction discarded because of: {why}"
                    ));
                }
                if self.multi.is_some() {
                    self.multi_dirty = true;
                }
                return b.err(e.message());
            }
        };
        self.last_cmd = spec.name;
        if self.tracking.is_some() || self.caching {
            self.tracking_before(spec);
        }
        if !self.authed
            && !matches!(
                spec.name,
                "auth" | "hello" | "quit" | "reset" | "slotsrestore-async-auth"
            )
        {
            return b.err("NOAUTH Authentication required.");
        }
        if !spec.has(CommandFlags::LOADING) && self.shard.shared.loading.load(Ordering::Relaxed) {
            if self.multi.is_some() {
                self.multi_dirty = true;
            }
            return b.err("LOADING Redis is loading the dataset in memory");
        }
        if self.master_link
            && self.shard.shared.repl.generation.load(Ordering::SeqCst) != self.link_generation
        {
            // A link of a master this server no longer follows.
            self.close = true;
            return b.err("ERR replication link closed");
        }
        if spec.has(CommandFlags::WRITE)
            && !self.master_link
            && self.shard.shared.repl.replica.load(Ordering::Relaxed)
        {
            if self.multi.is_some() {
                self.multi_dirty = true;
            }
            return b.err("READONLY You can't write against a read only replica.");
        }
        if self.shard.shared.pause_until_ms.load(Ordering::Relaxed) != 0 && !self.master_link {
            Box::pin(self.wait_while_paused(spec)).await;
        }
        if self.multi.is_some()
            && !matches!(
                spec.name,
                "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
            )
        {
            return self.queue(spec, req, b);
        }
        if !self.resp3
            && self.subscribed()
            && !matches!(
                spec.name,
                "subscribe"
                    | "psubscribe"
                    | "ssubscribe"
                    | "unsubscribe"
                    | "punsubscribe"
                    | "sunsubscribe"
                    | "ping"
                    | "quit"
                    | "reset"
            )
        {
            return b.err(&format!(
                "ERR Can't execute '{}': {SUBSCRIBED_ONLY}",
                spec.name
            ));
        }
        if crate::cmd::handler(spec).is_some() && !self.needs_conn_level(spec, &req) {
            return self.data(spec, req, b).await;
        }
        b.flush(&self.shard).await;
        let start = crate::exec::ticks();
        let mut out = Out::new(self.resp3);
        self.conn_command(spec, &req, &mut out, stream).await;
        {
            // Counted in INFO commandstats and SLOWLOG as Redis counts them (after they ran;
            // a blocking command's wait is not its running time).
            let usec = if spec.has(CommandFlags::BLOCKING) {
                0
            } else {
                crate::exec::ticks_to_us(start, crate::exec::ticks())
            };
            let mut st = self.shard.state.borrow_mut();
            st.total_commands += 1;
            crate::shard::record(&mut st, spec.id, usec, out.buf.first() == Some(&b'-'));
            if st.slowlog_threshold_us >= 0
                && usec as i64 >= st.slowlog_threshold_us
                && !spec.has(CommandFlags::SKIP_SLOWLOG)
            {
                crate::exec::slowlog_push(&mut st, &req, usec);
            }
        }
        b.resp3 = self.resp3;
        b.local(&out.buf);
        // Connection state may have changed (name, db, protocol, subscriptions).
        self.info_dirty = true;
        self.clock = crate::exec::Clock::start();
    }

    /// Looks up the first argument of every request of a batch as a key (read-only, without
    /// touching access times or expiring anything), noting each one's slot in `slots`.
    fn prefetch(&self, reqs: &std::collections::VecDeque<Request>, slots: &mut Vec<Option<u16>>) {
        slots.clear();
        let st = self.shard.state.borrow();
        let Some(db) = st.dbs.get(self.db) else {
            return;
        };
        // Three passes of short loops, so the processor keeps many cache misses in flight:
        // the slots (CRCs), then the tables' control bytes (prefetching candidate buckets),
        // then the buckets themselves (prefetching string values).
        slots.extend(
            reqs.iter()
                .map(|req| (req.len() >= 2).then(|| rcodis_core::slot::slot_of(req.arg(1)))),
        );
        for (req, slot) in reqs.iter().zip(slots.iter()) {
            if let Some(slot) = *slot {
                db.prefetch_probe(req.arg(1), slot);
            }
        }
        for (req, slot) in reqs.iter().zip(slots.iter()) {
            if let Some(slot) = *slot {
                db.prefetch(req.arg(1), slot);
            }
        }
    }

    /// Data commands that still need the connection (COPY to another database, XREAD and
    /// XREADGROUP with BLOCK outside transactions).
    fn needs_conn_level(&self, spec: &CommandSpec, req: &Request) -> bool {
        if spec.name == "copy" {
            return req.args().skip(3).any(|a| a.eq_ignore_ascii_case(b"db"));
        }
        // The only blocking commands with data handlers: XREAD and XREADGROUP.
        match spec.has(rcodis_core::cmd::CommandFlags::BLOCKING) {
            false => false,
            true => {
                !self.in_exec
                    && self.multi.is_none()
                    && req
                        .args()
                        .skip(1)
                        .take_while(|a| !a.eq_ignore_ascii_case(b"streams"))
                        .any(|a| a.eq_ignore_ascii_case(b"block"))
            }
        }
    }

    /// Over `maxmemory` with nothing this shard can evict (evicting what it can first, as
    /// Redis does before it queues or runs a command that may grow memory).
    fn out_of_memory(&self) -> bool {
        if crate::memory::max() == 0 || crate::memory::used() <= crate::memory::max() {
            return false;
        }
        if crate::memory::policy() == crate::memory::Policy::NoEviction {
            return true;
        }
        let mut st = self.shard.state.borrow_mut();
        crate::memory::ensure_room(&mut st.dbs, crate::db::now_ms()).is_err()
    }

    fn queue(&mut self, spec: &'static CommandSpec, req: Request, b: &mut Batch) {
        if matches!(spec.name, "watch") {
            return b.err("ERR WATCH inside MULTI is not allowed");
        }
        if spec.has(rcodis_core::cmd::CommandFlags::NO_MULTI) && !matches!(spec.name, "multi") {
            self.multi_dirty = true;
            return b.err("ERR Command not allowed inside a transaction");
        }
        // As Redis: a command that may grow memory is refused while queueing when over
        // `maxmemory` with nothing to evict, and the transaction is then aborted.
        if spec.has(rcodis_core::cmd::CommandFlags::DENYOOM) && self.out_of_memory() {
            self.multi_dirty = true;
            return b.err(crate::memory::OOM);
        }
        if spec.name == "select" {
            // Later queued commands run in the selected database.
            if let Some(db) = std::str::from_utf8(req.arg(1))
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            {
                if db < self.shard.state.borrow().dbs.len() {
                    self.multi_db = db;
                }
            }
        }
        let db = self.multi_db;
        self.multi.as_mut().expect("in MULTI").push((db, spec, req));
        b.local(b"+QUEUED\r\n");
    }

    /// CLIENT CACHING lasts for one command, or one transaction (Redis clears it after any
    /// command but CLIENT's when not in MULTI).
    #[cold]
    fn tracking_before(&mut self, spec: &CommandSpec) {
        if std::mem::take(&mut self.caching_ends) {
            self.caching = false;
        }
        let in_multi_after = match spec.name {
            "multi" => true,
            "exec" | "discard" | "reset" => false,
            _ => self.multi.is_some(),
        };
        self.caching_ends = !spec.name.starts_with("client|") && !in_multi_after;
    }

    /// Whether this client's reads are recorded now (default mode; OPTIN only after CLIENT
    /// CACHING yes, OPTOUT unless CLIENT CACHING no; `over`: for a whole pending batch,
    /// where recording too much only costs an extra message and too little a stale cache).
    fn tracks_reads(&self, over: bool) -> bool {
        match &self.tracking {
            None => false,
            Some(t) => {
                !t.opts.bcast
                    && (!t.opts.optin || self.caching)
                    && (!t.opts.optout || !self.caching || over)
            }
        }
    }

    /// CLIENT TRACKING (default mode) for commands that run across shards (and
    /// transactions): records the keys a read-only command is about to read, in the tables
    /// of the shards owning them. Recording before the read is safe: a write in between
    /// only sends an invalidation early. (Single-shard commands record in the same step as
    /// the read, see `tracking::after_command`.)
    #[cold]
    fn track_read(&self, spec: &CommandSpec, req: &Request) {
        if !self.tracks_reads(false)
            || !spec.has(CommandFlags::READONLY)
            || spec.has(CommandFlags::PUBSUB)
        {
            return;
        }
        if let Some(keys) = self.keys_of(spec, req) {
            for k in keys {
                crate::tracking::remember(self.shard.shard_of(&k), self.id, &k);
            }
        }
    }

    /// Keys of a request with their owner shards.
    fn keys_of(&self, spec: &CommandSpec, req: &Request) -> Option<SmallVec<[Bytes; 4]>> {
        let args: SmallVec<[&[u8]; 8]> = req.args().collect();
        let idx = table::key_indexes(spec, &args, false).ok()?;
        Some(idx.iter().map(|&i| req.arg_bytes(i)).collect())
    }

    async fn data(&mut self, spec: &'static CommandSpec, req: Request, b: &mut Batch) {
        let db = self.db;
        // Fast path: a command whose only key is its first argument.
        if let [rcodis_core::cmd::KeySpec {
            begin: rcodis_core::cmd::BeginSearch::Index(1),
            find: rcodis_core::cmd::FindKeys::Range { last_key: 0, .. },
            ..
        }] = spec.key_specs
        {
            if !spec.has(rcodis_core::cmd::CommandFlags::MOVABLEKEYS) && req.len() > 1 {
                let slot = self
                    .slot_memo
                    .unwrap_or_else(|| rcodis_core::slot::slot_of(req.arg(1)));
                let target = slot as usize % self.shard.nr_shards;
                return self.run_single(target, db, spec, req, b, Some(slot));
            }
        }
        let Some(keys) = self.keys_of(spec, &req) else {
            // Arguments the key layout cannot read: run against an empty scratch database
            // so the command reports its own argument error without touching data.
            let mut out = Out::new(self.resp3);
            let mut scratch = crate::db::Db::scratch();
            let mut ctx = crate::cmd::Ctx::new(&mut scratch, &mut out, crate::db::now_ms());
            (crate::cmd::handler(spec).expect("handler"))(&mut ctx, &req);
            return b.local(&out.buf);
        };
        let mut target = None;
        let mut multi = false;
        for k in &keys {
            let s = self.shard.shard_of(k);
            match target {
                None => target = Some(s),
                Some(t) if t != s => multi = true,
                _ => {}
            }
        }
        let target = target.unwrap_or(self.shard.id);
        if !multi {
            return self.run_single(target, db, spec, req, b, None);
        }
        if spec.name == "sort"
            && req
                .args()
                .skip(2)
                .any(|a| a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get"))
        {
            // The pattern keys cannot be known before sorting, so they cannot join the
            // atomic cross-shard step: the STORE key must share the source's shard.
            return b.err("ERR SORT with BY or GET cannot STORE into a key on another shard; give both keys the same hash tag");
        }
        b.flush(&self.shard).await;
        if self.tracking.is_some() {
            self.track_read(spec, &req);
        }
        let keyed: Vec<(usize, Bytes)> = keys.into_iter().map(|k| (db, k)).collect();
        let replies = exec_atomic(
            &self.shard,
            vec![(db, spec, req)],
            keyed,
            Vec::new(),
            self.resp3,
        )
        .await
        .expect("no watch");
        b.local(&replies[0]);
    }

    /// Runs a command whose keys all live on `target`: inline here, or queued for that shard.
    fn run_single(
        &mut self,
        target: usize,
        db: usize,
        spec: &'static CommandSpec,
        req: Request,
        b: &mut Batch,
        slot: Option<u16>,
    ) {
        if target == self.shard.id {
            let start = b.out.len();
            {
                let mut st = self.shard.state.borrow_mut();
                let mut out = Out {
                    buf: std::mem::take(&mut b.out),
                    resp3: self.resp3,
                };
                let tracking = crate::tracking::on();
                if tracking {
                    crate::tracking::set_current(self.id, self.tracks_reads(false));
                }
                exec_local(&mut st, db, spec, &req, &mut out, &mut self.clock, slot);
                if tracking {
                    crate::tracking::set_current(0, false);
                }
                b.out = out.buf;
            }
            b.mark_local(start);
        } else {
            if self.tracking.is_some() {
                // A pending batch runs with one setting: record rather more than less.
                b.client.1 = self.tracks_reads(true);
            }
            b.queue_remote(target, (db, spec, req), slot);
        }
    }

    /// Runs a command that needs the connection or the whole server.
    async fn conn_command(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
        out: &mut Out,
        stream: &mut TcpStream,
    ) {
        match spec.name {
            "multi" => {
                if self.multi.is_some() {
                    return out.err("ERR MULTI calls can not be nested");
                }
                self.multi = Some(Vec::new());
                self.multi_dirty = false;
                self.multi_db = self.db;
                out.ok()
            }
            "discard" => {
                if self.multi.take().is_none() {
                    return out.err("ERR DISCARD without MULTI");
                }
                self.unwatch_all().await;
                out.ok()
            }
            "exec" => self.exec(out, stream).await,
            "watch" => {
                if self.multi.is_some() {
                    return out.err("ERR WATCH inside MULTI is not allowed");
                }
                for i in 1..req.len() {
                    let key = req.arg_bytes(i);
                    let db = self.db;
                    let owner = self.shard.shard_of(&key);
                    let k = Bytes::copy_from_slice(&key);
                    let k2 = k.clone();
                    let v = self
                        .shard
                        .run_on(owner, move |st| st.dbs[db].watch(&k2, crate::db::now_ms()))
                        .await;
                    self.watched.push((db, k, v));
                }
                out.ok()
            }
            "unwatch" => {
                self.unwatch_all().await;
                out.ok()
            }
            "blpop" | "brpop" | "blmove" | "brpoplpush" | "blmpop" | "bzpopmin" | "bzpopmax"
            | "bzmpop" => self.blocking(spec, req, out, stream).await,
            "xread" | "xreadgroup" => self.xread_blocking(spec, req, out, stream).await,
            "sync" | "psync" => {
                // The reply is the replication stream itself, until the replica leaves.
                let ip = self
                    .addr
                    .rsplit_once(':')
                    .map(|(h, _)| h.to_string())
                    .unwrap_or_default();
                let format = if self.repl_rcodis {
                    crate::repl::SyncFormat::Rcodis
                } else if spec.name == "psync" {
                    crate::repl::SyncFormat::RedisPsync
                } else {
                    crate::repl::SyncFormat::RedisSync
                };
                crate::repl::serve_replica(
                    &self.shard,
                    self.id,
                    ip,
                    self.repl_port,
                    stream,
                    format,
                )
                .await;
                self.close = true;
            }
            "replconf" => {
                // An option and its value (MASTERLINK, rcodis's own, has two): none at all is
                // fine, as in Redis; an option without its value is not.
                match req.len() {
                    1 => return out.ok(),
                    2 => return out.err(crate::cmd::SYNTAX),
                    _ => {}
                }
                let sub = String::from_utf8_lossy(req.arg(1)).to_ascii_lowercase();
                match sub.as_str() {
                    "listening-port" => match std::str::from_utf8(req.arg(2))
                        .ok()
                        .and_then(|p| p.parse::<u16>().ok())
                    {
                        Some(p) => {
                            self.repl_port = p;
                            out.ok()
                        }
                        None => out.err(crate::cmd::NOT_INT),
                    },
                    "masterlink" => {
                        let generation = std::str::from_utf8(req.get(3).unwrap_or(b""))
                            .ok()
                            .and_then(|g| g.parse::<u64>().ok());
                        if req.len() == 4
                            && req.arg(2) == self.shard.shared.repl.link_token.as_bytes()
                            && generation.is_some()
                        {
                            self.master_link = true;
                            self.link_generation = generation.unwrap_or_default();
                            out.ok()
                        } else {
                            out.err("ERR invalid master link token")
                        }
                    }
                    // `capa rcodis`: an rcodis replica, which takes its full sync as
                    // commands (see `repl.rs`); Redis's capabilities (eof, psync2) need
                    // nothing here.
                    "capa" => {
                        if (2..req.len())
                            .step_by(2)
                            .any(|i| req.arg(i).eq_ignore_ascii_case(b"rcodis"))
                        {
                            self.repl_rcodis = true;
                        }
                        out.ok()
                    }
                    // Redis's other options, accepted (what they tune does not exist here).
                    "ip-address" | "ack" | "getack" | "rdb-only" => out.ok(),
                    _ => out.err(&format!(
                        "ERR Unrecognized REPLCONF option: {}",
                        String::from_utf8_lossy(req.arg(1))
                    )),
                }
            }
            _ => crate::server_cmds::run(self, spec, req, out).await,
        }
    }

    async fn exec(&mut self, out: &mut Out, stream: &mut TcpStream) {
        let Some(queued) = self.multi.take() else {
            return out.err("ERR EXEC without MULTI");
        };
        if self.multi_dirty {
            self.unwatch_all().await;
            return out.err("EXECABORT Transaction discarded because of previous errors.");
        }
        // Over `maxmemory` with nothing to evict, a transaction that may grow memory is
        // discarded whole, as Redis discards it.
        if queued.iter().any(|(_, s, _)| s.has(CommandFlags::DENYOOM)) && self.out_of_memory() {
            self.unwatch_all().await;
            return out.err(&format!(
                "EXECABORT Transaction discarded because of: {}",
                crate::memory::OOM
            ));
        }
        if self.tracking.is_some() {
            for (_, s, r) in &queued {
                self.track_read(s, r);
            }
        }
        let watched = self.watched.clone();
        // Group consecutive data commands; connection-level ones (SELECT, PING, ...) run
        // between groups. A transaction of data commands only is one atomic group.
        let mut replies: Vec<Bytes> = Vec::with_capacity(queued.len());
        let mut group: Vec<Queued> = Vec::new();
        let mut first = true;
        let mut aborted = false;
        let all: Vec<Queued> = queued;
        let mut i = 0;
        while i <= all.len() {
            let is_data = i < all.len()
                && crate::cmd::handler(all[i].1).is_some()
                && !self.needs_conn_level(all[i].1, &all[i].2);
            if is_data {
                group.push(all[i].clone());
                i += 1;
                continue;
            }
            if !group.is_empty() || (first && i == all.len()) {
                let mut keys = Vec::new();
                for (db, spec, req) in &group {
                    if let Some(ks) = self.keys_of(spec, req) {
                        keys.extend(ks.into_iter().map(|k| (*db, k)));
                    }
                }
                let w = if first { watched.clone() } else { Vec::new() };
                match exec_atomic(&self.shard, std::mem::take(&mut group), keys, w, self.resp3)
                    .await
                {
                    Some(r) => replies.extend(r),
                    None => {
                        aborted = true;
                        break;
                    }
                }
                first = false;
            }
            if i < all.len() {
                if first && !watched.is_empty() {
                    // Check watches before the first connection-level command too.
                    let ok = exec_atomic(
                        &self.shard,
                        Vec::new(),
                        Vec::new(),
                        watched.clone(),
                        self.resp3,
                    )
                    .await
                    .is_some();
                    if !ok {
                        aborted = true;
                        break;
                    }
                }
                first = false;
                let (_, spec, req) = all[i].clone();
                let mut o = Out::new(self.resp3);
                self.in_exec = true;
                Box::pin(self.conn_command(spec, &req, &mut o, stream)).await;
                self.in_exec = false;
                replies.push(o.buf.freeze());
            }
            i += 1;
        }
        self.unwatch_all().await;
        if aborted {
            return out.null_array();
        }
        out.array(replies.len());
        for r in replies {
            out.raw(&r);
        }
    }

    /// BLPOP and friends: try now; otherwise wait on every key until served, timed out, or
    /// the client disconnects.
    async fn blocking(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
        out: &mut Out,
        stream: &mut TcpStream,
    ) {
        let name = spec.name;
        let (keys, op, timeout_arg): (Vec<Bytes>, BlockOp, &[u8]) = match name {
            "blpop" | "brpop" => (
                (1..req.len() - 1).map(|i| req.arg_bytes(i)).collect(),
                BlockOp::Pop {
                    left: name == "blpop",
                },
                req.arg(req.len() - 1),
            ),
            "bzpopmin" | "bzpopmax" => (
                (1..req.len() - 1).map(|i| req.arg_bytes(i)).collect(),
                BlockOp::ZPop {
                    max: name == "bzpopmax",
                },
                req.arg(req.len() - 1),
            ),
            "brpoplpush" => (
                vec![req.arg_bytes(1)],
                BlockOp::Move {
                    from_left: false,
                    to_left: true,
                    dst: req.arg_bytes(2),
                },
                req.arg(3),
            ),
            "blmove" => {
                let side = |a: &[u8]| {
                    if a.eq_ignore_ascii_case(b"left") {
                        Some(true)
                    } else if a.eq_ignore_ascii_case(b"right") {
                        Some(false)
                    } else {
                        None
                    }
                };
                let (Some(f), Some(t)) = (side(req.arg(3)), side(req.arg(4))) else {
                    return out.err(crate::cmd::SYNTAX);
                };
                (
                    vec![req.arg_bytes(1)],
                    BlockOp::Move {
                        from_left: f,
                        to_left: t,
                        dst: req.arg_bytes(2),
                    },
                    req.arg(5),
                )
            }
            _ => {
                // BLMPOP / BZMPOP timeout numkeys key... dir [COUNT n]
                let mut scratch = crate::db::Db::scratch();
                let mut tmp = Out::new(self.resp3);
                let mut ctx = crate::cmd::Ctx::new(&mut scratch, &mut tmp, 0);
                let Some(a) = crate::cmd::lists::parse_mpop(&mut ctx, req, 2, name == "bzmpop")
                else {
                    return out.raw(&tmp.buf);
                };
                let op = if name == "bzmpop" {
                    BlockOp::ZMPop {
                        max: !a.left,
                        count: a.count,
                    }
                } else {
                    BlockOp::MPop {
                        left: a.left,
                        count: a.count,
                    }
                };
                (a.keys, op, req.arg(1))
            }
        };
        let timeout_ms = match crate::blocking::parse_timeout(timeout_arg) {
            Ok(t) => t,
            Err(e) => return out.err(e),
        };
        let db = self.db;
        // Try each key in order, then register on all of them atomically per shard.
        let claimed = Arc::new(AtomicBool::new(false));
        // Immediate attempt, in key order.
        for k in &keys {
            let owner = self.shard.shard_of(k);
            let (k2, op2, resp3) = (k.clone(), op.clone(), self.resp3);
            let r = self
                .shard
                .run_on(owner, move |st| {
                    let mut o = Out::new(resp3);
                    match crate::blocking::serve_and_log(st, db, &k2, &op2, &mut o) {
                        Ok(true) | Err(Replied) => Some(o.buf.freeze()),
                        Ok(false) => None,
                    }
                })
                .await;
            self.shard.send_deferred();
            if let Some(r) = r {
                return out.raw(&r);
            }
        }
        if self.in_exec {
            // Inside a transaction a blocking command behaves like its non-blocking form.
            return out.null_array();
        }
        let ops = keys.into_iter().map(|k| (k, op.clone())).collect();
        self.wait_for(ops, claimed, timeout_ms, out, stream).await
    }

    /// XREAD / XREADGROUP with BLOCK: answered at once when any stream has something for
    /// it (as the command without BLOCK, "$" resolved first), otherwise a waiter per stream
    /// until one is served, the timeout passes or the client leaves.
    async fn xread_blocking(
        &mut self,
        spec: &'static CommandSpec,
        req: &Request,
        out: &mut Out,
        stream: &mut TcpStream,
    ) {
        let group_cmd = spec.name == "xreadgroup";
        let Some(a) = crate::cmd::streams::parse_read(out, req, group_cmd, false) else {
            return;
        };
        let timeout_ms = a.block.unwrap_or(0);
        let db = self.db;
        // "$" means after the last entry now: resolve it before anything can be added.
        let mut resolved = Vec::with_capacity(a.keys.len());
        for (k, raw) in a.keys.iter().zip(&a.ids) {
            let owner = self.shard.shard_of(k);
            let (k2, raw2) = (k.clone(), raw.clone());
            let id = self
                .shard
                .run_on(owner, move |st| {
                    let mut o = Out::new(false);
                    let mut ctx =
                        crate::cmd::Ctx::new(&mut st.dbs[db], &mut o, crate::db::now_ms());
                    crate::cmd::streams::resolve_id(&mut ctx, &k2, &raw2)
                })
                .await;
            resolved.push(id);
        }
        // The immediate attempt: the command itself, without BLOCK and with "$" resolved.
        let ids_at = req.len() - a.keys.len();
        let mut args: Vec<Bytes> = Vec::with_capacity(req.len());
        let mut i = 0;
        while i < ids_at {
            // BLOCK and its timeout only come before STREAMS.
            if req.arg(i).eq_ignore_ascii_case(b"block") {
                i += 2;
                continue;
            }
            args.push(req.arg_bytes(i));
            i += 1;
        }
        for (raw, id) in a.ids.iter().zip(&resolved) {
            match id {
                Some(id) if raw.as_ref() == b"$" => args.push(id.to_bytes()),
                _ => args.push(raw.clone()),
            }
        }
        let now_req = Request::from_args(args.iter());
        let keys: Vec<(usize, Bytes)> = a.keys.iter().map(|k| (db, k.clone())).collect();
        let reply = crate::exec::exec_atomic(
            &self.shard,
            vec![(db, spec, now_req)],
            keys,
            vec![],
            self.resp3,
        )
        .await
        .and_then(|mut r| r.pop())
        .unwrap_or_default();
        let null: &[u8] = if self.resp3 { b"_\r\n" } else { b"*-1\r\n" };
        if reply[..] != *null || self.in_exec {
            return out.raw(&reply);
        }
        let Some(ids) = resolved.into_iter().collect::<Option<Vec<_>>>() else {
            return out.raw(&reply);
        };
        let count = if a.count == 0 { 1000 } else { a.count };
        let group = a.group.map(|(g, c)| (g, c, a.noack));
        let ops = a
            .keys
            .into_iter()
            .zip(ids)
            .map(|(k, after)| {
                let op = BlockOp::XRead {
                    after,
                    count,
                    group: group.clone(),
                };
                (k, op)
            })
            .collect();
        let claimed = Arc::new(AtomicBool::new(false));
        self.wait_for(ops, claimed, timeout_ms, out, stream).await
    }

    /// Registers a waiter on every key (each with its operation) and waits until one shard
    /// serves it (its reply is the command's), the timeout passes (null), or the client
    /// leaves.
    async fn wait_for(
        &mut self,
        ops: Vec<(Bytes, BlockOp)>,
        claimed: Arc<AtomicBool>,
        timeout_ms: u64,
        out: &mut Out,
        stream: &mut TcpStream,
    ) {
        let db = self.db;
        let keys: Vec<Bytes> = ops.iter().map(|(k, _)| k.clone()).collect();
        // Register a waiter on every key; the first shard to serve claims it.
        let (stx, srx) = futures::channel::oneshot::channel::<Bytes>();
        let stx = Arc::new(std::sync::Mutex::new(Some(stx)));
        for (k, op) in &ops {
            let owner = self.shard.shard_of(k);
            let (k2, op2, resp3, claimed2, stx2) = (
                k.clone(),
                op.clone(),
                self.resp3,
                claimed.clone(),
                stx.clone(),
            );
            self.shard
                .run_on(owner, move |st| {
                    // Each key gets its own forwarding sender: whichever fires first wins.
                    let (wtx, wrx) = futures::channel::oneshot::channel::<Bytes>();
                    st.blocked.entry((db, k2)).or_default().push_back(Waiter {
                        claimed: claimed2,
                        op: op2,
                        resp3,
                        reply: wtx,
                    });
                    glommio::spawn_local(async move {
                        if let Ok(r) = wrx.await {
                            if let Some(s) = stx2.lock().expect("waiter lock").take() {
                                let _ = s.send(r);
                            }
                        }
                    })
                    .detach();
                })
                .await;
        }
        // Data may have arrived between the attempt and the registration.
        for k in &keys {
            let owner = self.shard.shard_of(k);
            let k2 = k.clone();
            self.shard
                .run_on(owner, move |st| {
                    crate::blocking::serve_waiters(st, db, &[k2])
                })
                .await;
            self.shard.send_deferred();
        }
        let mut srx = srx.fuse();
        // CLIENT UNBLOCK finds this client here.
        let (utx, urx) = futures::channel::oneshot::channel::<bool>();
        self.shard
            .shared
            .unblockers
            .lock()
            .expect("unblockers")
            .insert(self.id, utx);
        let mut urx = urx.fuse();
        self.show_blocked(true);
        self.wait_served(
            &mut srx, &mut urx, &keys, db, claimed, timeout_ms, out, stream,
        )
        .await;
        self.show_blocked(false);
        self.shard
            .shared
            .unblockers
            .lock()
            .expect("unblockers")
            .remove(&self.id);
    }

    /// [`Conn::wait_for`]'s wait: a reply, the timeout, CLIENT UNBLOCK, or the client leaving.
    #[allow(clippy::too_many_arguments)]
    async fn wait_served(
        &mut self,
        mut srx: &mut futures::future::Fuse<futures::channel::oneshot::Receiver<Bytes>>,
        mut urx: &mut futures::future::Fuse<futures::channel::oneshot::Receiver<bool>>,
        keys: &[Bytes],
        db: usize,
        claimed: Arc<AtomicBool>,
        timeout_ms: u64,
        out: &mut Out,
        stream: &mut TcpStream,
    ) {
        let deadline = if timeout_ms == 0 {
            None
        } else {
            Some(Instant::now() + Duration::from_millis(timeout_ms))
        };
        let mut tmp = vec![0u8; 4096];
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => {
                        glommio::timer::sleep(d.saturating_duration_since(Instant::now())).await
                    }
                    None => futures::future::pending::<()>().await,
                }
            }
            .fuse();
            futures::pin_mut!(sleep);
            let read = stream.read(&mut tmp).fuse();
            futures::pin_mut!(read);
            futures::select_biased! {
                r = srx => {
                    match r {
                        Ok(reply) => return out.raw(&reply),
                        Err(_) => return out.null_array(),
                    }
                }
                _ = sleep => {
                    if claimed.swap(true, Ordering::AcqRel) {
                        // Served at the last moment: the reply is on its way.
                        if let Ok(reply) = srx.await {
                            return out.raw(&reply);
                        }
                    }
                    self.drop_waiters(keys, db).await;
                    return out.null_array();
                }
                u = urx => {
                    if claimed.swap(true, Ordering::AcqRel) {
                        if let Ok(reply) = srx.await {
                            return out.raw(&reply);
                        }
                    }
                    self.drop_waiters(keys, db).await;
                    return match u {
                        Ok(true) => out.err("UNBLOCKED client unblocked via CLIENT UNBLOCK"),
                        _ => out.null_array(),
                    };
                }
                r = read => match r {
                    Ok(0) | Err(_) => {
                        // The client left: make sure nobody serves it.
                        if claimed.swap(true, Ordering::AcqRel) {
                            let _ = srx.await;
                        }
                        self.drop_waiters(keys, db).await;
                        self.close = true;
                        return;
                    }
                    Ok(n) => self.stash.extend_from_slice(&tmp[..n]),
                },
            }
        }
    }

    /// Removes this client's claimed waiters from the keys' queues.
    async fn drop_waiters(&self, keys: &[Bytes], db: usize) {
        for k in keys {
            let owner = self.shard.shard_of(k);
            let k2 = k.clone();
            self.shard
                .run_on(owner, move |st| {
                    let slot = (db, k2);
                    if let Some(q) = st.blocked.get_mut(&slot) {
                        q.retain(|w| !w.claimed.load(Ordering::Acquire));
                        if q.is_empty() {
                            st.blocked.remove(&slot);
                        }
                    }
                })
                .await;
        }
    }

    /// A pub/sub subscription record for this connection.
    pub fn sub_handle(&self) -> Sub {
        Sub {
            tx: self.mailbox.tx.clone(),
            resp3: self.resp3,
            queued: self.mailbox.queued.clone(),
            overflow: self.msg_overflow.clone(),
        }
    }

    /// Resets the connection to its initial state (RESET).
    pub async fn reset(&mut self) {
        self.multi = None;
        self.multi_dirty = false;
        self.unwatch_all().await;
        let id = self.id;
        if self.subscribed() {
            self.shard
                .run_on_all(move |st| st.pubsub.remove_client(id))
                .await;
        }
        self.subs.clear();
        self.psubs.clear();
        self.ssubs.clear();
        self.db = 0;
        self.resp3 = false;
        if self.tracking.take().is_some() {
            crate::tracking::disable(self.id);
        }
        self.caching = false;
        self.name = Bytes::new();
        self.no_evict = false;
        self.authed = self.shard.shared.requirepass().is_empty();
    }
}
