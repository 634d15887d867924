//! Commands that need the connection or the whole server: connection state (AUTH, HELLO,
//! SELECT, CLIENT, RESET), introspection (INFO, CONFIG, COMMAND, SLOWLOG, ...), keyspace-wide
//! commands (DBSIZE, KEYS, SCAN, FLUSHALL, SWAPDB, ...) and pub/sub.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use rcodis_core::cmd::{self as table, BeginSearch, CommandSpec, FindKeys, KeyFlags, COMMANDS};
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;

use crate::cmd::{is, NOT_INT, SYNTAX};
use crate::conn::Conn;
use crate::db::now_ms;
use crate::out::Out;

/// The Redis version rcodis reports for compatibility (clients gate features on it).
pub const REDIS_VERSION: &str = "7.0.15";

/// Runs a connection-level command.
pub async fn run(c: &mut Conn, spec: &'static CommandSpec, req: &Request, out: &mut Out) {
    match spec.name {
        "ping" => {
            if c.subscribed_resp2() {
                out.array(2);
                out.bulk(b"pong");
                out.bulk(req.get(1).unwrap_or(b""));
            } else if req.len() > 2 {
                out.err("ERR wrong number of arguments for 'ping' command")
            } else if let Some(m) = req.get(1) {
                out.bulk(m)
            } else {
                out.simple("PONG")
            }
        }
        "echo" => out.bulk(req.arg(1)),
        "quit" => {
            out.ok();
            c.close = true;
        }
        "select" => select(c, req, out),
        "auth" => auth(c, req, out),
        "hello" => hello(c, req, out),
        "reset" => {
            c.reset().await;
            out.simple("RESET")
        }
        "time" => {
            let us = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or(0);
            out.array(2);
            out.bulk_int((us / 1_000_000) as i64);
            out.bulk_int((us % 1_000_000) as i64);
        }
        "lastsave" => out.int(c.shard.shared.lastsave.load(Ordering::Relaxed) as i64),
        "role" => crate::repl::role(&c.shard.shared, out),
        "replicaof" | "slaveof" => crate::repl::replicaof(&c.shard.shared, req, out),
        "wait" => {
            if parse_i64(req.arg(1)).is_none() || parse_i64(req.arg(2)).is_none() {
                return out.err(NOT_INT);
            }
            out.int(0)
        }
        "readonly" | "readwrite" => out.err("ERR This instance has cluster support disabled"),
        "dbsize" => {
            let db = c.db;
            let n: usize = c.shard.run_on_all(move |st| st.dbs[db].len()).await.into_iter().sum();
            out.int(n as i64)
        }
        "keys" => keys(c, req, out).await,
        "scan" => scan(c, req, out).await,
        "randomkey" => randomkey(c, out).await,
        "flushdb" | "flushall" => flush(c, spec.name == "flushall", req, out).await,
        "swapdb" => swapdb(c, req, out).await,
        "move" => move_key(c, req, out).await,
        "copy" => copy_db(c, req, out).await,
        "subscribe" | "psubscribe" | "ssubscribe" => subscribe(c, spec.name, req, out).await,
        "unsubscribe" | "punsubscribe" | "sunsubscribe" => unsubscribe(c, spec.name, req, out).await,
        "publish" | "spublish" => {
            let (ch, msg) = (req.arg_bytes(1), req.arg_bytes(2));
            let sharded = spec.name == "spublish";
            let n: usize = c
                .shard
                .run_on_all(move |st| st.pubsub.publish(&ch, &msg, sharded, 32 << 20))
                .await
                .into_iter()
                .sum();
            out.int(n as i64)
        }
        "pubsub|channels" | "pubsub|shardchannels" => {
            let pat = req.get(2).map(Bytes::copy_from_slice);
            let shard_ch = spec.name == "pubsub|shardchannels";
            let lists = c
                .shard
                .run_on_all(move |st| {
                    let map = if shard_ch { &st.pubsub.shard_channels } else { &st.pubsub.channels };
                    map.keys()
                        .filter(|k| pat.as_ref().is_none_or(|p| crate::glob::matches(p, k, false)))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .await;
            let mut all: Vec<Bytes> = lists.into_iter().flatten().collect();
            all.sort();
            all.dedup();
            out.array_of_bulks(all.iter().map(|b| &b[..]))
        }
        "pubsub|numsub" | "pubsub|shardnumsub" => {
            let chans: Vec<Bytes> = (2..req.len()).map(|i| req.arg_bytes(i)).collect();
            let shard_ch = spec.name == "pubsub|shardnumsub";
            let ch2 = chans.clone();
            let counts = c
                .shard
                .run_on_all(move |st| {
                    let map = if shard_ch { &st.pubsub.shard_channels } else { &st.pubsub.channels };
                    ch2.iter().map(|ch| map.get(ch).map(|s| s.len()).unwrap_or(0)).collect::<Vec<_>>()
                })
                .await;
            out.map(chans.len());
            for (i, ch) in chans.iter().enumerate() {
                out.bulk(ch);
                out.int(counts.iter().map(|v| v[i]).sum::<usize>() as i64);
            }
        }
        "pubsub|numpat" => {
            let pats = c
                .shard
                .run_on_all(|st| st.pubsub.patterns.keys().cloned().collect::<Vec<_>>())
                .await;
            let mut all: Vec<Bytes> = pats.into_iter().flatten().collect();
            all.sort();
            all.dedup();
            out.int(all.len() as i64)
        }
        "info" => info(c, req, out).await,
        "config|get" => config_get(c, req, out),
        "config|set" => config_set(c, req, out).await,
        "config|resetstat" => {
            c.shard
                .run_on_all(|st| {
                    st.cmdstats.iter_mut().for_each(|s| *s = Default::default());
                    st.keyspace_hits = 0;
                    st.keyspace_misses = 0;
                    st.slowlog.clear();
                })
                .await;
            out.ok()
        }
        "config|rewrite" => out.err("ERR The server is running without a config file"),
        "command" | "command|info" => command_info(req, spec.name == "command", out),
        "command|count" => out.int(COMMANDS.len() as i64),
        "command|list" => command_list(req, out),
        "command|docs" => command_docs(req, out),
        "command|getkeys" | "command|getkeysandflags" => command_getkeys(req, spec.name == "command|getkeysandflags", out),
        "client|id" => out.int(c.id as i64),
        "client|getname" => {
            if c.name.is_empty() {
                out.null()
            } else {
                out.bulk(&c.name.clone())
            }
        }
        "client|setname" => {
            let name = req.arg(2);
            if name.iter().any(|&b| b <= b' ' || b > b'~') {
                return out.err("ERR Client names cannot contain spaces, newlines or special characters.");
            }
            c.name = Bytes::copy_from_slice(name);
            out.ok()
        }
        "client|setinfo" => {
            let (attr, v) = (req.arg(2), req.arg(3));
            if v.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
                return out.err(&format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(attr).to_ascii_lowercase()
                ));
            }
            if is(attr, "lib-name") {
                c.lib_name = Bytes::copy_from_slice(v);
            } else if is(attr, "lib-ver") {
                c.lib_ver = Bytes::copy_from_slice(v);
            } else {
                return out.err(&format!("ERR Unrecognized option '{}'", String::from_utf8_lossy(attr)));
            }
            out.ok()
        }
        "client|info" => {
            c.update_info_now();
            let line = c.info_line();
            out.verbatim(&format!("{line}\n"))
        }
        "client|list" => client_list(c, req, out).await,
        "client|kill" => client_kill(c, req, out).await,
        "client|no-evict" | "client|no-touch" => {
            if is(req.arg(2), "on") {
                c.no_evict = true;
            } else if is(req.arg(2), "off") {
                c.no_evict = false;
            } else {
                return out.err(SYNTAX);
            }
            out.ok()
        }
        "client|getredir" => match &c.tracking {
            Some(t) => out.int(t.opts.redirect as i64),
            None => out.int(-1),
        },
        "client|reply" => {
            // OFF and SKIP are not answered (the reply would be the first one dropped).
            if is(req.arg(2), "on") {
                c.reply_off = false;
                c.reply_skip_next = false;
                out.ok()
            } else if is(req.arg(2), "off") {
                c.reply_off = true;
            } else if is(req.arg(2), "skip") {
                c.reply_skip_next = !c.reply_off;
            } else {
                out.err(SYNTAX)
            }
        }
        "client|pause" => {
            let ms = match parse_i64(req.arg(2)) {
                Some(ms) if ms < 0 => return out.err("ERR timeout is negative"),
                Some(ms) => ms as u64,
                None => return out.err("ERR timeout is not an integer or out of range"),
            };
            let all = match req.get(3) {
                None => true,
                Some(m) if is(m, "all") => true,
                Some(m) if is(m, "write") => false,
                Some(_) => return out.err("ERR CLIENT PAUSE mode must be WRITE or ALL"),
            };
            // As Redis: the later end and the stricter mode of overlapping pauses win.
            let sh = &c.shard.shared;
            let until = now_ms().saturating_add(ms);
            let active = sh.pause_until_ms.load(Ordering::Relaxed) > now_ms();
            sh.pause_all.store(
                all || (active && sh.pause_all.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
            sh.pause_until_ms.fetch_max(until, Ordering::Relaxed);
            out.ok()
        }
        "client|unpause" => {
            c.shard.shared.pause_until_ms.store(0, Ordering::Relaxed);
            out.ok()
        }
        "client|unblock" => {
            let Some(id) = parse_i64(req.arg(2)) else {
                return out.err(NOT_INT);
            };
            let error = match req.get(3) {
                None => false,
                Some(m) if is(m, "timeout") => false,
                Some(m) if is(m, "error") => true,
                Some(_) => {
                    return out.err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
                }
            };
            let waker = c
                .shard
                .shared
                .unblockers
                .lock()
                .expect("unblockers")
                .remove(&(id as u64));
            out.int(waker.is_some_and(|w| w.send(error).is_ok()) as i64)
        }
        "client|tracking" => client_tracking(c, req, out).await,
        "client|caching" => {
            let Some(t) = &c.tracking else {
                return out.err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled");
            };
            if is(req.arg(2), "yes") && req.len() == 3 {
                if !t.opts.optin {
                    return out.err("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.");
                }
            } else if is(req.arg(2), "no") && req.len() == 3 {
                if !t.opts.optout {
                    return out.err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.");
                }
            } else {
                return out.err(SYNTAX);
            }
            c.caching = true;
            out.ok()
        }
        "client|trackinginfo" => {
            let t = c.tracking.as_deref();
            let mut flags: Vec<&str> = vec![if t.is_some() { "on" } else { "off" }];
            if let Some(t) = t {
                if t.opts.bcast {
                    flags.push("bcast");
                }
                if t.opts.optin {
                    flags.push("optin");
                    if c.caching {
                        flags.push("caching-yes");
                    }
                }
                if t.opts.optout {
                    flags.push("optout");
                    if c.caching {
                        flags.push("caching-no");
                    }
                }
                if t.opts.noloop {
                    flags.push("noloop");
                }
                if t.broken.load(Ordering::Relaxed) {
                    flags.push("broken_redirect");
                }
            }
            out.map(3);
            out.bulk(b"flags");
            out.set(flags.len());
            for f in flags {
                out.bulk(f.as_bytes());
            }
            out.bulk(b"redirect");
            out.int(t.map(|t| t.opts.redirect as i64).unwrap_or(-1));
            out.bulk(b"prefixes");
            let prefixes = t.map(|t| t.opts.prefixes.clone()).unwrap_or_default();
            out.array(prefixes.len());
            for p in prefixes {
                out.bulk(&p);
            }
        }
        "function|help" => help(out, "FUNCTION", &[
            "LOAD [REPLACE] <FUNCTION CODE>",
            "    Create a new library with the given library name and code.",
            "DELETE <LIBRARY NAME>",
            "    Delete the given library.",
            "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
            "    Return general information on all the libraries:",
            "    * Library name",
            "    * The engine used to run the Library",
            "    * Library description",
            "    * Functions list",
            "    * Library code (if WITHCODE is given)",
            "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
            "STATS",
            "    Return information about the current function running:",
            "    * Function name",
            "    * Command used to run the function",
            "    * Duration in MS that the function is running",
            "    If no function is running, return nil",
            "    In addition, returns a list of available engines.",
            "KILL",
            "    Kill the current running function.",
            "FLUSH [ASYNC|SYNC]",
            "    Delete all the libraries.",
            "    When called without the optional mode argument, the behavior is determined by the",
            "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
            "    * ASYNC: Asynchronously flush the libraries.",
            "    * SYNC: Synchronously flush the libraries.",
            "DUMP",
            "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
            "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
            "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
            "    control how to handle existing libraries (default APPEND):",
            "    * FLUSH: delete all existing libraries.",
            "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
            "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
            "      libraries with the new libraries (notice that even on this option there is a chance of failure",
            "      in case of functions name collision with another library).",
        ]),
        "client|help" => help(out, "CLIENT", &["ID", "GETNAME", "SETNAME <name>", "SETINFO <attr> <value>", "LIST", "INFO", "KILL <ip:port>|ID <id>", "NO-EVICT ON|OFF"]),
        "script|flush" => {
            if req.len() == 3
                && !is(req.arg(2), "sync")
                && !is(req.arg(2), "async")
            {
                return out.err("ERR SCRIPT FLUSH only support SYNC|ASYNC option");
            }
            crate::cmd::script::flush();
            out.ok()
        }
        "script|load" => match crate::cmd::script::load(req.arg(2)) {
            Ok(sha) => out.bulk(sha.as_bytes()),
            Err(e) => out.err(&e),
        },
        "function|load" | "function|delete" | "function|flush" | "function|restore"
        | "function|list" | "function|dump" | "function|stats" | "function|kill" => {
            let sub = &spec.name["function|".len()..];
            let records = crate::cmd::function::command(sub, req, out);
            log_functions(c, records).await;
        }
        "script|exists" => {
            out.array(req.len() - 2);
            for i in 2..req.len() {
                out.int(crate::cmd::script::exists(req.arg(i)) as i64);
            }
        }
        "script|kill" => match crate::cmd::script::kill(true) {
            Ok(()) => out.ok(),
            Err(e) => out.err(e),
        },
        "slowlog|get" => slowlog_get(c, req, out).await,
        "slowlog|len" => {
            let n: usize = c.shard.run_on_all(|st| st.slowlog.len()).await.into_iter().sum();
            out.int(n as i64)
        }
        "slowlog|reset" => {
            c.shard.run_on_all(|st| st.slowlog.clear()).await;
            out.ok()
        }
        "latency|latest" | "latency|history" => out.array(0),
        "latency|reset" => out.int(0),
        "latency|doctor" => out.verbatim("Dave, no latency spike was observed during the lifetime of this Redis instance, not in the slightest bit. I honestly think you ought to sleep tonight.\n"),
        "memory|doctor" => out.verbatim("Hi Sam, this instance is empty or is using very little memory, my issues detector can't be used in these conditions. Please, leave for your mission on Earth and fill it with some data. The new Sam and I will be back to our programming as soon as I finished rebooting.\n"),
        "memory|purge" => out.ok(),
        "memory|stats" | "memory|malloc-stats" => out.verbatim("Stats not supported for the current allocator\n"),
        "debug" => debug(c, req, out).await,
        "bgrewriteaof" => {
            let results = c
                .shard
                .run_on_all(|st| match st.aof.as_mut() {
                    Some(a) => a.start_rewrite(&mut st.dbs, now_ms(), st.id).map_err(|e| e.to_string()),
                    None => Ok(crate::aof::RewriteStart::Off),
                })
                .await;
            use crate::aof::RewriteStart;
            match results.iter().find_map(|r| r.as_ref().err()) {
                Some(e) => out.err(&format!("ERR append only file rewrite failed: {e}")),
                None if results.iter().all(|r| matches!(r, Ok(RewriteStart::Off))) => {
                    out.err("ERR appendonly is off: start rcodis-server with --appendonly yes")
                }
                None if !results.iter().any(|r| matches!(r, Ok(RewriteStart::Started))) => {
                    out.err("ERR Background append only file rewriting already in progress")
                }
                None => out.simple("Background append only file rewriting started"),
            }
        }
        "save" => match save(&c.shard).await {
            Ok(()) => out.ok(),
            Err(e) => out.err(&format!("ERR {e}")),
        },
        "bgsave" => {
            if req.len() > 2 || (req.len() == 2 && !is(req.arg(1), "schedule")) {
                return out.err(SYNTAX);
            }
            match bgsave(&c.shard).await {
                Ok(()) => out.simple("Background saving started"),
                Err(e) => out.err(&format!("ERR {e}")),
            }
        }
        "shutdown" => {
            let (mut nosave, mut force_save) = (false, false);
            for i in 1..req.len() {
                let a = req.arg(i);
                if is(a, "nosave") {
                    nosave = true;
                } else if is(a, "save") {
                    force_save = true;
                } else if !(is(a, "now") || is(a, "force") || is(a, "abort")) {
                    return out.err(SYNTAX);
                }
            }
            let cfg = c.shard.shared.config();
            let rules = !c.shard.shared.param("save").trim().is_empty();
            if force_save || (!nosave && rules && !cfg.appendonly) {
                if let Err(e) = save(&c.shard).await {
                    return out.err(&format!("ERR Errors trying to SHUTDOWN. Check logs. ({e})"));
                }
            }
            tracing::info!("SHUTDOWN requested by client {}", c.id);
            c.shard.shared.shutdown.store(true, Ordering::SeqCst);
            // SAFETY-free: signal ourselves; the main thread exits cleanly on SIGTERM.
            unsafe_free_sigterm();
            c.close = true;
        }
        "slotsinfo" => crate::slots::slotsinfo(&c.shard, c.db, req, out).await,
        "slotsscan" => crate::slots::slotsscan(&c.shard, c.db, req, out).await,
        "slotsdel" => crate::slots::slotsdel(&c.shard, c.db, req, out).await,
        "slotshashkey" => crate::slots::slotshashkey(req, out),
        "slotscheck" => crate::slots::slotscheck(&c.shard, out).await,
        "slotsrestore" => crate::slots::slotsrestore(&c.shard, c.db, req, out).await,
        "slotsmgrtslot-async" | "slotsmgrttagslot-async" | "slotsmgrtone-async" | "slotsmgrttagone-async"
            if targets_self(c, req) =>
        {
            out.err("ERR migration target is this server")
        }
        "slotsmgrtslot-async" | "slotsmgrttagslot-async" | "slotsmgrtone-async" | "slotsmgrttagone-async" => {
            if spec.name.contains("slot-async") && req.len() != 8 {
                return out.err(&format!("ERR wrong number of arguments for '{}' command", spec.name));
            }
            let pw = c.shard.shared.requirepass();
            let tag = spec.name.contains("tag");
            let by_slot = spec.name.contains("slot-async");
            crate::slots_async::mgrt_async(&c.shard, c.db, req, tag, by_slot, pw, out).await
        }
        "slotsmgrtone-async-dump" | "slotsmgrttagone-async-dump" => {
            crate::slots_async::async_dump(&c.shard, c.db, req, spec.name.contains("tag"), out).await
        }
        "slotsmgrt-async-fence" => crate::slots_async::fence(&c.shard, c.db, out).await,
        "slotsmgrt-async-cancel" => crate::slots_async::cancel(&c.shard, c.db, out),
        "slotsmgrt-async-status" => crate::slots_async::status(&c.shard, c.db, out),
        "slotsmgrt-exec-wrapper" => {
            crate::slots_async::exec_wrapper(&c.shard, c.db, c.resp3, req, out).await
        }
        "slotsrestore-async" => {
            let (errno, m) = crate::slots_async::restore_async(&c.shard, c.db, req).await;
            crate::slots_async::ack(out, errno, &m);
            if errno != 0 {
                c.close = true;
            }
        }
        "slotsrestore-async-auth" => {
            let pw = c.shard.shared.requirepass();
            if pw.is_empty() {
                crate::slots_async::ack(out, 1, "Client sent AUTH, but no password is set");
                c.close = true;
            } else if req.arg(1) != pw.as_bytes() {
                crate::slots_async::ack(out, 1, "invalid password");
                c.close = true;
            } else {
                c.authed = true;
                crate::slots_async::ack(out, 0, "OK");
            }
        }
        "slotsrestore-async-select" => match rcodis_core::num::parse_i64(req.arg(1)) {
            Some(d) if d >= 0 && (d as usize) < c.shard.shared.config().databases => {
                c.db = d as usize;
                crate::slots_async::ack(out, 0, "OK");
            }
            _ => {
                crate::slots_async::ack(
                    out,
                    1,
                    &format!("invalid DB index ({})", String::from_utf8_lossy(req.arg(1))),
                );
                c.close = true;
            }
        },
        "slotsrestore-async-ack" => out.err("ERR invalid client, permission denied"),
        "slotsmgrtone" | "slotsmgrttagone" | "slotsmgrtslot" | "slotsmgrttagslot" if targets_self(c, req) => {
            out.err("ERR migration target is this server")
        }
        "slotsmgrtone" | "slotsmgrttagone" => {
            let pw = c.shard.shared.requirepass();
            crate::slots::mgrt_one(&c.shard, c.db, req, spec.name == "slotsmgrttagone", pw, out).await
        }
        "slotsmgrtslot" | "slotsmgrttagslot" => {
            let pw = c.shard.shared.requirepass();
            crate::slots::mgrt_slot(&c.shard, c.db, req, spec.name == "slotsmgrttagslot", pw, out).await
        }
        "pfselftest" => match crate::cmd::hll::selftest() {
            Ok(()) => out.ok(),
            Err(e) => out.err(&e),
        },
        "acl|whoami" => out.bulk(b"default"),
        "acl|users" => out.array_of_bulks([&b"default"[..]].into_iter()),
        "acl|cat" => out.array(0),
        "lolwut" => out.verbatim(&format!("rcodis ver. {}\n", env!("CARGO_PKG_VERSION"))),
        _ => {
            let name = spec.name.split('|').next().unwrap_or(spec.name);
            if spec.name.contains('|') && (spec.name.ends_with("|help")) {
                return help(out, &name.to_ascii_uppercase(), &[]);
            }
            out.err(&table::unknown_command_error(req.arg(0), (1..req.len()).map(|i| req.arg(i))))
        }
    }
}

/// SAVE: every shard writes its snapshot now, on its own thread (a consistent cut per shard).
pub async fn save(shard: &std::rc::Rc<crate::shard::Shard>) -> Result<(), String> {
    if shard.shared.bgsave_in_progress.load(Ordering::Acquire) {
        return Err("Background save already in progress".into());
    }
    let dir = shard.shared.config().dir;
    let results = shard
        .run_on_all(move |st| {
            let pre = crate::cmd::function::image_for(st.id);
            crate::aof::write_snapshot(&dir, st.id, &mut st.dbs, now_ms(), &pre)
                .map_err(|e| e.to_string())
        })
        .await;
    if let Some(e) = results.into_iter().find_map(|r| r.err()) {
        return Err(format!("snapshot failed: {e}"));
    }
    crate::aof::DIRTY.store(0, Ordering::Relaxed);
    shard
        .shared
        .lastsave
        .store(now_ms() / 1000, Ordering::Relaxed);
    Ok(())
}

/// BGSAVE: each shard forks a child that writes its snapshot (a consistent cut per shard,
/// taken at the fork) while the shard keeps serving; a local task reaps the children.
pub async fn bgsave(shard: &std::rc::Rc<crate::shard::Shard>) -> Result<(), String> {
    let shared = shard.shared.clone();
    if shared.bgsave_in_progress.swap(true, Ordering::AcqRel) {
        return Err("Background save already in progress".into());
    }
    let dirty_at_cut = crate::aof::DIRTY.load(Ordering::Relaxed);
    let dir = shared.config().dir;
    let now = now_ms();
    let children = shard
        .run_on_all(move |st| {
            let id = st.id;
            let dbs = &mut st.dbs;
            let pre = crate::cmd::function::image_for(id);
            crate::fork::spawn(|| crate::aof::write_snapshot(&dir, id, dbs, now, &pre))
                .map_err(|e| e.to_string())
        })
        .await;
    if let Some(e) = children.iter().find_map(|c| c.as_ref().err()).cloned() {
        for c in children.into_iter().flatten() {
            c.kill();
        }
        shared.bgsave_in_progress.store(false, Ordering::Release);
        return Err(format!("cannot fork for the background save: {e}"));
    }
    let children: Vec<_> = children.into_iter().flatten().collect();
    glommio::spawn_local(async move {
        let mut ok = true;
        for c in children {
            loop {
                match c.poll() {
                    crate::fork::Exit::Running => {
                        glommio::timer::sleep(std::time::Duration::from_millis(5)).await
                    }
                    crate::fork::Exit::Ok => break,
                    crate::fork::Exit::Failed(e) => {
                        tracing::error!(error = %e, "background save failed");
                        ok = false;
                        break;
                    }
                }
            }
        }
        if ok {
            let _ = crate::aof::DIRTY.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |d| {
                Some(d.saturating_sub(dirty_at_cut))
            });
            shared.lastsave.store(now / 1000, Ordering::Relaxed);
            tracing::info!("background save done");
        }
        shared.last_bgsave_ok.store(ok, Ordering::Relaxed);
        shared.bgsave_in_progress.store(false, Ordering::Release);
    })
    .detach();
    Ok(())
}

/// Whether a migration's host:port is this very server (which would wait on itself).
fn targets_self(c: &Conn, req: &Request) -> bool {
    let port = c.shard.shared.port.load(Ordering::Relaxed).to_string();
    let host = String::from_utf8_lossy(req.arg(1)).to_ascii_lowercase();
    let local = host == "localhost"
        || host.starts_with("127.")
        || host == "::1"
        || host == c.shard.shared.config().bind;
    local && req.arg(2) == port.as_bytes()
}

/// Sends SIGTERM to this process (SHUTDOWN): the main thread stops everything cleanly.
fn unsafe_free_sigterm() {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status();
}

/// Logs a change of the library set (FUNCTION LOAD, ...) with shard 0's data (see
/// [`crate::cmd::function`]): its log and its replicas.
async fn log_functions(c: &mut Conn, records: crate::cmd::function::Records) {
    if records.is_empty() {
        return;
    }
    crate::aof::DIRTY.fetch_add(1, Ordering::Relaxed);
    c.shard
        .run_on(0, move |st| {
            if let Some(a) = st.aof.as_mut() {
                for r in &records {
                    let args: Vec<&[u8]> = r.iter().map(|b| &b[..]).collect();
                    a.log(0, &args);
                }
                a.end_batch();
            }
        })
        .await;
}

fn help(out: &mut Out, name: &str, lines: &[&str]) {
    let mut all = vec![format!(
        "{name} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"
    )];
    all.extend(lines.iter().map(|l| l.to_string()));
    all.push("HELP".into());
    all.push("    Prints this help.".into());
    out.array(all.len());
    for l in all {
        out.simple(&l);
    }
}

fn select(c: &mut Conn, req: &Request, out: &mut Out) {
    let Some(db) = parse_i64(req.arg(1)) else {
        return out.err(NOT_INT);
    };
    let n = c.shard.state.borrow().dbs.len() as i64;
    if db < 0 || db >= n {
        return out.err("ERR DB index is out of range");
    }
    c.db = db as usize;
    out.ok()
}

fn check_password(c: &Conn, user: Option<&[u8]>, pass: &[u8]) -> Result<(), &'static str> {
    let required = c.shard.shared.requirepass();
    if let Some(u) = user {
        if u != b"default" {
            return Err("WRONGPASS invalid username-password pair or user is disabled.");
        }
    }
    if required.is_empty() {
        if user.is_none() {
            return Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
        }
        return Ok(());
    }
    if pass == required.as_bytes() {
        Ok(())
    } else {
        Err("WRONGPASS invalid username-password pair or user is disabled.")
    }
}

