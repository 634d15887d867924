//! rcodis-server: a thread-per-core, Redis-compatible store (the codis-server of rcodis).
//!
//! ```text
//!            SO_REUSEPORT on one port
//!   ┌──────────────┬──────────────┬── ... ─┐
//!   shard 0        shard 1        shard N-1      one glommio executor per core
//!   accept/conn    accept/conn    accept/conn    conn.rs: decode a batch, run, reply in order
//!   ShardState     ShardState     ShardState     dbs × per-slot tables (slot % N == id)
//!      ▲  └──── jobs (closures) over shared channels ────┘  shard.rs: run_on, atomic
//! ```
//!
//! A request enters in `conn::serve`, is resolved against rcodis-core's command table, and
//! runs in `exec` on the shard that owns its keys: inline when that is this shard, else in a
//! per-shard batch job. Keys on several shards run atomically under `Shard::atomic`.
//! Handlers (`cmd/`) are synchronous functions over one database; storage (`db/`) does no
//! I/O. Connection-wide and server-wide commands live in `server_cmds`. Every write is
//! logged per shard (`aof`): to the append-only file, and to the record streams of attached
//! replicas (`repl`: SYNC on a master, the REPLICAOF link on a replica).

pub mod aof;
pub mod blocking;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod db;
pub mod exec;
pub mod fork;
pub mod glob;
pub mod ld;
pub mod memory;
pub mod notify;
pub mod out;
pub mod params;
mod params_defaults;
pub mod pubsub;
pub mod repl;
pub mod replay;
pub mod server_cmds;
pub mod shard;
pub mod slots;
pub mod slots_async;
pub mod tracking;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::Config;
use crate::shard::{Job, Shard, ShardState, Shared};

/// A running server.
pub struct ServerHandle {
    pub shared: Arc<Shared>,
    pub port: u16,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Hands each shard its loaded data (see `load`).
    loaders: Vec<std::sync::mpsc::Sender<Loaded>>,
    loaded_ack: std::sync::mpsc::Receiver<usize>,
}

/// One shard's data as loaded at start-up, and its log opened for appending.
pub struct Loaded {
    dbs: Vec<db::Db>,
    aof: Option<aof::Aof>,
}

impl ServerHandle {
    /// Loads the snapshots and logs in `--dir` (clients already connected get -LOADING
    /// meanwhile), hands every shard its data, and opens the server for commands.
    pub fn load(&self) -> anyhow::Result<()> {
        let config = self.shared.config();
        let nr = self.loaders.len();
        self.shared
            .loading_start
            .store(db::now_ms() / 1000, Ordering::Relaxed);
        let mut states: Vec<ShardState> = (0..nr)
            .map(|id| ShardState::new(id, nr, config.databases))
            .collect();
        let have_logs = !aof::existing_logs(&config.dir).is_empty();
        if !config.appendonly || !have_logs {
            load_snapshots(&mut states, &config, &self.shared)?;
        }
        if config.appendonly {
            load_logs(&mut states, &config, &self.shared)?;
        }
        for (st, tx) in states.into_iter().zip(&self.loaders) {
            tx.send(Loaded {
                dbs: st.dbs,
                aof: st.aof,
            })
            .map_err(|_| anyhow::anyhow!("shard {} stopped", st.id))?;
        }
        for _ in 0..nr {
            self.loaded_ack
                .recv_timeout(Duration::from_secs(60))
                .map_err(|_| anyhow::anyhow!("shards did not take their data within 60 s"))?;
        }
        memory::refresh();
        self.shared.loading.store(false, Ordering::Release);
        if let Some((host, port)) = repl::parse_master(&config.replicaof) {
            // A replica starts from its master's data (a full resync replaces what was loaded).
            repl::start_link(&self.shared, host, port)?;
        }
        Ok(())
    }

