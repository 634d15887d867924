//! Client-side caching (CLIENT TRACKING), as Redis 7.0 does it: the server remembers which
//! clients read which keys and tells them when a key changes, so that they can cache
//! values locally.
//!
//! - Default mode: before a tracking client's read-only command runs, its keys are recorded
//!   in the table of the shard that owns them (key name → client ids; names are global
//!   across databases, as in Redis). Recording before the read is safe: a write in between
//!   only sends an invalidation early. The first change to a recorded key (write, expiry,
//!   eviction) sends every recorded client an `invalidate` message for it and forgets the
//!   entry. OPTIN/OPTOUT with CLIENT CACHING choose which commands are recorded.
//! - BCAST mode: nothing is recorded; every changed key that starts with one of the
//!   client's prefixes is reported. The keys changed while a shard runs are gathered per
//!   prefix and sent together when it next yields (Redis sends them before it sleeps).
//! - NOLOOP: no messages about keys the client changed itself.
//! - Messages go to the client itself (RESP3 push `invalidate`), or to the REDIRECT client:
//!   a RESP3 one gets the push, a RESP2 one must be subscribed and gets a message on
//!   `__redis__:invalidate`. A redirect target that has gone leaves the client with a
//!   `tracking-redir-broken` push (RESP3). FLUSHALL/FLUSHDB send a null (every key).
//!
//! The tables are behind one mutex per shard (only touched while some client tracks), and
//! messages reach connections through the same channel as pub/sub messages.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use hashbrown::{HashMap, HashSet};

use crate::out::Out;

/// Where messages for one connection go (its pub/sub channel), and how it reads them.
#[derive(Debug)]
pub struct Mailbox {
    pub tx: futures::channel::mpsc::UnboundedSender<Bytes>,
    pub queued: Arc<AtomicUsize>,
    pub resp3: AtomicBool,
    /// Subscribed to something (a RESP2 redirect target gets messages only then).
    pub pubsub: AtomicBool,
}

impl Mailbox {
    fn send(&self, msg: Bytes) {
        self.queued.fetch_add(msg.len(), Ordering::AcqRel);
        if self.tx.unbounded_send(msg).is_err() {
            self.queued.store(0, Ordering::Release);
        }
    }

    /// Whether the connection is gone.
    pub fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// CLIENT TRACKING options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    /// The client id messages are redirected to (0: none).
    pub redirect: u64,
    pub prefixes: Vec<Bytes>,
}

/// A tracking client.
#[derive(Debug)]
pub struct Tracker {
    pub id: u64,
    pub own: Arc<Mailbox>,
    pub redir: Option<Arc<Mailbox>>,
    pub opts: Options,
    /// The redirect target went away.
    pub broken: AtomicBool,
}

#[derive(Default)]
struct Table {
    keys: HashMap<Bytes, HashSet<u64>>,
    /// BCAST: keys changed since the last broadcast, with the client that changed each.
    changed: Vec<(Bytes, u64)>,
    flush_scheduled: bool,
}

struct Global {
    tables: Vec<Mutex<Table>>,
    clients: RwLock<HashMap<u64, Arc<Tracker>>>,
    /// BCAST prefixes and their clients.
    prefixes: RwLock<BTreeMap<Bytes, HashSet<u64>>>,
}

static GLOBAL: OnceLock<Global> = OnceLock::new();
/// Whether any client tracks (checked on every key change: one relaxed load).
static ON: AtomicBool = AtomicBool::new(false);
static ANY_PREFIX: AtomicBool = AtomicBool::new(false);
static KEYS: AtomicUsize = AtomicUsize::new(0);
static ITEMS: AtomicUsize = AtomicUsize::new(0);
static MAX_KEYS: AtomicUsize = AtomicUsize::new(1_000_000);