fn auth(c: &mut Conn, req: &Request, out: &mut Out) {
    let r = match req.len() {
        2 => check_password(c, None, req.arg(1)),
        3 => check_password(c, Some(req.arg(1)), req.arg(2)),
        _ => return out.err(SYNTAX),
    };
    match r {
        Ok(()) => {
            c.authed = true;
            out.ok()
        }
        Err(e) => out.err(e),
    }
}

fn hello(c: &mut Conn, req: &Request, out: &mut Out) {
    let mut proto = None;
    let mut i = 1;
    if req.len() >= 2 {
        match parse_i64(req.arg(1)) {
            Some(v) if v == 2 || v == 3 => proto = Some(v),
            Some(_) => return out.err("NOPROTO unsupported protocol version"),
            None => return out.err("ERR Protocol version is not an integer or out of range"),
        }
        i = 2;
    }
    let mut name = None;
    while i < req.len() {
        let a = req.arg(i);
        if is(a, "auth") && i + 2 < req.len() {
            if let Err(e) = check_password(c, Some(req.arg(i + 1)), req.arg(i + 2)) {
                return out.err(e);
            }
            c.authed = true;
            i += 3;
        } else if is(a, "setname") && i + 1 < req.len() {
            let n = req.arg(i + 1);
            if n.iter().any(|&b| b <= b' ' || b > b'~') {
                return out.err(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
            name = Some(Bytes::copy_from_slice(n));
            i += 2;
        } else {
            return out.err(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(a)
            ));
        }
    }
    if !c.authed {
        return out.err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if let Some(n) = name {
        c.name = n;
    }
    if let Some(p) = proto {
        c.resp3 = p == 3;
    }
    let mut o = Out::new(c.resp3);
    hello_reply(&mut o, c.id);
    out.resp3 = c.resp3;
    out.raw(&o.buf);
}

/// HELLO's reply (in `out`'s protocol).
pub fn hello_reply(o: &mut Out, id: u64) {
    o.map(7);
    o.bulk(b"server");
    o.bulk(b"redis");
    o.bulk(b"version");
    o.bulk(REDIS_VERSION.as_bytes());
    o.bulk(b"proto");
    o.int(if o.resp3 { 3 } else { 2 });
    o.bulk(b"id");
    o.int(id as i64);
    o.bulk(b"mode");
    o.bulk(b"standalone");
    o.bulk(b"role");
    o.bulk(b"master");
    o.bulk(b"modules");
    o.array(0);
}

async fn keys(c: &mut Conn, req: &Request, out: &mut Out) {
    let db = c.db;
    let pat = req.arg_bytes(1);
    let lists = c
        .shard
        .run_on_all(move |st| {
            let now = now_ms();
            let mut v = Vec::new();
            let all = pat.as_ref() == b"*";
            st.dbs[db].for_each_key(now, |k, _| {
                if all || crate::glob::matches(&pat, k, false) {
                    v.push(k.clone());
                }
            });
            v
        })
        .await;
    let n: usize = lists.iter().map(|l| l.len()).sum();
    out.array(n);
    for l in lists {
        for k in l {
            out.bulk(&k);
        }
    }
}

/// SCAN's cursor: position `p` in the order "every slot of shard 0, then of shard 1, ..."
/// (11 bits) and the key hash to continue from within that slot (43 bits).
fn slot_at(p: usize, nr: usize) -> (usize, u16) {
    // Shard k owns slots k, k+nr, ...; count(k) = ceil((1024 - k) / nr).
    let mut p = p;
    for k in 0..nr {
        let cnt = (rcodis_core::NUM_SLOTS - k).div_ceil(nr);
        if p < cnt {
            return (k, (k + p * nr) as u16);
        }
        p -= cnt;
    }
    unreachable!("position within range")
}

/// One shard's part of a SCAN step: up to `want` keys from position `pos` (and key hash
/// `from` within that slot) while the positions are shard `id`'s; returns them and where
/// the scan stands.
pub fn scan_step(
    d: &mut crate::db::Db,
    id: usize,
    nr: usize,
    mut pos: usize,
    mut from: u64,
    want: usize,
    now: u64,
) -> (Vec<Bytes>, usize, u64) {
    let mut found = Vec::new();
    while pos < rcodis_core::NUM_SLOTS {
        let (o, slot) = slot_at(pos, nr);
        if o != id {
            break;
        }
        let (ks, next) = d.scan_slot(slot, from, want - found.len().min(want), now);
        found.extend(ks);
        match next {
            Some(n) => {
                from = n;
                break;
            }
            None => {
                pos += 1;
                from = 0;
            }
        }
        if found.len() >= want {
            break;
        }
    }
    (found, pos, from)
}

/// SCAN's reply cursor for a position.
pub fn scan_cursor(pos: usize, from: u64) -> u64 {
    if pos >= rcodis_core::NUM_SLOTS {
        0
    } else {
        ((pos as u64) << 43) | from
    }
}

async fn scan(c: &mut Conn, req: &Request, out: &mut Out) {
    let Some(a) = crate::cmd::hashes::parse_scan_args(out, req, 1, true) else {
        return;
    };
    let nr = c.shard.nr_shards;
    let mut pos = (a.cursor >> 43) as usize;
    let mut from = a.cursor & ((1u64 << 43) - 1);
    let db = c.db;
    let mut keys: Vec<Bytes> = Vec::new();
    while pos < rcodis_core::NUM_SLOTS && keys.len() < a.count {
        let (owner, _) = slot_at(pos, nr);
        let want = a.count - keys.len();
        let (found, npos, nfrom) = c
            .shard
            .run_on(owner, move |st| {
                let (id, nr) = (st.id, st.nr_shards);
                scan_step(&mut st.dbs[db], id, nr, pos, from, want, now_ms())
            })
            .await;
        keys.extend(found);
        pos = npos;
        from = nfrom;
    }
    // Filters apply after the scan step, as in Redis.
    if a.pattern.is_some() || a.type_.is_some() {
        let tfilter = a.type_.clone();
        let mut kept = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(p) = &a.pattern {
                if !crate::glob::matches(p, &k, false) {
                    continue;
                }
            }
            if let Some(t) = &tfilter {
                let owner = c.shard.shard_of(&k);
                let k2 = k.clone();
                let ty = c
                    .shard
                    .run_on(owner, move |st| {
                        st.dbs[db]
                            .get_quiet(&k2, now_ms())
                            .map(|e| e.value.type_name())
                    })
                    .await;
                if ty.is_none_or(|ty| !t.eq_ignore_ascii_case(ty.as_bytes())) {
                    continue;
                }
            }
            kept.push(k);
        }
        keys = kept;
    }
    let cursor = scan_cursor(pos, from);
    out.array(2);
    out.bulk(cursor.to_string().as_bytes());
    out.array_of_bulks(keys.iter().map(|k| &k[..]));
}

async fn randomkey(c: &mut Conn, out: &mut Out) {
    let db = c.db;
    let sizes = c.shard.run_on_all(move |st| st.dbs[db].len()).await;
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return out.null();
    }
    let mut pick = rand::random::<u64>() as usize % total;
    let mut owner = 0;
    for (i, s) in sizes.iter().enumerate() {
        if pick < *s {
            owner = i;
            break;
        }
        pick -= s;
    }
    let k = c
        .shard
        .run_on(owner, move |st| st.dbs[db].random_key(now_ms()))
        .await;
    match k {
        Some(k) => out.bulk(&k),
        None => out.null(),
    }
}