    /// Waits for every shard thread (they run until the process exits).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Checks what glommio needs (a recent enough kernel, io_uring and a memlock limit of at
/// least 512 KiB) and says clearly what is missing.
pub fn check_environment() -> anyhow::Result<()> {
    rcodis_core::net::check_data_plane_environment("rcodis-server").map_err(anyhow::Error::msg)
}

/// Starts the server: one executor per shard, all listening on the configured port.
/// Returns once every shard listens (with the actual port when 0 was asked for).
pub fn start(mut config: Config) -> anyhow::Result<ServerHandle> {
    exec::init_clock();
    config.validate()?;
    check_environment()?;
    let nr = config.threads;
    tracking::init(nr);
    let databases = config.databases;
    let bind = config.bind.clone();
    let shared = Arc::new(Shared::new(config.clone()));
    // Channels: senders[i][j] goes from shard i to shard j.
    let mut senders: Vec<Vec<Option<SharedSender<Job>>>> =
        (0..nr).map(|_| (0..nr).map(|_| None).collect()).collect();
    let mut receivers: Vec<Vec<SharedReceiver<Job>>> = (0..nr).map(|_| Vec::new()).collect();
    for (i, row) in senders.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            if i != j {
                let (tx, rx) = shared_channel::new_bounded(1024);
                *slot = Some(tx);
                receivers[j].push(rx);
            }
        }
    }
    // SO_REUSEPORT would let the shards share the port with another process that also uses
    // it (a second rcodis-server would silently split the traffic). Claim the port with a
    // plain socket first: that fails if anyone holds it, as Redis fails to start.
    let (want_port, port_claim) = {
        use std::net::ToSocketAddrs;
        let addr = (bind.as_str(), config.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| anyhow::anyhow!("bad bind address {bind}:{}", config.port))?;
        rcodis_core::net::claim_port(addr)
            .map_err(|e| anyhow::anyhow!("cannot listen on {bind}:{}: {e}", config.port))?
    };
    memory::set_max(config::parse_memory(&config.maxmemory).unwrap_or(0));
    memory::set_policy(
        memory::Policy::parse(&config.maxmemory_policy).unwrap_or(memory::Policy::NoEviction),
    );
    memory::refresh();
    // Shards start empty and serve -LOADING until `ServerHandle::load` hands them their data.
    let mut states: Vec<Option<ShardState>> = (0..nr)
        .map(|id| Some(ShardState::new(id, nr, databases)))
        .collect();
    let (ack_tx, loaded_ack) = std::sync::mpsc::channel::<usize>();
    let mut loaders = Vec::new();
    let mut loaded_rxs = Vec::new();
    for _ in 0..nr {
        let (tx, rx) = std::sync::mpsc::channel::<Loaded>();
        loaders.push(tx);
        loaded_rxs.push(Some(rx));
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let sched_batch = config.sched_batch;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<u16>>();
    let mut threads = Vec::new();
    let port_cell = Arc::new(std::sync::Mutex::new(None::<u16>));
    let port_cv = Arc::new(std::sync::Condvar::new());
    for (id, (my_senders, my_receivers)) in senders.into_iter().zip(receivers).enumerate() {
        let state = states[id].take().expect("one state per shard");
        let loaded_rx = loaded_rxs[id].take().expect("one loader per shard");
        let ack_tx = ack_tx.clone();
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let bind = bind.clone();
        let port_cell = port_cell.clone();
        let port_cv = port_cv.clone();
        // Pin shards to cores only when the process has one per core (the default): with
        // fewer, it shares the machine (a server and a proxy on one host, `rcodis-ctl up`), and
        // pinning every process's shard 0 to CPU 0 would stack them on one core.
        let placement = if nr == cpus {
            Placement::Fixed(id)
        } else {
            Placement::Unbound
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("rcodis-shard-{id}"))
            .spin_before_park(Duration::from_micros(0))
            // The registered-buffer pool serves DMA file I/O, which rcodis does not use; the
            // default 10 MiB per shard would count against maxmemory for nothing.
            .io_memory(1 << 20);
        let t = builder
            .spawn(move || async move {
                if sched_batch {
                    rcodis_core::net::sched_batch_or_warn(id);
                }
                // Shard 0 binds first (it learns the port when 0 was asked for).
                let port = if id == 0 {
                    want_port
                } else {
                    let mut g = port_cell.lock().expect("port lock");
                    while g.is_none() {
                        g = port_cv.wait(g).expect("port lock");
                    }
                    g.unwrap()
                };
                let addr: SocketAddr = match format!("{bind}:{port}").parse() {
                    Ok(a) => a,
                    Err(e) => {
                        let _ =
                            ready.send(Err(anyhow::anyhow!("bad bind address {bind}:{port}: {e}")));
                        return;
                    }
                };
                let mut listen_fd = -1;
                let listener: TcpListener = match rcodis_core::net::shared_listener(addr).map(|l| {
                    listen_fd = std::os::fd::IntoRawFd::into_raw_fd(l);
                    // SAFETY: a listening socket we own, handed over whole.
                    unsafe { std::os::fd::FromRawFd::from_raw_fd(listen_fd) }
                }) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(anyhow::anyhow!("cannot listen on {addr}: {e}")));
                        if id == 0 {
                            *port_cell.lock().expect("port lock") = Some(0);
                            port_cv.notify_all();
                        }
                        return;
                    }
                };
                let actual = listener.local_addr().map(|a| a.port()).unwrap_or(port);
                if id == 0 {
                    *port_cell.lock().expect("port lock") = Some(actual);
                    port_cv.notify_all();
                }
                // Both ends of a shared channel must connect; do all of them at once.
                let send_side =
                    futures::future::join_all(my_senders.into_iter().map(|s| async move {
                        match s {
                            Some(s) => Some(s.connect().await),
                            None => None,
                        }
                    }));
                let recv_side =
                    futures::future::join_all(my_receivers.into_iter().map(|r| r.connect()));
                let (connected, receivers) = futures::future::join(send_side, recv_side).await;
                let shard = Rc::new(Shard::new(id, nr, state, shared.clone(), connected));
                for rx in receivers {
                    glommio::spawn_local(shard::serve_jobs(shard.clone(), rx)).detach();
                }
                glommio::spawn_local(adopt_loaded(shard.clone(), loaded_rx, ack_tx)).detach();
                glommio::spawn_local(active_expiry(shard.clone())).detach();
                glommio::spawn_local(log_keeper(shard.clone())).detach();
                if id == 0 {
                    glommio::spawn_local(save_rules(shard.clone())).detach();
                    glommio::spawn_local(async {
                        loop {
                            // Fresh figures matter for eviction; otherwise INFO can wait.
                            let every = if memory::max() > 0 { 10 } else { 100 };
                            glommio::timer::sleep(Duration::from_millis(every)).await;
                            memory::refresh();
                        }
                    })
                    .detach();
                }
                let _ = ready.send(Ok(actual));
                // The listener outlives the shard's scripts: it is the accept loop's until
                // the shard stops.
                crate::cmd::script::serve_while_busy(listen_fd, shard.shared.clone());
                crate::cmd::hll::set_sparse_max(&shard.shared.param("hll-sparse-max-bytes"));
                crate::notify::set(&shard.shared.param("notify-keyspace-events"));
                crate::tracking::mark_shard_thread();
                crate::tracking::set_max_keys(
                    shard
                        .shared
                        .param("tracking-table-max-keys")
                        .parse()
                        .unwrap_or(1_000_000),
                );
                for name in [
                    "hash-max-listpack-entries",
                    "hash-max-listpack-value",
                    "set-max-intset-entries",
                    "zset-max-listpack-entries",
                    "zset-max-listpack-value",
                ] {
                    crate::db::set_encoding_limit(name, &shard.shared.param(name));
                }
                crate::db::stream::set_node_limits(
                    &shard.shared.param("stream-node-max-bytes"),
                    &shard.shared.param("stream-node-max-entries"),
                );
                accept_loop(shard, listener).await;
            })
            .map_err(|e| anyhow::anyhow!("cannot start shard {id}: {e}"))?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut port = 0;
    for _ in 0..nr {
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(p)) => port = p,
            Ok(Err(e)) => return Err(e),
            Err(_) => anyhow::bail!("shards did not start within 30 s"),
        }
    }
    // Every shard listens: the port is held by their listeners now.
    drop(port_claim);
    shared.port.store(port as usize, Ordering::Relaxed);
    Ok(ServerHandle {
        shared,
        port,
        threads,
        loaders,
        loaded_ack,
    })
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let shared = shard.shared.clone();
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.total_connections.fetch_add(1, Ordering::Relaxed);
        let max: usize = shared.param("maxclients").parse().unwrap_or(10000);
        let n = shared.connected_clients.fetch_add(1, Ordering::Relaxed) + 1;
        if n > max {
            shared.connected_clients.fetch_sub(1, Ordering::Relaxed);
            shared.rejected_connections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("rejecting connection: max number of clients ({max}) reached");
            glommio::spawn_local(async move {
                use futures_lite::AsyncWriteExt;
                let mut s = stream;
                let _ = s.write_all(b"-ERR max number of clients reached\r\n").await;
                let _ = s.close().await;
            })
            .detach();
            continue;
        }
        glommio::spawn_local(conn::serve(shard.clone(), stream)).detach();
    }
}

