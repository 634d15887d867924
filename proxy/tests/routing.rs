//! rcodis-proxy in front of two rcodis-servers (two groups), with the topology in the
//! embedded file coordinator: routing by slot, split commands, CROSSSLOT, proxy-local
//! commands, refusals, fan-out, SCAN over the cluster, a topology change, a dead backend.

use std::process::Command;
use std::time::Duration;

use rcodis_core::coord::{layout, Coordinator, FileCoordinator};
use rcodis_core::resp::Frame;
use rcodis_core::slot::slot_of;
use rcodis_core::topology::Topology;
use rcodis_tests::{bin_path, http, text, wait_until, Conn, Process, ServerProc};

struct Cluster {
    servers: Vec<ServerProc>,
    proxy: Process,
    port: u16,
    coord_dir: tempfile::TempDir,
}

fn put_topology(dir: &std::path::Path, t: &Topology) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = FileCoordinator::open(dir).unwrap();
        c.put(&layout::topology_key("test"), &t.to_json())
            .await
            .unwrap();
    });
}

fn start() -> Cluster {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> Cluster {
    let server_bin = bin_path("rcodis-server");
    let servers: Vec<ServerProc> = (0..2)
        .map(|_| ServerProc::start(&server_bin, &["--threads", "1"]))
        .collect();
    let coord_dir = tempfile::tempdir().unwrap();
    put_topology(
        coord_dir.path(),
        &rcodis_tests::topology(&[servers[0].port, servers[1].port], 512, 1),
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rcodis-proxy"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--product",
        "test",
        "--admin",
        "127.0.0.1:0",
    ])
    .args(extra)
    .arg("--coordinator")
    .arg(format!("file://{}", coord_dir.path().display()));
    let (proxy, port) = rcodis_tests::spawn_on_free_port("rcodis-proxy", cmd);
    Cluster {
        servers,
        proxy,
        port,
        coord_dir,
    }
}

