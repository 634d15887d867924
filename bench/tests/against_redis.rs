//! rcodis-bench against Debian's redis-server: the requests it reports are the ones the
//! server's INFO commandstats saw (within 1%), hits and misses add up, the JSON file holds the
//! same figures, and a server answering errors makes the run fail loudly.

use std::process::Command;

use rcodis_core::resp::Frame;
use rcodis_tests::{text, RedisRef};

const BIN: &str = env!("CARGO_BIN_EXE_rcodis-bench");

fn calls(r: &RedisRef, cmd: &str) -> u64 {
    let info = text(&rcodis_tests::Conn::connect(r.port).cmd(&["INFO", "commandstats"]));
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{cmd}:calls=")))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

fn totals_ops(out: &str, row: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(row))
        .unwrap_or_else(|| panic!("no {row} row in\n{out}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn counts_match_the_servers_commandstats() {
    let r = RedisRef::start();
    let json = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(BIN)
        .args([
            "--port",
            &r.port.to_string(),
            "--threads",
            "2",
            "--clients",
            "5",
        ])
        .args(["--pipeline", "8", "--requests", "3000", "--ratio", "1:3"])
        .args(["--key-maximum", "999", "--prefill", "--hide-histogram"])
        .arg("--json-out-file")
        .arg(json.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in ["Sets", "Gets", "Waits", "Totals"] {
        totals_ops(&stdout, row);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    let all = &v["ALL STATS"];
    let sets = all["Sets"]["Count"].as_u64().unwrap();
    let gets = all["Gets"]["Count"].as_u64().unwrap();
    assert_eq!(sets + gets, 2 * 5 * 3000, "every client sent its requests");
    assert_eq!(all["Totals"]["Errors"], 0);
    // The prefill SET every key; the server saw prefill + measured requests.
    let (srv_set, srv_get) = (calls(&r, "set"), calls(&r, "get"));
    let want_set = sets + 1000;
    assert!(
        srv_set.abs_diff(want_set) * 100 <= want_set,
        "SET: server {srv_set}, bench {want_set}"
    );
    assert!(
        srv_get.abs_diff(gets) * 100 <= gets,
        "GET: server {srv_get}, bench {gets}"
    );
    // After the prefill every GET hits.
    let hits = all["Gets"]["Hits/sec"].as_f64().unwrap();
    let misses = all["Gets"]["Misses/sec"].as_f64().unwrap();
    assert!(hits > 0.0 && misses == 0.0, "hits {hits} misses {misses}");
    let p99 = all["Totals"]["Percentile Latencies"]["p99.00"]
        .as_f64()
        .unwrap();
    let p50 = all["Totals"]["Percentile Latencies"]["p50.00"]
        .as_f64()
        .unwrap();
    assert!(p50 > 0.0 && p99 >= p50);
}

#[test]
fn arbitrary_commands_and_test_time() {
    let r = RedisRef::start();
    let out = Command::new(BIN)
        .args([
            "--port",
            &r.port.to_string(),
            "--threads",
            "1",
            "--clients",
            "4",
        ])
        .args([
            "--test-time",
            "1",
            "--key-prefix",
            "ctr:",
            "--key-maximum",
            "49",
        ])
        .args(["--command", "INCR __key__", "--command-key-pattern", "P"])
        .args([
            "--command",
            "LPUSH list:__key__ __data__",
            "--command-ratio",
            "1",
        ])
        .args(["--command-ratio", "3", "--command-key-pattern", "Z"])
        .arg("--data-size")
        .arg("8")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let incr = totals_ops(&stdout, "INCR");
    let lpush = totals_ops(&stdout, "LPUSH");
    assert!(incr > 0.0 && lpush > 0.0, "{stdout}");
    // The INCRs the server counted are the counters' sum.
    let mut c = rcodis_tests::Conn::connect(r.port);
    let mut sum = 0i64;
    for k in 0..50 {
        if let Frame::Bulk(b) = c.cmd(&["GET", &format!("ctr:{k}")]) {
            sum += std::str::from_utf8(&b).unwrap().parse::<i64>().unwrap();
        }
    }
    assert_eq!(sum as u64, calls(&r, "incr"));
    assert!(stdout.contains("Request Latency Distribution"));
}

#[test]
fn a_server_answering_errors_fails_the_run() {
    let r = RedisRef::start();
    let mut c = rcodis_tests::Conn::connect(r.port);
    c.cmd(&["SET", "k:1", "not-a-list"]);
    let out = Command::new(BIN)
        .args([
            "--port",
            &r.port.to_string(),
            "--threads",
            "1",
            "--clients",
            "1",
        ])
        .args([
            "--requests",
            "50",
            "--key-prefix",
            "k:",
            "--key-minimum",
            "1",
            "--key-maximum",
            "1",
        ])
        .args(["--command", "LPUSH __key__ __data__", "--hide-histogram"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("FAILED: 50 error replies") && stderr.contains("WRONGTYPE"),
        "{stderr}"
    );
    // Errors are not throughput.
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(totals_ops(&stdout, "Totals"), 0.0, "{stdout}");
    // A wrong password is refused before any load.
    let out = Command::new(BIN)
        .args([
            "--port",
            &r.port.to_string(),
            "--authenticate",
            "nope",
            "--requests",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set-up command refused"));
}
