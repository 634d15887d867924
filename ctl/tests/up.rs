//! `rcodis-ctl up`: a local cluster comes up, serves through the proxy, `status` shows it,
//! and SIGTERM stops every process it started.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcodis_core::resp::Frame;
use rcodis_tests::{free_port, text, Conn};

fn up(
    dir: &std::path::Path,
    port: u16,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rcodis-ctl"))
        .args(["up", "--groups", "2", "--port", &port.to_string()])
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
    (child, out)
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
    assert!(s.contains(&format!("127.0.0.1:{port}")), "{s}");
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