#[test]
fn routes_splits_and_refuses() {
    let c = start();
    let mut p = Conn::connect(c.port);
    let mut g1 = c.servers[0].conn();
    let mut g2 = c.servers[1].conn();
    // "a" → slot 579 (group 2), "{x}" keys: pick by slot.
    assert_eq!(p.cmd(&["SET", "a", "1"]), Frame::simple("OK"));
    assert_eq!(text(&g2.cmd(&["GET", "a"])), "1");
    assert_eq!(g1.cmd(&["EXISTS", "a"]), Frame::Integer(0));
    let low = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| slot_of(k.as_bytes()) < 512)
        .unwrap();
    assert_eq!(p.cmd(&["SET", &low, "2"]), Frame::simple("OK"));
    assert_eq!(text(&g1.cmd(&["GET", &low])), "2");
    // Split commands merge in request order.
    assert_eq!(
        p.cmd(&["MSET", "a", "10", &low, "20", "c", "30"]),
        Frame::simple("OK")
    );
    assert_eq!(
        p.cmd(&["MGET", &low, "nope", "a", "c"]),
        Frame::Array(vec![
            Frame::bulk("20"),
            Frame::NullBulk,
            Frame::bulk("10"),
            Frame::bulk("30")
        ])
    );
    assert_eq!(
        p.cmd(&["EXISTS", "a", &low, "nope", "a"]),
        Frame::Integer(3)
    );
    assert_eq!(p.cmd(&["DBSIZE"]), Frame::Integer(3));
    assert_eq!(p.cmd(&["DEL", "a", &low, "nope"]), Frame::Integer(2));
    // Same-slot-only commands.
    assert_eq!(
        text(&p.cmd(&["RENAME", "c", "d"])),
        "CROSSSLOT Keys in request don't hash to the same slot"
    );
    p.cmd(&["SET", "{t}a", "v"]);
    assert_eq!(p.cmd(&["RENAME", "{t}a", "{t}b"]), Frame::simple("OK"));
    assert_eq!(text(&p.cmd(&["GET", "{t}b"])), "v");
    // Proxy-local commands and refusals keep the connection open.
    assert_eq!(p.cmd(&["PING"]), Frame::simple("PONG"));
    assert_eq!(text(&p.cmd(&["ECHO", "hi"])), "hi");
    assert_eq!(
        text(&p.cmd(&["DEBUG", "SLEEP", "0"])),
        "ERR command 'debug' is not allowed"
    );
    assert_eq!(
        text(&p.cmd(&["SLOTSINFO"])),
        "ERR command 'slotsinfo' is not allowed"
    );
    assert_eq!(
        text(&p.cmd(&["nosuch"])),
        "ERR unknown command 'nosuch', with args beginning with: "
    );
    assert_eq!(
        text(&p.cmd(&["GET"])),
        "ERR wrong number of arguments for 'get' command"
    );
    let info = text(&p.cmd(&["INFO"]));
    assert!(
        info.contains("redis_version:7.0.15")
            && info.contains("cluster_enabled:0")
            && info.contains("slot_table_epoch:1")
    );
    // The Server section has the fields a server's has (clients parse some of them).
    let names = |t: String| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.to_string()))
            .collect()
    };
    assert_eq!(
        names(text(&p.cmd(&["INFO", "server"]))),
        names(text(&g1.cmd(&["INFO", "server"])))
    );
    // SELECT is per session and reaches the backends.
    assert_eq!(p.cmd(&["SELECT", "5"]), Frame::simple("OK"));
    p.cmd(&["SET", "indb5", "x"]);
    g1.cmd(&["SELECT", "5"]);
    g2.cmd(&["SELECT", "5"]);
    let in_g1 = g1.cmd(&["EXISTS", "indb5"]).as_integer().unwrap();
    let in_g2 = g2.cmd(&["EXISTS", "indb5"]).as_integer().unwrap();
    assert_eq!(in_g1 + in_g2, 1);
    assert_eq!(
        text(&p.cmd(&["SELECT", "16"])),
        "ERR DB index is out of range"
    );
    p.cmd(&["SELECT", "0"]);
    // SCAN over the whole cluster returns every key exactly once.
    for i in 0..200 {
        p.cmd(&["SET", &format!("scan:{i}"), "v"]);
    }
    let mut seen = std::collections::HashSet::new();
    let mut cursor = "0".to_string();
    loop {
        let r = p.cmd(&["SCAN", &cursor, "MATCH", "scan:*", "COUNT", "17"]);
        let v = r.as_array().unwrap_or_else(|| panic!("{r:?}"));
        cursor = text(&v[0]);
        for k in v[1].as_array().unwrap() {
            assert!(seen.insert(text(k)), "duplicate {k:?}");
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 200);
    // Cursors are read as Redis reads them: not a number is an error; a number past the last
    // group is an iteration that has ended (-1 wraps around, as in Redis).
    for bad in ["x", "1x", " 1", "18446744073709551616"] {
        assert_eq!(
            p.cmd(&["SCAN", bad]),
            Frame::Error("ERR invalid cursor".into()),
            "{bad:?}"
        );
    }
    for ended in ["-1", "18446744073709551615", "1023"] {
        assert_eq!(
            p.cmd(&["SCAN", ended]),
            Frame::Array(vec![Frame::bulk("0"), Frame::Array(vec![])]),
            "{ended:?}"
        );
    }
    // Without a session password, AUTH default (and HELLO AUTH default) take any password,
    // as Redis's default user without one does; one-argument AUTH is refused as in Redis.
    assert_eq!(p.cmd(&["AUTH", "default", "anything"]), Frame::simple("OK"));
    assert!(p
        .cmd(&["HELLO", "2", "AUTH", "default", "x"])
        .as_array()
        .is_some());
    assert!(text(&p.cmd(&["AUTH", "x"])).starts_with("ERR AUTH <password> called without"));
    // A pipeline of mixed commands comes back in order.
    let mut pipe = Vec::new();
    for i in 0..100 {
        rcodis_core::resp::Request::from_args(["SET", &format!("pk{i}"), &i.to_string()])
            .write_resp(&mut pipe);
        rcodis_core::resp::Request::from_args(["GET", &format!("pk{i}")]).write_resp(&mut pipe);
    }
    p.send_raw(&pipe);
    for i in 0..100 {
        assert_eq!(p.read().unwrap(), Frame::simple("OK"));
        assert_eq!(text(&p.read().unwrap()), i.to_string());
    }
    // A blocked pop does not hold up other clients, and is woken through the proxy.
    let port = c.port;
    let blocked = std::thread::spawn(move || Conn::connect(port).cmd(&["BLPOP", "{q}list", "10"]));
    std::thread::sleep(Duration::from_millis(100));
    let t = std::time::Instant::now();
    for i in 0..50 {
        assert_eq!(
            p.cmd(&["SET", &format!("during{i}"), "x"]),
            Frame::simple("OK")
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "other clients stalled behind BLPOP"
    );
    assert_eq!(p.cmd(&["RPUSH", "{q}list", "woken"]), Frame::Integer(1));
    assert_eq!(
        blocked.join().unwrap(),
        Frame::Array(vec![Frame::bulk("{q}list"), Frame::bulk("woken")])
    );
    assert_eq!(p.cmd(&["BRPOP", "{q}list", "0.1"]), Frame::NullArray);
    // A client that leaves while blocked loses nothing: the next push stays in the list.
    {
        let mut gone = Conn::connect(c.port);
        gone.send(&["BLPOP", "{q}list", "0"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(300));
    p.cmd(&["RPUSH", "{q}list", "kept"]);
    assert_eq!(text(&p.cmd(&["LPOP", "{q}list"])), "kept");
    // A session waiting on a blocking command counts in INFO's blocked_clients.
    let blocked = |p: &mut Conn, n: usize| {
        let want = format!("\r\nblocked_clients:{n}\r\n");
        wait_until("blocked_clients", Duration::from_secs(10), || {
            text(&p.cmd(&["INFO", "clients"])).contains(&want)
        });
    };
    let mut w = Conn::connect(c.port);
    w.send(&["BLPOP", "{q}wait", "0"]);
    blocked(&mut p, 1);
    p.cmd(&["RPUSH", "{q}wait", "x"]);
    assert_eq!(
        w.read(),
        Some(Frame::Array(vec![Frame::bulk("{q}wait"), Frame::bulk("x")]))
    );
    blocked(&mut p, 0);
    // INFO: the proxy's own sections as asked, and the keyspace summed over both groups.
    let mut k = Conn::connect(c.port);
    assert_eq!(k.cmd(&["SELECT", "7"]), Frame::simple("OK"));
    for i in 0..20 {
        k.cmd(&["SET", &format!("ks{i}"), "v"]);
    }
    for i in 0..6 {
        k.cmd(&["SET", &format!("kt{i}"), "v", "EX", "1000"]);
    }
    for s in &c.servers {
        let mut d = s.conn();
        d.cmd(&["SELECT", "7"]);
        assert!(
            d.cmd(&["DBSIZE"]).as_integer().unwrap() > 0,
            "both groups hold keys"
        );
    }
    let ks = text(&k.cmd(&["INFO", "keyspace"]));
    assert!(ks.starts_with("# Keyspace\r\n"), "{ks}");
    assert!(ks.contains("\r\ndb7:keys=26,expires=6,avg_ttl="), "{ks}");
    let _avg_ttl: u64 = ks
        .split("db7:keys=26,expires=6,avg_ttl=")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        !ks.contains("# Server") && !ks.contains("keyspace_missing"),
        "{ks}"
    );
    let default = text(&k.cmd(&["INFO"]));
    for want in [
        "# Server\r\n",
        "# Clients\r\n",
        "# Proxy\r\n",
        "db7:keys=26,",
    ] {
        assert!(default.contains(want), "{want:?} not in {default}");
    }
    assert!(!default.contains("# Commandstats"), "{default}");
    let some = text(&k.cmd(&["info", "SERVER", "clients"]));
    assert!(
        some.contains("# Server\r\n") && some.contains("# Clients\r\n"),
        "{some}"
    );
    assert!(
        !some.contains("# Keyspace") && !some.contains("# Proxy"),
        "{some}"
    );
    // Memory and the key counters are the groups' figures summed; hits are counted exactly.
    let hits = |k: &mut Conn| -> u64 {
        let t = text(&k.cmd(&["INFO", "stats"]));
        field(&t, "keyspace_hits")
    };
    let servers_hits = |c: &Cluster| -> u64 {
        c.servers
            .iter()
            .map(|s| field(&text(&s.conn().cmd(&["INFO", "stats"])), "keyspace_hits"))
            .sum()
    };
    for i in 0..20 {
        k.cmd(&["GET", &format!("ks{i}")]);
    }
    assert_eq!(hits(&mut k), servers_hits(&c));
    assert!(hits(&mut k) >= 20);
    let mem = text(&k.cmd(&["INFO", "memory"]));
    assert!(mem.starts_with("# Memory\r\n"), "{mem}");
    assert!(field(&mem, "used_memory") > 0, "{mem}");
    for want in [
        "\r\nmaxmemory:0\r\n",
        "\r\nmaxmemory_human:0B\r\n",
        "maxmemory_policy:noeviction",
    ] {
        assert!(mem.contains(want), "{want:?} not in {mem}");
    }
    let human = mem
        .split("used_memory_human:")
        .nth(1)
        .and_then(|r| r.split("\r\n").next())
        .unwrap();
    assert!(
        human.ends_with('K') || human.ends_with('M') || human.ends_with('G'),
        "{mem}"
    );
    assert!(field(&mem, "proxy_used_memory_rss") > 0, "{mem}");
    assert!(
        !mem.contains("# Stats") && !mem.contains("# Keyspace"),
        "{mem}"
    );
    let every = text(&k.cmd(&["INFO", "everything"]));
    assert!(every.contains("# Commandstats\r\ncmdstat_") && every.contains("db7:keys=26,"));
    // A blocking command in a pipeline runs in order, as on one Redis connection: after the
    // push before it and before the commands after it.
    let mut o = Conn::connect(c.port);
    o.send_raw(
        b"*3\r\n$5\r\nRPUSH\r\n$4\r\n{o}l\r\n$1\r\na\r\n\
          *3\r\n$5\r\nBLPOP\r\n$4\r\n{o}l\r\n$1\r\n1\r\n\
          *2\r\n$4\r\nLLEN\r\n$4\r\n{o}l\r\n\
          *3\r\n$5\r\nRPUSH\r\n$4\r\n{o}l\r\n$1\r\nb\r\n",
    );
    assert_eq!(o.read(), Some(Frame::Integer(1)));
    assert_eq!(
        o.read(),
        Some(Frame::Array(vec![Frame::bulk("{o}l"), Frame::bulk("a")]))
    );
    assert_eq!(o.read(), Some(Frame::Integer(0)));
    assert_eq!(o.read(), Some(Frame::Integer(1)));
    // Requests that arrive while it blocks are answered after it, without more input.
    o.send(&["BLPOP", "{o}empty", "0.3"]);
    std::thread::sleep(Duration::from_millis(100));
    o.send(&["LLEN", "{o}l"]);
    assert_eq!(o.read(), Some(Frame::NullArray));
    assert_eq!(o.read(), Some(Frame::Integer(1)));
    // A refused EXEC discards the transaction and its watches, as in Redis.
    rcodis_tests::check_exec_arity_aborts(
        &mut Conn::connect(c.port),
        &mut Conn::connect(c.port),
        "{x}w",
    );
    // The handshake of current client libraries.
    rcodis_tests::check_client_setinfo(&mut Conn::connect(c.port), c.port);
    let mut h = Conn::connect(c.port);
    h.cmd(&["HELLO", "3"]);
    assert!(text(&h.cmd(&["CLIENT", "INFO"])).contains(" resp=3 "));
    // The redis crate works through the proxy.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", c.port)).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("rc").arg(5).query(&mut con).unwrap();
    let v: i64 = redis::cmd("INCR").arg("rc").query(&mut con).unwrap();
    assert_eq!(v, 6);
    drop(c.proxy);
}

#[test]
fn follows_topology_changes_and_survives_a_dead_backend() {
    let mut c = start();
    let mut p = Conn::connect(c.port);
    assert_eq!(p.cmd(&["SET", "a", "1"]), Frame::simple("OK")); // slot 579 → group 2
                                                                // Move every slot to group 1 (epoch 2): "a" is now looked up on group 1.
    let ports = [c.servers[0].port, c.servers[1].port];
    put_topology(c.coord_dir.path(), &rcodis_tests::topology(&ports, 1024, 2));
    wait_until("proxy to apply epoch 2", Duration::from_secs(10), || {
        text(&p.cmd(&["INFO"])).contains("applied_epoch:2")
    });
    assert_eq!(p.cmd(&["GET", "a"]), Frame::NullBulk);
    assert_eq!(p.cmd(&["SET", "a", "on-g1"]), Frame::simple("OK"));
    assert_eq!(text(&c.servers[0].conn().cmd(&["GET", "a"])), "on-g1");
    // The proxy registered itself and reports the applied epoch.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let registered_epoch = || {
        let regs = rt.block_on(async {
            FileCoordinator::open(c.coord_dir.path())
                .unwrap()
                .list(&layout::proxy_prefix("test"))
                .await
                .unwrap()
        });
        assert_eq!(regs.len(), 1);
        serde_json::from_slice::<rcodis_core::topology::ProxyInfo>(&regs[0].1)
            .unwrap()
            .applied_epoch
    };
    wait_until(
        "registration to report epoch 2",
        Duration::from_secs(10),
        || registered_epoch() == 2,
    );
    // Back to two groups, then kill group 2's server: its slots error, others keep working.
    put_topology(c.coord_dir.path(), &rcodis_tests::topology(&ports, 512, 3));
    wait_until("proxy to apply epoch 3", Duration::from_secs(10), || {
        text(&p.cmd(&["INFO"])).contains("applied_epoch:3")
    });
    let dead = c.servers.remove(1);
    drop(dead);
    let e = p.cmd(&["GET", "a"]);
    assert!(
        text(&e).contains("unreachable")
            || text(&e).contains("closed")
            || text(&e).contains("reset"),
        "{e:?}"
    );
    let low = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| slot_of(k.as_bytes()) < 512)
        .unwrap();
    assert_eq!(p.cmd(&["SET", &low, "ok"]), Frame::simple("OK"));
    assert_eq!(p.cmd(&["PING"]), Frame::simple("PONG"));
    // INFO keeps answering, with the keyspace of the group it reached and a count of the
    // ones it did not.
    let info = text(&p.cmd(&["INFO"]));
    assert!(
        info.contains("# Server\r\n") && info.contains("keyspace_missing_groups:1\r\n"),
        "{info}"
    );
    for want in ["memory_missing_groups:1\r\n", "stats_missing_groups:1\r\n"] {
        assert!(info.contains(want), "{want:?} not in {info}");
    }
    assert!(info.contains("db0:keys="), "{info}");
}

