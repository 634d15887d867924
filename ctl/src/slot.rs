//! Slot commands and the migration driver (codis-spec §4.3–4.4).
//!
//! Every change is a compare-and-swap of the whole topology with a higher epoch. A migration
//! walks each slot through pending → preparing → prepared → migrating → finished → owned by
//! the target. Entering `prepared` (every proxy locks the slot and drains what it has in
//! flight for it) and `migrating` (every proxy routes to the target, moving each touched key
//! off the source first) waits until every registered proxy has acknowledged the epoch: the
//! two-phase commit that keeps any proxy from writing the source while another writes the
//! target. If a proxy does not acknowledge phase 1 in time, the slot goes back to
//! `preparing` (unlocked) and the command fails; running it again resumes every slot from the
//! state it was left in.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use rcodis_core::coord::{layout, Coordinator};
use rcodis_core::resp::{Frame, FrameDecoder, Request};
use rcodis_core::slot::NUM_SLOTS;
use rcodis_core::topology::{
    GroupId, MigrationMethod, MigrationState, ProxyInfo, SlotAction, Topology,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Subcommand)]
pub enum SlotCmd {
    /// Spread every offline slot evenly over the groups.
    Init,
    /// Give offline slots to a group.
    Assign { range: String, group: GroupId },
    /// Move slots to a group while the cluster serves.
    Migrate {
        range: String,
        /// Target group.
        #[arg(long)]
        to: GroupId,
        /// Only record the plan (a later `slot migrate` without --detach drives it).
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        drive: DriveArgs,
    },
    /// Slots with a migration planned or under way (all, or those in RANGE).
    Status { range: Option<String> },
}

/// How the migration driver works (shared by `slot migrate` and `rebalance`).
#[derive(Debug, clap::Args)]
pub struct DriveArgs {
    /// async (SLOTSMGRTTAGSLOT-ASYNC, proxies use SLOTSMGRT-EXEC-WRAPPER) or sync.
    #[arg(long, default_value = "async")]
    pub method: String,
    /// Password of the servers (their requirepass), if any.
    #[arg(long, default_value = "")]
    pub auth: String,
    /// Seconds to wait for every proxy to acknowledge an epoch.
    #[arg(long, default_value_t = 30)]
    pub ack_timeout: u64,
    /// Slots migrating at once (each group in at most one of them).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Take the driver lock even if a (dead) holder has it.
    #[arg(long)]
    pub force_unlock: bool,
}

impl DriveArgs {
    /// The driver's options.
    pub fn opts(self, detach: bool, json: bool) -> anyhow::Result<DriveOpts> {
        Ok(DriveOpts {
            method: parse_method(&self.method)?,
            detach,
            auth: self.auth,
            ack: Duration::from_secs(self.ack_timeout),
            parallel: self.parallel,
            force_unlock: self.force_unlock,
            json,
        })
    }
}

/// `async` or `sync`.
pub fn parse_method(m: &str) -> anyhow::Result<MigrationMethod> {
    match m {
        "async" | "semi-async" => Ok(MigrationMethod::SemiAsync),
        "sync" => Ok(MigrationMethod::Sync),
        m => anyhow::bail!("--method is async or sync, not '{m}'"),
    }
}

/// How to drive migrations.
pub struct DriveOpts {
    pub method: MigrationMethod,
    pub detach: bool,
    pub auth: String,
    pub ack: Duration,
    pub parallel: usize,
    pub force_unlock: bool,
    pub json: bool,
}

