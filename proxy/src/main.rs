//! rcodis-proxy: the stateless RESP proxy (issue 6). Not written yet: the binary says so and
//! exits with status 2 rather than pretending.

fn main() {
    eprintln!(
        "rcodis-proxy {}: not implemented yet (issue 6). Point clients at rcodis-server directly; \
         see README.md.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
