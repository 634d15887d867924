//! The proxy's admin HTTP server (its own thread, tokio + axum): `/health`, `/stats` (JSON),
//! `/slots` (the routing table, JSON) and `/metrics` (Prometheus text: calls, errors and a
//! latency histogram per command, sessions, each backend's state and queue depth, epochs).
//! Mutations need the admin token (`Authorization: Bearer TOKEN`): `POST /stats/reset`
//! zeroes the per-command statistics, `POST /shutdown` stops the proxy as SIGTERM does.
//! A port already in use is logged and the proxy runs without it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::Shared;

/// Starts the admin server if configured; records the bound address in `shared`.
pub fn start(shared: Arc<Shared>) {
    let addr = shared.config.admin.clone();
    if addr.is_empty() || addr == "off" {
        return;
    }
    let listener = match std::net::TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(admin = %addr, error = %e, "admin HTTP not started");
            return;
        }
    };
    if let Ok(a) = listener.local_addr() {
        *shared.admin_addr.lock().expect("admin lock") = a.to_string();
    }
    let _ = listener.set_nonblocking(true);
    let spawned = std::thread::Builder::new()
        .name("rcodis-proxy-admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "admin HTTP runtime");
                    return;
                }
            };
            rt.block_on(async move {
                let Ok(l) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = Router::new()
                    .route("/health", get(|| async { "ok\n" }))
                    .route("/stats", get(stats))
                    .route("/slots", get(slots))
                    .route("/metrics", get(metrics))
                    .route("/stats/reset", post(reset))
                    .route("/shutdown", post(shutdown))
                    .with_state(shared);
                if let Err(e) = axum::serve(l, app).await {
                    tracing::warn!(error = %e, "admin HTTP stopped");
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "admin HTTP thread not started");
    }
}

type Refusal = (StatusCode, Json<serde_json::Value>);

/// Whether the request carries the admin token.
fn authorized(s: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-admin-token").and_then(|v| v.to_str().ok()));
    match given {
        Some(t) if t == s.admin_token => Ok(()),
        Some(_) => Err((
            StatusCode::FORBIDDEN,
            Json(json!({"error": "wrong admin token"})),
        )),
        None => Err((
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": "this endpoint needs the admin token (Authorization: Bearer TOKEN)"}),
            ),
        )),
    }
}

