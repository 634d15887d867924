//! CONFIG GET/SET parameters: Redis's standard settings with their 7.0 defaults. rcodis
//! honours the ones that mean something to it (requirepass, maxmemory*, slowlog-*, ...) and
//! records the others so clients and test suites read back what they set.

use std::collections::BTreeMap;

use crate::config::{parse_memory, Config};

/// Why a CONFIG SET value was refused.
pub type SetError = String;

const BOOL: &[&str] = &["yes", "no"];

/// Parameters that take one of a fixed set of values.
fn enum_values(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "appendonly"
        | "lazyfree-lazy-eviction"
        | "lazyfree-lazy-expire"
        | "lazyfree-lazy-server-del"
        | "lazyfree-lazy-user-del"
        | "lazyfree-lazy-user-flush"
        | "replica-lazy-flush"
        | "activerehashing"
        | "aof-load-truncated"
        | "aof-use-rdb-preamble"
        | "rdbcompression"
        | "rdbchecksum"
        | "stop-writes-on-bgsave-error"
        | "protected-mode"
        | "activedefrag"
        | "lazyfree-lazy-expire-on-load"
        | "aof-timestamp-enabled"
        | "replica-read-only"
        | "replica-serve-stale-data"
        | "no-appendfsync-on-rewrite"
        | "dynamic-hz"
        | "crash-log-enabled"
        | "set-proc-title"
        | "disable-thp"
        | "cluster-enabled" => BOOL,
        "appendfsync" => &["always", "everysec", "no"],
        "maxmemory-policy" => &[
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "noeviction",
        ],
        "loglevel" => &["debug", "verbose", "notice", "warning", "nothing"],
        _ => return None,
    })
}

/// Parameters holding a memory size.
fn is_memory(name: &str) -> bool {
    matches!(
        name,
        "maxmemory"
            | "client-query-buffer-limit"
            | "proto-max-bulk-len"
            | "auto-aof-rewrite-min-size"
            | "active-defrag-ignore-bytes"
            | "repl-backlog-size"
    )
}

/// Parameters holding an integer.
fn is_int(name: &str) -> bool {
    matches!(
        name,
        "hz" | "maxclients"
            | "timeout"
            | "tcp-keepalive"
            | "databases"
            | "port"
            | "slowlog-log-slower-than"
            | "slowlog-max-len"
            | "latency-monitor-threshold"
            | "maxmemory-samples"
            | "maxmemory-eviction-tenacity"
            | "lfu-log-factor"
            | "lfu-decay-time"
            | "list-max-listpack-size"
            | "list-max-ziplist-size"
            | "list-compress-depth"
            | "hash-max-listpack-entries"
            | "hash-max-listpack-value"
            | "hash-max-ziplist-entries"
            | "hash-max-ziplist-value"
            | "set-max-intset-entries"
            | "zset-max-listpack-entries"
            | "zset-max-listpack-value"
            | "zset-max-ziplist-entries"
            | "zset-max-ziplist-value"
            | "stream-node-max-bytes"
            | "stream-node-max-entries"
            | "auto-aof-rewrite-percentage"
            | "active-expire-effort"
            | "min-replicas-to-write"
            | "min-replicas-max-lag"
            | "repl-timeout"
            | "repl-ping-replica-period"
            | "lua-time-limit"
            | "busy-reply-threshold"
            | "hll-sparse-max-bytes"
            | "tracking-table-max-keys"
            | "io-threads"
    )
}

