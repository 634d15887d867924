//! Running data commands: on the owning shard (inline or after a hop), or atomically across
//! shards by assembling the involved keys in a temporary database (see [`exec_multi`]).

use std::collections::BTreeSet;
use std::rc::Rc;

use bytes::Bytes;
use hashbrown::{HashMap, HashSet};
use rcodis_core::cmd::{CommandFlags, CommandSpec};
use rcodis_core::resp::Request;

use crate::cmd::{self, Ctx};
use crate::db::{now_ms, Db, Entry};
use crate::out::Out;
use crate::shard::{record, Shard, ShardState};

/// When a shard last took the time: commands run back to back are timed from the end of the
/// previous one, which costs one clock read per command instead of two.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// When the previous command ended, in [`ticks`].
    pub last: u64,
    pub now_ms: u64,
}

impl Clock {
    /// Takes the time now.
    pub fn start() -> Self {
        Clock {
            last: ticks(),
            now_ms: now_ms(),
        }
    }
}

pub use rcodis_core::clock::{init_clock, ticks, ticks_to_us};

/// Whether a write touches a key of a running async migration batch.
#[cold]
fn writes_migrating(st: &ShardState, db: usize, spec: &CommandSpec, req: &Request) -> bool {
    let args: Vec<&[u8]> = req.args().collect();
    match rcodis_core::cmd::key_indexes(spec, &args, false) {
        Ok(idx) => idx
            .iter()
            .any(|&i| crate::slots_async::migrating(st, db, args[i])),
        Err(_) => false,
    }
}

/// Runs a data command on this shard's database `db`, appending its reply to `out`.
pub fn exec_local(
    st: &mut ShardState,
    db: usize,
    spec: &'static CommandSpec,
    req: &Request,
    out: &mut Out,
    clock: &mut Clock,
    slot: Option<u16>,
) {
    let handler = cmd::handler(spec).expect("data command has a handler");
    let before = out.buf.len();
    // A script may write any of its keys.
    let script = cmd::script::is_script(spec);
    if !st.mgrt_keys.is_empty()
        && (spec.has(CommandFlags::WRITE) || script)
        && writes_migrating(st, db, spec, req)
    {
        out.err("ERR the specified key is being migrated");
        record(st, spec.id, 0, true);
        return;
    }
    if (spec.has(CommandFlags::DENYOOM) || (script && !spec.has(CommandFlags::READONLY)))
        && crate::memory::max() > 0
        && crate::memory::ensure_room(&mut st.dbs, clock.now_ms).is_err()
    {
        out.err(crate::memory::OOM);
        record(st, spec.id, 0, true);
        return;
    }
    if let Some(s) = slot {
        st.dbs[db].set_slot_hint(req.arg(1), s);
    }
    if crate::notify::on() {
        // Changes made outside commands (server commands, migration) are not events.
        st.dbs[db].forget_touched();
    }
    let mut ctx = Ctx::new(&mut st.dbs[db], out, clock.now_ms);
    if script {
        cmd::script::call_with_pubsub(&st.pubsub, handler, &mut ctx, req);
    } else {
        handler(&mut ctx, req);
    }
    ctx.db.clear_slot_hint();
    let (hits, misses) = (ctx.hits, ctx.misses);
    st.keyspace_hits += hits;
    st.keyspace_misses += misses;
    let pushed = std::mem::take(&mut ctx.pushed);
    let failed = out.buf.get(before) == Some(&b'-');
    if crate::notify::on() {
        notify_after(st, db, spec, req, clock.now_ms);
    }
    if crate::tracking::on() && !failed {
        crate::tracking::after_command(st.id, spec, req);
    }
    if !failed && spec.has(CommandFlags::WRITE) {
        crate::aof::DIRTY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(aof) = st.aof.as_mut() {
            if spec.name.as_bytes()[0] == b'x' {
                log_stream_write(aof, &mut st.dbs[db], db, spec, req, clock.now_ms);
            } else {
                log_write(aof, &mut st.dbs[db], db, spec, req, clock.now_ms);
            }
        }
    }
    let t = ticks();
    let usec = ticks_to_us(clock.last, t);
    clock.last = t;
    st.total_commands += 1;
    record(st, spec.id, usec, failed);
    if st.slowlog_threshold_us >= 0 && usec as i64 >= st.slowlog_threshold_us {
        slowlog_push(st, req, usec);
    }
    if !pushed.is_empty() {
        ready(st, db, pushed);
    }
    // Any write may make a key a client waits for ready (ZADD, ZUNIONSTORE, RENAME, ...).
    if !st.blocked.is_empty() && spec.has(CommandFlags::WRITE) {
        wake_waiters_of(st, db, spec, req);
    }
    if script {
        script_effects(st, db, clock.now_ms);
    }
}

