//! Behaviour a Redis user relies on that a reply-by-reply comparison does not show:
//! atomicity across shards, blocking pops, pub/sub, WATCH, protocol errors, limits, and a
//! real client library's connection handshake.

use std::time::{Duration, Instant};

use rcodis_core::resp::Frame;
use rcodis_core::slot::slot_of;
use rcodis_tests::{text, wait_until, Conn, ServerProc};

fn server(args: &[&str]) -> ServerProc {
    ServerProc::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_rcodis-server")),
        args,
    )
}

/// Two keys that live on different shards of a two-shard server.
fn keys_on_two_shards() -> (String, String) {
    let a = "{a}k".to_string();
    let sa = slot_of(a.as_bytes()) % 2;
    for i in 0.. {
        let b = format!("{{b{i}}}k");
        if slot_of(b.as_bytes()) % 2 != sa {
            return (a, b);
        }
    }
    unreachable!()
}

fn int(f: &Frame) -> i64 {
    f.as_integer()
        .unwrap_or_else(|| panic!("integer expected, got {f:?}"))
}

#[test]
fn cross_shard_commands_are_atomic() {
    let s = server(&["--threads", "2"]);
    let (a, b) = keys_on_two_shards();
    let mut c = s.conn();
    c.cmd(&["MSET", &a, "0", &b, "0"]);
    c.cmd(&["SADD", "{a}set", "token"]);
    let deadline = Instant::now() + Duration::from_secs(3);
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (a, b, port) = (a.clone(), b.clone(), s.port);
            std::thread::spawn(move || {
                let mut c = Conn::connect(port);
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let v = format!("{w}-{i}");
                    assert_eq!(c.cmd(&["MSET", &a, &v, &b, &v]), Frame::simple("OK"));
                    let r = c.cmd(&["MULTI"]);
                    assert_eq!(r, Frame::simple("OK"));
                    c.cmd(&["SET", &a, &v]);
                    c.cmd(&["SET", &b, &v]);
                    c.cmd(&["EXEC"]);
                    i += 1;
                }
            })
        })
        .collect();
    // SMOVE the token back and forth between sets on different shards while readers check
    // it is always in exactly one of them.
    let mover = {
        let port = s.port;
        let (sa, sb) = ("{a}set".to_string(), format!("{}set", &b[..b.len() - 1]));
        std::thread::spawn(move || {
            let mut c = Conn::connect(port);
            let mut from_a = true;
            while Instant::now() < deadline {
                let (f, t) = if from_a { (&sa, &sb) } else { (&sb, &sa) };
                assert_eq!(int(&c.cmd(&["SMOVE", f, t, "token"])), 1);
                from_a = !from_a;
            }
        })
    };
    let mut r = s.conn();
    let sb = format!("{}set", &b[..b.len() - 1]);
    let mut checks = 0;
    while Instant::now() < deadline {
        match r.cmd(&["MGET", &a, &b]) {
            Frame::Array(v) => assert_eq!(v[0], v[1], "MGET saw a partial MSET"),
            f => panic!("{f:?}"),
        }
        let n = int(&r.cmd(&["SISMEMBER", "{a}set", "token"]))
            + int(&r.cmd(&["SISMEMBER", &sb, "token"]));
        // Two separate reads may straddle one SMOVE; a transaction may not.
        r.cmd(&["MULTI"]);
        r.cmd(&["SISMEMBER", "{a}set", "token"]);
        r.cmd(&["SISMEMBER", &sb, "token"]);
        match r.cmd(&["EXEC"]) {
            Frame::Array(v) => assert_eq!(int(&v[0]) + int(&v[1]), 1, "token lost or doubled"),
            f => panic!("{f:?}"),
        }
        assert!((0..=2).contains(&n));
        checks += 1;
    }
    for w in writers {
        w.join().unwrap();
    }
    mover.join().unwrap();
    assert!(checks > 10);
    // RENAME across shards moves value and TTL together.
    c.cmd(&["SET", &a, "v", "EX", "100"]);
    c.cmd(&["RENAME", &a, &b]);
    assert_eq!(c.cmd(&["EXISTS", &a]), Frame::Integer(0));
    assert_eq!(text(&c.cmd(&["GET", &b])), "v");
    assert!(int(&c.cmd(&["TTL", &b])) > 90);
}

#[test]
fn blocking_pops_wake_in_arrival_order() {
    let s = server(&["--threads", "2"]);
    let port = s.port;
    let waiters: Vec<_> = (0..3)
        .map(|i| {
            let h = std::thread::spawn(move || {
                let mut c = Conn::connect(port);
                c.cmd(&["CLIENT", "SETNAME", &format!("w{i}")]);
                c.cmd(&["BLPOP", "q", "other", "10"])
            });
            // Make the arrival order deterministic.
            let mut probe = Conn::connect(port);
            wait_until("waiter to block", Duration::from_secs(5), || {
                text(&probe.cmd(&["INFO", "clients"]))
                    .contains(&format!("blocked_clients:{}", i + 1))
            });
            h
        })
        .collect();
    let mut c = s.conn();
    assert_eq!(int(&c.cmd(&["RPUSH", "q", "a", "b", "c"])), 3);
    let got: Vec<Frame> = waiters.into_iter().map(|w| w.join().unwrap()).collect();
    let vals: Vec<String> = got
        .iter()
        .map(|f| text(&f.as_array().expect("served")[1]))
        .collect();
    assert_eq!(vals, ["a", "b", "c"]);
    assert_eq!(c.cmd(&["EXISTS", "q"]), Frame::Integer(0));

    // Timeout gives a null array; the waiter is gone afterwards.
    let t = Instant::now();
    assert_eq!(c.cmd(&["BRPOP", "none", "0.2"]), Frame::NullArray);
    assert!(t.elapsed() >= Duration::from_millis(190));
    c.cmd(&["RPUSH", "none", "x"]);
    assert_eq!(text(&c.cmd(&["LPOP", "none"])), "x");

    // BLMOVE across shards and BZPOPMIN, woken by a push from another connection.
    let (src, dst) = keys_on_two_shards();
    let h = std::thread::spawn(move || {
        Conn::connect(port).cmd(&["BLMOVE", &src, &dst, "LEFT", "RIGHT", "5"])
    });
    let mut probe = Conn::connect(port);
    wait_until("BLMOVE to block", Duration::from_secs(5), || {
        text(&probe.cmd(&["INFO", "clients"])).contains("blocked_clients:1")
    });
    let (src, dst) = keys_on_two_shards();
    c.cmd(&["RPUSH", &src, "moved"]);
    assert_eq!(text(&h.join().unwrap()), "moved");
    wait_until(
        "moved element at destination",
        Duration::from_secs(5),
        || c.cmd(&["LRANGE", &dst, "0", "-1"]) == Frame::Array(vec![Frame::bulk("moved")]),
    );
    let h = std::thread::spawn(move || Conn::connect(port).cmd(&["BZPOPMIN", "zq", "5"]));
    wait_until("BZPOPMIN to block", Duration::from_secs(5), || {
        text(&probe.cmd(&["INFO", "clients"])).contains("blocked_clients:1")
    });
    c.cmd(&["ZADD", "zq", "2", "m"]);
    let r = h.join().unwrap();
    let v = r.as_array().unwrap();
    assert_eq!(
        (text(&v[0]), text(&v[1]), text(&v[2])),
        ("zq".into(), "m".into(), "2".into())
    );
}

#[test]
fn blocked_client_that_disconnects_loses_nothing() {
    let s = server(&["--threads", "2"]);
    {
        let mut c = s.conn();
        c.send(&["BLPOP", "lost", "0"]);
        let mut probe = s.conn();
        wait_until("client to block", Duration::from_secs(5), || {
            text(&probe.cmd(&["INFO", "clients"])).contains("blocked_clients:1")
        });
    } // dropped: the socket closes
    let mut probe = s.conn();
    wait_until("waiter to go", Duration::from_secs(5), || {
        text(&probe.cmd(&["INFO", "clients"])).contains("blocked_clients:0")
    });
    probe.cmd(&["RPUSH", "lost", "keep"]);
    assert_eq!(text(&probe.cmd(&["LPOP", "lost"])), "keep");
}

