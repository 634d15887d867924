//! Group, server and proxy editing, and rebalance (codis-spec §4.5–4.7). Every change is one
//! compare-and-swap of the topology (a new epoch); bad input changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use clap::Subcommand;
use rcodis_core::coord::{layout, Coordinator};
use rcodis_core::slot::NUM_SLOTS;
use rcodis_core::topology::{Group, GroupId, Topology, MAX_GROUP_ID};

use crate::slot::{load, update};

#[derive(Debug, Subcommand)]
pub enum GroupCmd {
    /// Create an empty group.
    Add { id: GroupId },
    /// Remove a group that has no servers and no slots.
    Remove { id: GroupId },
    /// Groups with their servers and slot counts.
    List,
    /// Failover: make a replica of the group its master (REPLICAOF NO ONE), point the other
    /// servers at it, and route the group's slots to it.
    Promote {
        id: GroupId,
        addr: String,
        /// Password of the servers (their requirepass), if any.
        #[arg(long, default_value = "")]
        auth: String,
    },
    /// Whether proxies may send read-only commands to the group's replicas.
    ReplicaRead {
        id: GroupId,
        /// on or off
        state: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCmd {
    /// Add a server to a group: the first one is the master, the next ones are made its
    /// replicas (REPLICAOF). It must answer SLOTSINFO.
    Add {
        group: GroupId,
        addr: String,
        #[arg(long, default_value = "")]
        auth: String,
    },
    /// Remove a server (a master only when it is alone and its group serves no slot).
    Remove { group: GroupId, addr: String },
}

#[derive(Debug, Subcommand)]
pub enum ProxyCmd {
    /// Registered proxies.
    List,
    /// Remove a proxy's registration (for a dead one).
    Remove { token: String },
}

pub async fn group(
    cmd: GroupCmd,
    c: Arc<dyn Coordinator>,
    product: &str,
    json: bool,
    out: &mut String,
) -> anyhow::Result<()> {
    match cmd {
        GroupCmd::Add { id } => {
            let t = update(&c, product, |t| {
                if id == 0 || id > MAX_GROUP_ID {
                    anyhow::bail!("group id must be 1..={MAX_GROUP_ID}");
                }
                if t.groups.contains_key(&id) {
                    anyhow::bail!("group {id} exists");
                }
                t.groups.insert(
                    id,
                    Group {
                        id,
                        servers: Vec::new(),
                        read_from_replica: false,
                    },
                );
                Ok(())
            })
            .await?;
            say!(out, "group {id} added (epoch {})", t.epoch);
        }
        GroupCmd::Remove { id } => {
            let t = update(&c, product, |t| {
                let g = t
                    .groups
                    .get(&id)
                    .ok_or_else(|| anyhow::anyhow!("no group {id}"))?;
                if !g.servers.is_empty() {
                    anyhow::bail!("group {id} still has servers");
                }
                if t.slots
                    .iter()
                    .any(|s| s.group == id || s.action.as_ref().is_some_and(|a| a.target == id))
                {
                    anyhow::bail!("group {id} still serves slots");
                }
                t.groups.remove(&id);
                Ok(())
            })
            .await?;
            say!(out, "group {id} removed (epoch {})", t.epoch);
        }
        GroupCmd::Promote { id, addr, auth } => {
            let t = load(&c, product).await?;
            let g = t
                .groups
                .get(&id)
                .ok_or_else(|| anyhow::anyhow!("no group {id}"))?;
            let Some(pos) = g.servers.iter().position(|s| *s == addr) else {
                anyhow::bail!("server {addr} is not in group {id}");
            };
            if pos == 0 {
                anyhow::bail!("{addr} is already group {id}'s master");
            }
            if t.slots.iter().any(|s| {
                s.action
                    .as_ref()
                    .is_some_and(|a| s.group == id || a.target == id)
            }) {
                anyhow::bail!("group {id} takes part in a migration: finish it first");
            }
            // The new master first: it stops following and takes writes.
            command(&addr, &auth, &["REPLICAOF", "NO", "ONE"])
                .await
                .map_err(|e| e.context(format!("promoting {addr}")))?;
            let t = update(&c, product, |t| {
                let g = t
                    .groups
                    .get_mut(&id)
                    .ok_or_else(|| anyhow::anyhow!("no group {id}"))?;
                let pos = g
                    .servers
                    .iter()
                    .position(|s| *s == addr)
                    .ok_or_else(|| anyhow::anyhow!("server {addr} left group {id}"))?;
                let s = g.servers.remove(pos);
                g.servers.insert(0, s);
                Ok(())
            })
            .await?;
            say!(out, "{addr} is group {id}'s master (epoch {})", t.epoch);
            // Proxies write to the new master before the old one turns read-only.
            if let Err(e) =
                crate::slot::wait_acks(&c, product, t.epoch, std::time::Duration::from_secs(10))
                    .await
            {
                say!(out, "not every proxy acknowledged the change yet: {e:#}");
            }
            // The others (the old master too, if it is still there) follow it.
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| anyhow::anyhow!("bad address {addr}"))?;
            for s in &t.groups[&id].servers[1..] {
                match command(s, &auth, &["REPLICAOF", host, port]).await {
                    Ok(_) => say!(out, "{s} now replicates {addr}"),
                    Err(e) => say!(
                        out,
                        "{s} not reconfigured ({e:#}); it needs REPLICAOF {host} {port}"
                    ),
                }
            }
        }
        GroupCmd::ReplicaRead { id, state } => {
            let on = match state.as_str() {
                "on" | "yes" | "true" => true,
                "off" | "no" | "false" => false,
                s => anyhow::bail!("replica-read takes on or off, not '{s}'"),
            };
            let t = update(&c, product, |t| {
                let g = t
                    .groups
                    .get_mut(&id)
                    .ok_or_else(|| anyhow::anyhow!("no group {id}"))?;
                g.read_from_replica = on;
                Ok(())
            })
            .await?;
            say!(
                out,
                "group {id}: reads from replicas {} (epoch {})",
                if on { "on" } else { "off" },
                t.epoch
            );
        }
        GroupCmd::List => {
            let t = load(&c, product).await?;
            let by = t.slots_by_group();
            if json {
                let v: Vec<_> = t
                    .groups
                    .values()
                    .map(|g| serde_json::json!({"id": g.id, "servers": g.servers, "slots": by.get(&g.id).map_or(0, Vec::len), "read_from_replica": g.read_from_replica}))
                    .collect();
                say!(out, "{}", serde_json::to_string(&v)?);
            } else {
                say!(out, "{:<6} {:>6}  servers (master first)", "group", "slots");
                for g in t.groups.values() {
                    say!(
                        out,
                        "{:<6} {:>6}  {}",
                        g.id,
                        by.get(&g.id).map_or(0, Vec::len),
                        g.servers.join(" ")
                    );
                }
            }
        }
    }
    Ok(())
}

/// Sends one command to a server (AUTH first when `auth` is set).
async fn command(
    addr: &str,
    auth: &str,
    args: &[&str],
) -> anyhow::Result<rcodis_core::resp::Frame> {
    let mut c = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        crate::slot::Client::connect(addr, auth),
    )
    .await
    .map_err(|_| anyhow::anyhow!("server {addr} is unreachable (timeout)"))??;
    tokio::time::timeout(std::time::Duration::from_secs(10), c.call(args))
        .await
        .map_err(|_| anyhow::anyhow!("server {addr} does not answer {}", args[0]))?
}

