//! A shard's keyspace: databases of per-slot hash tables, values, expiry. Synchronous, no I/O.
//!
//! Each database keeps one table per slot this shard owns (`slot / nr_shards` is the local
//! index), so a slot's keys can be counted, scanned and moved on their own. Keys with a TTL
//! are also in an index set that active expiry samples at random.

pub mod digest;
pub mod dump;
pub mod key;
pub mod stream;
pub mod zset;

use std::collections::VecDeque;

use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use indexmap::IndexSet;
use rand::Rng;
use rcodis_core::slot::{slot_of, NUM_SLOTS};

pub use key::{Key, Probe};
pub use stream::Stream;
pub use zset::ZSet;

/// `set-max-intset-entries`.
pub fn encoding_limit_of_sets() -> usize {
    encoding_limit(2)
}

/// Whether Redis would keep this set as an intset: few enough members, all integers.
pub fn set_is_intset(s: &hashbrown::HashSet<Bytes>) -> bool {
    s.len() <= encoding_limit(2) && s.iter().all(|m| rcodis_core::num::parse_i64(m).is_some())
}

/// A hash's fields in insertion order, as a small (listpack) hash in Redis keeps them and
/// HGETALL, HKEYS, HVALS and HSCAN show them. Remove with [`hash_remove`].
pub type HashVal = indexmap::IndexMap<Bytes, Bytes, hashbrown::DefaultHashBuilder>;

/// Removes a field: the others keep their order while the hash is small (Redis's listpack;
/// later a hashtable, whose order is its own, so the cheap removal is fine).
pub fn hash_remove(h: &mut HashVal, field: &[u8]) -> Option<Bytes> {
    if h.len() <= encoding_limit(0) {
        h.shift_remove(field)
    } else {
        h.swap_remove(field)
    }
}

/// Redis's encoding thresholds, for OBJECT ENCODING: hash entries and value size, set
/// (intset) entries, sorted-set entries and member size.
static ENCODING_LIMITS: [std::sync::atomic::AtomicUsize; 5] = [
    std::sync::atomic::AtomicUsize::new(512),
    std::sync::atomic::AtomicUsize::new(64),
    std::sync::atomic::AtomicUsize::new(512),
    std::sync::atomic::AtomicUsize::new(128),
    std::sync::atomic::AtomicUsize::new(64),
];

fn encoding_limit(i: usize) -> usize {
    ENCODING_LIMITS[i].load(std::sync::atomic::Ordering::Relaxed)
}

