//! rcodis-bench: a memtier-style load generator for Redis-protocol servers.
//!
//! `--threads` OS threads, each driving `--clients` connections with `poll(2)` over
//! non-blocking sockets. Every connection keeps up to `--pipeline` requests in flight (a
//! sliding window: each reply sends the next request), times each request from the moment it
//! is written to its reply, and sorts the reply into hit, miss or error. Results come out in
//! memtier_benchmark's table layout (rows per command, a `Totals` row) and, with
//! `--json-out-file`, as JSON. Errors and timeouts are counted apart from throughput and make
//! the run fail (exit status 1), so a server answering errors cannot pass for a fast one.

mod keys;
mod report;
mod resp;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::keys::{KeyGen, Pattern};

/// A memtier-style load generator (options named as memtier_benchmark names them).
#[derive(Debug, Parser, Clone)]
#[command(name = "rcodis-bench", version)]
pub struct Args {
    /// Server address.
    #[arg(short = 's', long, default_value = "127.0.0.1")]
    pub server: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = 6379)]
    pub port: u16,
    /// Threads.
    #[arg(short = 't', long, default_value_t = 4)]
    pub threads: usize,
    /// Connections per thread.
    #[arg(short = 'c', long, default_value_t = 50)]
    pub clients: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// SET:GET ratio of the default workload.
    #[arg(long, default_value = "1:10")]
    pub ratio: String,
    /// Key patterns for SET:GET: R random, S sequential, G gaussian, P parallel, Z zipf.
    #[arg(long, default_value = "R:R")]
    pub key_pattern: String,
    #[arg(long, default_value_t = 0)]
    pub key_minimum: u64,
    #[arg(long, default_value_t = 10_000_000)]
    pub key_maximum: u64,
    #[arg(long, default_value = "memtier-")]
    pub key_prefix: String,
    /// Gaussian pattern: standard deviation (default: range / 6).
    #[arg(long)]
    pub key_stddev: Option<f64>,
    /// Gaussian pattern: median (default: middle of the range).
    #[arg(long)]
    pub key_median: Option<f64>,
    /// Zipf pattern exponent.
    #[arg(long, default_value_t = 1.0)]
    pub key_zipf_exp: f64,
    /// Value size in bytes.
    #[arg(short = 'd', long, default_value_t = 32)]
    pub data_size: usize,
    /// Seconds to run (instead of --requests).
    #[arg(long)]
    pub test_time: Option<u64>,
    /// Requests per client (default 10000 when --test-time is not given).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// A different random seed for every client.
    #[arg(long)]
    pub distinct_client_seed: bool,
    /// Seed from the clock (default: a fixed seed, runs repeat).
    #[arg(long)]
    pub randomize: bool,
    /// Password sent with AUTH on every connection.
    #[arg(short = 'a', long)]
    pub authenticate: Option<String>,
    /// Database selected on every connection.
    #[arg(long)]
    pub select_db: Option<u32>,
    /// Do not print the latency distribution.
    #[arg(long)]
    pub hide_histogram: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json_out_file: Option<std::path::PathBuf>,
    /// An arbitrary command (repeatable): `__key__` and `__data__` are replaced.
    #[arg(long)]
    pub command: Vec<String>,
    /// Weight of each --command (in order; default 1).
    #[arg(long)]
    pub command_ratio: Vec<u32>,
    /// Key pattern of each --command (in order; default R).
    #[arg(long)]
    pub command_key_pattern: Vec<String>,
    /// Row name of each --command (in order; default the command's name).
    #[arg(long)]
    pub command_alias: Vec<String>,
    /// SET every key of the range first, so GETs hit.
    #[arg(long)]
    pub prefill: bool,
    /// Seconds a request may wait for its reply before it counts as a timeout.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
}

/// One kind of request of the workload.
#[derive(Debug, Clone)]
pub struct CmdDef {
    pub name: String,
    /// Arguments; `None` marks `__key__`, data arguments are `__data__` resolved at start.
    pub parts: Vec<Part>,
    pub weight: u32,
    pub pattern: Pattern,
    /// Whether a nil reply is a miss (GET-like commands).
    pub counts_hits: bool,
}

