//! Redis 7 functions: FUNCTION LOAD/LIST/DELETE/FLUSH/STATS/DUMP/RESTORE and FCALL answer as
//! Debian's redis-server 7.0 does (replies and errors compared side by side), payloads move
//! between the two, libraries reach every shard, survive a restart (append-only log and
//! snapshot) and follow a master to its replicas, and FUNCTION KILL stops a busy function.

use std::path::Path;
use std::time::{Duration, Instant};

use rcodis_core::resp::Frame;
use rcodis_tests::{wait_until, Conn, Process, RedisRef, ServerProc};

const BIN: &str = env!("CARGO_BIN_EXE_rcodis-server");

fn bin() -> &'static Path {
    Path::new(BIN)
}

/// A key whose slot is on shard `shard` of a two-shard server.
fn key_on(shard: usize, prefix: &str) -> String {
    rcodis_tests::key_on_shard(shard, 2, prefix)
}

const LIB: &str = "#!lua name=mylib
redis.register_function('incr_it', function(keys, args) return redis.call('incr', keys[1]) end)
redis.register_function{function_name='echo_it', callback=function(keys, args) return {#keys, args[1]} end, flags={'no-writes'}, description='echo'}
redis.register_function('fail_it', function(keys, args)
  return redis.call('incr', keys[1])
end)
redis.register_function('global_it', function() return undefined_thing end)
redis.register_function('keys_it', function() return KEYS end)
redis.register_function('reg_it', function() redis.register_function('x', function() end) end)
redis.register_function{function_name='ro_write', callback=function(keys) return redis.call('set', keys[1], 'x') end, flags={'no-writes'}}
redis.register_function{function_name='all_flags', callback=function() return 1 end, flags={'allow-cross-slot-keys', 'no-cluster', 'allow-stale', 'allow-oom', 'no-writes'}}
";

const CASES: &[&[&str]] = &[
    &["FUNCTION", "LOAD", LIB],
    &["FUNCTION", "LOAD", LIB],
    &["FUNCTION", "LOAD", "REPLACE", LIB],
    &["FUNCTION", "LIST"],
    &["FUNCTION", "LIST", "WITHCODE", "LIBRARYNAME", "my*"],
    &["FUNCTION", "LIST", "LIBRARYNAME", "nomatch"],
    &["FUNCTION", "LIST", "LIBRARYNAME"],
    &["FUNCTION", "LIST", "bogus"],
    &["FCALL", "incr_it", "1", "n"],
    &["FCALL", "INCR_IT", "1", "n"],
    &["FCALL", "echo_it", "2", "a", "b", "arg"],
    &["FCALL_RO", "echo_it", "0", "x"],
    &["FCALL_RO", "incr_it", "1", "n"],
    &["FCALL", "fail_it", "1", "str"],
    &["FCALL", "global_it", "0"],
    &["FCALL", "keys_it", "0"],
    &["FCALL", "reg_it", "0"],
    &["FCALL", "ro_write", "1", "n"],
    &["FCALL", "all_flags", "0"],
    &["FCALL", "nosuch", "0"],
    &["FCALL", "nosuch", "x"],
    &["FCALL", "nosuch", "-1"],
    &["FCALL", "incr_it", "-1"],
    &["FCALL", "incr_it", "2", "a"],
    &["FCALL", "incr_it", "x"],
    &["FUNCTION", "LOAD", "#!lua name=other\nredis.register_function('incr_it', function() return 1 end)"],
    &["FUNCTION", "LOAD", "#!lua name=other\nredis.register_function('INCR_IT', function() return 1 end)"],
    &["FUNCTION", "LOAD", "return 1"],
    &["FUNCTION", "LOAD", "#!lua\nredis.register_function('a', function() end)"],
    &["FUNCTION", "LOAD", "#!\nredis.register_function('a', function() end)"],
    &["FUNCTION", "LOAD", "#! name=x\nredis.register_function('a', function() end)"],
    &["FUNCTION", "LOAD", "#!js name=x\nredis.register_function('a', function() end)"],
    &["FUNCTION", "LOAD", "#!lua name=a-b\nredis.register_function('a', function() end)"],
    &["FUNCTION", "LOAD", "#!lua name=x foo=bar\nredis.register_function('a', function() end)"],
    &["FUNCTION", "LOAD", "#!lua name=x name=y\nredis.register_function('a', function() end)"],
    &["FUNCTION", "LOAD", "#!lua name=x\nreturn 1"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', "],
    &["FUNCTION", "LOAD", "#!lua name=x\nlocal s = string.format('%d', 1)"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.call('set', 'a', 'b')"],
    &["FUNCTION", "LOAD", "#!lua name=x\nx = 1"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.foo = 1"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function()"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('a')"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('a', 1)"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('a', function() end, 1)"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('a-b', function() end)"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('', function() end)"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('a', function() end)\nredis.register_function('a', function() end)"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{function_name='a'}"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{callback=function() end}"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{function_name={}, callback=function() end}"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{function_name='a', callback=1}"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{function_name='a', callback=function() end, flags={'bogus'}}"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{function_name='a', callback=function() end, flags='no-writes'}"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{function_name='a', callback=function() end, description={}}"],
    &["FUNCTION", "LOAD", "#!lua name=x\nredis.register_function{function_name='a', callback=function() end, foo=1}"],
    &["FUNCTION", "LOAD", "#!lua name=x\nwhile true do end"],
    &["FUNCTION", "LOAD", "#!lua name=num\nredis.register_function{function_name=5, callback=function() return redis.REDIS_VERSION end, description=7}"],
    &["FUNCTION", "LIST", "LIBRARYNAME", "num"],
    &["FCALL", "5", "0"],
    &["FUNCTION", "LOAD", "a", "b"],
    &["FUNCTION", "LOAD", "REPLACE"],
    &["FUNCTION", "DELETE", "nosuch"],
    &["FUNCTION", "DELETE", "num"],
    &["FUNCTION", "DELETE", "num"],
    &["FUNCTION", "STATS"],
    &["FUNCTION", "KILL"],
    &["FUNCTION", "RESTORE", "junk"],
    &["FUNCTION", "RESTORE", "junk", "bogus"],
    &["FUNCTION", "FLUSH", "x"],
    &["FUNCTION", "FLUSH", "ASYNC"],
    &["FUNCTION", "LIST"],
    &["FUNCTION", "STATS"],
    &["FCALL", "incr_it", "1", "n"],
];

#[test]
fn functions_answer_as_redis_does() {
    let redis = RedisRef::start();
    let ours = ServerProc::start(bin(), &["--threads", "2"]);
    rcodis_tests::same_replies(
        &mut Conn::connect(redis.port),
        &mut ours.conn(),
        &[
            &["FLUSHALL"],
            &["FUNCTION", "FLUSH"],
            &["SET", "str", "abc"],
        ],
        CASES,
        |case, reply| {
            if case[..2] == ["FUNCTION", "LIST"] {
                sort_functions(reply);
            }
        },
    );
}

/// FUNCTION LIST names a library's functions in no particular order (Redis: its hash
/// table's): sorted, for comparing.
fn sort_functions(list: &mut Frame) {
    let Frame::Array(libs) = list else { return };
    for lib in libs {
        let fns = match lib {
            Frame::Array(kv) => kv.get_mut(5),
            Frame::Map(kv) => kv.get_mut(2).map(|(_, v)| v),
            _ => None,
        };
        if let Some(Frame::Array(fns)) = fns {
            fns.sort_by_key(|f| format!("{f:?}"));
        }
    }
}

fn fcall(c: &mut Conn, args: &[&str]) -> Frame {
    let mut all = vec!["FCALL"];
    all.extend_from_slice(args);
    c.cmd(&all)
}

/// A payload of FUNCTION DUMP moves both ways between redis-server (whose strings are LZF
/// compressed) and rcodis-server, under each restore policy.
#[test]
fn function_payloads_move_between_redis_and_rcodis() {
    let redis = RedisRef::start();
    let ours = ServerProc::start(bin(), &["--threads", "2"]);
    let mut r = Conn::connect(redis.port);
    let mut o = ours.conn();
    let long = format!(
        "#!lua name=big\n-- {}\nredis.register_function('big', function() return 'big' end)",
        "repeat repeat repeat ".repeat(20)
    );
    assert_eq!(r.cmd(&["FUNCTION", "LOAD", &long]), Frame::bulk("big"));
    let Frame::Bulk(payload) = r.cmd(&["FUNCTION", "DUMP"]) else {
        panic!("no payload")
    };
    let p =
        |f: &[u8]| -> Vec<Vec<u8>> { vec![b"FUNCTION".to_vec(), b"RESTORE".to_vec(), f.to_vec()] };
    assert_eq!(o.cmd(&p(&payload)), Frame::simple("OK"));
    assert_eq!(fcall(&mut o, &["big", "0"]), Frame::bulk("big"));
    assert_eq!(
        o.cmd(&p(&payload)),
        // Redis's wording for a restore's collision (FUNCTION LOAD's has quotes).
        Frame::error("ERR Library big already exists")
    );
    let mut replace = p(&payload);
    replace.push(b"REPLACE".to_vec());
    assert_eq!(o.cmd(&replace), Frame::simple("OK"));
    o.cmd(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=second\nredis.register_function('second', function() return 2 end)",
    ]);
    let Frame::Bulk(ours_payload) = o.cmd(&["FUNCTION", "DUMP"]) else {
        panic!("no payload")
    };
    let mut flush = p(&ours_payload);
    flush.push(b"FLUSH".to_vec());
    assert_eq!(r.cmd(&flush), Frame::simple("OK"));
    assert_eq!(fcall(&mut r, &["second", "0"]), Frame::Integer(2));
    assert_eq!(fcall(&mut r, &["big", "0"]), Frame::bulk("big"));
    // FLUSH on ours drops what the payload does not have.
    o.cmd(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=third\nredis.register_function('third', function() return 3 end)",
    ]);
    assert_eq!(o.cmd(&flush), Frame::simple("OK"));
    assert_eq!(
        fcall(&mut o, &["third", "0"]),
        Frame::error("ERR Function not found")
    );
    // A bad checksum, and a key's payload, are refused by both.
    let mut bad = ours_payload.to_vec();
    *bad.last_mut().unwrap() ^= 1;
    let Frame::Bulk(key_payload) = ({
        o.cmd(&["SET", "k", "v"]);
        o.cmd(&["DUMP", "k"])
    }) else {
        panic!("no key payload")
    };
    for c in [&mut r, &mut o] {
        assert_eq!(
            c.cmd(&p(&bad)),
            Frame::error("ERR DUMP payload version or checksum are wrong")
        );
        assert_eq!(
            c.cmd(&p(&key_payload)),
            Frame::error("ERR given type is not a function")
        );
    }
}

/// A library loaded through one shard runs on every shard (each loads it on first use), with
/// keys on one shard or on both (one atomic step), in a transaction; replacing or deleting it
/// reaches every shard.
#[test]
fn functions_run_on_every_shard() {
    let s = ServerProc::start(bin(), &["--threads", "2"]);
    let mut c = s.conn();
    let v1 = "#!lua name=lib\nredis.register_function('put', function(keys, args) \
              for i, k in ipairs(keys) do redis.call('set', k, args[1]) end return #keys end)";
    assert_eq!(c.cmd(&["FUNCTION", "LOAD", v1]), Frame::bulk("lib"));
    let (k0, k1) = (key_on(0, "a"), key_on(1, "b"));
    assert_eq!(fcall(&mut c, &["put", "1", &k0, "x"]), Frame::Integer(1));
    assert_eq!(fcall(&mut c, &["put", "1", &k1, "y"]), Frame::Integer(1));
    assert_eq!(
        fcall(&mut c, &["put", "2", &k0, &k1, "z"]),
        Frame::Integer(2)
    );
    assert_eq!(
        c.cmd(&["MGET", &k0, &k1]),
        Frame::Array(vec![Frame::bulk("z"), Frame::bulk("z")])
    );
    let v2 = v1.replace("return #keys", "return 'v2'");
    assert_eq!(
        c.cmd(&["FUNCTION", "LOAD", "REPLACE", &v2]),
        Frame::bulk("lib")
    );
    // Every connection (each lands on a shard of its own choosing) sees the new code.
    for _ in 0..6 {
        let mut other = s.conn();
        for k in [&k0, &k1] {
            assert_eq!(fcall(&mut other, &["put", "1", k, "w"]), Frame::bulk("v2"));
        }
    }
    assert_eq!(c.cmd(&["MULTI"]), Frame::simple("OK"));
    c.cmd(&["FCALL", "put", "1", &k0, "m"]);
    c.cmd(&["FCALL_RO", "put", "1", &k0, "m"]);
    assert_eq!(
        c.cmd(&["EXEC"]),
        Frame::Array(vec![
            Frame::bulk("v2"),
            Frame::error("ERR Can not execute a script with write flag using *_ro command.")
        ])
    );
    assert_eq!(c.cmd(&["FUNCTION", "DELETE", "lib"]), Frame::simple("OK"));
    for _ in 0..4 {
        let mut other = s.conn();
        for k in [&k0, &k1] {
            assert_eq!(
                fcall(&mut other, &["put", "1", k, "w"]),
                Frame::error("ERR Function not found")
            );
        }
    }
    let info = rcodis_tests::text(&c.cmd(&["INFO", "memory"]));
    assert!(info.contains("number_of_functions:0\r\n"), "{info}");
}

fn start(dir: &Path, args: &[&str]) -> (Process, u16) {
    rcodis_tests::start_server_in(bin(), dir, args)
}

fn libraries(c: &mut Conn) -> Vec<String> {
    let Frame::Array(libs) = c.cmd(&["FUNCTION", "LIST"]) else {
        panic!("FUNCTION LIST")
    };
    let mut names: Vec<String> = libs
        .iter()
        .map(|l| match l {
            Frame::Array(kv) => rcodis_tests::text(&kv[1]),
            Frame::Map(kv) => rcodis_tests::text(&kv[0].1),
            other => panic!("{other:?}"),
        })
        .collect();
    names.sort();
    names
}

/// The library set survives a restart from the append-only log (as logged, and after a
/// rewrite) and from a snapshot, and a replica gets the master's (its own are dropped at
/// the full resync) and each later change; a function that may write is refused there.
#[test]
fn libraries_persist_and_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let aof = ["--threads", "2", "--appendonly", "yes"];
    let (master, port) = start(dir.path(), &aof);
    let mut m = Conn::connect(port);
    let lib = |name: &str, f: &str, body: &str| {
        format!(
            "#!lua name={name}\nredis.register_function('{f}', function(keys, args) {body} end)"
        )
    };
    m.cmd(&[
        "FUNCTION",
        "LOAD",
        &lib("one", "f1", "return redis.call('incr', keys[1])"),
    ]);
    m.cmd(&["FUNCTION", "LOAD", &lib("two", "f2", "return 2")]);
    m.cmd(&["FUNCTION", "LOAD", &lib("gone", "f3", "return 3")]);
    assert_eq!(m.cmd(&["FUNCTION", "DELETE", "gone"]), Frame::simple("OK"));
    m.cmd(&[
        "FUNCTION",
        "LOAD",
        "REPLACE",
        &lib("two", "f2", "return 22"),
    ]);
    assert_eq!(fcall(&mut m, &["f1", "1", "counter"]), Frame::Integer(1));
    drop(m);
    drop(master);

    let (master, port) = start(dir.path(), &aof);
    let mut m = Conn::connect(port);
    assert_eq!(libraries(&mut m), ["one", "two"]);
    assert_eq!(fcall(&mut m, &["f2", "0"]), Frame::Integer(22));
    assert_eq!(fcall(&mut m, &["f1", "1", "counter"]), Frame::Integer(2));
    assert_eq!(
        m.cmd(&["BGREWRITEAOF"]),
        Frame::simple("Background append only file rewriting started")
    );
    wait_until("the rewrite to end", Duration::from_secs(30), || {
        rcodis_tests::text(&m.cmd(&["INFO", "persistence"])).contains("aof_rewrite_in_progress:0")
    });
    m.cmd(&["FUNCTION", "LOAD", &lib("three", "f3", "return 3")]);
    drop(m);
    drop(master);

    let (master, port) = start(dir.path(), &aof);
    let mut m = Conn::connect(port);
    assert_eq!(libraries(&mut m), ["one", "three", "two"]);
    assert_eq!(fcall(&mut m, &["f1", "1", "counter"]), Frame::Integer(3));

    // A replica with a library of its own.
    let replica = ServerProc::start(bin(), &["--threads", "2"]);
    let mut r = replica.conn();
    r.cmd(&["FUNCTION", "LOAD", &lib("own", "mine", "return 0")]);
    assert_eq!(
        r.cmd(&["REPLICAOF", "127.0.0.1", &port.to_string()]),
        Frame::simple("OK")
    );
    wait_until(
        "the replica to take the master's libraries",
        Duration::from_secs(30),
        || libraries(&mut r) == ["one", "three", "two"],
    );
    m.cmd(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=ro\nredis.register_function{function_name='peek', \
         callback=function(keys) return redis.call('get', keys[1]) end, flags={'no-writes'}}",
    ]);
    wait_until(
        "the new library on the replica",
        Duration::from_secs(30),
        || fcall(&mut r, &["peek", "1", "counter"]) == Frame::bulk("3"),
    );
    assert_eq!(
        r.cmd(&["FCALL_RO", "peek", "1", "counter"]),
        Frame::bulk("3")
    );
    assert_eq!(
        fcall(&mut r, &["f1", "1", "counter"]),
        Frame::error("READONLY You can't write against a read only replica.")
    );
    assert_eq!(
        r.cmd(&["FUNCTION", "LOAD", &lib("x", "x", "return 1")]),
        Frame::error("READONLY You can't write against a read only replica.")
    );
    m.cmd(&["FUNCTION", "DELETE", "three"]);
    wait_until(
        "the deletion on the replica",
        Duration::from_secs(30),
        || libraries(&mut r) == ["one", "ro", "two"],
    );

    // A snapshot (no log) keeps them too.
    drop(m);
    drop(master);
    let snapdir = tempfile::tempdir().unwrap();
    let (s, port) = start(snapdir.path(), &["--threads", "2"]);
    let mut c = Conn::connect(port);
    c.cmd(&["FUNCTION", "LOAD", &lib("snap", "sf", "return 'snap'")]);
    assert_eq!(c.cmd(&["SAVE"]), Frame::simple("OK"));
    drop(c);
    drop(s);
    let (_s, port) = start(snapdir.path(), &["--threads", "2"]);
    assert_eq!(
        fcall(&mut Conn::connect(port), &["sf", "0"]),
        Frame::bulk("snap")
    );
}

/// FUNCTION KILL stops a busy function (SCRIPT KILL does not, as in Redis), FUNCTION STATS
/// names it meanwhile; one that wrote cannot be killed.
#[test]
fn function_kill() {
    let s = ServerProc::start(bin(), &["--threads", "2"]);
    let mut c = s.conn();
    c.cmd(&[
        "FUNCTION",
        "LOAD",
        "#!lua name=loops\nredis.register_function('spin', function() while true do end end)\n\
         redis.register_function('spin_written', function(keys) redis.call('set', keys[1], 1) \
         while true do end end)",
    ]);
    let port = s.port;
    let busy = std::thread::spawn(move || Conn::connect(port).cmd(&["FCALL", "spin", "0"]));
    // Ask from new connections until one lands on the free shard and sees the function.
    let ask = |cmd: &[&str], ok: &dyn Fn(&Frame) -> bool| -> Frame {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut k = Conn::connect(port);
            k.set_timeout(Duration::from_millis(300));
            k.send(cmd);
            if let Some(f) = k.read_opt() {
                if ok(&f) {
                    return f;
                }
            }
            assert!(Instant::now() < deadline, "no answer to {cmd:?}");
        }
    };
    let stats = ask(&["FUNCTION", "STATS"], &|f| {
        rcodis_tests::text(f).contains("spin")
    });
    assert!(
        rcodis_tests::text(&stats).contains("duration_ms"),
        "{stats:?}"
    );
    ask(&["SCRIPT", "KILL"], &|f| {
        *f == Frame::error(
            "BUSY Redis is busy running a script. You can only call FUNCTION KILL or SHUTDOWN NOSAVE.",
        )
    });
    ask(&["FUNCTION", "KILL"], &|f| *f == Frame::simple("OK"));
    let r = busy.join().unwrap();
    assert!(
        matches!(&r, Frame::Error(e) if e.starts_with(b"ERR Script killed by user with SCRIPT KILL")),
        "{r:?}"
    );
    assert_eq!(c.cmd(&["PING"]), Frame::simple("PONG"));
    let k = key_on(0, "w");
    let _stuck =
        std::thread::spawn(move || Conn::connect(port).cmd(&["FCALL", "spin_written", "1", &k]));
    ask(
        &["FUNCTION", "KILL"],
        &|f| matches!(f, Frame::Error(e) if e.starts_with(b"UNKILLABLE")),
    );
    // The server is stopped (by PID) with the function still running.
}