/// Applies one of the encoding settings (CONFIG SET, and the configured values at start);
/// other names are ignored.
pub fn set_encoding_limit(name: &str, value: &str) {
    let i = match name {
        "hash-max-listpack-entries" | "hash-max-ziplist-entries" => 0,
        "hash-max-listpack-value" | "hash-max-ziplist-value" => 1,
        "set-max-intset-entries" => 2,
        "zset-max-listpack-entries" | "zset-max-ziplist-entries" => 3,
        "zset-max-listpack-value" | "zset-max-ziplist-value" => 4,
        _ => return,
    };
    if let Ok(v) = value.parse::<usize>() {
        ENCODING_LIMITS[i].store(v, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A stored value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Bytes),
    List(VecDeque<Bytes>),
    // Boxed, so that a string (the common value) does not pay for the widest variant in
    // every table bucket.
    Hash(Box<HashVal>),
    Set(Box<HashSet<Bytes>>),
    ZSet(Box<ZSet>),
    Stream(Box<Stream>),
}

impl Value {
    /// The name TYPE reports.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Hash(_) => "hash",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Stream(_) => "stream",
        }
    }

    /// The encoding OBJECT ENCODING reports, following Redis 7.0's default thresholds.
    pub fn encoding(&self) -> &'static str {
        match self {
            Value::Str(s) => {
                if s.len() <= 20 && rcodis_core::num::parse_i64(s).is_some() {
                    "int"
                } else if s.len() <= 44 {
                    "embstr"
                } else {
                    "raw"
                }
            }
            // Redis 7.0 keeps every list in a quicklist (listpack lists came with 7.2).
            Value::List(_) => "quicklist",
            Value::Hash(h) => {
                let max = encoding_limit(1);
                if h.len() <= encoding_limit(0)
                    && h.iter().all(|(k, v)| k.len() <= max && v.len() <= max)
                {
                    "listpack"
                } else {
                    "hashtable"
                }
            }
            Value::Set(s) => {
                if set_is_intset(s) {
                    "intset"
                } else {
                    "hashtable"
                }
            }
            Value::ZSet(z) => {
                let max = encoding_limit(4);
                if z.len() <= encoding_limit(3) && z.dict.keys().all(|m| m.len() <= max) {
                    "listpack"
                } else {
                    "skiplist"
                }
            }
            Value::Stream(_) => "stream",
        }
    }

    /// Rough heap size of the value in bytes (for MEMORY USAGE and eviction).
    pub fn mem_size(&self) -> usize {
        const OVH: usize = 16;
        match self {
            Value::Str(s) => s.len() + OVH,
            Value::List(l) => l.iter().map(|e| e.len() + OVH + 8).sum::<usize>() + OVH,
            Value::Hash(h) => {
                h.iter()
                    .map(|(k, v)| k.len() + v.len() + 2 * OVH + 8)
                    .sum::<usize>()
                    + OVH
            }
            Value::Set(s) => s.iter().map(|m| m.len() + OVH + 8).sum::<usize>() + OVH,
            Value::ZSet(z) => {
                z.dict
                    .keys()
                    .map(|m| 2 * m.len() + 3 * OVH + 24)
                    .sum::<usize>()
                    + OVH
            }
            Value::Stream(st) => st.mem_size() + OVH,
        }
    }
}

/// A probe that never matches (see [`Db::prefetch_probe`]): it hashes as the key's bytes, and
/// every bucket the table asks it to compare is prefetched rather than read.
struct Touch<'a>(&'a [u8]);

impl std::hash::Hash for Touch<'_> {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `Key` hashes: exactly as its bytes.
        self.0.hash(state)
    }
}

impl hashbrown::Equivalent<Key> for Touch<'_> {
    #[inline]
    fn equivalent(&self, key: &Key) -> bool {
        // The bucket (key, then entry) may straddle two cache lines: fetch both.
        let p = key as *const Key as *const u8;
        prefetch_line(p);
        prefetch_line(p.wrapping_add(64));
        false
    }
}

/// Asks the processor to bring the cache line at `p` in (a hint: nothing where the target
/// has no such instruction).
#[inline(always)]
fn prefetch_line(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A key's value with its expiry time (unix ms, 0 = none) and last access (for IDLETIME).
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    pub expire_at: u64,
    /// Last access in unix seconds: Redis's LRU clock has the same one-second resolution,
    /// and four bytes instead of eight keep a table bucket small.
    access_s: u32,
    /// LFU counter (Redis's logarithmic access frequency).
    pub freq: u8,
    /// How Redis would have encoded this string given how it was written (OBJECT
    /// ENCODING); lives in what was padding.
    pub str_enc: StrEnc,
}

/// What a string's OBJECT ENCODING depends on besides its bytes: Redis stores a value given by
/// a client as an integer when it reads as one (SET, MSET, INCR, RESTORE...), builds some
/// strings as plain strings (INCRBYFLOAT), and turns a string it modifies in place into a raw
/// one (APPEND to an existing key, SETRANGE, SETBIT, BITFIELD, BITOP).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StrEnc {
    /// `int` when it reads as an integer, else `embstr` up to 44 bytes, else `raw`.
    #[default]
    Derived,
    /// `embstr` up to 44 bytes, else `raw`.
    Plain,
    /// `raw`.
    Raw,
}

const _: () = assert!(
    std::mem::size_of::<Entry>() <= 56,
    "an entry must stay within a table bucket's budget"
);

impl Entry {
    pub fn new(value: Value, now: u64) -> Self {
        Entry {
            value,
            expire_at: 0,
            access_s: (now / 1000) as u32,
            freq: crate::memory::LFU_INIT,
            str_enc: StrEnc::Derived,
        }
    }