async fn flush(c: &mut Conn, all: bool, req: &Request, out: &mut Out) {
    if req.len() > 2 || (req.len() == 2 && !is(req.arg(1), "async") && !is(req.arg(1), "sync")) {
        return out.err(SYNTAX);
    }
    let db = c.db;
    let shards: std::collections::BTreeSet<usize> = (0..c.shard.nr_shards).collect();
    let me = c.shard.id;
    c.shard
        .atomic(&shards, |m| {
            for s in &shards {
                m.call(*s, move |st| {
                    if all {
                        for d in &mut st.dbs {
                            d.clear();
                        }
                    } else {
                        st.dbs[db].clear();
                    }
                    if let Some(a) = st.aof.as_mut() {
                        if all {
                            a.log(db, &[b"FLUSHALL"]);
                        } else {
                            a.log(db, &[b"FLUSHDB"]);
                        }
                        a.end_batch();
                        a.drop_replicas("FLUSHALL/FLUSHDB");
                    }
                    // Group readers blocked on a stream that went are told so (list and
                    // sorted-set waiters go on waiting), as in Redis.
                    let gone: Vec<(usize, Bytes)> = st
                        .blocked
                        .keys()
                        .filter(|(d, _)| all || *d == db)
                        .cloned()
                        .collect();
                    for (d, k) in gone {
                        crate::blocking::serve_waiters(st, d, &[k]);
                    }
                });
            }
            let _ = me;
        })
        .await;
    crate::tracking::flush_all();
    out.ok()
}

