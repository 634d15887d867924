//! The control thread (tokio, where the coordinator clients live): loads the topology,
//! watches it, publishes each new slot table to the shards, registers the proxy as an
//! ephemeral entry and writes back the epoch every shard has applied. If the coordinator
//! becomes unreachable the proxy keeps serving with the table it has.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rcodis_core::coord::{self, layout, Coordinator, WatchEvent};
use rcodis_core::topology::{ProxyInfo, Topology};

use crate::table::SlotTable;
use crate::Shared;

/// Starts the control thread; returns once the first table is published.
pub fn start(shared: Arc<Shared>) -> anyhow::Result<()> {
    if let Some(path) = shared.config.slots_file.clone() {
        let data = std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let t = Topology::from_json(&data)
            .map_err(|e| anyhow::anyhow!("bad topology in {}: {e}", path.display()))?;
        shared.publish(SlotTable::from_topology(&t));
        if shared.config.coordinator.is_empty() {
            return Ok(());
        }
    }
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    std::thread::Builder::new()
        .name("rcodis-proxy-control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::anyhow!("control runtime: {e}")));
                    return;
                }
            };
            rt.block_on(run(shared, ready_tx));
        })?;
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow::anyhow!("coordinator did not answer within 30 s"))?
}

fn info(shared: &Shared) -> ProxyInfo {
    ProxyInfo {
        token: shared.token.clone(),
        proxy_addr: format!(
            "{}:{}",
            shared
                .config
                .listen
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or("127.0.0.1"),
            shared.port.load(Ordering::Relaxed)
        ),
        admin_addr: shared.admin_addr.lock().expect("admin lock").clone(),
        applied_epoch: shared.applied_epoch(),
        pid: std::process::id(),
        start_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    }
}

async fn run(shared: Arc<Shared>, ready: std::sync::mpsc::Sender<anyhow::Result<()>>) {
    let url = shared.config.coordinator.clone();
    let product = shared.config.product.clone();
    let key = layout::topology_key(&product);
    let c: Arc<dyn Coordinator> = match coord::connect(&url).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("coordinator {url}: {e}")));
            return;
        }
    };
    let mut watch = match c.watch(&key).await {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("coordinator {url}: {e}")));
            return;
        }
    };
    let apply = |data: &[u8]| match Topology::from_json(data) {
        Ok(t) => {
            tracing::info!(epoch = t.epoch, "new slot table");
            shared.publish(SlotTable::from_topology(&t));
        }
        Err(e) => tracing::warn!(error = %e, "ignoring an invalid topology"),
    };
    // The first event is the current state.
    if let Some(WatchEvent::Reset(kvs)) = watch.recv().await {
        if let Some((_, v)) = kvs.iter().find(|(k, _)| *k == key) {
            apply(v);
        } else {
            tracing::warn!(key = %key, "no topology in the coordinator yet: every slot is offline");
        }
    }
    shared.coordinator_ok.store(true, Ordering::Relaxed);
    let pkey = layout::proxy_key(&product, &shared.token);
    // Registers the proxy (an entry that lives as long as this process keeps it alive).
    let register = async || {
        c.put_ephemeral(
            &pkey,
            &serde_json::to_vec(&info(&shared)).unwrap_or_default(),
            Duration::from_secs(5),
        )
        .await
        .ok()
    };
    let mut reg = register().await;
    let _ = ready.send(Ok(()));
    let mut reported = u64::MAX;
    // Acknowledged epochs are reported as soon as a shard signals one; the tick only backs
    // that up and notices a lost registration.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let report = tokio::select! {
            ev = watch.recv() => {
                match ev {
                    Some(WatchEvent::Put { key: k, value }) if k == key => apply(&value),
                    Some(WatchEvent::Reset(kvs)) => {
                        if let Some((_, v)) = kvs.iter().find(|(k, _)| *k == key) {
                            apply(v);
                        }
                    }
                    Some(_) => {}
                    None => return,
                }
                false
            }
            _ = shared.acked.notified() => true,
            _ = tick.tick() => true,
        };
        if !report {
            continue;
        }
        let applied = shared.applied_epoch();
        let lost = reg.as_ref().is_none_or(|r| !r.is_held());
        if lost {
            // Register again (after an expiry or a removal while we were away).
            reg = register().await;
            shared
                .coordinator_ok
                .store(reg.is_some(), Ordering::Relaxed);
            reported = applied;
        } else if applied != reported {
            if let Some(r) = &reg {
                let ok = r
                    .update(&serde_json::to_vec(&info(&shared)).unwrap_or_default())
                    .await
                    .is_ok();
                shared.coordinator_ok.store(ok, Ordering::Relaxed);
                if ok {
                    reported = applied;
                }
            }
        }
    }
}
