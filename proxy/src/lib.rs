//! rcodis-proxy: a stateless, thread-per-core RESP proxy in front of rcodis-server groups.
//!
//! ```text
//!   clients ──► shard 0 … shard N-1 (glommio executors, SO_REUSEPORT on one port)
//!                 session.rs: decode a batch, router::route each request (pure),
//!                 queue on this shard's pipelined backend connections, reply in order
//!                 backend.rs: one connection task per backend (and replica) per shard;
//!                 replies land in the session's per-batch sink
//!                 stats.rs: per-shard per-command counters and latency histograms
//!   control thread (tokio): coordinator → Topology → SlotTable, published with an epoch;
//!                 each shard swaps its own copy and reports the epoch it applied; the
//!                 proxy's ephemeral registration carries the epoch all shards applied.
//!   admin thread (tokio + axum): /health /stats /slots /metrics, token-protected POSTs.
//! ```
//!
//! No locks on the request path: a shard reads its own table; the shared `Mutex` is taken
//! only when a new epoch is published or picked up.

pub mod admin;
pub mod backend;
pub mod clients;
pub mod config;
pub mod control;
pub mod router;
pub mod session;
pub mod stats;
pub mod table;
pub mod txn;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::backend::Backend;
use crate::config::ProxyConfig;
use crate::table::SlotTable;

/// State shared by every shard and the control thread.
pub struct Shared {
    pub config: ProxyConfig,
    pub token: String,
    pub started: Instant,
    pub port: AtomicUsize,
    /// The newest table and its epoch.
    pub table: Mutex<Arc<SlotTable>>,
    pub epoch: AtomicU64,
    /// The epoch each shard has applied.
    pub applied: Vec<AtomicU64>,
    /// Commands each shard has handled.
    pub commands: Vec<AtomicU64>,
    /// Per-command statistics of each shard.
    pub stats: Vec<stats::ShardStats>,
    /// Every shared backend connection of every shard (for /metrics).
    pub backend_gauges: Mutex<Vec<Arc<stats::BackendGauge>>>,
    /// The token that admin HTTP mutations must carry.
    pub admin_token: String,
    /// Statistics as of the last reset.
    pub stats_baseline: Mutex<stats::Baseline>,
    pub clients: AtomicUsize,
    /// Every session, for CLIENT LIST and CLIENT KILL.
    pub sessions: clients::Registry,
    /// Sessions waiting on a blocking command (INFO's blocked_clients).
    pub blocked: AtomicUsize,
    /// Connections refused at max_clients (INFO's rejected_connections).
    pub rejected: AtomicU64,
    /// INFO's instantaneous_ops_per_sec.
    pub ops: Mutex<rcodis_core::rate::RateMeter>,
    pub total_connections: AtomicU64,
    pub next_client_id: AtomicU64,
    /// Whether the coordinator answered the last time the control thread asked.
    pub coordinator_ok: AtomicBool,
    /// Where the admin HTTP server listens (empty: nowhere).
    pub admin_addr: Mutex<String>,
    /// One socket per shard (non-blocking), written to when a new table is published: the
    /// shard wakes at once to swap it in, instead of polling for it.
    pub table_wakers: Vec<std::os::unix::net::UnixStream>,
    /// Signalled when a shard acknowledges an epoch, so the control thread reports it at once.
    pub acked: tokio::sync::Notify,
}

impl Shared {
    /// Publishes a new table (the control thread calls this).
    pub fn publish(&self, t: SlotTable) {
        let epoch = t.epoch;
        *self.table.lock().expect("table lock") = Arc::new(t);
        self.epoch.store(epoch, Ordering::Release);
        for w in &self.table_wakers {
            // A full socket already holds a wake-up the shard has not read: nothing lost.
            let _ = std::io::Write::write(&mut &*w, &[1]);
        }
    }

    /// Per-command totals since the last reset.
    pub fn command_stats(&self) -> Vec<(&'static str, stats::Summary)> {
        let now = stats::summarize(&self.stats);
        self.stats_baseline.lock().expect("stats lock").since(now)
    }

