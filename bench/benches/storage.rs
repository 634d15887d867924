//! Criterion benches for the per-type storage operations of rcodis-server and the proxy's
//! pure routing decision.
//!
//! Storage: one command executed on a shard's state through the same path a connection uses
//! for a local command (`exec_local`: command-table spec given, handler, reply encoding,
//! statistics), on a database preloaded with 10,000 keys per type. Not measured: decoding
//! the request, the socket, cross-shard hops, the append-only log (off), memory-limit checks
//! (no maxmemory), or cache misses of a large working set.
//!
//! Routing: `router::route` for a single-key GET and a 16-key MGET split over two groups, on
//! a table built from a topology. Not measured: sending to the backend or merging replies.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rcodis_core::cmd;
use rcodis_core::resp::Request;
use rcodis_server::exec::{exec_local, Clock};
use rcodis_server::out::Out;
use rcodis_server::shard::ShardState;

fn run(st: &mut ShardState, args: &[&str], out: &mut Out, clock: &mut Clock) {
    let req = Request::from_args(args);
    let spec = cmd::resolve_request(&req).expect("known command");
    exec_local(st, 0, spec, &req, out, clock, None);
}

fn preload(st: &mut ShardState) {
    let mut out = Out::new(false);
    let mut clock = Clock::start();
    for i in 0..10_000 {
        let k = format!("key:{i}");
        run(
            st,
            &["SET", &format!("s:{i}"), "value-of-32-bytes-xxxxxxxxxxxxxx"],
            &mut out,
            &mut clock,
        );
        run(st, &["HSET", "hash", &k, "v"], &mut out, &mut clock);
        run(st, &["SADD", "set", &k], &mut out, &mut clock);
        run(
            st,
            &["ZADD", "zset", &i.to_string(), &k],
            &mut out,
            &mut clock,
        );
        run(st, &["RPUSH", "list", &k], &mut out, &mut clock);
        out.buf.clear();
    }
}

fn storage(c: &mut Criterion) {
    let mut st = ShardState::new(0, 1, 16);
    preload(&mut st);
    let mut g = c.benchmark_group("storage");
    let cases: &[(&str, &[&str])] = &[
        ("get_hit", &["GET", "s:5000"]),
        ("get_miss", &["GET", "nope"]),
        (
            "set_existing",
            &["SET", "s:5000", "value-of-32-bytes-xxxxxxxxxxxxxx"],
        ),
        ("incr", &["INCR", "counter"]),
        ("hget", &["HGET", "hash", "key:5000"]),
        ("hset_existing", &["HSET", "hash", "key:5000", "v2"]),
        ("sismember", &["SISMEMBER", "set", "key:5000"]),
        ("zscore", &["ZSCORE", "zset", "key:5000"]),
        ("zadd_existing", &["ZADD", "zset", "42", "key:5000"]),
        ("zrange_10", &["ZRANGE", "zset", "100", "109"]),
        ("lindex_middle", &["LINDEX", "list", "5000"]),
        ("lpush_lpop", &["LPUSH", "q", "x"]),
    ];
    for (name, args) in cases {
        let req = Request::from_args(*args);
        let spec = cmd::resolve_request(&req).expect("known command");
        let mut out = Out::new(false);
        let mut clock = Clock::start();
        let pop = Request::from_args(["LPOP", "q"]);
        let pop_spec = cmd::resolve_request(&pop).expect("known");
        g.bench_function(*name, |b| {
            b.iter(|| {
                out.buf.clear();
                exec_local(
                    &mut st,
                    0,
                    spec,
                    black_box(&req),
                    &mut out,
                    &mut clock,
                    None,
                );
                if *name == "lpush_lpop" {
                    exec_local(&mut st, 0, pop_spec, &pop, &mut out, &mut clock, None);
                }
                black_box(out.buf.len())
            })
        });
    }
    g.finish();
}

fn routing(c: &mut Criterion) {
    use rcodis_core::topology::{Group, Topology};
    let mut t = Topology::new();
    for id in [1u16, 2] {
        t.groups.insert(
            id,
            Group {
                id,
                servers: vec![format!("127.0.0.1:{}", 7000 + id)],
                read_from_replica: false,
            },
        );
    }
    for s in &mut t.slots {
        s.group = if s.id < 512 { 1 } else { 2 };
    }
    let table = rcodis_proxy::table::SlotTable::from_topology(&t);
    let get = Request::from_args(["GET", "user:1000"]);
    let get_spec = cmd::resolve_request(&get).unwrap();
    let keys: Vec<String> = (0..16).map(|i| format!("user:{i}")).collect();
    let mut margs = vec!["MGET"];
    margs.extend(keys.iter().map(String::as_str));
    let mget = Request::from_args(&margs);
    let mget_spec = cmd::resolve_request(&mget).unwrap();
    let mut g = c.benchmark_group("proxy_route");
    g.bench_function("get", |b| {
        b.iter(|| {
            black_box(rcodis_proxy::router::route(
                get_spec,
                black_box(&get),
                &table,
                false,
                true,
            ))
        })
    });
    g.bench_function("mget_16_split", |b| {
        b.iter(|| {
            black_box(rcodis_proxy::router::route(
                mget_spec,
                black_box(&mget),
                &table,
                false,
                true,
            ))
        })
    });
    g.finish();
}

criterion_group!(benches, storage, routing);
criterion_main!(benches);
