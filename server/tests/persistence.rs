//! The append-only log: data, databases and TTLs survive kill -9 (appendfsync always) and a
//! clean SIGTERM (everysec); a torn tail is cut off with a warning; damage elsewhere stops
//! start-up with the file and offset (and --aof-repair loads up to it); a changed shard
//! count and BGREWRITEAOF keep everything.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcodis_core::resp::Frame;
use rcodis_tests::{free_port, normalize, text, wait_until, Conn, Process};

const BIN: &str = env!("CARGO_BIN_EXE_rcodis-server");

struct Srv {
    port: u16,
    proc: Process,
}

fn start(dir: &Path, args: &[&str]) -> Srv {
    let mut cmd = Command::new(BIN);
    cmd.args(["--port", "0", "--appendonly", "yes"])
        .arg("--dir")
        .arg(dir)
        .args(args);
    let (proc, port) = rcodis_tests::spawn_on_free_port("rcodis-server", cmd);
    rcodis_tests::wait_loaded(port);
    Srv { port, proc }
}

fn fill(c: &mut Conn) {
    for db in ["0", "5"] {
        c.cmd(&["SELECT", db]);
        c.cmd(&["SET", "str", "v", "EX", "1000"]);
        c.cmd(&["SET", "plain", db]);
        c.cmd(&["RPUSH", "list", "a", "b", "c"]);
        c.cmd(&["LPOP", "list"]);
        c.cmd(&["HSET", "hash", "f", "1", "g", "2"]);
        c.cmd(&["HINCRBY", "hash", "f", "41"]);
        c.cmd(&["SADD", "set", "x", "y", "z"]);
        c.cmd(&["SPOP", "set"]);
        c.cmd(&["ZADD", "zset", "1.5", "m", "-2", "n"]);
        c.cmd(&["ZINCRBY", "zset", "1", "n"]);
        c.cmd(&["EXPIRE", "hash", "2000"]);
        c.cmd(&["MSET", "{t}a", "1", "{t}b", "2", "c1", "3", "c2", "4"]);
        c.cmd(&["RENAME", "c1", "c1-renamed"]);
        c.cmd(&["INCRBYFLOAT", "float", "1.25"]);
        c.cmd(&["SET", "gone", "x", "PX", "1"]);
        c.cmd(&["DEL", "{t}b"]);
        // A stream written the ways whose outcome depends on the moment: generated IDs,
        // approximate trims, deliveries and claims (logged as what they did).
        for i in 0..150 {
            c.cmd(&[
                "XADD",
                "stream",
                "MAXLEN",
                "~",
                "40",
                "*",
                "n",
                &i.to_string(),
            ]);
        }
        c.cmd(&["XGROUP", "CREATE", "stream", "g", "0"]);
        c.cmd(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "COUNT",
            "5",
            "STREAMS",
            "stream",
            ">",
        ]);
        let first = match c.cmd(&["XRANGE", "stream", "-", "+", "COUNT", "1"]) {
            Frame::Array(a) => a[0].as_array().unwrap()[0].clone(),
            other => panic!("{other:?}"),
        };
        let first = text(&first);
        c.cmd(&["XCLAIM", "stream", "g", "bob", "0", &first]);
        c.cmd(&[
            "XAUTOCLAIM",
            "stream",
            "g",
            "carol",
            "0",
            "0-0",
            "COUNT",
            "2",
        ]);
        c.cmd(&["XACK", "stream", "g", &first]);
        c.cmd(&["XTRIM", "stream", "MAXLEN", "~", "20"]);
        c.cmd(&["XDEL", "stream", &first]);
        // Nodes of 100 entries: the first went whole at 140 entries (40 kept), 10 more
        // came, one was deleted, and "~ 20" cannot drop the 49-entry node.
        let len = c.cmd(&["XLEN", "stream"]).as_integer().unwrap();
        assert_eq!(len, 49, "stream length");
    }
    c.cmd(&["SELECT", "0"]);
}

const KEYS: &[&str] = &[
    "str",
    "plain",
    "list",
    "hash",
    "set",
    "zset",
    "{t}a",
    "{t}b",
    "c1",
    "c1-renamed",
    "c2",
    "float",
    "gone",
    "stream",
];

