//! rcodis-ctl: the operator's tool.
//!
//! ```text
//!   up      start a local cluster (servers and replicas, proxies, the embedded file
//!           coordinator) and stay in the foreground until Ctrl-C / SIGTERM
//!   status  groups, servers (role, health, keys, memory), slot ranges, proxies (epoch,
//!           sessions, requests per second from their admin API), migrations
//!
//!   slot    init | assign RANGE GROUP | migrate RANGE --to GROUP [--detach] | status [RANGE]
//!   group   add ID | remove ID | list | promote ID ADDR | replica-read ID on|off
//!   server  add GROUP ADDR | remove GROUP ADDR
//!   proxy   list | remove TOKEN                rebalance [--dry-run]
//!   dashboard [--listen 127.0.0.1:18080]       HTTP JSON API, background driver, health
//!                                              checks, optional automatic failover
//! ```
//!
//! Modules: `slot` (assignment, the two-phase migration driver), `admin` (groups, servers,
//! proxies, failover, the rebalance plan), `health` (INFO-based server checks), `up`,
//! `dashboard`. Commands write their output into a `String` (`say!`), which the CLI prints
//! and the dashboard returns.

/// `writeln!` into a `String` (command output, printed by the CLI or returned by the API).
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

mod admin;
mod dashboard;
mod health;
mod slot;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rcodis_core::coord::{self, layout};
use rcodis_core::topology::Topology;