/// redis-cli reading commands from stdin asks COMMAND DOCS first (for its hints): the
/// proxy's answer must have redis-cli's shape, and the commands then run.
#[test]
fn redis_cli_stdin_mode_through_the_proxy() {
    let c = start();
    let mut child = std::process::Command::new("redis-cli")
        .args(["-p", &c.port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli (install Debian's redis-tools)");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().unwrap();
        for i in 0..50 {
            writeln!(stdin, "SET cli:{i} v{i}").unwrap();
        }
        writeln!(stdin, "GET cli:49").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("OK").count(), 50, "{stdout}");
    assert!(stdout.trim_end().ends_with("v49"), "{stdout}");
    let mut p = Conn::connect(c.port);
    assert_eq!(p.cmd(&["DBSIZE"]), Frame::Integer(50));
}

#[test]
fn transactions_and_watch_in_one_slot() {
    let c = start();
    let mut p = Conn::connect(c.port);
    let q = |s: &'static str| Frame::simple(s);
    assert_eq!(
        p.cmd(&["EXEC"]),
        Frame::Error("ERR EXEC without MULTI".into())
    );
    assert_eq!(p.cmd(&["MULTI"]), q("OK"));
    assert_eq!(
        p.cmd(&["MULTI"]),
        Frame::Error("ERR MULTI calls can not be nested".into())
    );
    assert_eq!(p.cmd(&["SET", "{u1}a", "1"]), q("QUEUED"));
    assert_eq!(p.cmd(&["INCR", "{u1}b"]), q("QUEUED"));
    assert_eq!(p.cmd(&["MGET", "{u1}a", "{u1}b"]), q("QUEUED"));
    assert_eq!(
        p.cmd(&["EXEC"]),
        Frame::Array(vec![
            q("OK"),
            Frame::Integer(1),
            Frame::Array(vec![Frame::bulk("1"), Frame::bulk("1")])
        ])
    );
    // A key in another slot aborts the transaction.
    assert_eq!(p.cmd(&["MULTI"]), q("OK"));
    assert_eq!(p.cmd(&["SET", "{u1}a", "2"]), q("QUEUED"));
    assert_eq!(
        p.cmd(&["SET", "{other}a", "2"]),
        Frame::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert_eq!(
        p.cmd(&["EXEC"]),
        Frame::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(text(&p.cmd(&["GET", "{u1}a"])), "1");
    // Unknown commands abort too; DISCARD drops the queue.
    assert_eq!(p.cmd(&["MULTI"]), q("OK"));
    assert!(matches!(p.cmd(&["NOSUCH"]), Frame::Error(_)));
    assert!(matches!(p.cmd(&["EXEC"]), Frame::Error(e) if e.starts_with(b"EXECABORT")));
    assert_eq!(p.cmd(&["MULTI"]), q("OK"));
    assert_eq!(p.cmd(&["SET", "{u1}a", "3"]), q("QUEUED"));
    assert_eq!(p.cmd(&["DISCARD"]), q("OK"));
    assert_eq!(text(&p.cmd(&["GET", "{u1}a"])), "1");
    // WATCH: a change by another client makes EXEC return nil; untouched, it runs.
    let mut other = Conn::connect(c.port);
    assert_eq!(p.cmd(&["WATCH", "{u1}a"]), q("OK"));
    assert_eq!(other.cmd(&["SET", "{u1}a", "changed"]), q("OK"));
    assert_eq!(p.cmd(&["MULTI"]), q("OK"));
    assert_eq!(p.cmd(&["SET", "{u1}a", "mine"]), q("QUEUED"));
    assert_eq!(p.cmd(&["EXEC"]), Frame::NullArray);
    assert_eq!(text(&p.cmd(&["GET", "{u1}a"])), "changed");
    assert_eq!(p.cmd(&["WATCH", "{u1}a", "{u1}b"]), q("OK"));
    assert_eq!(
        p.cmd(&["WATCH", "{elsewhere}x"]),
        Frame::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
    );
    assert_eq!(p.cmd(&["MULTI"]), q("OK"));
    assert_eq!(p.cmd(&["SET", "{u1}a", "mine"]), q("QUEUED"));
    assert_eq!(p.cmd(&["EXEC"]), Frame::Array(vec![q("OK")]));
    assert_eq!(text(&p.cmd(&["GET", "{u1}a"])), "mine");
    // Another session's transactions are not disturbed by this one's WATCH.
    assert_eq!(p.cmd(&["WATCH", "{u1}a"]), q("OK"));
    assert_eq!(other.cmd(&["MULTI"]), q("OK"));
    assert_eq!(other.cmd(&["SET", "{u1}a", "x"]), q("QUEUED"));
    assert_eq!(other.cmd(&["EXEC"]), Frame::Array(vec![q("OK")]));
    assert_eq!(p.cmd(&["UNWATCH"]), q("OK"));
    assert_eq!(p.cmd(&["MULTI"]), q("OK"));
    assert_eq!(p.cmd(&["GET", "{u1}a"]), q("QUEUED"));
    assert_eq!(p.cmd(&["EXEC"]), Frame::Array(vec![Frame::bulk("x")]));
}

/// A second proxy on the same coordinator.
fn second_proxy(c: &Cluster) -> (Process, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rcodis-proxy"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--threads",
        "2",
        "--product",
        "test",
    ])
    .arg("--coordinator")
    .arg(format!("file://{}", c.coord_dir.path().display()));
    rcodis_tests::spawn_on_free_port("rcodis-proxy", cmd)
}

fn push(kind: &str, a: &str, b: &str) -> Frame {
    Frame::Array(vec![Frame::bulk(kind), Frame::bulk(a), Frame::bulk(b)])
}

/// Pub/sub across two proxies: channels live on their slot's master, patterns everywhere;
/// every message reaches every subscriber exactly once, whichever proxy published it.
#[test]
fn pubsub_across_two_proxies() {
    let c = start();
    let (_p2, port2) = second_proxy(&c);
    let mut sub = Conn::connect(c.port);
    // Channels in both groups' slot ranges.
    let low = (0..)
        .map(|i| format!("news{i}"))
        .find(|k| slot_of(k.as_bytes()) < 512)
        .unwrap();
    let high = (0..)
        .map(|i| format!("news{i}"))
        .find(|k| slot_of(k.as_bytes()) >= 512)
        .unwrap();
    sub.send(&["SUBSCRIBE", &low, &high]);
    assert_eq!(
        sub.read().unwrap(),
        Frame::Array(vec![
            Frame::bulk("subscribe"),
            Frame::bulk(low.clone()),
            Frame::Integer(1)
        ])
    );
    assert_eq!(
        sub.read().unwrap(),
        Frame::Array(vec![
            Frame::bulk("subscribe"),
            Frame::bulk(high.clone()),
            Frame::Integer(2)
        ])
    );
    assert_eq!(
        sub.cmd(&["PSUBSCRIBE", "alert.*"]),
        Frame::Array(vec![
            Frame::bulk("psubscribe"),
            Frame::bulk("alert.*"),
            Frame::Integer(3)
        ])
    );
    assert!(
        matches!(sub.cmd(&["GET", "x"]), Frame::Error(e) if e.starts_with(b"ERR Can't execute 'get'"))
    );
    assert_eq!(
        sub.cmd(&["PING"]),
        Frame::Array(vec![Frame::bulk("pong"), Frame::bulk("")])
    );
    let mut pubr = Conn::connect(port2);
    // The subscriptions reach the servers asynchronously: publish until one is delivered.
    rcodis_tests::wait_until(
        "subscriptions in place",
        std::time::Duration::from_secs(10),
        || {
            pubr.cmd(&["PUBLISH", &low, "probe"]) == Frame::Integer(1)
                && pubr.cmd(&["PUBLISH", &high, "probe"]) == Frame::Integer(1)
                && pubr.cmd(&["PUBLISH", "alert.x", "probe"]) == Frame::Integer(1)
        },
    );
    // Probes may still be on their way: skip them when reading what follows.
    sub.set_timeout(std::time::Duration::from_secs(10));
    let is_probe =
        |f: &Frame| matches!(f, Frame::Array(v) if v.last() == Some(&Frame::bulk("probe")));
    let next = |sub: &mut Conn| loop {
        let f = sub.read().unwrap();
        if !is_probe(&f) {
            return f;
        }
    };
    assert_eq!(pubr.cmd(&["PUBLISH", &low, "m1"]), Frame::Integer(1));
    assert_eq!(pubr.cmd(&["PUBLISH", &high, "m2"]), Frame::Integer(1));
    assert_eq!(
        pubr.cmd(&["PUBLISH", "alert.fire", "m3"]),
        Frame::Integer(1)
    );
    assert_eq!(pubr.cmd(&["PUBLISH", "nobody", "m4"]), Frame::Integer(0));
    // Messages from different servers may arrive in any order.
    let mut got: Vec<Frame> = (0..3).map(|_| next(&mut sub)).collect();
    let mut want = vec![
        push("message", &low, "m1"),
        push("message", &high, "m2"),
        Frame::Array(vec![
            Frame::bulk("pmessage"),
            Frame::bulk("alert.*"),
            Frame::bulk("alert.fire"),
            Frame::bulk("m3"),
        ]),
    ];
    let key = |f: &Frame| format!("{f:?}");
    got.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(got, want);
    // PUBSUB through either proxy sees the subscriptions of the whole cluster.
    let chans = pubr.cmd(&["PUBSUB", "CHANNELS"]);
    let mut want = vec![Frame::bulk(low.clone()), Frame::bulk(high.clone())];
    want.sort_by(|a, b| a.as_bytes().cmp(&b.as_bytes()));
    assert_eq!(chans, Frame::Array(want));
    assert_eq!(
        pubr.cmd(&["PUBSUB", "NUMSUB", &low, "nobody"]),
        Frame::Array(vec![
            Frame::bulk(low.clone()),
            Frame::Integer(1),
            Frame::bulk("nobody"),
            Frame::Integer(0)
        ])
    );
    assert_eq!(pubr.cmd(&["PUBSUB", "NUMPAT"]), Frame::Integer(1));
    // Unsubscribing everything leaves subscribed mode.
    sub.send(&["UNSUBSCRIBE"]);
    let a = next(&mut sub);
    let b = next(&mut sub);
    assert!(
        matches!((&a, &b), (Frame::Array(x), Frame::Array(y)) if x[2] == Frame::Integer(2) && y[2] == Frame::Integer(1)),
        "{a:?} {b:?}"
    );
    assert_eq!(
        sub.cmd(&["PUNSUBSCRIBE"]),
        Frame::Array(vec![
            Frame::bulk("punsubscribe"),
            Frame::bulk("alert.*"),
            Frame::Integer(0)
        ])
    );
    assert_eq!(sub.cmd(&["SET", "after", "1"]), Frame::simple("OK"));
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    http(addr, "GET", path, "")
}

#[test]
fn admin_http_reports_state() {
    let c = start();
    let mut p = Conn::connect(c.port);
    p.cmd(&["SET", "a", "1"]);
    let info = text(&p.cmd(&["INFO"]));
    let addr = info
        .lines()
        .find_map(|l| l.strip_prefix("admin_addr:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{info}");
    assert_eq!(http_get(&addr, "/health"), (200, "ok\n".to_string()));
    let (code, body) = http_get(&addr, "/stats");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["epoch"], 1);
    assert!(v["commands"].as_u64().unwrap() >= 2);
    assert_eq!(v["backends"].as_array().unwrap().len(), 2);
    for field in ["rejected_connections", "blocked_sessions", "ops_per_sec"] {
        assert!(v[field].is_u64(), "{field} in {v}");
    }
    let (_, body) = http_get(&addr, "/slots");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["slots"].as_array().unwrap().len(), 1024);
    let (code, body) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("rcodis_proxy_applied_epoch 1")
            && body.contains("rcodis_proxy_backend_slots{backend="),
        "{body}"
    );
    assert_eq!(http_get(&addr, "/nope").0, 404);
}