async fn swapdb(c: &mut Conn, req: &Request, out: &mut Out) {
    let n = c.shard.state.borrow().dbs.len() as i64;
    let (Some(a), Some(b)) = (parse_i64(req.arg(1)), parse_i64(req.arg(2))) else {
        return out.err("ERR invalid first DB index");
    };
    if a < 0 || a >= n {
        return out.err("ERR DB index is out of range");
    }
    if b < 0 || b >= n {
        return out.err("ERR DB index is out of range");
    }
    let (a, b) = (a as usize, b as usize);
    let shards: std::collections::BTreeSet<usize> = (0..c.shard.nr_shards).collect();
    c.shard
        .atomic(&shards, |m| {
            for s in &shards {
                m.call(*s, move |st| {
                    if a != b {
                        let (lo, hi) = st.dbs.split_at_mut(a.max(b));
                        crate::db::Db::swap_data(&mut lo[a.min(b)], &mut hi[0], now_ms());
                        if let Some(l) = st.aof.as_mut() {
                            l.log(
                                0,
                                &[
                                    b"SWAPDB",
                                    a.to_string().as_bytes(),
                                    b.to_string().as_bytes(),
                                ],
                            );
                            l.end_batch();
                            l.drop_replicas("SWAPDB");
                        }
                        // Clients blocked in either database may have data now.
                        let ready: Vec<(usize, Bytes)> = st
                            .blocked
                            .keys()
                            .filter(|(d, _)| *d == a || *d == b)
                            .cloned()
                            .collect();
                        for (d, k) in ready {
                            crate::blocking::serve_waiters(st, d, &[k]);
                        }
                    }
                });
            }
        })
        .await;
    out.ok()
}

async fn move_key(c: &mut Conn, req: &Request, out: &mut Out) {
    let n = c.shard.state.borrow().dbs.len() as i64;
    let Some(dst) = parse_i64(req.arg(2)) else {
        return out.err(NOT_INT);
    };
    if dst < 0 || dst >= n {
        return out.err("ERR DB index is out of range");
    }
    let (src, dst) = (c.db, dst as usize);
    if src == dst {
        return out.err("ERR source and destination objects are the same");
    }
    let key = req.arg_bytes(1);
    let owner = c.shard.shard_of(&key);
    let moved = c
        .shard
        .run_on(owner, move |st| {
            let now = now_ms();
            if st.dbs[dst].exists(&key, now) {
                return false;
            }
            match st.dbs[src].remove(&key, now) {
                Some(e) => {
                    st.dbs[dst].set_entry(&key, e);
                    if let Some(a) = st.aof.as_mut() {
                        a.log(src, &[b"MOVE", &key, dst.to_string().as_bytes()]);
                        a.end_batch();
                    }
                    crate::blocking::serve_waiters(st, dst, &[key]);
                    true
                }
                None => false,
            }
        })
        .await;
    out.int(moved as i64)
}

async fn copy_db(c: &mut Conn, req: &Request, out: &mut Out) {
    let n = c.shard.state.borrow().dbs.len() as i64;
    let mut dst_db = c.db;
    let mut replace = false;
    let mut i = 3;
    while i < req.len() {
        if is(req.arg(i), "replace") {
            replace = true;
        } else if is(req.arg(i), "db") && i + 1 < req.len() {
            match parse_i64(req.arg(i + 1)) {
                Some(d) if d >= 0 && d < n => dst_db = d as usize,
                Some(_) => return out.err("ERR DB index is out of range"),
                None => return out.err(NOT_INT),
            }
            i += 1;
        } else {
            return out.err(SYNTAX);
        }
        i += 1;
    }
    let (src, dst) = (req.arg_bytes(1), req.arg_bytes(2));
    let src_db = c.db;
    if src == dst && src_db == dst_db {
        return out.err("ERR source and destination objects are the same");
    }
    let owners: std::collections::BTreeSet<usize> =
        [c.shard.shard_of(&src), c.shard.shard_of(&dst)]
            .into_iter()
            .collect();
    let (so, dso) = (c.shard.shard_of(&src), c.shard.shard_of(&dst));
    let r = c
        .shard
        .atomic(&owners, |m| {
            let now = now_ms();
            let s2 = src.clone();
            let Some(mut e) = m.call(so, move |st| st.dbs[src_db].get(&s2, now).cloned()) else {
                return 0;
            };
            e.set_access_ms(now);
            let d2 = dst.clone();
            m.call(dso, move |st| {
                if !replace && st.dbs[dst_db].exists(&d2, now) {
                    return 0;
                }
                st.dbs[dst_db].set_entry(&d2, e);
                if let Some(a) = st.aof.as_mut() {
                    a.log_key_state(dst_db, &mut st.dbs[dst_db], &d2, now);
                    a.end_batch();
                }
                crate::blocking::serve_waiters(st, dst_db, &[d2]);
                1
            })
        })
        .await;
    out.int(r)
}

async fn subscribe(c: &mut Conn, kind: &str, req: &Request, out: &mut Out) {
    let id = c.id;
    for i in 1..req.len() {
        let ch = req.arg_bytes(i);
        let sub = c.sub_handle();
        let ch2 = ch.clone();
        let k = kind.to_string();
        let me = c.shard.id;
        c.shard
            .run_on(me, move |st| {
                let map = match k.as_str() {
                    "subscribe" => &mut st.pubsub.channels,
                    "psubscribe" => &mut st.pubsub.patterns,
                    _ => &mut st.pubsub.shard_channels,
                };
                map.entry(ch2).or_default().insert(id, sub);
            })
            .await;
        let count = match kind {
            "subscribe" => {
                c.subs.insert(ch.clone());
                c.subs.len() + c.psubs.len()
            }
            "psubscribe" => {
                c.psubs.insert(ch.clone());
                c.subs.len() + c.psubs.len()
            }
            _ => {
                c.ssubs.insert(ch.clone());
                c.ssubs.len()
            }
        };
        out.raw(&crate::pubsub::confirmation(
            kind,
            Some(&ch),
            count,
            c.resp3,
        ));
    }
}

