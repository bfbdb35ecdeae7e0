#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use proto::ResourceKey;

use super::*;

fn obj(key: &str, uid: &str, rv: &str) -> DesiredObject {
    DesiredObject {
        key: ResourceKey::parse(key).unwrap(),
        uid: uid.into(),
        resource_version: rv.into(),
        json: Bytes::from(format!("{{\"rv\":\"{rv}\"}}")),
    }
}

fn node(name: &str, rv: &str) -> Item {
    Item::Node(obj(
        &format!("null/node/{name}"),
        &format!("uid-{name}"),
        rv,
    ))
}

fn pod(name: &str, node: &str, rv: &str, refs: &[&str]) -> Item {
    Item::Member {
        obj: obj(&format!("default/pod/{name}"), &format!("uid-{name}"), rv),
        node: Some(node.to_owned()),
        refs: refs
            .iter()
            .map(|r| ResourceKey::parse(r).unwrap())
            .collect::<BTreeSet<_>>(),
    }
}

fn cm(name: &str, rv: &str) -> Item {
    Item::Ref(obj(
        &format!("default/configmap/{name}"),
        &format!("uid-{name}"),
        rv,
    ))
}

/// A compact rendering of changes: `node op key[@rv]`.
fn show(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|(n, c)| match c {
            NodeChange::Upsert(o) => format!("{n} upsert {}@{}", o.key, o.resource_version),
            NodeChange::Delete { key, uid, .. } => format!("{n} delete {key} {uid}"),
            NodeChange::Tombstone { key } => format!("{n} tombstone {key}"),
        })
        .collect()
}

fn show_desired(s: &State, node: &str) -> Vec<String> {
    show(
        &s.desired(node)
            .into_iter()
            .map(|c| (node.to_owned(), c))
            .collect::<Vec<_>>(),
    )
}

/// Nodes e1 (edge) synced; pods and configmaps lists done (empty).
fn synced() -> State {
    let mut s = State::default();
    for kind in Kind::ALL {
        s.begin_list(kind);
        if kind == Kind::Node {
            s.list_item(kind, node("e1", "1"));
        }
        s.end_list(kind);
    }
    s
}

#[test]
fn initial_lists_build_the_node_set_and_tombstone_missing_refs() {
    let mut s = State::default();
    s.begin_list(Kind::Node);
    s.list_item(Kind::Node, node("e1", "1"));
    s.list_item(Kind::Node, node("e2", "1"));
    s.end_list(Kind::Node);
    s.begin_list(Kind::Pod);
    s.list_item(
        Kind::Pod,
        pod(
            "a",
            "e1",
            "5",
            &["default/configmap/cfg", "default/secret/key"],
        ),
    );
    s.list_item(
        Kind::Pod,
        pod("cloud", "worker-1", "6", &["default/configmap/other"]),
    );
    s.end_list(Kind::Pod);
    // A pod on a non-edge node is not kept; its references neither.
    assert_eq!(s.sizes(), (2, 1, 2));
    for kind in [Kind::ConfigMap, Kind::Secret] {
        s.begin_list(kind);
    }
    s.list_item(Kind::ConfigMap, cm("cfg", "3"));
    s.list_item(Kind::ConfigMap, cm("unreferenced", "4"));
    s.end_list(Kind::ConfigMap);
    s.end_list(Kind::Secret);
    assert_eq!(
        show_desired(&s, "e1"),
        vec![
            "e1 upsert null/node/e1@1",
            "e1 upsert default/configmap/cfg@3",
            "e1 tombstone default/secret/key",
            "e1 upsert default/pod/a@5",
        ]
    );
    assert_eq!(show_desired(&s, "e2"), vec!["e2 upsert null/node/e2@1"]);
    assert!(s.desired("worker-1").is_empty());
    assert_eq!(s.sizes(), (2, 1, 2));
    assert!(s.take_fetches().is_empty());
}

