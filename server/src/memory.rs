//! The memory budget (`maxmemory`) and eviction, shared by every shard of the process.
//!
//! `used` is jemalloc's own count of allocated bytes (`stats.allocated`), refreshed every
//! 10 ms by one shard and lowered by each eviction's estimate in between, so shards do not
//! over-evict on a stale figure. Before a command that may grow memory (`denyoom`), a shard
//! over budget either refuses it (`noeviction`: `-OOM ...`) or evicts keys of its own,
//! chosen among `maxmemory-samples` random candidates as Redis does: least recently used,
//! least frequently used (Redis's logarithmic counter with decay), nearest expiry, or random;
//! `volatile-*` policies consider only keys with a TTL.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use bytes::Bytes;
use rand::Rng;

use crate::db::{Db, Entry};

/// Eviction policies, as `maxmemory-policy` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Policy {
    NoEviction = 0,
    AllkeysLru,
    VolatileLru,
    AllkeysLfu,
    VolatileLfu,
    AllkeysRandom,
    VolatileRandom,
    VolatileTtl,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        Some(match s {
            "noeviction" => Policy::NoEviction,
            "allkeys-lru" => Policy::AllkeysLru,
            "volatile-lru" => Policy::VolatileLru,
            "allkeys-lfu" => Policy::AllkeysLfu,
            "volatile-lfu" => Policy::VolatileLfu,
            "allkeys-random" => Policy::AllkeysRandom,
            "volatile-random" => Policy::VolatileRandom,
            "volatile-ttl" => Policy::VolatileTtl,
            _ => return None,
        })
    }

    fn from_u8(v: u8) -> Policy {
        match v {
            1 => Policy::AllkeysLru,
            2 => Policy::VolatileLru,
            3 => Policy::AllkeysLfu,
            4 => Policy::VolatileLfu,
            5 => Policy::AllkeysRandom,
            6 => Policy::VolatileRandom,
            7 => Policy::VolatileTtl,
            _ => Policy::NoEviction,
        }
    }

    fn volatile(self) -> bool {
        matches!(
            self,
            Policy::VolatileLru
                | Policy::VolatileLfu
                | Policy::VolatileRandom
                | Policy::VolatileTtl
        )
    }

    pub fn is_lfu(self) -> bool {
        matches!(self, Policy::AllkeysLfu | Policy::VolatileLfu)
    }
}

static USED: AtomicU64 = AtomicU64::new(0);
static MAX: AtomicU64 = AtomicU64::new(0);
static POLICY: AtomicU8 = AtomicU8::new(0);
static SAMPLES: AtomicUsize = AtomicUsize::new(5);
/// The most allocated bytes measured so far (INFO's used_memory_peak).
static PEAK: AtomicU64 = AtomicU64::new(0);
static EVICTED: AtomicU64 = AtomicU64::new(0);
static LFU_LOG_FACTOR: AtomicU64 = AtomicU64::new(10);
static LFU_DECAY_MIN: AtomicU64 = AtomicU64::new(1);

/// Sets the budget (0: none).
pub fn set_max(bytes: u64) {
    MAX.store(bytes, Ordering::Relaxed);
}

pub fn max() -> u64 {
    MAX.load(Ordering::Relaxed)
}

pub fn set_policy(p: Policy) {
    POLICY.store(p as u8, Ordering::Relaxed);
}

pub fn policy() -> Policy {
    Policy::from_u8(POLICY.load(Ordering::Relaxed))
}

pub fn set_samples(n: usize) {
    SAMPLES.store(n.clamp(1, 64), Ordering::Relaxed);
}

pub fn set_lfu(log_factor: u64, decay_minutes: u64) {
    LFU_LOG_FACTOR.store(log_factor, Ordering::Relaxed);
    LFU_DECAY_MIN.store(decay_minutes, Ordering::Relaxed);
}

/// Allocated bytes, as last measured (and lowered by evictions since).
pub fn used() -> u64 {
    USED.load(Ordering::Relaxed)
}

/// The peak of [`used`] over the measurements so far.
pub fn peak() -> u64 {
    PEAK.load(Ordering::Relaxed).max(used())
}