async fn unsubscribe(c: &mut Conn, kind: &str, req: &Request, out: &mut Out) {
    let id = c.id;
    let set = match kind {
        "unsubscribe" => &c.subs,
        "punsubscribe" => &c.psubs,
        _ => &c.ssubs,
    };
    let targets: Vec<Bytes> = if req.len() > 1 {
        (1..req.len()).map(|i| req.arg_bytes(i)).collect()
    } else {
        let mut v: Vec<Bytes> = set.iter().cloned().collect();
        v.sort();
        v
    };
    if targets.is_empty() {
        let count = if kind == "sunsubscribe" {
            c.ssubs.len()
        } else {
            c.subs.len() + c.psubs.len()
        };
        out.raw(&crate::pubsub::confirmation(kind, None, count, c.resp3));
        return;
    }
    for ch in targets {
        let ch2 = ch.clone();
        let k = kind.to_string();
        let me = c.shard.id;
        c.shard
            .run_on(me, move |st| {
                let map = match k.as_str() {
                    "unsubscribe" => &mut st.pubsub.channels,
                    "punsubscribe" => &mut st.pubsub.patterns,
                    _ => &mut st.pubsub.shard_channels,
                };
                if let Some(subs) = map.get_mut(&ch2) {
                    subs.remove(&id);
                    if subs.is_empty() {
                        map.remove(&ch2);
                    }
                }
            })
            .await;
        let count = match kind {
            "unsubscribe" => {
                c.subs.remove(&ch);
                c.subs.len() + c.psubs.len()
            }
            "punsubscribe" => {
                c.psubs.remove(&ch);
                c.subs.len() + c.psubs.len()
            }
            _ => {
                c.ssubs.remove(&ch);
                c.ssubs.len()
            }
        };
        out.raw(&crate::pubsub::confirmation(
            kind,
            Some(&ch),
            count,
            c.resp3,
        ));
    }
}

