//! Codis slot commands: introspection and synchronous migration between two rcodis-servers
//! (several databases, hash-tag siblings, TTLs, every type, requirepass on both ends).

use rcodis_core::resp::Frame;
use rcodis_core::slot::slot_of;
use rcodis_tests::{normalize, text, Conn, ServerProc};

fn server(args: &[&str]) -> ServerProc {
    ServerProc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_rcodis-server")),
        args,
    )
}

fn authed(s: &ServerProc) -> Conn {
    let mut c = s.conn();
    assert_eq!(c.cmd(&["AUTH", "pw"]), Frame::simple("OK"));
    c
}

fn snapshot(c: &mut Conn, key: &str) -> Frame {
    let t = text(&c.cmd(&["TYPE", key]));
    let v = match t.as_str() {
        "none" => Frame::Null,
        "string" => c.cmd(&["GET", key]),
        "list" => c.cmd(&["LRANGE", key, "0", "-1"]),
        "set" => normalize("smembers", c.cmd(&["SMEMBERS", key])),
        "hash" => normalize("hgetall", c.cmd(&["HGETALL", key])),
        "zset" => c.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
        _ => unreachable!(),
    };
    Frame::Array(vec![Frame::bulk(t), v])
}

#[test]
fn introspection() {
    let s = server(&["--threads", "2"]);
    let mut c = s.conn();
    for i in 0..50 {
        c.cmd(&["SET", &format!("{{t}}k{i}"), "v"]);
    }
    c.cmd(&["SET", "a", "1"]);
    let slot = slot_of(b"{t}") as i64;
    assert_eq!(c.cmd(&["SLOTSINFO"]), {
        let mut v = vec![(slot, 50), (579, 1)];
        v.sort();
        Frame::Array(
            v.into_iter()
                .map(|(s, n)| Frame::Array(vec![Frame::Integer(s), Frame::Integer(n)]))
                .collect(),
        )
    });
    assert_eq!(
        c.cmd(&["SLOTSINFO", "579", "1"]),
        Frame::Array(vec![Frame::Array(vec![
            Frame::Integer(579),
            Frame::Integer(1)
        ])])
    );
    assert_eq!(
        text(&c.cmd(&["SLOTSINFO", "1024"])),
        "ERR invalid slot number = 1024"
    );
    assert_eq!(
        text(&c.cmd(&["SLOTSINFO", "0", "-1"])),
        "ERR invalid slot count = -1"
    );
    assert_eq!(
        c.cmd(&["SLOTSHASHKEY", "a", "b", "c"]),
        Frame::Array(vec![
            Frame::Integer(579),
            Frame::Integer(1017),
            Frame::Integer(879)
        ])
    );
    // SLOTSSCAN returns every key of the slot exactly once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor = "0".to_string();
    loop {
        let r = c.cmd(&["SLOTSSCAN", &slot.to_string(), &cursor, "COUNT", "7"]);
        let v = r.as_array().unwrap();
        cursor = text(&v[0]);
        for k in v[1].as_array().unwrap() {
            assert!(seen.insert(text(k)));
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen.len(), 50);
    assert_eq!(
        text(&c.cmd(&["SLOTSSCAN", "1", "0", "COUNT", "0"])),
        "ERR syntax error"
    );
    assert_eq!(c.cmd(&["SLOTSCHECK"]), Frame::simple("OK"));
    assert_eq!(
        c.cmd(&["SLOTSDEL", &slot.to_string()]),
        Frame::Array(vec![Frame::Array(vec![
            Frame::Integer(slot),
            Frame::Integer(0)
        ])])
    );
    assert_eq!(c.cmd(&["DBSIZE"]), Frame::Integer(1));
}

#[test]
fn sync_migration_moves_everything_once() {
    let src = server(&["--threads", "2", "--requirepass", "pw"]);
    let dst = server(&["--threads", "2", "--requirepass", "pw"]);
    let mut a = authed(&src);
    let mut b = authed(&dst);
    let tag = "{user7}";
    let slot = slot_of(tag.as_bytes()).to_string();
    let mut keys = Vec::new();
    for db in ["0", "3"] {
        a.cmd(&["SELECT", db]);
        for i in 0..30 {
            let k = format!("{tag}str{i}");
            a.cmd(&["SET", &k, &format!("v{i}"), "EX", "1000"]);
            keys.push((db, k));
        }
        let big: Vec<String> = (0..500).map(|i| format!("e{i}")).collect();
        let mut cmd = vec!["RPUSH".to_string(), format!("{tag}list")];
        cmd.extend(big.iter().cloned());
        a.cmd(&cmd);
        a.cmd(&["HSET", &format!("{tag}hash"), "f", "v", "g", "w"]);
        a.cmd(&["SADD", &format!("{tag}set"), "1", "2", "x"]);
        a.cmd(&["ZADD", &format!("{tag}zset"), "1.5", "m", "-2", "n"]);
        a.cmd(&["SET", "untagged-elsewhere", "stay"]);
        for k in ["list", "hash", "set", "zset"] {
            keys.push((db, format!("{tag}{k}")));
        }
    }
    let mut before = Vec::new();
    for (db, k) in &keys {
        a.cmd(&["SELECT", db]);
        before.push(snapshot(&mut a, k));
    }
    for db in ["0", "3"] {
        a.cmd(&["SELECT", db]);
        // One SLOTSMGRTTAGSLOT moves a key and every sibling sharing its tag.
        let r = a.cmd(&[
            "SLOTSMGRTTAGSLOT",
            "127.0.0.1",
            &dst.port.to_string(),
            "3000",
            &slot,
        ]);
        let v = r.as_array().unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(v[0], Frame::Integer(34), "tag siblings moved together");
        assert_eq!(v[1], Frame::Integer(0), "slot empty on the source");
        let r = a.cmd(&[
            "SLOTSMGRTTAGSLOT",
            "127.0.0.1",
            &dst.port.to_string(),
            "3000",
            &slot,
        ]);
        assert_eq!(r, Frame::Array(vec![Frame::Integer(0), Frame::Integer(0)]));
    }
    for ((db, k), want) in keys.iter().zip(before) {
        a.cmd(&["SELECT", db]);
        b.cmd(&["SELECT", db]);
        assert_eq!(
            a.cmd(&["EXISTS", k]),
            Frame::Integer(0),
            "{k} left on the source"
        );
        assert_eq!(snapshot(&mut b, k), want, "{k} on the target");
        if k.contains("}str") {
            let ttl = b.cmd(&["TTL", k]).as_integer().unwrap();
            assert!((990..=1000).contains(&ttl), "TTL of {k}: {ttl}");
        }
    }
    a.cmd(&["SELECT", "0"]);
    assert_eq!(text(&a.cmd(&["GET", "untagged-elsewhere"])), "stay");
    // SLOTSMGRTONE of one key; a missing key moves nothing.
    a.cmd(&["SET", "single", "1"]);
    assert_eq!(
        a.cmd(&[
            "SLOTSMGRTONE",
            "127.0.0.1",
            &dst.port.to_string(),
            "1000",
            "single"
        ]),
        Frame::Integer(1)
    );
    assert_eq!(
        a.cmd(&[
            "SLOTSMGRTONE",
            "127.0.0.1",
            &dst.port.to_string(),
            "1000",
            "single"
        ]),
        Frame::Integer(0)
    );
    b.cmd(&["SELECT", "0"]);
    assert_eq!(text(&b.cmd(&["GET", "single"])), "1");
    // Failures leave the source intact with a clear error.
    a.cmd(&["SET", "keep", "1"]);
    let dead = rcodis_tests::free_port().to_string();
    let e = text(&a.cmd(&["SLOTSMGRTONE", "127.0.0.1", &dead, "200", "keep"]));
    assert!(
        e.starts_with("ERR migration to") || e.starts_with("ERR connect"),
        "{e}"
    );
    assert_eq!(text(&a.cmd(&["GET", "keep"])), "1");
    assert_eq!(
        text(&a.cmd(&[
            "SLOTSMGRTONE",
            "127.0.0.1",
            &src.port.to_string(),
            "200",
            "keep"
        ])),
        "ERR migration target is this server"
    );
    assert_eq!(
        text(&a.cmd(&["SLOTSMGRTSLOT", "h", "1", "-1", "5"])),
        "ERR invalid timeout = -1"
    );
    assert_eq!(
        text(&a.cmd(&["SLOTSMGRTSLOT", "h", "1", "10", "5000"])),
        "ERR invalid slot number = 5000"
    );
    // A target with another password refuses: the key stays.
    let other = server(&["--threads", "1", "--requirepass", "different"]);
    let e = text(&a.cmd(&[
        "SLOTSMGRTONE",
        "127.0.0.1",
        &other.port.to_string(),
        "500",
        "keep",
    ]));
    assert!(e.contains("AUTH"), "{e}");
    assert_eq!(text(&a.cmd(&["GET", "keep"])), "1");
}

/// Fills `db` with every type under `tag`: small and big (chunked with maxbulks 64), with
/// and without TTLs. Returns the keys.
fn fill_all_types(a: &mut Conn, db: &str, tag: &str) -> Vec<(String, String)> {
    a.cmd(&["SELECT", db]);
    let mut keys = Vec::new();
    for i in 0..20 {
        let k = format!("{tag}str{i}");
        if i % 2 == 0 {
            a.cmd(&["SET", &k, &format!("v{i}"), "EX", "1000"]);
        } else {
            a.cmd(&["SET", &k, &format!("v{i}")]);
        }
        keys.push(k);
    }
    for (size, name) in [(5usize, "small"), (1000, "big")] {
        let mut l = vec!["RPUSH".to_string(), format!("{tag}list-{name}")];
        let mut h = vec!["HSET".to_string(), format!("{tag}hash-{name}")];
        let mut s = vec!["SADD".to_string(), format!("{tag}set-{name}")];
        let mut z = vec!["ZADD".to_string(), format!("{tag}zset-{name}")];
        for i in 0..size {
            l.push(format!("e{i}"));
            h.extend([format!("f{i}"), format!("v{i}")]);
            s.push(format!("m{i}"));
            z.extend([format!("{}.25", i as i64 - 500), format!("m{i}")]);
        }
        z.extend(["inf".to_string(), "top".to_string()]);
        for c in [&l, &h, &s, &z] {
            a.cmd(c);
            keys.push(c[1].clone());
        }
        a.cmd(&["PEXPIRE", &format!("{tag}hash-{name}"), "2000000"]);
        a.cmd(&["PEXPIRE", &format!("{tag}zset-{name}"), "2000000"]);
    }
    keys.into_iter().map(|k| (db.to_string(), k)).collect()
}

fn async_slot(a: &mut Conn, port: u16, timeout: &str, maxbulks: &str, slot: &str) -> Frame {
    a.cmd(&[
        "SLOTSMGRTTAGSLOT-ASYNC",
        "127.0.0.1",
        &port.to_string(),
        timeout,
        maxbulks,
        "0",
        slot,
        "10",
    ])
}

#[test]
fn async_migration_moves_every_type_with_ttls() {
    let src = server(&["--threads", "2", "--requirepass", "pw"]);
    let dst = server(&["--threads", "2", "--requirepass", "pw"]);
    let mut a = authed(&src);
    let mut b = authed(&dst);
    let tag = "{acct9}";
    let slot = slot_of(tag.as_bytes()).to_string();
    let mut keys = fill_all_types(&mut a, "0", tag);
    keys.extend(fill_all_types(&mut a, "2", tag));
    let mut before = Vec::new();
    for (db, k) in &keys {
        a.cmd(&["SELECT", db]);
        before.push(snapshot(&mut a, k));
    }
    // The messages a migration would send: delete first, big values in chunks of at most
    // maxbulks elements with a temporary TTL, the real TTL last.
    a.cmd(&["SELECT", "0"]);
    let dump = a.cmd(&[
        "SLOTSMGRTONE-ASYNC-DUMP",
        "1000",
        "64",
        &format!("{tag}hash-big"),
    ]);
    let msgs = dump.as_array().unwrap();
    let words =
        |f: &Frame| -> Vec<String> { f.as_array().unwrap().iter().map(text).collect::<Vec<_>>() };
    assert_eq!(
        words(&msgs[0])[1..],
        ["delete".to_string(), format!("{tag}hash-big")]
    );
    let chunk = words(&msgs[1]);
    assert_eq!(chunk[1], "hash");
    assert_eq!(chunk[3], "3000", "temporary TTL = 3 x timeout");
    assert_eq!(chunk[4], "1000", "hint = size");
    assert!(chunk.len() - 5 <= 64);
    let last = words(msgs.last().unwrap());
    assert_eq!(last[1], "expire");
    let ttl: i64 = last[3].parse().unwrap();
    assert!((1_990_000..=2_000_000).contains(&ttl), "{ttl}");
    for db in ["0", "2"] {
        a.cmd(&["SELECT", db]);
        // numkeys 10, but a tag batch takes every sibling of the keys it picks.
        let r = async_slot(&mut a, dst.port, "5000", "64", &slot);
        assert_eq!(r, Frame::Array(vec![Frame::Integer(28), Frame::Integer(0)]));
        assert_eq!(
            async_slot(&mut a, dst.port, "5000", "64", &slot),
            Frame::Array(vec![Frame::Integer(0), Frame::Integer(0)])
        );
    }
    for ((db, k), want) in keys.iter().zip(before) {
        a.cmd(&["SELECT", db]);
        b.cmd(&["SELECT", db]);
        assert_eq!(
            a.cmd(&["EXISTS", k]),
            Frame::Integer(0),
            "{k} left on the source"
        );
        assert_eq!(snapshot(&mut b, k), want, "{k} on the target");
        let ttl = b.cmd(&["PTTL", k]).as_integer().unwrap();
        if k.contains("hash") || k.contains("zset") {
            assert!((1_900_000..=2_000_000).contains(&ttl), "PTTL of {k}: {ttl}");
        } else if k.contains("}str")
            && k.trim_start_matches(|c| c != 'r')
                .trim_start_matches('r')
                .parse::<i64>()
                .unwrap()
                % 2
                == 0
        {
            assert!((990_000..=1_000_000).contains(&ttl), "PTTL of {k}: {ttl}");
        } else {
            assert_eq!(ttl, -1, "{k} has no TTL");
        }
    }
    // The ONE variant with a missing key moves nothing.
    assert_eq!(
        a.cmd(&[
            "SLOTSMGRTONE-ASYNC",
            "127.0.0.1",
            &dst.port.to_string(),
            "1000",
            "0",
            "0",
            "nothing"
        ]),
        Frame::Integer(0)
    );
    // Argument errors as codis words them.
    assert_eq!(
        a.cmd(&[
            "SLOTSMGRTSLOT-ASYNC",
            "127.0.0.1",
            "0",
            "1000",
            "0",
            "0",
            "1",
            "1"
        ]),
        Frame::Error("ERR invalid value of port (0)".into())
    );
    assert_eq!(
        a.cmd(&[
            "SLOTSMGRTSLOT-ASYNC",
            "127.0.0.1",
            "1",
            "1000",
            "0",
            "0",
            "1024",
            "1"
        ]),
        Frame::Error("ERR invalid value of slot (1024)".into())
    );
    assert_eq!(a.cmd(&["SLOTSMGRT-ASYNC-STATUS"]), Frame::NullBulk);
    assert_eq!(a.cmd(&["SLOTSMGRT-ASYNC-FENCE"]), Frame::simple("OK"));
    assert_eq!(a.cmd(&["SLOTSMGRT-ASYNC-CANCEL"]), Frame::Integer(0));
    // The target side refuses a wrong password and unknown messages with an ACK.
    let mut raw = dst.conn();
    assert_eq!(
        raw.cmd(&["SLOTSRESTORE-ASYNC-AUTH", "nope"]),
        Frame::Array(vec![
            Frame::bulk("SLOTSRESTORE-ASYNC-ACK"),
            Frame::bulk("1"),
            Frame::bulk("invalid password")
        ])
    );
}

#[test]
fn exec_wrapper_and_writers_during_an_async_move() {
    let src = server(&["--threads", "2"]);
    let dst = server(&["--threads", "2"]);
    let mut a = src.conn();
    let tag = "{hot}";
    let slot = slot_of(tag.as_bytes()).to_string();
    let nkeys = 40;
    for i in 0..nkeys {
        a.cmd(&["SET", &format!("{tag}c{i}"), "0"]);
    }
    // A big key keeps the batch busy long enough for writers to meet it mid-flight.
    let mut h = vec!["HSET".to_string(), format!("{tag}bulk")];
    for i in 0..20000 {
        h.extend([format!("f{i}"), "x".repeat(40)]);
    }
    a.cmd(&h);
    // Wrapper codes: 2 runs here, 0 when the key is not here, -1 for a bad inner command.
    assert_eq!(
        a.cmd(&[
            "SLOTSMGRT-EXEC-WRAPPER",
            &format!("{tag}c0"),
            "GET",
            &format!("{tag}c0")
        ]),
        Frame::Array(vec![Frame::Integer(2), Frame::bulk("0")])
    );
    assert_eq!(
        a.cmd(&["SLOTSMGRT-EXEC-WRAPPER", "nokey", "GET", "nokey"]),
        Frame::Array(vec![
            Frame::Integer(0),
            Frame::Error("ERR the specified key doesn't exist".into())
        ])
    );
    assert!(matches!(
        &a.cmd(&["SLOTSMGRT-EXEC-WRAPPER", &format!("{tag}c0"), "NOSUCHCMD"])
            .as_array()
            .unwrap()[0],
        Frame::Integer(-1)
    ));
    let (sp, dp) = (src.port, dst.port);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut s = Conn::connect(sp);
                let mut d = Conn::connect(dp);
                let mut acked = vec![0i64; nkeys];
                let (mut busy, mut moved) = (0, 0);
                let mut i = w;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let k = format!("{tag}c{}", i % nkeys);
                    let r = s.cmd(&["SLOTSMGRT-EXEC-WRAPPER", &k, "INCR", &k]);
                    let v = r.as_array().unwrap_or_else(|| panic!("{r:?}"));
                    match v[0] {
                        Frame::Integer(2) => {
                            acked[i % nkeys] += 1;
                            i += 1;
                        }
                        Frame::Integer(1) => busy += 1, // being migrated: try again
                        Frame::Integer(0) => {
                            // Gone from the source: the target has it now.
                            let r = d.cmd(&["INCR", &k]);
                            assert!(r.as_integer().is_some(), "{r:?}");
                            acked[i % nkeys] += 1;
                            moved += 1;
                            i += 1;
                        }
                        _ => panic!("{v:?}"),
                    }
                }
                (acked, busy, moved)
            })
        })
        .collect();
    let mut rounds = 0;
    loop {
        // Small maxbytes: many round trips, so the writers meet the batch.
        let r = a.cmd(&[
            "SLOTSMGRTTAGSLOT-ASYNC",
            "127.0.0.1",
            &dp.to_string(),
            "5000",
            "100",
            "4096",
            &slot,
            "5",
        ]);
        let v = r.as_array().unwrap_or_else(|| panic!("{r:?}"));
        rounds += 1;
        if v[1] == Frame::Integer(0) {
            break;
        }
        assert!(rounds < 200);
    }
    // Let the writers go on against the target for a moment.
    let mut d = dst.conn();
    rcodis_tests::wait_until(
        "writes after the move",
        std::time::Duration::from_secs(10),
        || {
            (0..nkeys)
                .map(|i| {
                    text(&d.cmd(&["GET", &format!("{tag}c{i}")]))
                        .parse::<i64>()
                        .unwrap_or(0)
                })
                .sum::<i64>()
                > 3000
        },
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = vec![0i64; nkeys];
    let (mut busy, mut moved) = (0, 0);
    for w in writers {
        let (a, b, m) = w.join().unwrap();
        for (x, y) in acked.iter_mut().zip(a) {
            *x += y;
        }
        busy += b;
        moved += m;
    }
    eprintln!("writers: {busy} 'being migrated' retries, {moved} writes sent to the target");
    assert!(moved > 0);
    for (i, want) in acked.iter().enumerate() {
        let k = format!("{tag}c{i}");
        assert_eq!(
            a.cmd(&["EXISTS", &k]),
            Frame::Integer(0),
            "{k} left on the source"
        );
        assert_eq!(
            text(&d.cmd(&["GET", &k])),
            want.to_string(),
            "{k}: every acknowledged INCR exactly once"
        );
    }
    assert_eq!(
        d.cmd(&["HLEN", &format!("{tag}bulk")]),
        Frame::Integer(20000)
    );
}

