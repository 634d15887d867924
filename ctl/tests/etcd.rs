//! The cluster tools against a real etcd: groups and servers added with ctl, a proxy that
//! registers itself and follows the table, a migration under writes, a driver killed with
//! SIGKILL and resumed, a new group and rebalance. (up.rs covers the file coordinator.)

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcodis_core::resp::Frame;
use rcodis_tests::{bin_path, text, wait_until, Conn, EtcdProc, ServerProc};

fn ctl(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        .args(args)
        .args(["--coordinator", url, "--product", "etcdtest"])
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn group_sizes(url: &str) -> Vec<usize> {
    let v: serde_json::Value =
        serde_json::from_str(&ok(ctl(url, &["group", "list", "--json"]))).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| g["slots"].as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn etcd_cluster_migrates_resumes_and_rebalances() {
    let etcd = EtcdProc::start();
    let url = etcd.url();
    let server_bin = bin_path("rcodis-server");
    let servers: Vec<ServerProc> = (0..3)
        .map(|_| ServerProc::start(&server_bin, &["--threads", "1"]))
        .collect();
    let addr = |i: usize| format!("127.0.0.1:{}", servers[i].port);
    ok(ctl(&url, &["group", "add", "1"]));
    ok(ctl(&url, &["group", "add", "2"]));
    ok(ctl(&url, &["server", "add", "1", &addr(0)]));
    ok(ctl(&url, &["server", "add", "2", &addr(1)]));
    // Bad input changes nothing and exits 2.
    let bad = ctl(&url, &["server", "add", "9", &addr(2)]);
    assert_eq!(bad.status.code(), Some(2));
    ok(ctl(&url, &["slot", "init"]));
    assert_eq!(group_sizes(&url), vec![512, 512]);

    let mut cmd = Command::new(bin_path("rcodis-proxy"));
    cmd.args(["--listen", "127.0.0.1:0", "--threads", "2", "--admin", ""])
        .args(["--coordinator", &url, "--product", "etcdtest"]);
    let (_proxy, port) = rcodis_tests::spawn_on_free_port("rcodis-proxy", cmd);
    // The proxy registered itself in etcd.
    wait_until("the proxy to register", Duration::from_secs(20), || {
        ok(ctl(&url, &["proxy", "list", "--json"])).contains(&format!(":{port}"))
    });

    let mut c = Conn::connect(port);
    for i in 0..3000 {
        c.send(&["SET".to_string(), format!("k{i}"), i.to_string()]);
    }
    for _ in 0..3000 {
        assert_eq!(c.read(), Some(Frame::simple("OK")));
    }
    // A writer through the proxy the whole time: INCRs counted, reads never stale.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = Conn::connect(port);
            c.set_timeout(Duration::from_secs(30));
            let mut counts = vec![0i64; 64];
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let k = format!("ctr:{}", i % 64);
                counts[i % 64] += 1;
                assert_eq!(c.cmd(&["INCR", &k]), Frame::Integer(counts[i % 64]), "{k}");
                i += 1;
            }
            counts
        })
    };
    // Foreground migration (init alternates the groups, so even slots move).
    let out = ok(ctl(&url, &["slot", "migrate", "0-63", "--to", "2"]));
    assert_eq!(out.matches("[OK] slot").count(), 32, "{out}");
    // A driver killed mid-way (SIGKILL: its lock lease stays behind) is resumed.
    let mut drv = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        .args(["slot", "migrate", "100-299", "--to", "1", "--parallel", "2"])
        .args(["--coordinator", &url, "--product", "etcdtest"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(drv.stdout.take().unwrap());
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !line.contains("[OK] slot") {
            assert!(Instant::now() < deadline, "the driver made no progress");
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
        }
    }
    drv.kill().unwrap();
    drv.wait().unwrap();
    let again = ctl(&url, &["slot", "migrate", "100-299", "--to", "1"]);
    assert_eq!(
        again.status.code(),
        Some(2),
        "the dead driver's lock is still held"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force-unlock"));
    ok(ctl(
        &url,
        &["slot", "migrate", "100-299", "--to", "1", "--force-unlock"],
    ));
    assert!(ok(ctl(&url, &["slot", "status"])).contains("no migration"));
    // A third group, then rebalance: even to one slot.
    ok(ctl(&url, &["group", "add", "3"]));
    ok(ctl(&url, &["server", "add", "3", &addr(2)]));
    ok(ctl(&url, &["rebalance"]));
    let sizes = group_sizes(&url);
    assert_eq!(sizes.iter().sum::<usize>(), 1024);
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "{sizes:?}"
    );
    stop.store(true, Ordering::Relaxed);
    let counts = writer.join().unwrap();
    // Every acknowledged write is there exactly once, and the data written before.
    for (i, n) in counts.iter().enumerate() {
        let v = c.cmd(&["GET", &format!("ctr:{i}")]);
        if *n == 0 {
            assert_eq!(v, Frame::NullBulk);
        } else {
            assert_eq!(text(&v), n.to_string(), "ctr:{i}");
        }
    }
    for i in 0..3000 {
        c.send(&["GET".to_string(), format!("k{i}")]);
    }
    for i in 0..3000 {
        assert_eq!(text(&c.read().unwrap()), i.to_string(), "k{i}");
    }
    // Each server holds only keys of the slots its group owns.
    let status = ok(ctl(&url, &["status"]));
    assert!(!status.contains("DOWN"), "{status}");
}