#[test]
fn a_new_reference_is_fetched_then_sent() {
    let mut s = synced();
    let c = s.apply(pod("a", "e1", "5", &["default/configmap/cfg"]));
    assert_eq!(show(&c), vec!["e1 upsert default/pod/a@5"]);
    let key = ResourceKey::parse("default/configmap/cfg").unwrap();
    let fetches = s.take_fetches();
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0].0, key);
    // While the fetch runs the reference is pending: left out of `desired`
    // (nothing to send yet) but reported, so a diff keeps it at the edge.
    assert!(
        !show_desired(&s, "e1")
            .iter()
            .any(|d| d.contains("configmap"))
    );
    assert_eq!(s.pending_refs("e1"), vec![key.clone()]);
    let c = s.fetched(
        &key,
        fetches[0].1,
        Some(obj("default/configmap/cfg", "u", "7")),
    );
    assert_eq!(show(&c), vec!["e1 upsert default/configmap/cfg@7"]);
    assert!(s.pending_refs("e1").is_empty());
    // An older watch event does not go back in time.
    assert!(s.apply(cm("cfg", "6")).is_empty());
    assert_eq!(
        show(&s.apply(cm("cfg", "8"))),
        vec!["e1 upsert default/configmap/cfg@8"]
    );
}

#[test]
fn a_fetch_that_raced_with_a_watch_event_loses() {
    let mut s = synced();
    s.apply(pod("a", "e1", "5", &["default/configmap/cfg"]));
    let key = ResourceKey::parse("default/configmap/cfg").unwrap();
    let (_, touched) = s.take_fetches()[0].clone();
    s.delete(cm("cfg", "9"));
    // The GET started before the delete and saw the object: ignored.
    assert!(
        s.fetched(&key, touched, Some(obj("default/configmap/cfg", "u", "8")))
            .is_empty()
    );
    assert!(s.fetched(&key, touched, None).is_empty());
    assert_eq!(
        show_desired(&s, "e1")[1],
        "e1 tombstone default/configmap/cfg"
    );
}

#[test]
fn a_not_found_fetch_is_a_tombstone_and_creation_replaces_it() {
    let mut s = synced();
    s.apply(pod("a", "e1", "5", &["default/secret/key"]));
    let key = ResourceKey::parse("default/secret/key").unwrap();
    let (_, touched) = s.take_fetches()[0].clone();
    assert_eq!(
        show(&s.fetched(&key, touched, None)),
        vec!["e1 tombstone default/secret/key"]
    );
    // A second answer to an older GET changes nothing.
    assert!(
        s.fetched(&key, touched, Some(obj("default/secret/key", "s0", "11")))
            .is_empty()
    );
    let c = s.apply(Item::Ref(obj("default/secret/key", "s1", "12")));
    assert_eq!(show(&c), vec!["e1 upsert default/secret/key@12"]);
    let c = s.delete(Item::Ref(obj("default/secret/key", "s1", "13")));
    assert_eq!(show(&c), vec!["e1 tombstone default/secret/key"]);
}

#[test]
fn membership_changes_are_emitted() {
    let mut s = synced();
    s.apply(pod("a", "e1", "5", &["default/configmap/cfg"]));
    let (key, touched) = s.take_fetches()[0].clone();
    s.fetched(&key, touched, Some(obj("default/configmap/cfg", "u", "7")));
    // A second pod referencing the same ConfigMap sends nothing extra for it.
    let c = s.apply(pod("b", "e1", "6", &["default/configmap/cfg"]));
    assert_eq!(show(&c), vec!["e1 upsert default/pod/b@6"]);
    // The pod stops referencing it: still used by b.
    let c = s.apply(pod("a", "e1", "8", &[]));
    assert_eq!(show(&c), vec!["e1 upsert default/pod/a@8"]);
    // b goes: the ConfigMap leaves the node and the cache.
    let c = s.delete(pod("b", "e1", "9", &["default/configmap/cfg"]));
    assert_eq!(
        show(&c),
        vec![
            "e1 delete default/pod/b uid-b",
            "e1 delete default/configmap/cfg u"
        ]
    );
    assert_eq!(s.sizes(), (1, 1, 0));
    // Unreferenced ConfigMap events are dropped at ingest.
    assert!(s.apply(cm("cfg", "10")).is_empty());
}

