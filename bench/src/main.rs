//! rcodis-bench: the memtier-style load generator (issue 8). Not written yet: the binary says
//! so and exits with status 2. Use `bench/server-vs-redis.sh` (redis-benchmark) meanwhile.

fn main() {
    eprintln!(
        "rcodis-bench {}: not implemented yet (issue 8). Use bench/server-vs-redis.sh, which \
         drives redis-benchmark, and `cargo bench -p rcodis-bench --bench core`.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
