//! Routing, as a pure function of a request and a slot table: answer locally, refuse, send
//! to one backend, split per backend (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH), or fan out.

use rcodis_core::cmd::{self, CommandSpec, ProxyPolicy, SplitKind};
use rcodis_core::resp::Request;
use rcodis_core::slot::slot_of;
use smallvec::SmallVec;

use crate::table::{BackendId, SlotTable};

pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// One part of a split request: the backend, the sub-request, and the positions (in the
/// original key order) of the keys it carries.
#[derive(Debug, Clone)]
pub struct Part {
    pub backend: BackendId,
    pub request: Request,
    pub positions: Vec<usize>,
}

/// What to do with a request.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Answered by the proxy itself.
    Local,
    /// Refused with this error (no `-`, no CRLF).
    Reject(String),
    /// Forwarded unchanged to one backend.
    Single(BackendId),
    /// Forwarded unchanged to a replica (index into the table's replicas), or to the master
    /// (the backend) when that replica is down.
    Replica(u16, BackendId),
    /// Split per backend, replies merged.
    Split(SplitKind, Vec<Part>),
    /// Sent to every backend, replies merged by the session.
    Fanout,
    /// A key's slot is locked (migration phase 1): wait for the next table.
    Locked(u16),
}

/// A key of a request whose slot is migrating: it must leave `source` for `target` first.
#[derive(Debug, Clone)]
pub struct Moving {
    pub key: bytes::Bytes,
    pub source: BackendId,
    pub target: BackendId,
    pub method: rcodis_core::topology::MigrationMethod,
}

/// The keys of a request that live in migrating slots.
pub fn moving_keys(spec: &CommandSpec, req: &Request, table: &SlotTable) -> Vec<Moving> {
    if req.len() < 2 || !table.any_migrating {
        return Vec::new();
    }
    let args: SmallVec<[&[u8]; 8]> = req.args().collect();
    let idx: SmallVec<[usize; 4]> = match spec.proxy {
        ProxyPolicy::Split(SplitKind::Mset) => (1..args.len()).step_by(2).collect(),
        ProxyPolicy::Split(_) => (1..args.len()).collect(),
        _ => match cmd::key_indexes(spec, &args, false) {
            Ok(k) => k.into_iter().collect(),
            Err(_) => return Vec::new(),
        },
    };
    idx.into_iter()
        .filter_map(|i| {
            let r = table.route(slot_of(args[i]));
            Some(Moving {
                key: req.arg_bytes(i),
                source: r.migrate_from?,
                target: r.backend?,
                method: r.method,
            })
        })
        .collect()
}

/// The slot's backend, or why it cannot be served now.
fn backend_for(table: &SlotTable, slot: u16) -> Result<BackendId, Plan> {
    let r = table.route(slot);
    if r.locked {
        return Err(Plan::Locked(slot));
    }
    r.backend.ok_or_else(|| {
        Plan::Reject(format!(
            "ERR slot {slot} is not served by any group (offline)"
        ))
    })
}

/// Whether a replica may serve the command (where its slot's group allows it).
#[inline]
fn replica_may_serve(spec: &CommandSpec) -> bool {
    spec.has(cmd::CommandFlags::READONLY)
        && !spec.has(cmd::CommandFlags::WRITE)
        && !spec.has(cmd::CommandFlags::BLOCKING)
}

/// Whether the command's one key is its first argument (the common form, routed by it).
#[inline]
fn key_first<B: AsRef<[u8]>>(spec: &CommandSpec, req: &Request<B>) -> bool {
    spec.first_key == 1
        && spec.last_key == 1
        && spec.key_specs.len() == 1
        && !spec.has(cmd::CommandFlags::MOVABLEKEYS)
        && req.len() >= 2
}