/// Checks that `addr` is a slot-aware server (answers SLOTSINFO).
async fn probe(addr: &str, auth: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| anyhow::anyhow!("server {addr} is unreachable (timeout)"))?
    .map_err(|e| anyhow::anyhow!("server {addr} is unreachable: {e}"))?;
    let mut req = Vec::new();
    if !auth.is_empty() {
        rcodis_core::resp::Request::from_args([&b"AUTH"[..], auth.as_bytes()]).write_resp(&mut req);
    }
    rcodis_core::resp::Request::from_args([&b"SLOTSINFO"[..], b"0", b"1"]).write_resp(&mut req);
    s.write_all(&req).await?;
    let mut buf = bytes::BytesMut::new();
    let mut dec = rcodis_core::resp::FrameDecoder::default();
    let mut replies = Vec::new();
    let want = if auth.is_empty() { 1 } else { 2 };
    while replies.len() < want {
        if let Some(f) = dec.decode(&mut buf)? {
            replies.push(f);
            continue;
        }
        let mut tmp = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), s.read(&mut tmp))
            .await
            .map_err(|_| anyhow::anyhow!("server {addr} does not answer"))??;
        if n == 0 {
            anyhow::bail!("server {addr} closed the connection");
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    for r in replies {
        if let rcodis_core::resp::Frame::Error(e) = r {
            anyhow::bail!(
                "server {addr} refused: {} (is it an rcodis-server?)",
                String::from_utf8_lossy(&e)
            );
        }
    }
    Ok(())
}

