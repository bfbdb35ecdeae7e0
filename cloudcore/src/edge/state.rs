//! The per-node view of the cluster as a pure state machine: watch events in, per-node
//! changes out. No IO, no clocks; `super::watch` feeds it and broadcasts what it returns.
//!
//! Memory follows edge nodes: a pod or device is kept only while bound to a known edge
//! node, a ConfigMap/Secret/DeviceModel only while something held references it. A
//! reference whose object is unknown starts `Pending`; the object's own watcher (its list,
//! or a targeted GET the state asks for through [`State::take_fetches`]) resolves it to
//! `Present` or `Absent` (sent to the node as a tombstone).
//!
//! A Device is sent only once its DeviceModel is resolved (sent, or tombstoned as absent):
//! until then it is *deferred* — left out of [`State::desired`], reported by
//! [`State::pending_refs`] so a diff keeps whatever the edge holds for it — and released
//! right after the model's own change. An edge never starts a driver without the model's
//! property types because the Device overtook its model.
//!
//! Relists (`begin_list` … `end_list`) are buffered and applied as a diff at the end, so a
//! reader never sees half a list.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use proto::ResourceKey;

use super::{DesiredObject, NodeChange};

/// One change for one node.
pub type Change = (String, NodeChange);

/// The watched kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Edge Nodes.
    Node,
    /// Pods bound to edge nodes.
    Pod,
    /// ConfigMaps referenced by those pods.
    ConfigMap,
    /// Secrets referenced by those pods.
    Secret,
    /// Devices bound to edge nodes.
    Device,
    /// DeviceModels referenced by those devices.
    DeviceModel,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 6] = [
        Kind::Node,
        Kind::Pod,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::Device,
        Kind::DeviceModel,
    ];

    /// The referenced kind a key names, if any.
    pub fn of_ref(key: &ResourceKey) -> Option<Kind> {
        match key.kind.as_str() {
            super::refs::CONFIGMAP => Some(Kind::ConfigMap),
            super::refs::SECRET => Some(Kind::Secret),
            super::refs::DEVICEMODEL => Some(Kind::DeviceModel),
            _ => None,
        }
    }
}

/// One object as a watcher saw it, already reduced to what the state needs.
#[derive(Debug, Clone)]
pub enum Item {
    /// An edge Node.
    Node(DesiredObject),
    /// A pod or device: its node and what it references.
    Member {
        /// The object.
        obj: DesiredObject,
        /// `spec.nodeName`.
        node: Option<String>,
        /// ConfigMaps/Secrets (pods) or the DeviceModel (devices).
        refs: BTreeSet<ResourceKey>,
    },
    /// A ConfigMap, Secret or DeviceModel.
    Ref(DesiredObject),
}

impl Item {
    fn key(&self) -> &ResourceKey {
        match self {
            Item::Node(o) | Item::Member { obj: o, .. } | Item::Ref(o) => &o.key,
        }
    }
}

struct Held {
    node: String,
    obj: DesiredObject,
    refs: BTreeSet<ResourceKey>,
    /// A device whose current version waits for its DeviceModel to resolve (not sent).
    deferred: bool,
}

/// Whether members of this kind wait for their references before they are sent.
fn waits_for_refs(key: &ResourceKey) -> bool {
    key.kind == "device"
}

#[derive(Default)]
struct Members {
    /// Pods and devices bound to the node.
    held: BTreeSet<ResourceKey>,
    /// Referenced objects with the number of the node's members referencing each.
    refs: BTreeMap<ResourceKey, u32>,
}

enum RefState {
    /// Referenced, object not known yet.
    Pending,
    /// The object.
    Present(DesiredObject),
    /// Known not to exist.
    Absent,
}

struct RefEntry {
    users: BTreeSet<String>,
    state: RefState,
    /// A fresh `State::seq` value at every event about the entry; a GET result issued
    /// before the last event must not overwrite it.
    touched: u64,
    /// Value of `State::generation` when first referenced.
    created_gen: u64,
}

struct ListBuffer {
    init_gen: u64,
    items: Vec<Item>,
}

/// The whole view.
#[derive(Default)]
pub struct State {
    nodes: HashMap<String, DesiredObject>,
    held: HashMap<ResourceKey, Held>,
    members: HashMap<String, Members>,
    refs: HashMap<ResourceKey, RefEntry>,
    lists: HashMap<Kind, ListBuffer>,
    synced: HashSet<Kind>,
    generation: u64,
    seq: u64,
    fetches: Vec<(ResourceKey, u64)>,
    new_nodes: Vec<String>,
}