fn snapshot(c: &mut Conn) -> Vec<(String, Frame, i64)> {
    let mut v = Vec::new();
    for db in ["0", "5"] {
        c.cmd(&["SELECT", db]);
        for k in KEYS {
            let t = text(&c.cmd(&["TYPE", k]));
            let val = match t.as_str() {
                "none" => Frame::Null,
                "string" => c.cmd(&["GET", k]),
                "list" => c.cmd(&["LRANGE", k, "0", "-1"]),
                "set" => normalize("smembers", c.cmd(&["SMEMBERS", k])),
                "hash" => normalize("hgetall", c.cmd(&["HGETALL", k])),
                "stream" => {
                    // Entries, metadata (not the node counts: a rewritten log or a snapshot
                    // lays the entries out afresh), groups and who holds what.
                    let info = match c.cmd(&["XINFO", "STREAM", k]) {
                        Frame::Array(a) => a
                            .chunks(2)
                            .filter(|p| !text(&p[0]).starts_with("radix"))
                            .flat_map(|p| p.to_vec())
                            .collect(),
                        other => panic!("{other:?}"),
                    };
                    Frame::Array(vec![
                        c.cmd(&["XRANGE", k, "-", "+"]),
                        Frame::Array(info),
                        c.cmd(&["XINFO", "GROUPS", k]),
                        c.cmd(&["XPENDING", k, "g"]),
                        c.cmd(&["XPENDING", k, "g", "-", "+", "100", "carol"])
                            .map_idle(),
                    ])
                }
                _ => c.cmd(&["ZRANGE", k, "0", "-1", "WITHSCORES"]),
            };
            let ttl = c.cmd(&["TTL", k]).as_integer().unwrap();
            // TTLs are compared in 10-second buckets (time passes between the snapshots).
            v.push((
                format!("{db}/{k}/{t}"),
                val,
                if ttl > 0 { ttl / 10 } else { ttl },
            ));
        }
    }
    c.cmd(&["SELECT", "0"]);
    v
}

/// XPENDING's extended rows with the idle time (which moves) zeroed.
trait MapIdle {
    fn map_idle(self) -> Frame;
}

impl MapIdle for Frame {
    fn map_idle(self) -> Frame {
        match self {
            Frame::Array(rows) => Frame::Array(
                rows.into_iter()
                    .map(|r| match r {
                        Frame::Array(mut f) if f.len() == 4 => {
                            f[2] = Frame::Integer(0);
                            Frame::Array(f)
                        }
                        other => other,
                    })
                    .collect(),
            ),
            other => other,
        }
    }
}

#[test]
fn kill_9_with_always_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--threads", "2", "--appendfsync", "always"]);
    let mut c = Conn::connect(s.port);
    fill(&mut c);
    let before = snapshot(&mut c);
    s.proc.signal("KILL");
    drop(s);
    let s = start(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    assert_eq!(snapshot(&mut c), before);
    // Expired keys stay expired.
    assert_eq!(c.cmd(&["EXISTS", "gone"]), Frame::Integer(0));
}

#[test]
fn sigterm_with_everysec_and_a_new_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--threads", "2", "--appendfsync", "everysec"]);
    let mut c = Conn::connect(s.port);
    fill(&mut c);
    let before = snapshot(&mut c);
    s.proc.signal("TERM");
    let mut s = s;
    wait_until("server to exit", Duration::from_secs(15), || {
        s.proc.exited()
    });
    // Restart with one shard: the two logs replay into it and are rewritten.
    let s = start(dir.path(), &["--threads", "1"]);
    let mut c = Conn::connect(s.port);
    assert_eq!(snapshot(&mut c), before);
    assert!(
        !dir.path().join("rcodis-shard-1.aof").exists(),
        "old shard log removed after the re-layout"
    );
    // BGREWRITEAOF compacts; a restart after it still has everything.
    assert_eq!(
        c.cmd(&["BGREWRITEAOF"]),
        Frame::simple("Background append only file rewriting started")
    );
    c.cmd(&["SET", "after-rewrite", "1"]);
    s.proc.signal("KILL");
    drop(s);
    let s = start(dir.path(), &["--threads", "2", "--appendfsync", "always"]);
    let mut c = Conn::connect(s.port);
    assert_eq!(snapshot(&mut c), before);
    assert_eq!(text(&c.cmd(&["GET", "after-rewrite"])), "1");
}

