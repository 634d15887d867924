//! Replication between rcodis-servers (REPLICAOF / SLAVEOF, SYNC, ROLE, INFO replication).
//!
//! Master side (`SYNC`): every shard, at one instant of its own, flushes its log buffer,
//! forks a child that writes its data as RESTORE records (the log-rewrite image), and
//! attaches a sink that receives every later batch of its log records (the same records
//! the append-only log gets; a shard without a log keeps a file-less one while replicas are
//! attached). The connection then sends `+FULLRESYNC`, `FLUSHALL`, each shard's image once
//! its child is done, and from then on the shards' batches as they come. Shards own
//! disjoint keys, so interleaving their streams keeps every key's history in order.
//! Commands whose effect spans every shard (FLUSHALL, FLUSHDB, SWAPDB) cannot be ordered
//! that way: they detach the replicas, which reconnect and resynchronise. A replica that
//! falls more than `repl_buffer_limit` bytes behind is detached the same way.
//!
//! Replica side (`REPLICAOF host port`): a link thread connects to the master (AUTH with
//! `masterauth`), announces its port, sends SYNC, and forwards the stream into this server
//! through a loopback connection marked as the master link (`REPLCONF MASTERLINK <secret>`),
//! so replicated commands run through the normal command path. Other clients get
//! `-READONLY` for writes. A broken link is retried every second with a full resync.
//! That form is rcodis-to-rcodis (the replica says `REPLCONF capa rcodis` first). Anything
//! else that sends SYNC or PSYNC (a Redis replica, `redis-cli --rdb`, replication-protocol
//! tools) gets Redis's form instead: the shards' images written as one RDB file (version 10,
//! Redis 7.0's), then the same command stream with a PING every 10 seconds; every resync is
//! a full one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream as StdStream, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use rcodis_core::resp::Request;

use crate::shard::{Shard, Shared};

/// A replica of this master: its IP, listening port, and bytes sent to it.
pub type ReplicaEntry = (String, u16, Arc<AtomicU64>);

/// Replication state of the process.
#[derive(Debug)]
pub struct Repl {
    /// The master this server follows (`None`: it is a master).
    pub master: Mutex<Option<(String, u16)>>,
    /// `master.is_some()`, readable without a lock on the write path.
    pub replica: AtomicBool,
    /// Bumped by every REPLICAOF: a link thread of an older generation stops.
    pub generation: AtomicU64,
    pub link_up: AtomicBool,
    pub sync_in_progress: AtomicBool,
    /// Unix seconds of the last byte from the master.
    pub last_io: AtomicU64,
    /// Bytes received from the master since the last full sync.
    pub received: AtomicU64,
    /// The secret of the loopback master-link connection.
    pub link_token: String,
    /// Replicas of this server: connection id -> (ip, listening port, bytes sent).
    pub replicas: Mutex<std::collections::BTreeMap<u64, ReplicaEntry>>,
    /// Bytes sent to replicas since start (master_repl_offset).
    pub offset: AtomicU64,
    /// Full resyncs served to replicas (INFO's sync_full).
    pub sync_full: AtomicU64,
}

impl Default for Repl {
    fn default() -> Self {
        let mut b = [0u8; 16];
        let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
        Repl {
            master: Mutex::new(None),
            replica: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            link_up: AtomicBool::new(false),
            sync_in_progress: AtomicBool::new(false),
            last_io: AtomicU64::new(0),
            received: AtomicU64::new(0),
            link_token: b.iter().map(|x| format!("{x:02x}")).collect(),
            replicas: Mutex::new(Default::default()),
            offset: AtomicU64::new(0),
            sync_full: AtomicU64::new(0),
        }
    }
}

