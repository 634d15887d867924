//! Debian's redis-cli against rcodis-server: the interactive-style commands users type,
//! inline and RESP, errors printed as redis-cli prints them, and --pipe mass insertion.

use std::io::Write;
use std::process::{Command, Stdio};

use rcodis_tests::ServerProc;

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (install Debian's redis-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_works() {
    let s = ServerProc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_rcodis-server")),
        &["--threads", "2"],
    );
    assert_eq!(cli(s.port, &["PING"]), "PONG\n");
    assert_eq!(cli(s.port, &["SET", "greeting", "hello world"]), "OK\n");
    assert_eq!(cli(s.port, &["GET", "greeting"]), "hello world\n");
    assert_eq!(cli(s.port, &["RPUSH", "l", "a", "b"]), "2\n");
    assert_eq!(
        cli(s.port, &["--no-raw", "LRANGE", "l", "0", "-1"]),
        "1) \"a\"\n2) \"b\"\n"
    );
    assert_eq!(cli(s.port, &["--no-raw", "GET", "missing"]), "(nil)\n");
    assert_eq!(
        cli(s.port, &["--no-raw", "INCR", "greeting"]),
        "(error) ERR value is not an integer or out of range\n"
    );
    assert!(cli(s.port, &["INFO", "server"]).contains("redis_version:7.0.15"));
    // Mass insertion with --pipe (the documented way to load data into Redis).
    let mut input = Vec::new();
    for i in 0..1000 {
        rcodis_core::resp::Request::from_args(["SET", &format!("bulk:{i}"), &i.to_string()])
            .write_resp(&mut input);
    }
    let mut child = Command::new("redis-cli")
        .args(["-p", &s.port.to_string(), "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 1000"), "{text}");
    assert_eq!(cli(s.port, &["DBSIZE"]), "1002\n");
}