#[test]
fn torn_tail_is_cut_and_damage_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--threads", "1", "--appendfsync", "always"]);
    let mut c = Conn::connect(s.port);
    for i in 0..20 {
        c.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    s.proc.signal("KILL");
    drop(s);
    let log = dir.path().join("rcodis-shard-0.aof");
    let good_len = std::fs::metadata(&log).unwrap().len();
    // A crash mid-write: half a record at the end.
    let mut data = std::fs::read(&log).unwrap();
    data.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$2\r\nk9");
    std::fs::write(&log, &data).unwrap();
    let s = start(dir.path(), &["--threads", "1"]);
    let mut c = Conn::connect(s.port);
    assert_eq!(c.cmd(&["DBSIZE"]), Frame::Integer(20));
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        good_len,
        "torn tail truncated"
    );
    drop(s);
    // Damage in the middle: start-up refuses, naming the file and the offset.
    let mut data = std::fs::read(&log).unwrap();
    let mid = data.len() / 2;
    let pos = mid + data[mid..].iter().position(|&b| b == b'*').unwrap();
    data[pos] = b'!';
    std::fs::write(&log, &data).unwrap();
    let port = free_port().to_string();
    let mut child = Command::new(BIN)
        .args([
            "--port",
            &port,
            "--appendonly",
            "yes",
            "--threads",
            "1",
            "--dir",
        ])
        .arg(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("server started on a damaged log instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("rcodis-shard-0.aof") && err.contains(&format!("offset {pos}")),
        "{err}"
    );
    // --aof-repair keeps everything before the damage.
    let s = start(dir.path(), &["--threads", "1", "--aof-repair"]);
    let n = Conn::connect(s.port).cmd(&["DBSIZE"]).as_integer().unwrap();
    assert!((1..20).contains(&n), "{n} keys kept");
}

fn start_plain(dir: &Path, args: &[&str]) -> Srv {
    let mut cmd = Command::new(BIN);
    cmd.args(["--port", "0"]).arg("--dir").arg(dir).args(args);
    let (proc, port) = rcodis_tests::spawn_on_free_port("rcodis-server", cmd);
    rcodis_tests::wait_loaded(port);
    Srv { port, proc }
}

#[test]
fn save_snapshot_survives_kill_9_without_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_plain(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    fill(&mut c);
    let before = snapshot(&mut c);
    let last = c.cmd(&["LASTSAVE"]).as_integer().unwrap();
    assert_eq!(c.cmd(&["SAVE"]), Frame::simple("OK"));
    assert!(c.cmd(&["LASTSAVE"]).as_integer().unwrap() >= last);
    assert!(text(&c.cmd(&["INFO", "persistence"])).contains("rdb_changes_since_last_save:0"));
    s.proc.signal("KILL");
    drop(s);
    let s = start_plain(dir.path(), &["--threads", "1"]);
    let mut c = Conn::connect(s.port);
    assert_eq!(snapshot(&mut c), before);
}

#[test]
fn bgsave_during_writes_loses_nothing_acknowledged_with_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--threads", "2", "--appendfsync", "always"]);
    let port = s.port;
    let writer = std::thread::spawn(move || {
        let mut c = Conn::connect(port);
        let mut acked = 0;
        for i in 0..3000 {
            if c.cmd(&["SET", &format!("w{i}"), &i.to_string()]) == Frame::simple("OK") {
                acked = i + 1;
            }
        }
        acked
    });
    let mut c = Conn::connect(s.port);
    wait_until("the writer to start", Duration::from_secs(10), || {
        c.cmd(&["DBSIZE"]).as_integer().unwrap() > 100
    });
    assert_eq!(
        c.cmd(&["BGSAVE"]),
        Frame::simple("Background saving started")
    );
    let acked = writer.join().unwrap();
    wait_until("bgsave to finish", Duration::from_secs(20), || {
        text(&c.cmd(&["INFO", "persistence"])).contains("rdb_bgsave_in_progress:0")
    });
    assert!(dir.path().join("rcodis-shard-0.snap").exists());
    s.proc.signal("KILL");
    drop(s);
    let s = start(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    for i in (0..acked).step_by(7) {
        assert_eq!(
            text(&c.cmd(&["GET", &format!("w{i}")])),
            i.to_string(),
            "acknowledged w{i} missing"
        );
    }
    assert_eq!(c.cmd(&["DBSIZE"]).as_integer().unwrap(), acked as i64);
}