#[test]
fn pubsub_across_shards() {
    let s = server(&["--threads", "2"]);
    let mut subs: Vec<Conn> = (0..4).map(|_| s.conn()).collect();
    for (i, c) in subs.iter_mut().enumerate() {
        if i % 2 == 0 {
            let r = c.cmd(&["SUBSCRIBE", "news"]);
            assert_eq!(
                r,
                Frame::Array(vec![
                    Frame::bulk("subscribe"),
                    Frame::bulk("news"),
                    Frame::Integer(1)
                ])
            );
        } else {
            let r = c.cmd(&["PSUBSCRIBE", "n*"]);
            assert_eq!(
                r,
                Frame::Array(vec![
                    Frame::bulk("psubscribe"),
                    Frame::bulk("n*"),
                    Frame::Integer(1)
                ])
            );
        }
    }
    let mut p = s.conn();
    assert_eq!(
        p.cmd(&["PUBSUB", "NUMSUB", "news"]),
        Frame::Array(vec![Frame::bulk("news"), Frame::Integer(2)])
    );
    assert_eq!(p.cmd(&["PUBSUB", "NUMPAT"]), Frame::Integer(1));
    assert_eq!(p.cmd(&["PUBLISH", "news", "hello"]), Frame::Integer(4));
    for (i, c) in subs.iter_mut().enumerate() {
        let m = c.read().unwrap();
        if i % 2 == 0 {
            assert_eq!(
                m,
                Frame::Array(vec![
                    Frame::bulk("message"),
                    Frame::bulk("news"),
                    Frame::bulk("hello")
                ])
            );
        } else {
            assert_eq!(
                m,
                Frame::Array(vec![
                    Frame::bulk("pmessage"),
                    Frame::bulk("n*"),
                    Frame::bulk("news"),
                    Frame::bulk("hello")
                ])
            );
        }
    }
    // Subscribed (RESP2) connections accept only the pub/sub commands.
    let e = subs[0].cmd(&["GET", "x"]);
    assert_eq!(
        text(&e),
        "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
    );
    assert_eq!(
        subs[0].cmd(&["PING"]),
        Frame::Array(vec![Frame::bulk("pong"), Frame::bulk("")])
    );
    assert_eq!(
        subs[0].cmd(&["UNSUBSCRIBE"]),
        Frame::Array(vec![
            Frame::bulk("unsubscribe"),
            Frame::bulk("news"),
            Frame::Integer(0)
        ])
    );
    assert_eq!(subs[0].cmd(&["GET", "x"]), Frame::NullBulk);
    // RESP3 gets push frames.
    let mut r3 = s.conn();
    r3.cmd(&["HELLO", "3"]);
    r3.cmd(&["SUBSCRIBE", "c3"]);
    assert_eq!(p.cmd(&["PUBLISH", "c3", "m"]), Frame::Integer(1));
    assert_eq!(
        r3.read().unwrap(),
        Frame::Push(vec![
            Frame::bulk("message"),
            Frame::bulk("c3"),
            Frame::bulk("m")
        ])
    );
}

#[test]
fn watch_aborts_on_change_from_another_client() {
    let s = server(&["--threads", "2"]);
    let (a, b) = keys_on_two_shards();
    let mut c1 = s.conn();
    let mut c2 = s.conn();
    c1.cmd(&["SET", &a, "1"]);
    c1.cmd(&["WATCH", &a, &b]);
    c2.cmd(&["SET", &b, "changed"]);
    c1.cmd(&["MULTI"]);
    c1.cmd(&["SET", &a, "2"]);
    assert_eq!(c1.cmd(&["EXEC"]), Frame::NullArray);
    assert_eq!(text(&c1.cmd(&["GET", &a])), "1");
    // Untouched watch: EXEC runs.
    c1.cmd(&["WATCH", &a]);
    c1.cmd(&["MULTI"]);
    c1.cmd(&["INCR", &a]);
    c1.cmd(&["INCR", &b]);
    match c1.cmd(&["EXEC"]) {
        Frame::Array(v) => {
            assert_eq!(v[0], Frame::Integer(2));
            assert!(v[1].is_error(), "INCR of a non-number fails inside EXEC");
        }
        f => panic!("{f:?}"),
    }
    // Expiry by FLUSHALL counts as a change.
    c1.cmd(&["WATCH", &a]);
    c2.cmd(&["FLUSHALL"]);
    c1.cmd(&["MULTI"]);
    c1.cmd(&["SET", &a, "x"]);
    assert_eq!(c1.cmd(&["EXEC"]), Frame::NullArray);
}