#[derive(Debug, Clone)]
pub enum Part {
    Lit(Vec<u8>),
    Key,
    Data,
}

/// Per-command counters of one thread (merged at the end).
pub struct Stats {
    pub ops: u64,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub bytes: u64,
    pub hist: Histogram<u64>,
    pub first_error: Option<String>,
}

impl Stats {
    fn new() -> Stats {
        Stats {
            ops: 0,
            hits: 0,
            misses: 0,
            errors: 0,
            timeouts: 0,
            bytes: 0,
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            first_error: None,
        }
    }

    /// An empty set of counters (for totals).
    pub fn new_public() -> Stats {
        Stats::new()
    }

    /// Adds `o` into these counters.
    pub fn merge_public(&mut self, o: &Stats) {
        self.merge(o)
    }

    fn merge(&mut self, o: &Stats) {
        self.ops += o.ops;
        self.hits += o.hits;
        self.misses += o.misses;
        self.errors += o.errors;
        self.timeouts += o.timeouts;
        self.bytes += o.bytes;
        let _ = self.hist.add(&o.hist);
        if self.first_error.is_none() {
            self.first_error.clone_from(&o.first_error);
        }
    }
}

/// Set by SIGINT/SIGTERM: the run stops sending, collects what is in flight and reports.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Live totals for the once-a-second progress line.
#[derive(Default)]
pub struct Live {
    pub ops: AtomicU64,
    pub bytes: AtomicU64,
    pub lat_us: AtomicU64,
}

fn parse_pattern(s: &str) -> anyhow::Result<Pattern> {
    Ok(match s {
        "R" => Pattern::Random,
        "S" => Pattern::Sequential,
        "G" => Pattern::Gaussian,
        "P" => Pattern::Parallel,
        "Z" => Pattern::Zipf,
        _ => anyhow::bail!("invalid key pattern '{s}' (R, S, G, P or Z)"),
    })
}

/// Splits a --command template into words (double quotes group words).
fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in s.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// The workload: the default SET/GET mix, or the --command list.
pub fn workload(a: &Args) -> anyhow::Result<Vec<CmdDef>> {
    if a.command.is_empty() {
        let (s, g) = a
            .ratio
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--ratio must be SET:GET, e.g. 1:10"))?;
        let (ps, pg) = a
            .key_pattern
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--key-pattern must be SET:GET, e.g. R:R"))?;
        let sw: u32 = s.parse().map_err(|_| anyhow::anyhow!("bad --ratio"))?;
        let gw: u32 = g.parse().map_err(|_| anyhow::anyhow!("bad --ratio"))?;
        if sw + gw == 0 {
            anyhow::bail!("--ratio 0:0 sends nothing");
        }
        let mut v = Vec::new();
        if sw > 0 {
            v.push(CmdDef {
                name: "Sets".into(),
                parts: vec![Part::Lit(b"SET".to_vec()), Part::Key, Part::Data],
                weight: sw,
                pattern: parse_pattern(ps)?,
                counts_hits: false,
            });
        }
        if gw > 0 {
            v.push(CmdDef {
                name: "Gets".into(),
                parts: vec![Part::Lit(b"GET".to_vec()), Part::Key],
                weight: gw,
                pattern: parse_pattern(pg)?,
                counts_hits: true,
            });
        }
        return Ok(v);
    }
    let mut v = Vec::new();
    for (i, c) in a.command.iter().enumerate() {
        let words = split_words(c);
        if words.is_empty() {
            anyhow::bail!("--command {} is empty", i + 1);
        }
        let parts = words
            .iter()
            .map(|w| match w.as_str() {
                "__key__" => Part::Key,
                "__data__" => Part::Data,
                _ => Part::Lit(w.as_bytes().to_vec()),
            })
            .collect();
        let upper = words[0].to_ascii_uppercase();
        v.push(CmdDef {
            name: a
                .command_alias
                .get(i)
                .cloned()
                .unwrap_or_else(|| upper.clone()),
            parts,
            weight: a.command_ratio.get(i).copied().unwrap_or(1),
            pattern: parse_pattern(a.command_key_pattern.get(i).map_or("R", |s| s))?,
            counts_hits: matches!(
                upper.as_str(),
                "GET" | "HGET" | "LINDEX" | "GETEX" | "GETDEL"
            ),
        });
    }
    if v.iter().all(|c| c.weight == 0) {
        anyhow::bail!("every --command-ratio is 0");
    }
    Ok(v)
}

