//! DUMP/RESTORE interoperability with Debian's redis-server 7.0: payloads Redis writes (in
//! every encoding it uses: listpack, quicklist, intset, hashtable, skiplist, integer and LZF
//! strings) restore into rcodis with identical contents, and rcodis's payloads restore into
//! Redis.

use rcodis_core::resp::Frame;
use rcodis_tests::{normalize, text, Conn, RedisRef, ServerProc};

/// Commands that build one key of each shape in both servers.
fn fixtures() -> Vec<Vec<String>> {
    let mut v: Vec<Vec<String>> = vec![
        vec!["SET".into(), "s_small".into(), "hello".into()],
        vec!["SET".into(), "s_int".into(), "12345".into()],
        vec!["SET".into(), "s_neg".into(), "-77".into()],
        vec!["SET".into(), "s_lzf".into(), "abcabcabc".repeat(200)],
        vec![
            "RPUSH".into(),
            "l_small".into(),
            "a".into(),
            "1".into(),
            "-5".into(),
            "70000".into(),
            "c".into(),
        ],
        vec![
            "SADD".into(),
            "set_int".into(),
            "1".into(),
            "-2".into(),
            "300000".into(),
        ],
        vec!["SADD".into(), "set_str".into(), "x".into(), "y".into()],
        vec![
            "HSET".into(),
            "h_small".into(),
            "f1".into(),
            "v1".into(),
            "n".into(),
            "42".into(),
        ],
        vec![
            "ZADD".into(),
            "z_small".into(),
            "1.5".into(),
            "a".into(),
            "-3".into(),
            "b".into(),
            "100".into(),
            "c".into(),
        ],
    ];
    let mut big_list = vec!["RPUSH".to_string(), "l_big".to_string()];
    let mut big_hash = vec!["HSET".to_string(), "h_big".to_string()];
    let mut big_z = vec!["ZADD".to_string(), "z_big".to_string()];
    let mut big_set = vec!["SADD".to_string(), "set_big".to_string()];
    for i in 0..700 {
        big_list.push(format!("element-{i}-{}", "x".repeat(i % 90)));
        big_hash.push(format!("field{i}"));
        big_hash.push(format!("value{i}"));
        big_z.push(format!("{}", i as f64 / 3.0));
        big_z.push(format!("member{i}"));
        big_set.push(format!("m{i}"));
    }
    v.extend([big_list, big_hash, big_z, big_set]);
    v
}

const KEYS: &[&str] = &[
    "s_small", "s_int", "s_neg", "s_lzf", "l_small", "set_int", "set_str", "h_small", "z_small",
    "l_big", "h_big", "z_big", "set_big",
];

fn contents(c: &mut Conn, key: &str) -> Frame {
    let t = text(&c.cmd(&["TYPE", key]));
    let f = match t.as_str() {
        "string" => c.cmd(&["GET", key]),
        "list" => c.cmd(&["LRANGE", key, "0", "-1"]),
        "set" => normalize("smembers", c.cmd(&["SMEMBERS", key])),
        "hash" => normalize("hgetall", c.cmd(&["HGETALL", key])),
        "zset" => c.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
        other => panic!("{key}: type {other}"),
    };
    Frame::Array(vec![Frame::bulk(t), f])
}

#[test]
fn payloads_travel_both_ways() {
    let redis = RedisRef::start();
    let ours = ServerProc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_rcodis-server")),
        &["--threads", "2"],
    );
    let mut r = Conn::connect(redis.port);
    let mut o = ours.conn();
    for f in fixtures() {
        assert!(!r.cmd(&f).is_error());
    }
    // Redis → rcodis
    for k in KEYS {
        let payload = r.cmd(&["DUMP", k]);
        let Frame::Bulk(p) = payload else {
            panic!("DUMP {k}: {payload:?}")
        };
        let res = o.cmd(&[&b"RESTORE"[..], k.as_bytes(), b"0", &p]);
        assert_eq!(res, Frame::simple("OK"), "RESTORE {k} into rcodis");
        assert_eq!(
            contents(&mut o, k),
            contents(&mut r, k),
            "{k} after Redis → rcodis"
        );
    }
    // rcodis → Redis (into fresh names), with a TTL
    for k in KEYS {
        let Frame::Bulk(p) = o.cmd(&["DUMP", k]) else {
            panic!("rcodis DUMP {k}")
        };
        let dst = format!("back_{k}");
        let res = r.cmd(&[b"RESTORE", dst.as_bytes(), b"100000", &p[..]]);
        assert_eq!(res, Frame::simple("OK"), "RESTORE {k} into Redis");
        assert_eq!(
            contents(&mut r, &dst),
            contents(&mut o, k),
            "{k} after rcodis → Redis"
        );
        assert!(r.cmd(&["PTTL", &dst]).as_integer().unwrap() > 90_000);
    }
    // Error paths match Redis's.
    let Frame::Bulk(p) = o.cmd(&["DUMP", "s_small"]) else {
        panic!()
    };
    let mut bad = p.to_vec();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    for (args, what) in [
        (vec![&b"RESTORE"[..], b"s_small", b"0", &p[..]], "busy key"),
        (
            vec![&b"RESTORE"[..], b"fresh", b"-1", &p[..]],
            "negative ttl",
        ),
        (vec![&b"RESTORE"[..], b"fresh", b"x", &p[..]], "bad ttl"),
        (
            vec![&b"RESTORE"[..], b"fresh", b"0", &bad[..]],
            "bad checksum",
        ),
        (
            vec![&b"RESTORE"[..], b"fresh", b"0", b"junk"],
            "short payload",
        ),
        (
            vec![&b"RESTORE"[..], b"fresh", b"0", &p[..], b"IDLETIME", b"-1"],
            "bad idletime",
        ),
        (
            vec![&b"RESTORE"[..], b"fresh", b"0", &p[..], b"FREQ", b"300"],
            "bad freq",
        ),
        (
            vec![&b"RESTORE"[..], b"fresh", b"0", &p[..], b"BOGUS"],
            "bad option",
        ),
        (
            vec![&b"RESTORE"[..], b"s_small", b"0", &p[..], b"REPLACE"],
            "replace",
        ),
        (
            vec![&b"RESTORE"[..], b"gone", b"1", &p[..], b"ABSTTL"],
            "already expired",
        ),
        (vec![&b"EXISTS"[..], b"gone"], "not created"),
        (vec![&b"DUMP"[..], b"nosuchkey"], "dump missing"),
    ] {
        assert_eq!(o.cmd(&args), r.cmd(&args), "{what}");
    }
}