#[test]
fn protocol_errors_close_with_redis_wording() {
    let s = server(&["--threads", "1"]);
    for (input, want) in [
        (
            &b"*1\r\nx\r\n"[..],
            "ERR Protocol error: expected '$', got 'x'",
        ),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (
            b"set \"a\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ] {
        let mut c = s.conn();
        c.send_raw(input);
        assert_eq!(text(&c.read().unwrap()), want);
        assert!(
            c.read().is_none(),
            "connection closed after a protocol error"
        );
    }
    // Inline commands work, and the server keeps serving after errors.
    let mut c = s.conn();
    c.send_raw(b"set k \"a b\"\r\nget k\r\n");
    assert_eq!(c.read().unwrap(), Frame::simple("OK"));
    assert_eq!(text(&c.read().unwrap()), "a b");
    // A huge pipeline in one write.
    let mut big = Vec::new();
    for i in 0..5000 {
        rcodis_core::resp::Request::from_args(["SET", &format!("p{i}"), "v"]).write_resp(&mut big);
    }
    c.send_raw(&big);
    for _ in 0..5000 {
        assert_eq!(c.read().unwrap(), Frame::simple("OK"));
    }
    assert_eq!(c.cmd(&["DBSIZE"]), Frame::Integer(5001));
}

#[test]
fn auth_and_limits() {
    let s = server(&[
        "--threads",
        "2",
        "--requirepass",
        "secret",
        "--maxclients",
        "3",
    ]);
    let mut c = s.conn();
    assert_eq!(
        text(&c.cmd(&["GET", "x"])),
        "NOAUTH Authentication required."
    );
    // Unknown commands and wrong arity are told first, as Redis does.
    assert_eq!(
        text(&c.cmd(&["GET"])),
        "ERR wrong number of arguments for 'get' command"
    );
    assert!(text(&c.cmd(&["NOSUCH"])).starts_with("ERR unknown command 'NOSUCH'"));
    assert_eq!(
        text(&c.cmd(&["AUTH", "wrong"])),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(c.cmd(&["AUTH", "secret"]), Frame::simple("OK"));
    assert_eq!(c.cmd(&["GET", "x"]), Frame::NullBulk);
    let mut h = s.conn();
    match h.cmd(&["HELLO", "3", "AUTH", "default", "secret"]) {
        Frame::Map(m) => assert!(m
            .iter()
            .any(|(k, v)| text(k) == "proto" && *v == Frame::Integer(3))),
        f => panic!("{f:?}"),
    }
    // Start-up probes may still be closing: wait until only c and h count.
    wait_until("probe connections to close", Duration::from_secs(5), || {
        text(&c.cmd(&["INFO", "clients"])).contains("connected_clients:2\r\n")
    });
    let mut third = s.conn();
    assert_eq!(third.cmd(&["AUTH", "secret"]), Frame::simple("OK"));
    let mut fourth = s.conn();
    assert_eq!(
        text(&fourth.read().unwrap()),
        "ERR max number of clients reached"
    );
}

#[test]
fn expiry_is_exact_and_active() {
    let s = server(&["--threads", "2"]);
    let mut c = s.conn();
    for i in 0..200 {
        c.cmd(&["SET", &format!("e{i}"), "v", "PX", "100"]);
    }
    c.cmd(&["SET", "keep", "v"]);
    std::thread::sleep(Duration::from_millis(150));
    // Never returned after expiry, even before active expiry reaps it.
    assert_eq!(c.cmd(&["GET", "e7"]), Frame::NullBulk);
    wait_until("active expiry to reap", Duration::from_secs(10), || {
        c.cmd(&["DBSIZE"]) == Frame::Integer(1)
    });
    assert!(text(&c.cmd(&["INFO", "stats"])).contains("expired_keys:200"));
}

#[test]
fn exec_with_wrong_arity_aborts() {
    let s = server(&["--threads", "2"]);
    rcodis_tests::check_exec_arity_aborts(&mut s.conn(), &mut s.conn(), "w");
}

#[test]
fn lcs_of_long_strings_is_refused_not_computed() {
    let s = server(&["--threads", "1"]);
    let mut c = s.conn();
    c.cmd(&["SET", "{l}a", &"a".repeat(30_000)]);
    c.cmd(&["SET", "{l}b", &"b".repeat(30_000)]);
    // A 30,001 x 30,001 table of u32 is 3.6 GB: refused as Redis refuses it.
    assert_eq!(
        text(&c.cmd(&["LCS", "{l}a", "{l}b", "LEN"])),
        "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"
    );
    assert_eq!(c.cmd(&["PING"]), Frame::simple("PONG"));
    c.cmd(&["SET", "{l}c", &"ab".repeat(100)]);
    assert_eq!(c.cmd(&["LCS", "{l}a", "{l}c", "LEN"]), Frame::Integer(100));
}

#[test]
fn info_keyspace_estimates_avg_ttl() {
    let s = server(&["--threads", "2"]);
    let mut c = s.conn();
    for i in 0..50 {
        c.cmd(&["SET", &format!("t{i}"), "v", "EX", "1000"]);
    }
    c.cmd(&["SET", "forever", "v"]);
    // Active expiry samples the keys with a TTL and keeps a running mean, as Redis does.
    let avg = |c: &mut Conn| -> i64 {
        let info = text(&c.cmd(&["INFO", "keyspace"]));
        let line = info
            .lines()
            .find(|l| l.starts_with("db0:"))
            .expect("db0 line");
        assert!(
            line.starts_with("db0:keys=51,expires=50,avg_ttl="),
            "{line}"
        );
        line.rsplit('=').next().unwrap().trim().parse().unwrap()
    };
    // Each of the two shards keeps its own estimate, and INFO weighs them by their keys with
    // a TTL: until both have sampled, the figure is part-way. Wait for it to settle.
    wait_until("an avg_ttl estimate", Duration::from_secs(10), || {
        (900_000..=1_000_000).contains(&avg(&mut c))
    });
}

#[test]
fn info_reports_instantaneous_rates() {
    let s = server(&["--threads", "2"]);
    let mut c = s.conn();
    let rate = |c: &mut Conn, field: &str| -> f64 {
        let info = text(&c.cmd(&["INFO", "stats"]));
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("{field} missing in {info}"))
            .trim()
            .parse()
            .unwrap()
    };
    // A client keeps both shards busy (keys of both) until the rates show it.
    let (a, b) = keys_on_two_shards();
    let mut load = s.conn();
    let batch: Vec<u8> = (0..50)
        .flat_map(|i| {
            let k = if i % 2 == 0 { &a } else { &b };
            format!("*2\r\n$3\r\nGET\r\n${}\r\n{k}\r\n", k.len()).into_bytes()
        })
        .collect();
    let busy = |load: &mut Conn| {
        load.send_raw(&batch);
        for _ in 0..50 {
            load.read().expect("reply");
        }
    };
    wait_until(
        "instantaneous rates under load",
        Duration::from_secs(20),
        || {
            for _ in 0..20 {
                busy(&mut load);
            }
            rate(&mut c, "instantaneous_ops_per_sec") > 2000.0
                && rate(&mut c, "instantaneous_input_kbps") > 0.0
                && rate(&mut c, "instantaneous_output_kbps") > 0.0
        },
    );
    // Once the load stops, the estimate falls back (16 samples of 100 ms later) to what the
    // probe's own INFO commands make, some 50 per second.
    wait_until("rates to fall", Duration::from_secs(20), || {
        rate(&mut c, "instantaneous_ops_per_sec") < 200.0
    });
}

#[test]
fn client_setinfo_is_kept_and_shown() {
    let s = server(&["--threads", "2"]);
    rcodis_tests::check_client_setinfo(&mut s.conn(), s.port);
}

#[test]
fn redis_crate_client_connects_and_works() {
    let s = server(&["--threads", "2"]);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", s.port)).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("rk").arg(42).query(&mut con).unwrap();
    let v: i64 = redis::cmd("GET").arg("rk").query(&mut con).unwrap();
    assert_eq!(v, 42);
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    assert!(info.contains("redis_version:7.0.15"));
    assert!(info.contains("arch_bits:64"));
    let (a, b): (Vec<String>, i64) = redis::pipe()
        .cmd("MSET")
        .arg("x")
        .arg("1")
        .arg("y")
        .arg("2")
        .ignore()
        .cmd("MGET")
        .arg("x")
        .arg("y")
        .cmd("DBSIZE")
        .query(&mut con)
        .unwrap();
    assert_eq!(a, ["1", "2"]);
    assert_eq!(b, 3);
}

#[test]
fn second_server_on_a_taken_port_refuses_to_start() {
    let s = server(&["--threads", "2"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rcodis-server"))
        .args(["--port", &s.port.to_string(), "--threads", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot listen on") && err.contains("in use"),
        "{err}"
    );
    assert_eq!(s.conn().cmd(&["PING"]), Frame::simple("PONG"));
}

#[test]
fn sort_patterns_must_stay_on_the_key_shard() {
    let s = server(&["--threads", "2"]);
    let mut c = s.conn();
    c.cmd(&["RPUSH", "{u}list", "2", "1"]);
    c.cmd(&[
        "MSET", "{u}w_1", "20", "{u}w_2", "10", "{u}o_1", "one", "{u}o_2", "two",
    ]);
    assert_eq!(
        c.cmd(&["SORT", "{u}list", "BY", "{u}w_*", "GET", "{u}o_*"]),
        Frame::Array(vec![Frame::bulk("two"), Frame::bulk("one")])
    );
    assert!(
        text(&c.cmd(&["SORT", "{u}list", "BY", "w_*"])).starts_with("ERR BY option of SORT denied")
    );
    assert!(text(&c.cmd(&["SORT", "{u}list", "GET", "o_*"]))
        .starts_with("ERR GET option of SORT denied"));
    // STORE to a key on another shard goes through the atomic multi-shard path.
    let home = slot_of(b"{u}list") % 2;
    let other = (0..)
        .map(|i| format!("dst{i}"))
        .find(|k| slot_of(k.as_bytes()) % 2 != home)
        .unwrap();
    assert_eq!(
        c.cmd(&["SORT", "{u}list", "STORE", &other]),
        Frame::Integer(2)
    );
    assert_eq!(
        c.cmd(&["LRANGE", &other, "0", "-1"]),
        Frame::Array(vec![Frame::bulk("1"), Frame::bulk("2")])
    );
    assert!(
        text(&c.cmd(&["SORT", "{u}list", "BY", "{u}w_*", "STORE", &other]))
            .starts_with("ERR SORT with BY or GET cannot STORE")
    );
    assert_eq!(
        c.cmd(&["SORT", "{u}list", "BY", "{u}w_*", "STORE", "{u}dst"]),
        Frame::Integer(2)
    );
    assert_eq!(
        c.cmd(&["LRANGE", "{u}dst", "0", "-1"]),
        Frame::Array(vec![Frame::bulk("2"), Frame::bulk("1")])
    );
}

/// One write holding a whole batch: the server decodes it at once and looks its keys up
/// ahead; replies must be exactly those of running the commands one by one (SELECT in the
/// middle, expired keys, long and short keys, keys of both shards, AUTH in the middle, a
/// protocol error at the end).
#[test]
fn pipelined_batches_run_in_order() {
    fn batch(cmds: &[&[&str]]) -> Vec<u8> {
        let mut out = Vec::new();
        for c in cmds {
            rcodis_core::resp::Request::from_args(c.iter().copied()).write_resp(&mut out);
        }
        out
    }
    let s = server(&["--threads", "2", "--requirepass", "pw"]);
    let mut c = s.conn();
    let long = "k".repeat(40);
    let (a, b) = keys_on_two_shards();
    // Unauthenticated, then AUTH mid-batch: the rest runs authenticated.
    c.send_raw(&batch(&[
        &["SET", "x", "1"],
        &["AUTH", "pw"],
        &["SET", "x", "1"],
        &["SET", &long, "long"],
        &["SET", &a, "on-a"],
        &["SET", &b, "on-b"],
        &["SET", "gone", "v", "PX", "1"],
    ]));
    assert_eq!(text(&c.read().unwrap()), "NOAUTH Authentication required.");
    for _ in 0..6 {
        assert_eq!(c.read().unwrap(), Frame::simple("OK"));
    }
    std::thread::sleep(Duration::from_millis(20));
    c.send_raw(&batch(&[
        &["GET", "x"],
        &["GET", &long],
        &["GET", &a],
        &["GET", &b],
        &["GET", "gone"],
        &["SELECT", "1"],
        &["GET", "x"],
        &["SET", "x", "db1"],
        &["SELECT", "0"],
        &["GET", "x"],
        &["INCR", "x"],
        &["GET", "x"],
        &["SET", "x", "2"],
        &["GET", "x"],
        &["LPUSH", &long, "v"],
        &["PING"],
    ]));
    let want = [
        Frame::bulk("1"),
        Frame::bulk("long"),
        Frame::bulk("on-a"),
        Frame::bulk("on-b"),
        Frame::NullBulk,
        Frame::simple("OK"),
        Frame::NullBulk,
        Frame::simple("OK"),
        Frame::simple("OK"),
        Frame::bulk("1"),
        Frame::Integer(2),
        Frame::bulk("2"),
        Frame::simple("OK"),
        Frame::bulk("2"),
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(&c.read().unwrap(), w, "reply {i}");
    }
    assert!(text(&c.read().unwrap()).starts_with("WRONGTYPE"));
    assert_eq!(c.read().unwrap(), Frame::simple("PONG"));
    assert!(text(&c.cmd(&["INFO", "stats"])).contains("expired_keys:1"));
    // Valid commands before a protocol error in the same write still run and answer.
    let mut raw = batch(&[&["SET", "y", "1"], &["GET", "y"]]);
    raw.extend_from_slice(b"*1\r\nx\r\n");
    c.send_raw(&raw);
    assert_eq!(c.read().unwrap(), Frame::simple("OK"));
    assert_eq!(c.read().unwrap(), Frame::bulk("1"));
    assert_eq!(
        text(&c.read().unwrap()),
        "ERR Protocol error: expected '$', got 'x'"
    );
    assert!(c.read().is_none());
}

/// OBJECT ENCODING of a string depends on how it was written, as in Redis 7.0: what a client
/// sets is an integer when it reads as one; APPEND to an existing key, SETRANGE, SETBIT,
/// BITFIELD and BITOP make it raw; INCRBYFLOAT builds a plain string. (Checked side by side
/// with redis-server 7.0.15.)
#[test]
fn string_encodings_follow_how_they_were_written() {
    let s = server(&["--threads", "2"]);
    let mut c = s.conn();
    let long = "x".repeat(50);
    let steps: &[&[&str]] = &[
        &["SET", "a", "123"],
        &["APPEND", "a", "4"],
        &["APPEND", "c", "77"],
        &["APPEND", "c2", "hello"],
        &["SETRANGE", "d", "0", "12"],
        &["SET", "e", "5"],
        &["SETRANGE", "e", "0", "6"],
        &["INCRBYFLOAT", "g", "2"],
        &["SETBIT", "h", "3", "1"],
        &["SET", "i", "9"],
        &["INCR", "i"],
        &["SET", "j", "abc"],
        &["BITOP", "OR", "k", "j"],
        &["SET", "l", &long],
        &["BITFIELD", "m", "SET", "u8", "0", "65"],
        &["COPY", "a", "o"],
        &["SET", "q", "42"],
        &["EXPIRE", "q", "100"],
        &["APPEND", "q", "1"],
        &["GETEX", "q", "PERSIST"],
        &["SET", "s", "-0"],
        &["SET", "u", "12345678901234567890"],
        &["SET", "a2", "123"],
        &["APPEND", "a2", "4"],
        &["SET", "a2", "1234"],
    ];
    for step in steps {
        assert!(!c.cmd(step).is_error(), "{step:?}");
    }
    for (key, want) in [
        ("a", "raw"),
        ("c", "int"),
        ("c2", "embstr"),
        ("d", "raw"),
        ("e", "raw"),
        ("g", "embstr"),
        ("h", "raw"),
        ("i", "int"),
        ("j", "embstr"),
        ("k", "raw"),
        ("l", "raw"),
        ("m", "raw"),
        ("o", "raw"),
        ("q", "raw"),
        ("s", "embstr"),
        ("u", "embstr"),
        ("a2", "int"),
    ] {
        assert_eq!(
            text(&c.cmd(&["OBJECT", "ENCODING", key])),
            want,
            "OBJECT ENCODING {key}"
        );
    }
}

/// XREAD and XREADGROUP with BLOCK: served at once when a stream has something, otherwise
/// woken by the XADD that brings it (keys on both shards), "$" meaning "after what is there
/// now", a timeout answering null, a group read creating the pending entry, and a client
/// that leaves taking nothing with it.
#[test]
fn blocking_stream_reads() {
    let s = server(&["--threads", "2"]);
    let (k1, k2) = keys_on_two_shards();
    let mut c = s.conn();
    c.cmd(&["XADD", &k1, "1-0", "f", "old"]);
    // Something there: answered at once.
    let r = c.cmd(&["XREAD", "BLOCK", "0", "STREAMS", &k1, "0"]);
    assert!(format!("{r:?}").contains("old"), "{r:?}");
    // "$": waits for what comes next; woken by an XADD on the other shard's key.
    let mut probe = s.conn();
    let h = block_on(
        &s,
        &mut probe,
        &[
            "XREAD", "COUNT", "5", "BLOCK", "5000", "STREAMS", &k1, &k2, "$", "$",
        ],
        1,
    );
    c.cmd(&["XADD", &k2, "7-0", "f", "new"]);
    let r = h.join().unwrap();
    let Frame::Array(streams) = &r else {
        panic!("{r:?}")
    };
    assert_eq!(streams.len(), 1, "{r:?}");
    assert_eq!(text(&streams[0].as_array().unwrap()[0]), k2);
    assert!(format!("{r:?}").contains("new"));
    // A timeout answers null.
    let t = Instant::now();
    assert_eq!(
        c.cmd(&["XREAD", "BLOCK", "200", "STREAMS", &k1, "$"]),
        Frame::NullArray
    );
    assert!(t.elapsed() >= Duration::from_millis(190));
    // A group read: blocks on ">", gets the new entry, which is then pending for it.
    c.cmd(&["XGROUP", "CREATE", &k1, "g", "$"]);
    let h = block_on(
        &s,
        &mut probe,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "alice",
            "BLOCK",
            "5000",
            "STREAMS",
            &k1,
            ">",
        ],
        1,
    );
    c.cmd(&["XADD", &k1, "9-0", "f", "for-alice"]);
    let r = h.join().unwrap();
    assert!(format!("{r:?}").contains("for-alice"), "{r:?}");
    let p = c.cmd(&["XPENDING", &k1, "g"]);
    assert_eq!(p.as_array().unwrap()[0], Frame::Integer(1), "{p:?}");
    // A blocked reader that leaves: nothing is delivered to it or lost.
    {
        let mut gone = s.conn();
        gone.send(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "bob",
            "BLOCK",
            "0",
            "STREAMS",
            &k1,
            ">",
        ]);
        wait_until("bob to block", Duration::from_secs(5), || {
            text(&probe.cmd(&["INFO", "clients"])).contains("blocked_clients:1")
        });
    }
    wait_until("bob's waiter to go", Duration::from_secs(5), || {
        text(&probe.cmd(&["INFO", "clients"])).contains("blocked_clients:0")
    });
    c.cmd(&["XADD", &k1, "10-0", "f", "later"]);
    let r = c.cmd(&["XREADGROUP", "GROUP", "g", "carol", "STREAMS", &k1, ">"]);
    assert!(format!("{r:?}").contains("later"), "{r:?}");
    // The group destroyed, or the stream deleted, under a blocked group reader: told so,
    // in Redis's words.
    for (undo, said) in [
        (
            vec!["XGROUP", "DESTROY", k1.as_str(), "g"],
            "NOGROUP the consumer group this client was blocked on no longer exists",
        ),
        (
            vec!["DEL", k1.as_str()],
            "UNBLOCKED the stream key no longer exists",
        ),
        (
            vec!["FLUSHALL"],
            "UNBLOCKED the stream key no longer exists",
        ),
    ] {
        c.cmd(&["XGROUP", "CREATE", &k1, "g", "$", "MKSTREAM"]);
        let h = block_on(
            &s,
            &mut probe,
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "dan",
                "BLOCK",
                "5000",
                "STREAMS",
                &k1,
                ">",
            ],
            1,
        );
        c.cmd(&undo);
        assert_eq!(text(&h.join().unwrap()), said);
    }
}

/// Starts `args` on a new connection in a thread and waits until the server counts
/// `blocked` blocked clients.
fn block_on(
    s: &ServerProc,
    probe: &mut Conn,
    args: &[&str],
    blocked: usize,
) -> std::thread::JoinHandle<Frame> {
    let port = s.port;
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let h = std::thread::spawn(move || {
        let a: Vec<&str> = args.iter().map(|a| a.as_str()).collect();
        Conn::connect(port).cmd(&a)
    });
    let want = format!("blocked_clients:{blocked}\r");
    wait_until("a client to block", Duration::from_secs(5), || {
        text(&probe.cmd(&["INFO", "clients"])).contains(&want)
    });
    h
}

/// As in Redis: blocked clients see what a transaction did once it is over, never a state
/// inside it; a key that now holds another type leaves its waiters blocked; what a blocked
/// move pushes serves the destination's own waiters; a waiter that cannot be served yet does
/// not hold back those behind it.
#[test]
fn blocked_clients_are_served_as_redis_serves_them() {
    for threads in ["1", "2"] {
        let s = server(&["--threads", threads]);
        let mut c = s.conn();
        let mut probe = s.conn();
        // MULTI: three pushes; the waiter gets the last one (the list's head at EXEC).
        let h = block_on(&s, &mut probe, &["BLPOP", "list", "0"], 1);
        c.cmd(&["MULTI"]);
        for e in ["a", "b", "c"] {
            c.cmd(&["LPUSH", "list", e]);
        }
        c.cmd(&["EXEC"]);
        assert_eq!(
            h.join().unwrap(),
            Frame::Array(vec![Frame::bulk("list"), Frame::bulk("c")])
        );
        // Pushed, deleted and set to a string inside one transaction: nothing to serve, and
        // the string does not end the wait with an error.
        c.cmd(&["DEL", "list"]);
        let h = block_on(&s, &mut probe, &["BLPOP", "list", "0"], 1);
        c.cmd(&["MULTI"]);
        c.cmd(&["LPUSH", "list", "a"]);
        c.cmd(&["DEL", "list"]);
        c.cmd(&["SET", "list", "foo"]);
        c.cmd(&["EXEC"]);
        assert!(text(&probe.cmd(&["INFO", "clients"])).contains("blocked_clients:1\r"));
        c.cmd(&["DEL", "list"]);
        c.cmd(&["LPUSH", "list", "b"]);
        assert_eq!(
            h.join().unwrap(),
            Frame::Array(vec![Frame::bulk("list"), Frame::bulk("b")])
        );
        // BLMOVE into a list a BLPOP waits on: the element travels on to the BLPOP.
        let h2 = block_on(&s, &mut probe, &["BLPOP", "target{t}", "0"], 1);
        let h1 = block_on(
            &s,
            &mut probe,
            &["BLMOVE", "src{t}", "target{t}", "LEFT", "RIGHT", "0"],
            2,
        );
        c.cmd(&["RPUSH", "src{t}", "foo"]);
        assert_eq!(h1.join().unwrap(), Frame::bulk("foo"));
        assert_eq!(
            h2.join().unwrap(),
            Frame::Array(vec![Frame::bulk("target{t}"), Frame::bulk("foo")])
        );
        assert_eq!(c.cmd(&["EXISTS", "target{t}"]), Frame::Integer(0));
        // Two XREADs: the first waits for entries after 100-0, the second for anything new;
        // an XADD of 5-0 serves the second and leaves the first waiting.
        c.cmd(&["XADD", "st", "1-0", "f", "v"]);
        let far = block_on(
            &s,
            &mut probe,
            &["XREAD", "BLOCK", "0", "STREAMS", "st", "100-0"],
            1,
        );
        let near = block_on(
            &s,
            &mut probe,
            &["XREAD", "BLOCK", "0", "STREAMS", "st", "$"],
            2,
        );
        c.cmd(&["XADD", "st", "5-0", "f", "five"]);
        assert!(format!("{:?}", near.join().unwrap()).contains("five"));
        c.cmd(&["XADD", "st", "101-0", "f", "far"]);
        assert!(format!("{:?}", far.join().unwrap()).contains("far"));
        // A source of another type is WRONGTYPE at once; a destination of another type is
        // WRONGTYPE when the waiter is woken, and the element stays where it was.
        c.cmd(&["SET", "bl{t}", "nolist"]);
        let r = c.cmd(&["BRPOPLPUSH", "bl{t}", "tg{t}", "1"]);
        assert!(
            matches!(&r, Frame::Error(e) if e.starts_with(b"WRONGTYPE")),
            "{r:?}"
        );
        c.cmd(&["DEL", "bl{t}"]);
        c.cmd(&["SET", "tg{t}", "nolist"]);
        let h = block_on(&s, &mut probe, &["BRPOPLPUSH", "bl{t}", "tg{t}", "0"], 1);
        c.cmd(&["RPUSH", "bl{t}", "foo"]);
        let r = h.join().unwrap();
        assert!(
            matches!(&r, Frame::Error(e) if e.starts_with(b"WRONGTYPE")),
            "{r:?}"
        );
        assert_eq!(
            c.cmd(&["LRANGE", "bl{t}", "0", "-1"]),
            Frame::Array(vec![Frame::bulk("foo")])
        );
        // SWAPDB and MOVE bring a list into the database a client waits in.
        c.cmd(&["SELECT", "1"]);
        c.cmd(&["RPUSH", "k", "hello"]);
        c.cmd(&["SELECT", "0"]);
        c.cmd(&["DEL", "k"]);
        let h = block_on(&s, &mut probe, &["BRPOP", "k", "5"], 1);
        c.cmd(&["SWAPDB", "1", "0"]);
        assert_eq!(
            h.join().unwrap(),
            Frame::Array(vec![Frame::bulk("k"), Frame::bulk("hello")])
        );
        c.cmd(&["SELECT", "1"]);
        c.cmd(&["RPUSH", "m", "moved"]);
        let h = block_on(&s, &mut probe, &["BLPOP", "m", "5"], 1);
        c.cmd(&["MOVE", "m", "0"]);
        assert_eq!(
            h.join().unwrap(),
            Frame::Array(vec![Frame::bulk("m"), Frame::bulk("moved")])
        );
        c.cmd(&["SELECT", "0"]);
    }
}

/// WATCH as Redis 7.0 decides it, side by side with redis-server: a key already expired when
/// watched may be deleted (lazily, by FLUSHDB, by SWAPDB) without failing EXEC; a key alive
/// when watched that expires fails it; FLUSHALL/FLUSHDB/SWAPDB change only keys alive on
/// either side; and a command refused for memory while queueing aborts the transaction.
#[test]
fn watch_and_multi_follow_redis_on_expired_keys_and_oom() {
    let redis = rcodis_tests::RedisRef::start_with(&["--enable-debug-command", "yes"]);
    let ours = server(&["--threads", "2"]);
    let (mut r, mut o) = (Conn::connect(redis.port), ours.conn());
    let tx: &[&[&str]] = &[&["MULTI"], &["PING"], &["EXEC"]];
    let scenarios: Vec<Vec<&[&str]>> = vec![
        // Stale when watched; then looked at (lazily deleted), flushed, or left alone.
        vec![&["SET", "x", "foo", "PX", "1"], &["SLEEP"], &["WATCH", "x"]],
        vec![
            &["SET", "x", "foo", "PX", "1"],
            &["SLEEP"],
            &["WATCH", "x"],
            &["EXISTS", "x"],
        ],
        vec![
            &["SET", "x", "foo", "PX", "1"],
            &["SLEEP"],
            &["WATCH", "x"],
            &["FLUSHDB"],
        ],
        // Missing when watched, then FLUSHALL; alive when watched, then FLUSHDB.
        vec![&["DEL", "x"], &["WATCH", "x"], &["FLUSHALL"]],
        vec![&["SET", "x", "1"], &["WATCH", "x"], &["FLUSHDB"]],
        // Alive when watched, expired by EXEC.
        vec![
            &["SET", "x", "1", "PX", "20"],
            &["WATCH", "x"],
            &["SLEEP50"],
        ],
        // SWAPDB: stale replaced by nothing; nothing by stale; stale by stale; alive by
        // nothing; nothing by alive.
        vec![
            &["SELECT", "1"],
            &["SET", "x", "foo", "PX", "1"],
            &["SLEEP"],
            &["WATCH", "x"],
            &["SWAPDB", "0", "1"],
        ],
        vec![
            &["SET", "x", "foo", "PX", "1"],
            &["SLEEP"],
            &["SELECT", "1"],
            &["WATCH", "x"],
            &["SWAPDB", "0", "1"],
        ],
        vec![
            &["SELECT", "1"],
            &["SET", "x", "foo", "PX", "1"],
            &["SELECT", "0"],
            &["SET", "x", "bar", "PX", "1"],
            &["SLEEP"],
            &["SELECT", "1"],
            &["WATCH", "x"],
            &["SWAPDB", "0", "1"],
        ],
        vec![&["SET", "x", "30"], &["WATCH", "x"], &["SWAPDB", "0", "1"]],
        vec![
            &["SELECT", "1"],
            &["SET", "x", "30"],
            &["SELECT", "0"],
            &["WATCH", "x"],
            &["SWAPDB", "0", "1"],
        ],
    ];
    for (i, steps) in scenarios.iter().enumerate() {
        for c in [&mut r, &mut o] {
            c.cmd(&["SELECT", "0"]);
            c.cmd(&["FLUSHALL"]);
            c.cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
        }
        for step in steps.iter().copied().chain(tx.iter().copied()) {
            match step[0] {
                // Time passing (for a TTL to run out), not a wait for another process.
                "SLEEP" => std::thread::sleep(Duration::from_millis(5)),
                "SLEEP50" => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let (want, got) = (r.cmd(step), o.cmd(step));
                    assert_eq!(want, got, "scenario {i}, {step:?}");
                }
            }
        }
    }
    for c in [&mut r, &mut o] {
        c.cmd(&["SELECT", "0"]);
        c.cmd(&["DEBUG", "SET-ACTIVE-EXPIRE", "1"]);
    }
    // Refused for memory while queued: EXEC aborts (the limit lifted from elsewhere).
    let (mut r2, mut o2) = (Conn::connect(redis.port), ours.conn());
    for (c, other) in [(&mut r, &mut r2), (&mut o, &mut o2)] {
        c.cmd(&["MULTI"]);
        c.cmd(&["SET", "a", "1"]);
        other.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
        let oom = c.cmd(&["LPUSH", "l", "v"]);
        assert!(
            matches!(&oom, Frame::Error(e) if e.starts_with(b"OOM ")),
            "{oom:?}"
        );
        other.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
        c.cmd(&["SET", "b", "2"]);
        let r = c.cmd(&["EXEC"]);
        assert!(
            matches!(&r, Frame::Error(e) if e.starts_with(b"EXECABORT")),
            "{r:?}"
        );
        assert_eq!(c.cmd(&["EXISTS", "a", "b"]), Frame::Integer(0));
        // Over the limit when EXEC comes: the whole transaction is discarded.
        c.cmd(&["MULTI"]);
        c.cmd(&["SET", "fresh", "1"]);
        c.cmd(&["GET", "fresh"]);
        other.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
        let r = c.cmd(&["EXEC"]);
        other.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
        assert_eq!(
            r,
            Frame::error(
                "EXECABORT Transaction discarded because of: OOM command not allowed when used memory > 'maxmemory'."
            )
        );
        assert_eq!(c.cmd(&["EXISTS", "fresh"]), Frame::Integer(0));
    }
}

