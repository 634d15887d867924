//! `rcodis-ctl up`: a local cluster on loopback, in the foreground. A server or proxy that
//! exits is started again (a server reloads its append-only log), up to three times a
//! minute; past that the cluster stops, saying which process kept exiting.
//!
//! Layout under `--dir`: `coordinator/` (the embedded file coordinator), `group-N/` (each
//! server's working directory), `cluster.json` (the ports chosen, reused by the next `up`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use rcodis_core::coord::{self, layout};
use rcodis_core::slot::NUM_SLOTS;
use rcodis_core::topology::{Group, Topology};
use serde::{Deserialize, Serialize};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where the cluster keeps its files.
    #[arg(long, default_value = "rcodis-data")]
    dir: PathBuf,
    /// Number of groups (one rcodis-server each).
    #[arg(long, default_value_t = 2)]
    groups: u16,
    /// Replicas per group (each an rcodis-server following the group's master).
    #[arg(long, default_value_t = 0)]
    replicas: u16,
    /// Let proxies send read-only commands to the replicas.
    #[arg(long)]
    read_from_replica: bool,
    /// Number of proxies.
    #[arg(long, default_value_t = 1)]
    proxies: u16,
    /// The first proxy's port (the next ones follow).
    #[arg(long, default_value_t = 19000)]
    port: u16,
    /// Threads per server and per proxy (default 1: a local cluster shares the cores).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The first proxy's admin HTTP port (the next ones follow; one taken is replaced by any
    /// free port). 0: any free ports.
    #[arg(long, default_value_t = 11080)]
    admin_port: u16,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Ports {
    servers: Vec<u16>,
    /// Replica ports, group by group (`replicas` per group).
    #[serde(default)]
    replicas: Vec<u16>,
}

/// A process `up` started and watches: restarted (same command, log appended) when it
/// exits, unless it keeps exiting.
struct Supervised {
    cmd: Command,
    log: PathBuf,
    /// When it was (re)started lately.
    starts: Vec<Instant>,
}

/// More restarts than this within `RESTART_WINDOW` stop the cluster instead.
const MAX_RESTARTS: usize = 3;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Children stopped (SIGTERM, then SIGKILL) when dropped; the second list says how each
/// was started.
struct Children(Vec<(String, Child)>, Vec<Supervised>);

impl Children {
    fn start(&mut self, name: String, mut cmd: Command, log: PathBuf) -> anyhow::Result<()> {
        let child = spawn(&name, &mut cmd, &log, false)?;
        self.0.push((name, child));
        self.1.push(Supervised {
            cmd,
            log,
            starts: vec![Instant::now()],
        });
        Ok(())
    }

