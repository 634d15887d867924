//! The proxy's sessions as CLIENT LIST and CLIENT KILL see them, whichever shard serves them.
//!
//! Each session registers an [`Entry`] for its lifetime. What rarely changes (name, library,
//! database, protocol, subscriptions, transaction) is copied into the entry by the session
//! when a command may have changed it; the last command and its time are two relaxed stores
//! per batch. CLIENT LIST formats the entries when asked; CLIENT KILL shuts a session's socket
//! down (its pending read then ends it), under the registry's lock, which the session's own
//! removal also takes before its socket closes: a descriptor is never shut down after its
//! session let it go.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

/// Every live session of the proxy, by client id.
#[derive(Default)]
pub struct Registry(Mutex<BTreeMap<u64, Arc<Entry>>>);

/// What can change over a session's life (see [`Entry::state`]).
#[derive(Default, Clone)]
pub struct State {
    pub name: Bytes,
    pub lib_name: Bytes,
    pub lib_ver: Bytes,
    pub db: u16,
    pub resp: u8,
    pub sub: usize,
    pub psub: usize,
    pub ssub: usize,
    /// Commands queued in MULTI, -1 outside a transaction.
    pub multi: i64,
}

pub struct Entry {
    pub id: u64,
    pub addr: Box<str>,
    pub laddr: Box<str>,
    pub fd: i32,
    pub since: Instant,
    pub state: Mutex<State>,
    /// The last command's id (stats id) and when its batch started (processor ticks).
    pub last_cmd: AtomicU32,
    pub last_ticks: AtomicU64,
    /// Waiting on a blocking command.
    pub blocked: AtomicBool,
}

/// Removes its entry from the registry when the session ends.
pub struct Registered<'a> {
    registry: &'a Registry,
    pub entry: Arc<Entry>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.entry.id);
    }
}

/// The client types CLIENT LIST and CLIENT KILL filter by.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Pubsub,
    /// `master`, `replica`, `slave`: never a proxy session.
    Replication,
}

impl Kind {
    /// A client type as CLIENT LIST and CLIENT KILL take it, or Redis's error.
    pub fn parse(s: &[u8]) -> Result<Kind, String> {
        match s.to_ascii_lowercase().as_slice() {
            b"normal" => Ok(Kind::Normal),
            b"pubsub" => Ok(Kind::Pubsub),
            b"master" | b"replica" | b"slave" => Ok(Kind::Replication),
            _ => Err(format!(
                "ERR Unknown client type '{}'",
                String::from_utf8_lossy(s)
            )),
        }
    }
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Entry>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, entry: Entry) -> Registered<'_> {
        let entry = Arc::new(entry);
        self.lock().insert(entry.id, entry.clone());
        Registered {
            registry: self,
            entry,
        }
    }

    /// The entries that pass `keep`, by id.
    pub fn select(&self, mut keep: impl FnMut(&Entry) -> bool) -> Vec<Arc<Entry>> {
        self.lock().values().filter(|e| keep(e)).cloned().collect()
    }

    /// Shuts down the sockets of the entries that pass `kill` (not `me`'s: the caller closes
    /// its own after replying). Returns how many matched, `me` included, and whether `me` did.
    pub fn kill(&self, me: u64, mut kill: impl FnMut(&Entry) -> bool) -> (usize, bool) {
        let map = self.lock();
        let (mut n, mut killed_me) = (0, false);
        for e in map.values().filter(|e| kill(e)) {
            n += 1;
            killed_me |= e.id == me;
            if e.id != me {
                // SAFETY: the descriptor is open: its session removes the entry (under this
                // lock) before it closes its socket.
                unsafe {
                    libc::shutdown(e.fd, libc::SHUT_RDWR);
                }
                tracing::info!("client {} ({}) killed by CLIENT KILL", e.id, e.addr);
            }
        }
        (n, killed_me)
    }
}

impl Entry {
    pub fn kind(&self) -> Kind {
        let st = self.state();
        if st.sub + st.psub + st.ssub > 0 {
            Kind::Pubsub
        } else {
            Kind::Normal
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One CLIENT LIST line (with its newline). `cmd` names the last command when the
    /// caller knows better than the entry (its own CLIENT LIST or CLIENT INFO).
    pub fn line(&self, cmd: Option<&str>) -> String {
        let st = self.state().clone();
        let last = self.last_ticks.load(Ordering::Relaxed);
        let idle_s = if last == 0 {
            self.since.elapsed().as_secs()
        } else {
            rcodis_core::clock::ticks_to_us(last, rcodis_core::clock::ticks()) / 1_000_000
        };
        let cmd = cmd.map(str::to_string).unwrap_or_else(|| {
            let id = self.last_cmd.load(Ordering::Relaxed);
            if (id as usize) < rcodis_core::cmd::NUM_SPECS {
                rcodis_core::cmd::by_id(id as u16).name.to_string()
            } else {
                "NULL".to_string()
            }
        });
        let mut flags = String::new();
        if st.sub + st.psub + st.ssub > 0 {
            flags.push('P');
        }
        if st.multi >= 0 {
            flags.push('x');
        }
        if self.blocked.load(Ordering::Relaxed) {
            flags.push('b');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} cmd={} user=default resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            String::from_utf8_lossy(&st.name),
            self.since.elapsed().as_secs(),
            idle_s,
            flags,
            st.db,
            st.sub,
            st.psub,
            st.ssub,
            st.multi,
            cmd,
            st.resp,
            String::from_utf8_lossy(&st.lib_name),
            String::from_utf8_lossy(&st.lib_ver),
        )
    }
}