fn admin_addr(p: &mut Conn) -> String {
    let info = text(&p.cmd(&["INFO"]));
    info.lines()
        .find_map(|l| l.strip_prefix("admin_addr:"))
        .unwrap()
        .trim()
        .to_string()
}

/// Per-command calls, errors and latency histograms, backend state and queue depth in
/// /metrics and INFO commandstats; mutations need the admin token; idle clients are closed.
#[test]
fn metrics_admin_token_and_idle_timeout() {
    let c = start_with(&["--admin-token", "s3cret", "--idle-timeout", "1"]);
    let mut p = Conn::connect(c.port);
    for i in 0..20 {
        p.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    p.cmd(&["GET", "k1"]);
    let e = p.cmd(&["INCR", "k1"]);
    assert!(matches!(e, Frame::Error(_)), "{e:?}");
    p.cmd(&["NOSUCHCOMMAND"]);
    let addr = admin_addr(&mut p);
    let (code, body) = http_get(&addr, "/metrics");
    assert_eq!(code, 200);
    for want in [
        "rcodis_proxy_command_calls_total{command=\"set\"} 20",
        "rcodis_proxy_command_calls_total{command=\"get\"} 1",
        "rcodis_proxy_command_errors_total{command=\"incr\"} 1",
        "rcodis_proxy_command_errors_total{command=\"unknown\"} 1",
        "rcodis_proxy_command_duration_seconds_bucket{command=\"set\",le=\"+Inf\"} 20",
        "rcodis_proxy_command_duration_seconds_count{command=\"set\"} 20",
        "# TYPE rcodis_proxy_command_duration_seconds histogram",
        "rcodis_proxy_backend_queue_depth{backend=\"127.0.0.1:",
        "rcodis_proxy_backend_failures_total{backend=\"127.0.0.1:",
        "rcodis_proxy_rejected_connections_total 0",
        "rcodis_proxy_blocked_sessions 0",
    ] {
        assert!(body.contains(want), "missing {want} in\n{body}");
    }
    assert_eq!(
        body.matches("rcodis_proxy_backend_up{backend=").count(),
        2,
        "{body}"
    );
    // Errors by kind, as Redis counts them; the CPU section; both in the default INFO.
    let errors = text(&p.cmd(&["INFO", "errorstats", "stats", "cpu"]));
    for want in [
        "# Errorstats\r\nerrorstat_ERR:count=2\r\n",
        "\r\ntotal_error_replies:2\r\n",
        "# CPU\r\nused_cpu_sys:",
    ] {
        assert!(errors.contains(want), "{want:?} not in {errors}");
    }
    let default = text(&p.cmd(&["INFO"]));
    assert!(default.contains("# Errorstats\r\n") && default.contains("# CPU\r\n"));
    let stats = text(&p.cmd(&["INFO", "commandstats"]));
    assert!(
        stats.contains("cmdstat_set:calls=20,")
            && stats.contains("cmdstat_incr:calls=1,")
            && stats.contains("failed_calls=1"),
        "{stats}"
    );
    // Mutations: no token, a wrong one, the right one.
    assert_eq!(http(&addr, "POST", "/stats/reset", "").0, 401);
    assert_eq!(
        http(
            &addr,
            "POST",
            "/stats/reset",
            "Authorization: Bearer nope\r\n"
        )
        .0,
        403
    );
    assert_eq!(
        http(
            &addr,
            "POST",
            "/stats/reset",
            "Authorization: Bearer s3cret\r\n"
        )
        .0,
        200
    );
    let (_, body) = http_get(&addr, "/metrics");
    assert!(!body.contains("command=\"set\""), "{body}");
    p.cmd(&["GET", "k2"]);
    let (_, body) = http_get(&addr, "/stats");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["command_stats"]["get"]["calls"], 1, "{body}");
    assert!(v["command_stats"].get("set").is_none(), "{body}");
    let errors = text(&p.cmd(&["INFO", "errorstats"]));
    assert_eq!(errors, "# Errorstats\r\n\r\n", "the reset clears them");
    // An idle client is disconnected after the timeout; an active one is not.
    let mut idle = Conn::connect(c.port);
    assert_eq!(idle.cmd(&["PING"]), Frame::Simple("PONG".into()));
    idle.set_timeout(Duration::from_secs(10));
    let t = std::time::Instant::now();
    assert!(idle.read_opt().is_none(), "the idle client got something");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "idle client not closed"
    );
    // A client blocked in BLPOP is not idle.
    let mut blocked = Conn::connect(c.port);
    blocked.set_timeout(Duration::from_secs(10));
    let r = blocked.cmd(&["BLPOP", "nothing-here", "2"]);
    assert_eq!(r, Frame::NullArray, "{r:?}");
    // Neither is a subscriber: quiet for longer than the timeout, it still gets messages.
    let mut sub = Conn::connect(c.port);
    sub.set_timeout(Duration::from_secs(10));
    assert!(matches!(sub.cmd(&["SUBSCRIBE", "news"]), Frame::Array(_)));
    std::thread::sleep(Duration::from_millis(3500));
    let mut publisher = Conn::connect(c.port);
    assert_eq!(
        publisher.cmd(&["PUBLISH", "news", "hello"]),
        Frame::Integer(1)
    );
    match sub.read() {
        Some(Frame::Array(m)) => assert_eq!(text(&m[2]), "hello"),
        other => panic!("a quiet subscriber lost its message: {other:?}"),
    }
    // Shutdown through the API (with the token) stops the proxy.
    assert_eq!(http(&addr, "POST", "/shutdown", "").0, 401);
    assert_eq!(
        http(&addr, "POST", "/shutdown", "X-Admin-Token: s3cret\r\n").0,
        200
    );
    let mut c = c;
    wait_until("the proxy to stop", Duration::from_secs(10), || {
        c.proxy.exited()
    });
}

