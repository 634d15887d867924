//! MULTI/EXEC/DISCARD and WATCH/UNWATCH through the proxy.
//!
//! A transaction lives in one slot: the first keyed command (or the WATCHed keys) fixes it,
//! and a command with a key elsewhere gets -CROSSSLOT and aborts the transaction, as Redis
//! Cluster does. Commands are checked and queued in the proxy (+QUEUED); EXEC sends
//! `MULTI`, the queued commands and `EXEC` back to back on one backend connection, so no other
//! request can come between them, and answers with the EXEC reply. WATCH needs the watching
//! connection to be the one that runs EXEC, and must not see other sessions' transactions:
//! it pins a connection of the session's own to the slot's master until EXEC, DISCARD,
//! UNWATCH or RESET. A slot that is locked or migrating refuses new WATCHes and EXECs (the
//! client retries), so a transaction never straddles two owners.

use bytes::Bytes;
use rcodis_core::cmd::{self as table, CommandFlags, CommandSpec, ProxyPolicy};
use rcodis_core::resp::Request;
use rcodis_core::slot::slot_of;
use smallvec::SmallVec;

use crate::backend::Backend;
use crate::router::CROSSSLOT;

/// A MULTI in progress.
#[derive(Default)]
pub struct Multi {
    pub queued: Vec<Bytes>,
    pub dirty: bool,
}

/// The session's transaction state.
#[derive(Default)]
pub struct Txn {
    pub multi: Option<Multi>,
    /// The slot the transaction (or the WATCH) is bound to.
    pub slot: Option<u16>,
    /// The connection holding the WATCHes.
    pub pinned: Option<Backend>,
}

impl Txn {
    /// Forgets everything (EXEC, DISCARD, RESET); closes the pinned connection.
    pub fn clear(&mut self) {
        self.multi = None;
        self.slot = None;
        self.pinned = None;
    }
}

/// A request's keys span several slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossSlot;

/// The single slot of a request's keys: Ok(None) without keys, Err when they span slots.
pub fn slot_of_request(spec: &CommandSpec, req: &Request) -> Result<Option<u16>, CrossSlot> {
    let args: SmallVec<[&[u8]; 8]> = req.args().collect();
    let idx: SmallVec<[usize; 4]> = match spec.proxy {
        ProxyPolicy::Split(table::SplitKind::Mset) => (1..args.len()).step_by(2).collect(),
        ProxyPolicy::Split(_) => (1..args.len()).collect(),
        _ => match table::key_indexes(spec, &args, false) {
            Ok(k) => k.into_iter().collect(),
            Err(_) => return Ok(None),
        },
    };
    let mut slot = None;
    for i in idx {
        let s = slot_of(args[i]);
        match slot {
            None => slot = Some(s),
            Some(x) if x != s => return Err(CrossSlot),
            _ => {}
        }
    }
    Ok(slot)
}

/// Why a command cannot be queued in a transaction through the proxy (None: it can).
pub fn refuse_in_multi(spec: &CommandSpec) -> Option<String> {
    let name = spec.name.replace('|', " ");
    match spec.proxy {
        ProxyPolicy::NotAllowed => Some(format!("ERR command '{name}' is not allowed")),
        ProxyPolicy::PubSub => Some(format!(
            "ERR command '{name}' is not allowed inside a transaction through the proxy"
        )),
        ProxyPolicy::Local
            if !matches!(spec.name, "ping" | "echo" | "time" | "lastsave" | "command") =>
        {
            Some(format!(
                "ERR command '{name}' is not allowed inside a transaction through the proxy"
            ))
        }
        ProxyPolicy::Fanout if !spec.has(CommandFlags::MOVABLEKEYS) && spec.first_key == 0 => Some(
            format!("ERR command '{name}' spans every group and cannot run in a transaction"),
        ),
        _ => None,
    }
}

/// Checks a command for the transaction's slot; binds the slot on first use.
pub fn bind(txn: &mut Txn, spec: &CommandSpec, req: &Request) -> Result<(), String> {
    match slot_of_request(spec, req) {
        Err(CrossSlot) => Err(CROSSSLOT.to_string()),
        Ok(None) => Ok(()),
        Ok(Some(s)) => match txn.slot {
            Some(x) if x != s => Err(CROSSSLOT.to_string()),
            _ => {
                txn.slot = Some(s);
                Ok(())
            }
        },
    }
}
