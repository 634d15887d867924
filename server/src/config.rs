//! Server configuration: a TOML file plus command-line flags (flags win). Immutable once
//! the server runs; CONFIG SET changes a copy held by the server, never this snapshot.

use std::path::PathBuf;

use serde::Deserialize;

/// Everything rcodis-server can be told at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// TCP port (0: pick a free one, reported in the log line "listening on").
    pub port: u16,
    /// Address to bind.
    pub bind: String,
    /// Shards (executor threads); 0 means one per online core.
    pub threads: usize,
    /// Working directory for persistence files.
    pub dir: PathBuf,
    /// Password clients must AUTH with (empty: none).
    pub requirepass: String,
    /// Memory budget in bytes (0: none). Suffixes k, kb, m, mb, g, gb accepted in text.
    pub maxmemory: String,
    pub maxmemory_policy: String,
    pub appendfsync: String,
    pub appendonly: bool,
    /// Number of databases (SELECT 0..N-1).
    pub databases: usize,
    pub maxclients: usize,
    /// Largest query buffer a client may accumulate (Redis's client-query-buffer-limit).
    pub client_query_buffer_limit: String,
    /// Largest bulk argument (Redis's proto-max-bulk-len).
    pub proto_max_bulk_len: String,
    /// Log filter (tracing EnvFilter syntax).
    pub loglevel: String,
    /// Load a damaged append-only log up to the damage (truncating it there).
    pub aof_repair: bool,
    /// Microseconds to pause after each record loaded at start-up (Redis's key-load-delay;
    /// for tests that need to observe the loading state).
    pub key_load_delay: u64,
    /// Follow this master from the start (`host port` or `host:port`; empty: be a master).
    pub replicaof: String,
    /// Password for the master (its requirepass).
    pub masterauth: String,
    /// Run the shard threads under SCHED_BATCH (see `rcodis_core::net::sched_batch_this_thread`):
    /// for servers sharing cores with a proxy and other servers on one host.
    pub sched_batch: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 6379,
            bind: "127.0.0.1".into(),
            threads: 0,
            dir: PathBuf::from("."),
            requirepass: String::new(),
            maxmemory: "0".into(),
            maxmemory_policy: "noeviction".into(),
            appendfsync: "everysec".into(),
            appendonly: false,
            databases: 16,
            maxclients: 10000,
            client_query_buffer_limit: "1gb".into(),
            proto_max_bulk_len: "512mb".into(),
            loglevel: "info".into(),
            aof_repair: false,
            key_load_delay: 0,
            replicaof: String::new(),
            masterauth: String::new(),
            sched_batch: false,
        }
    }
}

/// Parses Redis memory sizes: `100`, `1k` (1000), `1kb` (1024), `2mb`, `1gb`, ...
pub fn parse_memory(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mul)
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("bad config {}: {e}", path.display()))
    }

    /// Checks values and fills derived defaults.
    pub fn validate(&mut self) -> anyhow::Result<()> {
        if self.threads == 0 {
            self.threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
        }
        if self.threads > 1024 {
            anyhow::bail!("threads must be at most 1024 (one shard owns at least one slot)");
        }
        if !self.replicaof.is_empty() && crate::repl::parse_master(&self.replicaof).is_none() {
            anyhow::bail!(
                "replicaof is 'host port' or host:port, not '{}'",
                self.replicaof
            );
        }
        if self.databases == 0 || self.databases > 4096 {
            anyhow::bail!("databases must be between 1 and 4096");
        }
        for (name, v) in [
            ("maxmemory", &self.maxmemory),
            ("client-query-buffer-limit", &self.client_query_buffer_limit),
            ("proto-max-bulk-len", &self.proto_max_bulk_len),
        ] {
            if parse_memory(v).is_none() {
                anyhow::bail!("invalid {name} '{v}'");
            }
        }
        const POLICIES: [&str; 8] = [
            "noeviction",
            "allkeys-lru",
            "volatile-lru",
            "allkeys-lfu",
            "volatile-lfu",
            "allkeys-random",
            "volatile-random",
            "volatile-ttl",
        ];
        if !POLICIES.contains(&self.maxmemory_policy.as_str()) {
            anyhow::bail!("invalid maxmemory-policy '{}'", self.maxmemory_policy);
        }
        if !["always", "everysec", "no"].contains(&self.appendfsync.as_str()) {
            anyhow::bail!("invalid appendfsync '{}'", self.appendfsync);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("100"), Some(100));
        assert_eq!(parse_memory("1k"), Some(1000));
        assert_eq!(parse_memory("1kb"), Some(1024));
        assert_eq!(parse_memory("2MB"), Some(2 * 1024 * 1024));
        assert_eq!(parse_memory("1gb"), Some(1 << 30));
        assert_eq!(parse_memory("x"), None);
        assert_eq!(parse_memory("1tb"), None);
    }

    #[test]
    fn defaults_validate() {
        let mut c = Config::default();
        c.validate().unwrap();
        assert!(c.threads >= 1);
        c.maxmemory_policy = "bogus".into();
        assert!(c.validate().is_err());
    }
}
