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