#[derive(Debug, Parser)]
#[command(name = "rcodis-ctl", version, about = "rcodis cluster management")]
struct Cli {
    /// Coordinator URL: etcd://host:port[,host:port] or file:///path.
    #[arg(long, global = true)]
    coordinator: Option<String>,
    /// Product (cluster) name.
    #[arg(long, global = true, default_value = "default")]
    product: String,
    /// JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a local cluster on loopback and stay in the foreground.
    Up(up::UpArgs),
    /// Show groups, servers (role, reachable, keys, memory), slots, proxies, migrations.
    Status {
        /// Password of the servers (their requirepass), if any.
        #[arg(long, default_value = "")]
        auth: String,
    },
    /// Slot assignment and migration.
    #[command(subcommand)]
    Slot(slot::SlotCmd),
    /// Groups.
    #[command(subcommand)]
    Group(admin::GroupCmd),
    /// Servers of a group.
    #[command(subcommand)]
    Server(admin::ServerCmd),
    /// Registered proxies.
    #[command(subcommand)]
    Proxy(admin::ProxyCmd),
    /// Serve the HTTP JSON API, drive recorded migrations in the background, check servers.
    Dashboard(dashboard::DashboardArgs),
    /// Even the slots over the groups with the fewest moves; prints the plan, then runs it.
    Rebalance {
        /// Print the plan only.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        drive: slot::DriveArgs,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rcodis-ctl: {e}");
            return ExitCode::from(1);
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Up(a) => up::run(a, &cli.product).await,
            Cmd::Status { auth } => {
                status(cli.coordinator.as_deref(), &cli.product, cli.json, &auth).await
            }
            cmd => {
                let url = cli.coordinator.as_deref().ok_or_else(|| {
                    anyhow::anyhow!("give --coordinator URL (for `up`: file://DIR/coordinator)")
                })?;
                let c = coord::connect(url).await?;
                let mut out = String::new();
                let r = match cmd {
                    Cmd::Slot(cmd) => slot::run(cmd, c, &cli.product, cli.json, &mut out).await,
                    Cmd::Group(cmd) => admin::group(cmd, c, &cli.product, cli.json, &mut out).await,
                    Cmd::Server(cmd) => admin::server(cmd, c, &cli.product, &mut out).await,
                    Cmd::Proxy(cmd) => admin::proxy(cmd, c, &cli.product, cli.json, &mut out).await,
                    Cmd::Rebalance { dry_run, drive } => {
                        let opts = drive.opts(false, cli.json)?;
                        rebalance(c, &cli.product, dry_run, &opts, &mut out).await
                    }
                    Cmd::Dashboard(a) => dashboard::run(a, c, &cli.product).await,
                    Cmd::Up(_) | Cmd::Status { .. } => unreachable!("handled above"),
                };
                print!("{out}");
                r
            }
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rcodis-ctl: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `rebalance`: offline slots are assigned (no data to move), the others migrate.
async fn rebalance(
    c: std::sync::Arc<dyn rcodis_core::coord::Coordinator>,
    product: &str,
    dry_run: bool,
    opts: &slot::DriveOpts,
    out: &mut String,
) -> anyhow::Result<()> {
    let t = slot::load(&c, product).await?;
    let plan = admin::rebalance_plan(&t)?;
    // Migrations already recorded (an earlier run that stopped) are finished too.
    let resumed: Vec<(u16, u16)> = t
        .slots
        .iter()
        .filter_map(|s| s.action.as_ref().map(|a| (s.id, a.target)))
        .collect();
    if plan.is_empty() && resumed.is_empty() {
        say!(out, "already balanced");
        return Ok(());
    }
    if !resumed.is_empty() {
        say!(out, "resuming {} recorded migrations", resumed.len());
    }
    let mut per: std::collections::BTreeMap<(u16, u16), Vec<u16>> = Default::default();
    for (s, from, to) in &plan {
        per.entry((*from, *to)).or_default().push(*s);
    }
    for ((from, to), slots) in &per {
        let from = if *from == 0 {
            "offline".to_string()
        } else {
            format!("group {from}")
        };
        say!(
            out,
            "{from} -> group {to}: {} slots ({})",
            slots.len(),
            ranges(slots)
        );
    }
    if dry_run {
        return Ok(());
    }
    let offline: Vec<(u16, u16)> = plan
        .iter()
        .filter(|p| p.1 == 0)
        .map(|p| (p.0, p.2))
        .collect();
    if !offline.is_empty() {
        slot::update(&c, product, |t| {
            for (s, g) in &offline {
                t.slots[*s as usize].group = *g;
            }
            Ok(())
        })
        .await?;
    }
    if !opts.detach {
        // The plan shows before the (long) foreground run.
        print!("{out}");
        out.clear();
    }
    let mut moves: Vec<(u16, u16)> = resumed;
    moves.extend(plan.iter().filter(|p| p.1 != 0).map(|p| (p.0, p.2)));
    slot::migrate(&c, product, &moves, opts, out).await
}

/// Slot ranges (`0-511, 700`) of a sorted slot list.
pub fn ranges(slots: &[u16]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let start = slots[i];
        let mut end = start;
        while i + 1 < slots.len() && slots[i + 1] == end + 1 {
            i += 1;
            end = slots[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

async fn status(url: Option<&str>, product: &str, json: bool, auth: &str) -> anyhow::Result<()> {
    let url = url.ok_or_else(|| {
        anyhow::anyhow!("give --coordinator URL (for `up`: file://DIR/coordinator)")
    })?;
    let c = coord::connect(url).await?;
    let t = match c.get(&layout::topology_key(product)).await? {
        Some(d) => Topology::from_json(&d).map_err(|e| anyhow::anyhow!("bad topology: {e}"))?,
        None => anyhow::bail!("no cluster named '{product}' in {url}"),
    };
    let proxies = slot::proxies(&c, product).await?;
    let health = health::check_all(&t, auth, std::time::Duration::from_secs(1)).await;
    let loads =
        futures::future::join_all(proxies.iter().map(|p| {
            health::proxy_load(&p.token, &p.admin_addr, std::time::Duration::from_secs(1))
        }))
        .await;
    let moving: Vec<_> = t
        .slots
        .iter()
        .filter_map(|s| s.action.as_ref().map(|a| (s.id, s.group, a)))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({"topology": t, "proxies": proxies, "proxy_load": loads, "servers": health.iter().map(|(_, h)| h).collect::<Vec<_>>()})
        );
        return Ok(());
    }
    println!("product {product}, epoch {}", t.epoch);
    let by_group = t.slots_by_group();
    println!("{:<8} {:>6}  slots", "group", "count");
    for id in t.groups.keys() {
        let slots = by_group.get(id).cloned().unwrap_or_default();
        println!("{:<8} {:>6}  {}", id, slots.len(), ranges(&slots));
    }
    if let Some(off) = by_group.get(&0) {
        println!(
            "{:<8} {:<24} {:>6}  {}",
            "offline",
            "-",
            off.len(),
            ranges(off)
        );
    }
    println!(
        "\n{:<8} {:<22} {:<8} {:<10} {:>10} {:>12}",
        "group", "server", "in group", "state", "keys", "memory"
    );
    for (g, h) in &health {
        let master = t.groups.get(g).and_then(|g| g.master()) == Some(h.addr.as_str());
        let state = if h.reachable {
            h.role.clone()
        } else {
            "DOWN".to_string()
        };
        println!(
            "{:<8} {:<22} {:<8} {:<10} {:>10} {:>12}{}",
            g,
            h.addr,
            if master { "master" } else { "replica" },
            state,
            h.keys,
            h.used_memory,
            if h.reachable {
                String::new()
            } else {
                format!("  ({})", h.error)
            }
        );
    }
    println!(
        "\n{:<34} {:<22} {:>8} {:<8} {:>9} {:>10}",
        "proxy", "address", "epoch", "", "sessions", "ops/s"
    );
    for (p, l) in proxies.iter().zip(&loads) {
        let live = if p.applied_epoch == t.epoch {
            "current"
        } else {
            "behind"
        };
        let (sessions, ops, why) = if l.reachable {
            (
                l.sessions.to_string(),
                l.ops_per_sec.to_string(),
                String::new(),
            )
        } else {
            ("-".into(), "-".into(), format!("  (admin: {})", l.error))
        };
        println!(
            "{:<34} {:<22} {:>8} {live:<8} {sessions:>9} {ops:>10}{why}",
            p.token, p.proxy_addr, p.applied_epoch
        );
    }
    if !moving.is_empty() {
        let mut by_state: std::collections::BTreeMap<String, usize> = Default::default();
        for (_, _, a) in &moving {
            *by_state
                .entry(format!("{:?}", a.state).to_lowercase())
                .or_default() += 1;
        }
        println!(
            "\nmigrations: {} slots ({})",
            moving.len(),
            by_state
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_compress() {
        assert_eq!(super::ranges(&[0, 1, 2, 5, 7, 8]), "0-2, 5, 7-8");
        assert_eq!(super::ranges(&[]), "");
    }
}