/// Aggregated per-shard figures for INFO.
#[derive(Default)]
struct Totals {
    /// Per database: index, keys, keys with a TTL, avg_ttl (ms).
    keys: Vec<(usize, usize, usize, u64)>,
    cmdstats: Vec<(&'static str, crate::shard::CmdStat)>,
    hits: u64,
    misses: u64,
    expired: u64,
    clients: usize,
    blocked: std::collections::HashSet<usize>,
    pubsub_channels: usize,
    pubsub_patterns: usize,
    commands: u64,
    /// Recent commands, network input and output bytes per second.
    rates: [u64; 3],
}

async fn totals(c: &Conn) -> Totals {
    let per = c
        .shard
        .run_on_all(|st| {
            let keys: Vec<(usize, usize, u64)> = st
                .dbs
                .iter()
                .map(|d| (d.len(), d.expires_len(), d.avg_ttl))
                .collect();
            let stats: Vec<(&'static str, crate::shard::CmdStat)> = st
                .cmdstats
                .iter()
                .enumerate()
                .filter(|(_, s)| s.calls > 0)
                .map(|(id, s)| (rcodis_core::cmd::by_id(id as u16).name, *s))
                .collect();
            let expired: u64 = st.dbs.iter().map(|d| d.expired_keys).sum();
            // One client may wait on several keys (and shards): count it once.
            let blocked: Vec<usize> = st
                .blocked
                .values()
                .flatten()
                .filter(|w| !w.claimed.load(Ordering::Acquire))
                .map(|w| std::sync::Arc::as_ptr(&w.claimed) as usize)
                .collect();
            (
                keys,
                stats,
                st.keyspace_hits,
                st.keyspace_misses,
                expired,
                st.clients.len(),
                blocked,
                st.pubsub.channels.len(),
                st.pubsub.patterns.len(),
                st.total_commands,
                st.rates.each_ref().map(|r| r.per_sec()),
            )
        })
        .await;
    let mut t = Totals::default();
    // Keys, keys with a TTL, and the shards' avg_ttl weighted by their keys with a TTL.
    let mut dbs: Vec<(usize, usize, u128)> = Vec::new();
    let mut stats: std::collections::BTreeMap<&'static str, crate::shard::CmdStat> =
        Default::default();
    for (keys, cs, h, m, e, cl, bl, pc, pp, tc, rates) in per {
        t.commands += tc;
        for (sum, r) in t.rates.iter_mut().zip(rates) {
            *sum += r;
        }
        if dbs.is_empty() {
            dbs = vec![(0, 0, 0); keys.len()];
        }
        for (i, (k, x, ttl)) in keys.into_iter().enumerate() {
            dbs[i].0 += k;
            dbs[i].1 += x;
            dbs[i].2 += u128::from(ttl) * x as u128;
        }
        for (name, s) in cs {
            let e = stats.entry(name).or_default();
            e.calls += s.calls;
            e.usec += s.usec;
            e.failed += s.failed;
            e.rejected += s.rejected;
        }
        t.hits += h;
        t.misses += m;
        t.expired += e;
        t.clients += cl;
        t.blocked.extend(bl);
        t.pubsub_channels += pc;
        t.pubsub_patterns += pp;
    }
    t.keys = dbs
        .into_iter()
        .enumerate()
        .filter(|(_, (k, _, _))| *k > 0)
        .map(|(i, (k, x, w))| (i, k, x, if x > 0 { (w / x as u128) as u64 } else { 0 }))
        .collect();
    t.cmdstats = stats.into_iter().collect();
    t
}

async fn info(c: &mut Conn, req: &Request, out: &mut Out) {
    let wanted: Vec<String> = (1..req.len())
        .map(|i| String::from_utf8_lossy(req.arg(i)).to_ascii_lowercase())
        .collect();
    let everything = wanted.iter().any(|w| w == "all" || w == "everything");
    let default = wanted.is_empty() || wanted.iter().any(|w| w == "default");
    let want = |s: &str| {
        everything
            || (default && s != "commandstats" && s != "latencystats")
            || wanted.iter().any(|w| w == s)
    };
    let t = totals(c).await;
    let shared = c.shard.shared.clone();
    let cfg = shared.config();
    let uptime = shared.started.elapsed().as_secs();
    let mut s = String::new();
    use std::fmt::Write;
    if want("server") {
        let _ = write!(
            s,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nrcodis_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nmonotonic_clock:POSIX clock_gettime\r\nmultiplexing_api:io_uring\r\natomicvar_api:c11-builtin\r\ngcc_version:0.0.0\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nhz:10\r\nconfigured_hz:10\r\nlru_clock:{}\r\nexecutable:rcodis-server\r\nconfig_file:\r\nio_threads_active:0\r\nshards:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::process::id(),
            shared.run_id,
            shared.port.load(Ordering::Relaxed),
            now_ms() * 1000,
            uptime / 86400,
            (now_ms() / 1000) & 0xFF_FFFF,
            c.shard.nr_shards,
        );
    }
    if want("clients") {
        let _ = write!(
            s,
            "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nclient_recent_max_input_buffer:0\r\nclient_recent_max_output_buffer:0\r\nblocked_clients:{}\r\ntracking_clients:{}\r\nclients_in_timeout_table:{}\r\n\r\n",
            t.clients,
            shared.param("maxclients"),
            t.blocked.len() + shared.paused_clients.load(Ordering::Relaxed),
            crate::tracking::stats().0,
            t.blocked.len()
        );
    }
    if want("memory") {
        crate::memory::refresh();
        let used = crate::memory::used();
        let rss = rcodis_core::process::rss_bytes();
        let maxmem = crate::memory::max();
        let peak = crate::memory::peak();
        let human = rcodis_core::num::bytes_to_human;
        let lua = crate::cmd::script::lua_memory();
        let (nscripts, scripts_eval) = crate::cmd::script::cache_size();
        let (_, nfunctions) = crate::cmd::function::counts();
        let functions = crate::cmd::function::memory();
        let scripts = scripts_eval + functions;
        let _ = write!(
            s,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nused_memory_peak_perc:{:.2}%\r\nused_memory_lua:{lua}\r\nused_memory_lua_human:{}\r\nused_memory_scripts_eval:{scripts_eval}\r\nnumber_of_cached_scripts:{nscripts}\r\nnumber_of_functions:{nfunctions}\r\nused_memory_vm_functions:{lua}\r\nused_memory_functions:{functions}\r\nused_memory_scripts:{scripts}\r\nused_memory_scripts_human:{}\r\nmaxmemory:{maxmem}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nmem_fragmentation_ratio:{:.2}\r\nmem_allocator:jemalloc-5\r\nlazyfree_pending_objects:0\r\n\r\n",
            human(used),
            human(rss),
            human(peak),
            if peak > 0 { used as f64 * 100.0 / peak as f64 } else { 100.0 },
            human(lua),
            human(scripts),
            human(maxmem),
            shared.param("maxmemory-policy"),
            if used > 0 { rss as f64 / used as f64 } else { 1.0 },
        );
    }
    if want("persistence") {
        let loading = shared.loading.load(Ordering::Relaxed) as u8;
        let loading_info = if loading == 1 {
            let total = shared.loading_total.load(Ordering::Relaxed);
            let done = shared.loading_done.load(Ordering::Relaxed);
            let start = shared.loading_start.load(Ordering::Relaxed);
            let perc = if total > 0 {
                done as f64 * 100.0 / total as f64
            } else {
                0.0
            };
            format!(
                "loading_start_time:{start}\r\nloading_total_records:{total}\r\nloading_loaded_records:{done}\r\nloading_loaded_perc:{perc:.2}\r\n"
            )
        } else {
            String::new()
        };
        let _ = write!(
            s,
            "# Persistence\r\nloading:{loading}\r\nasync_loading:0\r\ncurrent_cow_peak:0\r\nrdb_changes_since_last_save:{}\r\nrdb_bgsave_in_progress:{}\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:{}\r\naof_enabled:{}\r\naof_rewrite_in_progress:{}\r\naof_rewrite_scheduled:0\r\naof_last_bgrewrite_status:{}\r\naof_last_write_status:ok\r\n{loading_info}\r\n",
            crate::aof::DIRTY.load(Ordering::Relaxed),
            shared.bgsave_in_progress.load(Ordering::Relaxed) as u8,
            shared.lastsave.load(Ordering::Relaxed),
            if shared.last_bgsave_ok.load(Ordering::Relaxed) { "ok" } else { "err" },
            cfg.appendonly as u8,
            (crate::aof::REWRITES_RUNNING.load(Ordering::Relaxed) > 0) as u8,
            if crate::aof::LAST_REWRITE_OK.load(Ordering::Relaxed) { "ok" } else { "err" }
        );
    }
    if want("stats") {
        let tracking = crate::tracking::stats();
        let _ = write!(
            s,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\ninstantaneous_input_kbps:{:.2}\r\ninstantaneous_output_kbps:{:.2}\r\nrejected_connections:{}\r\nsync_full:{}\r\nsync_partial_ok:0\r\nsync_partial_err:0\r\nexpired_keys:{}\r\nexpired_stale_perc:0.00\r\nevicted_keys:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\nlatest_fork_usec:{}\r\ntotal_forks:{}\r\nmigrate_cached_sockets:0\r\ntotal_active_defrag_time:0\r\ntracking_total_keys:{}\r\ntracking_total_items:{}\r\ntracking_total_prefixes:{}\r\ntotal_error_replies:{}\r\n\r\n",
            shared.total_connections.load(Ordering::Relaxed),
            t.commands,
            t.rates[0],
            shared.net_input_bytes.load(Ordering::Relaxed),
            shared.net_output_bytes.load(Ordering::Relaxed),
            t.rates[1] as f64 / 1024.0,
            t.rates[2] as f64 / 1024.0,
            shared.rejected_connections.load(Ordering::Relaxed),
            shared.repl.sync_full.load(Ordering::Relaxed),
            t.expired,
            crate::memory::evicted(),
            t.hits,
            t.misses,
            t.pubsub_channels,
            t.pubsub_patterns,
            crate::fork::LATEST_FORK_USEC.load(Ordering::Relaxed),
            crate::fork::TOTAL_FORKS.load(Ordering::Relaxed),
            tracking.1,
            tracking.2,
            tracking.3,
            t.cmdstats.iter().map(|(_, s)| s.failed).sum::<u64>(),
        );
    }
    if want("replication") {
        s.push_str(&crate::repl::info(&shared, &shared.run_id));
    }
    if want("cpu") {
        let (sys, user) = rcodis_core::process::cpu_times();
        let (csys, cuser) = rcodis_core::process::children_cpu_times();
        let _ = write!(s, "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:{csys:.6}\r\nused_cpu_user_children:{cuser:.6}\r\n\r\n");
    }
    if want("modules") {
        s.push_str("# Modules\r\n\r\n");
    }
    if want("errorstats") {
        s.push_str("# Errorstats\r\n\r\n");
    }
    if want("cluster") {
        s.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if want("commandstats") {
        s.push_str("# Commandstats\r\n");
        for (name, st) in &t.cmdstats {
            let per = if st.calls > 0 {
                st.usec as f64 / st.calls as f64
            } else {
                0.0
            };
            let _ = write!(
                s,
                "cmdstat_{}:calls={},usec={},usec_per_call={per:.2},rejected_calls={},failed_calls={}\r\n",
                name,
                st.calls,
                st.usec,
                st.rejected,
                st.failed
            );
        }
        s.push_str("\r\n");
    }
    if want("keyspace") {
        s.push_str("# Keyspace\r\n");
        for (db, keys, expires, avg_ttl) in &t.keys {
            let _ = write!(
                s,
                "db{db}:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n"
            );
        }
        s.push_str("\r\n");
    }
    let _ = cfg;
    while s.ends_with("\r\n\r\n") {
        s.truncate(s.len() - 2);
    }
    out.verbatim(&s)
}

fn config_get(c: &mut Conn, req: &Request, out: &mut Out) {
    let params = c.shard.shared.params.read().expect("params").clone();
    let mut found: Vec<(String, String)> = Vec::new();
    for i in 2..req.len() {
        let pat = String::from_utf8_lossy(req.arg(i)).to_ascii_lowercase();
        for (k, v) in &params {
            if crate::glob::matches(pat.as_bytes(), k.as_bytes(), true)
                && !found.iter().any(|(f, _)| f == k)
            {
                found.push((k.clone(), v.clone()));
            }
        }
    }
    out.map(found.len());
    for (k, v) in found {
        out.bulk(k.as_bytes());
        out.bulk(v.as_bytes());
    }
}

async fn config_set(c: &mut Conn, req: &Request, out: &mut Out) {
    if req.len() < 4 || !req.len().is_multiple_of(2) {
        return out.err("ERR wrong number of arguments for 'config|set' command");
    }
    let mut changes = Vec::new();
    for i in (2..req.len()).step_by(2) {
        let name = String::from_utf8_lossy(req.arg(i)).to_ascii_lowercase();
        let value = String::from_utf8_lossy(req.arg(i + 1)).into_owned();
        if !c
            .shard
            .shared
            .params
            .read()
            .expect("params")
            .contains_key(&name)
        {
            return out.err(&format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
            ));
        }
        if changes.iter().any(|(n, _): &(String, String)| *n == name) {
            return out.err(&format!("ERR CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter"));
        }
        match crate::params::check(&name, &value) {
            Ok(v) => changes.push((name, v)),
            Err(e) => return out.err(&e),
        }
    }
    {
        let mut p = c.shard.shared.params.write().expect("params");
        for (k, v) in &changes {
            p.insert(k.clone(), v.clone());
            // Redis 7's old names are the same settings.
            if let Some(other) = crate::params::alias_of(k) {
                p.insert(other.to_string(), v.clone());
            }
        }
    }
    for (k, v) in changes {
        crate::db::set_encoding_limit(&k, &v);
        match k.as_str() {
            "slowlog-log-slower-than" | "slowlog-max-len" => {
                let n: i64 = v.parse().unwrap_or(0);
                let is_threshold = k == "slowlog-log-slower-than";
                c.shard
                    .run_on_all(move |st| {
                        if is_threshold {
                            st.slowlog_threshold_us = n;
                        } else {
                            st.slowlog_max_len = n.max(0) as usize;
                            while st.slowlog.len() > st.slowlog_max_len {
                                st.slowlog.pop_front();
                            }
                        }
                    })
                    .await;
            }
            "busy-reply-threshold" | "lua-time-limit" => {
                // One setting under two names (Redis 7).
                let other = if k == "lua-time-limit" {
                    "busy-reply-threshold"
                } else {
                    "lua-time-limit"
                };
                c.shard
                    .shared
                    .params
                    .write()
                    .expect("params")
                    .insert(other.to_string(), v.clone());
                crate::cmd::script::set_busy_threshold(&v);
            }
            "hll-sparse-max-bytes" => crate::cmd::hll::set_sparse_max(&v),
            "notify-keyspace-events" => crate::notify::set(&v),
            "tracking-table-max-keys" => {
                crate::tracking::set_max_keys(v.parse().unwrap_or(1_000_000))
            }
            "stream-node-max-bytes" | "stream-node-max-entries" => {
                crate::db::stream::set_node_limits(
                    &c.shard.shared.param("stream-node-max-bytes"),
                    &c.shard.shared.param("stream-node-max-entries"),
                )
            }
            "maxmemory" => {
                crate::memory::set_max(v.parse().unwrap_or(0));
                // As Redis: a lower limit evicts at once, not at the next write.
                c.shard
                    .run_on_all(|st| {
                        let now = now_ms();
                        let _ = crate::memory::ensure_room(&mut st.dbs, now);
                        for db in 0..st.dbs.len() {
                            crate::notify::flush(st, db);
                        }
                    })
                    .await;
                c.shard.send_deferred();
            }
            "maxmemory-policy" => {
                if let Some(p) = crate::memory::Policy::parse(&v) {
                    crate::memory::set_policy(p)
                }
            }
            "maxmemory-samples" => crate::memory::set_samples(v.parse().unwrap_or(5)),
            "lfu-log-factor" | "lfu-decay-time" => crate::memory::set_lfu(
                c.shard.shared.param("lfu-log-factor").parse().unwrap_or(10),
                c.shard.shared.param("lfu-decay-time").parse().unwrap_or(1),
            ),
            _ => {}
        }
    }
    out.ok()
}

fn key_spec_reply(o: &mut Out, ks: &rcodis_core::cmd::KeySpec) {
    if ks.notes.is_empty() {
        o.map(3);
    } else {
        o.map(4);
        o.bulk(b"notes");
        o.bulk(ks.notes.as_bytes());
    }
    o.bulk(b"flags");
    let names: Vec<&str> = [
        (KeyFlags::RO, "RO"),
        (KeyFlags::RW, "RW"),
        (KeyFlags::OW, "OW"),
        (KeyFlags::RM, "RM"),
        (KeyFlags::ACCESS, "access"),
        (KeyFlags::UPDATE, "update"),
        (KeyFlags::INSERT, "insert"),
        (KeyFlags::DELETE, "delete"),
        (KeyFlags::NOT_KEY, "not_key"),
        (KeyFlags::INCOMPLETE, "incomplete"),
        (KeyFlags::VARIABLE_FLAGS, "variable_flags"),
    ]
    .into_iter()
    .filter(|(f, _)| ks.flags.contains(*f))
    .map(|(_, n)| n)
    .collect();
    o.set(names.len());
    for n in names {
        o.simple(n);
    }
    o.bulk(b"begin_search");
    match ks.begin {
        BeginSearch::Index(i) => typed_spec(o, "index", &[("index", SpecVal::Int(i as i64))]),
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => typed_spec(
            o,
            "keyword",
            &[
                ("keyword", SpecVal::Str(keyword)),
                ("startfrom", SpecVal::Int(start_from as i64)),
            ],
        ),
        BeginSearch::Unknown => typed_spec(o, "unknown", &[]),
    }
    o.bulk(b"find_keys");
    match ks.find {
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => typed_spec(
            o,
            "range",
            &[
                ("lastkey", SpecVal::Int(last_key as i64)),
                ("keystep", SpecVal::Int(key_step as i64)),
                ("limit", SpecVal::Int(limit as i64)),
            ],
        ),
        FindKeys::KeyNum {
            keynum_idx,
            first_key,
            key_step,
        } => typed_spec(
            o,
            "keynum",
            &[
                ("keynumidx", SpecVal::Int(keynum_idx as i64)),
                ("firstkey", SpecVal::Int(first_key as i64)),
                ("keystep", SpecVal::Int(key_step as i64)),
            ],
        ),
        FindKeys::Unknown => typed_spec(o, "unknown", &[]),
    }
}

/// A value inside a key spec's `spec` map.
enum SpecVal {
    Int(i64),
    Str(&'static str),
}

/// `{type: ty, spec: {name: value, ...}}`, the shape of begin_search and find_keys.
fn typed_spec(o: &mut Out, ty: &str, fields: &[(&str, SpecVal)]) {
    o.map(2);
    o.bulk(b"type");
    o.bulk(ty.as_bytes());
    o.bulk(b"spec");
    o.map(fields.len());
    for (name, v) in fields {
        o.bulk(name.as_bytes());
        match v {
            SpecVal::Int(i) => o.int(*i),
            SpecVal::Str(s) => o.bulk(s.as_bytes()),
        }
    }
}

fn command_entry(o: &mut Out, s: &CommandSpec) {
    o.array(10);
    o.bulk(s.name.as_bytes());
    o.int(s.arity as i64);
    let flags: Vec<&str> = s.flags.names().collect();
    o.set(flags.len());
    for f in flags {
        o.simple(f);
    }
    o.int(s.first_key as i64);
    o.int(s.last_key as i64);
    o.int(s.key_step as i64);
    o.set(s.acl_categories.len());
    for c in s.acl_categories {
        o.simple(c);
    }
    o.array(s.tips.len());
    for t in s.tips {
        o.bulk(t.as_bytes());
    }
    o.array(s.key_specs.len());
    for ks in s.key_specs {
        key_spec_reply(o, ks);
    }
    o.array(s.subcommands.len());
    for sub in s.subcommands {
        command_entry(o, sub);
    }
}

fn command_info(req: &Request, all_if_empty: bool, out: &mut Out) {
    let names: Vec<&[u8]> = if all_if_empty && req.len() == 1 {
        Vec::new()
    } else {
        (if all_if_empty { 1 } else { 2 }..req.len())
            .map(|i| req.arg(i))
            .collect()
    };
    if all_if_empty && req.len() == 1 || (!all_if_empty && req.len() == 2) {
        out.array(COMMANDS.len());
        for s in COMMANDS.iter() {
            command_entry(out, s);
        }
        return;
    }
    out.array(names.len());
    for n in names {
        let found = match n.iter().position(|&b| b == b'|') {
            Some(p) => table::lookup(&n[..p]).and_then(|c| table::lookup_sub(c, &n[p + 1..])),
            None => table::lookup(n),
        };
        match found {
            Some(s) => command_entry(out, s),
            None => out.null_array(),
        }
    }
}

fn command_list(req: &Request, out: &mut Out) {
    let mut names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
    if req.len() == 5 && is(req.arg(2), "filterby") && is(req.arg(3), "pattern") {
        let p = req.arg(4).to_ascii_lowercase();
        names.retain(|n| crate::glob::matches(&p, n.as_bytes(), true));
    } else if req.len() != 2 {
        return out.err(SYNTAX);
    }
    out.array_of_bulks(names.iter().map(|n| n.as_bytes()))
}

fn command_docs(req: &Request, out: &mut Out) {
    let specs: Vec<&CommandSpec> = if req.len() == 2 {
        COMMANDS.iter().collect()
    } else {
        (2..req.len())
            .filter_map(|i| table::lookup(req.arg(i)))
            .collect()
    };
    out.map(specs.len());
    for s in specs {
        out.bulk(s.name.as_bytes());
        out.map(2);
        out.bulk(b"summary");
        out.bulk(b"");
        out.bulk(b"since");
        out.bulk(b"1.0.0");
    }
}

fn command_getkeys(req: &Request, with_flags: bool, out: &mut Out) {
    let args: Vec<&[u8]> = (2..req.len()).map(|i| req.arg(i)).collect();
    let spec = match table::resolve(|i| args.get(i).copied()) {
        Ok(s) => s,
        Err(table::CommandError::Unknown(_)) => return out.err("ERR Invalid command specified"),
        Err(_) => return out.err("ERR Invalid number of arguments specified for command"),
    };
    if !spec.has_keys() && !spec.has(rcodis_core::cmd::CommandFlags::MOVABLEKEYS) {
        return out.err("ERR The command has no key arguments");
    }
    match table::key_indexes(spec, &args, false) {
        Ok(idx) if !idx.is_empty() => {
            out.array(idx.len());
            for i in idx {
                if with_flags {
                    out.array(2);
                    out.bulk(args[i]);
                    out.array(0);
                } else {
                    out.bulk(args[i]);
                }
            }
        }
        Ok(_) => out.err("ERR The command has no key arguments"),
        Err(_) => out.err("ERR Invalid arguments specified for command"),
    }
}

async fn client_list(c: &mut Conn, req: &Request, out: &mut Out) {
    c.update_info_now();
    let mut ids: Option<Vec<u64>> = None;
    if req.len() > 2 {
        if is(req.arg(2), "id") && req.len() > 3 {
            let mut v = Vec::new();
            for i in 3..req.len() {
                match parse_i64(req.arg(i)) {
                    Some(x) if x > 0 => v.push(x as u64),
                    _ => return out.err("ERR Invalid client ID"),
                }
            }
            ids = Some(v);
        } else if is(req.arg(2), "type") && req.len() == 4 {
            let t = req.arg(3);
            if !(is(t, "normal")
                || is(t, "master")
                || is(t, "replica")
                || is(t, "slave")
                || is(t, "pubsub"))
            {
                return out.err(&format!(
                    "ERR Unknown client type '{}'",
                    String::from_utf8_lossy(t)
                ));
            }
            if !is(t, "normal") && !is(t, "pubsub") {
                return out.verbatim("");
            }
        } else {
            return out.err(SYNTAX);
        }
    }
    let lists = c
        .shard
        .run_on_all(|st| {
            st.clients
                .values()
                .map(|i| (i.id, i.line()))
                .collect::<Vec<_>>()
        })
        .await;
    let mut all: Vec<(u64, String)> = lists.into_iter().flatten().collect();
    all.sort();
    let mut s = String::new();
    for (id, line) in all {
        if ids.as_ref().is_none_or(|v| v.contains(&id)) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    out.verbatim(&s)
}

async fn client_kill(c: &mut Conn, req: &Request, out: &mut Out) {
    // CLIENT KILL addr | CLIENT KILL [ID id] [ADDR a] [LADDR a] [SKIPME yes|no]
    let mut id = None;
    let mut addr = None;
    let mut laddr = None;
    let mut skipme = true;
    let legacy = req.len() == 3;
    if legacy {
        addr = Some(String::from_utf8_lossy(req.arg(2)).into_owned());
    } else {
        let mut i = 2;
        while i + 1 < req.len() {
            let (o, v) = (req.arg(i), req.arg(i + 1));
            if is(o, "id") {
                match parse_i64(v) {
                    Some(x) if x > 0 => id = Some(x as u64),
                    _ => return out.err("ERR client-id should be greater than 0"),
                }
            } else if is(o, "addr") {
                addr = Some(String::from_utf8_lossy(v).into_owned());
            } else if is(o, "laddr") {
                laddr = Some(String::from_utf8_lossy(v).into_owned());
            } else if is(o, "skipme") {
                skipme = is(v, "yes");
            } else if is(o, "type") || is(o, "user") || is(o, "maxage") {
            } else {
                return out.err(SYNTAX);
            }
            i += 2;
        }
        if i != req.len() {
            return out.err(SYNTAX);
        }
    }
    let me = c.id;
    let lists = c
        .shard
        .run_on_all(|st| {
            st.clients
                .values()
                .map(|i| (i.id, i.addr.clone(), i.laddr.clone(), i.fd))
                .collect::<Vec<_>>()
        })
        .await;
    let mut killed = 0;
    for (cid, a, la, fd) in lists.into_iter().flatten() {
        if id.is_some_and(|x| x != cid)
            || addr.as_ref().is_some_and(|x| *x != a)
            || laddr.as_ref().is_some_and(|x| *x != la)
            || (skipme && cid == me)
        {
            continue;
        }
        if cid == me {
            c.close = true;
        } else {
            // Shutting the socket down wakes its connection task, which then closes.
            unsafe_shutdown(fd);
        }
        killed += 1;
    }
    if legacy {
        if killed == 0 {
            return out.err("ERR No such client");
        }
        return out.ok();
    }
    out.int(killed)
}

fn unsafe_shutdown(fd: i32) {
    // shutdown(2) on a socket fd owned by another connection task: it only changes the
    // socket's state; the owning task sees EOF and closes the fd itself.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

async fn slowlog_get(c: &mut Conn, req: &Request, out: &mut Out) {
    let count = match req.get(2) {
        None => 10,
        Some(v) => match parse_i64(v) {
            Some(n) if n >= -1 => n,
            _ => return out.err("ERR count should be greater than or equal to -1"),
        },
    };
    let lists = c
        .shard
        .run_on_all(|st| st.slowlog.iter().cloned().collect::<Vec<_>>())
        .await;
    let mut all: Vec<crate::shard::SlowEntry> = lists.into_iter().flatten().collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.id));
    if count >= 0 {
        all.truncate(count as usize);
    }
    out.array(all.len());
    for e in all {
        out.array(6);
        out.int(e.id as i64);
        out.int(e.unix as i64);
        out.int(e.usec as i64);
        out.array_of_bulks(e.args.iter().map(|a| &a[..]));
        out.bulk(b"");
        out.bulk(b"");
    }
}

/// CLIENT TRACKING ON|OFF [REDIRECT id] [BCAST] [PREFIX p ...] [OPTIN] [OPTOUT] [NOLOOP],
/// with Redis's checks and errors (see `tracking.rs`).
async fn client_tracking(c: &mut Conn, req: &Request, out: &mut Out) {
    let mut opts = crate::tracking::Options::default();
    let mut redir_box = None;
    let mut i = 3;
    while i < req.len() {
        let a = req.arg(i);
        let more = i + 1 < req.len();
        if is(a, "redirect") && more {
            i += 1;
            if opts.redirect != 0 {
                return out.err("ERR A client can only redirect to a single other client");
            }
            let Some(id) = rcodis_core::num::parse_i64(req.arg(i)) else {
                return out.err(crate::cmd::NOT_INT);
            };
            let found = c
                .shard
                .run_on_all(move |st| st.clients.get(&(id as u64)).map(|ci| ci.mailbox.clone()))
                .await
                .into_iter()
                .flatten()
                .next();
            let Some(mb) = found.filter(|_| id > 0) else {
                return out.err("ERR The client ID you want redirect to does not exist");
            };
            opts.redirect = id as u64;
            redir_box = Some(mb);
        } else if is(a, "bcast") {
            opts.bcast = true;
        } else if is(a, "optin") {
            opts.optin = true;
        } else if is(a, "optout") {
            opts.optout = true;
        } else if is(a, "noloop") {
            opts.noloop = true;
        } else if is(a, "prefix") && more {
            i += 1;
            opts.prefixes.push(req.arg_bytes(i));
        } else {
            return out.err(SYNTAX);
        }
        i += 1;
    }
    if is(req.arg(2), "off") {
        if c.tracking.take().is_some() {
            crate::tracking::disable(c.id);
        }
        c.caching = false;
        c.update_info_now();
        return out.ok();
    }
    if !is(req.arg(2), "on") {
        return out.err(SYNTAX);
    }
    if !opts.bcast && !opts.prefixes.is_empty() {
        return out.err("ERR PREFIX option requires BCAST mode to be enabled");
    }
    let old = c.tracking.clone();
    if let Some(o) = &old {
        if o.opts.bcast != opts.bcast {
            return out.err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
    }
    if opts.bcast && (opts.optin || opts.optout) {
        return out.err("ERR OPTIN and OPTOUT are not compatible with BCAST");
    }
    if opts.optin && opts.optout {
        return out.err("ERR You can't specify both OPTIN mode and OPTOUT mode");
    }
    if let Some(o) = &old {
        if (opts.optin && o.opts.optout) || (opts.optout && o.opts.optin) {
            return out.err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.");
        }
    }
    if opts.bcast {
        let existing = old
            .as_ref()
            .map(|o| o.opts.prefixes.clone())
            .unwrap_or_default();
        if let Some(e) = crate::tracking::prefix_collision(&existing, &opts.prefixes) {
            return out.err(&e);
        }
        // No prefix means every key; prefixes add to those the client has.
        let mut all = existing;
        if opts.prefixes.is_empty() {
            opts.prefixes.push(Bytes::new());
        }
        for p in std::mem::take(&mut opts.prefixes) {
            if !all.contains(&p) {
                all.push(p);
            }
        }
        all.sort();
        opts.prefixes = all;
    }
    let t = crate::tracking::Tracker {
        id: c.id,
        own: c.mailbox.clone(),
        redir: redir_box,
        opts,
        broken: std::sync::atomic::AtomicBool::new(false),
    };
    crate::tracking::enable(t);
    c.tracking = crate::tracking::tracker(c.id);
    c.update_info_now();
    out.ok()
}

/// DEBUG RELOAD and LOADAOF on one shard: empties its databases (unless merging) and
/// replays `reqs` into them. Same data before and after: the append-only log does not
/// record the replay.
fn reload_shard(st: &mut crate::shard::ShardState, reqs: &[Request], flush: bool) {
    let (id, nr) = (st.id, st.nr_shards);
    if flush {
        for d in &mut st.dbs {
            d.clear();
        }
    }
    let log = st.aof.take();
    crate::replay::replay(std::slice::from_mut(st), reqs, id, nr, &mut || {});
    st.aof = log;
}

async fn debug(c: &mut Conn, req: &Request, out: &mut Out) {
    let sub = req.get(1).unwrap_or(b"");
    if is(sub, "sleep") && req.len() == 3 {
        let Some(secs) = crate::cmd::parse_float(req.arg(2)) else {
            return out.err(crate::cmd::NOT_FLOAT);
        };
        // DEBUG SLEEP blocks the whole server in Redis; here it blocks this shard's thread.
        std::thread::sleep(std::time::Duration::from_secs_f64(secs.max(0.0)));
        return out.ok();
    }
    if is(sub, "populate") && (3..=5).contains(&req.len()) {
        // Redis's DEBUG POPULATE count [prefix] [size]: keys `prefix:N` holding `value:N`
        // (zero-padded or cut to `size`); existing keys are left alone; not logged (as Redis).
        let Some(count) = rcodis_core::num::parse_i64(req.arg(2)).filter(|n| *n >= 0) else {
            return out.err("ERR value is out of range, must be positive");
        };
        let prefix = req
            .get(3)
            .map(|p| p.to_vec())
            .unwrap_or_else(|| b"key".to_vec());
        let size = match req.get(4) {
            Some(a) => match rcodis_core::num::parse_i64(a).filter(|n| *n >= 0) {
                Some(n) => Some(n as usize),
                None => return out.err("ERR value is out of range, must be positive"),
            },
            None => None,
        };
        let db = c.db;
        c.shard
            .run_on_all(move |st| {
                let now = now_ms();
                let mut key = prefix.clone();
                let d = &mut st.dbs[db];
                for i in 0..count as u64 {
                    key.truncate(prefix.len());
                    key.push(b':');
                    key.extend_from_slice(i.to_string().as_bytes());
                    if !d.owns(&key) || d.exists(&key, now) {
                        continue;
                    }
                    let mut v = format!("value:{i}").into_bytes();
                    if let Some(n) = size {
                        v.resize(n, 0);
                    }
                    d.set(&key, crate::db::Value::Str(v.into()), now);
                }
            })
            .await;
        return out.ok();
    }
    if is(sub, "set-active-expire") && req.len() == 3 {
        let on = req.arg(2) != b"0";
        c.shard.run_on_all(move |st| st.active_expire = on).await;
        return out.ok();
    }
    if is(sub, "object") && req.len() == 3 {
        let key = req.arg_bytes(2);
        let owner = c.shard.shard_of(&key);
        let db = c.db;
        let r = c
            .shard
            .run_on(owner, move |st| {
                st.dbs[db].get_quiet(&key, now_ms()).map(|e| {
                    format!(
                        "Value at:0x0 refcount:1 encoding:{} serializedlength:{} lru:0 lru_seconds_idle:{}",
                        e.encoding(),
                        e.value.mem_size(),
                        now_ms().saturating_sub(e.access_ms()) / 1000
                    )
                })
            })
            .await;
        return match r {
            Some(s) => out.simple(&s),
            None => out.err("ERR no such key"),
        };
    }
    if is(sub, "protocol") && req.len() == 3 {
        // Each RESP3 type, for testing clients (RESP2 gets its fallbacks, as in Redis).
        let t = String::from_utf8_lossy(req.arg(2)).to_ascii_lowercase();
        match t.as_str() {
            "string" => out.bulk(b"Hello World"),
            "integer" => out.int(12345),
            // Redis's own test value (not pi).
            #[allow(clippy::approx_constant)]
            "double" => out.double(3.141),
            "bignum" => out.big_number(b"1234567999999999999999999999999999999"),
            "null" => out.null(),
            "array" => {
                out.array(3);
                (0..3).for_each(|j| out.int(j));
            }
            "set" => {
                out.set(3);
                (0..3).for_each(|j| out.int(j));
            }
            "map" => {
                out.map(3);
                for j in 0..3 {
                    out.int(j);
                    out.boolean(j == 1);
                }
            }
            "attrib" => {
                if out.resp3 {
                    rcodis_core::resp::encode::write_aggregate_len(&mut out.buf, b'|', 1);
                    out.bulk(b"key-popularity");
                    out.array(2);
                    out.bulk(b"key:123");
                    out.int(90);
                }
                out.bulk(b"Some real reply following the attribute");
            }
            "push" => {
                if !out.resp3 {
                    return out.err("ERR RESP2 is not supported by this command");
                }
                rcodis_core::resp::encode::write_aggregate_len(&mut out.buf, b'>', 2);
                out.bulk(b"server-cpu-usage");
                out.int(42);
                out.bulk(b"Some real reply following the push reply");
            }
            "true" => out.boolean(true),
            "false" => out.boolean(false),
            "verbatim" => out.verbatim_as(b"txt", b"This is a verbatim\nstring"),
            _ => out.err("ERR Wrong protocol type name. Please use one of the following: string|integer|double|bignum|null|array|set|map|attrib|push|verbatim|true|false"),
        }
        return;
    }
    if is(sub, "digest") && req.len() == 2 {
        let parts = c
            .shard
            .run_on_all(|st| st.dbs.iter().map(|d| d.digest_part()).collect::<Vec<_>>())
            .await;
        let mut dbs: Vec<Option<crate::db::digest::Digest>> = Vec::new();
        for shard in parts {
            dbs.resize(dbs.len().max(shard.len()), None);
            for (acc, p) in dbs.iter_mut().zip(shard) {
                if let Some(p) = p {
                    let a = acc.get_or_insert([0; 20]);
                    for (x, y) in a.iter_mut().zip(p) {
                        *x ^= y;
                    }
                }
            }
        }
        let d = crate::db::digest::dataset_digest(&dbs);
        return out.simple(&crate::db::digest::hex(&d));
    }
    if is(sub, "digest-value") {
        out.array(req.len() - 2);
        for i in 2..req.len() {
            let key = req.arg_bytes(i);
            let owner = c.shard.shard_of(&key);
            let db = c.db;
            let d = c
                .shard
                .run_on(owner, move |st| {
                    crate::db::digest::value_digest(st.dbs[db].peek(&key))
                })
                .await;
            out.simple(&crate::db::digest::hex(&d));
        }
        return;
    }
    if is(sub, "loadaof") && req.len() == 2 {
        // Writes out what the logs buffer, empties the data and loads it back from them.
        let dir = c.shard.shared.config().dir;
        let results = c
            .shard
            .run_on_all(move |st| -> Result<(), String> {
                match st.aof.as_mut() {
                    Some(log) if log.has_file() => log.sync(),
                    _ => return Err("appendonly is off: there is no log to load".into()),
                }
                let reqs = crate::aof::read_log(&crate::aof::path_of(&dir, st.id), false)
                    .map_err(|e| e.0)?;
                reload_shard(st, &reqs, true);
                Ok(())
            })
            .await;
        crate::tracking::flush_all();
        return match results.into_iter().find_map(|r| r.err()) {
            Some(e) => out.err(&format!("ERR DEBUG LOADAOF failed: {e}")),
            None => out.ok(),
        };
    }
    if is(sub, "reload") {
        // Save every shard's snapshot (not with NOSAVE), drop the data (not with NOFLUSH),
        // and load it back in place. Loading over data that is still there is refused
        // unless MERGE (Redis fails on the first duplicate key).
        let (mut nosave, mut noflush, mut merge) = (false, false, false);
        for a in req.args().skip(2) {
            if is(a, "nosave") {
                nosave = true;
            } else if is(a, "noflush") {
                noflush = true;
            } else if is(a, "merge") {
                merge = true;
            } else {
                return out
                    .err("ERR DEBUG RELOAD only supports the MERGE, NOFLUSH and NOSAVE options.");
            }
        }
        if noflush && !merge {
            let keys: usize = c
                .shard
                .run_on_all(|st| st.dbs.iter().map(|d| d.len()).sum::<usize>())
                .await
                .into_iter()
                .sum();
            if keys > 0 || crate::cmd::function::counts().0 > 0 {
                return out.err("ERR Error trying to load the RDB dump, check server logs.");
            }
        }
        let dir = c.shard.shared.config().dir;
        let results = c
            .shard
            .run_on_all(move |st| -> Result<(), String> {
                let now = now_ms();
                if !nosave {
                    let pre = crate::cmd::function::image_for(st.id);
                    crate::aof::write_snapshot(&dir, st.id, &mut st.dbs, now, &pre)
                        .map_err(|e| e.to_string())?;
                }
                let mut reqs = crate::aof::read_log(&crate::aof::snapshot_path(&dir, st.id), false)
                    .map_err(|e| e.0)?;
                if noflush {
                    // Merging: the image's libraries join those loaded now.
                    reqs.retain(|r| {
                        !(r.len() == 2 && is(r.arg(0), "function") && is(r.arg(1), "flush"))
                    });
                }
                reload_shard(st, &reqs, !noflush);
                Ok(())
            })
            .await;
        crate::tracking::flush_all();
        return match results.into_iter().find_map(|r| r.err()) {
            Some(e) => out.err(&format!("ERR Error trying to load the RDB dump: {e}")),
            None => out.ok(),
        };
    }
    if is(sub, "jmap")
        || is(sub, "quicklist-packed-threshold")
        || is(sub, "change-repl-id")
        || is(sub, "replybuffer")
    {
        return out.ok();
    }
    if is(sub, "help") {
        return help(
            out,
            "DEBUG",
            &[
                "DIGEST",
                "    Output a hex signature representing the current DB content.",
                "DIGEST-VALUE <key> [<key> ...]",
                "    Output a hex signature of the values of all the specified keys.",
                "LOADAOF",
                "    Flush the AOF buffers on disk and reload the AOF in memory.",
                "OBJECT <key>",
                "POPULATE <count> [<prefix>] [<size>]",
                "PROTOCOL <type>",
                "    Reply with a test value of the specified type (string|integer|double|bignum|null|array|set|map|attrib|push|verbatim|true|false).",
                "RELOAD",
                "    Save the data, empty it and load it back.",
                "SET-ACTIVE-EXPIRE <0|1>",
                "SLEEP <seconds>",
            ],
        );
    }
    out.err(&format!(
        "ERR unknown subcommand '{}'. Try DEBUG HELP.",
        String::from_utf8_lossy(sub)
    ))
}