fn write_request(out: &mut Vec<u8>, c: &CmdDef, key: &[u8], data: &[u8]) {
    out.push(b'*');
    out.extend_from_slice(c.parts.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for p in &c.parts {
        let b: &[u8] = match p {
            Part::Lit(l) => l,
            Part::Key => key,
            Part::Data => data,
        };
        out.push(b'$');
        out.extend_from_slice(b.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(b);
        out.extend_from_slice(b"\r\n");
    }
}

/// Opens a connection, authenticates and selects the database.
fn connect(a: &Args) -> anyhow::Result<TcpStream> {
    let mut s = TcpStream::connect((a.server.as_str(), a.port))
        .map_err(|e| anyhow::anyhow!("cannot connect to {}:{}: {e}", a.server, a.port))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(a.timeout)))?;
    let mut setup: Vec<Vec<Vec<u8>>> = Vec::new();
    if let Some(pw) = &a.authenticate {
        setup.push(vec![b"AUTH".to_vec(), pw.as_bytes().to_vec()]);
    }
    if let Some(db) = a.select_db {
        setup.push(vec![b"SELECT".to_vec(), db.to_string().into_bytes()]);
    }
    for args in setup {
        let c = CmdDef {
            name: String::new(),
            parts: args.into_iter().map(Part::Lit).collect(),
            weight: 0,
            pattern: Pattern::Random,
            counts_hits: false,
        };
        let mut req = Vec::new();
        write_request(&mut req, &c, b"", b"");
        s.write_all(&req)?;
        let mut buf = Vec::new();
        let mut tmp = [0u8; 512];
        loop {
            let n = s.read(&mut tmp)?;
            if n == 0 {
                anyhow::bail!("server closed the connection during set-up");
            }
            buf.extend_from_slice(&tmp[..n]);
            if let Some((_, kind)) = resp::skip_reply(&buf) {
                if kind == resp::Kind::Error {
                    anyhow::bail!(
                        "set-up command refused: {}",
                        String::from_utf8_lossy(&buf).trim_end()
                    );
                }
                break;
            }
        }
    }
    s.set_read_timeout(None)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// One connection's state inside a thread.
struct Client {
    stream: TcpStream,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    /// Requests in flight: (command index, time written).
    inflight: std::collections::VecDeque<(usize, Instant)>,
    sent: u64,
    keys: Vec<KeyGen>,
    rng: SmallRng,
    done: bool,
}

pub struct Plan {
    pub args: Args,
    pub cmds: Vec<CmdDef>,
    pub data: Vec<u8>,
    /// Cumulative weights for picking a command.
    pub cumulative: Vec<u32>,
    pub deadline: Option<Instant>,
    pub requests: Option<u64>,
    pub stop: AtomicBool,
    pub live: Live,
}

fn run_thread(plan: Arc<Plan>, thread: usize) -> anyhow::Result<Vec<Stats>> {
    let a = &plan.args;
    let mut stats: Vec<Stats> = plan.cmds.iter().map(|_| Stats::new()).collect();
    let total_clients = (a.threads * a.clients) as u64;
    let mut clients = Vec::new();
    for c in 0..a.clients {
        let index = (thread * a.clients + c) as u64;
        let seed = if a.randomize {
            rand::random()
        } else if a.distinct_client_seed {
            0x5eed_0000 + index
        } else {
            0x5eed_0000
        };
        let keys = plan
            .cmds
            .iter()
            .map(|d| KeyGen::new(d.pattern, a, index, total_clients))
            .collect::<anyhow::Result<Vec<_>>>()?;
        clients.push(Client {
            stream: connect(a)?,
            out: Vec::with_capacity(4096),
            out_pos: 0,
            inbuf: Vec::with_capacity(16 * 1024),
            inflight: Default::default(),
            sent: 0,
            keys,
            rng: SmallRng::seed_from_u64(seed),
            done: false,
        });
    }
    let total_weight = *plan.cumulative.last().unwrap_or(&1);
    let timeout = Duration::from_secs(a.timeout);
    let mut keybuf = Vec::with_capacity(64);
    let mut tmp = vec![0u8; 64 * 1024];
    let mut live_ops = 0u64;
    let mut live_bytes = 0u64;
    let mut live_lat = 0u64;
    loop {
        let now = Instant::now();
        let stopping = plan.stop.load(Ordering::Relaxed)
            || INTERRUPTED.load(Ordering::Relaxed)
            || plan.deadline.is_some_and(|d| now >= d);
        // Fill every window.
        for cl in clients.iter_mut() {
            while !stopping
                && !cl.done
                && cl.inflight.len() < a.pipeline
                && plan.requests.is_none_or(|n| cl.sent < n)
            {
                let pick = cl.rng.gen_range(0..total_weight);
                let ci = plan.cumulative.iter().position(|&c| pick < c).unwrap_or(0);
                keybuf.clear();
                keybuf.extend_from_slice(a.key_prefix.as_bytes());
                let k = cl.keys[ci].next(&mut cl.rng);
                keybuf.extend_from_slice(k.to_string().as_bytes());
                let before = cl.out.len();
                write_request(&mut cl.out, &plan.cmds[ci], &keybuf, &plan.data);
                stats[ci].bytes += (cl.out.len() - before) as u64;
                cl.inflight.push_back((ci, Instant::now()));
                cl.sent += 1;
            }
            if plan.requests.is_some_and(|n| cl.sent >= n) && cl.inflight.is_empty() {
                cl.done = true;
            }
            if stopping && cl.inflight.is_empty() {
                cl.done = true;
            }
        }
        if clients.iter().all(|c| c.done) {
            break;
        }
        // Write what is pending, then wait for readiness.
        let mut fds: Vec<libc::pollfd> = clients
            .iter_mut()
            .map(|cl| {
                if cl.out_pos < cl.out.len() {
                    match cl.stream.write(&cl.out[cl.out_pos..]) {
                        Ok(n) => cl.out_pos += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            cl.done = true;
                            if stats[0].first_error.is_none() {
                                stats[0].first_error = Some(format!("write: {e}"));
                            }
                            stats[0].errors += 1;
                        }
                    }
                    if cl.out_pos == cl.out.len() {
                        cl.out.clear();
                        cl.out_pos = 0;
                    }
                }
                let mut ev = 0;
                if !cl.done && !cl.inflight.is_empty() {
                    ev |= libc::POLLIN;
                }
                if cl.out_pos < cl.out.len() {
                    ev |= libc::POLLOUT;
                }
                libc::pollfd {
                    fd: if ev == 0 { -1 } else { cl.stream.as_raw_fd() },
                    events: ev,
                    revents: 0,
                }
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                anyhow::bail!("poll: {e}");
            }
            continue;
        }
        let now = Instant::now();
        for (cl, fd) in clients.iter_mut().zip(&fds) {
            if fd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                loop {
                    match cl.stream.read(&mut tmp) {
                        Ok(0) => {
                            // Closed with requests in flight: each one is an error.
                            for (ci, _) in cl.inflight.drain(..) {
                                stats[ci].errors += 1;
                                stats[ci].first_error.get_or_insert_with(|| {
                                    "connection closed by the server".into()
                                });
                            }
                            cl.done = true;
                            break;
                        }
                        Ok(n) => cl.inbuf.extend_from_slice(&tmp[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            for (ci, _) in cl.inflight.drain(..) {
                                stats[ci].errors += 1;
                                stats[ci]
                                    .first_error
                                    .get_or_insert_with(|| format!("read: {e}"));
                            }
                            cl.done = true;
                            break;
                        }
                    }
                }
                let mut pos = 0;
                while let Some((len, kind)) = resp::skip_reply(&cl.inbuf[pos..]) {
                    let Some((ci, t0)) = cl.inflight.pop_front() else {
                        break;
                    };
                    let st = &mut stats[ci];
                    let us = now.duration_since(t0).as_micros().max(1) as u64;
                    st.bytes += len as u64;
                    match kind {
                        resp::Kind::Error => {
                            st.errors += 1;
                            if st.first_error.is_none() {
                                st.first_error = Some(
                                    String::from_utf8_lossy(&cl.inbuf[pos..pos + len])
                                        .trim_end()
                                        .to_string(),
                                );
                            }
                        }
                        k => {
                            st.ops += 1;
                            let _ = st.hist.record(us);
                            if plan.cmds[ci].counts_hits {
                                if k == resp::Kind::Nil {
                                    st.misses += 1;
                                } else {
                                    st.hits += 1;
                                }
                            }
                            live_ops += 1;
                            live_lat += us;
                        }
                    }
                    live_bytes += len as u64;
                    pos += len;
                }
                cl.inbuf.drain(..pos);
            }
            // Requests older than the timeout: counted, and the connection given up.
            if let Some(&(ci, t0)) = cl.inflight.front() {
                if now.duration_since(t0) > timeout {
                    for (ci, _) in cl.inflight.drain(..) {
                        stats[ci].timeouts += 1;
                    }
                    stats[ci]
                        .first_error
                        .get_or_insert_with(|| format!("no reply within {} s", timeout.as_secs()));
                    cl.done = true;
                }
            }
        }
        if live_ops >= 1024 {
            plan.live.ops.fetch_add(live_ops, Ordering::Relaxed);
            plan.live.bytes.fetch_add(live_bytes, Ordering::Relaxed);
            plan.live.lat_us.fetch_add(live_lat, Ordering::Relaxed);
            (live_ops, live_bytes, live_lat) = (0, 0, 0);
        }
    }
    plan.live.ops.fetch_add(live_ops, Ordering::Relaxed);
    plan.live.bytes.fetch_add(live_bytes, Ordering::Relaxed);
    plan.live.lat_us.fetch_add(live_lat, Ordering::Relaxed);
    Ok(stats)
}