/// Waits for this shard's loaded data and swaps it in (watchers carried over, touched).
async fn adopt_loaded(
    shard: Rc<Shard>,
    rx: std::sync::mpsc::Receiver<Loaded>,
    ack: std::sync::mpsc::Sender<usize>,
) {
    let loaded = loop {
        match rx.try_recv() {
            Ok(l) => break l,
            Err(std::sync::mpsc::TryRecvError::Empty) => {
                glommio::timer::sleep(Duration::from_millis(1)).await
            }
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
        }
    };
    let mut st = shard.state.borrow_mut();
    let mut dbs = loaded.dbs;
    for (new, old) in dbs.iter_mut().zip(st.dbs.iter_mut()) {
        new.adopt_watches(old);
    }
    st.dbs = dbs;
    st.aof = loaded.aof;
    let _ = ack.send(st.id);
}

/// A callback for replay: counts records and applies `key-load-delay`.
fn load_ticker<'a>(shared: &'a Shared, config: &Config) -> impl FnMut() + 'a {
    let delay = Duration::from_micros(config.key_load_delay);
    move || {
        shared.loading_done.fetch_add(1, Ordering::Relaxed);
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}

/// Loads the snapshot files in `config.dir` (if any) into `states`.
fn load_snapshots(
    states: &mut [ShardState],
    config: &Config,
    shared: &Shared,
) -> anyhow::Result<()> {
    let snaps = aof::existing_snapshots(&config.dir);
    let count = snaps.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
    let mut files = Vec::new();
    for (id, path) in &snaps {
        let reqs = aof::read_log(path, false).map_err(|e| anyhow::anyhow!(e.0))?;
        shared
            .loading_total
            .fetch_add(reqs.len() as u64, Ordering::Relaxed);
        files.push((*id, reqs));
    }
    let mut tick = load_ticker(shared, config);
    for (id, reqs) in &files {
        replay::replay(states, reqs, *id, count, &mut tick);
    }
    if !snaps.is_empty() {
        let keys: usize = states
            .iter()
            .map(|s| s.dbs.iter().map(|d| d.len()).sum::<usize>())
            .sum();
        tracing::info!(files = snaps.len(), keys, "snapshots loaded");
    }
    Ok(())
}