/// Records a pending migration for each `(slot, target)` not already there, then (unless
/// detached) drives every migration of these slots to the end: up to `parallel` at once, a
/// group taking part in at most one of them at a time.
pub async fn migrate(
    c: &Arc<dyn Coordinator>,
    product: &str,
    moves: &[(u16, GroupId)],
    o: &DriveOpts,
    out: &mut String,
) -> anyhow::Result<()> {
    let method = o.method;
    let t = update(c, product, |t| {
        let mut index = t
            .slots
            .iter()
            .filter_map(|s| s.action.as_ref().map(|a| a.index))
            .max()
            .unwrap_or(0);
        for &(s, to) in moves {
            if t.groups.get(&to).is_none_or(|g| g.servers.is_empty()) {
                anyhow::bail!("group {to} does not exist or has no server");
            }
            let e = &mut t.slots[s as usize];
            if let Some(a) = &e.action {
                if a.target != to {
                    anyhow::bail!("slot {s} is already moving to group {}", a.target);
                }
                continue;
            }
            if e.group == to {
                continue;
            }
            if e.group == 0 {
                anyhow::bail!("slot {s} is offline: use `slot assign`");
            }
            index += 1;
            e.action = Some(SlotAction {
                index,
                state: MigrationState::Pending,
                target: to,
                method,
            });
        }
        Ok(())
    })
    .await?;
    let mut todo: Vec<(u64, u16)> = moves
        .iter()
        .filter_map(|&(s, _)| t.slots[s as usize].action.as_ref().map(|a| (a.index, s)))
        .collect();
    todo.sort_unstable();
    todo.dedup();
    if o.detach {
        say!(
            out,
            "{} slot migrations recorded (epoch {})",
            todo.len(),
            t.epoch
        );
        return Ok(());
    }
    let lock = driver_lock(c, product, "slot migrate", o.force_unlock).await?;
    let slots: Vec<u16> = todo.into_iter().map(|(_, s)| s).collect();
    let result = drive_recorded(c, product, &slots, o).await;
    lock.release().await;
    result
}

/// Takes the product's driver lock (one driver at a time: a ctl or a dashboard), after
/// removing a dead holder's with `force_unlock`.
pub async fn driver_lock(
    c: &Arc<dyn Coordinator>,
    product: &str,
    what: &str,
    force_unlock: bool,
) -> anyhow::Result<rcodis_core::coord::LockGuard> {
    let lock_key = layout::lock_key(product);
    if force_unlock && c.force_unlock(&lock_key).await? {
        eprintln!("removed the previous driver's lock");
    }
    let holder = format!("rcodis-ctl {what} (pid {})", std::process::id());
    c.lock(&lock_key, &holder, Duration::from_secs(10))
        .await
        .map_err(|e| {
            anyhow::anyhow!("another driver runs ({e}); if it is dead, add --force-unlock")
        })
}

/// Drives the recorded migrations of `slots` (in this order) to the end; the caller holds
/// the driver lock. Progress goes to stderr: a bar on a terminal, lines otherwise.
pub async fn drive_recorded(
    c: &Arc<dyn Coordinator>,
    product: &str,
    slots: &[u16],
    o: &DriveOpts,
) -> anyhow::Result<()> {
    let total = slots.len();
    let mut done = 0;
    let mut result = Ok(());
    let bar = !o.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut queue: std::collections::VecDeque<u16> = slots.iter().copied().collect();
    while !queue.is_empty() && result.is_ok() {
        // Batches of up to `parallel` slots sharing one (source, target) pair; batches whose
        // groups are all distinct run at once.
        let t = load(c, product).await?;
        let mut busy: std::collections::BTreeSet<GroupId> = Default::default();
        let mut batches: Vec<((GroupId, GroupId), Vec<u16>)> = Vec::new();
        let mut rest = std::collections::VecDeque::new();
        while let Some(s) = queue.pop_front() {
            let e = &t.slots[s as usize];
            let pair = (e.group, e.action.as_ref().map_or(0, |a| a.target));
            if let Some((_, b)) = batches.iter_mut().find(|(p, _)| *p == pair) {
                if b.len() < o.parallel.max(1) {
                    b.push(s);
                    continue;
                }
            } else if !busy.contains(&pair.0) && !busy.contains(&pair.1) {
                busy.extend([pair.0, pair.1]);
                batches.push((pair, vec![s]));
                continue;
            }
            rest.push_back(s);
        }
        queue = rest;
        let results = futures::future::join_all(
            batches
                .iter()
                .map(|(_, b)| drive(c, product, b, &o.auth, o.ack, o.json, !bar)),
        )
        .await;
        for (r, (_, b)) in results.into_iter().zip(&batches) {
            if r.is_err() && result.is_ok() {
                result = r;
            }
            done += b.len();
        }
        if o.json || total <= 1 {
            continue;
        }
        if bar {
            let width = 40;
            let filled = done * width / total;
            eprint!(
                "\r[{}{}] {done}/{total} slots",
                "#".repeat(filled),
                "-".repeat(width - filled)
            );
            if done == total || result.is_err() {
                eprintln!();
            }
        } else {
            eprintln!("progress: {done}/{total} slots");
        }
    }
    result
}