/// SETs every key of the range (split over the threads, pipelined 64 deep).
fn prefill(a: &Args, data: &[u8]) -> anyhow::Result<()> {
    let range = a.key_maximum.saturating_sub(a.key_minimum) + 1;
    let per = range.div_ceil(a.threads as u64);
    let set = CmdDef {
        name: String::new(),
        parts: vec![Part::Lit(b"SET".to_vec()), Part::Key, Part::Data],
        weight: 1,
        pattern: Pattern::Sequential,
        counts_hits: false,
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..a.threads as u64)
            .map(|t| {
                let set = &set;
                s.spawn(move || -> anyhow::Result<()> {
                    let lo = a.key_minimum + t * per;
                    let hi = (lo + per).min(a.key_maximum + 1);
                    let mut conn = connect(a)?;
                    conn.set_nonblocking(false)?;
                    conn.set_read_timeout(Some(Duration::from_secs(a.timeout)))?;
                    let mut k = lo;
                    let mut out = Vec::new();
                    let mut inbuf = Vec::new();
                    let mut tmp = vec![0u8; 64 * 1024];
                    while k < hi {
                        let end = (k + 64).min(hi);
                        out.clear();
                        for i in k..end {
                            let key = format!("{}{i}", a.key_prefix);
                            write_request(&mut out, set, key.as_bytes(), data);
                        }
                        conn.write_all(&out)?;
                        let mut got = 0;
                        while got < end - k {
                            let mut pos = 0;
                            while let Some((len, kind)) = resp::skip_reply(&inbuf[pos..]) {
                                if kind == resp::Kind::Error {
                                    anyhow::bail!(
                                        "prefill SET refused: {}",
                                        String::from_utf8_lossy(&inbuf[pos..pos + len]).trim_end()
                                    );
                                }
                                pos += len;
                                got += 1;
                            }
                            inbuf.drain(..pos);
                            if got < end - k {
                                let n = conn.read(&mut tmp)?;
                                if n == 0 {
                                    anyhow::bail!("server closed the connection during prefill");
                                }
                                inbuf.extend_from_slice(&tmp[..n]);
                            }
                        }
                        k = end;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("prefill thread panicked"))??;
        }
        Ok(())
    })
}

fn main() {
    let args = Args::parse();
    match run(args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("rcodis-bench: {e}");
            std::process::exit(2);
        }
    }
}

