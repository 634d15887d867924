//! The cluster model: groups, the 1024 slots, proxies and the routing epoch.
//!
//! A [`Topology`] is an immutable snapshot: a change builds a new one with a higher epoch and
//! replaces the old one whole. It travels as JSON (serde); [`diff`] says what changed and
//! [`Topology::validate`] checks the invariants every writer must keep.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::slot::NUM_SLOTS;

/// A group id, 1..=9999. Slot entries use 0 for "offline / no owner".
pub type GroupId = u16;
/// Largest valid group id (as Codis).
pub const MAX_GROUP_ID: GroupId = 9999;
/// Increases with every routing change.
pub type Epoch = u64;

/// A replication group: servers in order, the first is the master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: GroupId,
    /// `host:port` of each server; `servers[0]` is the master.
    pub servers: Vec<String>,
    /// Whether proxies may send read-only commands to replicas of this group.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_from_replica: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Group {
    /// The master's address, if the group has any server.
    pub fn master(&self) -> Option<&str> {
        self.servers.first().map(String::as_str)
    }
}

/// Where a slot is in its migration (codis-spec §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrationState {
    Pending,
    Preparing,
    Prepared,
    Migrating,
    Finished,
}

/// How keys leave the source during a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationMethod {
    /// Proxies move each touched key with SLOTSMGRTTAGONE; data moves with SLOTSMGRTTAGSLOT.
    Sync,
    /// Proxies use SLOTSMGRT-EXEC-WRAPPER; data moves with SLOTSMGRTTAGSLOT-ASYNC.
    #[default]
    SemiAsync,
}

/// A migration planned or under way for one slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotAction {
    /// Global order of planned migrations (first in, first out).
    pub index: u64,
    pub state: MigrationState,
    pub target: GroupId,
    #[serde(default)]
    pub method: MigrationMethod,
}

/// One of the 1024 slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotEntry {
    pub id: u16,
    /// Owning group; 0 when the slot is offline.
    pub group: GroupId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<SlotAction>,
}

/// A registered proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyInfo {
    pub token: String,
    /// Where clients connect (RESP).
    pub proxy_addr: String,
    /// Admin HTTP address.
    pub admin_addr: String,
    /// The last routing epoch every shard of the proxy has applied.
    pub applied_epoch: Epoch,
    #[serde(default)]
    pub pid: u32,
    /// Unix time in seconds when the proxy started.
    #[serde(default)]
    pub start_time: u64,
}

/// How a proxy routes one slot, derived from the slot's state (codis-spec §4.3 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRoute {
    /// Where requests go; `None` when the slot is offline.
    pub backend: Option<GroupId>,
    /// While migrating, the source the key must have left first.
    pub migrate_from: Option<GroupId>,
    /// Requests wait until a later epoch unlocks the slot.
    pub locked: bool,
    pub method: MigrationMethod,
}

/// The whole routing state of one product (cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    pub epoch: Epoch,
    pub groups: BTreeMap<GroupId, Group>,
    pub slots: Vec<SlotEntry>,
    #[serde(default)]
    pub proxies: BTreeMap<String, ProxyInfo>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::new()
    }
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("expected {NUM_SLOTS} slots, found {0}")]
    SlotCount(usize),
    #[error("slot entry at position {pos} has id {id}")]
    SlotId { pos: usize, id: u16 },
    #[error("group id {0} is out of range 1..={MAX_GROUP_ID}")]
    GroupId(GroupId),
    #[error("group {key} is stored with id {id}")]
    GroupKey { key: GroupId, id: GroupId },
    #[error("slot {slot} belongs to unknown group {group}")]
    UnknownGroup { slot: u16, group: GroupId },
    #[error("slot {slot} migrates to unknown group {group}")]
    UnknownTarget { slot: u16, group: GroupId },
    #[error("slot {slot} migrates to the group that owns it ({group})")]
    TargetIsOwner { slot: u16, group: GroupId },
    #[error("server {addr} is in groups {a} and {b}")]
    ServerTwice {
        addr: String,
        a: GroupId,
        b: GroupId,
    },
    #[error("server {addr} appears twice in group {group}")]
    ServerRepeated { addr: String, group: GroupId },
    #[error("proxy {key} is stored with token {token}")]
    ProxyKey { key: String, token: String },
}

impl Topology {
    /// Epoch 0: no groups, every slot offline.
    pub fn new() -> Self {
        Topology {
            epoch: 0,
            groups: BTreeMap::new(),
            slots: (0..NUM_SLOTS as u16)
                .map(|id| SlotEntry {
                    id,
                    group: 0,
                    action: None,
                })
                .collect(),
            proxies: BTreeMap::new(),
        }
    }

    /// Parses and validates JSON.
    pub fn from_json(data: &[u8]) -> Result<Topology, String> {
        let t: Topology = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        t.validate().map_err(|e| e.to_string())?;
        Ok(t)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("topology serializes")
    }

