//! One conformance suite for every coordinator implementation: the embedded file store, and
//! etcd (a real `etcd` started on a free loopback port and stopped by PID).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcodis_core::coord::{self, CoordError, Coordinator, WatchEvent, WatchStream};

const TTL: Duration = Duration::from_secs(2);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Next watch event within a deadline, skipping `Reset`s when `skip_reset`.
async fn next_event(w: &mut WatchStream, skip_reset: bool) -> WatchEvent {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, w.recv())
            .await
            .expect("watch event in time")
            .expect("watch stream open");
        if skip_reset && matches!(ev, WatchEvent::Reset(_)) {
            continue;
        }
        return ev;
    }
}

/// Creates an ephemeral entry on a runtime that is then dropped without cleanup: the owner
/// "crashes", so only expiry can remove the entry.
fn ephemeral_then_crash(url: String, key: &'static str, value: &'static [u8]) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = coord::connect(&url).await.unwrap();
            let e = c.put_ephemeral(key, value, TTL).await.unwrap();
            std::mem::forget(e);
            std::mem::forget(c);
        });
        drop(rt);
    })
    .join()
    .unwrap();
}

async fn conformance(url: &str) {
    let c: Arc<dyn Coordinator> = coord::connect(url).await.expect("connect");

    // get / put / delete
    assert_eq!(c.get("/t/a").await.unwrap(), None);
    c.put("/t/a", b"1").await.unwrap();
    assert_eq!(c.get("/t/a").await.unwrap().as_deref(), Some(&b"1"[..]));
    c.put("/t/a", b"2").await.unwrap();
    assert_eq!(c.get("/t/a").await.unwrap().as_deref(), Some(&b"2"[..]));
    assert!(c.delete("/t/a").await.unwrap());
    assert!(!c.delete("/t/a").await.unwrap());
    assert_eq!(c.get("/t/a").await.unwrap(), None);

    // compare-and-swap
    assert!(c
        .compare_and_swap("/t/cas", None, Some(b"v1"))
        .await
        .unwrap());
    assert!(!c
        .compare_and_swap("/t/cas", None, Some(b"v2"))
        .await
        .unwrap());
    assert!(!c
        .compare_and_swap("/t/cas", Some(b"zz"), Some(b"v2"))
        .await
        .unwrap());
    assert!(c
        .compare_and_swap("/t/cas", Some(b"v1"), Some(b"v2"))
        .await
        .unwrap());
    assert_eq!(c.get("/t/cas").await.unwrap().as_deref(), Some(&b"v2"[..]));
    assert!(c
        .compare_and_swap("/t/cas", Some(b"v2"), None)
        .await
        .unwrap());
    assert_eq!(c.get("/t/cas").await.unwrap(), None);

    // list by prefix, sorted, with odd characters in keys
    c.put("/t/l/b", b"2").await.unwrap();
    c.put("/t/l/a", b"1").await.unwrap();
    c.put("/t/l/c d%", b"3").await.unwrap();
    c.put("/t/lx", b"no").await.unwrap();
    let l = c.list("/t/l/").await.unwrap();
    let keys: Vec<&str> = l.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/t/l/a", "/t/l/b", "/t/l/c d%"]);
    assert_eq!(l[2].1, b"3");

    // watch: Reset first, then puts and deletes
    let mut w = c.watch("/t/l/").await.unwrap();
    match next_event(&mut w, false).await {
        WatchEvent::Reset(kv) => assert_eq!(kv.len(), 3),
        e => panic!("expected Reset, got {e:?}"),
    }
    c.put("/t/l/d", b"4").await.unwrap();
    assert_eq!(
        next_event(&mut w, true).await,
        WatchEvent::Put {
            key: "/t/l/d".into(),
            value: b"4".to_vec()
        }
    );
    c.delete("/t/l/a").await.unwrap();
    assert_eq!(
        next_event(&mut w, true).await,
        WatchEvent::Delete {
            key: "/t/l/a".into()
        }
    );
    c.put("/t/other", b"x").await.unwrap();
    c.put("/t/l/b", b"22").await.unwrap();
    assert_eq!(
        next_event(&mut w, true).await,
        WatchEvent::Put {
            key: "/t/l/b".into(),
            value: b"22".to_vec()
        }
    );

    // ephemeral: update, close, drop
    let e = c.put_ephemeral("/t/e/1", b"epoch=1", TTL).await.unwrap();
    assert_eq!(
        c.get("/t/e/1").await.unwrap().as_deref(),
        Some(&b"epoch=1"[..])
    );
    e.update(b"epoch=2").await.unwrap();
    assert_eq!(
        c.get("/t/e/1").await.unwrap().as_deref(),
        Some(&b"epoch=2"[..])
    );
    // It outlives its TTL while the owner heartbeats.
    tokio::time::sleep(TTL + Duration::from_millis(1500)).await;
    assert_eq!(
        c.get("/t/e/1").await.unwrap().as_deref(),
        Some(&b"epoch=2"[..])
    );
    e.close().await;
    assert_eq!(c.get("/t/e/1").await.unwrap(), None);
    let e = c.put_ephemeral("/t/e/2", b"x", TTL).await.unwrap();
    drop(e);
    wait_until(
        "dropped ephemeral to vanish",
        Duration::from_secs(10),
        || async { c.get("/t/e/2").await.unwrap().is_none() },
    )
    .await;

    // ephemeral of a crashed owner expires, and a watch reports it
    let mut we = c.watch("/t/e/").await.unwrap();
    next_event(&mut we, false).await;
    ephemeral_then_crash(url.to_string(), "/t/e/crash", b"gone soon");
    assert_eq!(
        c.get("/t/e/crash").await.unwrap().as_deref(),
        Some(&b"gone soon"[..])
    );
    assert!(matches!(
        next_event(&mut we, true).await,
        WatchEvent::Put { .. }
    ));
    wait_until(
        "crashed owner's entry to expire",
        Duration::from_secs(15),
        || async { c.get("/t/e/crash").await.unwrap().is_none() },
    )
    .await;
    assert_eq!(
        next_event(&mut we, true).await,
        WatchEvent::Delete {
            key: "/t/e/crash".into()
        }
    );

    // lock: one holder at a time, release, force-unlock, expiry of a crashed holder
    let g = c.lock("/t/lock", "ctl pid 1", TTL).await.unwrap();
    match c.lock("/t/lock", "ctl pid 2", TTL).await {
        Err(CoordError::Locked { holder, .. }) => assert_eq!(holder, "ctl pid 1"),
        other => panic!("expected Locked, got {other:?}"),
    }
    g.release().await;
    let g2 = c.lock("/t/lock", "ctl pid 2", TTL).await.unwrap();
    assert!(c.force_unlock("/t/lock").await.unwrap());
    let g3 = c.lock("/t/lock", "ctl pid 3", TTL).await.unwrap();
    wait_until(
        "the old holder to notice",
        Duration::from_secs(10),
        || async { !g2.is_held() },
    )
    .await;
    drop(g2); // the old holder's guard must not remove the new holder's lock
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.lock("/t/lock", "ctl pid 4", TTL).await.is_err());
    assert!(g3.is_held());
    g3.release().await;
    ephemeral_then_crash(url.to_string(), "/t/lock2", b"dead holder");
    assert!(c.lock("/t/lock2", "ctl", TTL).await.is_err());
    wait_until(
        "dead holder's lock to expire",
        Duration::from_secs(15),
        || async { c.lock("/t/lock2", "ctl", TTL).await.is_ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_coordinator_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().display());
    conformance(&url).await;
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in ["zk://x", "file://relative", "etcd://", ""] {
        assert!(
            matches!(coord::connect(url).await, Err(CoordError::InvalidUrl(_))),
            "{url} accepted"
        );
    }
}

