//! Shards: one glommio executor per core, each owning the slots `slot % nr_shards == id`.
//!
//! Shards talk by sending closures (`Job`s) over glommio shared channels, one channel per
//! ordered pair of shards. A job runs on the target shard's thread with `&mut ShardState`,
//! synchronously, and sends its result back over a oneshot.
//!
//! Atomic multi-shard operations ([`Shard::atomic`]) take the process-wide multi-shard lock
//! (an async mutex, so waiting never blocks a thread), then *freeze* every other shard
//! involved: the frozen shard's thread runs a loop that executes only the coordinator's
//! jobs, synchronously, until released. With all involved shards frozen the coordinator runs
//! the whole operation without awaiting, so nothing else can observe a partial result.
//! Only the lock holder freezes shards, and frozen shards serve only the holder, so there is
//! no deadlock. Requests that touch one shard never take the lock.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use glommio::channels::shared_channel::{ConnectedReceiver, ConnectedSender};
use hashbrown::HashMap;

use crate::config::Config;
use crate::db::Db;

/// Work sent to another shard.
pub type Job = Box<dyn FnOnce(&mut ShardState) + Send>;

/// Per-command statistics (INFO commandstats).
#[derive(Debug, Default, Clone, Copy)]
pub struct CmdStat {
    pub calls: u64,
    pub usec: u64,
    pub rejected: u64,
    pub failed: u64,
}

/// Everything a shard owns. Only its own thread touches it.
pub struct ShardState {
    pub id: usize,
    pub nr_shards: usize,
    pub dbs: Vec<Db>,
    /// Per-command statistics, indexed by command spec id.
    pub cmdstats: Vec<CmdStat>,
    /// Commands this shard executed.
    pub total_commands: u64,
    /// Recent rates of this shard's commands and (shard 0 only) the server's network bytes
    /// in and out, for INFO; sampled by the shard's 100 ms tick.
    pub rates: [rcodis_core::rate::RateMeter; 3],
    pub keyspace_hits: u64,
    pub keyspace_misses: u64,
    /// Clients blocked on keys this shard owns, in arrival order per (db, key).
    pub blocked:
        HashMap<(usize, bytes::Bytes), std::collections::VecDeque<crate::blocking::Waiter>>,
    /// Inside a transaction (EXEC): the keys that became ready for blocked clients, served
    /// once the whole transaction has run, as Redis does.
    pub deferred_ready: Option<Vec<(usize, bytes::Bytes)>>,
    /// Jobs to send to other shards once the current synchronous work is done.
    pub deferred: Vec<(usize, Job)>,
    /// Connections accepted by this shard.
    pub clients: HashMap<u64, crate::conn::ClientInfo>,
    /// Pub/sub subscribers of this shard's connections.
    pub pubsub: crate::pubsub::Registry,
    /// Slow commands seen by this shard (SLOWLOG), newest last.
    pub slowlog: std::collections::VecDeque<SlowEntry>,
    /// Copies of the slowlog settings (CONFIG SET updates every shard).
    pub slowlog_threshold_us: i64,
    pub slowlog_max_len: usize,
    /// Whether active expiry runs (DEBUG SET-ACTIVE-EXPIRE).
    pub active_expire: bool,
    /// Cached connections to slot-migration targets, by address.
    pub mgrt_conns: HashMap<String, crate::slots::MgrtConn>,
    /// This shard's append-only log (when appendonly is on).
    pub aof: Option<crate::aof::Aof>,
    /// Keys of running async migration batches, by database (writes to them are refused).
    pub mgrt_keys: HashMap<usize, crate::slots_async::Migrating>,
}

/// Global SLOWLOG id sequence.
pub static SLOWLOG_ID: AtomicU64 = AtomicU64::new(0);

/// One SLOWLOG entry.
#[derive(Debug, Clone)]
pub struct SlowEntry {
    pub id: u64,
    pub unix: u64,
    pub usec: u64,
    pub args: Vec<bytes::Bytes>,
}

impl std::fmt::Debug for ShardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardState")
            .field("id", &self.id)
            .field("nr_shards", &self.nr_shards)
            .finish()
    }
}

impl ShardState {
    pub fn new(id: usize, nr_shards: usize, databases: usize) -> Self {
        ShardState {
            id,
            nr_shards,
            dbs: (0..databases).map(|_| Db::new(id, nr_shards)).collect(),
            cmdstats: vec![CmdStat::default(); rcodis_core::cmd::NUM_SPECS],
            total_commands: 0,
            rates: Default::default(),
            keyspace_hits: 0,
            keyspace_misses: 0,
            blocked: HashMap::new(),
            deferred_ready: None,
            deferred: Vec::new(),
            clients: HashMap::new(),
            pubsub: Default::default(),
            slowlog: std::collections::VecDeque::new(),
            slowlog_threshold_us: 10_000,
            slowlog_max_len: 128,
            active_expire: true,
            mgrt_conns: HashMap::new(),
            aof: None,
            mgrt_keys: HashMap::new(),
        }
    }
}