#[test]
fn pods_follow_their_node() {
    let mut s = synced();
    s.apply(node("e2", "1"));
    assert_eq!(s.take_new_nodes(), vec!["e2".to_owned()]);
    s.apply(pod("a", "e1", "5", &[]));
    // Moving to another edge node (a recreated pod) deletes it from the first.
    let c = s.apply(pod("a", "e2", "6", &[]));
    assert_eq!(
        show(&c),
        vec!["e1 delete default/pod/a uid-a", "e2 upsert default/pod/a@6"]
    );
    // Moving to a non-edge node deletes it.
    let c = s.apply(pod("a", "worker", "7", &[]));
    assert_eq!(show(&c), vec!["e2 delete default/pod/a uid-a"]);
    // Deleting a node deletes everything it held.
    s.apply(pod("b", "e2", "8", &[]));
    let c = s.delete(node("e2", "2"));
    assert_eq!(
        show(&c),
        vec![
            "e2 delete default/pod/b uid-b",
            "e2 delete null/node/e2 uid-e2"
        ]
    );
    assert!(!s.node_exists("e2"));
}

#[test]
fn a_new_incarnation_deletes_the_old_uid_first() {
    let mut s = synced();
    s.apply(pod("a", "e1", "5", &[]));
    let mut again = pod("a", "e1", "9", &[]);
    if let Item::Member { obj, .. } = &mut again {
        obj.uid = "uid-a2".into();
    }
    let c = s.apply(again);
    assert_eq!(
        show(&c),
        vec!["e1 delete default/pod/a uid-a", "e1 upsert default/pod/a@9"]
    );
}

#[test]
fn a_relist_is_applied_as_a_diff() {
    let mut s = synced();
    s.apply(pod("a", "e1", "5", &[]));
    s.apply(pod("b", "e1", "6", &[]));
    s.begin_list(Kind::Pod);
    s.list_item(Kind::Pod, pod("a", "e1", "5", &[]));
    s.list_item(Kind::Pod, pod("c", "e1", "7", &[]));
    // Readers still see the old state until the list ends.
    assert_eq!(s.desired("e1").len(), 3);
    let c = s.end_list(Kind::Pod);
    assert_eq!(
        show(&c),
        vec!["e1 delete default/pod/b uid-b", "e1 upsert default/pod/c@7"]
    );
}

#[test]
fn a_reference_added_during_the_first_list_is_fetched_not_tombstoned() {
    let mut s = State::default();
    s.begin_list(Kind::Node);
    s.list_item(Kind::Node, node("e1", "1"));
    s.end_list(Kind::Node);
    s.begin_list(Kind::Pod);
    s.list_item(Kind::Pod, pod("a", "e1", "5", &["default/configmap/old"]));
    s.end_list(Kind::Pod);
    s.begin_list(Kind::ConfigMap);
    // The list streams past "new" before a pod starts referencing it.
    s.list_item(Kind::ConfigMap, cm("new", "2"));
    s.apply(pod("b", "e1", "6", &["default/configmap/new"]));
    assert!(
        s.take_fetches().is_empty(),
        "no GET before the first list ends"
    );
    let c = s.end_list(Kind::ConfigMap);
    assert_eq!(show(&c), vec!["e1 tombstone default/configmap/old"]);
    let key = ResourceKey::parse("default/configmap/new").unwrap();
    let fetches = s.take_fetches();
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0].0, key);
}

