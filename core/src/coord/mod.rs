//! The coordinator: where the cluster's state lives.
//!
//! One trait, two stores behind one URL:
//! - `etcd://host:port[,host:port]`: etcd v3 (etcd-client, on tokio). Ephemeral entries are
//!   etcd leases kept alive by a background task.
//! - `file:///path`: the embedded default for one host. Atomic writes by rename, a lock file
//!   for compare-and-swap, watches by polling, ephemeral entries that expire when their
//!   heartbeat file goes stale.
//!
//! Both pass the same conformance suite (`tests/coordinator.rs` in this crate).

mod etcd;
mod fs;
pub mod layout;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

pub use etcd::EtcdCoordinator;
pub use fs::FileCoordinator;

/// A coordinator failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    #[error(
        "invalid coordinator URL '{0}': expected etcd://host:port[,host:port] or file:///path"
    )]
    InvalidUrl(String),
    #[error("coordinator I/O error: {0}")]
    Io(String),
    #[error("etcd error: {0}")]
    Etcd(String),
    #[error("lock '{name}' is held by {holder}")]
    Locked { name: String, holder: String },
    #[error("coordinator is closed")]
    Closed,
    #[error("ephemeral entry '{0}' was lost (expired or removed); register again")]
    Lost(String),
}

impl From<std::io::Error> for CoordError {
    fn from(e: std::io::Error) -> Self {
        CoordError::Io(e.to_string())
    }
}

impl From<etcd_client::Error> for CoordError {
    fn from(e: etcd_client::Error) -> Self {
        CoordError::Etcd(e.to_string())
    }
}

/// Result of a coordinator call.
pub type Result<T> = std::result::Result<T, CoordError>;

/// A change under a watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The full current state under the prefix, sorted by key. Always the first event, and
    /// sent again after a reconnect where changes may have been missed.
    Reset(Vec<(String, Vec<u8>)>),
    /// A key was created or changed.
    Put { key: String, value: Vec<u8> },
    /// A key was deleted (or its ephemeral owner stopped).
    Delete { key: String },
}

/// Events of a watch; it ends when the coordinator is dropped.
pub type WatchStream = mpsc::Receiver<WatchEvent>;

/// What an [`Ephemeral`] handle tells its keeper task.
#[derive(Debug)]
pub(crate) enum EphemeralCmd {
    Update(Vec<u8>, tokio::sync::oneshot::Sender<Result<()>>),
    Close(tokio::sync::oneshot::Sender<()>),
}

/// An entry that exists while its owner keeps it alive. Dropping the handle or
/// [`Ephemeral::close`] deletes the entry; a crashed owner's entry expires after its TTL.
/// An entry that expired or was removed by someone else is lost for good: [`Ephemeral::is_held`]
/// turns false and the owner must create a new one (nothing is re-created behind its back).
#[derive(Debug)]
pub struct Ephemeral {
    key: String,
    tx: mpsc::UnboundedSender<EphemeralCmd>,
    held: Arc<AtomicBool>,
}

/// A process-unique id for one ephemeral owner.
pub(crate) fn owner_id() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

impl Ephemeral {
    pub(crate) fn new(key: String, tx: mpsc::UnboundedSender<EphemeralCmd>) -> Self {
        Ephemeral {
            key,
            tx,
            held: Arc::new(AtomicBool::new(true)),
        }
    }

    pub(crate) fn held_flag(&self) -> Arc<AtomicBool> {
        self.held.clone()
    }

    /// Whether this owner still holds the entry (false after it expired and someone else
    /// took the key, or it was force-removed and taken).
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// The entry's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Replaces the entry's value (for example a proxy's applied epoch).
    pub async fn update(&self, value: &[u8]) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(EphemeralCmd::Update(value.to_vec(), tx))
            .map_err(|_| CoordError::Closed)?;
        rx.await.map_err(|_| CoordError::Closed)?
    }

    /// Deletes the entry and stops its heartbeat.
    pub async fn close(self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(EphemeralCmd::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The single-writer lock (ctl or dashboard). Released on drop or [`LockGuard::release`];
/// it expires by itself when the holder stops heartbeating.
#[derive(Debug)]
pub struct LockGuard {
    entry: Ephemeral,
}

impl LockGuard {
    /// The lock's key.
    pub fn key(&self) -> &str {
        self.entry.key()
    }

    /// Whether the lock is still ours (see [`Ephemeral::is_held`]).
    pub fn is_held(&self) -> bool {
        self.entry.is_held()
    }

    /// Releases the lock now.
    pub async fn release(self) {
        self.entry.close().await
    }
}

/// The operations rcodis needs from a coordinator.
#[async_trait]
pub trait Coordinator: Send + Sync + std::fmt::Debug {
    /// The value at `key`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Creates or replaces `key`.
    async fn put(&self, key: &str, value: &[u8]) -> Result<()>;
    /// Atomically: if the current value equals `expected` (`None`: the key is absent), set it
    /// to `new` (`None`: delete). Returns whether the swap happened.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool>;
    /// Deletes `key`; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool>;
    /// Every key under `prefix` with its value, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>>;
    /// A stream of changes under `prefix`, starting with a [`WatchEvent::Reset`]. It
    /// survives reconnects (sending a fresh `Reset` when it had to start again).
    async fn watch(&self, prefix: &str) -> Result<WatchStream>;
    /// Creates or replaces an entry that vanishes within about `ttl` after its owner stops.
    async fn put_ephemeral(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Ephemeral>;
    /// Like `put_ephemeral`, but only if the key is absent (or its owner is gone). Returns
    /// the current value when someone else holds it.
    async fn create_ephemeral(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> std::result::Result<Ephemeral, Option<Vec<u8>>>;

    /// Takes the lock `key` for `holder` (a description shown to whoever finds it taken).
    async fn lock(&self, key: &str, holder: &str, ttl: Duration) -> Result<LockGuard> {
        match self.create_ephemeral(key, holder.as_bytes(), ttl).await {
            Ok(entry) => Ok(LockGuard { entry }),
            Err(Some(v)) => Err(CoordError::Locked {
                name: key.to_string(),
                holder: String::from_utf8_lossy(&v).into_owned(),
            }),
            Err(None) => Err(CoordError::Io(format!("could not create lock {key}"))),
        }
    }

    /// Removes a lock whatever its holder (for a holder known to be dead).
    async fn force_unlock(&self, key: &str) -> Result<bool> {
        self.delete(key).await
    }
}

/// Opens the coordinator a URL names: `etcd://h:p[,h:p]` or `file:///path`.
pub async fn connect(url: &str) -> Result<Arc<dyn Coordinator>> {
    if let Some(rest) = url.strip_prefix("etcd://") {
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| format!("http://{s}"))
            .collect();
        if endpoints.is_empty() {
            return Err(CoordError::InvalidUrl(url.to_string()));
        }
        return Ok(Arc::new(EtcdCoordinator::connect(endpoints).await?));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(CoordError::InvalidUrl(url.to_string()));
        }
        return Ok(Arc::new(FileCoordinator::open(path)?));
    }
    Err(CoordError::InvalidUrl(url.to_string()))
}