    /// Restarts the children that exited; `Err` names one that keeps exiting (or cannot be
    /// started again).
    fn restart_exited(&mut self) -> Result<(), String> {
        for ((name, child), sup) in self.0.iter_mut().zip(&mut self.1) {
            let Ok(Some(st)) = child.try_wait() else {
                continue;
            };
            sup.starts.retain(|t| t.elapsed() < RESTART_WINDOW);
            if sup.starts.len() > MAX_RESTARTS {
                return Err(format!(
                    "{name} exited ({st}) {} times within {} s",
                    sup.starts.len(),
                    RESTART_WINDOW.as_secs()
                ));
            }
            eprintln!(
                "rcodis-ctl: {name} exited ({st}); restarting it (log: {})",
                sup.log.display()
            );
            *child = spawn(name, &mut sup.cmd, &sup.log, true)
                .map_err(|e| format!("{name} exited ({st}) and could not restart: {e}"))?;
            sup.starts.push(Instant::now());
        }
        Ok(())
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            // SAFETY-free libc call: send SIGTERM to our own child by PID.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (name, c) in &mut self.0 {
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !matches!(c.try_wait(), Ok(Some(_))) {
                eprintln!("rcodis-ctl: {name} did not stop in 5 s; killing it");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().map(|d| d.join(name)).filter(|p| p.exists());
    p.ok_or_else(|| {
        anyhow::anyhow!(
            "{name} not found next to {} (build it: cargo build --release --bins)",
            exe.display()
        )
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn port_free(p: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
}

async fn wait_ping(port: u16, child: &mut Child, name: &str) -> anyhow::Result<()> {
    let mut deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            anyhow::bail!("{name} exited during start-up ({st})");
        }
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            if s.write_all(b"*1\r\n$4\r\nPING\r\n").await.is_ok() {
                let mut buf = [0u8; 64];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await
                {
                    if buf[..n].starts_with(b"+PONG") {
                        return Ok(());
                    }
                    if buf[..n].starts_with(b"-LOADING") {
                        // Loading a large data set takes as long as it takes.
                        deadline = Instant::now() + Duration::from_secs(30);
                    }
                }
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("{name} did not answer PING on port {port} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `cmd` with its output to `log` (appended to on a restart, so that what ended the
/// previous run stays there).
fn spawn(name: &str, cmd: &mut Command, log: &Path, append: bool) -> anyhow::Result<Child> {
    let f = if append {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)?
    } else {
        std::fs::File::create(log)?
    };
    cmd.stdout(Stdio::from(f.try_clone()?))
        .stderr(Stdio::from(f));
    cmd.spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))
}

/// Even spread of the slots over `n` groups (ids 1..=n), in contiguous ranges.
fn spread(t: &mut Topology, n: u16) {
    let per = NUM_SLOTS.div_ceil(n as usize);
    for s in &mut t.slots {
        s.group = (s.id as usize / per) as u16 + 1;
        s.action = None;
    }
}

pub async fn run(a: UpArgs, product: &str) -> anyhow::Result<()> {
    if a.groups == 0 || a.proxies == 0 {
        anyhow::bail!("--groups and --proxies must be at least 1");
    }
    if a.replicas > 8 {
        anyhow::bail!("--replicas must be at most 8");
    }
    std::fs::create_dir_all(&a.dir)?;
    let dir = a.dir.canonicalize()?;
    let server_bin = sibling("rcodis-server")?;
    let proxy_bin = sibling("rcodis-proxy")?;
    // Ports: reuse the previous run's when still free.
    let ports_file = dir.join("cluster.json");
    let mut ports: Ports = std::fs::read(&ports_file)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    ports.servers.resize(a.groups as usize, 0);
    ports
        .replicas
        .resize(a.groups as usize * a.replicas as usize, 0);
    for p in ports.servers.iter_mut().chain(ports.replicas.iter_mut()) {
        if *p == 0 || !port_free(*p) {
            *p = free_port()?;
        }
    }
    std::fs::write(&ports_file, serde_json::to_vec_pretty(&ports)?)?;
    let coord_dir = dir.join("coordinator");
    let url = format!("file://{}", coord_dir.display());
    let mut children = Children(Vec::new(), Vec::new());
    for (i, p) in ports.servers.iter().enumerate() {
        let gdir = dir.join(format!("group-{}", i + 1));
        std::fs::create_dir_all(&gdir)?;
        let name = format!("rcodis-server (group {})", i + 1);
        let mut cmd = Command::new(&server_bin);
        cmd.args([
            "--port",
            &p.to_string(),
            "--threads",
            &a.threads.to_string(),
        ])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        // Every process of the cluster shares this host's cores (see BENCHMARKS.md, issue 6).
        .arg("--sched-batch")
        .arg("--dir")
        .arg(&gdir);
        children.start(name, cmd, gdir.join("server.log"))?;
    }
    for (i, p) in ports.servers.iter().enumerate() {
        let (name, child) = &mut children.0[i];
        wait_ping(*p, child, name).await?;
    }
    // Replicas follow their group's master from the start.
    let per = a.replicas as usize;
    for (k, p) in ports.replicas.iter().enumerate() {
        let (g, j) = (k / per, k % per);
        let rdir = dir.join(format!("group-{}-replica-{}", g + 1, j + 1));
        std::fs::create_dir_all(&rdir)?;
        let name = format!("rcodis-server (group {} replica {})", g + 1, j + 1);
        let mut cmd = Command::new(&server_bin);
        cmd.args([
            "--port",
            &p.to_string(),
            "--threads",
            &a.threads.to_string(),
        ])
        .args(["--replicaof", &format!("127.0.0.1 {}", ports.servers[g])])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--sched-batch")
        .arg("--dir")
        .arg(&rdir);
        children.start(name, cmd, rdir.join("server.log"))?;
        let n = children.0.len() - 1;
        let (name, child) = &mut children.0[n];
        wait_ping(*p, child, name).await?;
    }
    // Topology: groups point at this run's servers; slots spread on first start, kept after.
    let c = coord::connect(&url).await?;
    let key = layout::topology_key(product);
    let old = c.get(&key).await?;
    let mut t = match &old {
        Some(d) => {
            Topology::from_json(d).map_err(|e| anyhow::anyhow!("bad topology in {url}: {e}"))?
        }
        None => Topology::new(),
    };
    let fresh = old.is_none() || t.groups.len() != a.groups as usize;
    t.groups.clear();
    for (i, p) in ports.servers.iter().enumerate() {
        let id = i as u16 + 1;
        t.groups.insert(
            id,
            Group {
                id,
                servers: std::iter::once(*p)
                    .chain(ports.replicas[i * per..(i + 1) * per].iter().copied())
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect(),
                read_from_replica: a.read_from_replica,
            },
        );
    }
    if fresh {
        spread(&mut t, a.groups);
    }
    t.epoch += 1;
    t.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    if !c
        .compare_and_swap(&key, old.as_deref(), Some(&t.to_json()))
        .await?
    {
        anyhow::bail!("the topology in {url} changed while starting; run `up` again");
    }
    for i in 0..a.proxies {
        let port = a.port + i;
        if !port_free(port) {
            anyhow::bail!("proxy port {port} is in use (is another cluster up? choose --port)");
        }
        let name = format!("rcodis-proxy {}", i + 1);
        // Each proxy its own admin HTTP port: 11080, 11081, ... (Codis's default), or any free
        // one when that is taken (another cluster on this host) or `--admin-port 0`; the
        // proxy registers the address it got, which `status` and the dashboard read.
        let admin_port = a.admin_port.saturating_add(i);
        let admin = if a.admin_port != 0 && port_free(admin_port) {
            format!("127.0.0.1:{admin_port}")
        } else {
            "127.0.0.1:0".to_string()
        };
        let mut cmd = Command::new(&proxy_bin);
        cmd.args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &admin,
            "--coordinator",
            &url,
            "--product",
            product,
        ])
        .args(["--threads", &a.threads.to_string()])
        .arg("--sched-batch");
        children.start(name, cmd, dir.join(format!("proxy-{}.log", i + 1)))?;
        let n = children.0.len() - 1;
        let (name, child) = &mut children.0[n];
        wait_ping(port, child, name).await?;
    }
    println!(
        "rcodis cluster '{product}' is up: {} group(s) with {} replica(s) each, {} proxy(ies), epoch {}",
        a.groups, a.replicas, a.proxies, t.epoch
    );
    println!("  connect:      redis-cli -p {}", a.port);
    println!("  coordinator:  {url}");
    println!("  status:       rcodis-ctl status --coordinator {url} --product {product}");
    println!("  files, logs:  {}", dir.display());
    println!("Ctrl-C stops the cluster.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = check.tick() => {
                // A process that exits (a crash: a server reloads its append-only log) is
                // started again; one that keeps exiting stops the cluster.
                if let Err(what) = children.restart_exited() {
                    eprintln!("rcodis-ctl: {what}; stopping the cluster (logs in {})", dir.display());
                    drop(children);
                    anyhow::bail!("{what}");
                }
            }
        }
    }
    println!("stopping the cluster ...");
    drop(children);
    println!("stopped");
    Ok(())
}