/// One backend for a slot: a replica for a read-only command where the slot's group allows
/// it (and the slot is not moving), else the master.
#[inline]
fn single(spec: &CommandSpec, table: &SlotTable, slot: u16) -> Plan {
    match backend_for(table, slot) {
        Ok(b) => match table.route(slot).replica {
            Some(r) if replica_may_serve(spec) => Plan::Replica(r, b),
            _ => Plan::Single(b),
        },
        Err(p) => p,
    }
}

/// The fast path's question: the master a single-key command (`ProxyPolicy::Forward`, its
/// key first) goes to, when that is where [`route`] would send it (`Plan::Single`: the slot
/// is served and not locked, and no replica takes the read). `None`: anything else, which
/// `route` then plans in full.
#[inline]
pub fn forward_master<B: AsRef<[u8]>>(
    spec: &CommandSpec,
    req: &Request<B>,
    table: &SlotTable,
) -> Option<BackendId> {
    if !matches!(spec.proxy, ProxyPolicy::Forward) || !key_first(spec, req) {
        return None;
    }
    let r = table.route(slot_of(req.arg(1)));
    if r.locked || (r.replica.is_some() && replica_may_serve(spec)) {
        return None;
    }
    r.backend
}

/// Plans a request whose command is `spec`.
pub fn route<B: AsRef<[u8]>>(
    spec: &'static CommandSpec,
    req: &Request<B>,
    table: &SlotTable,
    admin_commands: bool,
    allow_flush: bool,
) -> Plan {
    match spec.proxy {
        ProxyPolicy::Local => Plan::Local,
        ProxyPolicy::NotAllowed => Plan::Reject(format!(
            "ERR command '{}' is not allowed",
            display_name(spec)
        )),
        // Channels hash to a slot and live on that slot's master.
        ProxyPolicy::PubSub if matches!(spec.name, "publish" | "spublish") && req.len() == 3 => {
            match backend_for(table, slot_of(req.arg(1))) {
                Ok(b) => Plan::Single(b),
                Err(p) => p,
            }
        }
        ProxyPolicy::PubSub if spec.name.starts_with("pubsub|") => Plan::Fanout,
        ProxyPolicy::Transaction | ProxyPolicy::PubSub => Plan::Reject(format!(
            "ERR command '{}' is not supported by this rcodis-proxy yet",
            display_name(spec)
        )),
        ProxyPolicy::Fanout => {
            if spec.name.starts_with("config|") && !admin_commands {
                return Plan::Reject(format!(
                    "ERR command '{}' is not allowed",
                    display_name(spec)
                ));
            }
            if matches!(spec.name, "flushdb" | "flushall") && !allow_flush {
                return Plan::Reject(format!(
                    "ERR command '{}' is not allowed",
                    display_name(spec)
                ));
            }
            Plan::Fanout
        }
        ProxyPolicy::Split(kind) => split(kind, spec, req, table),
        // The common case: one key, the first argument.
        ProxyPolicy::Forward if key_first(spec, req) => single(spec, table, slot_of(req.arg(1))),
        ProxyPolicy::Forward | ProxyPolicy::SameSlot => {
            let args: SmallVec<[&[u8]; 8]> = req.args().collect();
            let keys = match cmd::key_indexes(spec, &args, false) {
                Ok(k) => k,
                // Let the backend word the argument error: route by the first argument.
                Err(_) => SmallVec::from_slice(&[1.min(args.len() - 1)]),
            };
            let Some(&first) = keys.first() else {
                // A script or function given no keys runs where slot 0 lives, as in Codis
                // (the hash of no key); it must not touch keys, as in Redis Cluster. The
                // function libraries FUNCTION LOAD put on every group are read there too.
                if matches!(
                    spec.name,
                    "eval"
                        | "evalsha"
                        | "eval_ro"
                        | "evalsha_ro"
                        | "fcall"
                        | "fcall_ro"
                        | "function|list"
                        | "function|dump"
                        | "function|help"
                        | "script|help"
                ) {
                    return single(spec, table, 0);
                }
                return Plan::Reject(format!(
                    "ERR command '{}' has no key to route by",
                    display_name(spec)
                ));
            };
            let slot = slot_of(args[first]);
            if keys.iter().skip(1).any(|&i| slot_of(args[i]) != slot) {
                return Plan::Reject(CROSSSLOT.into());
            }
            single(spec, table, slot)
        }
    }
}