#[test]
fn save_rules_trigger_background_saves() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_plain(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "save", "1 1"]),
        Frame::simple("OK")
    );
    c.cmd(&["SET", "x", "1"]);
    wait_until("a save rule to fire", Duration::from_secs(15), || {
        dir.path().join("rcodis-shard-0.snap").exists()
            && dir.path().join("rcodis-shard-1.snap").exists()
    });
    wait_until("dirty counter reset", Duration::from_secs(15), || {
        text(&c.cmd(&["INFO", "persistence"])).contains("rdb_changes_since_last_save:0")
    });
    // SHUTDOWN SAVE writes a final snapshot; the data is back after a restart.
    c.cmd(&["SET", "y", "2"]);
    c.send(&["SHUTDOWN", "SAVE"]);
    let mut s = s;
    wait_until("server to exit", Duration::from_secs(15), || {
        s.proc.exited()
    });
    let s = start_plain(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    assert_eq!(text(&c.cmd(&["GET", "y"])), "2");
}

#[test]
fn debug_reload_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_plain(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    fill(&mut c);
    let before = snapshot(&mut c);
    assert_eq!(c.cmd(&["DEBUG", "RELOAD"]), Frame::simple("OK"));
    assert_eq!(snapshot(&mut c), before);
}

/// Starts without waiting for the data to be loaded.
fn start_loading(dir: &Path, args: &[&str]) -> Srv {
    let mut cmd = Command::new(BIN);
    cmd.args(["--port", "0", "--appendonly", "yes"])
        .arg("--dir")
        .arg(dir)
        .args(args);
    let (proc, port) = rcodis_tests::spawn_on_free_port("rcodis-server", cmd);
    Srv { port, proc }
}

#[test]
fn commands_get_loading_until_the_data_is_in() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    for i in 0..3000 {
        c.send(&["SET".to_string(), format!("k{i}"), i.to_string()]);
    }
    for _ in 0..3000 {
        assert_eq!(c.read(), Some(Frame::simple("OK")));
    }
    s.proc.signal("TERM");
    let mut s = s;
    wait_until("server to exit", Duration::from_secs(15), || {
        s.proc.exited()
    });
    // 3000 records at 1 ms each: loading takes at least 3 s.
    let s = start_loading(dir.path(), &["--threads", "2", "--key-load-delay", "1000"]);
    let mut c = Conn::connect(s.port);
    let loading = "LOADING Redis is loading the dataset in memory";
    assert_eq!(c.cmd(&["PING"]), Frame::Error(loading.into()));
    assert_eq!(c.cmd(&["GET", "k1"]), Frame::Error(loading.into()));
    let info = text(&c.cmd(&["INFO", "persistence"]));
    assert!(info.contains("loading:1"), "{info}");
    assert!(info.contains("loading_total_records:"), "{info}");
    assert_eq!(c.cmd(&["SELECT", "0"]), Frame::simple("OK"));
    rcodis_tests::wait_loaded(s.port);
    assert!(text(&c.cmd(&["INFO", "persistence"])).contains("loading:0"));
    assert_eq!(c.cmd(&["DBSIZE"]), Frame::Integer(3000));
    assert_eq!(text(&c.cmd(&["GET", "k2999"])), "2999");
}