    /// A string entry whose OBJECT ENCODING follows `enc`.
    pub fn string(value: Bytes, now: u64, enc: StrEnc) -> Self {
        let mut e = Entry::new(Value::Str(value), now);
        e.str_enc = enc;
        e
    }

    /// The encoding OBJECT ENCODING reports.
    pub fn encoding(&self) -> &'static str {
        match (&self.value, self.str_enc) {
            (Value::Str(_), StrEnc::Raw) => "raw",
            (Value::Str(s), StrEnc::Plain) if s.len() > 44 => "raw",
            (Value::Str(_), StrEnc::Plain) => "embstr",
            (v, _) => v.encoding(),
        }
    }

    /// Last access (unix ms, at one-second resolution).
    #[inline]
    pub fn access_ms(&self) -> u64 {
        self.access_s as u64 * 1000
    }

    /// Records an access at `ms` (unix ms).
    #[inline]
    pub fn set_access_ms(&mut self, ms: u64) {
        self.access_s = (ms / 1000) as u32;
    }
}

/// Set in what [`Db::watch`] returns when the key was alive.
const WATCHED_ALIVE: u64 = 1 << 63;

/// One database of one shard.
#[derive(Debug, Clone)]
pub struct Db {
    nr_shards: usize,
    shard_id: usize,
    slots: Vec<HashMap<Key, Entry>>,
    expires: IndexSet<Bytes>,
    len: usize,
    /// Keys someone WATCHes: key → (version bumped on every write, number of watchers).
    watched: HashMap<Bytes, (u64, u32)>,
    pub expired_keys: u64,
    /// Redis's running estimate of the keys' remaining TTL in ms (INFO keyspace avg_ttl),
    /// from active expiry's samples.
    pub avg_ttl: u64,
    /// The slot of the running command's first key, computed once while routing it:
    /// (address, length, slot) of that argument inside the request, which is immutable and
    /// alive for the whole command. Cleared when the command ends.
    slot_hint: Option<(usize, usize, u16)>,
    /// A temporary database (a multi-shard step's, or one to word an argument error): it
    /// holds only the keys a command declared, so a script must not reach for others.
    pub scratch: bool,
    /// While keyspace notifications are on: the keys changed since the last
    /// [`Db::take_touched`], and the events gathered for publishing (see `notify.rs`).
    touched: Vec<Bytes>,
    notes: Vec<crate::notify::Note>,
}

