//! Output: memtier_benchmark's table layout, the latency distribution, the JSON file, and
//! the once-a-second progress line on a terminal.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{Args, CmdDef, Plan, Stats};

fn ms(us: f64) -> f64 {
    us / 1000.0
}

fn pct(s: &Stats, p: f64) -> f64 {
    ms(s.hist.value_at_quantile(p / 100.0) as f64)
}

/// The table (and the distribution unless hidden), as memtier prints them.
pub fn table(cmds: &[CmdDef], st: &[Stats], elapsed: Duration, hide_histogram: bool) -> String {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut total = Stats::new_public();
    for s in st {
        total.merge_public(s);
    }
    let mut o = String::new();
    let rule = "=".repeat(123);
    let dash = "-".repeat(123);
    let _ = writeln!(o, "\nALL STATS\n{rule}");
    let _ = writeln!(
        o,
        "{:<6}{:>14}{:>13}{:>13}{:>16}{:>16}{:>16}{:>16}{:>13} ",
        "Type",
        "Ops/sec",
        "Hits/sec",
        "Misses/sec",
        "Avg. Latency",
        "p50 Latency",
        "p99 Latency",
        "p99.9 Latency",
        "KB/sec"
    );
    let _ = writeln!(o, "{dash}");
    let row = |o: &mut String, name: &str, s: &Stats, hits: bool| {
        let (h, m) = if hits {
            (
                format!("{:.2}", s.hits as f64 / secs),
                format!("{:.2}", s.misses as f64 / secs),
            )
        } else {
            ("---".to_string(), "---".to_string())
        };
        if s.ops == 0 {
            let _ = writeln!(
                o,
                "{name:<6}{:>14.2}{h:>13}{m:>13}{:>16}{:>16}{:>16}{:>16}{:>13.2} ",
                0.0,
                "---",
                "---",
                "---",
                "---",
                s.bytes as f64 / 1024.0 / secs
            );
            return;
        }
        let _ = writeln!(
            o,
            "{name:<6}{:>14.2}{h:>13}{m:>13}{:>16.5}{:>16.5}{:>16.5}{:>16.5}{:>13.2} ",
            s.ops as f64 / secs,
            ms(s.hist.mean()),
            pct(s, 50.0),
            pct(s, 99.0),
            pct(s, 99.9),
            s.bytes as f64 / 1024.0 / secs
        );
    };
    for (c, s) in cmds.iter().zip(st) {
        row(&mut o, &c.name, s, c.counts_hits);
    }
    if cmds.iter().all(|c| c.name == "Sets" || c.name == "Gets") {
        let _ = writeln!(
            o,
            "{:<6}{:>14.2}{:>13}{:>13}{:>16}{:>16}{:>16}{:>16}{:>13} ",
            "Waits", 0.0, "---", "---", "---", "---", "---", "---", "---"
        );
    }
    row(&mut o, "Totals", &total, cmds.iter().any(|c| c.counts_hits));
    let _ = writeln!(
        o,
        "\nErrors: {}   Timeouts: {}   Requests: {}   Duration: {:.2} s",
        total.errors, total.timeouts, total.ops, secs
    );
    if !hide_histogram {
        let _ = writeln!(
            o,
            "\n\nRequest Latency Distribution\n{:<8}{:>12}{:>16}\n{}",
            "Type",
            "<= msec",
            "Percent",
            "-".repeat(72)
        );
        for (c, s) in cmds.iter().zip(st) {
            if s.ops == 0 {
                continue;
            }
            let label = c.name.trim_end_matches('s').to_ascii_uppercase();
            for p in [0.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0] {
                let _ = writeln!(o, "{label:<8}{:>12.3}{:>16.3}", pct(s, p), p);
            }
            let _ = writeln!(o, "---");
        }
    }
    o
}

