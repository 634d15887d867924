//! `rcodis-ctl up`: a local cluster comes up, serves through the proxy, `status` shows it,
//! and SIGTERM stops every process it started.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcodis_core::resp::Frame;
use rcodis_tests::{free_port, http, text, Conn};

/// `rcodis-ctl up` under test: stopped (SIGTERM, then waited for) when dropped, so a failing
/// test leaves no cluster behind.
struct UpChild(std::process::Child);

impl std::ops::Deref for UpChild {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for UpChild {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for UpChild {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            unsafe_kill(self.0.id(), "TERM");
            let _ = self.0.wait();
        }
    }
}

/// A dashboard POST with the test's admin token.
fn post_tok(addr: &str, path: &str) -> (u16, String) {
    http(addr, "POST", path, "Authorization: Bearer tok\r\n")
}

fn up(dir: &std::path::Path, port: u16) -> (UpChild, BufReader<std::process::ChildStdout>) {
    up_with(dir, port, &[])
}

fn up_with(
    dir: &std::path::Path,
    port: u16,
    extra: &[&str],
) -> (UpChild, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        // Any free admin ports: tests run clusters side by side.
        .args(["up", "--groups", "2", "--port", &port.to_string()])
        .args(["--admin-port", "0"])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut banner = String::new();
    while !banner.contains("Ctrl-C stops the cluster") {
        assert!(Instant::now() < deadline, "up did not come up: {banner}");
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("up exited early: {banner}\n{err}");
        }
        banner.push_str(&line);
    }
    assert!(banner.contains(&format!("redis-cli -p {port}")), "{banner}");
    (UpChild(child), out)
}

#[test]
fn up_serves_stops_cleanly_and_comes_back_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, _out) = up(dir.path(), port);
    let mut c = Conn::connect(port);
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]),
        Frame::simple("OK")
    );
    assert_eq!(
        c.cmd(&["MGET", "a", "b", "c"]),
        Frame::Array(vec![Frame::bulk("1"), Frame::bulk("2"), Frame::bulk("3")])
    );
    assert_eq!(c.cmd(&["DBSIZE"]), Frame::Integer(3));
    let status = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        .args([
            "status",
            "--coordinator",
            &format!("file://{}/coordinator", dir.path().display()),
        ])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{s}");
    assert!(s.contains("0-511") && s.contains("512-1023"), "{s}");
    // Servers with their role and health, proxies with their epoch.
    assert!(
        s.contains("master") && s.contains("current") && !s.contains("DOWN"),
        "{s}"
    );
    assert!(s.contains(&format!("127.0.0.1:{port}")), "{s}");
    // Each proxy's load, from its admin API: this test's connection is one of its sessions.
    let proxy_line: Vec<&str> = s
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port}")))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(proxy_line.len(), 6, "{s}");
    assert!(proxy_line[4].parse::<u64>().unwrap() >= 1, "{s}");
    assert!(proxy_line[5].parse::<u64>().is_ok(), "{s}");
    // Every server and proxy it started runs its shard (executor) threads under SCHED_BATCH
    // (they share this host's cores); their helper threads keep the default policy.
    let procs = batch_threads(child.id());
    assert_eq!(procs.len(), 3, "two servers and a proxy: {procs:?}");
    assert!(procs.iter().all(|&(_, n)| n == 1), "{procs:?}");
    // SIGTERM: everything it started stops, and it exits 0.
    let pids_before = text(&c.cmd(&["INFO"]));
    assert!(pids_before.contains("rcodis-proxy"));
    unsafe_kill(child.id(), "TERM");
    let st = child.wait().unwrap();
    assert!(st.success(), "up exited with {st}");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "proxy still running after up stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server of the cluster that crashes (SIGKILL) is started again by `up` and serves its
