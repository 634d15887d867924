//! rcodis-server binary: configuration from a TOML file and flags, then the shards, then
//! wait for SIGTERM/SIGINT.

use std::path::PathBuf;

use clap::Parser;
use rcodis_server::config::Config;

/// jemalloc: per-thread caches without glibc's arena growth (mprotect storms), and
/// allocation statistics for INFO memory.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A thread-per-core, Redis-compatible store with Codis slot commands.
#[derive(Debug, Parser)]
#[command(name = "rcodis-server", version)]
struct Args {
    /// TOML configuration file (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// TCP port (0 picks a free one and logs it).
    #[arg(long)]
    port: Option<u16>,
    /// Address to bind.
    #[arg(long)]
    bind: Option<String>,
    /// Shards (executor threads); default: one per online core.
    #[arg(long)]
    threads: Option<usize>,
    /// Working directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Password clients must AUTH with.
    #[arg(long)]
    requirepass: Option<String>,
    /// Memory budget (bytes, or with k/kb/m/mb/g/gb).
    #[arg(long)]
    maxmemory: Option<String>,
    /// Eviction policy.
    #[arg(long)]
    maxmemory_policy: Option<String>,
    /// appendfsync: always, everysec or no.
    #[arg(long)]
    appendfsync: Option<String>,
    /// Number of databases.
    #[arg(long)]
    databases: Option<usize>,
    /// Most clients at once.
    #[arg(long)]
    maxclients: Option<usize>,
    /// Log filter (tracing syntax, e.g. info or rcodis_server=debug).
    #[arg(long)]
    loglevel: Option<String>,
    /// Keep an append-only log in --dir (yes/no).
    #[arg(long)]
    appendonly: Option<String>,
    /// Load a damaged append-only log up to the damage, truncating it there.
    #[arg(long)]
    aof_repair: bool,
    /// Microseconds to pause after each record loaded at start-up (for tests).
    #[arg(long)]
    key_load_delay: Option<u64>,
    /// Follow a master from the start ("host port" or host:port).
    #[arg(long)]
    replicaof: Option<String>,
    /// The master's password.
    #[arg(long)]
    masterauth: Option<String>,
    /// Run the shard threads under SCHED_BATCH (for a server sharing cores with a proxy and
    /// other servers on one host).
    #[arg(long)]
    sched_batch: bool,
}

fn main() {
    rcodis_core::process::exit_on_shard_panic("rcodis-shard-");
    let args = Args::parse();
    let mut config = match &args.config {
        Some(p) => match Config::from_file(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("rcodis-server: {e}");
                std::process::exit(2);
            }
        },
        None => Config::default(),
    };
    macro_rules! over {
        ($($f:ident),*) => { $( if let Some(v) = args.$f.clone() { config.$f = v; } )* };
    }
    over!(
        port,
        bind,
        threads,
        dir,
        requirepass,
        maxmemory,
        maxmemory_policy,
        appendfsync,
        databases,
        maxclients,
        loglevel,
        key_load_delay,
        replicaof,
        masterauth
    );
    if let Some(v) = &args.appendonly {
        config.appendonly = match v.as_str() {
            "yes" => true,
            "no" => false,
            other => {
                eprintln!("rcodis-server: --appendonly takes yes or no, not '{other}'");
                std::process::exit(2);
            }
        };
    }
    if args.aof_repair {
        config.aof_repair = true;
    }
    if args.sched_batch {
        config.sched_batch = true;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.loglevel)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = config.validate() {
        eprintln!("rcodis-server: {e}");
        std::process::exit(2);
    }
    // Block SIGTERM/SIGINT in every thread; this one waits for them.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // Plain libc signal-mask calls on a local set.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let threads = config.threads;
    let handle = match rcodis_server::start(config) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("rcodis-server: {e}");
            std::process::exit(1);
        }
    };
    tracing::info!(
        port = handle.port,
        threads,
        "rcodis-server listening on port {}",
        handle.port
    );
    println!("rcodis-server listening on port {}", handle.port);
    // Clients may connect now; until the data is loaded they get -LOADING.
    if let Err(e) = handle.load() {
        tracing::error!(error = %e, "loading the data failed");
        eprintln!("rcodis-server: {e}");
        std::process::exit(1);
    }
    tracing::info!("ready to accept connections");
    let mut sig: libc::c_int = 0;
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    tracing::info!(signal = sig, "shutting down: syncing the append-only logs");
    handle
        .shared
        .shutdown
        .store(true, std::sync::atomic::Ordering::Release);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while handle
        .shared
        .shutdown_synced
        .load(std::sync::atomic::Ordering::Acquire)
        < threads
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::process::exit(0);
}