#[test]
fn interrupted_async_move_keeps_the_source_whole_and_a_retry_completes() {
    let src = server(&["--threads", "2"]);
    let dst = server(&["--threads", "1"]);
    let mut a = src.conn();
    let key = "{big}h";
    let slot = slot_of(key.as_bytes()).to_string();
    let n = 100_000;
    for start in (0..n).step_by(10_000) {
        let mut h = vec!["HSET".to_string(), key.to_string()];
        for i in start..start + 10_000 {
            h.extend([format!("f{i}"), format!("v{i}")]);
        }
        a.cmd(&h);
    }
    let (sp, dp) = (src.port, dst.port);
    // Cancel from another connection once the target holds part of the key.
    let mover = std::thread::spawn(move || {
        let mut c = Conn::connect(sp);
        c.cmd(&[
            "SLOTSMGRTTAGSLOT-ASYNC",
            "127.0.0.1",
            &dp.to_string(),
            "2000",
            "10",
            "1024",
            &slot,
            "1",
        ])
    });
    let mut d = dst.conn();
    rcodis_tests::wait_until(
        "part of the key on the target",
        std::time::Duration::from_secs(30),
        || d.cmd(&["HLEN", key]).as_integer().unwrap() > 100,
    );
    let mut ctl = src.conn();
    let status = ctl.cmd(&["SLOTSMGRT-ASYNC-STATUS"]);
    assert!(
        status.as_array().is_some_and(|v| text(&v[0]) == "host"),
        "{status:?}"
    );
    assert_eq!(ctl.cmd(&["SLOTSMGRT-ASYNC-CANCEL"]), Frame::Integer(1));
    let r = mover.join().unwrap();
    assert_eq!(r, Frame::Error("ERR interrupted: canceled".into()));
    assert_eq!(ctl.cmd(&["SLOTSMGRT-ASYNC-FENCE"]), Frame::simple("OK"));
    // The source is whole; the partial copy carries the temporary TTL (3 x 2000 ms).
    assert_eq!(a.cmd(&["HLEN", key]), Frame::Integer(n));
    let partial = d.cmd(&["HLEN", key]).as_integer().unwrap();
    assert!(partial > 0 && partial < n, "{partial}");
    let pttl = d.cmd(&["PTTL", key]).as_integer().unwrap();
    assert!((1..=6000).contains(&pttl), "{pttl}");
    // Writes to the key were refused while it moved; now they work again on the source.
    assert_eq!(a.cmd(&["HSET", key, "extra", "1"]), Frame::Integer(1));
    // Kill the target mid-way: the caller gets an error, the source stays whole.
    let dst2 = server(&["--threads", "1"]);
    let dp2 = dst2.port;
    let slot2 = slot_of(key.as_bytes()).to_string();
    let mover = std::thread::spawn(move || {
        let mut c = Conn::connect(sp);
        c.cmd(&[
            "SLOTSMGRTTAGSLOT-ASYNC",
            "127.0.0.1",
            &dp2.to_string(),
            "2000",
            "10",
            "1024",
            &slot2,
            "1",
        ])
    });
    let mut d2 = dst2.conn();
    rcodis_tests::wait_until(
        "part of the key on the second target",
        std::time::Duration::from_secs(30),
        || d2.cmd(&["HLEN", key]).as_integer().unwrap() > 100,
    );
    dst2.proc.signal("KILL");
    let r = mover.join().unwrap();
    assert!(text(&r).starts_with("ERR interrupted: "), "{r:?}");
    assert_eq!(a.cmd(&["HLEN", key]), Frame::Integer(n + 1));
    assert_eq!(a.cmd(&["SLOTSMGRT-ASYNC-STATUS"]), Frame::NullBulk);
    // A retry starts over (delete first) and completes.
    let slot = slot_of(key.as_bytes()).to_string();
    let r = a.cmd(&[
        "SLOTSMGRTTAGSLOT-ASYNC",
        "127.0.0.1",
        &dp.to_string(),
        "2000",
        "0",
        "0",
        &slot,
        "1",
    ]);
    assert_eq!(r, Frame::Array(vec![Frame::Integer(1), Frame::Integer(0)]));
    assert_eq!(d.cmd(&["HLEN", key]), Frame::Integer(n + 1));
    assert_eq!(d.cmd(&["PTTL", key]), Frame::Integer(-1));
    assert_eq!(a.cmd(&["EXISTS", key]), Frame::Integer(0));
}