/// Whether resourceVersion `a` is older than `b` (numeric when both parse; opaque
/// versions are never "older").
fn rv_older(a: &str, b: &str) -> bool {
    matches!((a.parse::<u64>(), b.parse::<u64>()), (Ok(a), Ok(b)) if a < b)
}

fn delete_of(obj: &DesiredObject) -> NodeChange {
    NodeChange::Delete {
        key: obj.key.clone(),
        uid: obj.uid.clone(),
        resource_version: obj.resource_version.clone(),
    }
}

impl State {
    /// Whether `kind`'s watcher finished its first list.
    pub fn is_synced(&self, kind: Kind) -> bool {
        self.synced.contains(&kind)
    }

    /// Marks `kind` synced without a list (its resource does not exist in this cluster).
    pub fn mark_synced(&mut self, kind: Kind) {
        self.synced.insert(kind);
    }

    /// A (re)list of `kind` starts.
    pub fn begin_list(&mut self, kind: Kind) {
        self.lists.insert(
            kind,
            ListBuffer {
                init_gen: self.generation,
                items: Vec::new(),
            },
        );
    }

    /// One listed object; kept only if it belongs to an edge node or is referenced.
    pub fn list_item(&mut self, kind: Kind, item: Item) {
        let keep = match &item {
            Item::Node(_) => true,
            Item::Member { node, .. } => node.as_ref().is_some_and(|n| self.nodes.contains_key(n)),
            Item::Ref(obj) => self.refs.contains_key(&obj.key),
        };
        if keep && let Some(buf) = self.lists.get_mut(&kind) {
            buf.items.push(item);
        }
    }

    /// The (re)list of `kind` is complete: apply it as a diff.
    pub fn end_list(&mut self, kind: Kind) -> Vec<Change> {
        let mut out = Vec::new();
        let Some(buf) = self.lists.remove(&kind) else {
            self.synced.insert(kind);
            return out;
        };
        let listed: HashSet<ResourceKey> = buf.items.iter().map(|i| i.key().clone()).collect();
        match kind {
            Kind::Node => {
                let gone: Vec<String> = self
                    .nodes
                    .values()
                    .filter(|o| !listed.contains(&o.key))
                    .map(|o| o.key.name.clone())
                    .collect();
                for name in gone {
                    self.remove_node(&name, &mut out);
                }
            }
            Kind::Pod | Kind::Device => {
                let kind_name = if kind == Kind::Pod { "pod" } else { "device" };
                let gone: Vec<ResourceKey> = self
                    .held
                    .keys()
                    .filter(|k| k.kind == kind_name && !listed.contains(*k))
                    .cloned()
                    .collect();
                for key in gone {
                    self.remove_member(&key, &mut out);
                }
            }
            Kind::ConfigMap | Kind::Secret | Kind::DeviceModel => {
                let was_synced = self.synced.contains(&kind);
                let unlisted: Vec<(ResourceKey, u64, u64)> = self
                    .refs
                    .iter()
                    .filter(|(k, _)| Kind::of_ref(k) == Some(kind) && !listed.contains(*k))
                    .map(|(k, e)| (k.clone(), e.created_gen, e.touched))
                    .collect();
                for (key, created_gen, touched) in unlisted {
                    if created_gen <= buf.init_gen {
                        // Referenced before the list began, yet not in it: absent.
                        self.ref_absent(&key, None, &mut out);
                    } else if !was_synced {
                        // Referenced mid-list: the list may have passed it already.
                        self.fetches.push((key, touched));
                    }
                }
            }
        }
        for item in buf.items {
            self.apply_into(item, &mut out);
        }
        self.synced.insert(kind);
        out
    }

    /// An object was added or changed.
    pub fn apply(&mut self, item: Item) -> Vec<Change> {
        let mut out = Vec::new();
        self.apply_into(item, &mut out);
        out
    }

    fn apply_into(&mut self, item: Item, out: &mut Vec<Change>) {
        match item {
            Item::Node(obj) => self.upsert_node(obj, out),
            Item::Member { obj, node, refs } => self.upsert_member(obj, node, refs, out),
            Item::Ref(obj) => self.ref_present(obj, out),
        }
    }