/// The parameter table seeded from the server's configuration.
pub fn defaults(c: &Config) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = crate::params_defaults::REDIS_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut put = |k: &str, v: &str| {
        m.insert(k.to_string(), v.to_string());
    };
    put("bind", &c.bind);
    put("port", &c.port.to_string());
    put("databases", &c.databases.to_string());
    put("requirepass", &c.requirepass);
    put("masterauth", &c.masterauth);
    put("replicaof", &c.replicaof);
    put("dir", &c.dir.display().to_string());
    put("dbfilename", "dump.rdb");
    put("appendonly", if c.appendonly { "yes" } else { "no" });
    put("appendfilename", "appendonly.aof");
    put("appenddirname", "appendonlydir");
    put("appendfsync", &c.appendfsync);
    put("save", "3600 1 300 100 60 10000");
    put(
        "maxmemory",
        &parse_memory(&c.maxmemory).unwrap_or(0).to_string(),
    );
    put("maxmemory-policy", &c.maxmemory_policy);
    put("maxmemory-samples", "5");
    put("maxmemory-eviction-tenacity", "10");
    put("maxclients", &c.maxclients.to_string());
    put(
        "client-query-buffer-limit",
        &parse_memory(&c.client_query_buffer_limit)
            .unwrap_or(0)
            .to_string(),
    );
    put(
        "proto-max-bulk-len",
        &parse_memory(&c.proto_max_bulk_len).unwrap_or(0).to_string(),
    );
    put(
        "client-output-buffer-limit",
        "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
    );
    put("timeout", "0");
    put("tcp-keepalive", "300");
    put("hz", "10");
    put("dynamic-hz", "yes");
    put("loglevel", "notice");
    put("logfile", "");
    put("slowlog-log-slower-than", "10000");
    put("slowlog-max-len", "128");
    put("latency-monitor-threshold", "0");
    put("notify-keyspace-events", "");
    put("lazyfree-lazy-eviction", "no");
    put("lazyfree-lazy-expire", "no");
    put("lazyfree-lazy-server-del", "no");
    put("lazyfree-lazy-user-del", "no");
    put("lazyfree-lazy-user-flush", "no");
    put("replica-lazy-flush", "no");
    put("activerehashing", "yes");
    put("activedefrag", "no");
    put("active-expire-effort", "1");
    put("list-max-listpack-size", "-2");
    put("list-max-ziplist-size", "-2");
    put("list-compress-depth", "0");
    put("hash-max-listpack-entries", "512");
    put("hash-max-listpack-value", "64");
    put("hash-max-ziplist-entries", "512");
    put("hash-max-ziplist-value", "64");
    put("set-max-intset-entries", "512");
    put("zset-max-listpack-entries", "128");
    put("zset-max-listpack-value", "64");
    put("zset-max-ziplist-entries", "128");
    put("zset-max-ziplist-value", "64");
    put("stream-node-max-bytes", "4096");
    put("stream-node-max-entries", "100");
    put("hll-sparse-max-bytes", "3000");
    put("lfu-log-factor", "10");
    put("lfu-decay-time", "1");
    put("auto-aof-rewrite-percentage", "100");
    put("auto-aof-rewrite-min-size", "67108864");
    put("aof-load-truncated", "yes");
    put("aof-use-rdb-preamble", "yes");
    put("aof-timestamp-enabled", "no");
    put("no-appendfsync-on-rewrite", "no");
    put("rdbcompression", "yes");
    put("rdbchecksum", "yes");
    put("stop-writes-on-bgsave-error", "yes");
    put("protected-mode", "no");
    put("replica-read-only", "yes");
    put("replica-serve-stale-data", "yes");
    put("repl-backlog-size", "1048576");
    put("repl-timeout", "60");
    put("repl-ping-replica-period", "10");
    put("min-replicas-to-write", "0");
    put("min-replicas-max-lag", "10");
    put("lua-time-limit", "5000");
    put("busy-reply-threshold", "5000");
    put("tracking-table-max-keys", "1000000");
    put("io-threads", "1");
    put("cluster-enabled", "no");
    put("crash-log-enabled", "yes");
    put("set-proc-title", "yes");
    put("disable-thp", "yes");
    put("active-defrag-ignore-bytes", "104857600");
    m
}

/// Parameters that may not change at run time.
fn immutable(name: &str) -> bool {
    matches!(
        name,
        "databases" | "port" | "bind" | "cluster-enabled" | "io-threads" | "daemonize" | "logfile"
    )
}

/// Validates and normalises a CONFIG SET value.
pub fn check(name: &str, value: &str) -> Result<String, SetError> {
    if immutable(name) {
        return Err(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - can't set immutable config"));
    }
    let bad = || {
        format!("ERR CONFIG SET failed (possibly related to argument '{name}') - argument couldn't be parsed into an integer")
    };
    if let Some(values) = enum_values(name) {
        let v = value.to_ascii_lowercase();
        if !values.contains(&v.as_str()) {
            return Err(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - argument(s) must be one of the following: {}", values.join(", ")));
        }
        return Ok(v);
    }
    if is_memory(name) {
        return parse_memory(value).map(|v| v.to_string()).ok_or_else(bad);
    }
    if is_int(name) {
        return value
            .trim()
            .parse::<i64>()
            .map(|v| v.to_string())
            .map_err(|_| bad());
    }
    if name == "notify-keyspace-events" {
        // Kept as Redis shows it (its canonical order of the flags).
        return crate::notify::parse(value)
            .map(crate::notify::format)
            .ok_or_else(|| format!("ERR CONFIG SET failed (possibly related to argument '{name}') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'."));
    }
    if name == "save" {
        let parts: Vec<&str> = value.split_whitespace().collect();
        if !parts.len().is_multiple_of(2) || parts.iter().any(|p| p.parse::<u64>().is_err()) {
            return Err(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - Invalid save parameters"));
        }
        return Ok(parts.join(" "));
    }
    Ok(value.to_string())
}

/// The other name of a setting Redis 7 knows under two (the listpack names and the older
/// ziplist ones).
pub fn alias_of(name: &str) -> Option<&'static str> {
    const PAIRS: [(&str, &str); 5] = [
        ("hash-max-listpack-entries", "hash-max-ziplist-entries"),
        ("hash-max-listpack-value", "hash-max-ziplist-value"),
        ("zset-max-listpack-entries", "zset-max-ziplist-entries"),
        ("zset-max-listpack-value", "zset-max-ziplist-value"),
        ("list-max-listpack-size", "list-max-ziplist-size"),
    ];
    PAIRS.iter().find_map(|&(a, b)| {
        if name == a {
            Some(b)
        } else if name == b {
            Some(a)
        } else {
            None
        }
    })
}