pub async fn server(
    cmd: ServerCmd,
    c: Arc<dyn Coordinator>,
    product: &str,
    out: &mut String,
) -> anyhow::Result<()> {
    match cmd {
        ServerCmd::Add { group, addr, auth } => {
            if addr.parse::<std::net::SocketAddr>().is_err() && addr.rsplit_once(':').is_none() {
                anyhow::bail!("server address must be host:port, not '{addr}'");
            }
            probe(&addr, &auth).await?;
            // A group that has a master: the new server becomes its replica.
            let master = load(&c, product)
                .await?
                .groups
                .get(&group)
                .and_then(|g| g.master().map(str::to_string));
            if let Some(m) = &master {
                let (host, port) = m
                    .rsplit_once(':')
                    .ok_or_else(|| anyhow::anyhow!("bad master address {m}"))?;
                if !auth.is_empty() {
                    command(&addr, &auth, &["CONFIG", "SET", "masterauth", &auth]).await?;
                }
                command(&addr, &auth, &["REPLICAOF", host, port])
                    .await
                    .map_err(|e| e.context(format!("making {addr} a replica of {m}")))?;
            }
            let t = update(&c, product, |t| {
                if t.groups.values().any(|g| g.servers.contains(&addr)) {
                    anyhow::bail!("server {addr} already belongs to a group");
                }
                let g = t
                    .groups
                    .get_mut(&group)
                    .ok_or_else(|| anyhow::anyhow!("no group {group}"))?;
                g.servers.push(addr.clone());
                Ok(())
            })
            .await?;
            say!(
                out,
                "server {addr} added to group {group} (epoch {})",
                t.epoch
            );
        }
        ServerCmd::Remove { group, addr } => {
            let t = update(&c, product, |t| {
                let used = t.slots.iter().any(|s| s.group == group || s.action.as_ref().is_some_and(|a| a.target == group));
                let g = t.groups.get_mut(&group).ok_or_else(|| anyhow::anyhow!("no group {group}"))?;
                let i = g
                    .servers
                    .iter()
                    .position(|s| *s == addr)
                    .ok_or_else(|| anyhow::anyhow!("server {addr} is not in group {group}"))?;
                if i == 0 && (g.servers.len() > 1 || used) {
                    anyhow::bail!("{addr} is group {group}'s master: remove the replicas and move the slots first");
                }
                g.servers.remove(i);
                Ok(())
            })
            .await?;
            // A replica that leaves its group stops following the master (best effort).
            let _ = command(&addr, "", &["REPLICAOF", "NO", "ONE"]).await;
            say!(
                out,
                "server {addr} removed from group {group} (epoch {})",
                t.epoch
            );
        }
    }
    Ok(())
}

pub async fn proxy(
    cmd: ProxyCmd,
    c: Arc<dyn Coordinator>,
    product: &str,
    json: bool,
    out: &mut String,
) -> anyhow::Result<()> {
    match cmd {
        ProxyCmd::List => {
            let ps = crate::slot::proxies(&c, product).await?;
            if json {
                say!(out, "{}", serde_json::to_string(&ps)?);
            } else {
                say!(
                    out,
                    "{:<34} {:<22} {:>8} {:>8}",
                    "proxy",
                    "address",
                    "epoch",
                    "pid"
                );
                for p in ps {
                    say!(
                        out,
                        "{:<34} {:<22} {:>8} {:>8}",
                        p.token,
                        p.proxy_addr,
                        p.applied_epoch,
                        p.pid
                    );
                }
            }
        }
        ProxyCmd::Remove { token } => {
            if !c.delete(&layout::proxy_key(product, &token)).await? {
                anyhow::bail!("no proxy {token}");
            }
            say!(out, "proxy {token} removed");
        }
    }
    Ok(())
}