/// keys again, reloaded from its append-only log; `up` says so on its standard error.
#[test]
fn up_restarts_a_server_that_exits() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, _out) = up(dir.path(), port);
    let mut c = Conn::connect(port);
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]),
        Frame::simple("OK")
    );
    // (Each batch's log records are written before its replies leave: a killed process loses
    // none of them, synced or not.)
    let servers = server_pids(child.id());
    assert_eq!(servers.len(), 2, "{servers:?}");
    unsafe_kill(servers[0], "KILL");
    rcodis_tests::wait_until(
        "the killed server to be started again",
        Duration::from_secs(30),
        || {
            let now = server_pids(child.id());
            now.len() == 2 && !now.contains(&servers[0])
        },
    );
    rcodis_tests::wait_until("every key back", Duration::from_secs(30), || {
        let mut c = Conn::connect(port);
        c.cmd(&["MGET", "a", "b", "c"])
            == Frame::Array(vec![Frame::bulk("1"), Frame::bulk("2"), Frame::bulk("3")])
    });
    assert!(matches!(child.try_wait(), Ok(None)), "up is still running");
    unsafe_kill(child.id(), "TERM");
    let st = child.wait().unwrap();
    assert!(st.success(), "up exited with {st}");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("exited") && err.contains("restarting it"),
        "{err}"
    );
}

/// The PIDs of `parent`'s rcodis-server children.
fn server_pids(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .filter(|(_, name)| name.starts_with("rcodis-server"))
        .map(|(pid, _)| pid)
        .collect()
}

/// The child processes of `parent`: PID and name.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some((name, f)) = stat_fields(&e.path().join("stat")) else {
            continue;
        };
        // Not a zombie (state Z), child of `parent` (ppid, the second field after the name).
        if f.first().map(String::as_str) != Some("Z")
            && f.get(1).map(String::as_str) == Some(parent.to_string().as_str())
        {
            out.push((pid, name));
        }
    }
    out
}

/// The fields of a /proc stat line after the command name (the first is the state).
fn stat_fields(path: &std::path::Path) -> Option<(String, Vec<String>)> {
    let s = std::fs::read_to_string(path).ok()?;
    let (head, tail) = s.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    Some((comm, tail.split_whitespace().map(String::from).collect()))
}

