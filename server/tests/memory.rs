//! maxmemory: noeviction refuses writes with Redis's OOM error and keeps serving reads;
//! allkeys-lru keeps memory near the budget while a writer fills twice of it, and recently
//! read keys survive far more often than cold ones; CONFIG SET takes effect at once.

use rcodis_core::resp::Frame;
use rcodis_tests::{text, Conn, ServerProc};

fn info_field(c: &mut Conn, section: &str, field: &str) -> u64 {
    let info = text(&c.cmd(&["INFO", section]));
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing in INFO {section}"))
}

fn server(policy: &str) -> (ServerProc, u64) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_rcodis-server"));
    let s = ServerProc::start(bin, &["--threads", "2", "--maxmemory-policy", policy]);
    let mut c = s.conn();
    let base = info_field(&mut c, "memory", "used_memory");
    (s, base)
}

#[test]
fn noeviction_refuses_writes_and_serves_reads() {
    let (s, base) = server("noeviction");
    let mut c = s.conn();
    let budget = base + 8 * 1024 * 1024;
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "maxmemory", &budget.to_string()]),
        Frame::simple("OK")
    );
    let val = "v".repeat(1000);
    let mut refused_at = None;
    for i in 0..20_000 {
        let r = c.cmd(&["SET", &format!("k{i}"), &val]);
        if r.is_error() {
            assert_eq!(
                text(&r),
                "OOM command not allowed when used memory > 'maxmemory'."
            );
            refused_at = Some(i);
            break;
        }
    }
    let n = refused_at.expect("writes are refused once over budget");
    assert!(n > 1000, "refused too early ({n})");
    assert_eq!(text(&c.cmd(&["GET", "k1"])), val);
    assert_eq!(c.cmd(&["DBSIZE"]), Frame::Integer(n as i64));
    // Commands that do not grow memory still work; raising the budget lets writes through.
    assert_eq!(c.cmd(&["DEL", "k1"]), Frame::Integer(1));
    // The peak stays at the high-water mark after keys go; sizes are written as Redis
    // writes them.
    let info = text(&c.cmd(&["INFO", "memory"]));
    let peak = info_field(&mut c, "memory", "used_memory_peak");
    assert!(
        peak >= budget,
        "peak {peak} below the budget {budget} it reached"
    );
    assert!(
        info.contains(&format!(
            "\r\nmaxmemory_human:{:.2}M\r\n",
            budget as f64 / 1048576.0
        )),
        "{info}"
    );
    c.cmd(&["FLUSHALL"]);
    assert!(info_field(&mut c, "memory", "used_memory") < peak);
    assert_eq!(info_field(&mut c, "memory", "used_memory_peak"), peak);
    c.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(text(&c.cmd(&["INFO", "memory"])).contains("\r\nmaxmemory_human:0B\r\n"));
    assert_eq!(c.cmd(&["SET", "after", "1"]), Frame::simple("OK"));
}

#[test]
fn allkeys_lru_keeps_the_budget_and_the_hot_keys() {
    let (s, base) = server("allkeys-lru");
    let mut c = s.conn();
    let budget = base + 12 * 1024 * 1024;
    c.cmd(&["CONFIG", "SET", "maxmemory", &budget.to_string()]);
    c.cmd(&["CONFIG", "SET", "maxmemory-samples", "10"]);
    let val = "v".repeat(1000);
    let hot: Vec<String> = (0..200).map(|i| format!("hot{i}")).collect();
    for k in &hot {
        c.cmd(&["SET", k, &val]);
    }
    let cold: Vec<String> = (0..200).map(|i| format!("cold{i}")).collect();
    for k in &cold {
        c.cmd(&["SET", k, &val]);
    }
    // Write about twice the budget; keep reading the hot keys.
    let writes = 2 * 12 * 1024;
    for i in 0..writes {
        assert_eq!(
            c.cmd(&["SET", &format!("fill{i}"), &val]),
            Frame::simple("OK"),
            "write {i}"
        );
        if i % 50 == 0 {
            for k in hot.iter().skip((i / 50) % 4).step_by(4) {
                c.cmd(&["GET", k]);
            }
        }
    }
    let used = info_field(&mut c, "memory", "used_memory");
    assert!(
        used <= budget + budget / 10,
        "used {used} over budget {budget}"
    );
    assert!(info_field(&mut c, "stats", "evicted_keys") > 1000);
    let alive = |c: &mut Conn, keys: &[String]| {
        keys.iter()
            .filter(|k| c.cmd(&["EXISTS", k]) == Frame::Integer(1))
            .count()
    };
    let (h, k) = (alive(&mut c, &hot), alive(&mut c, &cold));
    eprintln!("hot keys alive {h}, cold keys alive {k}");
    assert!(
        h > 3 * k.max(1) && h > 100,
        "hot keys alive {h}, cold keys alive {k}"
    );
}