    /// Starts the per-command and error statistics from zero.
    pub fn reset_stats(&self) {
        let now = stats::summarize(&self.stats);
        self.stats_baseline.lock().expect("stats lock").0 = now.into_iter().collect();
        for sh in &self.stats {
            sh.errors.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// The lowest epoch every shard has applied.
    pub fn applied_epoch(&self) -> u64 {
        self.applied
            .iter()
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }
}

/// One shard of the proxy.
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub table: RefCell<Arc<SlotTable>>,
    /// `backend_connections` sets of connections to the current table's backends; a session
    /// uses one set (by its id), so its requests to one backend keep their order.
    pub conns: RefCell<Vec<ConnSet>>,
    pool: RefCell<HashMap<(String, bool, usize), Backend>>,
    /// Request batches still running, by the epoch of the table they started with: a new
    /// epoch is acknowledged only once every batch of an older one has finished (so after a
    /// slot's owner changes, nothing is still on its way to the old owner).
    pub inflight: RefCell<std::collections::BTreeMap<u64, usize>>,
    /// Seconds since the shard started, advanced by its idle sweeper.
    pub clock_s: std::cell::Cell<u64>,
    /// The sessions the idle sweeper watches (`session_idle_timeout_secs`).
    pub idle: RefCell<Vec<std::rc::Weak<IdleMark>>>,
}

/// What a shard's idle sweeper knows of one session. A sweep once a second replaces a read
/// timeout on every client socket, which cost a timer insertion and removal on every read
/// that had to wait.
pub struct IdleMark {
    pub id: u64,
    pub fd: std::os::fd::RawFd,
    /// [`Shard::clock_s`] when the session last had input.
    pub last: std::cell::Cell<u64>,
    /// Subscribed, or waiting in a blocking command: never idle.
    pub exempt: std::cell::Cell<bool>,
}

/// Closes the sessions idle for more than `idle_s` seconds (from their shard's task), once a
/// second: shutting the socket down ends the session's pending read.
async fn sweep_idle(shard: Rc<Shard>, idle_s: u64) {
    let start = Instant::now();
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let now = start.elapsed().as_secs();
        shard.clock_s.set(now);
        shard.idle.borrow_mut().retain(|w| {
            let Some(m) = w.upgrade() else {
                return false;
            };
            if m.exempt.get() || now.saturating_sub(m.last.get()) <= idle_s {
                return true;
            }
            tracing::info!(
                client = m.id,
                "closing a client idle for {idle_s}s (session_idle_timeout_secs)"
            );
            // SAFETY: the session owns the descriptor and is alive (we hold its mark's
            // strong count through `upgrade`, and the session drops its stream only after
            // its mark); shutdown only ends its reads and writes.
            unsafe {
                libc::shutdown(m.fd, libc::SHUT_RDWR);
            }
            false
        });
    }
}

/// One connection to each backend of the table (same order), in both protocols, and to each
/// replica that serves reads.
#[derive(Default)]
pub struct ConnSet {
    pub backends: Vec<Backend>,
    /// Over RESP3 (for RESP3 sessions; connected on first use).
    pub backends3: Vec<Backend>,
    pub replicas: Vec<Backend>,
    pub replicas3: Vec<Backend>,
}

impl Shard {
    /// Picks up a newer table if one was published.
    pub fn refresh(&self) {
        let published = self.shared.epoch.load(Ordering::Acquire);
        if published == self.table.borrow().epoch && !self.conns.borrow().is_empty() {
            return;
        }
        let t = self.shared.table.lock().expect("table lock").clone();
        let timeout = Duration::from_millis(self.shared.config.backend_connect_timeout_ms);
        let mut pool = self.pool.borrow_mut();
        let mut make = |resp3: bool, addrs: &[String], k: usize| -> Vec<Backend> {
            addrs
                .iter()
                .map(|a| {
                    pool.entry((a.clone(), resp3, k))
                        .or_insert_with(|| {
                            let gauge = Arc::new(stats::BackendGauge::new(a, self.id, resp3));
                            self.shared
                                .backend_gauges
                                .lock()
                                .expect("gauges lock")
                                .push(gauge.clone());
                            Backend::start_proto(
                                a,
                                self.shared.config.product_auth.clone(),
                                timeout,
                                self.shared.config.backend_read_timeout(),
                                resp3,
                                Some(gauge),
                            )
                        })
                        .clone()
                })
                .collect()
        };
        let sets = (0..self.shared.config.backend_connections.max(1))
            .map(|k| ConnSet {
                backends: make(false, &t.backends, k),
                backends3: make(true, &t.backends, k),
                replicas: make(false, &t.replicas, k),
                replicas3: make(true, &t.replicas, k),
            })
            .collect();
        *self.conns.borrow_mut() = sets;
        *self.table.borrow_mut() = t;
        self.try_ack();
    }

