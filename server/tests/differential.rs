//! Differential test: the same seeded random command sequences (every type, errors, edge
//! cases, TTLs) against Debian's redis-server and rcodis-server (two shards), replies
//! compared. CI runs a fixed seed for a bounded number of commands; set RCODIS_DIFF_SEED and
//! RCODIS_DIFF_COUNT to run longer or elsewhere.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rcodis_core::resp::Frame;
use rcodis_tests::{normalize, Conn, RedisRef, ServerProc};

const KEYS: &[&str] = &[
    "k0", "k1", "k2", "k3", "{t}a", "{t}b", "s0", "s1", "z0", "z1", "h0", "l0",
];
const VALS: &[&str] = &[
    "0",
    "1",
    "-7",
    "42",
    "abc",
    "",
    "3.5",
    "9223372036854775807",
    "x y",
    "a",
];
const SCORES: &[&str] = &["0", "1", "-2", "1.5", "inf", "-inf", "(1", "3", "x"];
const IDX: &[&str] = &["0", "1", "-1", "2", "-3", "10", "x"];

fn pick<'a>(r: &mut SmallRng, v: &[&'a str]) -> &'a str {
    v[r.gen_range(0..v.len())]
}

fn gen(r: &mut SmallRng) -> Vec<String> {
    let k = |r: &mut SmallRng| pick(r, KEYS).to_string();
    let v = |r: &mut SmallRng| pick(r, VALS).to_string();
    let i = |r: &mut SmallRng| pick(r, IDX).to_string();
    let s = |r: &mut SmallRng| pick(r, SCORES).to_string();
    let c: Vec<String> = match r.gen_range(0..72) {
        0 => vec!["SET".into(), k(r), v(r)],
        1 => vec!["GET".into(), k(r)],
        2 => vec!["APPEND".into(), k(r), v(r)],
        3 => vec!["INCR".into(), k(r)],
        4 => vec!["INCRBY".into(), k(r), v(r)],
        5 => vec!["GETRANGE".into(), k(r), i(r), i(r)],
        6 => vec![
            "SETRANGE".into(),
            k(r),
            pick(r, &["0", "3", "-1"]).into(),
            v(r),
        ],
        7 => vec!["STRLEN".into(), k(r)],
        8 => vec!["MSET".into(), k(r), v(r), k(r), v(r)],
        9 => vec!["MGET".into(), k(r), k(r), k(r)],
        10 => vec!["GETDEL".into(), k(r)],
        11 => vec!["SETNX".into(), k(r), v(r)],
        12 => vec!["LPUSH".into(), k(r), v(r), v(r)],
        13 => vec!["RPUSH".into(), k(r), v(r)],
        14 => vec!["LPOP".into(), k(r)],
        15 => vec!["RPOP".into(), k(r), pick(r, &["1", "2", "0", "-1"]).into()],
        16 => vec!["LRANGE".into(), k(r), i(r), i(r)],
        17 => vec!["LINDEX".into(), k(r), i(r)],
        18 => vec!["LREM".into(), k(r), i(r), v(r)],
        19 => vec![
            "LINSERT".into(),
            k(r),
            pick(r, &["BEFORE", "AFTER"]).into(),
            v(r),
            v(r),
        ],
        20 => vec!["LSET".into(), k(r), i(r), v(r)],
        21 => vec!["LTRIM".into(), k(r), i(r), i(r)],
        22 => vec!["LLEN".into(), k(r)],
        23 => vec!["LPOS".into(), k(r), v(r)],
        24 => vec!["HSET".into(), k(r), v(r), v(r)],
        25 => vec!["HGET".into(), k(r), v(r)],
        26 => vec!["HDEL".into(), k(r), v(r), v(r)],
        27 => vec!["HINCRBY".into(), k(r), v(r), v(r)],
        28 => vec!["HLEN".into(), k(r)],
        29 => vec!["HGETALL".into(), k(r)],
        30 => vec!["HMGET".into(), k(r), v(r), v(r)],
        31 => vec!["HEXISTS".into(), k(r), v(r)],
        32 => vec!["SADD".into(), k(r), v(r), v(r)],
        33 => vec!["SREM".into(), k(r), v(r)],
        34 => vec!["SISMEMBER".into(), k(r), v(r)],
        35 => vec!["SCARD".into(), k(r)],
        36 => vec!["SMEMBERS".into(), k(r)],
        37 => vec!["SINTER".into(), k(r), k(r)],
        38 => vec!["SUNION".into(), k(r), k(r)],
        39 => vec!["SDIFF".into(), k(r), k(r)],
        40 => vec!["SINTERSTORE".into(), k(r), k(r), k(r)],
        41 => vec!["SMOVE".into(), k(r), k(r), v(r)],
        42 => vec![
            "ZADD".into(),
            k(r),
            pick(r, &["1", "2", "-1.5", "x"]).into(),
            v(r),
        ],
        43 => vec![
            "ZADD".into(),
            k(r),
            pick(r, &["NX", "XX", "GT", "LT", "CH"]).into(),
            pick(r, &["1", "5"]).into(),
            v(r),
        ],
        44 => vec![
            "ZINCRBY".into(),
            k(r),
            pick(r, &["1", "-0.5", "x"]).into(),
            v(r),
        ],
        45 => vec!["ZREM".into(), k(r), v(r)],
        46 => vec!["ZRANGE".into(), k(r), i(r), i(r), "WITHSCORES".into()],
        47 => vec!["ZRANGEBYSCORE".into(), k(r), s(r), s(r)],
        48 => vec!["ZRANK".into(), k(r), v(r)],
        49 => vec!["ZCOUNT".into(), k(r), s(r), s(r)],
        50 => vec!["ZPOPMIN".into(), k(r)],
        51 => vec!["ZUNIONSTORE".into(), k(r), "2".into(), k(r), k(r)],
        52 => vec!["DEL".into(), k(r), k(r)],
        53 => vec!["EXISTS".into(), k(r), k(r)],
        54 => vec!["TYPE".into(), k(r)],
        55 => vec!["RENAME".into(), k(r), k(r)],
        56 => vec![
            "EXPIRE".into(),
            k(r),
            pick(r, &["1000", "-1", "x", "500"]).into(),
        ],
        57 => vec!["TTL".into(), k(r)],
        58 => vec!["PERSIST".into(), k(r)],
        59 => vec!["PFADD".into(), k(r), v(r), v(r)],
        60 => match r.gen_range(0..2) {
            0 => vec!["PFCOUNT".into(), k(r)],
            _ => vec!["PFCOUNT".into(), k(r), k(r)],
        },
        61 => vec!["PFMERGE".into(), k(r), k(r), k(r)],
        62 => vec![
            "GEOADD".into(),
            k(r),
            pick(r, &["13.36", "-0.5", "179.99", "200", "x"]).into(),
            pick(r, &["38.1", "0", "-85", "85.1"]).into(),
            v(r),
        ],
        63 => vec!["GEOPOS".into(), k(r), v(r), v(r)],
        66 => vec![
            "XADD".into(),
            k(r),
            pick(r, &["MAXLEN", "MINID"]).into(),
            pick(r, &["~", "=", "3"]).into(),
            pick(r, &["2", "5-0", "0"]).into(),
            pick(r, &["1-1", "5", "5-*", "10-*", "100-1", "0-0", "x"]).into(),
            v(r),
            v(r),
        ],
        67 => vec!["XRANGE".into(), k(r), "-".into(), "+".into()],
        68 => vec![
            "XDEL".into(),
            k(r),
            pick(r, &["1-1", "5-0", "10-0", "x"]).into(),
        ],
        69 => vec![
            "XGROUP".into(),
            "CREATE".into(),
            k(r),
            "g".into(),
            pick(r, &["0", "$"]).into(),
            "MKSTREAM".into(),
        ],
        70 => vec![
            "XREADGROUP".into(),
            "GROUP".into(),
            "g".into(),
            v(r),
            "COUNT".into(),
            "2".into(),
            "STREAMS".into(),
            k(r),
            pick(r, &[">", "0"]).into(),
        ],
        64 => vec![
            "GEOSEARCH".into(),
            k(r),
            "FROMLONLAT".into(),
            "13".into(),
            "38".into(),
            "BYRADIUS".into(),
            pick(r, &["10", "500", "20000"]).into(),
            "km".into(),
            "WITHDIST".into(),
            "ASC".into(),
        ],
        71 => match r.gen_range(0..3) {
            0 => vec!["XPENDING".into(), k(r), "g".into()],
            1 => vec![
                "XACK".into(),
                k(r),
                "g".into(),
                pick(r, &["1-1", "5-0", "10-0"]).into(),
            ],
            _ => vec!["XLEN".into(), k(r)],
        },
        _ => vec!["COPY".into(), k(r), k(r), pick(r, &["REPLACE", "x"]).into()],
    };
    c
}