/// The fewest moves that even the slots over the groups with servers (codis's rebalance):
/// `(slot, from, to)`, ascending by slot.
pub fn rebalance_plan(t: &Topology) -> anyhow::Result<Vec<(u16, GroupId, GroupId)>> {
    let groups: Vec<GroupId> = t
        .groups
        .values()
        .filter(|g| !g.servers.is_empty())
        .map(|g| g.id)
        .collect();
    if groups.is_empty() {
        anyhow::bail!("no valid group could be found");
    }
    let n = groups.len();
    let lower = NUM_SLOTS / n;
    let upper = NUM_SLOTS.div_ceil(n);
    // Current size of each group (moving slots count for their target).
    let mut size: BTreeMap<GroupId, usize> = groups.iter().map(|g| (*g, 0)).collect();
    let mut candidates: BTreeMap<GroupId, Vec<u16>> = BTreeMap::new();
    let mut offline = Vec::new();
    for s in &t.slots {
        let owner = s.action.as_ref().map_or(s.group, |a| a.target);
        if s.action.is_none() {
            if owner == 0 || !size.contains_key(&owner) {
                offline.push((s.id, s.group));
                continue;
            }
            candidates.entry(owner).or_default().push(s.id);
        }
        if let Some(n) = size.get_mut(&owner) {
            *n += 1;
        }
    }
    let mut plan: Vec<(u16, GroupId, GroupId)> = Vec::new();
    let smallest =
        |size: &BTreeMap<GroupId, usize>| size.iter().map(|(g, n)| (*n, *g)).min().expect("groups");
    for (slot, from) in offline {
        let (_, g) = smallest(&size);
        *size.get_mut(&g).expect("group") += 1;
        plan.push((slot, from, g));
    }
    let mut out_count: BTreeMap<GroupId, usize> = BTreeMap::new();
    let mut in_count: BTreeMap<GroupId, usize> = BTreeMap::new();
    let mut exhausted: BTreeSet<GroupId> = BTreeSet::new();
    while let Some((fsize, from)) = size
        .iter()
        .filter(|(g, _)| !exhausted.contains(*g))
        .map(|(g, n)| (*n, *g))
        .max()
    {
        let (dsize, dest) = smallest(&size);
        if fsize <= lower || dsize >= upper || fsize - dsize <= 1 {
            break;
        }
        let avail = candidates.get(&from).map_or(0, Vec::len);
        if out_count.get(&from).copied().unwrap_or(0) >= avail {
            exhausted.insert(from);
            continue;
        }
        *out_count.entry(from).or_default() += 1;
        *in_count.entry(dest).or_default() += 1;
        *size.get_mut(&from).expect("group") -= 1;
        *size.get_mut(&dest).expect("group") += 1;
    }
    // Each giving group gives its highest-numbered candidates; receivers take them in
    // ascending slot order, lowest group id first.
    let mut moving: Vec<(u16, GroupId)> = Vec::new();
    for (g, k) in &out_count {
        let c = &candidates[g];
        moving.extend(c[c.len() - k..].iter().map(|s| (*s, *g)));
    }
    moving.sort_unstable();
    let mut receivers: Vec<GroupId> = Vec::new();
    for (g, k) in &in_count {
        receivers.extend(std::iter::repeat_n(*g, *k));
    }
    for ((slot, from), to) in moving.into_iter().zip(receivers) {
        plan.push((slot, from, to));
    }
    plan.sort_unstable();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(groups: &[GroupId]) -> Topology {
        let mut t = Topology::new();
        for &g in groups {
            t.groups.insert(
                g,
                Group {
                    id: g,
                    servers: vec![format!("127.0.0.1:{}", 7000 + g)],
                    read_from_replica: false,
                },
            );
        }
        t
    }

    #[test]
    fn from_one_group_to_two() {
        let mut t = topo(&[1, 2]);
        for s in &mut t.slots {
            s.group = 1;
        }
        let plan = rebalance_plan(&t).unwrap();
        assert_eq!(plan.len(), 512);
        assert!(plan.iter().all(|&(s, f, to)| s >= 512 && f == 1 && to == 2));
    }

    #[test]
    fn offline_slots_and_three_groups_end_even() {
        let mut t = topo(&[1, 2, 3]);
        for s in &mut t.slots {
            s.group = if s.id < 700 {
                1
            } else if s.id < 1000 {
                2
            } else {
                0
            };
        }
        let plan = rebalance_plan(&t).unwrap();
        let mut owner: Vec<GroupId> = t.slots.iter().map(|s| s.group).collect();
        for (s, _, to) in &plan {
            owner[*s as usize] = *to;
        }
        for g in [1, 2, 3] {
            let n = owner.iter().filter(|o| **o == g).count();
            assert!((341..=342).contains(&n), "group {g}: {n}");
        }
        // Already even: nothing to do.
        let mut t2 = t.clone();
        for (s, _, to) in plan {
            t2.slots[s as usize].group = to;
        }
        assert!(rebalance_plan(&t2).unwrap().is_empty());
    }
}