    /// Checks every invariant: 1024 slots in order, each owned by at most one known group,
    /// migrations target a known other group, group ids in range, no server in two places.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.slots.len() != NUM_SLOTS {
            return Err(TopologyError::SlotCount(self.slots.len()));
        }
        let mut seen: BTreeMap<&str, GroupId> = BTreeMap::new();
        for (&key, g) in &self.groups {
            if g.id != key {
                return Err(TopologyError::GroupKey { key, id: g.id });
            }
            if g.id == 0 || g.id > MAX_GROUP_ID {
                return Err(TopologyError::GroupId(g.id));
            }
            for s in &g.servers {
                if let Some(&other) = seen.get(s.as_str()) {
                    if other == g.id {
                        return Err(TopologyError::ServerRepeated {
                            addr: s.clone(),
                            group: g.id,
                        });
                    }
                    return Err(TopologyError::ServerTwice {
                        addr: s.clone(),
                        a: other,
                        b: g.id,
                    });
                }
                seen.insert(s, g.id);
            }
        }
        for (pos, s) in self.slots.iter().enumerate() {
            if s.id as usize != pos {
                return Err(TopologyError::SlotId { pos, id: s.id });
            }
            if s.group != 0 && !self.groups.contains_key(&s.group) {
                return Err(TopologyError::UnknownGroup {
                    slot: s.id,
                    group: s.group,
                });
            }
            if let Some(a) = &s.action {
                if !self.groups.contains_key(&a.target) {
                    return Err(TopologyError::UnknownTarget {
                        slot: s.id,
                        group: a.target,
                    });
                }
                if a.target == s.group {
                    return Err(TopologyError::TargetIsOwner {
                        slot: s.id,
                        group: s.group,
                    });
                }
            }
        }
        for (key, p) in &self.proxies {
            if *key != p.token {
                return Err(TopologyError::ProxyKey {
                    key: key.clone(),
                    token: p.token.clone(),
                });
            }
        }
        Ok(())
    }

    /// How proxies route a slot in its current state.
    pub fn route(&self, slot: u16) -> SlotRoute {
        let s = &self.slots[slot as usize];
        let owner = (s.group != 0).then_some(s.group);
        let mut r = SlotRoute {
            backend: owner,
            migrate_from: None,
            locked: false,
            method: MigrationMethod::default(),
        };
        if let Some(a) = &s.action {
            r.method = a.method;
            match a.state {
                MigrationState::Pending | MigrationState::Preparing => {}
                MigrationState::Prepared => {
                    r.backend = Some(a.target);
                    r.migrate_from = owner;
                    r.locked = true;
                }
                MigrationState::Migrating => {
                    r.backend = Some(a.target);
                    r.migrate_from = owner;
                }
                MigrationState::Finished => r.backend = Some(a.target),
            }
        }
        r
    }

    /// Slots owned by each group (offline slots under 0), ignoring migrations.
    pub fn slots_by_group(&self) -> BTreeMap<GroupId, Vec<u16>> {
        let mut m: BTreeMap<GroupId, Vec<u16>> = BTreeMap::new();
        for s in &self.slots {
            m.entry(s.group).or_default().push(s.id);
        }
        m
    }

    /// The groups that take part in a migration (as source or target).
    pub fn migrating_groups(&self) -> BTreeSet<GroupId> {
        self.slots
            .iter()
            .filter_map(|s| s.action.as_ref().map(|a| (s.group, a.target)))
            .flat_map(|(a, b)| [a, b])
            .filter(|&g| g != 0)
            .collect()
    }
}

/// One difference between two topologies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Epoch {
        old: Epoch,
        new: Epoch,
    },
    GroupAdded(GroupId),
    GroupRemoved(GroupId),
    GroupChanged(GroupId),
    /// A slot's owner or action changed.
    Slot {
        slot: u16,
        old: SlotEntry,
        new: SlotEntry,
    },
    /// A slot whose route (where a proxy sends it) changed.
    Route {
        slot: u16,
        old: SlotRoute,
        new: SlotRoute,
    },
    ProxyAdded(String),
    ProxyRemoved(String),
    ProxyChanged(String),
}