/// A script's writes, logged as they ran (even when it failed after them), and the clients
/// blocked on the keys they wrote served.
#[cold]
fn script_effects(st: &mut ShardState, db: usize, now: u64) {
    let effects = cmd::script::take_effects();
    if effects.is_empty() {
        return;
    }
    crate::aof::DIRTY.fetch_add(effects.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if let Some(aof) = st.aof.as_mut() {
        for (s, r) in &effects {
            log_write(aof, &mut st.dbs[db], db, s, r, now);
        }
    }
    for (s, r) in &effects {
        if st.blocked.is_empty() {
            break;
        }
        wake_waiters_of(st, db, s, r);
    }
}

/// Publishes the keyspace events of a command that just ran.
#[cold]
#[inline(never)]
fn notify_after(st: &mut ShardState, db: usize, spec: &CommandSpec, req: &Request, now: u64) {
    crate::notify::collect(&mut st.dbs[db], spec.name, req, now);
    crate::notify::flush(st, db);
}

/// Serves the clients blocked on the keys a write named.
fn wake_waiters_of(st: &mut ShardState, db: usize, spec: &CommandSpec, req: &Request) {
    let args: Vec<&[u8]> = req.args().collect();
    if let Ok(idx) = rcodis_core::cmd::key_indexes(spec, &args, false) {
        let ready: Vec<Bytes> = idx
            .iter()
            .map(|&i| Bytes::copy_from_slice(args[i]))
            .filter(|k| st.blocked.contains_key(&(db, k.clone())))
            .collect();
        if !ready.is_empty() {
            self::ready(st, db, ready);
        }
    }
}

/// Serves the clients blocked on keys a write made ready, now or, inside a transaction,
/// once it is over.
fn ready(st: &mut ShardState, db: usize, keys: Vec<Bytes>) {
    match st.deferred_ready.as_mut() {
        Some(later) => later.extend(keys.into_iter().map(|k| (db, k))),
        None => crate::blocking::serve_waiters(st, db, &keys),
    }
}

/// Logs a stream write: as what it did when it asked for that (a generated ID, an exact
/// trim, forced claims; see `cmd::streams`), else as itself.
#[cold]
#[inline(never)]
fn log_stream_write(
    aof: &mut crate::aof::Aof,
    d: &mut Db,
    db: usize,
    spec: &CommandSpec,
    req: &Request,
    now: u64,
) {
    match cmd::streams::take_log_rewrite() {
        Some(records) => {
            for r in &records {
                aof.log_req(db, r);
            }
        }
        None => log_write(aof, d, db, spec, req, now),
    }
}

/// Logs a successful write deterministically (see `aof.rs`).
fn log_write(
    aof: &mut crate::aof::Aof,
    d: &mut Db,
    db: usize,
    spec: &CommandSpec,
    req: &Request,
    now: u64,
) {
    match spec.name {
        // Random choices: log the outcome.
        "spop" => aof.log_key_state(db, d, req.arg(1), now),
        _ => {
            aof.log_req(db, req);
            // Relative times: pin the resulting expiry.
            if matches!(
                spec.name,
                "expire" | "pexpire" | "setex" | "psetex" | "set" | "getex" | "restore"
            ) {
                if let Some(e) = d.get_quiet(req.arg(1), now) {
                    if e.expire_at != 0 {
                        let at = e.expire_at;
                        aof.log_ttl(db, req.arg(1), at);
                    }
                }
            }
        }
    }
}

/// Records a slow command (arguments trimmed as Redis trims them).
pub fn slowlog_push(st: &mut ShardState, req: &Request, usec: u64) {
    let mut args: Vec<Bytes> = Vec::new();
    let n = req.len();
    for (i, a) in req.args().enumerate() {
        if i == 31 && n > 32 {
            args.push(Bytes::from(format!("... ({} more arguments)", n - 31)));
            break;
        }
        if a.len() > 128 {
            args.push(Bytes::from(format!(
                "{}... ({} more bytes)",
                String::from_utf8_lossy(&a[..128]),
                a.len() - 128
            )));
        } else {
            args.push(Bytes::copy_from_slice(a));
        }
    }
    st.slowlog.push_back(crate::shard::SlowEntry {
        id: crate::shard::SLOWLOG_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        unix: now_ms() / 1000,
        usec,
        args,
    });
    while st.slowlog.len() > st.slowlog_max_len {
        st.slowlog.pop_front();
    }
}

/// Runs a batch of data commands on this shard; returns the replies back to back and
/// the length of each.
pub fn exec_batch(
    st: &mut ShardState,
    items: &[(Queued, Option<u16>)],
    resp3: bool,
    (client, track): (u64, bool),
) -> (Bytes, Vec<usize>) {
    let mut out = Out::new(resp3);
    let mut lens = Vec::with_capacity(items.len());
    let mut clock = Clock::start();
    crate::tracking::set_current(client, track);
    for ((db, spec, req), slot) in items {
        let before = out.buf.len();
        exec_local(st, *db, spec, req, &mut out, &mut clock, *slot);
        lens.push(out.buf.len() - before);
    }
    crate::tracking::set_current(0, false);
    if let Some(a) = st.aof.as_mut() {
        a.end_batch();
    }
    (out.buf.freeze(), lens)
}

fn same(a: &Option<Entry>, b: &Option<Entry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => x.expire_at == y.expire_at && x.value == y.value,
        _ => false,
    }
}

