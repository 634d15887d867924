//! `rcodis-ctl dashboard`: a long-running process that serves the HTTP JSON API for what the
//! command line does, drives recorded migrations in the background (`slot migrate --detach`,
//! the API's migrate and rebalance) and checks every server's health.
//!
//! It holds the product's driver lock for its whole life, so no other ctl or dashboard
//! drives at the same time; started again after a crash it resumes every recorded
//! migration from its persisted state. With `--auto-failover N` it promotes a group's
//! reachable replica (the one with the most keys) once the master has been unreachable for
//! N seconds and the group is not migrating. Mutations need the admin token
//! (`Authorization: Bearer TOKEN`, or `X-Admin-Token`); reads do not.
//!
//! ```text
//! GET    /api/status                      groups, servers' health, slots, proxies and their load,
//!                                         migrations, driver
//! GET    /api/topology                    the topology as stored
//! GET    /api/proxies                     registered proxies
//! GET    /api/slots[?range=R]             migrations planned or under way
//! POST   /api/groups/{id}                 add a group          DELETE /api/groups/{id}
//! POST   /api/groups/{id}/servers/{addr}  add a server         DELETE (same path)
//! POST   /api/groups/{id}/promote/{addr}  failover to that replica
//! POST   /api/groups/{id}/replica-read/{on|off}
//! DELETE /api/proxies/{token}             drop a proxy's registration
//! POST   /api/slots/init                  spread offline slots
//! POST   /api/slots/assign/{range}/{group}
//! POST   /api/slots/migrate/{range}/{group}[?method=async|sync]
//! POST   /api/rebalance[?dry_run=1]
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use rcodis_core::coord::Coordinator;
use rcodis_core::topology::GroupId;
use serde_json::{json, Value};

use crate::health::ServerHealth;
use crate::slot::{self, DriveArgs, DriveOpts};

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Where the HTTP API listens.
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: String,
    /// Token for mutations (default: generated and printed at start).
    #[arg(long, default_value = "")]
    admin_token: String,
    /// Seconds between health checks of the servers.
    #[arg(long, default_value_t = 2)]
    health_interval: u64,
    /// Promote a reachable replica when a group's master has been unreachable this many
    /// seconds (0: never; failover stays a manual `group promote`).
    #[arg(long, default_value_t = 0)]
    auto_failover: u64,
    #[command(flatten)]
    drive: DriveArgs,
}

/// What the background driver is doing.
#[derive(Default, Clone, serde::Serialize)]
struct DriverState {
    running: bool,
    /// Slots in the run under way (or the last one).
    slots: usize,
    finished_runs: u64,
    last_error: String,
    last_error_at: u64,
}

struct Dash {
    c: Arc<dyn Coordinator>,
    product: String,
    token: String,
    opts: DriveOpts,
    health: Mutex<Vec<(GroupId, ServerHealth)>>,
    /// Since when each server has been unreachable.
    down_since: Mutex<std::collections::HashMap<String, Instant>>,
    auto_failover: Option<Duration>,
    failovers: Mutex<Vec<Value>>,
    health_at: Mutex<Option<Instant>>,
    driver: Mutex<DriverState>,
    wake: tokio::sync::Notify,
}

type Reply = Result<Json<Value>, (StatusCode, Json<Value>)>;

fn bad(e: anyhow::Error) -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"ok": false, "error": format!("{e:#}")})),
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `key=value` from a raw query string.
fn query(q: &Option<String>, key: &str) -> Option<String> {
    q.as_deref()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.replace("%2C", ",").replace("%2c", ","))
    })
}

impl Dash {
    fn authorize(&self, headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("x-admin-token").and_then(|v| v.to_str().ok()));
        match given {
            Some(t) if t == self.token => Ok(()),
            Some(_) => Err((
                StatusCode::FORBIDDEN,
                Json(json!({"ok": false, "error": "wrong admin token"})),
            )),
            None => Err((
                StatusCode::UNAUTHORIZED,
                Json(
                    json!({"ok": false, "error": "mutations need the admin token (Authorization: Bearer TOKEN)"}),
                ),
            )),
        }
    }

    fn done(&self, out: String) -> Reply {
        self.wake.notify_one();
        Ok(Json(json!({"ok": true, "output": out})))
    }

    fn detached(&self) -> DriveOpts {
        DriveOpts {
            method: self.opts.method,
            detach: true,
            auth: self.opts.auth.clone(),
            ack: self.opts.ack,
            parallel: self.opts.parallel,
            force_unlock: false,
            json: true,
        }
    }
}