async fn reset(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Refusal> {
    authorized(&s, &headers)?;
    s.reset_stats();
    tracing::info!("per-command statistics reset through the admin API");
    Ok(Json(json!({"ok": true})))
}

async fn shutdown(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Refusal> {
    authorized(&s, &headers)?;
    tracing::info!("shutdown requested through the admin API");
    // The main thread waits for SIGTERM and stops everything in order; the grace period
    // lets this reply reach the caller first.
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        unsafe {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    });
    Ok(Json(json!({"ok": true})))
}

/// Each backend address: (connected on every shard, queue depth, failures).
fn backend_states(s: &Shared) -> std::collections::BTreeMap<String, (bool, u64, u64)> {
    let mut m = std::collections::BTreeMap::new();
    for g in s.backend_gauges.lock().expect("gauges lock").iter() {
        let e = m.entry(g.addr.clone()).or_insert((true, 0, 0));
        let depth = g.depth.load(Ordering::Relaxed);
        // A connection nobody used yet is not down.
        let up = g.connected.load(Ordering::Relaxed) || g.failures.load(Ordering::Relaxed) == 0;
        e.0 &= up;
        e.1 += depth;
        e.2 += g.failures.load(Ordering::Relaxed);
    }
    m
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let table = s.table.lock().expect("table lock").clone();
    let commands: u64 = s.commands.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    Json(json!({
        "token": s.token,
        "product": s.config.product,
        "port": s.port.load(Ordering::Relaxed),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "epoch": table.epoch,
        "applied_epoch": s.applied_epoch(),
        "coordinator_ok": s.coordinator_ok.load(Ordering::Relaxed),
        "sessions": s.clients.load(Ordering::Relaxed),
        "total_connections": s.total_connections.load(Ordering::Relaxed),
        "rejected_connections": s.rejected.load(Ordering::Relaxed),
        "blocked_sessions": s.blocked.load(Ordering::Relaxed),
        "commands": commands,
        "ops_per_sec": s.ops.lock().expect("ops lock").per_sec(),
        "commands_per_shard": s.commands.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "backends": table.backends,
        "backend_state": backend_states(&s).into_iter().map(|(a, (up, depth, failures))| {
            (a, json!({"up": up, "queue_depth": depth, "failures": failures}))
        }).collect::<serde_json::Map<_, _>>(),
        "command_stats": s.command_stats().into_iter().map(|(name, c)| {
            (name.to_string(), json!({
                "calls": c.calls,
                "errors": c.errors,
                "usec": c.usec,
                "usec_per_call": if c.calls > 0 { c.usec as f64 / c.calls as f64 } else { 0.0 },
            }))
        }).collect::<serde_json::Map<_, _>>(),
        "migrating_slots": table.slots.iter().filter(|r| r.migrate_from.is_some()).count(),
        "locked_slots": table.slots.iter().filter(|r| r.locked).count(),
    }))
}

async fn slots(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let table = s.table.lock().expect("table lock").clone();
    let name = |b: Option<u16>| b.map(|b| table.backends[b as usize].clone());
    Json(json!({
        "epoch": table.epoch,
        "slots": table.slots.iter().enumerate().map(|(i, r)| json!({
            "slot": i,
            "backend": name(r.backend),
            "migrate_from": name(r.migrate_from),
            "locked": r.locked,
        })).collect::<Vec<_>>(),
    }))
}

async fn metrics(State(s): State<Arc<Shared>>) -> String {
    let table = s.table.lock().expect("table lock").clone();
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: String| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{v}"));
    };
    let commands: u64 = s.commands.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    put(
        "rcodis_proxy_commands_total",
        "counter",
        "Requests handled.",
        format!("rcodis_proxy_commands_total {commands}\n"),
    );
    put(
        "rcodis_proxy_sessions",
        "gauge",
        "Client connections open.",
        format!(
            "rcodis_proxy_sessions {}\n",
            s.clients.load(Ordering::Relaxed)
        ),
    );
    put(
        "rcodis_proxy_connections_total",
        "counter",
        "Client connections accepted.",
        format!(
            "rcodis_proxy_connections_total {}\n",
            s.total_connections.load(Ordering::Relaxed)
        ),
    );
    put(
        "rcodis_proxy_rejected_connections_total",
        "counter",
        "Client connections refused at max_clients.",
        format!(
            "rcodis_proxy_rejected_connections_total {}\n",
            s.rejected.load(Ordering::Relaxed)
        ),
    );
    put(
        "rcodis_proxy_blocked_sessions",
        "gauge",
        "Sessions waiting on a blocking command.",
        format!(
            "rcodis_proxy_blocked_sessions {}\n",
            s.blocked.load(Ordering::Relaxed)
        ),
    );
    put(
        "rcodis_proxy_epoch",
        "gauge",
        "Newest slot-table epoch received.",
        format!("rcodis_proxy_epoch {}\n", table.epoch),
    );
    put(
        "rcodis_proxy_applied_epoch",
        "gauge",
        "Slot-table epoch every shard has applied.",
        format!("rcodis_proxy_applied_epoch {}\n", s.applied_epoch()),
    );
    put(
        "rcodis_proxy_coordinator_up",
        "gauge",
        "Whether the coordinator answered.",
        format!(
            "rcodis_proxy_coordinator_up {}\n",
            s.coordinator_ok.load(Ordering::Relaxed) as u8
        ),
    );
    let mut per_backend = String::new();
    for (i, b) in table.backends.iter().enumerate() {
        let n = table
            .slots
            .iter()
            .filter(|r| r.backend == Some(i as u16))
            .count();
        per_backend.push_str(&format!(
            "rcodis_proxy_backend_slots{{backend=\"{b}\"}} {n}\n"
        ));
    }
    put(
        "rcodis_proxy_backend_slots",
        "gauge",
        "Slots routed to each backend.",
        per_backend,
    );
    let states = backend_states(&s);
    let mut up = String::new();
    let mut depth = String::new();
    let mut failures = String::new();
    for (a, (u, d, f)) in &states {
        up.push_str(&format!(
            "rcodis_proxy_backend_up{{backend=\"{a}\"}} {}\n",
            *u as u8
        ));
        depth.push_str(&format!(
            "rcodis_proxy_backend_queue_depth{{backend=\"{a}\"}} {d}\n"
        ));
        failures.push_str(&format!(
            "rcodis_proxy_backend_failures_total{{backend=\"{a}\"}} {f}\n"
        ));
    }
    put(
        "rcodis_proxy_backend_up",
        "gauge",
        "Whether every shard's connection to the backend works.",
        up,
    );
    put(
        "rcodis_proxy_backend_queue_depth",
        "gauge",
        "Requests queued for or in flight to the backend (all shards).",
        depth,
    );
    put(
        "rcodis_proxy_backend_failures_total",
        "counter",
        "Backend connection failures (connect or I/O).",
        failures,
    );
    let cmds = s.command_stats();
    let mut calls = String::new();
    let mut errors = String::new();
    let mut hist = String::new();
    for (name, c) in &cmds {
        calls.push_str(&format!(
            "rcodis_proxy_command_calls_total{{command=\"{name}\"}} {}\n",
            c.calls
        ));
        errors.push_str(&format!(
            "rcodis_proxy_command_errors_total{{command=\"{name}\"}} {}\n",
            c.errors
        ));
        let mut cum = 0;
        for (i, n) in c.buckets.iter().enumerate() {
            cum += n;
            let le = match crate::stats::BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            hist.push_str(&format!(
                "rcodis_proxy_command_duration_seconds_bucket{{command=\"{name}\",le=\"{le}\"}} {cum}\n"
            ));
        }
        hist.push_str(&format!(
            "rcodis_proxy_command_duration_seconds_sum{{command=\"{name}\"}} {}\n",
            c.usec as f64 / 1e6
        ));
        hist.push_str(&format!(
            "rcodis_proxy_command_duration_seconds_count{{command=\"{name}\"}} {}\n",
            c.calls
        ));
    }
    put(
        "rcodis_proxy_command_calls_total",
        "counter",
        "Requests per command.",
        calls,
    );
    put(
        "rcodis_proxy_command_errors_total",
        "counter",
        "Requests per command answered with an error.",
        errors,
    );
    put(
        "rcodis_proxy_command_duration_seconds",
        "histogram",
        "Time from reading a request to having its reply, per command.",
        hist,
    );
    out
}
