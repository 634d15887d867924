//! Replication between rcodis-servers: a replica gets the master's data (every type, TTLs,
//! several databases, any shard counts), follows its writes, refuses its own, survives a
//! master restart and a FLUSHALL (full resync), authenticates with masterauth, and becomes
//! a master with REPLICAOF NO ONE.

use std::time::Duration;

use rcodis_core::resp::Frame;
use rcodis_tests::{normalize, text, wait_until, Conn, ServerProc};

fn bin() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_rcodis-server"))
}

fn authed(s: &ServerProc) -> Conn {
    let mut c = s.conn();
    assert_eq!(c.cmd(&["AUTH", "pw"]), Frame::simple("OK"));
    c
}

/// Every key of databases 0 and 2 with its type, value and whether it has a TTL.
fn dump_all(c: &mut Conn) -> Vec<(String, String, Frame, bool)> {
    let mut all = Vec::new();
    for db in ["0", "2"] {
        c.cmd(&["SELECT", db]);
        let Frame::Array(keys) = c.cmd(&["KEYS", "*"]) else {
            panic!("KEYS")
        };
        let mut keys: Vec<String> = keys.iter().map(text).collect();
        keys.sort();
        for k in keys {
            let t = text(&c.cmd(&["TYPE", &k]));
            let v = match t.as_str() {
                "string" => c.cmd(&["GET", &k]),
                "list" => c.cmd(&["LRANGE", &k, "0", "-1"]),
                "set" => normalize("smembers", c.cmd(&["SMEMBERS", &k])),
                "hash" => normalize("hgetall", c.cmd(&["HGETALL", &k])),
                "zset" => c.cmd(&["ZRANGE", &k, "0", "-1", "WITHSCORES"]),
                _ => Frame::Null,
            };
            let ttl = c.cmd(&["PTTL", &k]).as_integer().unwrap() > 0;
            all.push((format!("{db}:{k}"), t, v, ttl));
        }
    }
    c.cmd(&["SELECT", "0"]);
    all
}

fn converged(m: &mut Conn, r: &mut Conn) -> bool {
    dump_all(m) == dump_all(r)
}

fn info_field(c: &mut Conn, section: &str, field: &str) -> String {
    text(&c.cmd(&["INFO", section]))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_string))
        .unwrap_or_default()
}