/// Current unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Db {
    pub fn new(shard_id: usize, nr_shards: usize) -> Self {
        let local_slots = (shard_id..NUM_SLOTS).step_by(nr_shards).count();
        Db {
            nr_shards,
            shard_id,
            slots: (0..local_slots).map(|_| HashMap::new()).collect(),
            expires: IndexSet::new(),
            len: 0,
            watched: HashMap::new(),
            expired_keys: 0,
            slot_hint: None,
            avg_ttl: 0,
            scratch: false,
            touched: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A temporary database of one shard's width holding whatever is put in it.
    pub fn scratch() -> Self {
        let mut d = Db::new(0, 1);
        d.scratch = true;
        d
    }

    #[inline]
    fn local(&self, slot: u16) -> usize {
        debug_assert_eq!(slot as usize % self.nr_shards, self.shard_id);
        slot as usize / self.nr_shards
    }

    #[inline]
    fn table(&mut self, key: &[u8]) -> &mut HashMap<Key, Entry> {
        let slot = match self.slot_hint {
            Some((p, l, s)) if key.as_ptr() as usize == p && key.len() == l => s,
            _ => slot_of(key),
        };
        let i = self.local(slot);
        &mut self.slots[i]
    }

    /// Tells the database the slot of `key` (a slice the caller keeps alive and unchanged
    /// until [`Db::clear_slot_hint`]), so lookups of that key skip the CRC.
    #[inline]
    pub fn set_slot_hint(&mut self, key: &[u8], slot: u16) {
        self.slot_hint = Some((key.as_ptr() as usize, key.len(), slot));
    }

    /// Forgets the slot hint.
    #[inline]
    pub fn clear_slot_hint(&mut self) {
        self.slot_hint = None;
    }

    /// Number of live keys (expired ones not yet reaped included, as Redis's DBSIZE).
    /// Whether this database holds every key of its number (one shard, not a scratch copy):
    /// keyspace-wide commands may then run on it alone.
    pub fn whole_keyspace(&self) -> bool {
        self.nr_shards == 1 && !self.scratch
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys with a TTL.
    pub fn expires_len(&self) -> usize {
        self.expires.len()
    }

    /// Keys in one slot.
    pub fn slot_len(&self, slot: u16) -> usize {
        self.slots[self.local(slot)].len()
    }

    /// The keys of one slot.
    pub fn slot_keys(&self, slot: u16) -> impl Iterator<Item = &Key> {
        self.slots[self.local(slot)].keys()
    }

    /// Every (key, entry) of one slot.
    pub fn slot_entries(&self, slot: u16) -> impl Iterator<Item = (&Key, &Entry)> {
        self.slots[self.local(slot)].iter()
    }

    /// Slots owned by this shard, ascending.
    pub fn owned_slots(&self) -> impl Iterator<Item = u16> + '_ {
        (self.shard_id..NUM_SLOTS)
            .step_by(self.nr_shards)
            .map(|s| s as u16)
    }

    fn expire_now(&mut self, key: &[u8]) {
        if let Some((k, _)) = self.table(key).remove_entry(key) {
            self.len -= 1;
            self.expires.swap_remove(&*k);
            self.expired_keys += 1;
            if crate::notify::wants(crate::notify::EXPIRED) {
                self.notes
                    .push((crate::notify::EXPIRED, "expired", k.to_bytes()));
            }
            // Not a change for WATCH: the key was already gone for its watchers (one who
            // saw it alive finds it gone at EXEC, see `watch_holds`).
            if crate::tracking::on() && !self.scratch {
                crate::tracking::modified(self.shard_id, key);
            }
        }
    }

    /// Whether `key` holds a live (unexpired) value, without removing an expired one.
    fn alive(&mut self, key: &[u8], now: u64) -> bool {
        self.table(key)
            .get(key)
            .is_some_and(|e| e.expire_at == 0 || e.expire_at > now)
    }

    /// Whether this database holds the slot of `key` (a shard holds only its own slots).
    #[inline]
    pub fn owns(&self, key: &[u8]) -> bool {
        self.nr_shards == 1 || slot_of(key) as usize % self.nr_shards == self.shard_id
    }

    /// Whether every key a SORT BY/GET pattern can form lives here: always with one shard;
    /// otherwise the pattern needs a hash tag (without wildcards) of a slot this shard owns.
    pub fn pattern_is_local(&self, pattern: &[u8]) -> bool {
        if self.nr_shards == 1 {
            return true;
        }
        let tag = rcodis_core::slot::hash_tag(pattern);
        tag.len() != pattern.len() && !tag.contains(&b'*') && self.owns(pattern)
    }

    /// First step of a batch prefetch: probes for the key reading only the table's control
    /// bytes (a lookup that never matches), and prefetches each candidate bucket instead of
    /// reading it, so a loop of these keeps many cache misses in flight.
    #[inline]
    pub fn prefetch_probe(&self, key: &[u8], slot: u16) {
        if slot as usize % self.nr_shards != self.shard_id {
            return;
        }
        let _ = self.slots[self.local(slot)].get(&Touch(key));
    }

    /// Brings a key's table slot, entry and string value into the cache ahead of use: a
    /// read-only lookup that changes nothing.
    #[inline]
    pub fn prefetch(&self, key: &[u8], slot: u16) {
        if slot as usize % self.nr_shards != self.shard_id {
            return;
        }
        if let Some(e) = self.slots[self.local(slot)].get(&Probe(key)) {
            if let Value::Str(v) = &e.value {
                prefetch_line(v.as_ptr());
            }
        }
    }

    /// The live entry of a key (an expired one is removed and reported absent).
    #[inline]
    pub fn get(&mut self, key: &[u8], now: u64) -> Option<&mut Entry> {
        if self.nr_shards > 1 && self.slot_hint.is_none() && !self.owns(key) {
            return None;
        }
        let e: *mut Entry = self.table(key).get_mut(&Probe(key))?;
        // SAFETY: `e` points into the table and stays valid until the table is next
        // modified; the live path returns it with `self`'s borrow, and the expired path
        // stops using it before `expire_now` removes the entry. (A raw pointer only because
        // the borrow checker cannot yet see that the two paths are disjoint.)
        let e = unsafe { &mut *e };
        if e.expire_at != 0 && e.expire_at <= now {
            self.expire_now(key);
            return None;
        }
        if crate::memory::policy().is_lfu() {
            crate::memory::lfu_touch(e, now);
        }
        e.set_access_ms(now);
        Some(e)
    }

    /// The live entry of a key without updating its access time (OBJECT, MEMORY).
    pub fn get_quiet(&mut self, key: &[u8], now: u64) -> Option<&Entry> {
        let expired = self
            .table(key)
            .get(key)
            .map(|e| e.expire_at != 0 && e.expire_at <= now)?;
        if expired {
            self.expire_now(key);
            return None;
        }
        self.table(key).get(key)
    }

    /// A key's entry as stored, expired or not, touching nothing (DEBUG DIGEST-VALUE).
    pub fn peek(&self, key: &[u8]) -> Option<&Entry> {
        if !self.owns(key) {
            return None;
        }
        self.slots[self.local(slot_of(key))].get(key)
    }

    /// Whether a live key exists.
    pub fn exists(&mut self, key: &[u8], now: u64) -> bool {
        self.get(key, now).is_some()
    }

    /// Inserts or replaces a key with no TTL.
    pub fn set(&mut self, key: &[u8], value: Value, now: u64) {
        self.set_entry(key, Entry::new(value, now));
    }

    /// Plain `SET key value` (no options): replaces whatever the key held, dropping its TTL,
    /// with a single lookup when the key exists. An expired key it replaces counts as expired.
    pub fn set_plain(&mut self, key: &[u8], value: Value, now: u64) {
        let entry = Entry::new(value, now);
        let t = self.table(key);
        match t.get_mut(key) {
            Some(e) => {
                let had_ttl = e.expire_at != 0;
                let expired = had_ttl && e.expire_at <= now;
                *e = entry;
                if expired {
                    self.expired_keys += 1;
                }
                if had_ttl {
                    self.expires.swap_remove(key);
                }
            }
            None => {
                t.insert(Key::from(key), entry);
                self.len += 1;
            }
        }
        self.touch_watched(key);
    }

    /// Inserts or replaces a key with the given entry (and its TTL).
    pub fn set_entry(&mut self, key: &[u8], entry: Entry) {
        let has_ttl = entry.expire_at != 0;
        let t = self.table(key);
        let had_ttl;
        let key_bytes;
        match t.get_mut(key) {
            Some(e) => {
                had_ttl = e.expire_at != 0;
                *e = entry;
                key_bytes = None;
            }
            None => {
                had_ttl = false;
                key_bytes = has_ttl.then(|| Bytes::copy_from_slice(key));
                t.insert(Key::from(key), entry);
                self.len += 1;
            }
        }
        if has_ttl && !had_ttl {
            self.expires
                .insert(key_bytes.unwrap_or_else(|| Bytes::copy_from_slice(key)));
        } else if !has_ttl && had_ttl {
            self.expires.swap_remove(key);
        }
        self.touch_watched(key);
    }

    /// Removes a key; returns its entry if it was live.
    pub fn remove(&mut self, key: &[u8], now: u64) -> Option<Entry> {
        self.get(key, now)?;
        let (k, e) = self.table(key).remove_entry(key)?;
        self.len -= 1;
        if e.expire_at != 0 {
            self.expires.swap_remove(&*k);
        }
        self.touch_watched(&k);
        Some(e)
    }

    /// Sets or clears (0) a live key's expiry. Returns false if the key does not exist.
    pub fn set_expire(&mut self, key: &[u8], at: u64, now: u64) -> bool {
        let Some(e) = self.get(key, now) else {
            return false;
        };
        let had = e.expire_at != 0;
        e.expire_at = at;
        if at != 0 && !had {
            self.expires.insert(Bytes::copy_from_slice(key));
        } else if at == 0 && had {
            self.expires.swap_remove(key);
        }
        self.touch_watched(key);
        true
    }

    /// Marks a key modified for WATCH (call after in-place changes through `get`).
    #[inline(always)]
    pub fn touch_watched(&mut self, key: &[u8]) {
        if !self.watched.is_empty() {
            if let Some(v) = self.watched.get_mut(key) {
                v.0 += 1;
            }
        }
        if crate::notify::on() {
            self.touched.push(Bytes::copy_from_slice(key));
        }
        if crate::tracking::on() && !self.scratch {
            crate::tracking::modified(self.shard_id, key);
        }
    }

    /// The keys changed since the last call (listed only while notifications are on).
    pub fn take_touched(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.touched)
    }

    /// Forgets the changed keys listed so far (changes that are not a command's events).
    pub fn forget_touched(&mut self) {
        self.touched.clear();
    }

    /// Gathers an event for publishing (`notify::flush`).
    pub fn note(&mut self, class: u32, event: &'static str, key: Bytes) {
        if crate::notify::wants(class) {
            self.notes.push((class, event, key));
        }
    }

    /// The events gathered so far.
    pub fn take_notes(&mut self) -> Vec<crate::notify::Note> {
        std::mem::take(&mut self.notes)
    }

    /// Eviction removed `key` (just now, with [`Db::remove`]): an `evicted` event rather
    /// than a change by the running command.
    pub fn note_evicted(&mut self, key: &[u8]) {
        if self.touched.last().is_some_and(|t| t == key) {
            self.touched.pop();
        }
        self.note(
            crate::notify::EVICTED,
            "evicted",
            Bytes::copy_from_slice(key),
        );
    }

    /// Starts tracking a key for WATCH; returns its current version, with the top bit set
    /// when the key is alive now (for [`Db::watch_holds`]).
    pub fn watch(&mut self, key: &[u8], now: u64) -> u64 {
        let alive = self.alive(key, now);
        let e = self
            .watched
            .entry(Bytes::copy_from_slice(key))
            .or_insert((1, 0));
        e.1 += 1;
        e.0 | if alive { WATCHED_ALIVE } else { 0 }
    }

    /// Whether a key watched at `seen` (what [`Db::watch`] returned) is unchanged for its
    /// watcher, as Redis decides: no write touched it, and a key that was alive then has not
    /// expired since (a key already expired when watched may go quietly).
    pub fn watch_holds(&mut self, key: &[u8], seen: u64, now: u64) -> bool {
        self.watch_version(key) == seen & !WATCHED_ALIVE
            && (seen & WATCHED_ALIVE == 0 || self.alive(key, now))
    }

    /// One watcher of `key` is done with it.
    pub fn unwatch(&mut self, key: &[u8]) {
        if let Some(e) = self.watched.get_mut(key) {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                self.watched.remove(key);
            }
        }
    }

    /// The current version of a watched key (0 if nobody watches it).
    pub fn watch_version(&self, key: &[u8]) -> u64 {
        self.watched.get(key).map(|e| e.0).unwrap_or(0)
    }

    /// Takes over `old`'s watchers (the data was replaced under them: every watch is
    /// touched).
    pub fn adopt_watches(&mut self, old: &mut Db) {
        self.watched = std::mem::take(&mut old.watched);
        self.touch_all_watched();
    }

    /// Marks every watched key modified (the data was replaced wholesale).
    pub fn touch_all_watched(&mut self) {
        for v in self.watched.values_mut() {
            v.0 += 1;
        }
    }

    /// Removes every key. For WATCH only the keys that were alive change (a missing or
    /// already expired key stays as its watchers saw it).
    pub fn clear(&mut self) {
        if !self.watched.is_empty() {
            let now = now_ms();
            let keys: Vec<Bytes> = self.watched.keys().cloned().collect();
            for k in keys {
                if self.alive(&k, now) {
                    self.touch_watched(&k);
                }
            }
        }
        for t in &mut self.slots {
            *t = HashMap::new();
        }
        self.expires = IndexSet::new();
        self.len = 0;
    }

    /// SWAPDB: `a` and `b` exchange their data; the watchers stay with their database, and a
    /// watched key changes when it is alive on either side (a missing or expired key replaced
    /// by a missing or expired one is no change, as in Redis).
    pub fn swap_data(a: &mut Db, b: &mut Db, now: u64) {
        let before = |d: &mut Db| -> Vec<(Bytes, bool)> {
            let keys: Vec<Bytes> = d.watched.keys().cloned().collect();
            keys.into_iter()
                .map(|k| {
                    let alive = d.alive(&k, now);
                    (k, alive)
                })
                .collect()
        };
        let (wa, wb) = (before(a), before(b));
        std::mem::swap(a, b);
        std::mem::swap(&mut a.watched, &mut b.watched);
        for (d, was) in [(a, wa), (b, wb)] {
            for (k, alive) in was {
                if alive || d.alive(&k, now) {
                    d.touch_watched(&k);
                }
            }
        }
    }

    /// Removes every key of one slot; returns how many.
    pub fn clear_slot(&mut self, slot: u16) -> usize {
        let i = self.local(slot);
        let t = std::mem::take(&mut self.slots[i]);
        let n = t.len();
        for (k, e) in t {
            if e.expire_at != 0 {
                self.expires.swap_remove(&*k);
            }
            if let Some(v) = self.watched.get_mut(&*k) {
                v.0 += 1;
            }
        }
        self.len -= n;
        n
    }

    /// A random key with a TTL (for the volatile eviction policies).
    pub fn random_volatile_key(&self) -> Option<Bytes> {
        let n = self.expires.len();
        if n == 0 {
            return None;
        }
        Some(self.expires[rand::thread_rng().gen_range(0..n)].clone())
    }

    /// A random live key.
    pub fn random_key(&mut self, now: u64) -> Option<Bytes> {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            if self.len == 0 {
                return None;
            }
            // Pick a non-empty slot weighted by size, then a random key within it.
            let mut target = rng.gen_range(0..self.len);
            let mut found = None;
            for t in &self.slots {
                if target < t.len() {
                    found = t.keys().nth(target).map(Key::to_bytes);
                    break;
                }
                target -= t.len();
            }
            let k = found?;
            // Checking liveness must not count as an access (eviction samples with this).
            if self.get_quiet(&k, now).is_some() {
                return Some(k);
            }
        }
        None
    }

    /// One round of active expiry: samples keys with a TTL and removes the expired ones,
    /// repeating while more than a quarter of a sample was expired (as Redis). Returns how
    /// many keys were removed.
    pub fn active_expire(&mut self, now: u64, max_rounds: usize) -> usize {
        let mut rng = rand::thread_rng();
        let mut removed = 0;
        for _ in 0..max_rounds {
            let n = self.expires.len();
            if n == 0 {
                self.avg_ttl = 0;
                break;
            }
            let sample = n.min(20);
            let mut expired = 0;
            let (mut ttl_sum, mut ttl_samples) = (0u64, 0u64);
            for _ in 0..sample {
                let n = self.expires.len();
                if n == 0 {
                    break;
                }
                let k = self.expires[rng.gen_range(0..n)].clone();
                let at = self.table(&k).get(&k[..]).map_or(0, |e| e.expire_at);
                if at != 0 && at <= now {
                    self.expire_now(&k);
                    expired += 1;
                } else if at > now {
                    ttl_sum += at - now;
                    ttl_samples += 1;
                }
            }
            if let Some(avg) = ttl_sum.checked_div(ttl_samples) {
                // As Redis: the new sample's mean weighs 2%, the estimate 98%.
                if self.avg_ttl == 0 {
                    self.avg_ttl = avg;
                }
                self.avg_ttl = (self.avg_ttl / 50) * 49 + avg / 50;
            }
            removed += expired;
            if expired * 4 <= sample {
                break;
            }
        }
        removed
    }

    /// Every live key (for KEYS and SCAN); the callback gets each key once.
    pub fn for_each_key(&self, now: u64, mut f: impl FnMut(&Key, &Entry)) {
        for t in &self.slots {
            for (k, e) in t {
                if e.expire_at == 0 || e.expire_at > now {
                    f(k, e);
                }
            }
        }
    }

    /// Iterates a slot's table in a stable hash order for SCAN: returns the keys whose
    /// `scan_hash` is at least `from`, at least `count` of them (all keys sharing the last
    /// hash are included), and the hash to continue from (None when the slot is done).
    pub fn scan_slot(
        &self,
        slot: u16,
        from: u64,
        count: usize,
        now: u64,
    ) -> (Vec<Bytes>, Option<u64>) {
        let t = &self.slots[self.local(slot)];
        let mut cands: Vec<(u64, &Key)> = t
            .iter()
            .filter(|(_, e)| e.expire_at == 0 || e.expire_at > now)
            .map(|(k, _)| (scan_hash(k), k))
            .filter(|(h, _)| *h >= from)
            .collect();
        if cands.len() > count {
            cands.select_nth_unstable_by_key(count - 1, |c| c.0);
            let limit = cands[count - 1].0;
            let mut page: Vec<(u64, &Key)> = cands.into_iter().filter(|c| c.0 <= limit).collect();
            page.sort_unstable_by_key(|c| c.0);
            let next = limit.checked_add(1);
            (page.into_iter().map(|(_, k)| k.to_bytes()).collect(), next)
        } else {
            (cands.into_iter().map(|(_, k)| k.to_bytes()).collect(), None)
        }
    }
}

