//! Start-up replay of the shard logs, before any shard thread runs: every shard's state is
//! in hand, so a log written with another shard count replays just as well (each command
//! goes to the shards that own its keys now). Global commands in a log (FLUSHALL, FLUSHDB,
//! SWAPDB) apply to the keys that log's shard owned when it was written.

use bytes::Bytes;
use rcodis_core::cmd::{self as table, CommandFlags};
use rcodis_core::num::parse_i64;
use rcodis_core::resp::Request;
use rcodis_core::slot::slot_of;

use crate::cmd::{self, Ctx};
use crate::db::{now_ms, Db};
use crate::exec::{exec_local, Clock};
use crate::out::Out;
use crate::shard::ShardState;

/// Replays one log (`file_shard` of `file_count` when it was written). Returns how many
/// commands were applied.
pub fn replay(
    states: &mut [ShardState],
    reqs: &[Request],
    file_shard: usize,
    file_count: usize,
    tick: &mut dyn FnMut(),
) -> usize {
    let nr = states.len();
    let mut db = 0usize;
    let mut applied = 0;
    let mut clock = Clock::start();
    let was_here = |k: &[u8]| slot_of(k) as usize % file_count.max(1) == file_shard;
    for req in reqs {
        let Ok(spec) = table::resolve_request(req) else {
            tracing::warn!(command = ?req, "AOF: skipping an unknown command");
            continue;
        };
        applied += 1;
        tick();
        match spec.name {
            "select" => {
                if let Some(d) = parse_i64(req.arg(1)) {
                    if d >= 0 && (d as usize) < states[0].dbs.len() {
                        db = d as usize;
                    }
                }
            }
            "flushall" | "flushdb" => {
                for st in states.iter_mut() {
                    for (i, d) in st.dbs.iter_mut().enumerate() {
                        if spec.name == "flushall" || i == db {
                            remove_where(d, was_here);
                        }
                    }
                }
            }
            "swapdb" => {
                let (Some(a), Some(b)) = (parse_i64(req.arg(1)), parse_i64(req.arg(2))) else {
                    continue;
                };
                let (a, b) = (a as usize, b as usize);
                if a == b || a >= states[0].dbs.len() || b >= states[0].dbs.len() {
                    continue;
                }
                for st in states.iter_mut() {
                    let now = now_ms();
                    let take = |d: &mut Db| {
                        let mut keys = Vec::new();
                        d.for_each_key(now, |k, _| {
                            if was_here(k) {
                                keys.push(k.clone());
                            }
                        });
                        keys.into_iter()
                            .filter_map(|k| d.remove(&k, now).map(|e| (k, e)))
                            .collect::<Vec<_>>()
                    };
                    let from_a = take(&mut st.dbs[a]);
                    let from_b = take(&mut st.dbs[b]);
                    for (k, e) in from_a {
                        st.dbs[b].set_entry(&k, e);
                    }
                    for (k, e) in from_b {
                        st.dbs[a].set_entry(&k, e);
                    }
                }
            }
            "move" => {
                let Some(to) = parse_i64(req.arg(2)) else {
                    continue;
                };
                let key = req.arg(1);
                let st = &mut states[slot_of(key) as usize % nr];
                let now = now_ms();
                if (to as usize) < st.dbs.len() && !st.dbs[to as usize].exists(key, now) {
                    if let Some(e) = st.dbs[db].remove(key, now) {
                        st.dbs[to as usize].set_entry(key, e);
                    }
                }
            }
            "slotsdel" => {
                for i in 1..req.len() {
                    if let Some(s) = parse_i64(req.arg(i)).filter(|s| (0..1024).contains(s)) {
                        let st = &mut states[s as usize % nr];
                        st.dbs[db].clear_slot(s as u16);
                    }
                }
            }
            "function|load" | "function|delete" | "function|flush" | "function|restore" => {
                // The library set (logged with shard 0's data).
                let mut out = Out::new(false);
                let sub = &spec.name["function|".len()..];
                let _ = cmd::function::command(sub, req, &mut out);
                if out.buf.first() == Some(&b'-') {
                    tracing::warn!(
                        error = %String::from_utf8_lossy(&out.buf).trim_end(),
                        "AOF: a logged FUNCTION command failed"
                    );
                }
            }
            _ if cmd::handler(spec).is_some() => {
                let args: Vec<&[u8]> = req.args().collect();
                let keys: Vec<Bytes> = table::key_indexes(spec, &args, false)
                    .map(|idx| idx.iter().map(|&i| req.arg_bytes(i)).collect())
                    .unwrap_or_default();
                let mut owners: Vec<usize> =
                    keys.iter().map(|k| slot_of(k) as usize % nr).collect();
                owners.sort_unstable();
                owners.dedup();
                let mut out = Out::new(false);
                if owners.len() <= 1 {
                    let o = owners.first().copied().unwrap_or(0);
                    exec_local(&mut states[o], db, spec, req, &mut out, &mut clock, None);
                } else {
                    replay_multi(states, db, spec, req, &keys);
                }
            }
            _ => {
                applied -= 1;
                tracing::warn!(
                    command = spec.name,
                    "AOF: skipping a command that is not replayable"
                );
            }
        }
    }
    applied
}

fn remove_where(d: &mut Db, keep: impl Fn(&[u8]) -> bool) {
    let now = now_ms();
    let mut keys = Vec::new();
    d.for_each_key(now, |k, _| {
        if keep(k) {
            keys.push(k.clone());
        }
    });
    for k in keys {
        d.remove(&k, now);
    }
}

/// A logged command whose keys now live on several shards: run it on a temporary database
/// holding copies of its keys, then write every changed key back.
fn replay_multi(
    states: &mut [ShardState],
    db: usize,
    spec: &'static table::CommandSpec,
    req: &Request,
    keys: &[Bytes],
) {
    let nr = states.len();
    let now = now_ms();
    let mut temp = Db::new(0, 1);
    for k in keys {
        if let Some(e) = states[slot_of(k) as usize % nr].dbs[db]
            .get(k, now)
            .cloned()
        {
            temp.set_entry(k, e);
        }
    }
    let mut out = Out::new(false);
    let handler = cmd::handler(spec).expect("data command");
    let mut ctx = Ctx::new(&mut temp, &mut out, now);
    handler(&mut ctx, req);
    if spec.has(CommandFlags::WRITE) {
        for k in keys {
            let st = &mut states[slot_of(k) as usize % nr];
            match temp.get(k, now).cloned() {
                Some(e) => st.dbs[db].set_entry(k, e),
                None => {
                    st.dbs[db].remove(k, now);
                }
            }
        }
    }
}