#[test]
fn read_permissions_follow_membership() {
    let mut s = synced();
    s.apply(node("e2", "1"));
    s.apply(pod("a", "e1", "5", &["default/secret/key"]));
    let k = |s: &str| ResourceKey::parse(s).unwrap();
    assert!(s.may_read("e1", &k("null/node/e1")));
    assert!(!s.may_read("e1", &k("null/node/e2")));
    assert!(s.may_read("e1", &k("default/pod/a")));
    assert!(!s.may_read("e2", &k("default/pod/a")));
    assert!(s.may_read("e1", &k("default/secret/key")));
    assert!(!s.may_read("e2", &k("default/secret/key")));
    assert!(!s.may_read("e1", &k("default/secret/other")));
    assert!(s.may_read("e1", &k("kube-node-lease/lease/e1")));
    assert!(!s.may_read("e1", &k("kube-node-lease/lease/e2")));
    assert_eq!(s.holder(&k("default/pod/a")), Some("e1"));
    // ServiceAccounts: the ones its pods run as ("default" when the spec names none).
    assert!(s.may_read("e1", &k("default/serviceaccount/default")));
    assert!(!s.may_read("e2", &k("default/serviceaccount/default")));
    assert!(!s.may_read("e1", &k("other/serviceaccount/default")));
    let mut robot = obj("default/pod/r", "uid-r", "7");
    robot.json = Bytes::from_static(br#"{"spec":{"serviceAccountName":"robot"}}"#);
    s.apply(Item::Member {
        obj: robot,
        node: Some("e2".to_owned()),
        refs: BTreeSet::new(),
    });
    assert!(s.may_read("e2", &k("default/serviceaccount/robot")));
    assert!(!s.may_read("e2", &k("default/serviceaccount/default")));
    assert!(!s.may_read("e1", &k("default/serviceaccount/robot")));
}

fn device(name: &str, node: &str, rv: &str, model: &str) -> Item {
    Item::Member {
        obj: obj(
            &format!("default/device/{name}"),
            &format!("uid-{name}"),
            rv,
        ),
        node: Some(node.to_owned()),
        refs: [ResourceKey::parse(&format!("default/devicemodel/{model}")).unwrap()]
            .into_iter()
            .collect(),
    }
}

fn model(name: &str, rv: &str) -> Item {
    Item::Ref(obj(
        &format!("default/devicemodel/{name}"),
        &format!("uid-{name}"),
        rv,
    ))
}

#[test]
fn a_device_waits_for_its_model_and_follows_it() {
    let mut s = synced();
    // `kubectl apply` of the Device before its DeviceModel: nothing goes to the edge yet.
    let c = s.apply(device("plc", "e1", "5", "plc-model"));
    assert!(show(&c).is_empty(), "device sent before its model: {c:?}");
    let k = |s: &str| ResourceKey::parse(s).unwrap();
    // Left out of `desired`, yet kept at the edge by a diff (pending).
    assert!(!show_desired(&s, "e1").iter().any(|d| d.contains("device")));
    assert_eq!(
        s.pending_refs("e1"),
        vec![k("default/devicemodel/plc-model"), k("default/device/plc")]
    );
    // A newer version while waiting is not sent either.
    assert!(show(&s.apply(device("plc", "e1", "6", "plc-model"))).is_empty());
    // The model arrives: model first, then the device's latest version.
    assert_eq!(
        show(&s.apply(model("plc-model", "7"))),
        vec![
            "e1 upsert default/devicemodel/plc-model@7",
            "e1 upsert default/device/plc@6"
        ]
    );
    assert!(s.pending_refs("e1").is_empty());
    assert_eq!(
        show_desired(&s, "e1")[1..],
        [
            "e1 upsert default/devicemodel/plc-model@7",
            "e1 upsert default/device/plc@6"
        ]
    );
    // From now on device changes go at once.
    assert_eq!(
        show(&s.apply(device("plc", "e1", "8", "plc-model"))),
        vec!["e1 upsert default/device/plc@8"]
    );
    // A device whose model is known to be absent goes after the tombstone.
    let c = s.apply(device("ghost", "e1", "9", "nope"));
    assert!(show(&c).is_empty());
    let (key, touched) = s.take_fetches().pop().unwrap();
    assert_eq!(key, k("default/devicemodel/nope"));
    assert_eq!(
        show(&s.fetched(&key, touched, None)),
        vec![
            "e1 tombstone default/devicemodel/nope",
            "e1 upsert default/device/ghost@9"
        ]
    );
}

#[test]
fn a_device_listed_before_its_models_list_is_sent_after_it() {
    let mut s = State::default();
    s.begin_list(Kind::Node);
    s.list_item(Kind::Node, node("e1", "1"));
    s.end_list(Kind::Node);
    s.begin_list(Kind::Device);
    s.list_item(Kind::Device, device("a", "e1", "5", "m"));
    s.list_item(Kind::Device, device("b", "e1", "6", "gone"));
    assert!(show(&s.end_list(Kind::Device)).is_empty());
    s.begin_list(Kind::DeviceModel);
    s.list_item(Kind::DeviceModel, model("m", "3"));
    let c = s.end_list(Kind::DeviceModel);
    assert_eq!(
        show(&c),
        vec![
            "e1 tombstone default/devicemodel/gone",
            "e1 upsert default/device/b@6",
            "e1 upsert default/devicemodel/m@3",
            "e1 upsert default/device/a@5"
        ]
    );
}