fn cmdstat_calls(c: &mut Conn, cmd: &str) -> u64 {
    text(&c.cmd(&["INFO", "commandstats"]))
        .lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A replica added with `server add` follows its master; with `group replica-read on` the
/// proxies read from it; when the master dies, `group promote` makes the replica the master
/// and the proxies write to it, with every acknowledged write there.
#[test]
fn etcd_replica_reads_and_failover() {
    let etcd = EtcdProc::start();
    let url = etcd.url();
    let server_bin = bin_path("rcodis-server");
    let mut servers: Vec<Option<ServerProc>> = (0..2)
        .map(|_| Some(ServerProc::start(&server_bin, &["--threads", "1"])))
        .collect();
    let replica = ServerProc::start(&server_bin, &["--threads", "2"]);
    let addr = |s: &ServerProc| format!("127.0.0.1:{}", s.port);
    let (m1, m2) = (
        addr(servers[0].as_ref().unwrap()),
        addr(servers[1].as_ref().unwrap()),
    );
    ok(ctl(&url, &["group", "add", "1"]));
    ok(ctl(&url, &["group", "add", "2"]));
    ok(ctl(&url, &["server", "add", "1", &m1]));
    ok(ctl(&url, &["server", "add", "2", &m2]));
    ok(ctl(&url, &["server", "add", "1", &addr(&replica)]));
    ok(ctl(&url, &["slot", "init"]));
    let mut r = replica.conn();
    assert_eq!(
        text(&r.cmd(&["ROLE"]).as_array().unwrap()[0]),
        "slave",
        "server add did not make it a replica"
    );
    let mut cmd = Command::new(bin_path("rcodis-proxy"));
    cmd.args(["--listen", "127.0.0.1:0", "--threads", "1", "--admin", ""])
        .args(["--coordinator", &url, "--product", "etcdtest"]);
    let (_proxy, port) = rcodis_tests::spawn_on_free_port("rcodis-proxy", cmd);
    let mut c = Conn::connect(port);
    for i in 0..2000 {
        c.send(&["SET".to_string(), format!("k{i}"), i.to_string()]);
    }
    for _ in 0..2000 {
        assert_eq!(c.read(), Some(Frame::simple("OK")));
    }
    // The replica has group 1's half.
    let mut m = servers[0].as_ref().unwrap().conn();
    wait_until("the replica to catch up", Duration::from_secs(20), || {
        r.cmd(&["DBSIZE"]) == m.cmd(&["DBSIZE"])
    });
    assert!(r.cmd(&["DBSIZE"]).as_integer().unwrap() > 500);
    // Reads from the replica once the group allows them.
    let before = cmdstat_calls(&mut r, "get");
    ok(ctl(&url, &["group", "replica-read", "1", "on"]));
    wait_until(
        "the proxy to read from the replica",
        Duration::from_secs(20),
        || {
            for i in 0..100 {
                assert_eq!(text(&c.cmd(&["GET", &format!("k{i}")])), i.to_string());
            }
            cmdstat_calls(&mut r, "get") > before
        },
    );
    // Writes still go to the master.
    assert_eq!(c.cmd(&["SET", "k0", "new"]), Frame::simple("OK"));
    // The master dies: promote the replica.
    drop(m);
    servers[0] = None;
    let promoted = ok(ctl(&url, &["group", "promote", "1", &addr(&replica)]));
    assert!(promoted.contains("is group 1's master"), "{promoted}");
    assert_eq!(text(&r.cmd(&["ROLE"]).as_array().unwrap()[0]), "master");
    // Every key is served again, writes work on both groups.
    wait_until(
        "writes to reach the new master",
        Duration::from_secs(20),
        || (0..50).all(|i| c.cmd(&["SET", &format!("after{i}"), "1"]) == Frame::simple("OK")),
    );
    // Reads too: the dead old master (now listed as a replica) is skipped once it failed.
    wait_until(
        "reads to avoid the dead replica",
        Duration::from_secs(20),
        || {
            for i in 1..2000 {
                c.send(&["GET".to_string(), format!("k{i}")]);
            }
            (1..2000)
                .filter(|i| c.read().map(|f| text(&f)) == Some(i.to_string()))
                .count()
                == 1999
        },
    );
    assert_eq!(text(&c.cmd(&["GET", "k0"])), "new");
    let status = ok(ctl(&url, &["status"]));
    assert!(
        status.contains("DOWN"),
        "the dead master is not reported: {status}"
    );
    // Bad input: promoting the master, or a server of another group.
    assert_eq!(
        ctl(&url, &["group", "promote", "1", &addr(&replica)])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        ctl(&url, &["group", "promote", "1", &m2]).status.code(),
        Some(2)
    );
}

/// `dashboard --auto-failover N`: when a group's master stays unreachable for N seconds,
/// the dashboard promotes the replica and the proxies follow; no acknowledged write is lost
/// (the replica had caught up before the master died).
#[test]
fn etcd_dashboard_fails_over_automatically() {
    let etcd = EtcdProc::start();
    let url = etcd.url();
    let server_bin = bin_path("rcodis-server");
    let master = ServerProc::start(&server_bin, &["--threads", "1"]);
    let other = ServerProc::start(&server_bin, &["--threads", "1"]);
    let replica = ServerProc::start(&server_bin, &["--threads", "1"]);
    let addr = |s: &ServerProc| format!("127.0.0.1:{}", s.port);
    ok(ctl(&url, &["group", "add", "1"]));
    ok(ctl(&url, &["group", "add", "2"]));
    ok(ctl(&url, &["server", "add", "1", &addr(&master)]));
    ok(ctl(&url, &["server", "add", "2", &addr(&other)]));
    ok(ctl(&url, &["server", "add", "1", &addr(&replica)]));
    ok(ctl(&url, &["slot", "init"]));
    let mut dash = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"));
    dash.args([
        "dashboard",
        "--listen",
        "127.0.0.1:0",
        "--health-interval",
        "1",
    ])
    .args(["--auto-failover", "2"])
    .args(["--coordinator", &url, "--product", "etcdtest"]);
    let _dash = rcodis_tests::Process::spawn("rcodis-ctl dashboard", dash);
    let mut cmd = Command::new(bin_path("rcodis-proxy"));
    cmd.args(["--listen", "127.0.0.1:0", "--threads", "1", "--admin", ""])
        .args(["--coordinator", &url, "--product", "etcdtest"]);
    let (_proxy, port) = rcodis_tests::spawn_on_free_port("rcodis-proxy", cmd);
    let mut c = Conn::connect(port);
    for i in 0..1000 {
        c.send(&["SET".to_string(), format!("k{i}"), i.to_string()]);
    }
    for _ in 0..1000 {
        assert_eq!(c.read(), Some(Frame::simple("OK")));
    }
    let mut m = master.conn();
    let mut r = replica.conn();
    wait_until("the replica to catch up", Duration::from_secs(20), || {
        r.cmd(&["DBSIZE"]) == m.cmd(&["DBSIZE"])
    });
    drop(m);
    drop(master);
    let group1_master = |url: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(&ok(ctl(url, &["group", "list", "--json"]))).unwrap();
        v[0]["servers"][0].as_str().unwrap().to_string()
    };
    wait_until(
        "the dashboard to promote the replica",
        Duration::from_secs(30),
        || group1_master(&url) == addr(&replica),
    );
    assert_eq!(text(&r.cmd(&["ROLE"]).as_array().unwrap()[0]), "master");
    wait_until("writes to work again", Duration::from_secs(20), || {
        (0..50).all(|i| c.cmd(&["SET", &format!("after{i}"), "1"]) == Frame::simple("OK"))
    });
    for i in 0..1000 {
        c.send(&["GET".to_string(), format!("k{i}")]);
    }
    for i in 0..1000 {
        assert_eq!(text(&c.read().unwrap()), i.to_string(), "k{i}");
    }
}
