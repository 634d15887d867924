//! rcodis-proxy binary: configuration from TOML and flags, then the shards and the control
//! thread; runs until SIGTERM/SIGINT.

use std::path::PathBuf;

use clap::Parser;
use rcodis_proxy::config::ProxyConfig;

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A thread-per-core RESP proxy in front of rcodis-server groups.
#[derive(Debug, Parser)]
#[command(name = "rcodis-proxy", version)]
struct Args {
    /// TOML configuration file (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Client address (default 127.0.0.1:19000).
    #[arg(long)]
    listen: Option<String>,
    /// Coordinator URL: etcd://host:port[,host:port] or file:///path.
    #[arg(long)]
    coordinator: Option<String>,
    /// Product (cluster) name in the coordinator.
    #[arg(long)]
    product: Option<String>,
    /// Serve a static topology JSON file instead of (or before) a coordinator.
    #[arg(long)]
    slots_file: Option<PathBuf>,
    /// Executor threads (default: one per online core).
    #[arg(long)]
    threads: Option<usize>,
    /// Password clients must AUTH with.
    #[arg(long)]
    session_auth: Option<String>,
    /// Password of the backend servers.
    #[arg(long)]
    product_auth: Option<String>,
    /// Admin HTTP address (default 127.0.0.1:11080; "" turns it off).
    #[arg(long)]
    admin: Option<String>,
    /// Token the admin HTTP mutations must carry (default: generated and logged).
    #[arg(long)]
    admin_token: Option<String>,
    /// Disconnect clients idle this long (seconds; 0: never; default 1800).
    #[arg(long)]
    idle_timeout: Option<u64>,
    /// Pipelined connections per backend per shard (default 1).
    #[arg(long)]
    backend_connections: Option<usize>,
    /// Log filter (tracing syntax).
    #[arg(long, default_value = "info")]
    loglevel: String,
    /// Run the executor threads under SCHED_BATCH (for a proxy sharing cores with its
    /// servers on one host).
    #[arg(long)]
    sched_batch: bool,
}

fn main() {
    rcodis_core::process::exit_on_shard_panic("rcodis-proxy-");
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.loglevel)),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &args.config {
        Some(p) => match ProxyConfig::from_file(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rcodis-proxy: {e}");
                std::process::exit(2);
            }
        },
        None => ProxyConfig::default(),
    };
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.coordinator {
        config.coordinator = v;
    }
    if let Some(v) = args.product {
        config.product = v;
    }
    if let Some(v) = args.slots_file {
        config.slots_file = Some(v);
    }
    if args.sched_batch {
        config.sched_batch = true;
    }
    if let Some(v) = args.threads {
        config.threads = v;
    }
    if let Some(v) = args.session_auth {
        config.session_auth = v;
    }
    if let Some(v) = args.product_auth {
        config.product_auth = v;
    }
    if let Some(v) = args.admin {
        config.admin = v;
    }
    if let Some(v) = args.admin_token {
        config.admin_token = v;
    }
    if let Some(v) = args.idle_timeout {
        config.session_idle_timeout_secs = v;
    }
    if let Some(v) = args.backend_connections {
        config.backend_connections = v;
    }
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // Block SIGTERM/SIGINT in every thread; this one waits for them.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let h = match rcodis_proxy::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("rcodis-proxy: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!(port = h.port, "rcodis-proxy listening on port {}", h.port);
    println!("rcodis-proxy listening on port {}", h.port);
    let mut sig: libc::c_int = 0;
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    tracing::info!(signal = sig, "shutting down");
    std::process::exit(0);
}
