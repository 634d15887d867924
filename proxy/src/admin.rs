//! The proxy's admin HTTP server (its own thread, tokio + axum): `/health`, `/stats` (JSON),
//! `/slots` (the routing table, JSON) and `/metrics` (Prometheus text). Read-only: no
//! endpoint changes anything, so none needs the admin token yet. A port already in use is
//! logged and the proxy runs without it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
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
        "commands": commands,
        "commands_per_shard": s.commands.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>(),
        "backends": table.backends,
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
    out
}