/// A queued command: database, command, request.
pub type Queued = (usize, &'static CommandSpec, Request);

/// Runs commands atomically wherever their keys live. With one owning shard the commands
/// run there directly. Otherwise, with every involved shard frozen, the keys are copied into
/// temporary databases, the commands run there in order, and every key they changed is
/// written back to its owner. WATCHed keys (db, key, version) are checked first, inside the
/// same atomic step: if one changed, nothing runs and `None` is returned.
pub async fn exec_atomic(
    shard: &Rc<Shard>,
    cmds: Vec<Queued>,
    keys: Vec<(usize, Bytes)>,
    watch: Vec<(usize, Bytes, u64)>,
    resp3: bool,
) -> Option<Vec<Bytes>> {
    let nr = shard.nr_shards;
    let owner = |k: &[u8]| rcodis_core::slot::slot_of(k) as usize % nr;
    let mut owners: BTreeSet<usize> = keys.iter().map(|(_, k)| owner(k)).collect();
    owners.extend(watch.iter().map(|(_, k, _)| owner(k)));
    if owners.len() <= 1 {
        let target = owners.into_iter().next().unwrap_or(shard.id);
        let r = shard
            .run_on(target, move |st| {
                for (db, k, v) in &watch {
                    if !st.dbs[*db].watch_holds(k, *v, now_ms()) {
                        return None;
                    }
                }
                let mut replies = Vec::with_capacity(cmds.len());
                let mut clock = Clock::start();
                st.deferred_ready = Some(Vec::new());
                for (db, spec, req) in &cmds {
                    let mut out = Out::new(resp3);
                    exec_local(st, *db, spec, req, &mut out, &mut clock, None);
                    replies.push(out.buf.freeze());
                }
                // Blocked clients see the transaction's outcome, never a state inside it.
                let mut ready = st.deferred_ready.take().unwrap_or_default();
                let mut seen = HashSet::new();
                ready.retain(|k| seen.insert(k.clone()));
                for (db, key) in ready {
                    crate::blocking::serve_waiters(st, db, &[key]);
                }
                if let Some(a) = st.aof.as_mut() {
                    a.end_batch();
                }
                Some(replies)
            })
            .await;
        shard.send_deferred();
        return r;
    }
    let mut uniq = keys;
    uniq.sort();
    uniq.dedup();
    let me = shard.id;
    let r = shard
        .atomic(&owners, |m| {
            for (db, k, v) in &watch {
                let (db, key) = (*db, k.clone());
                let v = *v;
                if !m.call(owner(k), move |st| {
                    st.dbs[db].watch_holds(&key, v, now_ms())
                }) {
                    return None;
                }
            }
            let now = now_ms();
            let mut temps: HashMap<usize, Db> = HashMap::new();
            let mut originals = Vec::with_capacity(uniq.len());
            for (db, k) in &uniq {
                let (dbi, key) = (*db, k.clone());
                let e = m.call(owner(k), move |st| st.dbs[dbi].get(&key, now).cloned());
                let t = temps.entry(*db).or_insert_with(Db::scratch);
                if let Some(e) = &e {
                    t.set_entry(k, e.clone());
                }
                originals.push(e);
            }
            let mut replies = Vec::with_capacity(cmds.len());
            let mut writes = false;
            let notify = crate::notify::on();
            if notify {
                // Copying the keys in is not a change.
                for t in temps.values_mut() {
                    t.forget_touched();
                }
            }
            for (db, spec, req) in &cmds {
                let mut out = Out::new(resp3);
                let handler = cmd::handler(spec).expect("data command has a handler");
                let t = temps.entry(*db).or_insert_with(Db::scratch);
                let mut ctx = Ctx::new(t, &mut out, now);
                handler(&mut ctx, req);
                if notify {
                    crate::notify::collect(t, spec.name, req, now);
                }
                writes |= spec.has(CommandFlags::WRITE)
                    || (cmd::script::is_script(spec) && !cmd::script::take_effects().is_empty());
                replies.push(out.buf.freeze());
                let id = spec.id;
                m.call(me, move |st| record(st, id, 0, false));
            }
            if writes {
                for ((db, k), orig) in uniq.iter().zip(originals) {
                    let new = temps.get_mut(db).and_then(|t| t.get(k, now).cloned());
                    if same(&orig, &new) {
                        continue;
                    }
                    let (dbi, key) = (*db, k.clone());
                    m.call(owner(k), move |st| {
                        match new {
                            Some(e) => st.dbs[dbi].set_entry(&key, e),
                            None => {
                                st.dbs[dbi].remove(&key, now);
                            }
                        }
                        if let Some(a) = st.aof.as_mut() {
                            a.log_key_state(dbi, &mut st.dbs[dbi], &key, now);
                            a.end_batch();
                        }
                        crate::blocking::serve_waiters(st, dbi, &[key]);
                    });
                }
            }
            if notify {
                // The events, in the order the commands made them (delivered everywhere).
                let notes: Vec<(usize, Vec<crate::notify::Note>)> = temps
                    .iter_mut()
                    .map(|(db, t)| (*db, t.take_notes()))
                    .collect();
                m.call(me, move |st| {
                    for (db, notes) in notes {
                        for (class, ev, key) in notes {
                            crate::notify::publish(st, db, class, ev, &key);
                        }
                    }
                });
            }
            Some(replies)
        })
        .await;
    shard.send_deferred();
    r
}
