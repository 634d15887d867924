//! Proxy configuration: TOML (in the spirit of Codis's proxy.toml) plus flags.

use std::path::PathBuf;

use serde::Deserialize;

/// The most requests one session may have in flight (a batch's replies are indexed by `u32`).
pub const MAX_SESSION_PIPELINE: usize = 1 << 24;

/// Everything rcodis-proxy can be told at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: String,
    /// Executor threads (0: one per online core).
    pub threads: usize,
    /// Run the executor threads under SCHED_BATCH (for a proxy sharing cores with its
    /// servers on one host; see `rcodis_core::net::sched_batch_this_thread`).
    pub sched_batch: bool,
    /// Cluster name in the coordinator.
    pub product: String,
    /// `etcd://...` or `file:///...`; empty: use `slots_file`.
    pub coordinator: String,
    /// A topology JSON file to serve without a coordinator.
    pub slots_file: Option<PathBuf>,
    /// Password clients must AUTH with (empty: none).
    pub session_auth: String,
    /// Password for the backends (rcodis-servers' requirepass).
    pub product_auth: String,
    pub max_clients: usize,
    /// Requests a client may send without waiting for replies (those found at once in its
    /// input): past it, the client gets `-ERR too many pipelined requests` and is closed.
    /// 1 to [`MAX_SESSION_PIPELINE`].
    pub session_max_pipeline: usize,
    /// Largest request (bytes).
    pub max_request_bytes: usize,
    /// Databases clients may SELECT.
    pub databases: usize,
    /// Fan CONFIG GET/SET/RESETSTAT out to every server.
    pub admin_commands: bool,
    /// Allow FLUSHDB/FLUSHALL.
    pub allow_flush: bool,
    /// Pipelined connections per backend per shard (a session uses one of them).
    pub backend_connections: usize,
    /// Backend connect timeout (ms); also bounds the connection's first exchanges (AUTH,
    /// HELLO, SELECT). `backend_timeout_ms` is the older name.
    #[serde(alias = "backend_timeout_ms")]
    pub backend_connect_timeout_ms: u64,
    /// How long a backend connection waits for a reply before it is failed (and its
    /// requests answered with an error) and reconnected (ms; 0: no limit). Codis's
    /// `backend_recv_timeout` is 30 s: FLUSHALL of a big database or a long script takes
    /// seconds, and failing it would fail every request pipelined behind it.
    pub backend_read_timeout_ms: u64,
    /// How long a request for a locked slot (migration phase 1) waits for the next table,
    /// and a request for a migrating slot for its key to leave the source (ms).
    pub migration_wait_ms: u64,
    /// Admin HTTP address (`/stats`, `/metrics`, `/slots`, `/health`); empty: none.
    pub admin: String,
    /// The token admin HTTP mutations (`POST /stats/reset`, `POST /shutdown`) must carry
    /// (`Authorization: Bearer TOKEN`); empty: one is generated at start and logged.
    pub admin_token: String,
    /// A client that sends nothing for this long is disconnected (seconds; 0: never).
    /// Subscribed clients and clients in a blocking command are exempt, as in Redis.
    pub session_idle_timeout_secs: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: "127.0.0.1:19000".into(),
            threads: 0,
            sched_batch: false,
            product: "default".into(),
            coordinator: String::new(),
            slots_file: None,
            session_auth: String::new(),
            product_auth: String::new(),
            max_clients: 1000,
            session_max_pipeline: 10_000,
            max_request_bytes: 512 * 1024 * 1024,
            databases: 16,
            admin_commands: false,
            allow_flush: true,
            backend_connections: 1,
            backend_connect_timeout_ms: 5000,
            backend_read_timeout_ms: 30_000,
            migration_wait_ms: 10_000,
            admin: "127.0.0.1:11080".into(),
            admin_token: String::new(),
            session_idle_timeout_secs: 1800,
        }
    }
}

impl ProxyConfig {
    /// `backend_read_timeout_ms` as the backend connections take it.
    pub fn backend_read_timeout(&self) -> Option<std::time::Duration> {
        (self.backend_read_timeout_ms > 0)
            .then(|| std::time::Duration::from_millis(self.backend_read_timeout_ms))
    }

    /// Reads a TOML file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("bad config {}: {e}", path.display()))
    }

    /// Checks values and fills derived defaults.
    pub fn validate(&mut self) -> anyhow::Result<()> {
        if self.threads == 0 {
            self.threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
        }
        if self.coordinator.is_empty() && self.slots_file.is_none() {
            anyhow::bail!("give --coordinator URL or --slots-file FILE (a topology JSON)");
        }
        if !rcodis_core::coord::layout::valid_product(&self.product) {
            anyhow::bail!("invalid product name '{}'", self.product);
        }
        if self.databases == 0 {
            anyhow::bail!("databases must be at least 1");
        }
        if self.backend_connections == 0 || self.backend_connections > 64 {
            anyhow::bail!("backend_connections must be between 1 and 64");
        }
        if self.session_max_pipeline == 0 || self.session_max_pipeline > MAX_SESSION_PIPELINE {
            anyhow::bail!("session_max_pipeline must be between 1 and {MAX_SESSION_PIPELINE}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_timeouts() {
        let c: ProxyConfig = toml::from_str("").unwrap();
        assert_eq!(c.backend_connect_timeout_ms, 5000);
        assert_eq!(
            c.backend_read_timeout(),
            Some(std::time::Duration::from_secs(30))
        );
        // The older name sets the connect timeout; 0 lifts the read limit.
        let c: ProxyConfig =
            toml::from_str("backend_timeout_ms = 100\nbackend_read_timeout_ms = 0").unwrap();
        assert_eq!(c.backend_connect_timeout_ms, 100);
        assert_eq!(c.backend_read_timeout(), None);
    }

    #[test]
    fn session_max_pipeline_is_bounded() {
        let base = ProxyConfig {
            slots_file: Some(PathBuf::from("topology.json")),
            ..ProxyConfig::default()
        };
        let with = |n: usize| {
            let mut c = base.clone();
            c.session_max_pipeline = n;
            c.validate().map_err(|e| e.to_string())
        };
        assert!(with(1).is_ok());
        assert!(with(MAX_SESSION_PIPELINE).is_ok());
        for bad in [0, MAX_SESSION_PIPELINE + 1, usize::MAX] {
            let e = with(bad).unwrap_err();
            assert!(
                e.contains("session_max_pipeline must be between 1 and"),
                "{e}"
            );
        }
    }
}