/// For each child process of `parent`: its name and how many of its threads run under
/// SCHED_BATCH.
fn batch_threads(parent: u32) -> Vec<(String, usize)> {
    children_of(parent)
        .into_iter()
        .map(|(pid, name)| {
            let batch = std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .flatten()
                .filter_map(|t| stat_fields(&t.path().join("stat")))
                // Field 41 (policy) is index 38 counting from field 3; SCHED_BATCH is 3.
                .filter(|(_, tf)| tf.get(38).map(String::as_str) == Some("3"))
                .count();
            (name, batch)
        })
        .collect()
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

#[test]
fn bad_arguments_are_refused_with_status_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        .args(["up", "--groups", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--groups"));
    let out = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn ctl(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        .args(args)
        .arg("--coordinator")
        .arg(format!("file://{}/coordinator", dir.display()))
        .output()
        .unwrap()
}

/// Clients write and read through the proxy while slots move both ways between the groups
/// (async and sync): afterwards no acknowledged write is lost, no read was stale, and the
/// moved slots live only on their new group.
#[test]
fn migration_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, _out) = up(dir.path(), port);
    // Data in two databases, some of it big, before the move.
    let mut c = Conn::connect(port);
    for db in ["0", "3"] {
        c.cmd(&["SELECT", db]);
        for i in 0..2000 {
            c.send(&["SET".to_string(), format!("pre:{i}"), format!("{db}:{i}")]);
        }
        for _ in 0..2000 {
            assert_eq!(c.read(), Some(Frame::simple("OK")));
        }
        let mut h = vec!["HSET".to_string(), "bighash".to_string()];
        for i in 0..5000 {
            h.extend([format!("f{i}"), format!("v{i}")]);
        }
        c.cmd(&h);
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(port);
                c.set_timeout(Duration::from_secs(30));
                let mut counters = vec![0i64; 32];
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = format!("w{t}:{i}");
                    assert_eq!(
                        c.cmd(&["SET", &k, &i.to_string()]),
                        Frame::simple("OK"),
                        "SET {k}"
                    );
                    // Read-your-write through the proxy: never stale, never missing.
                    assert_eq!(text(&c.cmd(&["GET", &k])), i.to_string(), "GET {k}");
                    let ck = format!("ctr:{t}:{}", i % 32);
                    let r = c.cmd(&["INCR", &ck]);
                    counters[(i % 32) as usize] += 1;
                    assert_eq!(r, Frame::Integer(counters[(i % 32) as usize]), "INCR {ck}");
                    i += 1;
                }
                (i, counters)
            })
        })
        .collect();
    // Wait for the writers to be going, then move slots: 0-39 to group 2 (async), and
    // 1000-1015 to group 1 (sync).
    rcodis_tests::wait_until("writers", Duration::from_secs(60), || {
        c.cmd(&["SELECT", "0"]);
        c.cmd(&["DBSIZE"]).as_integer().unwrap() > 2100
    });
    let out = ctl(dir.path(), &["slot", "migrate", "0-39", "--to", "2"]);
    let so = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{so}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(so.matches("[OK] slot").count(), 40, "{so}");
    let out = ctl(
        dir.path(),
        &[
            "slot",
            "migrate",
            "1000-1015",
            "--to",
            "1",
            "--method",
            "sync",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second run finds nothing left to do.
    let out = ctl(dir.path(), &["slot", "migrate", "0-39", "--to", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&ctl(dir.path(), &["slot", "status"]).stdout)
            .contains("no migration")
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    // Every acknowledged write is there, once.
    c.cmd(&["SELECT", "0"]);
    for (t, (n, counters)) in results.iter().enumerate() {
        assert!(*n > 0);
        for i in (0..*n).step_by(7) {
            assert_eq!(text(&c.cmd(&["GET", &format!("w{t}:{i}")])), i.to_string());
        }
        for (j, want) in counters.iter().enumerate() {
            let got = c.cmd(&["GET", &format!("ctr:{t}:{j}")]);
            if *want == 0 {
                assert_eq!(got, Frame::NullBulk);
            } else {
                assert_eq!(text(&got), want.to_string(), "ctr:{t}:{j}");
            }
        }
    }
    for db in ["0", "3"] {
        c.cmd(&["SELECT", db]);
        for i in 0..2000 {
            assert_eq!(
                text(&c.cmd(&["GET", &format!("pre:{i}")])),
                format!("{db}:{i}")
            );
        }
        assert_eq!(c.cmd(&["HLEN", "bighash"]), Frame::Integer(5000));
    }
    // The moved slots are on their new group only.
    let ports: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cluster.json")).unwrap()).unwrap();
    let g1 = ports["servers"][0].as_u64().unwrap() as u16;
    let g2 = ports["servers"][1].as_u64().unwrap() as u16;
    for db in ["0", "3"] {
        let mut a = Conn::connect(g1);
        a.cmd(&["SELECT", db]);
        let r = a.cmd(&["SLOTSINFO", "0", "40"]);
        assert_eq!(
            r,
            Frame::Array(vec![]),
            "group 1 still holds slots 0-39 in db {db}"
        );
        let mut b = Conn::connect(g2);
        b.cmd(&["SELECT", db]);
        let r = b.cmd(&["SLOTSINFO", "1000", "16"]);
        assert_eq!(
            r,
            Frame::Array(vec![]),
            "group 2 still holds slots 1000-1015 in db {db}"
        );
    }
    let st = String::from_utf8_lossy(&ctl(dir.path(), &["status"]).stdout).to_string();
    assert!(
        st.contains("40-511") && st.contains("0-39") && st.contains("1000-1015"),
        "{st}"
    );
    unsafe_kill(child.id(), "TERM");
    child.wait().unwrap();
}

fn group_sizes(dir: &std::path::Path) -> Vec<(u16, usize)> {
    let out = ctl(dir, &["group", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["id"].as_u64().unwrap() as u16,
                g["slots"].as_u64().unwrap() as usize,
            )
        })
        .collect()
}

/// A third group joins and `rebalance` evens the slots; the driver killed mid-way resumes.
#[test]
fn add_a_group_rebalance_and_resume_a_killed_driver() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, _out) = up(dir.path(), port);
    let mut c = Conn::connect(port);
    for i in 0..3000 {
        c.send(&["SET".to_string(), format!("k{i}"), i.to_string()]);
    }
    for _ in 0..3000 {
        assert_eq!(c.read(), Some(Frame::simple("OK")));
    }
    // Bad input: exit 2, nothing changed.
    for args in [
        &["slot", "migrate", "0-10", "--to", "9"][..],
        &["slot", "migrate", "5-1", "--to", "2"],
        &["group", "add", "0"],
        &["server", "add", "1", "127.0.0.1:1"],
    ] {
        let out = ctl(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let extra = rcodis_tests::ServerProc::start(
        &rcodis_tests::bin_path("rcodis-server"),
        &["--threads", "1"],
    );
    for args in [
        &["group", "add", "3"][..],
        &["server", "add", "3", &format!("127.0.0.1:{}", extra.port)],
    ] {
        let out = ctl(dir.path(), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = ctl(dir.path(), &["rebalance", "--dry-run"]);
    let plan = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        plan.contains("group 1 -> group 3") && plan.contains("group 2 -> group 3"),
        "{plan}"
    );
    assert_eq!(
        group_sizes(dir.path()),
        vec![(1, 512), (2, 512), (3, 0)],
        "dry run changed nothing"
    );
    // Kill the driver a few times while it works; each new run resumes.
    for _ in 0..3 {
        let mut drv = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
            .args([
                "rebalance",
                "--parallel",
                "8",
                "--force-unlock",
                "--coordinator",
            ])
            .arg(format!("file://{}/coordinator", dir.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = group_sizes(dir.path())[2].1;
        rcodis_tests::wait_until(
            "the driver to make progress",
            Duration::from_secs(60),
            || group_sizes(dir.path())[2].1 > before + 8,
        );
        drv.kill().unwrap();
        drv.wait().unwrap();
    }
    let out = ctl(
        dir.path(),
        &["rebalance", "--parallel", "16", "--force-unlock"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sizes = group_sizes(dir.path());
    for (g, n) in &sizes {
        assert!(
            (341..=342).contains(n),
            "group {g} has {n} slots: {sizes:?}"
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&ctl(dir.path(), &["rebalance", "--dry-run"]).stdout).trim(),
        "already balanced"
    );
    // Data intact, and the new group really holds its share.
    assert_eq!(c.cmd(&["DBSIZE"]), Frame::Integer(3000));
    for i in (0..3000).step_by(3) {
        assert_eq!(text(&c.cmd(&["GET", &format!("k{i}")])), i.to_string());
    }
    let on_extra = extra.conn().cmd(&["DBSIZE"]).as_integer().unwrap();
    assert!(
        (800..1200).contains(&on_extra),
        "{on_extra} keys on the new group"
    );
    unsafe_kill(child.id(), "TERM");
    child.wait().unwrap();
}

fn extra_proxy(dir: &std::path::Path) -> (rcodis_tests::Process, u16) {
    let mut cmd = Command::new(rcodis_tests::bin_path("rcodis-proxy"));
    cmd.args(["--listen", "127.0.0.1:0", "--threads", "1", "--admin", ""])
        .arg("--coordinator")
        .arg(format!("file://{}/coordinator", dir.display()));
    rcodis_tests::spawn_on_free_port("rcodis-proxy", cmd)
}

/// A proxy that stops acknowledging (SIGSTOP) blocks phase 1, which is rolled back with a
/// message naming it; after SIGCONT the migration goes through. A proxy killed outright is
/// dropped when its registration expires, and the step goes on.
#[test]
fn a_silent_proxy_blocks_the_two_phase_commit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, _out) = up(dir.path(), port);
    let (stopped, sport) = extra_proxy(dir.path());
    let mut via = Conn::connect(sport);
    via.cmd(&["SET", "k", "v"]);
    let proxies = || -> Vec<serde_json::Value> {
        let out = ctl(dir.path(), &["proxy", "list", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    rcodis_tests::wait_until("two proxies registered", Duration::from_secs(10), || {
        proxies().len() == 2
    });
    let pid = stopped.pid();
    let token = proxies()
        .into_iter()
        .find(|p| p["pid"].as_u64() == Some(pid as u64))
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    unsafe_kill(pid, "STOP");
    let out = ctl(
        dir.path(),
        &["slot", "migrate", "5", "--to", "2", "--ack-timeout", "3"],
    );
    let e = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("did not acknowledge") && e.contains(&token) && e.contains("rolled back"),
        "{e}"
    );
    let st = String::from_utf8_lossy(&ctl(dir.path(), &["slot", "status"]).stdout).to_string();
    assert!(st.contains("preparing"), "{st}");
    unsafe_kill(pid, "CONT");
    let out = ctl(dir.path(), &["slot", "migrate", "5", "--to", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Killed outright: its entry expires and the next migration proceeds without it.
    stopped.signal("KILL");
    let t = Instant::now();
    let out = ctl(dir.path(), &["slot", "migrate", "6", "--to", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    assert_eq!(proxies().len(), 1);
    let mut c = Conn::connect(port);
    assert_eq!(text(&c.cmd(&["GET", "k"])), "v");
    unsafe_kill(child.id(), "TERM");
    child.wait().unwrap();
}

fn json_get(addr: &str, path: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", path, "");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The dashboard: reads, token-protected mutations, server health, background driving of
/// migrations recorded by `slot migrate --detach` and through the API, and one driver at a
/// time (a foreground `slot migrate` is refused while it runs).
#[test]
fn dashboard_serves_the_api_and_drives_migrations() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Each group with a replica that serves reads.
    let (_up, _out) = up_with(
        dir.path(),
        port,
        &["--replicas", "1", "--read-from-replica"],
    );
    let mut c = Conn::connect(port);
    for i in 0..2000 {
        c.send(&["SET".to_string(), format!("k{i}"), i.to_string()]);
    }
    for _ in 0..2000 {
        assert_eq!(c.read(), Some(Frame::Simple("OK".into())));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        .args([
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--admin-token",
            "tok",
            "--health-interval",
            "1",
            "--coordinator",
        ])
        .arg(format!("file://{}/coordinator", dir.path().display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let dash = UpChild(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    // Keep reading its log so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut l = String::new();
        while out.read_line(&mut l).map(|n| n > 0).unwrap_or(false) {
            l.clear();
        }
    });
    // Health: every server reachable, with its keys.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let v = json_get(&addr, "/api/status");
        let servers: Vec<&serde_json::Value> = v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["servers"].as_array().unwrap())
            .collect();
        let synced = servers
            .iter()
            .map(|s| s["health"]["keys"].as_u64().unwrap_or(0))
            .sum::<u64>()
            == 4000;
        if servers.len() == 4 && servers.iter().all(|s| s["health"]["reachable"] == true) && synced
        {
            break v;
        }
        assert!(Instant::now() < deadline, "health never checked: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let keys: u64 = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["servers"].as_array().unwrap())
        .map(|s| s["health"]["keys"].as_u64().unwrap())
        .sum();
    assert_eq!(keys, 4000, "{status}");
    let roles: Vec<String> = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["servers"].as_array().unwrap())
        .map(|s| s["health"]["role"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles, ["master", "slave", "master", "slave"], "{status}");
    assert_eq!(status["proxies"].as_array().unwrap().len(), 1, "{status}");
    // Mutations need the token.
    assert_eq!(http(&addr, "POST", "/api/groups/3", "").0, 401);
    assert_eq!(
        http(
            &addr,
            "POST",
            "/api/groups/3",
            "Authorization: Bearer nope\r\n"
        )
        .0,
        403
    );
    let (code, body) = post_tok(&addr, "/api/groups/3");
    assert_eq!(code, 200, "{body}");
    let (code, body) = post_tok(&addr, "/api/groups/3");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("exists"), "{body}");
    let (code, _) = http(&addr, "DELETE", "/api/groups/3", "X-Admin-Token: tok\r\n");
    assert_eq!(code, 200);
    // The dashboard holds the driver lock: a foreground migration is refused...
    let fg = ctl(dir.path(), &["slot", "migrate", "0-3", "--to", "2"]);
    assert_eq!(fg.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&fg.stderr).contains("another driver"),
        "{}",
        String::from_utf8_lossy(&fg.stderr)
    );
    // ... a detached one is driven by the dashboard, as is one asked through the API.
    let det = ctl(
        dir.path(),
        &["slot", "migrate", "0-7", "--to", "2", "--detach"],
    );
    assert!(
        det.status.success(),
        "{}",
        String::from_utf8_lossy(&det.stderr)
    );
    let (code, body) = post_tok(&addr, "/api/slots/migrate/8-15/2?method=sync");
    assert_eq!(code, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = json_get(&addr, "/api/topology");
        let done = t["slots"].as_array().unwrap()[..16]
            .iter()
            .all(|s| s["group"] == 2 && s["action"].is_null());
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "migrations not driven: {t}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = json_get(&addr, "/api/status");
    assert_eq!(v["migrations"].as_array().unwrap().len(), 0, "{v}");
    let load = &v["proxy_load"][0];
    assert!(
        load["reachable"] == true && load["sessions"].as_u64() >= Some(1),
        "{v}"
    );
    assert!(v["driver"]["finished_runs"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(json_get(&addr, "/api/slots"), serde_json::json!([]));
    // Every key is still there, through the proxy (reads may come from replicas, which
    // catch up with the moved slots' new masters).
    rcodis_tests::wait_until("reads to see every key", Duration::from_secs(20), || {
        reads_every_key(&mut c, 2000)
    });
    // A rebalance plan (dry run) through the API.
    let (code, body) = post_tok(&addr, "/api/rebalance?dry_run=1");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("group 2 -> group 1"), "{body}");
    // Failover through the API: group 1's replica becomes its master, the old master
    // follows it, every key is still served; reads from replicas can be turned off.
    let topo = json_get(&addr, "/api/topology");
    let replica = topo["groups"]["1"]["servers"][1]
        .as_str()
        .unwrap()
        .to_string();
    let old_master = topo["groups"]["1"]["servers"][0]
        .as_str()
        .unwrap()
        .to_string();
    let (code, body) = post_tok(&addr, &format!("/api/groups/1/promote/{replica}"));
    assert_eq!(code, 200, "{body}");
    let topo = json_get(&addr, "/api/topology");
    assert_eq!(
        topo["groups"]["1"]["servers"][0],
        replica.as_str(),
        "{topo}"
    );
    let (code, body) = post_tok(&addr, "/api/groups/1/replica-read/off");
    assert_eq!(code, 200, "{body}");
    let (code, _) = post_tok(&addr, "/api/groups/1/replica-read/maybe");
    assert_eq!(code, 400);
    let old_port: u16 = old_master.rsplit_once(':').unwrap().1.parse().unwrap();
    rcodis_tests::wait_until("the old master to follow", Duration::from_secs(20), || {
        let r = Conn::connect(old_port).cmd(&["ROLE"]);
        matches!(&r, Frame::Array(v) if v[0] == Frame::bulk("slave") && v[3] == Frame::bulk("connected"))
    });
    rcodis_tests::wait_until(
        "every key after the failover",
        Duration::from_secs(20),
        || reads_every_key(&mut c, 2000),
    );
    assert_eq!(c.cmd(&["SET", "after-failover", "1"]), Frame::simple("OK"));
    drop(dash);
}

/// The driver dies right after persisting each step of a migration (preparing, prepared,
/// migrating, data moved, finished); the next run resumes from the persisted state, and the
/// slot ends on its new group with every key there, once, and none left on the old one.
#[test]
fn a_driver_killed_after_each_step_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (mut child, _out) = up(dir.path(), port);
    let mut c = Conn::connect(port);
    let topo: serde_json::Value =
        serde_json::from_slice(&ctl(dir.path(), &["status", "--json"]).stdout).unwrap();
    let source = topo["topology"]["groups"]["1"]["servers"][0]
        .as_str()
        .unwrap()
        .to_string();
    let source_port: u16 = source.rsplit_once(':').unwrap().1.parse().unwrap();
    let points = [
        ("preparing", "preparing"),
        ("prepared", "prepared"),
        ("migrating", "migrating"),
        ("moved", "migrating"),
        ("finished", "finished"),
    ];
    for (slot, (point, persisted)) in points.iter().enumerate() {
        let slot = slot as u16; // group 1 owns 0-511
        let keys: Vec<String> = (0..)
            .map(|n| format!("key{n}"))
            .filter(|k| rcodis_core::slot::slot_of(k.as_bytes()) == slot)
            .take(20)
            .collect();
        for k in &keys {
            assert_eq!(c.cmd(&["SET", k, &format!("v-{k}")]), Frame::simple("OK"));
        }
        let out = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
            .args(["slot", "migrate", &slot.to_string(), "--to", "2"])
            .arg("--coordinator")
            .arg(format!("file://{}/coordinator", dir.path().display()))
            .env("RCODIS_CTL_CRASH_AFTER", point)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(137), "{point}: {out:?}");
        let st: serde_json::Value =
            serde_json::from_slice(&ctl(dir.path(), &["slot", "status", "--json"]).stdout).unwrap();
        assert_eq!(st[0]["slot"], slot, "{st}");
        assert_eq!(st[0]["action"]["state"], *persisted, "{point}: {st}");
        // Without --force-unlock the dead driver's lock refuses a new one.
        let blocked = ctl(
            dir.path(),
            &["slot", "migrate", &slot.to_string(), "--to", "2"],
        );
        assert_eq!(blocked.status.code(), Some(2), "{point}");
        let resumed = ctl(
            dir.path(),
            &[
                "slot",
                "migrate",
                &slot.to_string(),
                "--to",
                "2",
                "--force-unlock",
            ],
        );
        assert!(
            resumed.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let st = String::from_utf8_lossy(&ctl(dir.path(), &["slot", "status"]).stdout).to_string();
        assert!(st.contains("no migration"), "{point}: {st}");
        for k in &keys {
            assert_eq!(text(&c.cmd(&["GET", k])), format!("v-{k}"), "{point}: {k}");
        }
        let mut src = Conn::connect(source_port);
        let left = src.cmd(&["SLOTSINFO", &slot.to_string(), "1"]);
        assert_eq!(
            left,
            Frame::Array(vec![]),
            "{point}: keys left on the source"
        );
        assert_eq!(c.cmd(&["SET", &keys[0], "after"]), Frame::simple("OK"));
    }
    let sizes = group_sizes(dir.path());
    assert_eq!(sizes, vec![(1, 507), (2, 517)]);
    unsafe_kill(child.id(), "TERM");
    child.wait().unwrap();
}

/// Whether GET `k{i}` through `c` answers `i` for every i below `n` (one pipeline).
fn reads_every_key(c: &mut Conn, n: usize) -> bool {
    for i in 0..n {
        c.send(&["GET".to_string(), format!("k{i}")]);
    }
    (0..n)
        .map(|i| c.read().map(|f| f == Frame::Bulk(i.to_string().into())))
        .filter(|ok| *ok == Some(true))
        .count()
        == n
}