/// A real etcd on loopback, stopped by PID on drop.
struct Etcd {
    child: Child,
    port: u16,
    peer: u16,
    dir: std::path::PathBuf,
}

impl Etcd {
    fn start(dir: &std::path::Path, port: u16, peer: u16) -> Etcd {
        let bin = std::env::var("RCODIS_ETCD").unwrap_or_else(|_| "etcd".into());
        let child = Command::new(&bin)
            .arg("--data-dir")
            .arg(dir)
            .args(["--name", "rcodis-test"])
            .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!(
                "--initial-cluster=rcodis-test=http://127.0.0.1:{peer}"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start '{bin}' ({e}): install Debian's etcd-server (the README's test \
                     command does) or set RCODIS_ETCD"
                )
            });
        Etcd {
            child,
            port,
            peer,
            dir: dir.to_path_buf(),
        }
    }

    async fn ready(&self) {
        let url = format!("etcd://127.0.0.1:{}", self.port);
        wait_until("etcd to serve", Duration::from_secs(30), || async {
            match coord::connect(&url).await {
                Ok(c) => c.get("/ready-probe").await.is_ok(),
                Err(_) => false,
            }
        })
        .await;
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_coordinator_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path(), free_port(), free_port());
    etcd.ready().await;
    conformance(&format!("etcd://127.0.0.1:{}", etcd.port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = Etcd::start(dir.path(), free_port(), free_port());
    etcd.ready().await;
    let url = format!("etcd://127.0.0.1:{}", etcd.port);
    let c = coord::connect(&url).await.unwrap();
    c.put("/w/a", b"1").await.unwrap();
    let mut w = c.watch("/w/").await.unwrap();
    assert!(matches!(
        next_event(&mut w, false).await,
        WatchEvent::Reset(_)
    ));
    etcd.stop();
    let (port, peer, data) = (etcd.port, etcd.peer, etcd.dir.clone());
    let etcd2 = Etcd::start(&data, port, peer);
    etcd2.ready().await;
    c.put("/w/b", b"2").await.unwrap();
    // After the restart the watch delivers the new key, as an event or in a fresh Reset.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "watch did not recover after etcd restart"
        );
        match next_event(&mut w, false).await {
            WatchEvent::Put { key, .. } if key == "/w/b" => break,
            WatchEvent::Reset(kv) if kv.iter().any(|(k, _)| k == "/w/b") => break,
            _ => {}
        }
    }
}

/// A holder whose lock was force-removed and taken by another must neither get it back by
/// heartbeating nor remove the new holder's entry when it stops.
async fn stale_holder_cannot_steal(url: &str) {
    let c = coord::connect(url).await.unwrap();
    let old = c.lock("/s/lock", "old", TTL).await.unwrap();
    assert!(c.force_unlock("/s/lock").await.unwrap());
    let new = c.lock("/s/lock", "new", TTL).await.unwrap();
    // Several heartbeat periods of the old holder.
    tokio::time::sleep(TTL + Duration::from_millis(500)).await;
    assert_eq!(
        c.get("/s/lock").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    assert!(!old.is_held());
    assert!(new.is_held());
    old.release().await;
    assert_eq!(
        c.get("/s/lock").await.unwrap().as_deref(),
        Some(&b"new"[..])
    );
    new.release().await;
    assert_eq!(c.get("/s/lock").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_stale_holder_cannot_steal() {
    let dir = tempfile::tempdir().unwrap();
    stale_holder_cannot_steal(&format!("file://{}", dir.path().display())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stale_holder_cannot_steal() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path(), free_port(), free_port());
    etcd.ready().await;
    stale_holder_cannot_steal(&format!("etcd://127.0.0.1:{}", etcd.port)).await;
}