/// Parses `N`, `N-M`, or a comma list of those.
pub fn parse_range(s: &str) -> anyhow::Result<Vec<u16>> {
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u16 = a.parse().with_context(|| format!("bad slot '{a}'"))?;
        let b: u16 = b.parse().with_context(|| format!("bad slot '{b}'"))?;
        if a > b || b as usize >= NUM_SLOTS {
            anyhow::bail!("bad slot range '{part}' (slots are 0-{})", NUM_SLOTS - 1);
        }
        v.extend(a..=b);
    }
    if v.is_empty() {
        anyhow::bail!("empty slot range");
    }
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Reads the topology.
pub async fn load(c: &Arc<dyn Coordinator>, product: &str) -> anyhow::Result<Topology> {
    match c.get(&layout::topology_key(product)).await? {
        Some(d) => Topology::from_json(&d).map_err(|e| anyhow::anyhow!("bad topology: {e}")),
        None => anyhow::bail!("no cluster named '{product}' in the coordinator"),
    }
}

/// Applies `f` to the topology with a higher epoch, atomically (retries on a concurrent
/// change). Returns the new topology.
pub async fn update(
    c: &Arc<dyn Coordinator>,
    product: &str,
    mut f: impl FnMut(&mut Topology) -> anyhow::Result<()>,
) -> anyhow::Result<Topology> {
    let key = layout::topology_key(product);
    loop {
        let old = c.get(&key).await?;
        let mut t = match &old {
            Some(d) => Topology::from_json(d).map_err(|e| anyhow::anyhow!("bad topology: {e}"))?,
            None => Topology::new(),
        };
        f(&mut t)?;
        t.epoch += 1;
        t.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        if c.compare_and_swap(&key, old.as_deref(), Some(&t.to_json()))
            .await?
        {
            return Ok(t);
        }
    }
}