thread_local! {
    /// The client whose command runs on this thread now (0: none), for NOLOOP, and whether
    /// the keys its read-only commands read are to be recorded for it.
    static CURRENT: Cell<(u64, bool)> = const { Cell::new((0, false)) };
    /// Whether this thread runs a shard's executor (broadcasts wait for it to yield).
    static SHARD_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as a shard's executor thread.
pub fn mark_shard_thread() {
    SHARD_THREAD.with(|c| c.set(true));
}

fn new_global(nr_shards: usize) -> Global {
    Global {
        tables: (0..nr_shards.max(1))
            .map(|_| Mutex::new(Table::default()))
            .collect(),
        clients: RwLock::new(HashMap::new()),
        prefixes: RwLock::new(BTreeMap::new()),
    }
}

/// Sets up one table per shard (at start-up).
pub fn init(nr_shards: usize) {
    let _ = GLOBAL.set(new_global(nr_shards));
}

fn global() -> &'static Global {
    GLOBAL.get_or_init(|| new_global(1))
}

/// Whether any client tracks keys.
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// `tracking-table-max-keys` (0: no limit).
pub fn set_max_keys(n: usize) {
    MAX_KEYS.store(n, Ordering::Relaxed);
}

/// Marks the client whose command runs now on this thread (0 when done), and whether its
/// reads are recorded (default mode, as OPTIN/OPTOUT and CLIENT CACHING decide).
#[inline]
pub fn set_current(id: u64, track: bool) {
    if on() {
        CURRENT.with(|c| c.set((id, track)));
    }
}

/// After a command ran on `shard` for the current client: records the keys a read-only
/// command read (in the same step as the read, as Redis does after the command).
#[cold]
pub fn after_command(
    shard: usize,
    spec: &rcodis_core::cmd::CommandSpec,
    req: &rcodis_core::resp::Request,
) {
    use rcodis_core::cmd::CommandFlags;
    let (id, track) = CURRENT.with(|c| c.get());
    if id == 0 || !track || !spec.has(CommandFlags::READONLY) || spec.has(CommandFlags::PUBSUB) {
        return;
    }
    let args: Vec<&[u8]> = req.args().collect();
    if let Ok(idx) = rcodis_core::cmd::key_indexes(spec, &args, false) {
        for i in idx {
            remember(shard, id, args[i]);
        }
    }
}

/// Starts (or changes) tracking for a client. The caller checked the options.
pub fn enable(t: Tracker) {
    let g = global();
    let t = Arc::new(t);
    let mut clients = g.clients.write().expect("tracking clients");
    if t.opts.bcast {
        let mut p = g.prefixes.write().expect("tracking prefixes");
        for prefix in &t.opts.prefixes {
            p.entry(prefix.clone()).or_default().insert(t.id);
        }
        ANY_PREFIX.store(!p.is_empty(), Ordering::Relaxed);
    }
    clients.insert(t.id, t);
    ON.store(true, Ordering::Relaxed);
}

/// Stops tracking for a client (its entries in the tables are dropped lazily).
pub fn disable(id: u64) {
    let g = global();
    let mut clients = g.clients.write().expect("tracking clients");
    if let Some(t) = clients.remove(&id) {
        if t.opts.bcast {
            let mut p = g.prefixes.write().expect("tracking prefixes");
            for prefix in &t.opts.prefixes {
                if let Some(ids) = p.get_mut(prefix) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        p.remove(prefix);
                    }
                }
            }
            ANY_PREFIX.store(!p.is_empty(), Ordering::Relaxed);
        }
    }
    ON.store(!clients.is_empty(), Ordering::Relaxed);
}

