//! The command table against Debian's redis-server 7.0: key extraction agrees with
//! `COMMAND GETKEYS` for every special key shape, and arity/flags/key positions agree with
//! the live `COMMAND INFO` for every command both know.

use rcodis_core::cmd;
use rcodis_core::resp::Frame;
use rcodis_tests::{text, Conn, RedisRef};

const SAMPLES: &[&[&str]] = &[
    &["get", "k"],
    &["set", "k", "v", "get"],
    &["mset", "a", "1", "b", "2", "c", "3"],
    &["mget", "a", "b"],
    &["del", "a", "b", "c"],
    &["rename", "a", "b"],
    &["smove", "a", "b", "m"],
    &["lmove", "a", "b", "left", "right"],
    &["rpoplpush", "a", "b"],
    &["blpop", "a", "b", "0"],
    &["brpoplpush", "a", "b", "0"],
    &["bitop", "and", "d", "a", "b"],
    &["lcs", "a", "b"],
    &["copy", "a", "b", "replace"],
    &["eval", "return 1", "2", "a", "b", "x"],
    &[
        "evalsha",
        "0000000000000000000000000000000000000000",
        "1",
        "a",
    ],
    &["eval_ro", "s", "1", "a"],
    &["fcall", "f", "2", "a", "b"],
    &["zunionstore", "d", "2", "a", "b", "weights", "1", "2"],
    &["zinterstore", "d", "1", "a"],
    &["zdiffstore", "d", "2", "a", "b"],
    &["zunion", "2", "a", "b"],
    &["zinter", "2", "a", "b", "withscores"],
    &["zdiff", "1", "a"],
    &["sintercard", "2", "a", "b", "limit", "3"],
    &["zintercard", "2", "a", "b"],
    &["lmpop", "2", "a", "b", "left", "count", "2"],
    &["blmpop", "0", "2", "a", "b", "right"],
    &["zmpop", "1", "a", "min"],
    &["bzmpop", "1", "2", "a", "b", "max"],
    &["xread", "count", "1", "streams", "a", "b", "0", "0"],
    &["xread", "block", "0", "streams", "s", "$"],
    &[
        "xreadgroup",
        "group",
        "g",
        "c",
        "count",
        "1",
        "streams",
        "a",
        ">",
    ],
    &["xreadgroup", "group", "streams", "c", "streams", "s", ">"],
    &["sort", "k"],
    &["sort", "k", "by", "w_*", "get", "#", "store", "d"],
    &["sort", "k", "limit", "0", "5", "store", "d", "alpha"],
    &["sort_ro", "k", "by", "x"],
    &["migrate", "127.0.0.1", "1", "k", "0", "100"],
    &[
        "migrate",
        "127.0.0.1",
        "1",
        "",
        "0",
        "100",
        "copy",
        "keys",
        "a",
        "b",
    ],
    &[
        "migrate",
        "127.0.0.1",
        "1",
        "",
        "0",
        "100",
        "auth",
        "pw",
        "keys",
        "a",
    ],
    &["georadius", "g", "1", "2", "3", "km", "store", "d"],
    &["georadius", "g", "1", "2", "3", "km", "storedist", "d"],
    &["georadiusbymember", "g", "m", "3", "km", "store", "d"],
    &["object", "encoding", "k"],
    &["memory", "usage", "k"],
    &["xinfo", "stream", "s"],
    &["xgroup", "create", "s", "g", "$"],
    &["watch", "a", "b"],
    &["pfmerge", "d", "a", "b"],
    &["pfcount", "a", "b"],
    &[
        "geosearchstore",
        "d",
        "s",
        "frommember",
        "m",
        "byradius",
        "1",
        "km",
    ],
    &["zrangestore", "d", "s", "0", "-1"],
    &["msetnx", "a", "1", "b", "2"],
    &["renamenx", "a", "b"],
    &["touch", "a", "b"],
    &["unlink", "a"],
    &["exists", "a", "b"],
    &["sunionstore", "d", "a", "b"],
    &["sdiff", "a", "b"],
    &["xadd", "s", "*", "f", "v"],
    &["bitfield", "k", "get", "u8", "0"],
    &["hset", "h", "f", "v"],
];

fn redis_keys(c: &mut Conn, args: &[&str]) -> Vec<String> {
    let mut req = vec!["COMMAND", "GETKEYS"];
    req.extend_from_slice(args);
    match c.cmd(&req) {
        Frame::Array(items) => items.iter().map(text).collect(),
        other => panic!("GETKEYS {args:?}: {other:?}"),
    }
}

#[test]
fn key_extraction_matches_redis() {
    let r = RedisRef::start();
    let mut c = Conn::connect(r.port);
    for args in SAMPLES {
        let want = redis_keys(&mut c, args);
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        let spec = cmd::resolve(|i| a.get(i).copied())
            .unwrap_or_else(|e| panic!("{args:?}: {}", e.message()));
        let got: Vec<String> = cmd::key_indexes(spec, &a, false)
            .unwrap_or_else(|_| panic!("{args:?}: invalid"))
            .iter()
            .map(|&i| args[i].to_string())
            .collect();
        assert_eq!(got, want, "keys of {args:?}");
    }
}

fn as_int(f: &Frame) -> i64 {
    f.as_integer()
        .unwrap_or_else(|| panic!("integer expected: {f:?}"))
}

/// Subcommands of Redis versions after 7.0 that the table has too.
const LATER_SUBCOMMANDS: &[&str] = &["client|setinfo", "client|no-touch"];

#[test]
fn table_matches_live_command_info() {
    let r = RedisRef::start();
    let mut c = Conn::connect(r.port);
    let Frame::Array(all) = c.cmd(&["COMMAND"]) else {
        panic!("COMMAND reply")
    };
    assert!(all.len() >= 240);
    let mut checked = 0;
    for entry in &all {
        let f = entry.as_array().expect("command entry");
        let name = text(&f[0]);
        let spec = cmd::lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(spec.arity as i64, as_int(&f[1]), "arity of {name}");
        let flags: Vec<String> = f[2].as_array().unwrap().iter().map(text).collect();
        let ours: Vec<&str> = spec.flags.names().collect();
        let mut a = flags.clone();
        a.sort();
        let mut b: Vec<String> = ours.iter().map(|s| s.to_string()).collect();
        b.sort();
        assert_eq!(b, a, "flags of {name}");
        assert_eq!(
            (
                spec.first_key as i64,
                spec.last_key as i64,
                spec.key_step as i64
            ),
            (as_int(&f[3]), as_int(&f[4]), as_int(&f[5])),
            "key positions of {name}"
        );
        let subs = f[9].as_array().map(|s| s.len()).unwrap_or(0);
        // Our table also has the later subcommands clients send at connect (Redis 7.2's
        // CLIENT SETINFO and NO-TOUCH: core/tools/gen_commands.py); 7.0.15 has not.
        let ours = spec
            .subcommands
            .iter()
            .filter(|s| !LATER_SUBCOMMANDS.contains(&s.name))
            .count();
        assert_eq!(ours, subs, "subcommands of {name}");
        checked += 1;
    }
    assert_eq!(checked, all.len());
}