/// The registered proxies.
pub async fn proxies(c: &Arc<dyn Coordinator>, product: &str) -> anyhow::Result<Vec<ProxyInfo>> {
    Ok(c.list(&layout::proxy_prefix(product))
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

/// Waits until every registered proxy has applied `epoch`.
pub(crate) async fn wait_acks(
    c: &Arc<dyn Coordinator>,
    product: &str,
    epoch: u64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let ps = proxies(c, product).await?;
        let lagging: Vec<String> = ps
            .iter()
            .filter(|p| p.applied_epoch < epoch)
            .map(|p| {
                format!(
                    "{} ({}, at epoch {})",
                    p.token, p.proxy_addr, p.applied_epoch
                )
            })
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "proxies did not acknowledge epoch {epoch} within {} s: {}",
                timeout.as_secs(),
                lagging.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A minimal RESP client for the servers.
pub(crate) struct Client {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
    dec: FrameDecoder,
}

impl Client {
    pub(crate) async fn connect(addr: &str, auth: &str) -> anyhow::Result<Client> {
        let stream =
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| anyhow::anyhow!("connect {addr}: timed out"))?
                .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true).ok();
        let mut c = Client {
            stream,
            buf: bytes::BytesMut::new(),
            dec: FrameDecoder::default(),
        };
        if !auth.is_empty() {
            c.call(&["AUTH", auth]).await?;
        }
        Ok(c)
    }

    pub(crate) async fn call(&mut self, args: &[&str]) -> anyhow::Result<Frame> {
        let mut out = Vec::new();
        Request::from_args(args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
            .write_resp(&mut out);
        self.stream.write_all(&out).await?;
        loop {
            if let Some(f) = self.dec.decode(&mut self.buf)? {
                if let Frame::Error(e) = &f {
                    anyhow::bail!("{}: {}", args[0], String::from_utf8_lossy(e));
                }
                return Ok(f);
            }
            let mut tmp = [0u8; 16 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(120), self.stream.read(&mut tmp))
                .await
                .map_err(|_| anyhow::anyhow!("{}: no reply within 120 s", args[0]))??;
            if n == 0 {
                anyhow::bail!("{}: connection closed", args[0]);
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

fn int(f: &Frame) -> Option<i64> {
    match f {
        Frame::Integer(i) => Some(*i),
        _ => None,
    }
}

/// Databases of a server that hold keys (from INFO keyspace).
async fn dbs_with_keys(c: &mut Client) -> anyhow::Result<Vec<usize>> {
    let info = c.call(&["INFO", "keyspace"]).await?;
    let text = info
        .as_bytes()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("db")?.split(':').next()?.parse().ok())
        .collect())
}

/// Moves every key of `slot` from `source` to `target` (each database in turn). Returns
/// how many keys moved.
async fn move_data(
    source: &str,
    target: &str,
    slot: u16,
    method: MigrationMethod,
    auth: &str,
) -> anyhow::Result<u64> {
    let mut c = Client::connect(source, auth).await?;
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("bad target address {target}"))?;
    let slot_s = slot.to_string();
    let mut moved = 0u64;
    loop {
        let mut left_anywhere = false;
        for db in dbs_with_keys(&mut c).await? {
            c.call(&["SELECT", &db.to_string()]).await?;
            loop {
                let r = match method {
                    MigrationMethod::SemiAsync => {
                        c.call(&[
                            "SLOTSMGRTTAGSLOT-ASYNC",
                            host,
                            port,
                            "5000",
                            "200",
                            "33554432",
                            &slot_s,
                            "500",
                        ])
                        .await?
                    }
                    MigrationMethod::Sync => {
                        c.call(&["SLOTSMGRTTAGSLOT", host, port, "30000", &slot_s])
                            .await?
                    }
                };
                let (n, left) = match r.as_array() {
                    Some(v) if v.len() == 2 => (int(&v[0]).unwrap_or(0), int(&v[1]).unwrap_or(0)),
                    _ => anyhow::bail!("unexpected migration reply {r:?}"),
                };
                moved += n.max(0) as u64;
                if left == 0 {
                    break;
                }
                if n == 0 {
                    // Keys left but none moved: they are expiring or busy; look again soon.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let info = c.call(&["SLOTSINFO", &slot_s, "1"]).await?;
            if info.as_array().is_some_and(|v| !v.is_empty()) {
                left_anywhere = true;
            }
        }
        if !left_anywhere {
            return Ok(moved);
        }
    }
}

fn master(t: &Topology, g: GroupId) -> anyhow::Result<String> {
    t.groups
        .get(&g)
        .and_then(|g| g.master())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("group {g} has no server"))
}

fn set_state(t: &mut Topology, slot: u16, state: MigrationState) -> anyhow::Result<()> {
    let a = t.slots[slot as usize]
        .action
        .as_mut()
        .ok_or_else(|| anyhow::anyhow!("slot {slot} has no migration any more"))?;
    a.state = state;
    Ok(())
}

fn set_states(t: &mut Topology, slots: &[u16], state: MigrationState) -> anyhow::Result<()> {
    for &s in slots {
        set_state(t, s, state)?;
    }
    Ok(())
}

/// For tests of resuming: with `RCODIS_CTL_CRASH_AFTER=<point>` the driver dies (exit
/// 137, no cleanup, its lock left behind) right after persisting that step: `preparing`,
/// `prepared`, `migrating`, `moved` (data moved, `finished` not yet recorded), `finished`.
fn crash_point(point: &str) {
    if std::env::var("RCODIS_CTL_CRASH_AFTER").is_ok_and(|p| p.eq_ignore_ascii_case(point)) {
        eprintln!("rcodis-ctl: stopping after '{point}' (RCODIS_CTL_CRASH_AFTER)");
        std::process::exit(137);
    }
}

/// Drives a batch of slots (one source group, one target group) from whatever states they
/// are in to the end, in lockstep: each phase is one epoch for the whole batch, and waits
/// for every proxy's acknowledgement.
async fn drive(
    c: &Arc<dyn Coordinator>,
    product: &str,
    batch: &[u16],
    auth: &str,
    ack: Duration,
    json: bool,
    lines: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut moved: BTreeMap<u16, u64> = BTreeMap::new();
    loop {
        let t = load(c, product).await?;
        // The least advanced state among the slots still moving.
        let Some(state) = batch
            .iter()
            .filter_map(|&s| t.slots[s as usize].action.as_ref().map(|a| a.state))
            .min()
        else {
            break;
        };
        let at: Vec<u16> = batch
            .iter()
            .copied()
            .filter(|&s| {
                t.slots[s as usize]
                    .action
                    .as_ref()
                    .is_some_and(|a| a.state == state)
            })
            .collect();
        let list = crate::ranges(&at);
        match state {
            MigrationState::Pending => {
                update(c, product, |t| {
                    set_states(t, &at, MigrationState::Preparing)
                })
                .await?;
                crash_point("preparing");
            }
            MigrationState::Preparing => {
                // Phase 1: every proxy locks the slots and drains them.
                let t =
                    update(c, product, |t| set_states(t, &at, MigrationState::Prepared)).await?;
                crash_point("prepared");
                if let Err(e) = wait_acks(c, product, t.epoch, ack).await {
                    update(c, product, |t| {
                        set_states(t, &at, MigrationState::Preparing)
                    })
                    .await?;
                    return Err(e.context(format!("slots {list}: phase 1 (prepared) rolled back")));
                }
            }
            MigrationState::Prepared => {
                // Phase 2: every proxy routes to the target, keys leave the source first.
                let t = update(c, product, |t| {
                    set_states(t, &at, MigrationState::Migrating)
                })
                .await?;
                crash_point("migrating");
                wait_acks(c, product, t.epoch, ack)
                    .await
                    .map_err(|e| e.context(format!("slots {list}: phase 2 (migrating)")))?;
            }
            MigrationState::Migrating => {
                for &slot in &at {
                    let e = &t.slots[slot as usize];
                    let a = e.action.as_ref().expect("moving");
                    let source = master(&t, e.group)?;
                    let target = master(&t, a.target)?;
                    let n = move_data(&source, &target, slot, a.method, auth)
                        .await
                        .map_err(|e| {
                            e.context(format!("slot {slot}: moving data {source} -> {target}"))
                        })?;
                    *moved.entry(slot).or_default() += n;
                }
                crash_point("moved");
                let t =
                    update(c, product, |t| set_states(t, &at, MigrationState::Finished)).await?;
                crash_point("finished");
                wait_acks(c, product, t.epoch, ack).await?;
            }
            MigrationState::Finished => {
                update(c, product, |t| {
                    for &slot in &at {
                        let s = &mut t.slots[slot as usize];
                        if let Some(a) = s.action.take() {
                            s.group = a.target;
                        }
                    }
                    Ok(())
                })
                .await?;
            }
        }
    }
    let t = load(c, product).await?;
    for &slot in batch {
        let keys = moved.get(&slot).copied().unwrap_or(0);
        let group = t.slots[slot as usize].group;
        if json {
            println!(
                "{}",
                serde_json::json!({"slot": slot, "group": group, "keys": keys, "batch_ms": started.elapsed().as_millis() as u64})
            );
        } else if lines {
            println!("[OK] slot {slot:4} -> group {group}: {keys} keys");
        }
    }
    Ok(())
}

pub async fn run(
    cmd: SlotCmd,
    c: Arc<dyn Coordinator>,
    product: &str,
    json: bool,
    out: &mut String,
) -> anyhow::Result<()> {
    match cmd {
        SlotCmd::Init => {
            let t = update(&c, product, |t| {
                let groups: Vec<GroupId> = t.groups.keys().copied().collect();
                if groups.is_empty() {
                    anyhow::bail!("no groups: add one with `group add`");
                }
                let mut counts: std::collections::BTreeMap<GroupId, usize> =
                    groups.iter().map(|g| (*g, 0)).collect();
                for s in &t.slots {
                    if let Some(n) = counts.get_mut(&s.group) {
                        *n += 1;
                    }
                }
                for s in t.slots.iter_mut().filter(|s| s.group == 0) {
                    let (&g, n) = counts.iter_mut().min_by_key(|(_, n)| **n).expect("groups");
                    s.group = g;
                    *n += 1;
                }
                Ok(())
            })
            .await?;
            say!(
                out,
                "slots spread over {} groups (epoch {})",
                t.groups.len(),
                t.epoch
            );
        }
        SlotCmd::Assign { range, group } => {
            let slots = parse_range(&range)?;
            let t = update(&c, product, |t| {
                if !t.groups.contains_key(&group) {
                    anyhow::bail!("no group {group}");
                }
                for &s in &slots {
                    let e = &mut t.slots[s as usize];
                    if e.group != 0 {
                        anyhow::bail!("slot {s} belongs to group {}: use `slot migrate`", e.group);
                    }
                    e.group = group;
                }
                Ok(())
            })
            .await?;
            say!(
                out,
                "{} slots assigned to group {group} (epoch {})",
                slots.len(),
                t.epoch
            );
        }
        SlotCmd::Status { range } => {
            let t = load(&c, product).await?;
            let want = match range {
                Some(r) => parse_range(&r)?,
                None => (0..NUM_SLOTS as u16).collect(),
            };
            let rows: Vec<_> = want
                .iter()
                .filter_map(|&s| {
                    let e = &t.slots[s as usize];
                    e.action.as_ref().map(|a| (s, e.group, a.clone()))
                })
                .collect();
            if json {
                say!(
                    out,
                    "{}",
                    serde_json::to_string(
                        &rows
                            .iter()
                            .map(
                                |(s, g, a)| serde_json::json!({"slot": s, "group": g, "action": a})
                            )
                            .collect::<Vec<_>>()
                    )?
                );
            } else if rows.is_empty() {
                say!(out, "no migration planned or under way");
            } else {
                say!(
                    out,
                    "{:<6} {:<6} {:<6} {:<10} {:<10}",
                    "slot",
                    "from",
                    "to",
                    "state",
                    "method"
                );
                for (s, g, a) in rows {
                    say!(
                        out,
                        "{:<6} {:<6} {:<6} {:<10} {:<10}",
                        s,
                        g,
                        a.target,
                        format!("{:?}", a.state).to_lowercase(),
                        match a.method {
                            MigrationMethod::Sync => "sync",
                            MigrationMethod::SemiAsync => "async",
                        }
                    );
                }
            }
        }
        SlotCmd::Migrate {
            range,
            to,
            detach,
            drive,
        } => {
            let slots = parse_range(&range)?;
            let opts = drive.opts(detach, json)?;
            let moves: Vec<(u16, GroupId)> = slots.iter().map(|&s| (s, to)).collect();
            migrate(&c, product, &moves, &opts, out).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("5").unwrap(), vec![5]);
        assert_eq!(parse_range("1-3,7, 2").unwrap(), vec![1, 2, 3, 7]);
        assert!(parse_range("3-1").is_err());
        assert!(parse_range("1024").is_err());
        assert!(parse_range("x").is_err());
    }
}