/// Keyspace notifications (`notify-keyspace-events`) side by side with redis-server: the
/// same messages, in the same order, for a run of writes of every type (on a one-shard
/// server, where every event is published in order), then expiry and a blocked pop; and on
/// two shards, events of keys on either shard reach a subscriber.
#[test]
fn keyspace_notifications_match_redis() {
    let redis = rcodis_tests::RedisRef::start();
    let ours = server(&["--threads", "1"]);
    let script: &[&[&str]] = &[
        &["SET", "s", "1"],
        &["SET", "s", "2", "EX", "100"],
        &["SET", "s", "3", "NX"],
        &["SETNX", "s2", "x"],
        &["INCRBY", "s2n", "3"],
        &["APPEND", "s", "x"],
        &["SETRANGE", "s", "1", "yy"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["GETEX", "s", "PERSIST"],
        &["GETEX", "s", "PERSIST"],
        &["EXPIRE", "s", "100"],
        &["PERSIST", "s"],
        &["SETBIT", "b", "3", "1"],
        &["SETBIT", "b", "3", "1"],
        &["MSET", "{t}a", "1", "{t}b", "2"],
        &["RENAME", "{t}a", "{t}c"],
        &["COPY", "{t}c", "{t}d"],
        &["DEL", "{t}b", "{t}c", "nosuch"],
        &["GETDEL", "{t}d"],
        &["PEXPIRE", "s2", "0"],
        &["RPUSH", "l", "a", "b", "c"],
        &["LPUSHX", "nol", "x"],
        &["LPOP", "l"],
        &["LINSERT", "l", "BEFORE", "b", "z"],
        &["LSET", "l", "0", "q"],
        &["LREM", "l", "0", "q"],
        &["LTRIM", "l", "0", "0"],
        &["RPUSH", "{l}1", "a"],
        &["LMOVE", "{l}1", "{l}2", "LEFT", "RIGHT"],
        &["RPOP", "{l}2"],
        &["HSET", "h", "f", "1", "g", "2"],
        &["HINCRBY", "h", "f", "2"],
        &["HDEL", "h", "nosuch"],
        &["HDEL", "h", "f", "g"],
        &["SADD", "{s}1", "a", "b"],
        &["SADD", "{s}1", "a"],
        &["SMOVE", "{s}1", "{s}2", "a"],
        &["SINTERSTORE", "{s}3", "{s}1", "{s}2"],
        &["SUNIONSTORE", "{s}3", "{s}1", "{s}2"],
        &["SREM", "{s}1", "b"],
        &["ZADD", "z", "1", "a", "2", "b"],
        &["ZADD", "z", "INCR", "5", "a"],
        &["ZINCRBY", "z", "1", "b"],
        &["ZREM", "z", "nosuch"],
        &["ZPOPMIN", "z"],
        &["ZREMRANGEBYRANK", "z", "0", "-1"],
        &["XADD", "x", "1-1", "f", "v"],
        &["XDEL", "x", "1-1"],
        &["XGROUP", "CREATE", "x", "g", "$"],
        &["XGROUP", "CREATECONSUMER", "x", "g", "Bob"],
        &["XADD", "x", "2-1", "f", "v"],
        &["XREADGROUP", "GROUP", "g", "Alice", "STREAMS", "x", ">"],
        &["XCLAIM", "x", "g", "Mike", "0", "2-1", "FORCE"],
        &["XGROUP", "DELCONSUMER", "x", "g", "Lee"],
        &["XAUTOCLAIM", "x", "g", "Bob", "0", "2-1"],
        &["XGROUP", "DELCONSUMER", "x", "g", "Bob"],
        &["PFADD", "hll", "a"],
        &["PFADD", "hll", "a"],
        &[
            "EVAL",
            "redis.call('set', KEYS[1], 'v') redis.call('del', KEYS[1]) return 1",
            "1",
            "e",
        ],
        &["MULTI"],
        &["SET", "m", "1"],
        &["INCR", "m"],
        &["EXEC"],
    ];
    let mut subs = Vec::new();
    for port in [redis.port, ours.port] {
        let mut c = Conn::connect(port);
        c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
        let f = c.cmd(&["CONFIG", "GET", "notify-keyspace-events"]);
        assert_eq!(text(&f.as_array().unwrap()[1]), "AKE");
        let mut sub = Conn::connect(port);
        sub.cmd(&["PSUBSCRIBE", "__key*__:*"]);
        sub.set_timeout(Duration::from_millis(300));
        for cmd in script {
            c.cmd(cmd);
        }
        // A marker: every event of the script has been delivered before it.
        c.cmd(&["PUBLISH", "__keyspace@0__:END", "end"]);
        let mut got = Vec::new();
        loop {
            let m = sub.read_opt().expect("a message before the marker");
            let a = m.as_array().unwrap();
            let (ch, payload) = (text(&a[2]), text(&a[3]));
            if ch == "__keyspace@0__:END" {
                break;
            }
            got.push(format!("{ch} {payload}"));
        }
        subs.push((port, c, sub, got));
    }
    assert_eq!(subs[0].3, subs[1].3);
    assert!(subs[1].3.len() > 100, "{:?}", subs[1].3);
    // Expiry (active) and a blocked pop: the same events.
    for (port, c, sub, _) in &mut subs {
        sub.set_timeout(Duration::from_secs(5));
        c.cmd(&["SET", "short", "v", "PX", "20"]);
        let port = *port;
        let popper = std::thread::spawn(move || Conn::connect(port).cmd(&["BLPOP", "bl", "5"]));
        wait_until("BLPOP to block", Duration::from_secs(5), || {
            text(&c.cmd(&["INFO", "clients"])).contains("blocked_clients:1\r")
        });
        c.cmd(&["RPUSH", "bl", "a"]);
        popper.join().unwrap();
        let mut got = Vec::new();
        while got.len() < 6 * 2 {
            let m = sub.read_opt().expect("event");
            let a = m.as_array().unwrap();
            got.push(format!("{} {}", text(&a[2]), text(&a[3])));
        }
        got.sort();
        let mut want: Vec<String> = [
            ("short", "set"),
            ("short", "expire"),
            ("short", "expired"),
            ("bl", "rpush"),
            ("bl", "lpop"),
            ("bl", "del"),
        ]
        .iter()
        .flat_map(|(k, e)| {
            [
                format!("__keyspace@0__:{k} {e}"),
                format!("__keyevent@0__:{e} {k}"),
            ]
        })
        .collect();
        want.sort();
        assert_eq!(got, want);
    }
    // A lower maxmemory evicts at once: `evicted`.
    for (_, c, sub, _) in &mut subs {
        c.cmd(&["FLUSHALL"]);
        c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Ee"]);
        c.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
        c.cmd(&["SET", "foo", "bar"]);
        c.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
        let m = sub.read_opt().expect("evicted");
        c.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
        c.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
        let a = m.as_array().unwrap();
        assert_eq!(
            (text(&a[2]), text(&a[3])),
            ("__keyevent@0__:evicted".to_string(), "foo".to_string())
        );
    }
    // Two shards: events from keys on both shards reach one subscriber.
    let two = server(&["--threads", "2"]);
    let (a, b) = keys_on_two_shards();
    let mut c = two.conn();
    c.cmd(&["CONFIG", "SET", "notify-keyspace-events", "E$"]);
    let mut sub = two.conn();
    sub.cmd(&["SUBSCRIBE", "__keyevent@0__:set"]);
    c.cmd(&["SET", &a, "1"]);
    c.cmd(&["SET", &b, "1"]);
    let mut keys = Vec::new();
    for _ in 0..2 {
        let m = sub.read_opt().expect("event");
        keys.push(text(&m.as_array().unwrap()[2]));
    }
    keys.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(keys, want);
}

/// CLIENT REPLY OFF, ON and SKIP as in Redis, side by side: the replies a client turned off
/// never arrive (also those computed on another shard, and under pipelining), ON answers,
/// SKIP drops exactly the next reply; in RESP3 subscription confirmations still come.
#[test]
fn client_reply_off_on_skip() {
    let redis = rcodis_tests::RedisRef::start();
    let ours = server(&["--threads", "2"]);
    let (a, b) = keys_on_two_shards();
    let script: Vec<Vec<&str>> = vec![
        vec!["CLIENT", "REPLY", "OFF"],
        vec!["SET", &a, "1"],
        vec!["SET", &b, "2"],
        vec!["GET", &b],
        vec!["NOSUCHCOMMAND"],
        vec!["CLIENT", "REPLY", "ON"],
        vec!["GET", &a],
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["GET", &b],
        vec!["MGET", &a, &b],
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["CLIENT", "REPLY", "SKIP"],
        vec!["GET", &a],
        vec!["GET", &b],
        vec!["CLIENT", "REPLY", "BOGUS"],
        vec!["PING"],
    ];
    let mut replies = Vec::new();
    for port in [redis.port, ours.port] {
        // One write per command, then all of it in one pipelined write.
        for pipelined in [false, true] {
            let mut c = Conn::connect(port);
            c.cmd(&["FLUSHALL"]);
            let mut all = Vec::new();
            for cmd in &script {
                let mut one = Vec::new();
                rcodis_core::resp::encode::write_array_len(&mut one, cmd.len());
                for a in cmd {
                    rcodis_core::resp::encode::write_bulk(&mut one, a.as_bytes());
                }
                if pipelined {
                    all.extend(one);
                } else {
                    c.send_raw(&one);
                }
            }
            if pipelined {
                c.send_raw(&all);
            }
            let mut got = Vec::new();
            loop {
                let f = c.read_opt().expect("a reply");
                let done = f == Frame::simple("PONG");
                got.push(f);
                if done {
                    break;
                }
            }
            replies.push(got);
        }
    }
    assert_eq!(replies[0], replies[2]);
    assert_eq!(replies[1], replies[3]);
    assert_eq!(replies[0].len(), 6, "{:?}", replies[0]);
    // Subscription confirmations are pushes, delivered with replies off (RESP2 and 3).
    for proto in ["2", "3"] {
        let mut c = ours.conn();
        c.cmd(&["HELLO", proto]);
        c.send(&["CLIENT", "REPLY", "OFF"]);
        c.send(&["SUBSCRIBE", "ch"]);
        let f = c.read_opt().expect("the confirmation");
        assert!(format!("{f:?}").contains("subscribe"), "{f:?}");
    }
}

/// CLIENT PAUSE holds writes (WRITE) or everything (ALL) until it ends or CLIENT UNPAUSE;
/// CLIENT UNBLOCK ends a blocking pop as a timeout or with Redis's UNBLOCKED error.
#[test]
fn client_pause_unpause_and_unblock() {
    let s = server(&["--threads", "2"]);
    let port = s.port;
    let mut c = s.conn();
    assert_eq!(
        c.cmd(&["CLIENT", "PAUSE", "100000", "WRITE"]),
        Frame::simple("OK")
    );
    // Reads go on; a write waits.
    assert_eq!(c.cmd(&["GET", "k"]), Frame::NullBulk);
    let writer = std::thread::spawn(move || Conn::connect(port).cmd(&["SET", "k", "v"]));
    wait_until("the write to be held", Duration::from_secs(5), || {
        text(&c.cmd(&["INFO", "clients"])).contains("blocked_clients:1\r")
    });
    assert_eq!(c.cmd(&["GET", "k"]), Frame::NullBulk, "the SET waits");
    assert_eq!(c.cmd(&["CLIENT", "UNPAUSE"]), Frame::simple("OK"));
    assert_eq!(writer.join().unwrap(), Frame::simple("OK"));
    assert_eq!(c.cmd(&["GET", "k"]), Frame::bulk("v"));
    for (args, err) in [
        (
            vec!["CLIENT", "PAUSE", "x"],
            "ERR timeout is not an integer or out of range",
        ),
        (vec!["CLIENT", "PAUSE", "-1"], "ERR timeout is negative"),
        (
            vec!["CLIENT", "PAUSE", "10", "READ"],
            "ERR CLIENT PAUSE mode must be WRITE or ALL",
        ),
        (
            vec!["CLIENT", "UNBLOCK", "x"],
            "ERR value is not an integer or out of range",
        ),
        (
            vec!["CLIENT", "UNBLOCK", "1", "NOW"],
            "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
        ),
    ] {
        assert_eq!(c.cmd(&args), Frame::error(err));
    }
    // A short ALL pause ends by itself.
    c.cmd(&["CLIENT", "PAUSE", "50", "ALL"]);
    assert_eq!(Conn::connect(port).cmd(&["GET", "k"]), Frame::bulk("v"));
    // CLIENT UNBLOCK: as a timeout, then as an error; a client not blocked: 0.
    for (how, want) in [
        ("TIMEOUT", Frame::NullArray),
        (
            "ERROR",
            Frame::error("UNBLOCKED client unblocked via CLIENT UNBLOCK"),
        ),
    ] {
        let (tx, rx) = std::sync::mpsc::channel();
        let popper = std::thread::spawn(move || {
            let mut p = Conn::connect(port);
            tx.send(p.cmd(&["CLIENT", "ID"]).as_integer().unwrap())
                .unwrap();
            p.cmd(&["BLPOP", "nolist", "0"])
        });
        let id = rx.recv().unwrap().to_string();
        wait_until("BLPOP to block", Duration::from_secs(5), || {
            text(&c.cmd(&["INFO", "clients"])).contains("blocked_clients:1\r")
        });
        assert_eq!(c.cmd(&["CLIENT", "UNBLOCK", &id, how]), Frame::Integer(1));
        assert_eq!(popper.join().unwrap(), want);
        assert_eq!(c.cmd(&["CLIENT", "UNBLOCK", &id]), Frame::Integer(0));
    }
    c.cmd(&["RPUSH", "nolist", "x"]);
    assert_eq!(
        c.cmd(&["LLEN", "nolist"]),
        Frame::Integer(1),
        "nobody popped it"
    );
}

/// CLIENT LIST's flags as Redis shows them: `b` while in a blocking command, `P` when
/// subscribed, `x` inside MULTI, `N` otherwise.
#[test]
fn client_list_flags() {
    let s = server(&["--threads", "1"]);
    let port = s.port;
    let mut c = s.conn();
    let flags = |c: &mut Conn, id: i64| {
        let l = text(&c.cmd(&["CLIENT", "LIST", "ID", &id.to_string()]));
        l.split_whitespace()
            .find_map(|f| f.strip_prefix("flags=").map(str::to_string))
            .unwrap_or_default()
    };
    let me = c.cmd(&["CLIENT", "ID"]).as_integer().unwrap();
    assert_eq!(flags(&mut c, me), "N");
    let (tx, rx) = std::sync::mpsc::channel();
    let popper = std::thread::spawn(move || {
        let mut p = Conn::connect(port);
        tx.send(p.cmd(&["CLIENT", "ID"]).as_integer().unwrap())
            .unwrap();
        p.cmd(&["BLPOP", "l", "0"]);
        p
    });
    let id = rx.recv().unwrap();
    wait_until("the b flag", Duration::from_secs(5), || {
        flags(&mut c, id) == "b"
    });
    c.cmd(&["RPUSH", "l", "x"]);
    let _still_connected = popper.join().unwrap();
    assert_eq!(flags(&mut c, id), "N");
    let mut m = s.conn();
    let mid = m.cmd(&["CLIENT", "ID"]).as_integer().unwrap();
    m.cmd(&["MULTI"]);
    assert_eq!(flags(&mut c, mid), "x");
    let mut sub = s.conn();
    let sid = sub.cmd(&["CLIENT", "ID"]).as_integer().unwrap();
    sub.cmd(&["SUBSCRIBE", "ch"]);
    assert_eq!(flags(&mut c, sid), "P");
}

/// An invalidation message's keys (None: every key, after a flush), from a RESP3 push or a
/// RESP2 `__redis__:invalidate` message.
fn invalidated(f: &Frame) -> Option<Vec<String>> {
    let items = f
        .as_array()
        .unwrap_or_else(|| panic!("message expected, got {f:?}"));
    let keys = match text(&items[0]).as_str() {
        "invalidate" => &items[1],
        "message" => {
            assert_eq!(text(&items[1]), "__redis__:invalidate");
            &items[2]
        }
        other => panic!("not an invalidation: {other} in {f:?}"),
    };
    keys.as_array().map(|ks| ks.iter().map(text).collect())
}

/// Nothing more arrives on `c` for a moment.
fn quiet(c: &mut Conn) {
    c.set_timeout(Duration::from_millis(200));
    if let Some(f) = c.read_opt() {
        panic!("unexpected message {f:?}");
    }
    c.set_timeout(Duration::from_secs(10));
}

#[test]
fn client_side_caching_invalidates_what_clients_read() {
    let s = server(&["--threads", "2"]);
    let (ka, kb) = keys_on_two_shards();
    let mut w = s.conn();
    w.cmd(&["MSET", &ka, "1", &kb, "2", "plain", "3"]);

    // Default mode, RESP3: each key read is reported once, after its first change.
    let mut a = s.conn();
    a.cmd(&["HELLO", "3"]);
    assert_eq!(a.cmd(&["CLIENT", "TRACKING", "on"]), Frame::simple("OK"));
    assert_eq!(text(&a.cmd(&["GET", "plain"])), "3");
    // Keys on both shards in one command.
    let r = a.cmd(&["MGET", &ka, &kb]);
    assert_eq!(r.as_array().map(|v| v.len()), Some(2));
    w.cmd(&["SET", "plain", "changed"]);
    assert_eq!(invalidated(&a.read().unwrap()), Some(vec!["plain".into()]));
    w.cmd(&["SET", "plain", "again"]);
    w.cmd(&["DEL", &ka, &kb]);
    let mut got: Vec<String> = (0..2)
        .flat_map(|_| invalidated(&a.read().unwrap()).unwrap())
        .collect();
    got.sort();
    let mut want = vec![ka.clone(), kb.clone()];
    want.sort();
    assert_eq!(got, want);
    quiet(&mut a);
    // A key read again is tracked again; its expiry is a change.
    w.cmd(&["SET", "soon", "x", "PX", "100"]);
    a.cmd(&["GET", "soon"]);
    assert_eq!(invalidated(&a.read().unwrap()), Some(vec!["soon".into()]));
    // The client's own write: the reply first, then the message (NOLOOP would skip it).
    a.cmd(&["GET", "plain"]);
    a.send(&["SET", "plain", "mine"]);
    assert_eq!(a.read(), Some(Frame::simple("OK")));
    assert_eq!(invalidated(&a.read().unwrap()), Some(vec!["plain".into()]));
    a.cmd(&["CLIENT", "TRACKING", "on", "NOLOOP"]);
    a.cmd(&["GET", "plain"]);
    a.cmd(&["SET", "plain", "mine again"]);
    quiet(&mut a);
    let info = text(&w.cmd(&["INFO", "clients"]));
    assert!(info.contains("tracking_clients:1"), "{info}");
    let list = text(&w.cmd(&["CLIENT", "LIST"]));
    assert!(list.contains("flags=t "), "{list}");

    // RESP2 with REDIRECT to a client subscribed to __redis__:invalidate.
    let mut r = s.conn();
    let rid = int(&r.cmd(&["CLIENT", "ID"]));
    r.cmd(&["SUBSCRIBE", "__redis__:invalidate"]);
    let mut c = s.conn();
    assert_eq!(
        c.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &rid.to_string()]),
        Frame::simple("OK")
    );
    assert_eq!(int(&c.cmd(&["CLIENT", "GETREDIR"])), rid);
    c.cmd(&["GET", &kb]);
    w.cmd(&["SET", &kb, "v"]);
    assert_eq!(invalidated(&r.read().unwrap()), Some(vec![kb.clone()]));
    // OPTIN: only after CLIENT CACHING yes.
    c.cmd(&["CLIENT", "TRACKING", "off"]);
    c.cmd(&[
        "CLIENT",
        "TRACKING",
        "on",
        "REDIRECT",
        &rid.to_string(),
        "OPTIN",
    ]);
    c.cmd(&["GET", "o1"]);
    c.cmd(&["CLIENT", "CACHING", "yes"]);
    c.cmd(&["GET", "o2"]);
    w.cmd(&["MSET", "o1", "1", "o2", "2"]);
    assert_eq!(invalidated(&r.read().unwrap()), Some(vec!["o2".into()]));
    quiet(&mut r);
    // FLUSHALL: every key, as a null.
    w.cmd(&["FLUSHALL"]);
    assert_eq!(invalidated(&r.read().unwrap()), None);
    assert_eq!(invalidated(&a.read().unwrap()), None);

    // BCAST with prefixes: what one command changed comes in one message per prefix.
    let mut b = s.conn();
    b.cmd(&["HELLO", "3"]);
    b.cmd(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:"]);
    w.cmd(&["MSET", "user:{1}a", "1", "user:{1}b", "2", "other:{1}", "3"]);
    assert_eq!(
        invalidated(&b.read().unwrap()),
        Some(vec!["user:{1}a".into(), "user:{1}b".into()])
    );
    let info = b.cmd(&["CLIENT", "TRACKINGINFO"]);
    assert!(format!("{info:?}").contains("bcast"), "{info:?}");

    // Errors, as Redis words them.
    let mut e = s.conn();
    let err = |f: Frame| match f {
        Frame::Error(m) => String::from_utf8_lossy(&m).into_owned(),
        other => panic!("error expected, got {other:?}"),
    };
    assert!(err(e.cmd(&["CLIENT", "TRACKING", "on", "PREFIX", "x"])).contains("requires BCAST"));
    assert!(
        err(e.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", "999999"])).contains("does not exist")
    );
    assert!(err(e.cmd(&["CLIENT", "TRACKING", "on", "OPTIN", "OPTOUT"])).contains("both OPTIN"));
    assert!(
        err(e.cmd(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "ab", "PREFIX", "a"]))
            .contains("overlaps")
    );
    assert!(err(e.cmd(&["CLIENT", "CACHING", "yes"])).contains("tracking mode"));
    assert!(err(e.cmd(&["CLIENT", "TRACKING", "maybe"])).contains("syntax"));
    assert_eq!(int(&e.cmd(&["CLIENT", "GETREDIR"])), -1);
}