/// Clients that greet with HELLO 3 (redis-py 8 does by default) get RESP3 replies: maps,
/// sets, doubles and nulls as the servers write them, and pub/sub messages as pushes.
#[test]
fn resp3_sessions() {
    let c = start();
    let mut p = Conn::connect(c.port);
    let hello = p.cmd(&["HELLO", "3"]);
    let Frame::Map(fields) = &hello else {
        panic!("HELLO 3 answered {hello:?}");
    };
    assert!(fields.contains(&(Frame::bulk("proto"), Frame::Integer(3))));
    p.cmd(&["HSET", "h", "f", "v"]);
    assert_eq!(
        p.cmd(&["HGETALL", "h"]),
        Frame::Map(vec![(Frame::bulk("f"), Frame::bulk("v"))])
    );
    p.cmd(&["ZADD", "z", "1.5", "m"]);
    assert!(
        matches!(p.cmd(&["ZSCORE", "z", "m"]), Frame::Double(_)),
        "RESP3 double"
    );
    assert_eq!(p.cmd(&["GET", "missing"]), Frame::Null);
    // Split and merged replies still parse.
    p.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]);
    let r = p.cmd(&["MGET", "a", "b", "c", "nope"]);
    let Frame::Array(v) = r else { panic!("{r:?}") };
    assert_eq!(
        v[..3],
        [Frame::bulk("1"), Frame::bulk("2"), Frame::bulk("3")]
    );
    assert!(matches!(v[3], Frame::Null | Frame::NullBulk));
    // Pub/sub: confirmations and messages are pushes; other commands still work meanwhile.
    let sub = p.cmd(&["SUBSCRIBE", "chan"]);
    assert!(
        matches!(&sub, Frame::Push(v) if v[0] == Frame::bulk("subscribe")),
        "{sub:?}"
    );
    assert_eq!(text(&p.cmd(&["GET", "a"])), "1");
    let mut pubr = Conn::connect(c.port);
    rcodis_tests::wait_until(
        "the subscription",
        std::time::Duration::from_secs(10),
        || pubr.cmd(&["PUBLISH", "chan", "hi"]) == Frame::Integer(1),
    );
    let m = p.read().unwrap();
    assert!(
        matches!(&m, Frame::Push(v) if v[0] == Frame::bulk("message") && v[2] == Frame::bulk("hi")),
        "{m:?}"
    );
    // Back to RESP2.
    p.cmd(&["UNSUBSCRIBE"]);
    let hello = p.cmd(&["HELLO", "2"]);
    assert!(matches!(hello, Frame::Array(_)), "{hello:?}");
    assert_eq!(p.cmd(&["GET", "missing"]), Frame::NullBulk);
}