/// Everything that differs from `old` to `new`, in a stable order. Pure.
pub fn diff(old: &Topology, new: &Topology) -> Vec<Change> {
    let mut out = Vec::new();
    if old.epoch != new.epoch {
        out.push(Change::Epoch {
            old: old.epoch,
            new: new.epoch,
        });
    }
    for (id, g) in &new.groups {
        match old.groups.get(id) {
            None => out.push(Change::GroupAdded(*id)),
            Some(o) if o != g => out.push(Change::GroupChanged(*id)),
            _ => {}
        }
    }
    for id in old.groups.keys() {
        if !new.groups.contains_key(id) {
            out.push(Change::GroupRemoved(*id));
        }
    }
    for (o, n) in old.slots.iter().zip(new.slots.iter()) {
        if o != n {
            out.push(Change::Slot {
                slot: n.id,
                old: o.clone(),
                new: n.clone(),
            });
        }
        let (ro, rn) = (old.route(o.id), new.route(n.id));
        if ro != rn {
            out.push(Change::Route {
                slot: n.id,
                old: ro,
                new: rn,
            });
        }
    }
    for (t, p) in &new.proxies {
        match old.proxies.get(t) {
            None => out.push(Change::ProxyAdded(t.clone())),
            Some(o) if o != p => out.push(Change::ProxyChanged(t.clone())),
            _ => {}
        }
    }
    for t in old.proxies.keys() {
        if !new.proxies.contains_key(t) {
            out.push(Change::ProxyRemoved(t.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_groups() -> Topology {
        let mut t = Topology::new();
        for (id, addr) in [(1, "127.0.0.1:7001"), (2, "127.0.0.1:7002")] {
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
            s.group = if s.id < 512 { 1 } else { 2 };
        }
        t.epoch = 1;
        t
    }

    #[test]
    fn json_round_trip_and_validate() {
        let t = two_groups();
        t.validate().unwrap();
        let back = Topology::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t);
        let v: serde_json::Value = serde_json::from_slice(&t.to_json()).unwrap();
        assert_eq!(v["slots"][0], serde_json::json!({"id": 0, "group": 1}));
    }

    #[test]
    fn invalid_topologies() {
        let mut t = two_groups();
        t.slots[3].group = 7;
        assert_eq!(
            t.validate(),
            Err(TopologyError::UnknownGroup { slot: 3, group: 7 })
        );
        let mut t = two_groups();
        t.slots.pop();
        assert_eq!(t.validate(), Err(TopologyError::SlotCount(1023)));
        let mut t = two_groups();
        t.slots.swap(1, 2);
        assert!(matches!(t.validate(), Err(TopologyError::SlotId { .. })));
        let mut t = two_groups();
        t.groups.get_mut(&2).unwrap().servers = vec!["127.0.0.1:7001".into()];
        assert!(matches!(
            t.validate(),
            Err(TopologyError::ServerTwice { .. })
        ));
        let mut t = two_groups();
        t.slots[0].action = Some(SlotAction {
            index: 1,
            state: MigrationState::Pending,
            target: 1,
            method: MigrationMethod::SemiAsync,
        });
        assert!(matches!(
            t.validate(),
            Err(TopologyError::TargetIsOwner { .. })
        ));
        let mut t = two_groups();
        t.groups.insert(
            10000,
            Group {
                id: 10000,
                servers: vec![],
                read_from_replica: false,
            },
        );
        assert_eq!(t.validate(), Err(TopologyError::GroupId(10000)));
        assert!(Topology::from_json(b"{").is_err());
    }

    #[test]
    fn routes_follow_states() {
        let mut t = two_groups();
        let mut at = |state| {
            t.slots[5].action = Some(SlotAction {
                index: 1,
                state,
                target: 2,
                method: MigrationMethod::Sync,
            });
            t.route(5)
        };
        let r = at(MigrationState::Pending);
        assert_eq!(
            (r.backend, r.migrate_from, r.locked),
            (Some(1), None, false)
        );
        let r = at(MigrationState::Prepared);
        assert_eq!(
            (r.backend, r.migrate_from, r.locked),
            (Some(2), Some(1), true)
        );
        let r = at(MigrationState::Migrating);
        assert_eq!(
            (r.backend, r.migrate_from, r.locked),
            (Some(2), Some(1), false)
        );
        assert_eq!(r.method, MigrationMethod::Sync);
        let r = at(MigrationState::Finished);
        assert_eq!((r.backend, r.migrate_from), (Some(2), None));
        assert_eq!(Topology::new().route(0).backend, None);
    }

    #[test]
    fn diff_reports_changes() {
        let a = two_groups();
        let mut b = a.clone();
        assert!(diff(&a, &b).is_empty());
        b.epoch = 2;
        b.slots[7].group = 2;
        b.groups.remove(&1);
        b.groups.insert(
            3,
            Group {
                id: 3,
                servers: vec!["127.0.0.1:7003".into()],
                read_from_replica: true,
            },
        );
        b.proxies.insert(
            "t1".into(),
            ProxyInfo {
                token: "t1".into(),
                proxy_addr: "127.0.0.1:19000".into(),
                admin_addr: "127.0.0.1:11080".into(),
                applied_epoch: 2,
                pid: 1,
                start_time: 0,
            },
        );
        let d = diff(&a, &b);
        assert_eq!(d[0], Change::Epoch { old: 1, new: 2 });
        assert!(d.contains(&Change::GroupAdded(3)));
        assert!(d.contains(&Change::GroupRemoved(1)));
        assert!(d.contains(&Change::ProxyAdded("t1".into())));
        assert!(d.iter().any(|c| matches!(c, Change::Slot { slot: 7, .. })));
        assert!(d.iter().any(|c| matches!(c, Change::Route { slot: 7, .. })));
        assert_eq!(d.len(), 6);
    }
}