/// Runs the benchmark; Ok(false) when requests failed (errors or timeouts).
fn run(a: Args) -> anyhow::Result<bool> {
    if a.threads == 0 || a.clients == 0 || a.pipeline == 0 {
        anyhow::bail!("--threads, --clients and --pipeline must be at least 1");
    }
    if a.key_maximum < a.key_minimum {
        anyhow::bail!("--key-maximum is below --key-minimum");
    }
    let cmds = workload(&a)?;
    let mut data = vec![0u8; a.data_size];
    let mut rng = SmallRng::seed_from_u64(7);
    for b in data.iter_mut() {
        *b = rng.gen_range(b'a'..=b'z');
    }
    if a.prefill {
        let t = Instant::now();
        prefill(&a, &data)?;
        eprintln!(
            "prefill: {} keys in {:.2} s",
            a.key_maximum - a.key_minimum + 1,
            t.elapsed().as_secs_f64()
        );
    }
    let requests = match (a.test_time, a.requests) {
        (Some(_), _) => None,
        (None, Some(n)) => Some(n),
        (None, None) => Some(10_000),
    };
    let mut cumulative = Vec::new();
    let mut acc = 0;
    for c in &cmds {
        acc += c.weight;
        cumulative.push(acc);
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let start = Instant::now();
    let plan = Arc::new(Plan {
        args: a.clone(),
        cmds: cmds.clone(),
        data,
        cumulative,
        deadline: a.test_time.map(|s| start + Duration::from_secs(s)),
        requests,
        stop: AtomicBool::new(false),
        live: Live::default(),
    });
    let handles: Vec<_> = (0..a.threads)
        .map(|t| {
            let plan = plan.clone();
            std::thread::Builder::new()
                .name(format!("rcodis-bench-{t}"))
                .spawn(move || run_thread(plan, t))
        })
        .collect::<Result<_, _>>()?;
    let progress = report::Progress::start(plan.clone(), start);
    let mut totals: Vec<Stats> = cmds.iter().map(|_| Stats::new()).collect();
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(st)) => {
                for (t, s) in totals.iter_mut().zip(&st) {
                    t.merge(s);
                }
            }
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(anyhow::anyhow!("a load thread panicked")),
        }
    }
    let elapsed = start.elapsed();
    progress.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    let text = report::table(&cmds, &totals, elapsed, a.hide_histogram);
    print!("{text}");
    if let Some(p) = &a.json_out_file {
        let json = report::json(&a, &cmds, &totals, elapsed);
        std::fs::write(p, serde_json::to_string_pretty(&json)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    let errors: u64 = totals.iter().map(|t| t.errors).sum();
    let timeouts: u64 = totals.iter().map(|t| t.timeouts).sum();
    if errors + timeouts > 0 {
        let first = totals
            .iter()
            .find_map(|t| t.first_error.clone())
            .unwrap_or_default();
        eprintln!(
            "rcodis-bench: FAILED: {errors} error replies, {timeouts} timeouts (first: {first})"
        );
        return Ok(false);
    }
    Ok(true)
}