#[test]
fn replica_follows_refuses_writes_and_resyncs() {
    let master = ServerProc::start(bin(), &["--threads", "2", "--requirepass", "pw"]);
    let mut m = authed(&master);
    // Data before the replica exists: every type, TTLs, two databases, one big hash.
    for db in ["0", "2"] {
        m.cmd(&["SELECT", db]);
        for i in 0..300 {
            m.cmd(&["SET", &format!("s{i}"), &format!("{db}-{i}")]);
        }
        m.cmd(&["RPUSH", "list", "a", "b", "c"]);
        m.cmd(&["SADD", "set", "x", "y"]);
        m.cmd(&["ZADD", "zset", "1.5", "m1", "2", "m2"]);
        m.cmd(&["SET", "ttl", "v", "EX", "1000"]);
        let mut h = vec!["HSET".to_string(), "bighash".to_string()];
        for i in 0..3000 {
            h.extend([format!("f{i}"), format!("v{i}")]);
        }
        m.cmd(&h);
    }
    m.cmd(&["SELECT", "0"]);
    let replica = ServerProc::start(
        bin(),
        &[
            "--threads",
            "1",
            "--masterauth",
            "pw",
            "--replicaof",
            &format!("127.0.0.1 {}", master.port),
        ],
    );
    let mut r = replica.conn();
    wait_until("the replica to sync", Duration::from_secs(30), || {
        converged(&mut m, &mut r)
    });
    assert_eq!(info_field(&mut r, "replication", "role"), "slave");
    assert_eq!(
        info_field(&mut r, "replication", "master_link_status"),
        "up"
    );
    assert_eq!(info_field(&mut m, "stats", "sync_full"), "1");
    assert_eq!(info_field(&mut m, "replication", "connected_slaves"), "1");
    let role = m.cmd(&["ROLE"]);
    assert!(
        matches!(&role, Frame::Array(v) if text(&v[0]) == "master"),
        "{role:?}"
    );
    // Writes follow: INCRs, deletes, expiry changes, list ops, a cross-shard MSET.
    for i in 0..200 {
        m.cmd(&["INCR", &format!("ctr{}", i % 7)]);
    }
    m.cmd(&["DEL", "s1", "s2"]);
    m.cmd(&["EXPIRE", "s3", "500"]);
    m.cmd(&["PERSIST", "ttl"]);
    m.cmd(&["LPOP", "list"]);
    m.cmd(&["MSET", "a{1}", "1", "b{2}", "2", "c{3}", "3"]);
    m.cmd(&["SELECT", "2"]);
    m.cmd(&["HDEL", "bighash", "f0", "f1"]);
    m.cmd(&["SELECT", "0"]);
    wait_until(
        "writes to reach the replica",
        Duration::from_secs(10),
        || converged(&mut m, &mut r),
    );
    assert_eq!(text(&r.cmd(&["GET", "ctr0"])), "29");
    // The replica refuses writes from clients, reads work.
    let e = r.cmd(&["SET", "mine", "1"]);
    assert_eq!(
        e,
        Frame::Error("READONLY You can't write against a read only replica.".into())
    );
    assert!(matches!(r.cmd(&["INCR", "ctr0"]), Frame::Error(_)));
    // FLUSHALL on the master: the replica resynchronises and follows again.
    m.cmd(&["FLUSHALL"]);
    m.cmd(&["SET", "after-flush", "yes"]);
    wait_until(
        "the replica to resync after FLUSHALL",
        Duration::from_secs(20),
        || converged(&mut m, &mut r),
    );
    assert_eq!(text(&r.cmd(&["GET", "after-flush"])), "yes");
    // The master goes away and comes back on the same port: the link recovers.
    let port = master.port;
    let ServerProc {
        proc, dir: keep, ..
    } = master;
    let dir = keep.path().to_path_buf();
    drop(m);
    drop(proc);
    wait_until("the link to go down", Duration::from_secs(10), || {
        info_field(&mut r, "replication", "master_link_status") == "down"
    });
    let mut cmd = std::process::Command::new(bin());
    cmd.args([
        "--port",
        &port.to_string(),
        "--threads",
        "2",
        "--requirepass",
        "pw",
    ])
    .arg("--dir")
    .arg(&dir);
    let _master2 = rcodis_tests::Process::spawn("rcodis-server", cmd);
    wait_until("the master to load", Duration::from_secs(30), || {
        matches!(
            rcodis_tests::try_ping_auth(port, Some("pw")),
            Some(Frame::Simple(_))
        )
    });
    let mut m2 = Conn::connect(port);
    assert_eq!(m2.cmd(&["AUTH", "pw"]), Frame::simple("OK"));
    assert_eq!(m2.cmd(&["SET", "reborn", "1"]), Frame::simple("OK"));
    wait_until(
        "the replica to follow the restarted master",
        Duration::from_secs(20),
        || converged(&mut m2, &mut r),
    );
    // REPLICAOF NO ONE: a master of its own, writable, keeps its data.
    assert_eq!(r.cmd(&["REPLICAOF", "NO", "ONE"]), Frame::simple("OK"));
    assert_eq!(r.cmd(&["SET", "mine", "1"]), Frame::simple("OK"));
    assert_eq!(text(&r.cmd(&["GET", "reborn"])), "1");
    assert_eq!(info_field(&mut r, "replication", "role"), "master");
    m2.cmd(&["SET", "not-followed", "1"]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.cmd(&["GET", "not-followed"]), Frame::NullBulk);
    // Bad input.
    assert!(matches!(
        r.cmd(&["REPLICAOF", "127.0.0.1", "notaport"]),
        Frame::Error(_)
    ));
}

/// Writers keep going while a replica does its full sync and after: once they stop, the
/// replica holds exactly the master's data (no write lost or applied twice between the
/// image and the stream that follows it).
#[test]
fn full_sync_under_writes() {
    let master = ServerProc::start(bin(), &["--threads", "2"]);
    let port = master.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(port);
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.cmd(&["INCR", &format!("ctr{t}:{}", i % 64)]);
                    c.cmd(&["RPUSH", &format!("list{t}:{}", i % 8), &i.to_string()]);
                    c.cmd(&[
                        "MSET",
                        &format!("a{t}:{}", i % 16),
                        &i.to_string(),
                        &format!("b{t}:{}", i % 16),
                        &i.to_string(),
                    ]);
                    i += 1;
                }
                i
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let replica = ServerProc::start(
        bin(),
        &[
            "--threads",
            "1",
            "--replicaof",
            &format!("127.0.0.1:{port}"),
        ],
    );
    let mut r = replica.conn();
    wait_until("the link to come up", Duration::from_secs(20), || {
        info_field(&mut r, "replication", "master_link_status") == "up"
    });
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let done: Vec<u64> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(done.iter().all(|n| *n > 0));
    let mut m = master.conn();
    wait_until("the replica to converge", Duration::from_secs(20), || {
        converged(&mut m, &mut r)
    });
    // Each writer's counters add up to its number of rounds, on the replica too.
    for (t, n) in done.iter().enumerate() {
        let sum: u64 = (0..64)
            .map(|k| {
                let v = r.cmd(&["GET", &format!("ctr{t}:{k}")]);
                if v == Frame::NullBulk {
                    0
                } else {
                    text(&v).parse::<u64>().unwrap()
                }
            })
            .sum();
        assert_eq!(sum, *n, "writer {t}");
    }
}