    /// Acknowledges the current epoch once no batch of an older epoch is running.
    pub fn try_ack(&self) {
        let epoch = self.table.borrow().epoch;
        if self.shared.applied[self.id].load(Ordering::Relaxed) == epoch {
            return;
        }
        let drained = self.inflight.borrow().range(..epoch).all(|(_, n)| *n == 0);
        if drained {
            self.shared.applied[self.id].store(epoch, Ordering::Release);
            self.shared.acked.notify_one();
        }
    }

    /// A batch starts: returns its epoch (give it back to `end_batch`).
    pub fn begin_batch(&self) -> u64 {
        let e = self.table.borrow().epoch;
        *self.inflight.borrow_mut().entry(e).or_insert(0) += 1;
        e
    }

    /// A batch (or its part that counts for draining) is done.
    pub fn end_batch(&self, epoch: u64) {
        let mut m = self.inflight.borrow_mut();
        if let Some(n) = m.get_mut(&epoch) {
            *n -= 1;
            if *n == 0 {
                m.remove(&epoch);
            }
        }
        drop(m);
        self.try_ack();
    }
}

/// A running proxy.
pub struct ProxyHandle {
    pub shared: Arc<Shared>,
    pub port: u16,
}

/// Starts the shards and the control thread; returns once every shard listens.
pub fn start(mut config: ProxyConfig) -> anyhow::Result<ProxyHandle> {
    config.validate()?;
    rcodis_core::net::check_data_plane_environment("rcodis-proxy").map_err(anyhow::Error::msg)?;
    let nr = config.threads;
    let token = format!("{:016x}{:08x}", rcodis_now_nanos(), std::process::id());
    let admin_token = if config.admin_token.is_empty() {
        // Nobody configured one: a fresh secret, written to the log once.
        let mut b = [0u8; 16];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| anyhow::anyhow!("cannot make an admin token: {e}"))?;
        let t: String = b.iter().map(|x| format!("{x:02x}")).collect();
        tracing::info!(admin_token = %t, "generated the admin token (set admin_token to choose one)");
        t
    } else {
        config.admin_token.clone()
    };
    let listen: std::net::SocketAddr = config
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("bad --listen {}: {e}", config.listen))?;
    // Claim the port exclusively first (see rcodis-server: SO_REUSEPORT would share it).
    let (port, port_claim) = rcodis_core::net::claim_port(listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    // Each shard's end of its table wake-up socket (the control thread writes to the other).
    let mut wake_ends = Vec::with_capacity(nr);
    let mut table_wakers = Vec::with_capacity(nr);
    for _ in 0..nr {
        let (tx, rx) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| anyhow::anyhow!("cannot make a wake-up socket pair: {e}"))?;
        tx.set_nonblocking(true)?;
        rx.set_nonblocking(true)?;
        table_wakers.push(tx);
        wake_ends.push(std::os::fd::OwnedFd::from(rx));
    }
    let shared = Arc::new(Shared {
        config: config.clone(),
        token,
        started: Instant::now(),
        port: AtomicUsize::new(port as usize),
        table: Mutex::new(Arc::new(SlotTable::empty())),
        epoch: AtomicU64::new(0),
        applied: (0..nr).map(|_| AtomicU64::new(0)).collect(),
        commands: (0..nr).map(|_| AtomicU64::new(0)).collect(),
        stats: (0..nr).map(|_| stats::ShardStats::default()).collect(),
        backend_gauges: Mutex::new(Vec::new()),
        admin_token,
        stats_baseline: Mutex::new(stats::Baseline::default()),
        clients: AtomicUsize::new(0),
        sessions: Default::default(),
        blocked: AtomicUsize::new(0),
        rejected: AtomicU64::new(0),
        ops: Mutex::new(Default::default()),
        total_connections: AtomicU64::new(0),
        next_client_id: AtomicU64::new(1),
        coordinator_ok: AtomicBool::new(false),
        admin_addr: Mutex::new(String::new()),
        table_wakers,
        acked: tokio::sync::Notify::new(),
    });
    admin::start(shared.clone());
    // The control thread loads the first table before the shards accept anything.
    control::start(shared.clone())?;
    // Request latencies are timed with the processor's counter: calibrate it once, here.
    rcodis_core::clock::init_clock();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    for (id, wake_end) in wake_ends.into_iter().enumerate() {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        // Pin shards to cores only when the process has one per core (the default): with
        // fewer, it shares the machine (a server and a proxy on one host, `rcodis-ctl up`), and
        // pinning every process's shard 0 to CPU 0 would stack them on one core.
        let placement = if nr == cpus {
            Placement::Fixed(id)
        } else {
            Placement::Unbound
        };
        let sched_batch = shared.config.sched_batch;
        LocalExecutorBuilder::new(placement)
            .name(&format!("rcodis-proxy-{id}"))
            .spawn(move || async move {
                if sched_batch {
                    rcodis_core::net::sched_batch_or_warn(id);
                }
                let addr = std::net::SocketAddr::new(listen.ip(), port);
                let listener: TcpListener = match rcodis_core::net::shared_listener(addr).map(|l| {
                    // SAFETY: a listening socket we own, handed over whole.
                    unsafe {
                        std::os::fd::FromRawFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(l))
                    }
                }) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(anyhow::anyhow!("cannot listen on {addr}: {e}")));
                        return;
                    }
                };
                let t = shared.table.lock().expect("table lock").clone();
                let shard = Rc::new(Shard {
                    id,
                    shared: shared.clone(),
                    table: RefCell::new(t),
                    conns: RefCell::new(Vec::new()),
                    pool: RefCell::new(HashMap::new()),
                    inflight: RefCell::new(Default::default()),
                    clock_s: std::cell::Cell::new(0),
                    idle: RefCell::new(Vec::new()),
                });
                shard.refresh();
                if shared.config.session_idle_timeout_secs > 0 {
                    glommio::spawn_local(sweep_idle(
                        shard.clone(),
                        shared.config.session_idle_timeout_secs,
                    ))
                    .detach();
                }
                // Pick up new tables even while no client sends anything: the control thread
                // wakes the shard when it publishes one (batches pick it up too, and end_batch
                // acknowledges it once drained); a slow tick backs that up.
                let s2 = shard.clone();
                glommio::spawn_local(async move {
                    use futures_lite::AsyncReadExt;
                    // SAFETY: the shard's own end of its socket pair, handed over whole.
                    let mut wake: glommio::net::UnixStream = unsafe {
                        std::os::fd::FromRawFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
                            wake_end,
                        ))
                    };
                    let mut buf = [0u8; 64];
                    let mut open = true;
                    loop {
                        let tick = glommio::timer::sleep(Duration::from_millis(100));
                        if open {
                            let read = wake.read(&mut buf);
                            futures::pin_mut!(tick, read);
                            if let futures::future::Either::Right((Ok(0) | Err(_), _)) =
                                futures::future::select(tick, read).await
                            {
                                open = false; // the proxy is going away
                            }
                        } else {
                            tick.await;
                        }
                        s2.refresh();
                        s2.try_ack();
                        if s2.id == 0 {
                            let sh = &s2.shared;
                            let total = sh.commands.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                            sh.ops
                                .lock()
                                .expect("ops lock")
                                .sample(Instant::now(), total);
                        }
                    }
                })
                .detach();
                let _ = ready.send(Ok(()));
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            shared.total_connections.fetch_add(1, Ordering::Relaxed);
                            glommio::spawn_local(session::serve(shard.clone(), stream)).detach();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start proxy shard {id}: {e}"))?;
    }
    drop(ready_tx);
    for _ in 0..nr {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("proxy shards did not start within 30 s"),
        }
    }
    // Every shard listens: the port is held by their listeners now.
    drop(port_claim);
    Ok(ProxyHandle { shared, port })
}

fn rcodis_now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