/// Fills `key` with `n` elements of `kind` (hash, zset, list) in pipelined batches.
fn fill_big(c: &mut Conn, kind: &str, key: &str, n: usize) {
    let mut sent = 0;
    for start in (0..n).step_by(10_000) {
        let end = (start + 10_000).min(n);
        let mut args = vec![
            match kind {
                "hash" => "HSET",
                "zset" => "ZADD",
                _ => "RPUSH",
            }
            .to_string(),
            key.to_string(),
        ];
        for i in start..end {
            match kind {
                "hash" => args.extend([format!("f{i}"), format!("v{i}")]),
                "zset" => args.extend([i.to_string(), format!("m{i}")]),
                _ => args.push(format!("e{i}")),
            }
        }
        c.send(&args);
        sent += 1;
    }
    for _ in 0..sent {
        let r = c.read().unwrap();
        assert!(r.as_integer().is_some(), "{r:?}");
    }
}

#[test]
fn million_element_values_move_async_while_gets_are_served() {
    let n: usize = std::env::var("RCODIS_BIG_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let src = server(&["--threads", "1"]);
    let dst = server(&["--threads", "1"]);
    let mut a = src.conn();
    for kind in ["hash", "zset", "list"] {
        fill_big(&mut a, kind, &format!("{{big}}{kind}"), n);
    }
    a.cmd(&["SET", "unrelated", "v"]);
    let sp = src.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let prober = std::thread::spawn(move || {
        let mut c = Conn::connect(sp);
        let mut worst = std::time::Duration::ZERO;
        let mut count = 0u64;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = std::time::Instant::now();
            assert_eq!(text(&c.cmd(&["GET", "unrelated"])), "v");
            worst = worst.max(t.elapsed());
            count += 1;
        }
        (worst, count)
    });
    let slot = slot_of(b"{big}").to_string();
    a.set_timeout(std::time::Duration::from_secs(300));
    let t = std::time::Instant::now();
    let r = a.cmd(&[
        "SLOTSMGRTTAGSLOT-ASYNC",
        "127.0.0.1",
        &dst.port.to_string(),
        "30000",
        "0",
        "0",
        &slot,
        "10",
    ]);
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, count) = prober.join().unwrap();
    eprintln!(
        "3 x {n} elements moved in {took:?}; {count} GETs meanwhile, worst {worst:?} (debug build, shared machine)"
    );
    assert_eq!(r, Frame::Array(vec![Frame::Integer(3), Frame::Integer(0)]));
    let mut b = dst.conn();
    assert_eq!(b.cmd(&["HLEN", "{big}hash"]), Frame::Integer(n as i64));
    assert_eq!(b.cmd(&["ZCARD", "{big}zset"]), Frame::Integer(n as i64));
    assert_eq!(b.cmd(&["LLEN", "{big}list"]), Frame::Integer(n as i64));
    let last = (n - 1).to_string();
    assert_eq!(
        text(&b.cmd(&["HGET", "{big}hash", &format!("f{last}")])),
        format!("v{last}")
    );
    assert_eq!(
        text(&b.cmd(&["ZSCORE", "{big}zset", &format!("m{last}")])),
        last
    );
    assert_eq!(
        text(&b.cmd(&["LINDEX", "{big}list", "-1"])),
        format!("e{last}")
    );
    assert_eq!(text(&b.cmd(&["LINDEX", "{big}list", "0"])), "e0");
    assert_eq!(
        b.cmd(&["ZRANGE", "{big}zset", "0", "1"]),
        Frame::Array(vec![Frame::bulk("m0"), Frame::bulk("m1")])
    );
    for k in ["hash", "zset", "list"] {
        assert_eq!(b.cmd(&["PTTL", &format!("{{big}}{k}")]), Frame::Integer(-1));
    }
    assert_eq!(a.cmd(&["DBSIZE"]), Frame::Integer(1));
}
