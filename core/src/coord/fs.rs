//! The embedded file coordinator (`file:///path`), for one host.
//!
//! ```text
//! <root>/kv/<escaped key>          the value; written to a temp file, fsynced, renamed
//! <root>/ephemeral/<escaped key>   present for ephemeral keys: its mtime is the heartbeat,
//!                                  its content "<ttl ms> <owner id>"
//! <root>/.lock                     flock()ed around every read-modify-write
//! ```
//!
//! An ephemeral key whose heartbeat is older than its TTL is treated as absent and removed
//! by the next operation that sees it.
//!
//! A watch learns of changes from inotify on `kv/` and `ephemeral/` and then lists its
//! prefix again; it also lists when the next ephemeral key it reported is due to expire (an
//! owner that died leaves no event behind) and, as a safety net, every few seconds. Where
//! inotify cannot be had (`fs.inotify.max_user_instances` reached, say) it says so and polls
//! instead. An idle watch costs nothing but the safety net.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{CoordError, Coordinator, Ephemeral, EphemeralCmd, Result, WatchEvent, WatchStream};

/// The file-backed coordinator.
#[derive(Debug, Clone)]
pub struct FileCoordinator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    kv: PathBuf,
    eph: PathBuf,
    lock: PathBuf,
    poll: Duration,
    /// Whether watches use inotify (else they poll every `poll`).
    inotify: bool,
    tmp_seq: AtomicU64,
    /// Listings done (for tests: an idle watch must not poll).
    lists: AtomicU64,
}

/// Keys and values, in key order.
type Listing = Vec<(String, Vec<u8>)>;

/// Whether a key is ephemeral, and if so, until when it lives without a heartbeat.
enum Liveness {
    Persistent,
    Until(SystemTime),
    Expired,
}

/// How often a watch lists its prefix when nothing told it to (inotify being the trigger).
const WATCH_SAFETY_NET: Duration = Duration::from_secs(5);

/// The inotify events that can change what a listing returns.
fn change_mask() -> inotify::WatchMask {
    use inotify::WatchMask as M;
    M::CLOSE_WRITE | M::MOVED_TO | M::MOVED_FROM | M::CREATE | M::DELETE | M::DELETE_SELF
}