fn stats_json(s: &Stats, secs: f64, hits: bool) -> Value {
    let mut v = json!({
        "Count": s.ops,
        "Ops/sec": s.ops as f64 / secs,
        "Hits/sec": if hits { json!(s.hits as f64 / secs) } else { json!(0.0) },
        "Misses/sec": if hits { json!(s.misses as f64 / secs) } else { json!(0.0) },
        "Errors": s.errors,
        "Timeouts": s.timeouts,
        "KB/sec": s.bytes as f64 / 1024.0 / secs,
    });
    if s.ops > 0 {
        v["Latency"] = json!(ms(s.hist.mean()));
        v["Average Latency"] = json!(ms(s.hist.mean()));
        v["Min Latency"] = json!(ms(s.hist.min() as f64));
        v["Max Latency"] = json!(ms(s.hist.max() as f64));
        v["Percentile Latencies"] = json!({
            "p50.00": pct(s, 50.0),
            "p90.00": pct(s, 90.0),
            "p99.00": pct(s, 99.0),
            "p99.90": pct(s, 99.9),
            "p100.00": pct(s, 100.0),
        });
    }
    v
}

/// The results as JSON (memtier's "ALL STATS" shape, plus errors and timeouts).
pub fn json(a: &Args, cmds: &[CmdDef], st: &[Stats], elapsed: Duration) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut all = serde_json::Map::new();
    let mut total = Stats::new_public();
    for (c, s) in cmds.iter().zip(st) {
        all.insert(c.name.clone(), stats_json(s, secs, c.counts_hits));
        total.merge_public(s);
    }
    all.insert(
        "Totals".into(),
        stats_json(&total, secs, cmds.iter().any(|c| c.counts_hits)),
    );
    all.insert("Runtime".into(), json!({ "Total duration": secs * 1000.0 }));
    json!({
        "configuration": {
            "server": a.server, "port": a.port, "threads": a.threads, "clients": a.clients,
            "pipeline": a.pipeline, "ratio": a.ratio, "key_pattern": a.key_pattern,
            "key_minimum": a.key_minimum, "key_maximum": a.key_maximum,
            "data_size": a.data_size, "test_time": a.test_time, "requests": a.requests,
            "command": a.command,
        },
        "ALL STATS": Value::Object(all),
    })
}

/// The once-a-second line (only when stderr is a terminal).
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(plan: Arc<Plan>, start: Instant) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        // SAFETY: isatty only inspects the descriptor.
        let tty = unsafe { libc::isatty(2) } == 1;
        let thread = tty.then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut last_ops, mut last_bytes, mut last_lat) = (0u64, 0u64, 0u64);
                let mut tick = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if tick.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    let dt = tick.elapsed().as_secs_f64();
                    tick = Instant::now();
                    let ops = plan.live.ops.load(Ordering::Relaxed);
                    let bytes = plan.live.bytes.load(Ordering::Relaxed);
                    let lat = plan.live.lat_us.load(Ordering::Relaxed);
                    let t = start.elapsed().as_secs_f64();
                    let done = match (plan.args.test_time, plan.requests) {
                        (Some(tt), _) => t / tt as f64 * 100.0,
                        (None, Some(n)) => {
                            ops as f64 / (n * (plan.args.threads * plan.args.clients) as u64) as f64
                                * 100.0
                        }
                        _ => 0.0,
                    };
                    let d_ops = ops - last_ops;
                    let cur_lat = if d_ops > 0 { (lat - last_lat) as f64 / d_ops as f64 / 1000.0 } else { 0.0 };
                    let avg_lat = if ops > 0 { lat as f64 / ops as f64 / 1000.0 } else { 0.0 };
                    eprint!(
                        "\r[RUN #1 {:3.0}%, {:3.0} secs] {} threads: {:>11} ops, {:>8.0} (avg: {:>8.0}) ops/sec, {:.2}MB/sec (avg: {:.2}MB/sec), {:>5.2} (avg: {:>5.2}) msec latency   ",
                        done.min(100.0),
                        t,
                        plan.args.threads,
                        ops,
                        d_ops as f64 / dt,
                        ops as f64 / t,
                        (bytes - last_bytes) as f64 / dt / 1048576.0,
                        bytes as f64 / t / 1048576.0,
                        cur_lat,
                        avg_lat
                    );
                    (last_ops, last_bytes, last_lat) = (ops, bytes, lat);
                }
                eprintln!();
            })
        });
        Progress { stop, thread }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