/// The name as Redis users type it (`config|get` → `CONFIG GET`), lower case like Codis.
fn display_name(spec: &CommandSpec) -> String {
    spec.name.replace('|', " ")
}

fn split<B: AsRef<[u8]>>(
    kind: SplitKind,
    spec: &CommandSpec,
    req: &Request<B>,
    table: &SlotTable,
) -> Plan {
    let step = if kind == SplitKind::Mset { 2 } else { 1 };
    if kind == SplitKind::Mset && req.len().is_multiple_of(2) {
        return Plan::Reject(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
    }
    let nkeys = (req.len() - 1) / step;
    let mut per: Vec<(BackendId, Vec<usize>)> = Vec::new();
    for k in 0..nkeys {
        let slot = slot_of(req.arg(1 + k * step));
        let b = match backend_for(table, slot) {
            Ok(b) => b,
            Err(p) => return p,
        };
        match per.iter_mut().find(|(x, _)| *x == b) {
            Some((_, v)) => v.push(k),
            None => per.push((b, vec![k])),
        }
    }
    if per.len() == 1 {
        return Plan::Single(per[0].0);
    }
    let name = req.arg(0);
    let parts = per
        .into_iter()
        .map(|(backend, positions)| {
            let mut args: Vec<&[u8]> = Vec::with_capacity(1 + positions.len() * step);
            args.push(name);
            for &k in &positions {
                for j in 0..step {
                    args.push(req.arg(1 + k * step + j));
                }
            }
            Part {
                backend,
                request: Request::from_args(args),
                positions,
            }
        })
        .collect();
    Plan::Split(kind, parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcodis_core::topology::{Group, Topology};

    fn table() -> SlotTable {
        let mut t = Topology::new();
        for (id, addr) in [(1, "a:1"), (2, "b:2")] {
            t.groups.insert(
                id,
                Group {
                    id,
                    servers: vec![addr.into()],
                    read_from_replica: false,
                },
            );
        }
        for s in &mut t.slots {
            s.group = if s.id < 600 { 1 } else { 2 };
        }
        t.slots[5].group = 0;
        SlotTable::from_topology(&t)
    }

    fn plan(args: &[&str]) -> Plan {
        let req = Request::from_args(args);
        let spec = cmd::resolve_request(&req).unwrap();
        route(spec, &req, &table(), false, true)
    }

    #[test]
    fn forward_master_agrees_with_route() {
        let mut t = table();
        // A locked slot and a slot read from a replica: both for the full path.
        let locked = slot_of(b"c");
        t.slots[locked as usize].locked = true;
        let replica = slot_of(b"d");
        t.slots[replica as usize].replica = Some(0);
        let cases: &[&[&str]] = &[
            &["GET", "a"],
            &["GET", "b"],
            &["SET", "b", "v"],
            &["HSET", "b", "f", "v"],
            &["GET", "c"],
            &["GET", "d"],
            &["SET", "d", "v"],
            &["GET", "{t}x"],
            &["RENAME", "{t}a", "{t}b"],
            &["BLPOP", "a", "0"],
            &["MGET", "a"],
            &["PING"],
        ];
        for args in cases {
            let req = Request::from_args(*args);
            let spec = cmd::resolve_request(&req).unwrap();
            let fast = forward_master(spec, &req, &t);
            match route(spec, &req, &t, false, true) {
                // Whatever the fast path answers, route answers the same.
                Plan::Single(b) if fast.is_some() => assert_eq!(fast, Some(b), "{args:?}"),
                p => assert!(fast.is_none(), "{args:?}: {p:?}"),
            }
        }
        let get = |k: &str| {
            let req = Request::from_args(["GET", k]);
            forward_master(cmd::resolve_request(&req).unwrap(), &req, &t)
        };
        assert_eq!(get("a"), Some(0));
        assert_eq!(get("b"), Some(1));
        assert_eq!(get("c"), None);
        assert_eq!(get("d"), None);
    }

    #[test]
    fn keyless_scripts_run_where_slot_0_lives() {
        assert!(matches!(plan(&["EVAL", "return 1", "0"]), Plan::Single(0)));
        assert!(matches!(
            plan(&["EVALSHA", "abc", "0", "x"]),
            Plan::Single(0)
        ));
        assert!(matches!(plan(&["FCALL", "f", "0"]), Plan::Single(0)));
        // With keys, the keys decide ("b" lives in the second group).
        assert!(matches!(
            plan(&["EVAL", "return 1", "1", "b"]),
            Plan::Single(1)
        ));
    }

    #[test]
    fn single_key_routes_by_slot() {
        // "a" → 579 (group 1), "b" → 1017 (group 2)
        assert!(matches!(plan(&["GET", "a"]), Plan::Single(0)));
        assert!(matches!(plan(&["GET", "b"]), Plan::Single(1)));
        assert!(matches!(plan(&["HSET", "b", "f", "v"]), Plan::Single(1)));
    }

    #[test]
    fn multi_key_needs_one_slot() {
        match plan(&["RENAME", "a", "b"]) {
            Plan::Reject(e) => assert_eq!(e, CROSSSLOT),
            p => panic!("{p:?}"),
        }
        assert!(matches!(plan(&["RENAME", "{t}a", "{t}b"]), Plan::Single(_)));
        assert!(matches!(
            plan(&["BLPOP", "{t}a", "{t}b", "0"]),
            Plan::Single(_)
        ));
        assert!(matches!(
            plan(&["MSETNX", "a", "1", "b", "2"]),
            Plan::Reject(_)
        ));
    }

    #[test]
    fn split_per_backend() {
        match plan(&["MGET", "a", "b", "c"]) {
            // c → 879 (group 2)
            Plan::Split(SplitKind::Mget, parts) => {
                assert_eq!(parts.len(), 2);
                assert_eq!(parts[0].positions, [0]);
                assert_eq!(parts[1].positions, [1, 2]);
                assert_eq!(
                    parts[1].request.args().collect::<Vec<_>>(),
                    [&b"MGET"[..], b"b", b"c"]
                );
            }
            p => panic!("{p:?}"),
        }
        match plan(&["MSET", "a", "1", "b", "2"]) {
            Plan::Split(SplitKind::Mset, parts) => {
                assert_eq!(
                    parts[1].request.args().collect::<Vec<_>>(),
                    [&b"MSET"[..], b"b", b"2"]
                );
            }
            p => panic!("{p:?}"),
        }
        assert!(matches!(plan(&["DEL", "b", "c"]), Plan::Single(1)));
        assert!(matches!(plan(&["MSET", "a", "1", "b"]), Plan::Reject(_)));
    }

    #[test]
    fn refusals() {
        // Slot 5 is offline: find a key in it.
        let k = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| slot_of(k.as_bytes()) == 5)
            .unwrap();
        assert!(matches!(plan(&["GET", &k]), Plan::Reject(e) if e.contains("not served")));
        assert!(
            matches!(plan(&["DEBUG", "sleep", "0"]), Plan::Reject(e) if e == "ERR command 'debug' is not allowed")
        );
        assert!(matches!(
            plan(&["slotsmgrt-exec-wrapper", "k", "get", "k"]),
            Plan::Reject(_)
        ));
        assert!(
            matches!(plan(&["CONFIG", "GET", "x"]), Plan::Reject(e) if e == "ERR command 'config get' is not allowed")
        );
        assert!(matches!(plan(&["PING"]), Plan::Local));
        assert!(matches!(plan(&["DBSIZE"]), Plan::Fanout));
    }
}