/// `save` rules ("seconds changes" pairs): a background save when any is met.
async fn save_rules(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let rules = shard.shared.param("save");
        let nums: Vec<u64> = rules
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        let dirty = aof::DIRTY.load(Ordering::Relaxed);
        let since = db::now_ms() / 1000
            - shard
                .shared
                .lastsave
                .load(Ordering::Relaxed)
                .min(db::now_ms() / 1000);
        let due = nums
            .chunks_exact(2)
            .any(|r| dirty >= r[1] && r[1] > 0 && since >= r[0]);
        if due && !shard.shared.bgsave_in_progress.load(Ordering::Acquire) {
            tracing::info!(
                changes = dirty,
                seconds = since,
                "save rule met: background save"
            );
            if let Err(e) = server_cmds::bgsave(&shard).await {
                tracing::warn!(error = %e, "background save not started");
            }
        }
    }
}

/// Loads the shard logs in `config.dir` into `states`, then opens each shard's log for
/// appending. A log set written with another shard count is rewritten into this layout.
fn load_logs(states: &mut [ShardState], config: &Config, shared: &Shared) -> anyhow::Result<()> {
    let nr = states.len();
    std::fs::create_dir_all(&config.dir)?;
    let existing = aof::existing_logs(&config.dir);
    let file_count = existing.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
    let started = std::time::Instant::now();
    let mut applied = 0;
    let mut files = Vec::new();
    for (id, path) in &existing {
        let reqs = aof::read_log(path, config.aof_repair).map_err(|e| anyhow::anyhow!(e.0))?;
        shared
            .loading_total
            .fetch_add(reqs.len() as u64, Ordering::Relaxed);
        files.push((*id, reqs));
    }
    let mut tick = load_ticker(shared, config);
    for (id, reqs) in &files {
        applied += replay::replay(states, reqs, *id, file_count, &mut tick);
    }
    if !existing.is_empty() {
        let keys: usize = states
            .iter()
            .map(|s| s.dbs.iter().map(|d| d.len()).sum::<usize>())
            .sum();
        tracing::info!(
            files = existing.len(),
            commands = applied,
            keys,
            ms = started.elapsed().as_millis() as u64,
            "append-only logs loaded"
        );
    }
    let policy = aof::Fsync::parse(&config.appendfsync);
    let relayout = !existing.is_empty() && file_count != nr;
    for st in states.iter_mut() {
        let mut log = aof::Aof::open(&config.dir, st.id, policy)?;
        if relayout {
            log.rewrite(&mut st.dbs, db::now_ms(), st.id)?;
        }
        st.aof = Some(log);
    }
    if relayout {
        for (id, path) in existing {
            if id >= nr {
                std::fs::remove_file(&path)?;
            }
        }
        tracing::info!(
            from = file_count,
            to = nr,
            "shard count changed: logs rewritten for the new layout"
        );
    }
    Ok(())
}