/// Limits from the TOML config: clients past max_clients get an error and are closed (the
/// others keep working); a request with an argument past max_request_bytes gets a protocol
/// error and only that client is closed; a client with more than session_max_pipeline
/// requests sent at once gets the replies within the limit, an error, and is closed.
#[test]
fn limits_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        "max_clients = 3\nmax_request_bytes = 1024\nsession_max_pipeline = 8\n",
    )
    .unwrap();
    let c = start_with(&["--config", conf.to_str().unwrap()]);
    let mut keep: Vec<Conn> = (0..3).map(|_| Conn::connect(c.port)).collect();
    for k in &mut keep {
        assert_eq!(k.cmd(&["PING"]), Frame::Simple("PONG".into()));
    }
    let mut extra = Conn::connect(c.port);
    extra.set_timeout(Duration::from_secs(5));
    assert_eq!(
        extra.read_opt(),
        Some(Frame::Error("ERR max number of clients reached".into()))
    );
    assert!(extra.read_opt().is_none(), "the extra client stays open");
    drop(extra);
    let stats = text(&keep[1].cmd(&["INFO", "stats"]));
    assert!(stats.contains("\r\nrejected_connections:1\r\n"), "{stats}");
    // The three still work; a big argument closes only its own connection.
    let big = "x".repeat(2000);
    let r = keep[0].cmd(&["SET", "big", &big]);
    assert!(
        matches!(&r, Frame::Error(e) if e.starts_with(b"ERR Protocol error")),
        "{r:?}"
    );
    assert!(keep[0].read_opt().is_none());
    assert_eq!(
        keep[1].cmd(&["SET", "small", "v"]),
        Frame::Simple("OK".into())
    );
    assert_eq!(text(&keep[2].cmd(&["GET", "small"])), "v");
    // Eight requests in one write are within session_max_pipeline; twelve are not.
    let pings = |n: usize| b"*1\r\n$4\r\nPING\r\n".repeat(n);
    keep[1].send_raw(&pings(8));
    for _ in 0..8 {
        assert_eq!(keep[1].read(), Some(Frame::Simple("PONG".into())));
    }
    assert_eq!(text(&keep[1].cmd(&["GET", "small"])), "v");
    keep[1].send_raw(&pings(12));
    for _ in 0..8 {
        assert_eq!(keep[1].read(), Some(Frame::Simple("PONG".into())));
    }
    let r = keep[1].read_opt();
    assert!(
        matches!(&r, Some(Frame::Error(e)) if e.starts_with(b"ERR too many pipelined requests")),
        "{r:?}"
    );
    assert!(keep[1].read_opt().is_none(), "closed after the error");
    assert_eq!(text(&keep[2].cmd(&["GET", "small"])), "v");
    // A slot freed by a client that left is available again.
    drop(keep.remove(0));
    wait_until("a client slot to free up", Duration::from_secs(10), || {
        let mut n = Conn::connect(c.port);
        n.set_timeout(Duration::from_secs(5));
        n.cmd(&["PING"]) == Frame::Simple("PONG".into())
    });
}