pub async fn run(a: DashboardArgs, c: Arc<dyn Coordinator>, product: &str) -> anyhow::Result<()> {
    let opts = a.drive.opts(false, false)?;
    let lock = slot::driver_lock(&c, product, "dashboard", opts.force_unlock).await?;
    let token = if a.admin_token.is_empty() {
        let mut b = [0u8; 16];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| anyhow::anyhow!("cannot make an admin token: {e}"))?;
        b.iter().map(|x| format!("{x:02x}")).collect()
    } else {
        a.admin_token.clone()
    };
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.listen))?;
    let addr = listener.local_addr()?;
    let d = Arc::new(Dash {
        c,
        product: product.to_string(),
        token: token.clone(),
        opts,
        health: Mutex::new(Vec::new()),
        down_since: Mutex::new(Default::default()),
        auto_failover: (a.auto_failover > 0).then(|| Duration::from_secs(a.auto_failover)),
        failovers: Mutex::new(Vec::new()),
        health_at: Mutex::new(None),
        driver: Mutex::new(DriverState::default()),
        wake: tokio::sync::Notify::new(),
    });
    let app = Router::new()
        .route("/", get(index))
        .route("/api/status", get(status))
        .route("/api/topology", get(topology))
        .route("/api/proxies", get(proxies))
        .route("/api/slots", get(slots))
        .route("/api/groups/{id}", post(group_add).delete(group_remove))
        .route(
            "/api/groups/{id}/servers/{addr}",
            post(server_add).delete(server_remove),
        )
        .route("/api/groups/{id}/promote/{addr}", post(group_promote))
        .route(
            "/api/groups/{id}/replica-read/{state}",
            post(group_replica_read),
        )
        .route("/api/proxies/{token}", axum::routing::delete(proxy_remove))
        .route("/api/slots/init", post(slot_init))
        .route("/api/slots/assign/{range}/{group}", post(slot_assign))
        .route("/api/slots/migrate/{range}/{group}", post(slot_migrate))
        .route("/api/rebalance", post(rebalance))
        .with_state(d.clone());
    println!("dashboard for product '{product}' listening on http://{addr} (admin token: {token})");
    tokio::spawn(health_loop(
        d.clone(),
        Duration::from_secs(a.health_interval.max(1)),
    ));
    tokio::spawn(driver_loop(d.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let served = tokio::select! {
        r = axum::serve(listener, app) => r.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    // A migration step in flight is persisted before it is acted on: the next driver
    // resumes it.
    lock.release().await;
    eprintln!("dashboard stopped");
    served
}

async fn health_loop(d: Arc<Dash>, every: Duration) {
    loop {
        if let Ok(t) = slot::load(&d.c, &d.product).await {
            let h = crate::health::check_all(&t, &d.opts.auth, Duration::from_secs(1)).await;
            for (g, s) in &h {
                let was_up = d
                    .health
                    .lock()
                    .expect("health lock")
                    .iter()
                    .find(|(_, o)| o.addr == s.addr)
                    .map(|(_, o)| o.reachable);
                if was_up != Some(s.reachable) {
                    if s.reachable {
                        println!("server {} (group {g}) is reachable", s.addr);
                    } else {
                        println!("server {} (group {g}) is DOWN: {}", s.addr, s.error);
                    }
                }
            }
            {
                let mut down = d.down_since.lock().expect("health lock");
                for (_, s) in &h {
                    if s.reachable {
                        down.remove(&s.addr);
                    } else {
                        down.entry(s.addr.clone()).or_insert_with(Instant::now);
                    }
                }
            }
            *d.health.lock().expect("health lock") = h;
            *d.health_at.lock().expect("health lock") = Some(Instant::now());
            if let Some(after) = d.auto_failover {
                failover_check(&d, &t, after).await;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Promotes a replica of every group whose master has been down for `after` (and that has
/// a reachable replica and no migration under way).
async fn failover_check(d: &Dash, t: &rcodis_core::topology::Topology, after: Duration) {
    for g in t.groups.values() {
        let Some(master) = g.master() else { continue };
        let down_for = d
            .down_since
            .lock()
            .expect("health lock")
            .get(master)
            .map(|since| since.elapsed());
        if down_for.is_none_or(|f| f < after) {
            continue;
        }
        if t.slots.iter().any(|s| {
            s.action
                .as_ref()
                .is_some_and(|a| s.group == g.id || a.target == g.id)
        }) {
            continue;
        }
        let health = d.health.lock().expect("health lock").clone();
        // The reachable replica holding the most keys.
        let best = g.servers[1..]
            .iter()
            .filter_map(|s| {
                health
                    .iter()
                    .find(|(_, h)| &h.addr == s && h.reachable)
                    .map(|(_, h)| (h.keys, s.clone()))
            })
            .max();
        let Some((_, replica)) = best else {
            continue;
        };
        println!(
            "group {}: master {master} unreachable for {} s; promoting {replica}",
            g.id,
            after.as_secs()
        );
        let mut out = String::new();
        let cmd = crate::admin::GroupCmd::Promote {
            id: g.id,
            addr: replica.clone(),
            auth: d.opts.auth.clone(),
        };
        let r = crate::admin::group(cmd, d.c.clone(), &d.product, true, &mut out).await;
        let entry = json!({
            "group": g.id,
            "old_master": master,
            "new_master": replica,
            "at": unix_now(),
            "ok": r.is_ok(),
            "output": out,
            "error": r.as_ref().err().map(|e| format!("{e:#}")),
        });
        match &r {
            Ok(()) => print!("{out}"),
            Err(e) => println!("failover of group {} failed: {e:#}", g.id),
        }
        d.failovers.lock().expect("failovers lock").push(entry);
    }
}

async fn driver_loop(d: Arc<Dash>) {
    loop {
        tokio::select! {
            _ = d.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Ok(t) = slot::load(&d.c, &d.product).await else {
            continue;
        };
        let mut todo: Vec<(u64, u16)> = t
            .slots
            .iter()
            .filter_map(|s| s.action.as_ref().map(|a| (a.index, s.id)))
            .collect();
        if todo.is_empty() {
            continue;
        }
        todo.sort_unstable();
        let slots: Vec<u16> = todo.into_iter().map(|(_, s)| s).collect();
        {
            let mut st = d.driver.lock().expect("driver lock");
            st.running = true;
            st.slots = slots.len();
        }
        println!("driving {} recorded slot migrations", slots.len());
        let r = slot::drive_recorded(&d.c, &d.product, &slots, &d.opts).await;
        let failed = {
            let mut st = d.driver.lock().expect("driver lock");
            st.running = false;
            match r {
                Ok(()) => {
                    st.finished_runs += 1;
                    println!("migrations done");
                    false
                }
                Err(e) => {
                    st.last_error = format!("{e:#}");
                    st.last_error_at = unix_now();
                    println!("migration stopped: {e:#} (retrying)");
                    true
                }
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

async fn index() -> Json<Value> {
    Json(json!({
        "service": "rcodis-ctl dashboard",
        "read": ["/api/status", "/api/topology", "/api/proxies", "/api/slots?range=R"],
        "mutate (admin token)": [
            "POST|DELETE /api/groups/{id}",
            "POST|DELETE /api/groups/{id}/servers/{addr}",
            "POST /api/groups/{id}/promote/{addr}",
            "POST /api/groups/{id}/replica-read/{on|off}",
            "DELETE /api/proxies/{token}",
            "POST /api/slots/init",
            "POST /api/slots/assign/{range}/{group}",
            "POST /api/slots/migrate/{range}/{group}?method=async|sync",
            "POST /api/rebalance?dry_run=1",
        ],
    }))
}

async fn status(State(d): State<Arc<Dash>>) -> Reply {
    let t = slot::load(&d.c, &d.product).await.map_err(bad)?;
    let proxies = slot::proxies(&d.c, &d.product).await.map_err(bad)?;
    let health = d.health.lock().expect("health lock").clone();
    let by_group = t.slots_by_group();
    let groups: Vec<Value> = t
        .groups
        .values()
        .map(|g| {
            let slots = by_group.get(&g.id).cloned().unwrap_or_default();
            json!({
                "id": g.id,
                "slots": slots.len(),
                "ranges": crate::ranges(&slots),
                "servers": g.servers.iter().enumerate().map(|(i, s)| {
                    let h = health.iter().find(|(_, h)| &h.addr == s).map(|(_, h)| h.clone());
                    json!({
                        "addr": s,
                        "master": i == 0,
                        "health": h,
                    })
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    let migrations: Vec<Value> = t
        .slots
        .iter()
        .filter_map(|s| {
            s.action.as_ref().map(|a| {
                json!({"slot": s.id, "from": s.group, "to": a.target,
                       "state": format!("{:?}", a.state).to_lowercase()})
            })
        })
        .collect();
    // Each proxy's sessions and requests per second, from its admin API, asked now.
    let loads = futures::future::join_all(
        proxies
            .iter()
            .map(|p| crate::health::proxy_load(&p.token, &p.admin_addr, Duration::from_secs(1))),
    )
    .await;
    let driver = d.driver.lock().expect("driver lock").clone();
    let checked = d
        .health_at
        .lock()
        .expect("health lock")
        .map(|i| i.elapsed().as_millis() as u64);
    Ok(Json(json!({
        "product": d.product,
        "epoch": t.epoch,
        "groups": groups,
        "offline_slots": by_group.get(&0).map_or(0, Vec::len),
        "proxies": proxies,
        "proxy_load": loads,
        "migrations": migrations,
        "driver": driver,
        "health_checked_ms_ago": checked,
        "auto_failover_secs": d.auto_failover.map(|a| a.as_secs()),
        "failovers": d.failovers.lock().expect("failovers lock").clone(),
    })))
}

async fn topology(State(d): State<Arc<Dash>>) -> Reply {
    let t = slot::load(&d.c, &d.product).await.map_err(bad)?;
    Ok(Json(serde_json::to_value(&t).map_err(|e| bad(e.into()))?))
}

async fn proxies(State(d): State<Arc<Dash>>) -> Reply {
    let p = slot::proxies(&d.c, &d.product).await.map_err(bad)?;
    Ok(Json(serde_json::to_value(&p).map_err(|e| bad(e.into()))?))
}

async fn slots(State(d): State<Arc<Dash>>, RawQuery(q): RawQuery) -> Reply {
    let mut out = String::new();
    let range = query(&q, "range");
    slot::run(
        slot::SlotCmd::Status { range },
        d.c.clone(),
        &d.product,
        true,
        &mut out,
    )
    .await
    .map_err(bad)?;
    Ok(Json(
        serde_json::from_str(out.trim()).unwrap_or(Value::Null),
    ))
}

/// Runs a group command for an authorized caller; its output is the reply.
async fn group_cmd(d: &Dash, h: &HeaderMap, cmd: crate::admin::GroupCmd) -> Reply {
    d.authorize(h)?;
    let mut out = String::new();
    crate::admin::group(cmd, d.c.clone(), &d.product, true, &mut out)
        .await
        .map_err(bad)?;
    d.done(out)
}

/// Runs a server command for an authorized caller; its output is the reply.
async fn server_cmd(d: &Dash, h: &HeaderMap, cmd: crate::admin::ServerCmd) -> Reply {
    d.authorize(h)?;
    let mut out = String::new();
    crate::admin::server(cmd, d.c.clone(), &d.product, &mut out)
        .await
        .map_err(bad)?;
    d.done(out)
}

/// Runs a slot command for an authorized caller; its output is the reply.
async fn slot_cmd(d: &Dash, h: &HeaderMap, cmd: slot::SlotCmd) -> Reply {
    d.authorize(h)?;
    let mut out = String::new();
    slot::run(cmd, d.c.clone(), &d.product, true, &mut out)
        .await
        .map_err(bad)?;
    d.done(out)
}

async fn group_add(State(d): State<Arc<Dash>>, h: HeaderMap, Path(id): Path<GroupId>) -> Reply {
    group_cmd(&d, &h, crate::admin::GroupCmd::Add { id }).await
}

async fn group_remove(State(d): State<Arc<Dash>>, h: HeaderMap, Path(id): Path<GroupId>) -> Reply {
    group_cmd(&d, &h, crate::admin::GroupCmd::Remove { id }).await
}

async fn group_promote(
    State(d): State<Arc<Dash>>,
    h: HeaderMap,
    Path((id, addr)): Path<(GroupId, String)>,
) -> Reply {
    let auth = d.opts.auth.clone();
    group_cmd(&d, &h, crate::admin::GroupCmd::Promote { id, addr, auth }).await
}

async fn group_replica_read(
    State(d): State<Arc<Dash>>,
    h: HeaderMap,
    Path((id, state)): Path<(GroupId, String)>,
) -> Reply {
    group_cmd(&d, &h, crate::admin::GroupCmd::ReplicaRead { id, state }).await
}

async fn server_add(
    State(d): State<Arc<Dash>>,
    h: HeaderMap,
    Path((group, addr)): Path<(GroupId, String)>,
) -> Reply {
    let auth = d.opts.auth.clone();
    server_cmd(&d, &h, crate::admin::ServerCmd::Add { group, addr, auth }).await
}

async fn server_remove(
    State(d): State<Arc<Dash>>,
    h: HeaderMap,
    Path((group, addr)): Path<(GroupId, String)>,
) -> Reply {
    server_cmd(&d, &h, crate::admin::ServerCmd::Remove { group, addr }).await
}

async fn proxy_remove(
    State(d): State<Arc<Dash>>,
    h: HeaderMap,
    Path(token): Path<String>,
) -> Reply {
    d.authorize(&h)?;
    let mut out = String::new();
    let cmd = crate::admin::ProxyCmd::Remove { token };
    crate::admin::proxy(cmd, d.c.clone(), &d.product, true, &mut out)
        .await
        .map_err(bad)?;
    d.done(out)
}

async fn slot_init(State(d): State<Arc<Dash>>, h: HeaderMap) -> Reply {
    slot_cmd(&d, &h, slot::SlotCmd::Init).await
}

async fn slot_assign(
    State(d): State<Arc<Dash>>,
    h: HeaderMap,
    Path((range, group)): Path<(String, GroupId)>,
) -> Reply {
    slot_cmd(&d, &h, slot::SlotCmd::Assign { range, group }).await
}

async fn slot_migrate(
    State(d): State<Arc<Dash>>,
    h: HeaderMap,
    Path((range, group)): Path<(String, GroupId)>,
    RawQuery(q): RawQuery,
) -> Reply {
    d.authorize(&h)?;
    let slots = slot::parse_range(&range).map_err(bad)?;
    let mut o = d.detached();
    if let Some(m) = query(&q, "method") {
        o.method = slot::parse_method(&m).map_err(bad)?;
    }
    let moves: Vec<(u16, GroupId)> = slots.iter().map(|&s| (s, group)).collect();
    let mut out = String::new();
    slot::migrate(&d.c, &d.product, &moves, &o, &mut out)
        .await
        .map_err(bad)?;
    d.done(out)
}

async fn rebalance(State(d): State<Arc<Dash>>, h: HeaderMap, RawQuery(q): RawQuery) -> Reply {
    d.authorize(&h)?;
    let dry_run = query(&q, "dry_run").is_some_and(|v| v != "0" && v != "false");
    let mut out = String::new();
    crate::rebalance(d.c.clone(), &d.product, dry_run, &d.detached(), &mut out)
        .await
        .map_err(bad)?;
    d.done(out)
}