/// Writes and syncs the shard's log as its policy asks (everysec: once a second), rewrites it
/// when it has doubled past its minimum size, and syncs it for good on shutdown.
async fn log_keeper(shard: Rc<Shard>) {
    // The size after the last rewrite (or at load): the log is rewritten when it grows by
    // auto-aof-rewrite-percentage over it.
    let mut base: Option<u64> = None;
    // After a failed rewrite, the next automatic one waits (no fork storm on a full disk).
    let mut retry_at = std::time::Instant::now();
    loop {
        glommio::timer::sleep(Duration::from_millis(50)).await;
        let shutting_down = shard.shared.shutdown.load(Ordering::Acquire);
        let mut st = shard.state.borrow_mut();
        let st = &mut *st;
        let Some(a) = st.aof.as_mut() else {
            base = None;
            if shutting_down {
                shard.shared.shutdown_synced.fetch_add(1, Ordering::AcqRel);
                return;
            }
            continue;
        };
        if shutting_down {
            a.cancel_rewrite();
            a.sync();
            shard.shared.shutdown_synced.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let base = base.get_or_insert(a.size);
        match a.policy {
            aof::Fsync::Everysec
                if a.pending() && a.last_sync.elapsed() >= Duration::from_secs(1) =>
            {
                a.sync()
            }
            aof::Fsync::No => a.write_out(),
            _ => {}
        }
        let min = config::parse_memory(&shard.shared.param("auto-aof-rewrite-min-size"))
            .unwrap_or(64 << 20);
        let pct: u64 = shard
            .shared
            .param("auto-aof-rewrite-percentage")
            .parse()
            .unwrap_or(100);
        if let Some(result) = a.poll_rewrite() {
            match result {
                Ok(()) => {
                    *base = a.size;
                    tracing::info!(shard = st.id, size = a.size, "append-only log rewritten");
                }
                Err(e) => {
                    tracing::error!(shard = st.id, error = %e, "append-only log rewrite failed");
                    retry_at = std::time::Instant::now() + Duration::from_secs(5);
                }
            }
        }
        if pct > 0
            && !a.rewriting()
            && std::time::Instant::now() >= retry_at
            && a.size >= min
            && a.size >= (*base).max(1) * (100 + pct) / 100
        {
            tracing::info!(
                shard = st.id,
                size = a.size,
                "rewriting the append-only log in the background"
            );
            if let Err(e) = a.start_rewrite(&mut st.dbs, db::now_ms(), st.id) {
                tracing::error!(error = %e, "cannot start the append-only log rewrite");
                retry_at = std::time::Instant::now() + Duration::from_secs(5);
            }
        }
    }
}

/// Active expiry: every 100 ms each shard samples its keys with a TTL (as Redis's cron).
async fn active_expiry(shard: Rc<Shard>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(100)).await;
        let mut st = shard.state.borrow_mut();
        let now = std::time::Instant::now();
        let total = st.total_commands;
        st.rates[0].sample(now, total);
        if st.id == 0 {
            let sh = &shard.shared;
            st.rates[1].sample(now, sh.net_input_bytes.load(Ordering::Relaxed));
            st.rates[2].sample(now, sh.net_output_bytes.load(Ordering::Relaxed));
        }
        if !st.active_expire {
            continue;
        }
        let now = db::now_ms();
        for d in st.dbs.iter_mut() {
            if d.expires_len() > 0 {
                d.active_expire(now, 16);
            }
        }
        if notify::on() {
            for db in 0..st.dbs.len() {
                notify::flush(&mut st, db);
            }
            drop(st);
            shard.send_deferred();
        }
    }
}