/// Process-wide state shared by all shards (read-mostly; atomics and locks off the data path).
#[derive(Debug)]
pub struct Shared {
    pub config: RwLock<Config>,
    /// Serialises multi-shard atomic operations.
    pub multi_lock: async_lock::Mutex<()>,
    pub started: Instant,
    pub start_unix: u64,
    pub run_id: String,
    pub port: AtomicUsize,
    pub connected_clients: AtomicUsize,
    pub total_connections: AtomicU64,
    pub total_commands: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub next_client_id: AtomicU64,
    /// CLIENT PAUSE: until when (unix ms; 0: not paused), and whether every command waits
    /// (ALL) or only writes and commands that may write (WRITE).
    pub pause_until_ms: AtomicU64,
    pub pause_all: std::sync::atomic::AtomicBool,
    /// Clients held by a pause now (counted as blocked, as Redis counts them).
    pub paused_clients: AtomicUsize,
    /// Clients blocked in BLPOP & co. by id: CLIENT UNBLOCK wakes one (true: with an error).
    pub unblockers: std::sync::Mutex<HashMap<u64, futures::channel::oneshot::Sender<bool>>>,
    pub shutdown: AtomicBool,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    /// CONFIG GET/SET parameters.
    pub params: RwLock<std::collections::BTreeMap<String, String>>,
    pub slowlog_threshold_us: std::sync::atomic::AtomicI64,
    pub slowlog_max_len: AtomicUsize,
    pub slowlog_next_id: AtomicU64,
    pub active_expire: AtomicBool,
    pub lastsave: AtomicU64,
    pub expired_stale_perc: AtomicU64,
    /// Shards that flushed and synced their logs after a shutdown request.
    pub shutdown_synced: AtomicUsize,
    pub bgsave_in_progress: AtomicBool,
    pub last_bgsave_ok: AtomicBool,
    /// True until the persisted data is loaded (commands without the `loading` flag get
    /// -LOADING); with progress for INFO persistence.
    pub loading: AtomicBool,
    /// Running async migration batches, by database.
    pub mgrt_async:
        std::sync::Mutex<std::collections::HashMap<usize, Arc<crate::slots_async::BatchInfo>>>,
    pub loading_start: AtomicU64,
    pub loading_total: AtomicU64,
    pub loading_done: AtomicU64,
    /// Replication (master and replica sides).
    pub repl: crate::repl::Repl,
}

impl Shared {
    pub fn new(config: Config) -> Self {
        let start_unix = crate::db::now_ms() / 1000;
        let run_id = format!("{:040x}", rand::random::<u128>() ^ start_unix as u128)
            .chars()
            .take(40)
            .collect();
        let params = crate::params::defaults(&config);
        Shared {
            params: RwLock::new(params),
            slowlog_threshold_us: std::sync::atomic::AtomicI64::new(10_000),
            slowlog_max_len: AtomicUsize::new(128),
            slowlog_next_id: AtomicU64::new(0),
            active_expire: AtomicBool::new(true),
            lastsave: AtomicU64::new(start_unix),
            expired_stale_perc: AtomicU64::new(0),
            shutdown_synced: AtomicUsize::new(0),
            bgsave_in_progress: AtomicBool::new(false),
            last_bgsave_ok: AtomicBool::new(true),
            loading: AtomicBool::new(true),
            mgrt_async: Default::default(),
            loading_start: AtomicU64::new(start_unix),
            loading_total: AtomicU64::new(0),
            loading_done: AtomicU64::new(0),
            repl: Default::default(),
            config: RwLock::new(config),
            multi_lock: async_lock::Mutex::new(()),
            started: Instant::now(),
            start_unix,
            run_id,
            port: AtomicUsize::new(0),
            connected_clients: AtomicUsize::new(0),
            total_connections: AtomicU64::new(0),
            total_commands: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            next_client_id: AtomicU64::new(1),
            pause_until_ms: AtomicU64::new(0),
            pause_all: std::sync::atomic::AtomicBool::new(false),
            paused_clients: AtomicUsize::new(0),
            unblockers: std::sync::Mutex::new(HashMap::new()),
            shutdown: AtomicBool::new(false),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
        }
    }

    /// A copy of the current configuration.
    pub fn config(&self) -> Config {
        self.config.read().expect("config lock").clone()
    }

    /// A CONFIG parameter's current value.
    pub fn param(&self, name: &str) -> String {
        self.params
            .read()
            .expect("params lock")
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    /// The password clients must give (empty: none).
    pub fn requirepass(&self) -> String {
        self.param("requirepass")
    }
}

/// One shard's handle inside its executor.
pub struct Shard {
    pub id: usize,
    pub nr_shards: usize,
    pub state: RefCell<ShardState>,
    pub shared: Arc<Shared>,
    /// `senders[j]` reaches shard j (None for ourselves).
    senders: Vec<Option<ConnectedSender<Job>>>,
}

/// The frozen shards of an atomic operation, callable synchronously.
pub struct MultiCtx<'a> {
    local_id: usize,
    local: &'a mut ShardState,
    frozen: &'a [(usize, std::sync::mpsc::Sender<Job>)],
}