/// A backend that sends nothing for `backend_read_timeout_ms` while requests wait on it:
/// they are answered with an error saying so (no hang), the connection is made again, and
/// the group serves as soon as the backend does. A reply within the limit is waited for.
#[test]
fn backend_read_timeout_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("proxy.toml");
    std::fs::write(
        &conf,
        "backend_read_timeout_ms = 2000
",
    )
    .unwrap();
    let c = start_with(&["--config", conf.to_str().unwrap()]);
    let key = (0..)
        .map(|i| format!("slow{i}"))
        .find(|k| slot_of(k.as_bytes()) < 512)
        .unwrap();
    let mut p = Conn::connect(c.port);
    assert_eq!(p.cmd(&["SET", &key, "v"]), Frame::Simple("OK".into()));
    let server = c.servers[0].port;
    // Puts the first group's server to sleep, and returns once it is asleep (a PING goes
    // unanswered for 100 ms).
    let sleep = |secs: &'static str| {
        let t = std::thread::spawn(move || Conn::connect(server).cmd(&["DEBUG", "SLEEP", secs]));
        wait_until("the server to sleep", Duration::from_secs(10), || {
            let mut probe = Conn::connect(server);
            probe.set_timeout(Duration::from_millis(100));
            probe.send_raw(b"*1\r\n$4\r\nPING\r\n");
            probe.read_opt().is_none()
        });
        t
    };
    let t = sleep("0.5");
    assert_eq!(
        p.cmd(&["GET", &key]),
        Frame::Bulk("v".into()),
        "within the limit"
    );
    t.join().unwrap();
    let t = sleep("8");
    let started = std::time::Instant::now();
    let r = p.cmd(&["GET", &key]);
    assert!(
        matches!(&r, Frame::Error(e) if String::from_utf8_lossy(e).contains("no reply within 2000 ms")),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "failed by the read timeout, not when the server woke"
    );
    t.join().unwrap();
    wait_until("the group to serve again", Duration::from_secs(20), || {
        p.cmd(&["GET", &key]) == Frame::Bulk("v".into())
    });
}

/// A backend still loading its data answers -LOADING: the proxy passes it through to the
/// client and logs it with the backend's address (once a second at most).
#[test]
fn loading_backend_replies_pass_through_and_are_logged() {
    let server_bin = bin_path("rcodis-server");
    let data = tempfile::tempdir().unwrap();
    let start_server = |extra: &[&str]| {
        let mut cmd = Command::new(&server_bin);
        cmd.args(["--port", "0", "--threads", "1", "--appendonly", "yes"])
            .arg("--dir")
            .arg(data.path())
            .args(extra);
        rcodis_tests::spawn_on_free_port("rcodis-server", cmd)
    };
    let (mut s, port) = start_server(&[]);
    rcodis_tests::wait_loaded(port);
    let mut c = Conn::connect(port);
    for i in 0..3000 {
        c.send(&["SET".to_string(), format!("k{i}"), i.to_string()]);
    }
    for _ in 0..3000 {
        assert_eq!(c.read(), Some(Frame::simple("OK")));
    }
    s.signal("TERM");
    wait_until("the server to exit", Duration::from_secs(15), || s.exited());
    // 3000 records at 2 ms each: loading lasts at least 6 s.
    let (_s2, port) = start_server(&["--key-load-delay", "2000"]);
    let coord = tempfile::tempdir().unwrap();
    let mut t = rcodis_tests::topology(&[port, port], 1024, 1);
    t.groups.remove(&2);
    put_topology(coord.path(), &t);
    let log = coord.path().join("proxy.log");
    let proxy_port = rcodis_tests::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rcodis-proxy"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{proxy_port}"),
        "--threads",
        "1",
    ])
    .args(["--product", "test", "--admin", ""])
    .arg("--coordinator")
    .arg(format!("file://{}", coord.path().display()))
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let _proxy = Process {
        child: cmd.spawn().unwrap(),
        name: "rcodis-proxy".into(),
    };
    wait_until("the proxy to serve", Duration::from_secs(20), || {
        rcodis_tests::try_ping(proxy_port).is_some()
    });
    let mut p = Conn::connect(proxy_port);
    let r = p.cmd(&["GET", "k1"]);
    assert_eq!(
        r,
        Frame::Error("LOADING Redis is loading the dataset in memory".into())
    );
    let backend = format!("127.0.0.1:{port}");
    wait_until("the log line", Duration::from_secs(10), || {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        l.contains("backend is not ready") && l.contains(&backend) && l.contains("LOADING")
    });
    // Once loaded, the same request works.
    wait_until("the backend to load", Duration::from_secs(60), || {
        p.cmd(&["GET", "k1"]) == Frame::Bulk("1".into())
    });
}