    /// An object was deleted (`item` is its last state).
    pub fn delete(&mut self, item: Item) -> Vec<Change> {
        let mut out = Vec::new();
        match item {
            Item::Node(obj) => self.remove_node(&obj.key.name, &mut out),
            Item::Member { obj, .. } => self.remove_member(&obj.key, &mut out),
            Item::Ref(obj) => self.ref_absent(&obj.key, Some(&obj.resource_version), &mut out),
        }
        out
    }

    /// The result of a GET issued for `key` when its entry's `touched` was `touched_at`
    /// (`None`: 404). If a watch event for the key arrived since, the result is dropped:
    /// the watch is ordered and delivers everything after that event anyway.
    pub fn fetched(
        &mut self,
        key: &ResourceKey,
        touched_at: u64,
        result: Option<DesiredObject>,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        if self.refs.get(key).is_none_or(|e| e.touched != touched_at) {
            return out;
        }
        match result {
            Some(obj) => self.ref_present(obj, &mut out),
            None => self.ref_absent(key, None, &mut out),
        }
        out
    }

    /// GETs the watch layer should issue: (key, touched).
    pub fn take_fetches(&mut self) -> Vec<(ResourceKey, u64)> {
        std::mem::take(&mut self.fetches)
    }

    /// Edge nodes that appeared after the first node list (their pods and devices may
    /// have been filtered out before; the watch layer rescans).
    pub fn take_new_nodes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_nodes)
    }

    fn upsert_node(&mut self, obj: DesiredObject, out: &mut Vec<Change>) {
        let name = obj.key.name.clone();
        match self.nodes.get(&name) {
            Some(cur) if cur.resource_version == obj.resource_version && cur.uid == obj.uid => {
                return;
            }
            Some(_) => {}
            None if self.synced.contains(&Kind::Node) => self.new_nodes.push(name.clone()),
            None => {}
        }
        self.members.entry(name.clone()).or_default();
        self.nodes.insert(name.clone(), obj.clone());
        out.push((name, NodeChange::Upsert(obj)));
    }

    fn remove_node(&mut self, name: &str, out: &mut Vec<Change>) {
        let Some(obj) = self.nodes.remove(name) else {
            return;
        };
        let held: Vec<ResourceKey> = self
            .members
            .get(name)
            .map(|m| m.held.iter().cloned().collect())
            .unwrap_or_default();
        for key in held {
            self.remove_member(&key, out);
        }
        self.members.remove(name);
        out.push((name.to_owned(), delete_of(&obj)));
    }

    fn upsert_member(
        &mut self,
        obj: DesiredObject,
        node: Option<String>,
        refs: BTreeSet<ResourceKey>,
        out: &mut Vec<Change>,
    ) {
        let key = obj.key.clone();
        let Some(node) = node.filter(|n| self.nodes.contains_key(n)) else {
            self.remove_member(&key, out);
            return;
        };
        let old_refs = match self.held.get(&key) {
            Some(old) if old.node == node => {
                if old.obj.resource_version == obj.resource_version && old.obj.uid == obj.uid {
                    if old.refs == refs {
                        return;
                    }
                } else if old.obj.uid != obj.uid {
                    // Another incarnation under the same name: remove the old one first.
                    out.push((node.clone(), delete_of(&old.obj)));
                }
                old.refs.clone()
            }
            Some(_) => {
                // Moved to another node.
                self.remove_member(&key, out);
                BTreeSet::new()
            }
            None => BTreeSet::new(),
        };
        for r in refs.difference(&old_refs) {
            self.ref_add(&node, r, out);
        }
        let deferred = waits_for_refs(&key) && refs.iter().any(|r| self.is_pending(r));
        if !deferred {
            out.push((node.clone(), NodeChange::Upsert(obj.clone())));
        }
        for r in old_refs.difference(&refs) {
            self.ref_remove(&node, r, out);
        }
        self.members
            .entry(node.clone())
            .or_default()
            .held
            .insert(key.clone());
        self.held.insert(
            key,
            Held {
                node,
                obj,
                refs,
                deferred,
            },
        );
    }

    /// Whether referenced `key` is not resolved yet.
    fn is_pending(&self, key: &ResourceKey) -> bool {
        !matches!(
            self.refs.get(key).map(|e| &e.state),
            Some(RefState::Present(_) | RefState::Absent)
        )
    }

    /// `key` was just resolved: sends the deferred members of `nodes` that waited only
    /// for it (after the change that resolved it, which the caller pushed already).
    fn release_deferred(&mut self, nodes: &[String], key: &ResourceKey, out: &mut Vec<Change>) {
        for node in nodes {
            let Some(m) = self.members.get(node) else {
                continue;
            };
            let waiting: Vec<ResourceKey> = m
                .held
                .iter()
                .filter(|k| {
                    self.held
                        .get(*k)
                        .is_some_and(|h| h.deferred && h.refs.contains(key))
                })
                .cloned()
                .collect();
            for member in waiting {
                let ready = self
                    .held
                    .get(&member)
                    .is_some_and(|h| !h.refs.iter().any(|r| self.is_pending(r)));
                if let Some(h) = self.held.get_mut(&member)
                    && ready
                {
                    h.deferred = false;
                    out.push((node.clone(), NodeChange::Upsert(h.obj.clone())));
                }
            }
        }
    }

    fn remove_member(&mut self, key: &ResourceKey, out: &mut Vec<Change>) {
        let Some(h) = self.held.remove(key) else {
            return;
        };
        if let Some(m) = self.members.get_mut(&h.node) {
            m.held.remove(key);
        }
        out.push((h.node.clone(), delete_of(&h.obj)));
        for r in &h.refs {
            self.ref_remove(&h.node, r, out);
        }
    }

    fn ref_add(&mut self, node: &str, key: &ResourceKey, out: &mut Vec<Change>) {
        let count = self
            .members
            .entry(node.to_owned())
            .or_default()
            .refs
            .entry(key.clone())
            .or_insert(0);
        *count += 1;
        if *count > 1 {
            return;
        }
        if !self.refs.contains_key(key) {
            self.generation += 1;
            let touched = self.next_seq();
            self.refs.insert(
                key.clone(),
                RefEntry {
                    users: BTreeSet::new(),
                    state: RefState::Pending,
                    touched,
                    created_gen: self.generation,
                },
            );
            // Before its kind's first list completes, the list (or `end_list`) resolves it.
            if Kind::of_ref(key).is_some_and(|k| self.synced.contains(&k)) {
                self.fetches.push((key.clone(), touched));
            }
        }
        let Some(entry) = self.refs.get_mut(key) else {
            return;
        };
        entry.users.insert(node.to_owned());
        match &entry.state {
            RefState::Present(obj) => out.push((node.to_owned(), NodeChange::Upsert(obj.clone()))),
            RefState::Absent => {
                out.push((node.to_owned(), NodeChange::Tombstone { key: key.clone() }))
            }
            RefState::Pending => {}
        }
    }

    fn ref_remove(&mut self, node: &str, key: &ResourceKey, out: &mut Vec<Change>) {
        let Some(m) = self.members.get_mut(node) else {
            return;
        };
        let Some(count) = m.refs.get_mut(key) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        m.refs.remove(key);
        let Some(entry) = self.refs.get_mut(key) else {
            return;
        };
        entry.users.remove(node);
        match &entry.state {
            RefState::Present(obj) => out.push((node.to_owned(), delete_of(obj))),
            // Forget the tombstone: a delete with no UID.
            RefState::Absent => out.push((
                node.to_owned(),
                NodeChange::Delete {
                    key: key.clone(),
                    uid: String::new(),
                    resource_version: String::new(),
                },
            )),
            RefState::Pending => {}
        }
        if entry.users.is_empty() {
            self.refs.remove(key);
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn ref_present(&mut self, obj: DesiredObject, out: &mut Vec<Change>) {
        let seq = self.next_seq();
        let Some(entry) = self.refs.get_mut(&obj.key) else {
            return;
        };
        if let RefState::Present(cur) = &entry.state {
            let same = cur.resource_version == obj.resource_version && cur.uid == obj.uid;
            if same || rv_older(&obj.resource_version, &cur.resource_version) {
                return;
            }
        }
        entry.touched = seq;
        for user in &entry.users {
            out.push((user.clone(), NodeChange::Upsert(obj.clone())));
        }
        let was_pending = matches!(entry.state, RefState::Pending);
        let key = obj.key.clone();
        entry.state = RefState::Present(obj);
        if was_pending {
            let users: Vec<String> = entry.users.iter().cloned().collect();
            self.release_deferred(&users, &key, out);
        }
    }

    fn ref_absent(&mut self, key: &ResourceKey, rv: Option<&str>, out: &mut Vec<Change>) {
        let seq = self.next_seq();
        let Some(entry) = self.refs.get_mut(key) else {
            return;
        };
        if let (RefState::Present(cur), Some(rv)) = (&entry.state, rv)
            && rv_older(rv, &cur.resource_version)
        {
            return;
        }
        entry.touched = seq;
        if matches!(entry.state, RefState::Absent) {
            return;
        }
        let was_pending = matches!(entry.state, RefState::Pending);
        entry.state = RefState::Absent;
        for user in &entry.users {
            out.push((user.clone(), NodeChange::Tombstone { key: key.clone() }));
        }
        if was_pending {
            let users: Vec<String> = entry.users.iter().cloned().collect();
            self.release_deferred(&users, key, out);
        }
    }

    /// What `node` should hold now: its Node, the referenced objects (tombstones for absent
    /// ones; pending ones are left out), then its pods and devices.
    pub fn desired(&self, node: &str) -> Vec<NodeChange> {
        let Some(obj) = self.nodes.get(node) else {
            return Vec::new();
        };
        let mut out = vec![NodeChange::Upsert(obj.clone())];
        if let Some(m) = self.members.get(node) {
            for key in m.refs.keys() {
                match self.refs.get(key).map(|e| &e.state) {
                    Some(RefState::Present(o)) => out.push(NodeChange::Upsert(o.clone())),
                    Some(RefState::Absent) => out.push(NodeChange::Tombstone { key: key.clone() }),
                    _ => {}
                }
            }
            for key in &m.held {
                if let Some(h) = self.held.get(key)
                    && !h.deferred
                {
                    out.push(NodeChange::Upsert(h.obj.clone()));
                }
            }
        }
        out
    }

    /// Referenced objects of `node` not resolved yet (a GET or the watch will
    /// tell), and the devices deferred until they are. They are missing from
    /// [`State::desired`], and must not be deleted at the edge because of that:
    /// their resolution arrives as a change.
    pub fn pending_refs(&self, node: &str) -> Vec<ResourceKey> {
        let Some(m) = self.members.get(node) else {
            return Vec::new();
        };
        let refs = m.refs.keys().filter(|k| self.is_pending(k));
        let deferred = m
            .held
            .iter()
            .filter(|k| self.held.get(*k).is_some_and(|h| h.deferred));
        refs.chain(deferred).cloned().collect()
    }

    /// Whether `node` is a known edge node.
    pub fn node_exists(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// The JSON of the edge node `node` (cheap: shared bytes).
    pub fn node_json(&self, node: &str) -> Option<bytes::Bytes> {
        self.nodes.get(node).map(|n| n.json.clone())
    }

    /// The node a held pod or device (by key) is bound to.
    pub fn holder(&self, key: &ResourceKey) -> Option<&str> {
        self.held.get(key).map(|h| h.node.as_str())
    }

    /// Whether `node` may read `key`: its own Node, its pods and devices, and what they
    /// reference.
    pub fn may_read(&self, node: &str, key: &ResourceKey) -> bool {
        match key.kind.as_str() {
            "node" => key.namespace.is_none() && key.name == node && self.node_exists(node),
            "pod" | "device" => self.holder(key) == Some(node),
            "serviceaccount" => self.uses_service_account(node, key),
            "lease" => {
                key.namespace.as_deref() == Some(crate::lifecycle::LEASE_NAMESPACE)
                    && key.name == node
                    && self.node_exists(node)
            }
            _ => self
                .members
                .get(node)
                .is_some_and(|m| m.refs.contains_key(key)),
        }
    }

    /// Whether a pod of `node` runs as the ServiceAccount `key` (as the Kubernetes node
    /// authorizer: a node may read, and request tokens for, its pods' accounts).
    fn uses_service_account(&self, node: &str, key: &ResourceKey) -> bool {
        let Some(members) = self.members.get(node) else {
            return false;
        };
        members
            .held
            .iter()
            .filter(|k| k.kind == "pod" && k.namespace == key.namespace)
            .filter_map(|k| self.held.get(k))
            .any(|h| {
                let v: serde_json::Value = serde_json::from_slice(&h.obj.json).unwrap_or_default();
                let sa = v
                    .pointer("/spec/serviceAccountName")
                    .and_then(serde_json::Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("default");
                sa == key.name
            })
    }

    /// Objects held, for metrics: (nodes, pods + devices, referenced objects).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.nodes.len(), self.held.len(), self.refs.len())
    }
}

#[cfg(test)]
mod tests;