#[test]
fn background_rewrite_during_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--threads", "2", "--appendfsync", "always"]);
    let port = s.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    // Non-idempotent writes (INCR, RPUSH) would show any record applied twice or lost.
    let writer = std::thread::spawn(move || {
        let mut c = Conn::connect(port);
        let mut acked = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) || acked < 2000 {
            let i = acked;
            let ok = c.cmd(&["SET", &format!("w{i}"), &i.to_string()]) == Frame::simple("OK")
                && c.cmd(&["INCR", "counter"]) == Frame::Integer(i as i64 + 1)
                && c.cmd(&["RPUSH", "{l}list", &i.to_string()]) == Frame::Integer(i as i64 + 1);
            assert!(ok, "write {i} failed");
            acked += 1;
        }
        acked
    });
    let mut c = Conn::connect(s.port);
    wait_until("the writer to start", Duration::from_secs(10), || {
        c.cmd(&["DBSIZE"]).as_integer().unwrap() > 300
    });
    assert_eq!(
        c.cmd(&["BGREWRITEAOF"]),
        Frame::simple("Background append only file rewriting started")
    );
    wait_until("the rewrite to finish", Duration::from_secs(30), || {
        text(&c.cmd(&["INFO", "persistence"])).contains("aof_rewrite_in_progress:0")
    });
    let info = text(&c.cmd(&["INFO", "persistence"]));
    assert!(info.contains("aof_last_bgrewrite_status:ok"), "{info}");
    assert!(text(&c.cmd(&["INFO", "stats"])).contains("total_forks:2"));
    // The rewritten logs hold images (RESTORE), not the original commands, at their start.
    for shard in 0..2 {
        let log = std::fs::read(dir.path().join(format!("rcodis-shard-{shard}.aof"))).unwrap();
        let head = String::from_utf8_lossy(&log[..log.len().min(200)]).to_string();
        assert!(
            head.contains("RESTORE"),
            "shard {shard} log starts with {head:?}"
        );
        assert!(!dir
            .path()
            .join(format!("rcodis-shard-{shard}.aof.rewrite"))
            .exists());
    }
    // Keep writing after the switch, then crash.
    let after = c.cmd(&["DBSIZE"]).as_integer().unwrap();
    wait_until("writes after the rewrite", Duration::from_secs(10), || {
        c.cmd(&["DBSIZE"]).as_integer().unwrap() > after + 200
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    s.proc.signal("KILL");
    drop(s);
    let s = start(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    assert_eq!(text(&c.cmd(&["GET", "counter"])), acked.to_string());
    assert_eq!(c.cmd(&["LLEN", "{l}list"]), Frame::Integer(acked as i64));
    assert_eq!(c.cmd(&["DBSIZE"]), Frame::Integer(acked as i64 + 2));
    for i in (0..acked).step_by(11) {
        assert_eq!(text(&c.cmd(&["GET", &format!("w{i}")])), i.to_string());
        assert_eq!(
            text(&c.cmd(&["LINDEX", "{l}list", &i.to_string()])),
            i.to_string()
        );
    }
}

#[test]
fn everysec_loses_at_most_about_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--threads", "2", "--appendfsync", "everysec"]);
    let port = s.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let mut c = Conn::connect(port);
        let mut acks = Vec::new();
        let mut i = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            if c.cmd(&["SET", &format!("e{i}"), "v"]) == Frame::simple("OK") {
                acks.push((i, std::time::Instant::now()));
            }
            i += 1;
        }
        acks
    });
    let mut c = Conn::connect(s.port);
    wait_until("the writer to start", Duration::from_secs(20), || {
        c.cmd(&["DBSIZE"]).as_integer().unwrap() > 1000
    });
    let t0 = std::time::Instant::now();
    wait_until("two seconds of writes", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(50));
        t0.elapsed() >= Duration::from_secs(2)
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acks = writer.join().unwrap();
    s.proc.signal("KILL");
    let killed = std::time::Instant::now();
    drop(s);
    let s = start(dir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(s.port);
    let mut lost = 0;
    for &(i, at) in &acks {
        let present = c.cmd(&["EXISTS", &format!("e{i}")]) == Frame::Integer(1);
        if !present {
            lost += 1;
            assert!(
                killed.duration_since(at) < Duration::from_millis(1500),
                "e{i}, acknowledged {:?} before the kill, is lost",
                killed.duration_since(at)
            );
        }
    }
    eprintln!("{} writes acknowledged, {lost} lost", acks.len());
}