/// TTLs differ by the time between the two calls; compare them loosely.
fn same(cmd: &str, a: &Frame, b: &Frame) -> bool {
    if cmd == "TTL" {
        if let (Frame::Integer(x), Frame::Integer(y)) = (a, b) {
            return x == y || (*x > 0 && *y > 0 && (x - y).abs() <= 2);
        }
    }
    a == b
}

#[test]
fn random_sequences_match_redis() {
    let seed: u64 = std::env::var("RCODIS_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261122);
    let count: usize = std::env::var("RCODIS_DIFF_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4000);
    let redis = RedisRef::start();
    let ours = ServerProc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_rcodis-server")),
        &["--threads", "2"],
    );
    let mut a = Conn::connect(redis.port);
    let mut b = ours.conn();
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.cmd(&["FUNCTION", "LOAD", rcodis_tests::RUN_LIBRARY]),
            Frame::bulk("difftest")
        );
    }
    let mut r = SmallRng::seed_from_u64(seed);
    for n in 0..count {
        let inner = gen(&mut r);
        let name = inner[0].clone();
        // One in six runs inside a script or a function that declares its keys.
        let cmd = if r.gen_range(0..6) == 0 {
            let function = r.gen_bool(0.5);
            rcodis_tests::wrap_in_script(&inner, function, false).unwrap_or(inner)
        } else {
            inner
        };
        let want = normalize(&name, a.cmd(&cmd));
        let got = normalize(&name, b.cmd(&cmd));
        assert!(
            same(&name, &want, &got),
            "seed {seed}, command #{n} {cmd:?}\n   redis:  {want:?}\n   rcodis: {got:?}"
        );
        if n % 500 == 499 {
            // Whole-keyspace check: every key's type and value representation agree.
            for k in KEYS {
                let t = a.cmd(&["TYPE", k]);
                assert_eq!(t, b.cmd(&["TYPE", k]), "TYPE {k} after #{n}");
            }
        }
    }
}