/// Records that client `id` is about to read `key` (owned by `shard`).
pub fn remember(shard: usize, id: u64, key: &[u8]) {
    let g = global();
    let Some(table) = g.tables.get(shard) else {
        return;
    };
    let mut evict = Vec::new();
    {
        let mut t = table.lock().expect("tracking table");
        let ids = match t.keys.get_mut(key) {
            Some(ids) => ids,
            None => {
                KEYS.fetch_add(1, Ordering::Relaxed);
                t.keys.entry(Bytes::copy_from_slice(key)).or_default()
            }
        };
        if ids.insert(id) {
            ITEMS.fetch_add(1, Ordering::Relaxed);
        }
        // Over `tracking-table-max-keys`: forget other keys, telling their clients.
        let max = MAX_KEYS.load(Ordering::Relaxed);
        while max > 0 && KEYS.load(Ordering::Relaxed) > max {
            let Some(victim) = t.keys.keys().find(|k| k.as_ref() != key).cloned() else {
                break;
            };
            let ids = t.keys.remove(&victim).unwrap_or_default();
            KEYS.fetch_sub(1, Ordering::Relaxed);
            ITEMS.fetch_sub(ids.len(), Ordering::Relaxed);
            evict.push((victim, ids));
        }
    }
    for (key, ids) in evict {
        send_to_ids(&ids, &key, 0);
    }
}

/// A key changed on `shard` (write, expiry, eviction): tell whoever tracks it.
#[cold]
#[inline(never)]
pub fn modified(shard: usize, key: &[u8]) {
    let g = global();
    let Some(table) = g.tables.get(shard) else {
        return;
    };
    let current = CURRENT.with(|c| c.get().0);
    let bcast = ANY_PREFIX.load(Ordering::Relaxed) && matches_any_prefix(g, key);
    let (ids, schedule) = {
        let mut t = table.lock().expect("tracking table");
        let mut schedule = false;
        if bcast {
            t.changed.push((Bytes::copy_from_slice(key), current));
            schedule = !std::mem::replace(&mut t.flush_scheduled, true);
        }
        let ids = t.keys.remove(key);
        if let Some(ids) = &ids {
            KEYS.fetch_sub(1, Ordering::Relaxed);
            ITEMS.fetch_sub(ids.len(), Ordering::Relaxed);
        }
        (ids, schedule)
    };
    if schedule {
        schedule_broadcast(shard);
    }
    if let Some(ids) = ids {
        send_to_ids(&ids, key, current);
    }
}

fn matches_any_prefix(g: &Global, key: &[u8]) -> bool {
    g.prefixes
        .read()
        .expect("tracking prefixes")
        .keys()
        .any(|p| key.starts_with(p))
}

/// Default-mode invalidation of `key` for the clients `ids` (skipping, with NOLOOP, the one
/// that changed it).
fn send_to_ids(ids: &HashSet<u64>, key: &[u8], modifier: u64) {
    let clients = global().clients.read().expect("tracking clients");
    for id in ids {
        let Some(t) = clients.get(id) else { continue };
        if t.opts.bcast || (t.opts.noloop && *id == modifier) {
            continue;
        }
        deliver(t, Payload::Keys(&[key]));
    }
}

fn schedule_broadcast(shard: usize) {
    // Runs once this shard yields, so that everything a command or transaction changed goes
    // out together. Off an executor (never with clients) it is sent at once.
    if SHARD_THREAD.with(|c| c.get()) {
        // glommio polls a spawned task at once: yield first, so the task runs only after
        // the current one (the command or batch) gives way.
        glommio::spawn_local(async move {
            futures_lite::future::yield_now().await;
            broadcast(shard)
        })
        .detach();
    } else {
        broadcast(shard);
    }
}

/// Sends the BCAST messages for the keys `shard` changed since the last call: per prefix,
/// one message with its keys, to each of its clients (NOLOOP: without the keys it changed).
fn broadcast(shard: usize) {
    let g = global();
    let changed = {
        let mut t = g.tables[shard].lock().expect("tracking table");
        t.flush_scheduled = false;
        std::mem::take(&mut t.changed)
    };
    if changed.is_empty() {
        return;
    }
    let prefixes = g.prefixes.read().expect("tracking prefixes").clone();
    let clients = g.clients.read().expect("tracking clients");
    for (prefix, ids) in &prefixes {
        // Each key once, with the client that changed it last (as Redis keeps it).
        let mut keys: BTreeMap<&[u8], u64> = BTreeMap::new();
        for (k, by) in &changed {
            if k.starts_with(prefix) {
                keys.insert(k, *by);
            }
        }
        if keys.is_empty() {
            continue;
        }
        for id in ids {
            let Some(t) = clients.get(id) else { continue };
            let list: Vec<&[u8]> = keys
                .iter()
                .filter(|(_, by)| !(t.opts.noloop && **by == *id))
                .map(|(k, _)| *k)
                .collect();
            if !list.is_empty() {
                deliver(t, Payload::Keys(&list));
            }
        }
    }
}

