//! The proxy's slot table: for each of the 1024 slots, the backend (group master) to send
//! it to. Built whole from a [`Topology`] and replaced whole when the epoch changes.

use rcodis_core::slot::NUM_SLOTS;
use rcodis_core::topology::{Epoch, GroupId, MigrationMethod, Topology};

/// Index into [`SlotTable::backends`].
pub type BackendId = u16;

/// Where one slot goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotRoute {
    /// The backend serving the slot; `None` when the slot is offline.
    pub backend: Option<BackendId>,
    /// Requests for the slot must wait for a later table (migration phase 1).
    pub locked: bool,
    /// While migrating, the source the key must have left first.
    pub migrate_from: Option<BackendId>,
    /// How a key leaves the source (EXEC-WRAPPER or SLOTSMGRTTAGONE).
    pub method: MigrationMethod,
    /// A replica that may serve read-only commands for the slot (index into
    /// [`SlotTable::replicas`]): only for groups with read-from-replica on, never while the
    /// slot has a migration planned or under way.
    pub replica: Option<u16>,
}

/// An immutable routing snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTable {
    pub epoch: Epoch,
    /// Backend addresses (`host:port`), each a group's master.
    pub backends: Vec<String>,
    /// Group of each backend (same index).
    pub groups: Vec<GroupId>,
    /// Replica addresses of the groups that allow reads from replicas.
    pub replicas: Vec<String>,
    pub slots: Vec<SlotRoute>,
    /// Whether any slot is migrating (requests then check their keys).
    pub any_migrating: bool,
}

impl SlotTable {
    /// A table routing nothing (every slot offline).
    pub fn empty() -> Self {
        SlotTable {
            epoch: 0,
            backends: Vec::new(),
            groups: Vec::new(),
            replicas: Vec::new(),
            slots: vec![SlotRoute::default(); NUM_SLOTS],
            any_migrating: false,
        }
    }

    /// Builds the table from a topology: each group's master is one backend.
    pub fn from_topology(t: &Topology) -> Self {
        let mut backends = Vec::new();
        let mut groups = Vec::new();
        let mut id_of = std::collections::BTreeMap::new();
        let mut replicas: Vec<String> = Vec::new();
        // Each group's replica ids (for groups that allow reads from them).
        let mut replicas_of: std::collections::BTreeMap<GroupId, Vec<u16>> = Default::default();
        for (gid, g) in &t.groups {
            if let Some(m) = g.master() {
                id_of.insert(*gid, backends.len() as BackendId);
                backends.push(m.to_string());
                groups.push(*gid);
                if g.read_from_replica {
                    for r in &g.servers[1..] {
                        replicas_of
                            .entry(*gid)
                            .or_default()
                            .push(replicas.len() as u16);
                        replicas.push(r.clone());
                    }
                }
            }
        }
        let slots = (0..NUM_SLOTS as u16)
            .map(|s| {
                let r = t.route(s);
                let settled = t.slots[s as usize].action.is_none();
                // Slots spread over the group's replicas.
                let replica = r
                    .backend
                    .filter(|_| settled)
                    .and_then(|g| replicas_of.get(&g))
                    .map(|ids| ids[s as usize % ids.len()]);
                SlotRoute {
                    backend: r.backend.and_then(|g| id_of.get(&g).copied()),
                    locked: r.locked,
                    migrate_from: r.migrate_from.and_then(|g| id_of.get(&g).copied()),
                    method: r.method,
                    replica,
                }
            })
            .collect::<Vec<SlotRoute>>();
        SlotTable {
            epoch: t.epoch,
            backends,
            groups,
            replicas,
            any_migrating: slots.iter().any(|r| r.migrate_from.is_some()),
            slots,
        }
    }

    /// The route of a slot.
    #[inline]
    pub fn route(&self, slot: u16) -> SlotRoute {
        self.slots[slot as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcodis_core::topology::{Group, MigrationMethod, MigrationState, SlotAction};

    #[test]
    fn built_from_topology() {
        let mut t = Topology::new();
        for (id, addr) in [(1, "127.0.0.1:7001"), (2, "127.0.0.1:7002")] {
            t.groups.insert(
                id,
                Group {
                    id,
                    servers: vec![addr.into(), "127.0.0.1:9999".into()],
                    read_from_replica: false,
                },
            );
        }
        for s in &mut t.slots {
            s.group = if s.id < 512 { 1 } else { 2 };
        }
        t.slots[10].action = Some(SlotAction {
            index: 1,
            state: MigrationState::Migrating,
            target: 2,
            method: MigrationMethod::SemiAsync,
        });
        t.slots[1023].group = 0;
        t.epoch = 7;
        let st = SlotTable::from_topology(&t);
        assert_eq!(st.epoch, 7);
        assert_eq!(st.backends, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(st.route(0).backend, Some(0));
        assert_eq!(st.route(600).backend, Some(1));
        assert_eq!(
            st.route(10),
            SlotRoute {
                backend: Some(1),
                locked: false,
                migrate_from: Some(0),
                method: MigrationMethod::SemiAsync,
                replica: None,
            }
        );
        assert_eq!(st.route(1023).backend, None);
        // Reads from replicas: only for groups that allow them, never for moving slots.
        assert!(st.replicas.is_empty() && st.route(0).replica.is_none());
        t.groups.get_mut(&1).unwrap().read_from_replica = true;
        t.slots[11].action = Some(SlotAction {
            index: 2,
            state: MigrationState::Pending,
            target: 2,
            method: MigrationMethod::SemiAsync,
        });
        let st = SlotTable::from_topology(&t);
        assert_eq!(st.replicas, ["127.0.0.1:9999"]);
        assert_eq!(st.route(0).replica, Some(0));
        assert_eq!(st.route(11).replica, None);
        assert_eq!(st.route(10).replica, None);
        assert_eq!(st.route(600).replica, None);
    }
}
