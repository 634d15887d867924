//! The append-only log, one file per shard: `<dir>/rcodis-shard-<id>.aof`.
//!
//! Format: the RESP of each write, as Redis's AOF, preceded by `SELECT <db>` whenever the
//! database changes. Records are deterministic: commands with relative times are followed by
//! `PEXPIREAT key <unix ms>` for every key they leave with a TTL, and effects that depend on
//! chance or on several shards (SPOP, served blocking pops, cross-shard writes, restores) are
//! logged as the resulting key state (`DEL key`, then `RESTORE key 0 <payload> ABSTTL` and
//! `PEXPIREAT`). Replaying the files in any order per key gives the same data.
//!
//! `appendfsync always` syncs each batch of writes before any of its replies is sent (group
//! commit: one fsync per batch per shard), `everysec` once a second, `no` never (the kernel
//! decides). A torn last record (crash mid-write) is cut off with a warning at start-up; a
//! damaged record elsewhere stops start-up naming the file and offset, unless repair is asked
//! for (`--aof-repair`), which truncates there.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rcodis_core::resp::{encode, Request, RequestDecoder};

use crate::db::{dump, Db};

/// Writes since the last snapshot (for `save` rules and INFO).
pub static DIRTY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Shards whose log is being rewritten in a child process, and how the last rewrite ended.
pub static REWRITES_RUNNING: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);
pub static LAST_REWRITE_OK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(true);

/// What asking for a background rewrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteStart {
    Started,
    AlreadyRunning,
    /// No log (appendonly is off).
    Off,
}

/// A background rewrite: the child writes the image as of the fork into `tmp`; records
/// logged since are kept in `buf` and appended to it when the child is done.
#[derive(Debug)]
struct Rewriting {
    child: crate::fork::Child,
    tmp: PathBuf,
    buf: Vec<u8>,
}

/// When to fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    Always,
    Everysec,
    No,
}

impl Fsync {
    pub fn parse(s: &str) -> Fsync {
        match s {
            "always" => Fsync::Always,
            "no" => Fsync::No,
            _ => Fsync::Everysec,
        }
    }
}

/// One shard's log.
#[derive(Debug)]
pub struct Aof {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    db: usize,
    pub policy: Fsync,
    /// Bytes written but not yet fsynced.
    unsynced: bool,
    pub last_sync: Instant,
    pub size: u64,
    /// Bytes ever appended, and how many of them are known durable (group commit).
    appended: u64,
    synced_upto: u64,
    rewriting: Option<Rewriting>,
    /// No file: the records only feed replicas (appendonly is off).
    memory_only: bool,
    /// Replicas fed with every batch of records (see `repl.rs`).
    replicas: Vec<ReplSink>,
    /// The database in effect where the next batch of records starts.
    chunk_db: usize,
}

/// A replica's share of a shard's records: batches go down the channel; `queued` counts the
/// bytes not yet sent, and past `limit` the replica is dropped (it resynchronises).
#[derive(Debug)]
pub struct ReplSink {
    pub tx: futures::channel::mpsc::UnboundedSender<Bytes>,
    pub queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub limit: usize,
}

/// The log file of a shard.
pub fn path_of(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("rcodis-shard-{shard}.aof"))
}