impl Repl {
    /// Whether this server follows a master.
    pub fn is_replica(&self) -> bool {
        self.master.lock().expect("repl lock").is_some()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `# Replication` section of INFO.
pub fn info(shared: &Shared, run_id: &str) -> String {
    let r = &shared.repl;
    let mut s = String::from("# Replication\r\n");
    let master = r.master.lock().expect("repl lock").clone();
    let offset = r.offset.load(Ordering::Relaxed);
    match master {
        Some((host, port)) => {
            let up = r.link_up.load(Ordering::Relaxed);
            let last = r.last_io.load(Ordering::Relaxed);
            let recv = r.received.load(Ordering::Relaxed);
            s.push_str(&format!(
                "role:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{recv}\r\nslave_repl_offset:{recv}\r\nslave_priority:100\r\nslave_read_only:1\r\nreplica_announced:1\r\n",
                if up { "up" } else { "down" },
                if up { unix_now().saturating_sub(last) as i64 } else { -1 },
                r.sync_in_progress.load(Ordering::Relaxed) as u8,
            ));
        }
        None => s.push_str("role:master\r\n"),
    }
    let replicas = r.replicas.lock().expect("repl lock");
    s.push_str(&format!("connected_slaves:{}\r\n", replicas.len()));
    for (i, (ip, port, sent)) in replicas.values().enumerate() {
        s.push_str(&format!(
            "slave{i}:ip={ip},port={port},state=online,offset={},lag=0\r\n",
            sent.load(Ordering::Relaxed)
        ));
    }
    s.push_str(&format!(
        "master_failover_state:no-failover\r\nmaster_replid:{run_id}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:{offset}\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:0\r\nrepl_backlog_size:1048576\r\nrepl_backlog_first_byte_offset:0\r\nrepl_backlog_histlen:0\r\n\r\n"
    ));
    s
}

/// ROLE's reply.
pub fn role(shared: &Shared, out: &mut crate::out::Out) {
    let r = &shared.repl;
    let master = r.master.lock().expect("repl lock").clone();
    match master {
        Some((host, port)) => {
            out.array(5);
            out.bulk(b"slave");
            out.bulk(host.as_bytes());
            out.int(port as i64);
            out.bulk(if r.link_up.load(Ordering::Relaxed) {
                b"connected"
            } else {
                b"connect"
            });
            out.int(r.received.load(Ordering::Relaxed) as i64);
        }
        None => {
            let replicas = r.replicas.lock().expect("repl lock");
            out.array(3);
            out.bulk(b"master");
            out.int(r.offset.load(Ordering::Relaxed) as i64);
            out.array(replicas.len());
            for (ip, port, sent) in replicas.values() {
                out.array(3);
                out.bulk(ip.as_bytes());
                out.bulk(port.to_string().as_bytes());
                out.bulk(sent.load(Ordering::Relaxed).to_string().as_bytes());
            }
        }
    }
}

/// REPLICAOF host port | NO ONE.
pub fn replicaof(shared: &Arc<Shared>, req: &Request, out: &mut crate::out::Out) {
    let host = String::from_utf8_lossy(req.arg(1)).to_string();
    let port_arg = String::from_utf8_lossy(req.arg(2)).to_string();
    if host.eq_ignore_ascii_case("no") && port_arg.eq_ignore_ascii_case("one") {
        let was = shared.repl.master.lock().expect("repl lock").take();
        shared.repl.replica.store(false, Ordering::SeqCst);
        crate::cmd::script::REPLICA.store(false, Ordering::SeqCst);
        shared.repl.generation.fetch_add(1, Ordering::SeqCst);
        shared.repl.link_up.store(false, Ordering::Relaxed);
        if let Some((h, p)) = was {
            tracing::info!(master = %format!("{h}:{p}"), "replication stopped: this server is a master now");
        }
        return out.ok();
    }
    let Ok(port) = port_arg.parse::<u16>() else {
        return out.err("ERR Invalid master port");
    };
    let me = shared.port.load(Ordering::Relaxed) as u16;
    if port == me && matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") {
        return out.err("ERR can't replicate myself");
    }
    {
        let mut m = shared.repl.master.lock().expect("repl lock");
        if m.as_ref() == Some(&(host.clone(), port)) {
            return out.simple("OK Already connected to specified master");
        }
        *m = Some((host.clone(), port));
        shared.repl.replica.store(true, Ordering::SeqCst);
        crate::cmd::script::REPLICA.store(true, Ordering::SeqCst);
    }
    match start_link(shared, host, port) {
        Ok(()) => out.ok(),
        Err(e) => out.err(&format!("ERR cannot start the replication link: {e}")),
    }
}

/// Follows `host:port` from now on (the master is already recorded).
pub fn start_link(shared: &Arc<Shared>, host: String, port: u16) -> std::io::Result<()> {
    *shared.repl.master.lock().expect("repl lock") = Some((host.clone(), port));
    shared.repl.replica.store(true, Ordering::SeqCst);
    crate::cmd::script::REPLICA.store(true, Ordering::SeqCst);
    let generation = shared.repl.generation.fetch_add(1, Ordering::SeqCst) + 1;
    shared.repl.link_up.store(false, Ordering::Relaxed);
    let shared = shared.clone();
    tracing::info!(master = %format!("{host}:{port}"), "replicating");
    std::thread::Builder::new()
        .name("rcodis-repl-link".into())
        .spawn(move || link_loop(shared, generation, host, port))
        .map(|_| ())
}

/// Parses `host port` or `host:port`.
pub fn parse_master(s: &str) -> Option<(String, u16)> {
    let s = s.trim();
    let (h, p) = s.rsplit_once(' ').or_else(|| s.rsplit_once(':'))?;
    Some((h.trim().to_string(), p.trim().parse().ok()?))
}

fn current(shared: &Shared, generation: u64) -> bool {
    shared.repl.generation.load(Ordering::SeqCst) == generation
        && !shared.shutdown.load(Ordering::Relaxed)
}

fn link_loop(shared: Arc<Shared>, generation: u64, host: String, port: u16) {
    while current(&shared, generation) {
        if let Err(e) = link_once(&shared, generation, &host, port) {
            if current(&shared, generation) {
                tracing::warn!(master = %format!("{host}:{port}"), error = %e, "replication link down; retrying");
            }
        }
        shared.repl.link_up.store(false, Ordering::Relaxed);
        shared.repl.sync_in_progress.store(false, Ordering::Relaxed);
        for _ in 0..10 {
            if !current(&shared, generation) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    Request::from_args(args.iter().copied()).write_resp(&mut b);
    b
}

/// Reads one reply line (`+OK`, `-ERR ...`).
fn reply_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err("connection closed".into()),
        Ok(_) => {
            let l = line.trim_end().to_string();
            if l.starts_with('-') {
                Err(l)
            } else {
                Ok(l)
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

fn link_once(shared: &Arc<Shared>, generation: u64, host: &str, port: u16) -> Result<(), String> {
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("master address does not resolve")?;
    let m = StdStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    m.set_nodelay(true).ok();
    let mut mw = m.try_clone().map_err(|e| e.to_string())?;
    let mut mr = BufReader::with_capacity(256 * 1024, m);
    let (masterauth, requirepass, bind) = {
        let cfg = shared.config();
        (
            shared
                .params
                .read()
                .expect("params")
                .get("masterauth")
                .cloned()
                .unwrap_or_default(),
            shared.requirepass(),
            cfg.bind.clone(),
        )
    };
    if !masterauth.is_empty() {
        mw.write_all(&command(&[b"AUTH", masterauth.as_bytes()]))
            .map_err(|e| e.to_string())?;
        reply_line(&mut mr).map_err(|e| format!("AUTH: {e}"))?;
    }
    let me = shared.port.load(Ordering::Relaxed).to_string();
    mw.write_all(&command(&[b"REPLCONF", b"listening-port", me.as_bytes()]))
        .map_err(|e| e.to_string())?;
    reply_line(&mut mr).map_err(|e| format!("REPLCONF: {e}"))?;
    // The data as commands (rcodis's own form) rather than an RDB file.
    mw.write_all(&command(&[b"REPLCONF", b"capa", b"rcodis"]))
        .map_err(|e| e.to_string())?;
    reply_line(&mut mr).map_err(|e| format!("REPLCONF: {e}"))?;
    shared.repl.sync_in_progress.store(true, Ordering::Relaxed);
    mw.write_all(&command(&[b"SYNC"]))
        .map_err(|e| e.to_string())?;
    let first = reply_line(&mut mr).map_err(|e| format!("SYNC: {e}"))?;
    if !first.starts_with("+FULLRESYNC") {
        return Err(format!("SYNC answered {first}"));
    }
    // Into this server, as the master link.
    let local = if bind == "0.0.0.0" || bind.is_empty() {
        "127.0.0.1".to_string()
    } else {
        bind
    };
    let me_addr = (local.as_str(), shared.port.load(Ordering::Relaxed) as u16)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("own address does not resolve")?;
    let mut own = StdStream::connect_timeout(&me_addr, Duration::from_secs(5))
        .map_err(|e| format!("connecting to myself: {e}"))?;
    own.set_nodelay(true).ok();
    let mut hello = Vec::new();
    if !requirepass.is_empty() {
        hello.extend(command(&[b"AUTH", requirepass.as_bytes()]));
    }
    let gen = generation.to_string();
    hello.extend(command(&[
        b"REPLCONF",
        b"MASTERLINK",
        shared.repl.link_token.as_bytes(),
        gen.as_bytes(),
    ]));
    own.write_all(&hello).map_err(|e| e.to_string())?;
    // Replies to replicated commands are read and dropped.
    let drain = own.try_clone().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("rcodis-repl-drain".into())
        .spawn(move || {
            let mut drain = drain;
            let mut buf = vec![0u8; 64 * 1024];
            while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
        })
        .map_err(|e| e.to_string())?;
    shared.repl.received.store(0, Ordering::Relaxed);
    shared.repl.link_up.store(true, Ordering::Relaxed);
    shared.repl.last_io.store(unix_now(), Ordering::Relaxed);
    tracing::info!(master = %format!("{host}:{port}"), "replication link up (full resync)");
    // Wake up now and then to notice REPLICAOF NO ONE or another master.
    mr.get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .ok();
    loop {
        if !current(shared, generation) {
            let _ = own.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        let n = match mr.fill_buf() {
            Ok([]) => return Err("the master closed the connection".into()),
            Ok(b) => {
                if !current(shared, generation) {
                    continue;
                }
                own.write_all(b).map_err(|e| format!("applying: {e}"))?;
                b.len()
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                0
            }
            Err(e) => return Err(e.to_string()),
        };
        if n > 0 {
            mr.consume(n);
            shared.repl.received.fetch_add(n as u64, Ordering::Relaxed);
            shared.repl.last_io.store(unix_now(), Ordering::Relaxed);
            shared.repl.sync_in_progress.store(false, Ordering::Relaxed);
        }
    }
}

/// What one shard handed to a starting replica: the child writing its image, the image's
/// path, and the stream of its later records.
type Start = (
    crate::fork::Child,
    std::path::PathBuf,
    futures::channel::mpsc::UnboundedReceiver<Bytes>,
);

/// SYNC / PSYNC on the master: serves the replica until it goes away.
pub async fn serve_replica(
    shard: &Rc<Shard>,
    conn_id: u64,
    peer_ip: String,
    listening_port: u16,
    stream: &mut TcpStream,
    format: SyncFormat,
) {
    let shared = shard.shared.clone();
    let dir = shared.config().dir;
    // Redis's `client-output-buffer-limit ... slave <hard> ...` bounds what may wait.
    let limit = shared
        .params
        .read()
        .expect("params")
        .get("client-output-buffer-limit")
        .and_then(|v| {
            let w: Vec<&str> = v.split_whitespace().collect();
            w.iter()
                .position(|c| *c == "slave" || *c == "replica")
                .and_then(|i| w.get(i + 1))
                .and_then(|n| crate::config::parse_memory(n))
        })
        .filter(|n| *n > 0)
        .map_or(256 << 20, |n| n as usize);
    let queued = Arc::new(AtomicUsize::new(0));
    let now = crate::db::now_ms();
    let q = queued.clone();
    let starts = shard
        .run_on_all(move |st| -> Result<Start, String> {
            if st.aof.is_none() {
                st.aof = Some(crate::aof::Aof::memory().map_err(|e| e.to_string())?);
            }
            let a = st.aof.as_mut().expect("log");
            a.write_out();
            let tmp = dir.join(format!("rcodis-repl-{conn_id}-shard-{}.tmp", st.id));
            let child = {
                let tmp = tmp.clone();
                let dbs = &mut st.dbs;
                let pre = crate::cmd::function::image_for(st.id);
                crate::fork::spawn(move || {
                    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
                    if format == SyncFormat::Rcodis {
                        crate::aof::write_image(&mut w, dbs, now, &pre)?;
                    } else {
                        crate::aof::write_rdb_part(&mut w, dbs, now)?;
                    }
                    w.flush()
                })
                .map_err(|e| format!("cannot fork: {e}"))?
            };
            let (tx, rx) = futures::channel::mpsc::unbounded();
            st.aof
                .as_mut()
                .expect("log")
                .attach_replica(crate::aof::ReplSink {
                    tx,
                    queued: q.clone(),
                    limit,
                });
            Ok((child, tmp, rx))
        })
        .await;
    let mut images = Vec::new();
    let mut streams = Vec::new();
    let mut failed = None;
    for s in starts {
        match s {
            Ok((child, path, rx)) => {
                images.push((child, path));
                streams.push(rx);
            }
            Err(e) => failed = Some(e),
        }
    }
    let sent = Arc::new(AtomicU64::new(0));
    if failed.is_none() {
        shared
            .repl
            .replicas
            .lock()
            .expect("repl lock")
            .insert(conn_id, (peer_ip.clone(), listening_port, sent.clone()));
        shared.repl.sync_full.fetch_add(1, Ordering::Relaxed);
        tracing::info!(replica = %format!("{peer_ip}:{listening_port}"), "replica attached (full resync)");
        if let Err(e) = stream_to(stream, &shared, images, streams, &queued, &sent, format).await {
            tracing::info!(replica = %format!("{peer_ip}:{listening_port}"), reason = %e, "replica detached");
        }
        shared
            .repl
            .replicas
            .lock()
            .expect("repl lock")
            .remove(&conn_id);
    } else {
        let e = failed.unwrap_or_default();
        tracing::warn!(error = %e, "cannot start a full resync");
        for (child, path) in images {
            child.kill();
            let _ = std::fs::remove_file(path);
        }
        let _ = stream
            .write_all(format!("-ERR full resync failed: {e}\r\n").as_bytes())
            .await;
    }
    // File-less logs kept only for replicas go once no replica needs them.
    shard
        .run_on_all(|st| {
            if st
                .aof
                .as_ref()
                .is_some_and(|a| !a.has_file() && a.replica_count() == 0)
            {
                st.aof = None;
            }
        })
        .await;
}

/// Waits for a forked child writing a shard's image to finish.
async fn image_written(child: &crate::fork::Child) -> Result<(), String> {
    loop {
        match child.poll() {
            crate::fork::Exit::Running => glommio::timer::sleep(Duration::from_millis(5)).await,
            crate::fork::Exit::Ok => return Ok(()),
            crate::fork::Exit::Failed(e) => return Err(format!("writing the image failed: {e}")),
        }
    }
}

/// How a replica wants its full sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncFormat {
    /// An rcodis replica (`REPLCONF capa rcodis`): the data as commands.
    Rcodis,
    /// Redis's SYNC (and `redis-cli --rdb`): an RDB file, then the commands.
    RedisSync,
    /// Redis's PSYNC: `+FULLRESYNC`, an RDB file, then the commands.
    RedisPsync,
}

/// Serves a full sync in the form the replica asked for, then the shards' command streams
/// (with a PING every 10 s for a Redis replica: its `repl-ping-replica-period`, without which
/// it gives up on a silent master).
async fn stream_to(
    stream: &mut TcpStream,
    shared: &Shared,
    images: Vec<(crate::fork::Child, std::path::PathBuf)>,
    streams: Vec<futures::channel::mpsc::UnboundedReceiver<Bytes>>,
    queued: &AtomicUsize,
    sent: &AtomicU64,
    format: SyncFormat,
) -> Result<(), String> {
    let count = |n: usize| {
        sent.fetch_add(n as u64, Ordering::Relaxed);
        shared.repl.offset.fetch_add(n as u64, Ordering::Relaxed);
    };
    let result = match format {
        SyncFormat::Rcodis => send_command_images(stream, shared, &images, &count).await,
        _ => send_rdb(stream, shared, &images, format).await,
    };
    for (child, path) in images {
        // A child still writing is stopped (one already reaped is left alone).
        if matches!(child.poll(), crate::fork::Exit::Running) {
            child.kill();
        }
        let _ = std::fs::remove_file(path);
    }
    result?;
    let ping = (format != SyncFormat::Rcodis).then(|| Duration::from_secs(10));
    forward(stream, streams, queued, &count, ping).await
}

/// rcodis's form: `+FULLRESYNC`, FLUSHALL, then each shard's image (commands) as soon as its
/// child has written it.
async fn send_command_images(
    stream: &mut TcpStream,
    shared: &Shared,
    images: &[(crate::fork::Child, std::path::PathBuf)],
    count: &dyn Fn(usize),
) -> Result<(), String> {
    let head = format!("+FULLRESYNC {} 0\r\n", shared.run_id);
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let flush = command(&[b"FLUSHALL"]);
    stream.write_all(&flush).await.map_err(|e| e.to_string())?;
    count(flush.len());
    for (child, path) in images {
        image_written(child).await?;
        send_file(stream, path, |chunk| count(chunk.len())).await?;
    }
    Ok(())
}

/// Redis's form, so a Redis replica (or `redis-cli --rdb`, or a tool that speaks the
/// replication protocol) can follow this server: `+FULLRESYNC <id> <offset>` for PSYNC, then
/// the shards' images as one RDB file (`$<length>`, the header, every shard's part, the footer
/// with the CRC-64 of it all).
async fn send_rdb(
    stream: &mut TcpStream,
    shared: &Shared,
    images: &[(crate::fork::Child, std::path::PathBuf)],
    format: SyncFormat,
) -> Result<(), String> {
    if format == SyncFormat::RedisPsync {
        let head = format!(
            "+FULLRESYNC {} {}\r\n",
            shared.run_id,
            shared.repl.offset.load(Ordering::Relaxed)
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
    }
    // The length comes first: every part must be written.
    for (child, _) in images {
        image_written(child).await?;
    }
    let header = crate::db::dump::rdb_header(
        &crate::cmd::function::library_codes(),
        crate::db::now_ms() / 1000,
    );
    let mut len = header.len() as u64 + 9;
    for (_, p) in images {
        len += std::fs::metadata(p).map_err(|e| e.to_string())?.len();
    }
    stream
        .write_all(format!("${len}\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    stream.write_all(&header).await.map_err(|e| e.to_string())?;
    let mut crc = crate::db::dump::crc64(0, &header);
    for (_, p) in images {
        send_file(stream, p, |chunk| crc = crate::db::dump::crc64(crc, chunk)).await?;
    }
    stream
        .write_all(&crate::db::dump::rdb_footer(crc))
        .await
        .map_err(|e| e.to_string())
}

/// Sends a file to the replica in 1 MiB pieces, showing each to `seen` first.
async fn send_file(
    stream: &mut TcpStream,
    path: &std::path::Path,
    mut seen: impl FnMut(&[u8]),
) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        seen(&buf[..n]);
        stream
            .write_all(&buf[..n])
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// Sends the shards' command streams to a replica as they come, with a PING after each
/// `ping` of silence when given, until the replica leaves or a shard detaches it.
async fn forward(
    stream: &mut TcpStream,
    streams: Vec<futures::channel::mpsc::UnboundedReceiver<Bytes>>,
    queued: &AtomicUsize,
    count: &dyn Fn(usize),
    ping: Option<Duration>,
) -> Result<(), String> {
    // Each shard's stream ends with a `None`: one shard detaching ends the link.
    let mut all = futures::stream::select_all(
        streams
            .into_iter()
            .map(|rx| rx.map(Some).chain(futures::stream::iter([None]))),
    );
    let mut tmp = vec![0u8; 4096];
    let mut next_ping = ping.map(|p| std::time::Instant::now() + p);
    loop {
        if let (Some(at), Some(p)) = (next_ping, ping) {
            if std::time::Instant::now() >= at {
                let cmd = command(&[b"PING"]);
                stream.write_all(&cmd).await.map_err(|e| e.to_string())?;
                count(cmd.len());
                next_ping = Some(std::time::Instant::now() + p);
            }
        }
        let read = stream.read(&mut tmp);
        futures::pin_mut!(read);
        let until = next_ping;
        let wake = async move {
            match until {
                Some(at) => {
                    glommio::timer::sleep(at.saturating_duration_since(std::time::Instant::now()))
                        .await
                }
                None => futures::future::pending::<()>().await,
            }
        };
        futures::pin_mut!(wake);
        let event =
            match futures::future::select(wake, futures::future::select(all.next(), read)).await {
                futures::future::Either::Left(_) => continue,
                futures::future::Either::Right((e, _)) => e,
            };
        match event {
            futures::future::Either::Left((Some(Some(chunk)), _)) => {
                queued.fetch_sub(chunk.len(), Ordering::Relaxed);
                stream.write_all(&chunk).await.map_err(|e| e.to_string())?;
                count(chunk.len());
                if let Some(p) = ping {
                    next_ping = Some(std::time::Instant::now() + p);
                }
            }
            // A shard dropped this replica (a global command or a full buffer).
            futures::future::Either::Left((Some(None) | None, _)) => {
                return Err("detached to resynchronise".into())
            }
            // The replica says nothing we need (REPLCONF ACK); end of stream: it left.
            futures::future::Either::Right((Ok(n), _)) if n > 0 => {}
            futures::future::Either::Right(_) => return Err("the replica closed".into()),
        }
    }
}
