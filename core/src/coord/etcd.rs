//! The etcd v3 coordinator (`etcd://host:port[,host:port]`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use tokio::sync::mpsc;

use super::{CoordError, Coordinator, Ephemeral, EphemeralCmd, Result, WatchEvent, WatchStream};

/// The etcd-backed coordinator.
#[derive(Clone)]
pub struct EtcdCoordinator {
    client: Client,
}

impl std::fmt::Debug for EtcdCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdCoordinator")
    }
}

fn lease_secs(ttl: Duration) -> i64 {
    (ttl.as_millis().div_ceil(1000) as i64).max(1)
}

fn key_string(k: &[u8]) -> String {
    String::from_utf8_lossy(k).into_owned()
}

impl EtcdCoordinator {
    /// Connects to the endpoints (`http://host:port`).
    pub async fn connect(endpoints: Vec<String>) -> Result<Self> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(opts)).await?;
        Ok(EtcdCoordinator { client })
    }

    async fn grant(&self, ttl: Duration) -> Result<i64> {
        Ok(self
            .client
            .clone()
            .lease_grant(lease_secs(ttl), None)
            .await?
            .id())
    }

    fn spawn_keeper(&self, key: String, ttl: Duration, lease: i64) -> Ephemeral {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let this = self.clone();
        let k = key.clone();
        let eph = Ephemeral::new(key, tx);
        let held = eph.held_flag();
        tokio::spawn(async move {
            let mut client = this.client.clone();
            let period = (ttl / 3).max(Duration::from_millis(200));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut keeper = None;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if !held.load(Ordering::Relaxed) {
                            continue;
                        }
                        if keeper.is_none() {
                            keeper = client.lease_keep_alive(lease).await.ok();
                        }
                        let alive = match keeper.as_mut() {
                            Some((k, s)) => match k.keep_alive().await {
                                Ok(()) => match s.message().await {
                                    Ok(Some(r)) => Some(r.ttl() > 0),
                                    _ => None,
                                },
                                Err(_) => None,
                            },
                            None => None,
                        };
                        match alive {
                            // Unreachable etcd: try again next tick; the lease may survive.
                            None => keeper = None,
                            Some(false) => held.store(false, Ordering::Relaxed),
                            Some(true) => {
                                // The lease lives; the key must still be ours (it may have been
                                // removed by force).
                                match client.get(k.clone(), None).await {
                                    Ok(r) => {
                                        let ours = r.kvs().first().is_some_and(|kv| kv.lease() == lease);
                                        held.store(ours, Ordering::Relaxed);
                                    }
                                    Err(e) => tracing::debug!(key = %k, error = %e, "ephemeral check failed"),
                                }
                            }
                        }
                    }
                    cmd = rx.recv() => match cmd {
                        Some(EphemeralCmd::Update(v, done)) => {
                            let r = update_if_ours(&mut client, &k, v, lease).await;
                            let _ = done.send(r);
                        }
                        Some(EphemeralCmd::Close(done)) => {
                            let _ = client.lease_revoke(lease).await;
                            let _ = done.send(());
                            return;
                        }
                        None => {
                            let _ = client.lease_revoke(lease).await;
                            return;
                        }
                    }
                }
            }
        });
        eph
    }
}

/// Puts `value` under our lease if the key is still ours; never overwrites another owner.
async fn update_if_ours(client: &mut Client, key: &str, value: Vec<u8>, lease: i64) -> Result<()> {
    let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
    let cmp = Compare::lease(key, CompareOp::Equal, lease);
    if client
        .txn(Txn::new().when([cmp]).and_then([put]))
        .await?
        .succeeded()
    {
        Ok(())
    } else {
        Err(CoordError::Lost(key.to_string()))
    }
}

#[async_trait]
impl Coordinator for EtcdCoordinator {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.client.clone().get(key, None).await?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.client.clone().put(key, value, None).await?;
        Ok(())
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool> {
        let cmp = match expected {
            Some(v) => Compare::value(key, CompareOp::Equal, v),
            None => Compare::create_revision(key, CompareOp::Equal, 0),
        };
        let op = match new {
            Some(v) => TxnOp::put(key, v, None),
            None => TxnOp::delete(key, None),
        };
        let r = self
            .client
            .clone()
            .txn(Txn::new().when([cmp]).and_then([op]))
            .await?;
        Ok(r.succeeded())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.client.clone().delete(key, None).await?.deleted() > 0)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let r = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        let mut v: Vec<_> = r
            .kvs()
            .iter()
            .map(|kv| (key_string(kv.key()), kv.value().to_vec()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    async fn watch(&self, prefix: &str) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(1024);
        let mut client = self.client.clone();
        let prefix = prefix.to_string();
        // The first snapshot is taken before returning, so callers see errors at once.
        let first = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut rev = first.header().map(|h| h.revision()).unwrap_or(0);
        let kvs = first
            .kvs()
            .iter()
            .map(|kv| (key_string(kv.key()), kv.value().to_vec()))
            .collect();
        tx.send(WatchEvent::Reset(kvs))
            .await
            .map_err(|_| CoordError::Closed)?;
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut need_reset = false;
            loop {
                if tx.is_closed() {
                    return;
                }
                if need_reset {
                    match client
                        .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                        .await
                    {
                        Ok(r) => {
                            rev = r.header().map(|h| h.revision()).unwrap_or(0);
                            let kvs = r
                                .kvs()
                                .iter()
                                .map(|kv| (key_string(kv.key()), kv.value().to_vec()))
                                .collect();
                            if tx.send(WatchEvent::Reset(kvs)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "etcd watch resync failed; retrying");
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = tx.closed() => return,
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            continue;
                        }
                    }
                }
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(rev + 1);
                let mut stream = match client.watch(prefix.clone(), Some(opts)).await {
                    Ok(s) => s,
                    Err(_) => {
                        need_reset = true;
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = tx.closed() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                };
                backoff = Duration::from_millis(100);
                loop {
                    let msg = tokio::select! {
                        m = stream.message() => m,
                        _ = tx.closed() => return,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.canceled() || resp.compact_revision() > 0 {
                                need_reset = true;
                                break;
                            }
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                rev = rev.max(kv.mod_revision());
                                let key = key_string(kv.key());
                                let e = match ev.event_type() {
                                    EventType::Put => WatchEvent::Put {
                                        key,
                                        value: kv.value().to_vec(),
                                    },
                                    EventType::Delete => WatchEvent::Delete { key },
                                };
                                if tx.send(e).await.is_err() {
                                    return;
                                }
                            }
                        }
                        _ => {
                            // Stream ended or failed: resync, since changes may be missed.
                            need_reset = true;
                            break;
                        }
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Ephemeral> {
        let lease = self.grant(ttl).await?;
        self.client
            .clone()
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await?;
        Ok(self.spawn_keeper(key.to_string(), ttl, lease))
    }

    async fn create_ephemeral(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> std::result::Result<Ephemeral, Option<Vec<u8>>> {
        let lease = self.grant(ttl).await.map_err(|_| None)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let mut client = self.client.clone();
        let r = client.txn(txn).await.map_err(|_| None)?;
        if r.succeeded() {
            return Ok(self.spawn_keeper(key.to_string(), ttl, lease));
        }
        let _ = client.lease_revoke(lease).await;
        let cur = r.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        Err(Some(cur.unwrap_or_default()))
    }
}