/// Fills a master with every type, TTLs, a stream, a HyperLogLog and a function library,
/// in databases 0 and 2.
fn fill_every_type(m: &mut Conn) {
    for db in ["0", "2"] {
        m.cmd(&["SELECT", db]);
        for i in 0..200 {
            m.cmd(&["SET", &format!("s{i}"), &format!("{db}-{i}")]);
        }
        m.cmd(&["SET", "int", "12345"]);
        m.cmd(&["RPUSH", "list", "a", "b", "c"]);
        m.cmd(&["SADD", "set", "x", "y"]);
        m.cmd(&["SADD", "intset", "1", "2", "300"]);
        m.cmd(&["ZADD", "zset", "1.5", "m1", "2", "m2"]);
        m.cmd(&["HSET", "hash", "f", "v", "g", "w"]);
        m.cmd(&["SET", "ttl", "v", "EX", "1000"]);
        m.cmd(&["XADD", "stream", "1-1", "f", "v"]);
        m.cmd(&["PFADD", "hll", "a", "b", "c"]);
    }
    m.cmd(&["SELECT", "0"]);
    m.cmd(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=lib\nredis.register_function{function_name='f', callback=function() return 7 end, flags={'no-writes'}}",
    ]);
}

/// A Redis replica (Debian's redis-server, `replicaof` an rcodis-server) gets the data as an
/// RDB file, then follows the writes; `redis-cli --rdb` takes a backup redis-server loads.
#[test]
fn redis_replicas_and_rdb_backups_follow_an_rcodis_master() {
    let master = ServerProc::start(bin(), &["--threads", "2", "--requirepass", "pw"]);
    let mut m = authed(&master);
    fill_every_type(&mut m);
    let replica = rcodis_tests::RedisRef::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &master.port.to_string(),
        "--masterauth",
        "pw",
    ]);
    let mut r = Conn::connect(replica.port);
    wait_until("the Redis replica to sync", Duration::from_secs(30), || {
        info_field(&mut r, "replication", "master_link_status") == "up" && converged(&mut m, &mut r)
    });
    for c in [
        &["XRANGE", "stream", "-", "+"][..],
        &["PFCOUNT", "hll"],
        &["FCALL_RO", "f", "0"],
        &["OBJECT", "ENCODING", "intset"],
    ] {
        assert_eq!(m.cmd(c), r.cmd(c), "{c:?}");
    }
    // Writes follow, in both databases, with expiry changes and deletions.
    for i in 0..100 {
        m.cmd(&["INCR", &format!("ctr{}", i % 7)]);
    }
    m.cmd(&["DEL", "s1", "s2"]);
    m.cmd(&["EXPIRE", "s3", "500"]);
    m.cmd(&["PERSIST", "ttl"]);
    m.cmd(&["MSET", "a{1}", "1", "b{2}", "2", "c{3}", "3"]);
    m.cmd(&["SELECT", "2"]);
    m.cmd(&["LPOP", "list"]);
    m.cmd(&["SELECT", "0"]);
    m.cmd(&["XADD", "stream", "2-1", "g", "w"]);
    wait_until(
        "the Redis replica to follow",
        Duration::from_secs(30),
        || converged(&mut m, &mut r),
    );
    let c = &["XRANGE", "stream", "-", "+"];
    assert_eq!(m.cmd(c), r.cmd(c));

    // A backup with redis-cli --rdb, loaded by redis-server.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.rdb");
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &master.port.to_string(),
            "-a",
            "pw",
            "--no-auth-warning",
        ])
        .arg("--rdb")
        .arg(&file)
        .output()
        .expect("redis-cli (install Debian's redis-tools)");
    assert!(out.status.success(), "{out:?}");
    let loaded = rcodis_tests::RedisRef::start_with(&[
        "--dir",
        dir.path().to_str().unwrap(),
        "--dbfilename",
        "backup.rdb",
    ]);
    let mut l = Conn::connect(loaded.port);
    assert_eq!(dump_all(&mut m), dump_all(&mut l));
    assert_eq!(l.cmd(&["FCALL", "f", "0"]), Frame::Integer(7));
}