impl Aof {
    /// Opens (creating) a shard's log for appending.
    pub fn open(dir: &Path, shard: usize, policy: Fsync) -> std::io::Result<Aof> {
        let path = path_of(dir, shard);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Aof {
            path,
            file,
            buf: Vec::with_capacity(64 * 1024),
            db: usize::MAX,
            policy,
            unsynced: false,
            last_sync: Instant::now(),
            size,
            appended: 0,
            synced_upto: 0,
            rewriting: None,
            memory_only: false,
            replicas: Vec::new(),
            chunk_db: usize::MAX,
        })
    }

    /// A log without a file, for feeding replicas when appendonly is off.
    pub fn memory() -> std::io::Result<Aof> {
        let path = PathBuf::from("/dev/null");
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(Aof {
            path,
            file,
            buf: Vec::with_capacity(64 * 1024),
            db: usize::MAX,
            policy: Fsync::No,
            unsynced: false,
            last_sync: Instant::now(),
            size: 0,
            appended: 0,
            synced_upto: 0,
            rewriting: None,
            memory_only: true,
            replicas: Vec::new(),
            chunk_db: usize::MAX,
        })
    }

    /// Whether records go to a file (appendonly is on).
    pub fn has_file(&self) -> bool {
        !self.memory_only
    }

    /// Starts feeding a replica with every record from now on (call right after taking the
    /// image it starts from; what was logged before is flushed out first).
    pub fn attach_replica(&mut self, sink: ReplSink) {
        self.write_out();
        // The replica's stream starts with a SELECT.
        self.db = usize::MAX;
        self.chunk_db = usize::MAX;
        self.replicas.push(sink);
    }

    /// Replicas still attached.
    pub fn replica_count(&self) -> usize {
        self.replicas.len()
    }

    /// Detaches every replica (each reconnects and resynchronises): after commands whose
    /// effect spans every shard (FLUSHALL, FLUSHDB, SWAPDB), which a per-shard stream cannot
    /// order against the other shards' streams.
    pub fn drop_replicas(&mut self, why: &str) {
        if !self.replicas.is_empty() {
            tracing::info!(reason = why, "replicas will resynchronise");
            self.replicas.clear();
        }
    }

    fn feed_replicas(&mut self) {
        let mut chunk = Vec::with_capacity(self.buf.len() + 24);
        if self.chunk_db != usize::MAX {
            let n = self.chunk_db.to_string();
            encode::write_array_len(&mut chunk, 2);
            encode::write_bulk(&mut chunk, b"SELECT");
            encode::write_bulk(&mut chunk, n.as_bytes());
        }
        chunk.extend_from_slice(&self.buf);
        let chunk = Bytes::from(chunk);
        let len = chunk.len();
        self.replicas.retain(|r| {
            let q = r
                .queued
                .fetch_add(len, std::sync::atomic::Ordering::Relaxed)
                + len;
            if q > r.limit {
                tracing::warn!(
                    queued = q,
                    limit = r.limit,
                    "dropping a replica that does not keep up (repl_buffer_limit)"
                );
                return false;
            }
            r.tx.unbounded_send(chunk.clone()).is_ok()
        });
    }

    fn select(&mut self, db: usize) {
        if self.db != db {
            let n = db.to_string();
            encode::write_array_len(&mut self.buf, 2);
            encode::write_bulk(&mut self.buf, b"SELECT");
            encode::write_bulk(&mut self.buf, n.as_bytes());
            self.db = db;
        }
    }

    /// Logs a command given as arguments.
    pub fn log(&mut self, db: usize, args: &[&[u8]]) {
        self.select(db);
        encode::write_array_len(&mut self.buf, args.len());
        for a in args {
            encode::write_bulk(&mut self.buf, a);
        }
    }

    /// Logs a request as it arrived.
    pub fn log_req(&mut self, db: usize, req: &Request) {
        self.select(db);
        req.write_resp(&mut self.buf);
    }

    /// Logs a key's current state in `db` (or its deletion).
    pub fn log_key_state(&mut self, db: usize, d: &mut Db, key: &[u8], now: u64) {
        self.log(db, &[b"DEL", key]);
        if let Some(e) = d.get_quiet(key, now) {
            let payload = dump::dump(&e.value);
            let at = e.expire_at;
            self.log(db, &[b"RESTORE", key, b"0", &payload]);
            if at != 0 {
                self.log(db, &[b"PEXPIREAT", key, at.to_string().as_bytes()]);
            }
        }
    }

    /// Logs an absolute expiry for a key that has one (after commands with relative times).
    pub fn log_ttl(&mut self, db: usize, key: &[u8], at: u64) {
        self.log(db, &[b"PEXPIREAT", key, at.to_string().as_bytes()]);
    }

    /// Whether anything waits to be written or synced.
    pub fn pending(&self) -> bool {
        !self.buf.is_empty() || self.unsynced
    }

    /// Writes buffered records to the file (no fsync).
    pub fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if !self.replicas.is_empty() {
            self.feed_replicas();
        }
        self.chunk_db = self.db;
        if self.memory_only {
            self.buf.clear();
            return;
        }
        if let Some(r) = self.rewriting.as_mut() {
            r.buf.extend_from_slice(&self.buf);
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => {
                self.size += self.buf.len() as u64;
                self.appended += self.buf.len() as u64;
                self.unsynced = true;
            }
            Err(e) => tracing::error!(file = %self.path.display(), error = %e, "AOF write failed"),
        }
        self.buf.clear();
    }

    /// Writes and fsyncs.
    pub fn sync(&mut self) {
        self.write_out();
        if self.memory_only {
            return;
        }
        if self.unsynced {
            if let Err(e) = self.file.sync_data() {
                tracing::error!(file = %self.path.display(), error = %e, "AOF fsync failed");
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        self.synced_upto = self.appended;
    }

    /// Group commit, step 1: writes what is buffered and returns the position that must be
    /// durable before this batch may reply (`None` unless the policy is `always`).
    pub fn commit_point(&mut self) -> Option<u64> {
        self.write_out();
        if self.policy != Fsync::Always {
            return None;
        }
        (self.synced_upto < self.appended).then_some(self.appended)
    }

    /// Group commit, step 2: syncs unless an fsync since covered `point`.
    pub fn commit(&mut self, point: u64) {
        if self.synced_upto < point {
            self.sync();
        }
    }

    /// What the policy asks at the end of a batch: `always` syncs, the others write.
    pub fn end_batch(&mut self) {
        match self.policy {
            Fsync::Always => self.sync(),
            _ => self.write_out(),
        }
    }

    /// Whether a background rewrite is running.
    pub fn rewriting(&self) -> bool {
        self.rewriting.is_some()
    }

    /// Starts a background rewrite: a child process writes `dbs` as of now while this shard
    /// keeps serving and logging (to the old log and to a buffer for the new one).
    pub fn start_rewrite(
        &mut self,
        dbs: &mut [Db],
        now: u64,
        shard: usize,
    ) -> std::io::Result<RewriteStart> {
        if self.memory_only {
            return Ok(RewriteStart::Off);
        }
        if self.rewriting.is_some() {
            return Ok(RewriteStart::AlreadyRunning);
        }
        // Records already applied belong to the image, not to the buffer.
        self.write_out();
        let tmp = self.path.with_extension("aof.rewrite");
        // Taken before the fork: the child must not take locks.
        let pre = crate::cmd::function::image_for(shard);
        let child = {
            let tmp = tmp.clone();
            crate::fork::spawn(move || {
                let mut w = std::io::BufWriter::new(File::create(&tmp)?);
                write_image(&mut w, dbs, now, &pre)?;
                let f = w.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()
            })?
        };
        // The buffer starts with a SELECT.
        self.db = usize::MAX;
        self.rewriting = Some(Rewriting {
            child,
            tmp,
            buf: Vec::new(),
        });
        REWRITES_RUNNING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(RewriteStart::Started)
    }

    /// Finishes a background rewrite whose child is done: appends what was logged since the
    /// fork, syncs, and puts the new log in place of the old. `None` while it runs.
    pub fn poll_rewrite(&mut self) -> Option<Result<(), String>> {
        let state = self.rewriting.as_ref()?.child.poll();
        let result = match state {
            crate::fork::Exit::Running => return None,
            crate::fork::Exit::Failed(e) => {
                let r = self.rewriting.take()?;
                let _ = std::fs::remove_file(&r.tmp);
                Err(e)
            }
            crate::fork::Exit::Ok => {
                self.write_out();
                let r = self.rewriting.take()?;
                let tmp = r.tmp.clone();
                self.install(r).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    e.to_string()
                })
            }
        };
        REWRITES_RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        LAST_REWRITE_OK.store(result.is_ok(), std::sync::atomic::Ordering::Relaxed);
        Some(result)
    }

    fn install(&mut self, r: Rewriting) -> std::io::Result<()> {
        let mut f = OpenOptions::new().append(true).open(&r.tmp)?;
        f.write_all(&r.buf)?;
        f.sync_all()?;
        std::fs::rename(&r.tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.size = f.metadata()?.len();
        self.file = f;
        self.unsynced = false;
        self.synced_upto = self.appended;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Stops a background rewrite (its partial file is removed).
    pub fn cancel_rewrite(&mut self) {
        if let Some(r) = self.rewriting.take() {
            r.child.kill();
            let _ = std::fs::remove_file(&r.tmp);
            REWRITES_RUNNING.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Replaces the log with a compact one holding `dbs`' current data, now, on this thread
    /// (start-up relayout, DEBUG RELOAD).
    pub fn rewrite(&mut self, dbs: &mut [Db], now: u64, shard: usize) -> std::io::Result<()> {
        if self.memory_only {
            return Ok(());
        }
        self.cancel_rewrite();
        self.sync();
        let tmp = self.path.with_extension("aof.rewrite");
        let mut w = std::io::BufWriter::new(File::create(&tmp)?);
        write_image(&mut w, dbs, now, &crate::cmd::function::image_for(shard))?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.size = self.file.metadata()?.len();
        self.db = usize::MAX;
        Ok(())
    }
}

/// Writes the data of `dbs` as log records (SELECT, RESTORE, PEXPIREAT), after the records
/// `pre` (shard 0's library set, see [`crate::cmd::function::image_for`]): the format of
/// rewritten logs and of snapshots.
pub fn write_image(
    w: &mut impl Write,
    dbs: &mut [Db],
    now: u64,
    pre: &[Vec<Bytes>],
) -> std::io::Result<()> {
    let mut out = Vec::new();
    for r in pre {
        out.clear();
        encode::write_array_len(&mut out, r.len());
        for a in r {
            encode::write_bulk(&mut out, a);
        }
        w.write_all(&out)?;
    }
    for (i, d) in dbs.iter_mut().enumerate() {
        let keys = live_keys(d, now);
        if keys.is_empty() {
            continue;
        }
        out.clear();
        encode::write_array_len(&mut out, 2);
        encode::write_bulk(&mut out, b"SELECT");
        encode::write_bulk(&mut out, i.to_string().as_bytes());
        w.write_all(&out)?;
        for k in keys {
            let Some(e) = d.get_quiet(&k, now) else {
                continue;
            };
            out.clear();
            let payload = dump::dump(&e.value);
            let at = e.expire_at;
            let args: [&[u8]; 4] = [b"RESTORE", &k, b"0", &payload];
            encode::write_array_len(&mut out, args.len());
            for a in args {
                encode::write_bulk(&mut out, a);
            }
            if at != 0 {
                let ts = at.to_string();
                let args: [&[u8]; 3] = [b"PEXPIREAT", &k, ts.as_bytes()];
                encode::write_array_len(&mut out, 3);
                for a in args {
                    encode::write_bulk(&mut out, a);
                }
            }
            w.write_all(&out)?;
        }
    }
    Ok(())
}

/// The keys of a database that have not expired.
fn live_keys(d: &mut Db, now: u64) -> Vec<Bytes> {
    let mut keys = Vec::new();
    d.for_each_key(now, |k, _| keys.push(k.to_bytes()));
    keys
}

/// Writes `dbs` as the middle of an RDB file (a database selector, then its keys, for each
/// database with keys): what a Redis replica or `redis-cli --rdb` gets from a full sync,
/// between [`dump::rdb_header`] and [`dump::rdb_footer`].
pub fn write_rdb_part(w: &mut impl Write, dbs: &mut [Db], now: u64) -> std::io::Result<()> {
    let mut out = Vec::new();
    for (i, d) in dbs.iter_mut().enumerate() {
        let keys = live_keys(d, now);
        if keys.is_empty() {
            continue;
        }
        out.clear();
        dump::rdb_select(&mut out, i);
        w.write_all(&out)?;
        for k in keys {
            let Some(e) = d.get_quiet(&k, now) else {
                continue;
            };
            out.clear();
            dump::rdb_entry(&mut out, &k, &e.value, e.expire_at);
            w.write_all(&out)?;
        }
    }
    Ok(())
}

/// A shard's snapshot file.
pub fn snapshot_path(dir: &Path, shard: usize) -> PathBuf {
    dir.join(format!("rcodis-shard-{shard}.snap"))
}

/// Writes a snapshot of `dbs` for `shard` (temp file, fsync, rename).
/// `pre` as for [`write_image`].
pub fn write_snapshot(
    dir: &Path,
    shard: usize,
    dbs: &mut [Db],
    now: u64,
    pre: &[Vec<Bytes>],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = snapshot_path(dir, shard);
    let tmp = path.with_extension("snap.tmp");
    let mut w = std::io::BufWriter::new(File::create(&tmp)?);
    write_image(&mut w, dbs, now, pre)?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The snapshot files present in `dir`, by shard id.
pub fn existing_snapshots(dir: &Path) -> Vec<(usize, PathBuf)> {
    shard_files(dir, ".snap")
}

/// Why a log could not be loaded.
#[derive(Debug)]
pub struct LoadError(pub String);

/// Reads a log file's requests. A torn tail is cut off (with a warning); a damaged record
/// elsewhere is an error unless `repair`, which truncates the file there.
pub fn read_log(path: &Path, repair: bool) -> Result<Vec<Request>, LoadError> {
    let data = std::fs::read(path)
        .map_err(|e| LoadError(format!("cannot read {}: {e}", path.display())))?;
    let total = data.len();
    let mut buf = BytesMut::from(&data[..]);
    let mut dec = RequestDecoder::default();
    let mut reqs = Vec::new();
    loop {
        let offset = total - buf.len();
        let decoded = match dec.decode(&mut buf) {
            // The log holds only multibulk records: anything inline is damage.
            Ok(Some(r)) if r.raw().is_none() => Err(
                rcodis_core::resp::ProtocolError::ExpectedDollar(data[offset]),
            ),
            other => other,
        };
        match decoded {
            Ok(Some(r)) => reqs.push(r),
            Ok(None) => {
                if !buf.is_empty() {
                    tracing::warn!(
                        file = %path.display(),
                        offset,
                        "AOF ends with an incomplete record (a crash mid-write?): truncating {} bytes",
                        buf.len()
                    );
                    truncate(path, offset as u64)?;
                }
                return Ok(reqs);
            }
            Err(e) => {
                if repair {
                    tracing::warn!(file = %path.display(), offset, error = %e, "AOF damaged: repair asked, truncating here");
                    truncate(path, offset as u64)?;
                    return Ok(reqs);
                }
                return Err(LoadError(format!(
                    "AOF {} is damaged at offset {offset} ({e}); refusing to start. Restore it from a copy, or start with --aof-repair to keep everything before offset {offset}",
                    path.display()
                )));
            }
        }
    }
}

fn truncate(path: &Path, len: u64) -> Result<(), LoadError> {
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LoadError(format!("cannot open {}: {e}", path.display())))?;
    f.set_len(len)
        .map_err(|e| LoadError(format!("cannot truncate {}: {e}", path.display())))?;
    f.sync_all().ok();
    Ok(())
}

/// The shard logs present in `dir`, by shard id.
pub fn existing_logs(dir: &Path) -> Vec<(usize, PathBuf)> {
    shard_files(dir, ".aof")
}

/// Files `rcodis-shard-<id><suffix>` in `dir`, by shard id.
fn shard_files(dir: &Path, suffix: &str) -> Vec<(usize, PathBuf)> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_prefix("rcodis-shard-")
                .and_then(|s| s.strip_suffix(suffix))
            {
                if let Ok(id) = id.parse() {
                    v.push((id, e.path()));
                }
            }
        }
    }
    v.sort();
    v
}