#[test]
fn abusive_glob_patterns_answer_at_once() {
    let s = server(&["--threads", "1"]);
    let mut c = s.conn();
    c.cmd(&["SET", &"a".repeat(40), "1"]);
    let r = c.cmd(&["KEYS", "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"]);
    assert_eq!(r, Frame::Array(vec![]));
    c.cmd(&["SET", &"a".repeat(50_000), "1"]);
    let r = c.cmd(&["KEYS", &"*?".repeat(50_000)]);
    assert_eq!(r, Frame::Array(vec![]));
    assert_eq!(c.cmd(&["PING"]), Frame::simple("PONG"));
}

#[test]
fn connection_commands_count_in_stats_and_slowlog() {
    let s = server(&["--threads", "2"]);
    let mut c = s.conn();
    c.cmd(&["PING"]);
    c.cmd(&["SELECT", "99"]);
    let stats = text(&c.cmd(&["INFO", "commandstats"]));
    assert!(stats.contains("cmdstat_ping:calls="), "{stats}");
    assert!(
        stats.contains("cmdstat_select:calls=1,") && stats.contains("failed_calls=1"),
        "{stats}"
    );
    c.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "100000"]);
    c.cmd(&["SLOWLOG", "RESET"]);
    c.cmd(&["PING"]);
    assert_eq!(int(&c.cmd(&["SLOWLOG", "LEN"])), 0);
    c.cmd(&["DEBUG", "SLEEP", "0.2"]);
    assert_eq!(int(&c.cmd(&["SLOWLOG", "LEN"])), 1);
    let e = c.cmd(&["SLOWLOG", "GET"]);
    assert!(format!("{e:?}").contains("SLEEP"), "{e:?}");
    // A blocking command's wait is not its running time.
    c.cmd(&["BLPOP", "nothing", "0.3"]);
    assert_eq!(int(&c.cmd(&["SLOWLOG", "LEN"])), 1);

    // DEBUG PROTOCOL: each RESP3 type, with RESP2's fallbacks.
    assert_eq!(c.cmd(&["DEBUG", "PROTOCOL", "true"]), Frame::Integer(1));
    assert!(matches!(
        c.cmd(&["DEBUG", "PROTOCOL", "push"]),
        Frame::Error(_)
    ));
    c.cmd(&["HELLO", "3"]);
    assert_eq!(c.cmd(&["DEBUG", "PROTOCOL", "true"]), Frame::Boolean(true));
    c.send(&["DEBUG", "PROTOCOL", "push"]);
    assert!(matches!(c.read(), Some(Frame::Push(_))));
    assert_eq!(
        text(&c.read().unwrap()),
        "Some real reply following the push reply"
    );
    assert!(matches!(
        c.cmd(&["DEBUG", "PROTOCOL", "nope"]),
        Frame::Error(_)
    ));

    // DEBUG RELOAD NOFLUSH refuses to load over data; with MERGE it joins.
    c.cmd(&["HELLO", "2"]);
    c.cmd(&["SET", "k", "1"]);
    assert_eq!(c.cmd(&["DEBUG", "RELOAD"]), Frame::simple("OK"));
    c.cmd(&["SET", "k2", "2"]);
    assert!(matches!(
        c.cmd(&["DEBUG", "RELOAD", "NOFLUSH"]),
        Frame::Error(_)
    ));
    assert_eq!(
        c.cmd(&["DEBUG", "RELOAD", "NOSAVE", "NOFLUSH", "MERGE"]),
        Frame::simple("OK")
    );
    assert_eq!(text(&c.cmd(&["GET", "k2"])), "2");
    assert!(matches!(
        c.cmd(&["DEBUG", "RELOAD", "BOGUS"]),
        Frame::Error(_)
    ));
}