fn escape(key: &str) -> String {
    let mut s = String::with_capacity(key.len() + 8);
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn unescape(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Holds the flock for the duration of one operation.
struct Locked(File);

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

impl Inner {
    fn locked(&self) -> Result<Locked> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)?;
        f.lock()?;
        Ok(Locked(f))
    }

    fn kv_path(&self, key: &str) -> PathBuf {
        self.kv.join(escape(key))
    }

    fn eph_path(&self, key: &str) -> PathBuf {
        self.eph.join(escape(key))
    }

    fn write_atomic(&self, path: &Path, value: &[u8]) -> Result<()> {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let dir = path.parent().expect("store path has a parent");
        let tmp = dir.join(format!(".tmp.{}.{seq}", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(value)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Whether an ephemeral key is expired (and removes it if so). Persistent keys never are.
    fn reap_if_stale(&self, key: &str) -> bool {
        matches!(self.liveness(key), Liveness::Expired)
    }

    /// Whether a key is ephemeral and until when it lives; an expired key is removed.
    fn liveness(&self, key: &str) -> Liveness {
        let ep = self.eph_path(key);
        let Ok(meta) = fs::metadata(&ep) else {
            return Liveness::Persistent;
        };
        let ttl_ms: u64 = fs::read_to_string(&ep)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let beat = meta.modified().unwrap_or_else(|_| SystemTime::now());
        let until = beat + Duration::from_millis(ttl_ms);
        let age = SystemTime::now().duration_since(beat).unwrap_or_default();
        if age > Duration::from_millis(ttl_ms) {
            let _ = fs::remove_file(self.kv_path(key));
            let _ = fs::remove_file(&ep);
            Liveness::Expired
        } else {
            Liveness::Until(until)
        }
    }

    fn read_live(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if self.reap_if_stale(key) {
            return Ok(None);
        }
        match fs::read(self.kv_path(key)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let _l = self.locked()?;
        self.read_live(key)
    }

    fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let _l = self.locked()?;
        let _ = fs::remove_file(self.eph_path(key));
        self.write_atomic(&self.kv_path(key), value)
    }

    fn cas(&self, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool> {
        let _l = self.locked()?;
        let cur = self.read_live(key)?;
        if cur.as_deref() != expected {
            return Ok(false);
        }
        let _ = fs::remove_file(self.eph_path(key));
        match new {
            Some(v) => self.write_atomic(&self.kv_path(key), v)?,
            None => {
                let _ = fs::remove_file(self.kv_path(key));
            }
        }
        Ok(true)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let _l = self.locked()?;
        let existed = self.read_live(key)?.is_some();
        let _ = fs::remove_file(self.kv_path(key));
        let _ = fs::remove_file(self.eph_path(key));
        Ok(existed)
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self.list_until(prefix)?.0)
    }

    /// The live keys under `prefix`, and when the first of the ephemeral ones among them
    /// expires unless its owner heartbeats.
    fn list_until(&self, prefix: &str) -> Result<(Listing, Option<SystemTime>)> {
        let _l = self.locked()?;
        self.lists.fetch_add(1, Ordering::Relaxed);
        let mut out = BTreeMap::new();
        let mut first_expiry: Option<SystemTime> = None;
        for entry in fs::read_dir(&self.kv)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(".tmp.") {
                continue;
            }
            let Some(key) = unescape(name) else { continue };
            if !key.starts_with(prefix) {
                continue;
            }
            let until = match self.liveness(&key) {
                Liveness::Expired => continue,
                Liveness::Persistent => None,
                Liveness::Until(t) => Some(t),
            };
            match fs::read(self.kv_path(&key)) {
                Ok(v) => {
                    out.insert(key, v);
                    if let Some(t) = until {
                        first_expiry = Some(first_expiry.map_or(t, |f| f.min(t)));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((out.into_iter().collect(), first_expiry))
    }

    /// An inotify stream of the changes under `kv/` and `ephemeral/`.
    fn changes(&self) -> std::io::Result<inotify::EventStream<Vec<u8>>> {
        if !self.inotify {
            return Err(std::io::Error::other("inotify not wanted for this store"));
        }
        let ino = inotify::Inotify::init()?;
        ino.watches().add(&self.kv, change_mask())?;
        ino.watches().add(&self.eph, change_mask())?;
        ino.into_event_stream(vec![0u8; 4096])
    }

    fn write_ephemeral(&self, key: &str, value: &[u8], ttl: Duration, owner: &str) -> Result<()> {
        self.write_atomic(&self.kv_path(key), value)?;
        fs::write(self.eph_path(key), format!("{} {owner}", ttl.as_millis()))?;
        Ok(())
    }

    /// The owner id of a live ephemeral key.
    fn owner_of(&self, key: &str) -> Option<String> {
        let s = fs::read_to_string(self.eph_path(key)).ok()?;
        fs::metadata(self.kv_path(key)).ok()?;
        s.split_whitespace().nth(1).map(str::to_string)
    }

    fn put_ephemeral(&self, key: &str, value: &[u8], ttl: Duration, owner: &str) -> Result<()> {
        let _l = self.locked()?;
        self.write_ephemeral(key, value, ttl, owner)
    }

    fn create_ephemeral(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
        owner: &str,
    ) -> std::result::Result<(), Option<Vec<u8>>> {
        let _l = self.locked().map_err(|_| None)?;
        match self.read_live(key) {
            Ok(Some(cur)) => return Err(Some(cur)),
            Ok(None) => {}
            Err(_) => return Err(None),
        }
        self.write_ephemeral(key, value, ttl, owner)
            .map_err(|_| None)
    }

    /// Refreshes an ephemeral key this owner holds. Returns false when the key expired or
    /// was removed meanwhile: a lost entry is not re-created behind anyone's back.
    fn heartbeat(&self, key: &str, owner: &str) -> Result<bool> {
        let _l = self.locked()?;
        if self.owner_of(key).as_deref() == Some(owner) && !self.reap_if_stale(key) {
            File::options()
                .write(true)
                .open(self.eph_path(key))?
                .set_modified(SystemTime::now())?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Replaces the value if this owner still holds the key.
    fn update_ephemeral(&self, key: &str, value: &[u8], ttl: Duration, owner: &str) -> Result<()> {
        let _l = self.locked()?;
        if self.owner_of(key).as_deref() != Some(owner) || self.reap_if_stale(key) {
            return Err(CoordError::Lost(key.to_string()));
        }
        self.write_ephemeral(key, value, ttl, owner)
    }

    fn remove_ephemeral(&self, key: &str, owner: &str) {
        if let Ok(_l) = self.locked() {
            if self.owner_of(key).as_deref() == Some(owner) {
                let _ = fs::remove_file(self.kv_path(key));
                let _ = fs::remove_file(self.eph_path(key));
            }
        }
    }
}

/// The file name of the next change (empty for an overflow), or None when the stream failed.
/// Pending for ever without a stream.
async fn next_change(
    changes: &mut Option<inotify::EventStream<Vec<u8>>>,
) -> Option<std::ffi::OsString> {
    use futures::StreamExt;
    match changes {
        Some(s) => match s.next().await {
            Some(Ok(ev)) => Some(ev.name.unwrap_or_default()),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "file coordinator: inotify read failed");
                None
            }
            None => None,
        },
        None => std::future::pending().await,
    }
}

/// Takes the changes already queued without waiting.
fn drain_changes(changes: &mut Option<inotify::EventStream<Vec<u8>>>) {
    use futures::FutureExt;
    use futures::StreamExt;
    if let Some(s) = changes {
        while let Some(Some(Ok(_))) = s.next().now_or_never() {}
    }
}

async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Inner) -> T + Send + 'static,
) -> T {
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || f(&inner))
        .await
        .expect("coordinator task panicked")
}

impl FileCoordinator {
    /// Opens (creating if needed) a store rooted at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_poll(path, Duration::from_millis(20))
    }

    /// Like [`FileCoordinator::open`], with the polling interval of watches that cannot
    /// have inotify.
    pub fn open_with_poll(path: impl AsRef<Path>, poll: Duration) -> Result<Self> {
        Self::open_inner(path, poll, true)
    }

    /// A store whose watches poll every `poll` rather than use inotify: for a directory on a
    /// file system where inotify does not see every change (a network mount shared by hosts).
    pub fn open_polling(path: impl AsRef<Path>, poll: Duration) -> Result<Self> {
        Self::open_inner(path, poll, false)
    }

    fn open_inner(path: impl AsRef<Path>, poll: Duration, inotify: bool) -> Result<Self> {
        let root = path.as_ref();
        let kv = root.join("kv");
        let eph = root.join("ephemeral");
        fs::create_dir_all(&kv)?;
        fs::create_dir_all(&eph)?;
        Ok(FileCoordinator {
            inner: Arc::new(Inner {
                kv,
                eph,
                lock: root.join(".lock"),
                poll,
                inotify,
                tmp_seq: AtomicU64::new(0),
                lists: AtomicU64::new(0),
            }),
        })
    }

    fn spawn_keeper(&self, key: String, ttl: Duration, owner: String) -> Ephemeral {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let inner = self.inner.clone();
        let k = key.clone();
        let eph = Ephemeral::new(key, tx);
        let held = eph.held_flag();
        tokio::spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(10));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if !held.load(Ordering::Relaxed) {
                            continue;
                        }
                        let (k2, o2) = (k.clone(), owner.clone());
                        match blocking(&inner, move |i| i.heartbeat(&k2, &o2)).await {
                            Ok(h) => held.store(h, Ordering::Relaxed),
                            Err(e) => tracing::warn!(key = %k, error = %e, "ephemeral heartbeat failed"),
                        }
                    }
                    cmd = rx.recv() => match cmd {
                        Some(EphemeralCmd::Update(v, done)) => {
                            let (k2, o2) = (k.clone(), owner.clone());
                            let r = blocking(&inner, move |i| i.update_ephemeral(&k2, &v, ttl, &o2)).await;
                            let _ = done.send(r);
                        }
                        Some(EphemeralCmd::Close(done)) => {
                            let (k2, o2) = (k.clone(), owner.clone());
                            blocking(&inner, move |i| i.remove_ephemeral(&k2, &o2)).await;
                            let _ = done.send(());
                            return;
                        }
                        None => {
                            let (k2, o2) = (k.clone(), owner.clone());
                            blocking(&inner, move |i| i.remove_ephemeral(&k2, &o2)).await;
                            return;
                        }
                    }
                }
            }
        });
        eph
    }
}

