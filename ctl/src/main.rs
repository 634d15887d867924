//! rcodis-ctl: cluster management, two-phase slot migration, rebalance and `up` (issue 7).
//! Not written yet: the binary says so and exits with status 2 rather than pretending.

fn main() {
    eprintln!(
        "rcodis-ctl {}: not implemented yet (issue 7: groups, slots, migration, rebalance, up). \
         For now run rcodis-server directly; see README.md.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