/// The same commands, with nothing left to chance (no SPOP, no generated stream IDs), for
/// comparing digests with redis-server.
fn fill_fixed(c: &mut Conn) {
    for db in ["0", "3"] {
        c.cmd(&["SELECT", db]);
        c.cmd(&["SET", "str", "v", "EX", "1000"]);
        c.cmd(&["SET", "int", "12345"]);
        c.cmd(&["RPUSH", "list", "a", "b", "7", "c"]);
        c.cmd(&["HSET", "hash", "f", "1", "g", "two", "h", "3"]);
        c.cmd(&["HDEL", "hash", "g"]);
        c.cmd(&["SADD", "ints", "5", "3", "100", "-1"]);
        c.cmd(&["SADD", "set", "x", "y", "z", "1"]);
        c.cmd(&[
            "ZADD", "zset", "1.5", "m", "0.1", "n", "-3", "o", "inf", "p",
        ]);
        for i in 1..=300 {
            c.cmd(&["ZADD", "bigz", &i.to_string(), &format!("m{i}")]);
            c.cmd(&["HSET", "bigh", &format!("f{i}"), &i.to_string()]);
        }
        c.cmd(&["XADD", "stream", "1-1", "a", "1", "b", "2"]);
        c.cmd(&["XADD", "stream", "5-0", "c", "3"]);
        c.cmd(&["XADD", "stream", "6-0", "d", "4"]);
        c.cmd(&["XDEL", "stream", "5-0"]);
        c.cmd(&["XGROUP", "CREATE", "stream", "g", "0"]);
    }
    c.cmd(&["SELECT", "0"]);
}

fn digests(c: &mut Conn) -> (String, Frame) {
    let all = text(&c.cmd(&["DEBUG", "DIGEST"]));
    let each = c.cmd(&[
        "DEBUG",
        "DIGEST-VALUE",
        "str",
        "int",
        "list",
        "hash",
        "ints",
        "set",
        "zset",
        "bigz",
        "bigh",
        "stream",
        "missing",
    ]);
    (all, each)
}

#[test]
fn debug_digest_matches_redis_and_survives_loadaof() {
    let redis = rcodis_tests::RedisRef::start_with(&["--enable-debug-command", "yes"]);
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), &["--threads", "2"]);
    let mut ours = Conn::connect(s.port);
    let mut theirs = Conn::connect(redis.port);
    let empty = "0".repeat(40);
    assert_eq!(text(&ours.cmd(&["DEBUG", "DIGEST"])), empty);
    fill_fixed(&mut ours);
    fill_fixed(&mut theirs);
    let reference = digests(&mut theirs);
    assert_ne!(reference.0, empty);
    // Redis's own algorithm: the same data gives the same digest, over two shards too.
    assert_eq!(digests(&mut ours), reference);

    // DEBUG LOADAOF empties the data and loads it back from the logs, logging nothing.
    let log_size = |d: &Path| -> u64 {
        std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".aof"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    let size = log_size(dir.path());
    assert_eq!(ours.cmd(&["DEBUG", "LOADAOF"]), Frame::simple("OK"));
    assert_eq!(digests(&mut ours), reference);
    assert_eq!(log_size(dir.path()), size);
    assert_eq!(ours.cmd(&["DEBUG", "RELOAD"]), Frame::simple("OK"));
    assert_eq!(digests(&mut ours), reference);

    // Any change shows; putting it back restores the digest.
    ours.cmd(&["RPUSH", "list", "d"]);
    assert_ne!(digests(&mut ours).0, reference.0);
    ours.cmd(&["RPOP", "list"]);
    assert_eq!(digests(&mut ours).0, reference.0);
    ours.cmd(&["PERSIST", "str"]);
    assert_ne!(digests(&mut ours), reference);

    // Without a log there is nothing to load: an error, and the data stays.
    let other = tempfile::tempdir().unwrap();
    let plain = start_plain(other.path(), &[]);
    let mut p = Conn::connect(plain.port);
    p.cmd(&["SET", "k", "v"]);
    let r = p.cmd(&["DEBUG", "LOADAOF"]);
    assert!(
        matches!(&r, Frame::Error(_)) && text(&r).contains("appendonly"),
        "{r:?}"
    );
    assert_eq!(text(&p.cmd(&["GET", "k"])), "v");
}
