//! Per-command statistics (calls, errors, latency histogram) and per-backend gauges, kept
//! per shard without locks and read by INFO and the admin HTTP thread.
//!
//! Only the owning shard writes its counters, so an increment is a plain load and store
//! (no locked instruction on the request path); readers sum the shards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rcodis_core::cmd::NUM_SPECS;

/// Upper bounds (µs) of the latency buckets; one more bucket takes the rest.
pub const BUCKETS_US: [u64; 15] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// The statistics slot for requests that name no known command.
pub const UNKNOWN: u16 = NUM_SPECS as u16;

#[derive(Default)]
pub struct CmdStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub usec: AtomicU64,
    pub buckets: [AtomicU64; BUCKETS_US.len() + 1],
}

#[inline]
fn bump(a: &AtomicU64, n: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// One shard's counters, indexed by command id (and [`UNKNOWN`]).
pub struct ShardStats {
    pub cmds: Vec<CmdStats>,
    /// Error replies by their first word (INFO errorstats), written by the shard only when it
    /// answers with an error.
    pub errors: std::sync::Mutex<std::collections::BTreeMap<Box<str>, u64>>,
}

/// How many kinds of error INFO errorstats tells apart, as Redis (later kinds are not
/// tracked).
pub const ERROR_KINDS: usize = 128;

impl Default for ShardStats {
    fn default() -> Self {
        ShardStats {
            cmds: (0..=NUM_SPECS).map(|_| CmdStats::default()).collect(),
            errors: Default::default(),
        }
    }
}

impl ShardStats {
    /// Records one request: its command, whether it was answered with an error, and how
    /// long the proxy took from reading it to having its reply (µs).
    #[inline]
    pub fn record(&self, id: u16, error: bool, usec: u64) {
        let c = &self.cmds[(id as usize).min(NUM_SPECS)];
        bump(&c.calls, 1);
        if error {
            bump(&c.errors, 1);
        }
        bump(&c.usec, usec);
        let b = BUCKETS_US.partition_point(|&le| le < usec);
        bump(&c.buckets[b], 1);
    }

    /// Counts an error reply (`-KIND message...`) under its first word.
    #[cold]
    pub fn record_error(&self, reply: &[u8]) {
        let body = reply.strip_prefix(b"-").unwrap_or(reply);
        let end = body
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(body.len());
        let kind = String::from_utf8_lossy(&body[..end]);
        let mut m = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(kind.as_ref()) {
            *n += 1;
        } else if m.len() < ERROR_KINDS {
            m.insert(kind.into(), 1);
        }
    }

    /// Zeroes every counter (CONFIG RESETSTAT through the admin API); call on the shard.
    pub fn reset(&self) {
        for c in &self.cmds {
            c.calls.store(0, Ordering::Relaxed);
            c.errors.store(0, Ordering::Relaxed);
            c.usec.store(0, Ordering::Relaxed);
            for b in &c.buckets {
                b.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Totals for one command over every shard.
#[derive(Default, Clone)]
pub struct Summary {
    pub calls: u64,
    pub errors: u64,
    pub usec: u64,
    pub buckets: [u64; BUCKETS_US.len() + 1],
}

/// Sums the shards: `(command name, totals)` for every command called at least once.
pub fn summarize(shards: &[ShardStats]) -> Vec<(&'static str, Summary)> {
    let mut out = Vec::new();
    for id in 0..=NUM_SPECS {
        let mut s = Summary::default();
        for sh in shards {
            let c = &sh.cmds[id];
            s.calls += c.calls.load(Ordering::Relaxed);
            s.errors += c.errors.load(Ordering::Relaxed);
            s.usec += c.usec.load(Ordering::Relaxed);
            for (t, b) in s.buckets.iter_mut().zip(&c.buckets) {
                *t += b.load(Ordering::Relaxed);
            }
        }
        if s.calls > 0 {
            let name = if id == NUM_SPECS {
                "unknown"
            } else {
                rcodis_core::cmd::by_id(id as u16).name
            };
            out.push((name, s));
        }
    }
    out
}

/// Error replies by kind over every shard.
pub fn error_kinds(shards: &[ShardStats]) -> std::collections::BTreeMap<Box<str>, u64> {
    let mut out = std::collections::BTreeMap::new();
    for sh in shards {
        for (k, n) in sh.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            *out.entry(k.clone()).or_insert(0) += n;
        }
    }
    out
}

/// What `summarize` reported at the last reset; later reports subtract it (so a reset
/// never races with the shards' plain-store increments).
#[derive(Default)]
pub struct Baseline(pub std::collections::HashMap<&'static str, Summary>);

impl Baseline {
    /// `now` minus the baseline, commands with no calls since left out.
    pub fn since(&self, now: Vec<(&'static str, Summary)>) -> Vec<(&'static str, Summary)> {
        now.into_iter()
            .filter_map(|(name, mut s)| {
                if let Some(b) = self.0.get(name) {
                    s.calls = s.calls.saturating_sub(b.calls);
                    s.errors = s.errors.saturating_sub(b.errors);
                    s.usec = s.usec.saturating_sub(b.usec);
                    for (x, y) in s.buckets.iter_mut().zip(&b.buckets) {
                        *x = x.saturating_sub(*y);
                    }
                }
                (s.calls > 0).then_some((name, s))
            })
            .collect()
    }
}

/// The state of one backend connection of one shard.
pub struct BackendGauge {
    pub addr: String,
    pub shard: usize,
    pub resp3: bool,
    /// Requests queued or written and not answered yet.
    pub depth: AtomicU64,
    pub connected: AtomicBool,
    /// Connection failures (connect or I/O) so far.
    pub failures: AtomicU64,
}

impl BackendGauge {
    pub fn new(addr: &str, shard: usize, resp3: bool) -> BackendGauge {
        BackendGauge {
            addr: addr.to_string(),
            shard,
            resp3,
            depth: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            failures: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_by_kind() {
        let s = ShardStats::default();
        s.record_error(b"-ERR unknown command\r\n");
        s.record_error(b"-WRONGTYPE Operation against a key\r\n");
        s.record_error(b"-ERR syntax error\r\n");
        s.record_error(b"-NOAUTH\r\n");
        let m = error_kinds(std::slice::from_ref(&s));
        let got: Vec<(&str, u64)> = m.iter().map(|(k, n)| (k.as_ref(), *n)).collect();
        assert_eq!(got, [("ERR", 2), ("NOAUTH", 1), ("WRONGTYPE", 1)]);
        for i in 0..ERROR_KINDS + 10 {
            s.record_error(format!("-E{i} x\r\n").as_bytes());
        }
        assert_eq!(s.errors.lock().unwrap().len(), ERROR_KINDS);
    }

    #[test]
    fn buckets_and_totals() {
        let shards = vec![ShardStats::default(), ShardStats::default()];
        let get = rcodis_core::cmd::lookup(b"get").unwrap().id;
        shards[0].record(get, false, 10);
        shards[1].record(get, true, 30);
        shards[1].record(get, false, 5_000_000);
        shards[0].record(UNKNOWN, true, 1);
        let s = summarize(&shards);
        let (_, g) = s.iter().find(|(n, _)| *n == "get").unwrap();
        assert_eq!((g.calls, g.errors, g.usec), (3, 1, 5_000_040));
        assert_eq!(g.buckets[0], 1); // <= 25
        assert_eq!(g.buckets[1], 1); // <= 50
        assert_eq!(g.buckets[BUCKETS_US.len()], 1); // > 1 s
        assert!(s.iter().any(|(n, u)| *n == "unknown" && u.errors == 1));
        let base = Baseline(s.into_iter().collect());
        assert!(base.since(summarize(&shards)).is_empty());
        shards[1].record(get, false, 10);
        let after = base.since(summarize(&shards));
        assert_eq!(after.len(), 1);
        assert_eq!((after[0].1.calls, after[0].1.usec), (1, 10));
    }
}