/// SCAN's stable per-key order: 43 bits of a fixed hash, so a cursor (slot position, hash)
/// fits in 54 bits, leaving a proxy 10 bits for the backend index within the 64-bit cursor
/// Redis clients expect.
pub fn scan_hash(key: &[u8]) -> u64 {
    // FNV-1a: stable across processes and runs, unlike the tables' seeded hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h >> 21
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_slots() {
        let mut db = Db::new(0, 1);
        db.set(b"a", Value::Str(Bytes::from_static(b"1")), 0);
        db.set(b"b", Value::Str(Bytes::from_static(b"2")), 0);
        assert_eq!(db.len(), 2);
        assert!(db.set_expire(b"a", 100, 0));
        assert_eq!(db.expires_len(), 1);
        assert!(db.get(b"a", 99).is_some());
        assert!(db.get(b"a", 100).is_none());
        assert_eq!(db.len(), 1);
        assert_eq!(db.expires_len(), 0);
        assert_eq!(db.slot_len(slot_of(b"b")), 1);
        assert_eq!(db.clear_slot(slot_of(b"b")), 1);
        assert!(db.is_empty());
    }

    #[test]
    fn scan_covers_every_key_once() {
        let mut db = Db::new(0, 1);
        for i in 0..500 {
            db.set(format!("{{t}}k{i}").as_bytes(), Value::Str(Bytes::new()), 0);
        }
        let slot = slot_of(b"{t}");
        let mut seen = std::collections::HashSet::new();
        let mut from = 0;
        loop {
            let (keys, next) = db.scan_slot(slot, from, 7, 0);
            for k in keys {
                assert!(seen.insert(k));
            }
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
        assert_eq!(seen.len(), 500);
    }

    #[test]
    fn active_expiry_removes() {
        let mut db = Db::new(0, 1);
        for i in 0..100 {
            let k = format!("k{i}");
            db.set(k.as_bytes(), Value::Str(Bytes::new()), 0);
            db.set_expire(k.as_bytes(), 10, 0);
        }
        let mut n = 0;
        for _ in 0..50 {
            n += db.active_expire(20, 16);
        }
        assert_eq!(n, 100);
        assert!(db.is_empty());
    }
}