pub fn evicted() -> u64 {
    EVICTED.load(Ordering::Relaxed)
}

/// Reads jemalloc's allocated-bytes figure now.
pub fn refresh() {
    if tikv_jemalloc_ctl::epoch::advance().is_ok() {
        if let Ok(n) = tikv_jemalloc_ctl::stats::allocated::read() {
            USED.store(n as u64, Ordering::Relaxed);
            PEAK.fetch_max(n as u64, Ordering::Relaxed);
        }
    }
}

/// Redis's LFU counter: a logarithmic increment on access, after decaying one step per
/// `lfu-decay-time` minutes since the last access. New keys start at 5.
pub const LFU_INIT: u8 = 5;

pub fn lfu_touch(e: &mut Entry, now: u64) {
    let minutes = now.saturating_sub(e.access_ms()) / 60_000;
    if let Some(steps) = minutes.checked_div(LFU_DECAY_MIN.load(Ordering::Relaxed)) {
        e.freq = e.freq.saturating_sub(steps.min(255) as u8);
    }
    if e.freq < 255 {
        let base = e.freq.saturating_sub(LFU_INIT) as f64;
        let p = 1.0 / (base * LFU_LOG_FACTOR.load(Ordering::Relaxed) as f64 + 1.0);
        if rand::thread_rng().gen::<f64>() < p {
            e.freq += 1;
        }
    }
}

/// The reply for a write refused under `noeviction` (or with nothing left to evict).
pub const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Over budget with nothing left to evict: refuse the command with [`OOM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

/// Makes room before a command that may grow memory.
pub fn ensure_room(dbs: &mut [Db], now: u64) -> Result<(), OutOfMemory> {
    let max = max();
    if max == 0 || used() <= max {
        return Ok(());
    }
    let p = policy();
    if p == Policy::NoEviction {
        return Err(OutOfMemory);
    }
    let samples = SAMPLES.load(Ordering::Relaxed);
    // Evict until under budget; a bounded number of rounds per command keeps latency flat.
    // As in Redis, the command is refused only when nothing at all could be evicted.
    let mut evicted_any = false;
    for _ in 0..64 {
        if used() <= max {
            return Ok(());
        }
        let Some((db, key)) = pick_victim(dbs, p, samples, now) else {
            return if evicted_any {
                Ok(())
            } else {
                Err(OutOfMemory)
            };
        };
        evicted_any = true;
        if let Some(e) = dbs[db].remove(&key, now) {
            dbs[db].note_evicted(&key);
            let size = (key.len() + e.value.mem_size() + 64) as u64;
            let _ = USED.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(size))
            });
            EVICTED.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn pick_victim(dbs: &mut [Db], p: Policy, samples: usize, now: u64) -> Option<(usize, Bytes)> {
    let mut rng = rand::thread_rng();
    let mut best: Option<(usize, Bytes, u64)> = None;
    let candidates: Vec<usize> = (0..dbs.len())
        .filter(|&i| {
            if p.volatile() {
                dbs[i].expires_len() > 0
            } else {
                !dbs[i].is_empty()
            }
        })
        .collect();
    if candidates.is_empty() {
        return None;
    }
    for _ in 0..samples {
        let db = candidates[rng.gen_range(0..candidates.len())];
        let key = if p.volatile() {
            dbs[db].random_volatile_key()
        } else {
            dbs[db].random_key(now)
        };
        let Some(key) = key else { continue };
        let Some(e) = dbs[db].get_quiet(&key, now) else {
            continue;
        };
        // Higher score = better victim.
        let score = match p {
            Policy::AllkeysLru | Policy::VolatileLru => now.saturating_sub(e.access_ms()),
            Policy::AllkeysLfu | Policy::VolatileLfu => 255 - e.freq as u64,
            Policy::VolatileTtl => u64::MAX - e.expire_at,
            _ => rng.gen(),
        };
        if best.as_ref().is_none_or(|b| score > b.2) {
            best = Some((db, key, score));
        }
    }
    best.map(|(db, k, _)| (db, k))
}