#[async_trait]
impl Coordinator for FileCoordinator {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_string();
        blocking(&self.inner, move |i| i.get(&key)).await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_vec());
        blocking(&self.inner, move |i| i.put(&key, &value)).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let key = key.to_string();
        let expected = expected.map(<[u8]>::to_vec);
        let new = new.map(<[u8]>::to_vec);
        blocking(&self.inner, move |i| {
            i.cas(&key, expected.as_deref(), new.as_deref())
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_string();
        blocking(&self.inner, move |i| i.delete(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let prefix = prefix.to_string();
        blocking(&self.inner, move |i| i.list(&prefix)).await
    }

    async fn watch(&self, prefix: &str) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(1024);
        let inner = self.inner.clone();
        let prefix = prefix.to_string();
        // Listening for changes starts before the first listing, so none falls in between.
        let mut changes = match self.inner.changes() {
            Ok(s) => Some(s),
            Err(_) if !inner.inotify => None,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    poll_ms = inner.poll.as_millis() as u64,
                    "file coordinator: no inotify for a watch; polling instead"
                );
                None
            }
        };
        let p = prefix.clone();
        let (first, mut expiry) = blocking(&self.inner, move |i| i.list_until(&p)).await?;
        let mut seen: BTreeMap<String, Vec<u8>> = first.iter().cloned().collect();
        tx.send(WatchEvent::Reset(first))
            .await
            .map_err(|_| CoordError::Closed)?;
        tokio::spawn(async move {
            loop {
                let mut wait = if changes.is_some() {
                    WATCH_SAFETY_NET
                } else {
                    inner.poll
                };
                if let Some(t) = expiry {
                    // A little after the deadline: expiry is "older than the TTL".
                    let due = t.duration_since(SystemTime::now()).unwrap_or_default();
                    wait = wait.min(due + Duration::from_millis(5));
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = tx.closed() => return,
                    ev = next_change(&mut changes) => match ev {
                        Some(name) => {
                            if name.to_str().is_some_and(|n| n.starts_with(".tmp.")) {
                                continue; // a value being written; its rename follows
                            }
                        }
                        None => {
                            tracing::warn!("file coordinator: inotify stream ended; polling instead");
                            changes = None;
                        }
                    },
                }
                // A burst of changes (a migration step writes several keys) is one listing.
                drain_changes(&mut changes);
                let p = prefix.clone();
                let now = match blocking(&inner, move |i| i.list_until(&p)).await {
                    Ok((v, e)) => {
                        expiry = e;
                        v.into_iter().collect::<BTreeMap<_, _>>()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "file coordinator watch listing failed");
                        expiry = None;
                        continue;
                    }
                };
                let mut events = Vec::new();
                for (k, v) in &now {
                    if seen.get(k) != Some(v) {
                        events.push(WatchEvent::Put {
                            key: k.clone(),
                            value: v.clone(),
                        });
                    }
                }
                for k in seen.keys() {
                    if !now.contains_key(k) {
                        events.push(WatchEvent::Delete { key: k.clone() });
                    }
                }
                seen = now;
                for ev in events {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Ephemeral> {
        let (k, v, owner) = (key.to_string(), value.to_vec(), super::owner_id());
        let o = owner.clone();
        blocking(&self.inner, move |i| i.put_ephemeral(&k, &v, ttl, &o)).await?;
        Ok(self.spawn_keeper(key.to_string(), ttl, owner))
    }

    async fn create_ephemeral(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> std::result::Result<Ephemeral, Option<Vec<u8>>> {
        let (k, v, owner) = (key.to_string(), value.to_vec(), super::owner_id());
        let o = owner.clone();
        blocking(&self.inner, move |i| i.create_ephemeral(&k, &v, ttl, &o)).await?;
        Ok(self.spawn_keeper(key.to_string(), ttl, owner))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        for k in ["/rcodis/demo/proxy/abc", "a b%c", "ключ", ""] {
            assert_eq!(unescape(&escape(k)).as_deref(), Some(k));
        }
        assert!(!escape("/a/b").contains('/'));
    }

    async fn next(w: &mut WatchStream) -> WatchEvent {
        tokio::time::timeout(Duration::from_secs(10), w.recv())
            .await
            .expect("a watch event in time")
            .expect("the watch open")
    }

    /// A watch reports puts, deletes and the expiry of an ephemeral key whose owner died
    /// (no heartbeat, and nobody else touching the store), and lists nothing while idle.
    async fn watch_reports_changes_and_expiry(c: FileCoordinator) {
        let mut w = c.watch("/w/").await.unwrap();
        assert!(matches!(next(&mut w).await, WatchEvent::Reset(v) if v.is_empty()));
        c.put("/w/a", b"1").await.unwrap();
        c.put("/x/other", b"1").await.unwrap();
        assert_eq!(
            next(&mut w).await,
            WatchEvent::Put {
                key: "/w/a".into(),
                value: b"1".to_vec()
            }
        );
        // An owner that dies right after creating its key: no keeper, no heartbeat.
        let ttl = Duration::from_millis(700);
        let started = std::time::Instant::now();
        c.inner.put_ephemeral("/w/dead", b"x", ttl, "gone").unwrap();
        assert_eq!(
            next(&mut w).await,
            WatchEvent::Put {
                key: "/w/dead".into(),
                value: b"x".to_vec()
            }
        );
        assert_eq!(
            next(&mut w).await,
            WatchEvent::Delete {
                key: "/w/dead".into()
            }
        );
        // Liveness is judged from the file's modification time, which the kernel takes from
        // a coarse clock (up to a tick, a few ms, behind): allow that much.
        assert!(started.elapsed() + Duration::from_millis(20) >= ttl);
        c.delete("/w/a").await.unwrap();
        assert_eq!(
            next(&mut w).await,
            WatchEvent::Delete { key: "/w/a".into() }
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inotify_watch() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileCoordinator::open(dir.path()).unwrap();
        watch_reports_changes_and_expiry(c.clone()).await;
        // Idle: nothing changes, so nothing is listed (the safety net is seconds away).
        let mut w = c.watch("/w/").await.unwrap();
        next(&mut w).await;
        let before = c.inner.lists.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(c.inner.lists.load(Ordering::Relaxed), before);
        // A change is seen at once, not at the safety net's next round.
        let t = std::time::Instant::now();
        c.put("/w/b", b"2").await.unwrap();
        assert_eq!(
            next(&mut w).await,
            WatchEvent::Put {
                key: "/w/b".into(),
                value: b"2".to_vec()
            }
        );
        assert!(t.elapsed() < WATCH_SAFETY_NET, "{:?}", t.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn polling_watch() {
        let dir = tempfile::tempdir().unwrap();
        let c = FileCoordinator::open_polling(dir.path(), Duration::from_millis(20)).unwrap();
        watch_reports_changes_and_expiry(c.clone()).await;
        let before = c.inner.lists.load(Ordering::Relaxed);
        let mut w = c.watch("/w/").await.unwrap();
        next(&mut w).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            c.inner.lists.load(Ordering::Relaxed) > before + 5,
            "a polling watch polls"
        );
    }
}
