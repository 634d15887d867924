//! Server health: reachable, role, keys and memory (from INFO), checked with a deadline; and
//! each proxy's load (sessions, requests per second) from its admin HTTP `/stats`.

use std::time::Duration;

use rcodis_core::resp::Frame;
use serde::Serialize;

/// What one server said (or why it did not).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerHealth {
    pub addr: String,
    pub reachable: bool,
    pub role: String,
    pub keys: u64,
    pub used_memory: u64,
    /// Why it is not reachable (empty when it is).
    pub error: String,
}

/// Asks `addr` for INFO within `timeout`.
pub async fn check(addr: &str, auth: &str, timeout: Duration) -> ServerHealth {
    let mut h = ServerHealth {
        addr: addr.to_string(),
        ..Default::default()
    };
    let info = tokio::time::timeout(timeout, async {
        let mut c = crate::slot::Client::connect(addr, auth).await?;
        c.call(&["INFO", "everything"]).await
    })
    .await;
    match info {
        Err(_) => h.error = format!("no answer within {} ms", timeout.as_millis()),
        Ok(Err(e)) => h.error = format!("{e:#}"),
        Ok(Ok(Frame::Bulk(b))) => {
            h.reachable = true;
            parse_info(&String::from_utf8_lossy(&b), &mut h);
        }
        Ok(Ok(f)) => h.error = format!("unexpected INFO reply {f:?}"),
    }
    h
}

fn parse_info(text: &str, h: &mut ServerHealth) {
    for line in text.lines() {
        let Some((k, v)) = line.trim_end().split_once(':') else {
            continue;
        };
        match k {
            "role" => h.role = v.to_string(),
            "used_memory" => h.used_memory = v.parse().unwrap_or(0),
            k if k.starts_with("db") && k[2..].chars().all(|c| c.is_ascii_digit()) => {
                // db0:keys=3,expires=0,avg_ttl=0
                if let Some(n) = v
                    .split(',')
                    .find_map(|f| f.strip_prefix("keys="))
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    h.keys += n;
                }
            }
            _ => {}
        }
    }
}

/// Every server of the topology, checked at once.
pub async fn check_all(
    t: &rcodis_core::topology::Topology,
    auth: &str,
    timeout: Duration,
) -> Vec<(u16, ServerHealth)> {
    let jobs = t.groups.values().flat_map(|g| {
        g.servers
            .iter()
            .map(move |s| async move { (g.id, check(s, auth, timeout).await) })
    });
    futures::future::join_all(jobs).await
}

/// What one proxy's admin API said (or why it did not).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyLoad {
    pub token: String,
    pub reachable: bool,
    pub sessions: u64,
    pub ops_per_sec: u64,
    pub commands: u64,
    pub error: String,
}

/// Asks a proxy's admin address for `/stats` within `timeout`.
pub async fn proxy_load(token: &str, admin_addr: &str, timeout: Duration) -> ProxyLoad {
    let mut p = ProxyLoad {
        token: token.to_string(),
        ..Default::default()
    };
    if admin_addr.is_empty() {
        p.error = "no admin address".into();
        return p;
    }
    let got = tokio::time::timeout(timeout, http_get(admin_addr, "/stats")).await;
    let v = match got {
        Err(_) => {
            p.error = format!("no answer within {} ms", timeout.as_millis());
            return p;
        }
        Ok(Err(e)) => {
            p.error = format!("{e:#}");
            return p;
        }
        Ok(Ok(body)) => body,
    };
    match serde_json::from_str::<serde_json::Value>(&v) {
        Ok(v) => {
            p.reachable = true;
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            p.sessions = n("sessions");
            p.ops_per_sec = n("ops_per_sec");
            p.commands = n("commands");
        }
        Err(e) => p.error = format!("bad /stats reply: {e}"),
    }
    p
}

/// A plain HTTP/1.0 GET (the proxies' admin server closes the connection after it); the body.
async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.take(16 << 20).read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP reply"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    anyhow::ensure!(status == "200", "HTTP {status}");
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_fields() {
        let mut h = super::ServerHealth::default();
        super::parse_info(
            "# Replication\r\nrole:master\r\n# Memory\r\nused_memory:1234\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb5:keys=2,expires=1,avg_ttl=9\r\n",
            &mut h,
        );
        assert_eq!(
            (h.role.as_str(), h.used_memory, h.keys),
            ("master", 1234, 5)
        );
    }
}