impl MultiCtx<'_> {
    /// Runs `f` on shard `shard` now, synchronously, and returns its result.
    pub fn call<T: Send + 'static>(
        &mut self,
        shard: usize,
        f: impl FnOnce(&mut ShardState) -> T + Send + 'static,
    ) -> T {
        if shard == self.local_id {
            return f(self.local);
        }
        let tx = &self
            .frozen
            .iter()
            .find(|(s, _)| *s == shard)
            .expect("shard is frozen for this operation")
            .1;
        let (rtx, rrx) = std::sync::mpsc::sync_channel(1);
        tx.send(Box::new(move |st| {
            let _ = rtx.send(f(st));
        }))
        .expect("frozen shard alive");
        rrx.recv().expect("frozen shard answers")
    }
}

impl Shard {
    pub fn new(
        id: usize,
        nr_shards: usize,
        state: ShardState,
        shared: Arc<Shared>,
        senders: Vec<Option<ConnectedSender<Job>>>,
    ) -> Self {
        Shard {
            id,
            nr_shards,
            state: RefCell::new(state),
            shared,
            senders,
        }
    }

    /// The shard that owns a key.
    #[inline]
    pub fn shard_of(&self, key: &[u8]) -> usize {
        rcodis_core::slot::slot_of(key) as usize % self.nr_shards
    }

    async fn send_job(&self, target: usize, job: Job) {
        let s = self.senders[target].as_ref().expect("no channel to self");
        if s.send(job).await.is_err() {
            panic!("shard {target} is gone");
        }
    }

    /// Runs `f` on shard `target` (inline when it is this shard) and returns its result.
    pub async fn run_on<R: Send + 'static>(
        &self,
        target: usize,
        f: impl FnOnce(&mut ShardState) -> R + Send + 'static,
    ) -> R {
        if target == self.id {
            return f(&mut self.state.borrow_mut());
        }
        let (tx, rx) = futures::channel::oneshot::channel();
        self.send_job(
            target,
            Box::new(move |st| {
                let _ = tx.send(f(st));
            }),
        )
        .await;
        rx.await.expect("shard answered")
    }

    /// Runs `f` on every shard concurrently; results in shard order.
    pub async fn run_on_all<R: Send + 'static>(
        &self,
        f: impl Fn(&mut ShardState) -> R + Send + Sync + Clone + 'static,
    ) -> Vec<R> {
        let futs = (0..self.nr_shards).map(|s| {
            let f = f.clone();
            self.run_on(s, f)
        });
        futures::future::join_all(futs).await
    }

    /// Runs `f` atomically with every shard in `shards` frozen (see the module docs).
    pub async fn atomic<R>(
        &self,
        shards: &BTreeSet<usize>,
        f: impl FnOnce(&mut MultiCtx<'_>) -> R,
    ) -> R {
        let _guard = self.shared.multi_lock.lock().await;
        let mut frozen = Vec::new();
        for &s in shards.iter().filter(|&&s| s != self.id) {
            let (ack_tx, ack_rx) = futures::channel::oneshot::channel::<()>();
            let (job_tx, job_rx) = std::sync::mpsc::channel::<Job>();
            self.send_job(
                s,
                Box::new(move |st| {
                    let _ = ack_tx.send(());
                    // Frozen: serve only the coordinator until it drops its sender.
                    while let Ok(job) = job_rx.recv() {
                        job(st);
                    }
                }),
            )
            .await;
            ack_rx.await.expect("shard froze");
            frozen.push((s, job_tx));
        }
        let mut st = self.state.borrow_mut();
        let mut ctx = MultiCtx {
            local_id: self.id,
            local: &mut st,
            frozen: &frozen,
        };
        f(&mut ctx)
        // `frozen` drops here: every frozen shard's loop ends and it resumes.
    }
}

/// Runs every job arriving from one peer shard.
pub async fn serve_jobs(shard: Rc<Shard>, rx: ConnectedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        job(&mut shard.state.borrow_mut());
        shard.send_deferred();
    }
}

impl Shard {
    /// Sends the jobs that synchronous work queued for other shards (in order per target).
    pub fn send_deferred(self: &Rc<Self>) {
        let jobs = std::mem::take(&mut self.state.borrow_mut().deferred);
        if jobs.is_empty() {
            return;
        }
        let me = self.clone();
        glommio::spawn_local(async move {
            for (target, job) in jobs {
                if target == me.id {
                    job(&mut me.state.borrow_mut());
                } else {
                    me.send_job(target, job).await;
                }
            }
            me.send_deferred();
        })
        .detach();
    }
}

/// Bumps a command's statistics.
#[inline]
pub fn record(st: &mut ShardState, id: u16, usec: u64, failed: bool) {
    let s = &mut st.cmdstats[id as usize];
    s.calls += 1;
    s.usec += usec;
    if failed {
        s.failed += 1;
    }
}

/// Keeps glommio's `Ordering` import meaningful for callers that read counters.
pub fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}