/// FLUSHALL, FLUSHDB and reloads: every tracking client is told that every key changed,
/// and the tables are emptied.
pub fn flush_all() {
    if !on() {
        return;
    }
    let g = global();
    for t in &g.tables {
        let mut t = t.lock().expect("tracking table");
        t.keys.clear();
    }
    KEYS.store(0, Ordering::Relaxed);
    ITEMS.store(0, Ordering::Relaxed);
    let clients = g.clients.read().expect("tracking clients");
    for t in clients.values() {
        deliver(t, Payload::All);
    }
}

enum Payload<'a> {
    Keys(&'a [&'a [u8]]),
    All,
}

fn deliver(t: &Tracker, payload: Payload<'_>) {
    let (mb, redirected) = match &t.redir {
        Some(r) => (r.as_ref(), true),
        None => (t.own.as_ref(), false),
    };
    if redirected && mb.closed() {
        t.broken.store(true, Ordering::Relaxed);
        if t.own.resp3.load(Ordering::Relaxed) {
            let mut out = Out::new(true);
            rcodis_core::resp::encode::write_aggregate_len(&mut out.buf, b'>', 2);
            out.bulk(b"tracking-redir-broken");
            out.int(t.opts.redirect as i64);
            t.own.send(out.buf.freeze());
        }
        return;
    }
    let resp3 = mb.resp3.load(Ordering::Relaxed);
    let mut out = Out::new(resp3);
    if resp3 {
        rcodis_core::resp::encode::write_aggregate_len(&mut out.buf, b'>', 2);
        out.bulk(b"invalidate");
    } else if redirected && mb.pubsub.load(Ordering::Relaxed) {
        out.array(3);
        out.bulk(b"message");
        out.bulk(b"__redis__:invalidate");
    } else {
        // RESP2 without a subscribed redirect target: nowhere to send it (as in Redis).
        return;
    }
    match payload {
        Payload::Keys(keys) => {
            out.array(keys.len());
            for k in keys {
                out.bulk(k);
            }
        }
        Payload::All => out.null(),
    }
    mb.send(out.buf.freeze());
}

/// The tracker of a client, if it tracks.
pub fn tracker(id: u64) -> Option<Arc<Tracker>> {
    global()
        .clients
        .read()
        .expect("tracking clients")
        .get(&id)
        .cloned()
}

/// INFO's figures: tracking clients, keys, items, prefixes.
pub fn stats() -> (usize, usize, usize, usize) {
    let g = global();
    (
        g.clients.read().expect("tracking clients").len(),
        KEYS.load(Ordering::Relaxed),
        ITEMS.load(Ordering::Relaxed),
        g.prefixes.read().expect("tracking prefixes").len(),
    )
}

/// Checks BCAST prefixes as Redis does: none may be a prefix of another, among those given
/// and those the client has. Returns the error to reply with.
pub fn prefix_collision(existing: &[Bytes], new: &[Bytes]) -> Option<String> {
    let overlap = |a: &[u8], b: &[u8]| {
        let n = a.len().min(b.len());
        a[..n] == b[..n]
    };
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for (i, p) in new.iter().enumerate() {
        if let Some(e) = existing.iter().find(|e| overlap(e, p)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with an existing prefix '{}'. Prefixes for a single client must not overlap.",
                s(p),
                s(e)
            ));
        }
        if let Some(q) = new[i + 1..].iter().find(|q| overlap(p, q)) {
            return Some(format!(
                "ERR Prefix '{}' overlaps with another provided prefix '{}'. Prefixes for a single client must not overlap.",
                s(p),
                s(q)
            ));
        }
    }
    None
}