/// `--backend-connections 3`: sessions spread over three connections per backend per shard,
/// each session's requests stay in order.
#[test]
fn several_connections_per_backend() {
    let c = start_with(&["--backend-connections", "3"]);
    let mut sessions: Vec<Conn> = (0..30).map(|_| Conn::connect(c.port)).collect();
    for (i, s) in sessions.iter_mut().enumerate() {
        for k in 0..20 {
            let key = format!("s{i}:k{k}");
            assert_eq!(s.cmd(&["SET", &key, &i.to_string()]), Frame::simple("OK"));
            assert_eq!(text(&s.cmd(&["GET", &key])), i.to_string());
            assert_eq!(s.cmd(&["INCR", &key]), Frame::Integer(i as i64 + 1));
        }
    }
    for srv in &c.servers {
        let mut direct = srv.conn();
        let list = text(&direct.cmd(&["CLIENT", "LIST"]));
        // Our own direct connection is one line; the proxy's are the others.
        let from_proxy = list.lines().count() - 1;
        assert!(from_proxy >= 3, "{from_proxy} proxy connections:\n{list}");
    }
}

/// A numeric field of an INFO text (0 when absent).
fn field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// CLIENT LIST shows the sessions of every shard as they are; CLIENT KILL closes the ones its
/// filters name (and only those), and a session that kills itself gets its reply first.
#[test]
fn client_list_and_kill() {
    let c = start();
    let mut conns: Vec<Conn> = (0..6).map(|_| Conn::connect(c.port)).collect();
    let mut ids = Vec::new();
    for (i, k) in conns.iter_mut().enumerate() {
        let name = format!("c{i}");
        assert_eq!(k.cmd(&["CLIENT", "SETNAME", &name]), Frame::simple("OK"));
        ids.push(k.cmd(&["CLIENT", "ID"]).as_integer().unwrap());
    }
    assert_eq!(conns[1].cmd(&["SELECT", "3"]), Frame::simple("OK"));
    let mut sub = Conn::connect(c.port);
    sub.send(&["SUBSCRIBE", "ch"]);
    assert!(sub.read().is_some());
    let mut blocked = Conn::connect(c.port);
    blocked.send(&["BLPOP", "{b}l", "0"]);
    let mut admin = Conn::connect(c.port);
    let list = |admin: &mut Conn, args: &[&str]| -> Vec<String> {
        let mut cmd = vec!["CLIENT", "LIST"];
        cmd.extend_from_slice(args);
        text(&admin.cmd(&cmd)).lines().map(str::to_string).collect()
    };
    wait_until("the blocked client listed", Duration::from_secs(10), || {
        list(&mut admin, &[])
            .iter()
            .any(|l| l.contains(" flags=b "))
    });
    let all = list(&mut admin, &[]);
    assert_eq!(all.len(), 9, "{all:#?}");
    for (i, id) in ids.iter().enumerate() {
        let line = all
            .iter()
            .find(|l| l.contains(&format!(" name=c{i} ")))
            .unwrap_or_else(|| panic!("c{i} not in {all:#?}"));
        assert!(
            line.starts_with(&format!("id={id} addr=127.0.0.1:")),
            "{line}"
        );
        assert!(
            line.contains(&format!(" db={} ", if i == 1 { 3 } else { 0 })),
            "{line}"
        );
        assert!(line.contains(" cmd=select ") == (i == 1), "{line}");
    }
    assert!(
        all.iter().any(|l| l.contains(" cmd=client|list ")),
        "{all:#?}"
    );
    assert!(all
        .iter()
        .any(|l| l.contains(" flags=b ") && l.contains(" cmd=blpop ")));
    let pubsub = list(&mut admin, &["TYPE", "pubsub"]);
    assert_eq!(pubsub.len(), 1, "{pubsub:#?}");
    assert!(pubsub[0].contains(" flags=P ") && pubsub[0].contains(" sub=1 "));
    assert_eq!(list(&mut admin, &["TYPE", "normal"]).len(), 8);
    assert_eq!(list(&mut admin, &["TYPE", "replica"]).len(), 0);
    let two = list(
        &mut admin,
        &["ID", &ids[0].to_string(), &ids[2].to_string()],
    );
    assert_eq!(two.len(), 2, "{two:#?}");
    // By id: that client's connection ends, the others go on.
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &ids[0].to_string()]),
        Frame::Integer(1)
    );
    conns[0].set_timeout(Duration::from_secs(5));
    assert!(conns[0].read_opt().is_none(), "killed client still open");
    // By type, and by address (the old form).
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Frame::Integer(1)
    );
    sub.set_timeout(Duration::from_secs(5));
    assert!(sub.read_opt().is_none(), "killed subscriber still open");
    let addr = list(&mut admin, &[])
        .iter()
        .find(|l| l.contains(" flags=b "))
        .and_then(|l| l.split(" addr=").nth(1))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    assert_eq!(admin.cmd(&["CLIENT", "KILL", &addr]), Frame::simple("OK"));
    blocked.set_timeout(Duration::from_secs(5));
    assert!(
        blocked.read_opt().is_none(),
        "killed blocked client still open"
    );
    wait_until("the killed sessions to go", Duration::from_secs(10), || {
        list(&mut admin, &[]).len() == 6
    });
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", &addr]),
        Frame::Error("ERR No such client".into())
    );
    let stats = text(&admin.cmd(&["INFO", "clients"]));
    assert!(stats.contains("\r\nblocked_clients:0\r\n"), "{stats}");
    for (args, want) in [
        (vec!["ID", "0"], "ERR client-id should be greater than 0"),
        (vec!["TYPE", "bogus"], "ERR Unknown client type 'bogus'"),
        (vec!["USER", "bob"], "ERR No such user 'bob'"),
        (vec!["SKIPME", "maybe"], "ERR syntax error"),
        (vec!["ID"], "ERR No such client"), // one argument: the old form's address
        (vec!["ID", "1", "TYPE"], "ERR syntax error"),
        (vec!["NOPE", "1"], "ERR syntax error"),
    ] {
        let mut cmd = vec!["CLIENT", "KILL"];
        cmd.extend(args);
        assert_eq!(admin.cmd(&cmd), Frame::Error(want.into()), "{cmd:?}");
    }
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", "999999"]),
        Frame::Integer(0)
    );
    // Only the ones named: the rest still answer.
    for k in &mut conns[1..] {
        assert_eq!(k.cmd(&["PING"]), Frame::simple("PONG"));
    }
    // Killing itself (SKIPME no): the reply comes, then the connection closes.
    let me = admin
        .cmd(&["CLIENT", "ID"])
        .as_integer()
        .unwrap()
        .to_string();
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &me, "SKIPME", "no"]),
        Frame::Integer(1)
    );
    admin.set_timeout(Duration::from_secs(5));
    assert!(admin.read_opt().is_none());
    assert_eq!(conns[1].cmd(&["PING"]), Frame::simple("PONG"));
}
