#![allow(clippy::unwrap_used)]

use super::*;

fn key(ns: &str, name: &str) -> DeviceKey {
    DeviceKey::new(ns, name)
}

#[test]
fn every_device_topic_round_trips_under_both_prefixes() {
    for prefix in [EMBEDDED_PREFIX, KUBEEDGE_PREFIX, "site-1/kedge"] {
        for kind in DEVICE_TOPICS {
            let t = Topic::device(key("factory", "pump-1"), kind);
            let s = t.build(prefix).unwrap();
            assert_eq!(
                s,
                format!("{prefix}/events/device/factory/pump-1/{}", kind.suffix())
            );
            assert_eq!(parse(prefix, &s).unwrap(), t, "{s}");
        }
        for kind in NODE_TOPICS {
            let t = Topic::node("edge-1", kind);
            let s = t.build(prefix).unwrap();
            assert_eq!(s, format!("{prefix}/events/node/edge-1/{}", kind.suffix()));
            assert_eq!(parse(prefix, &s).unwrap(), t);
        }
    }
}

#[test]
fn exact_strings() {
    let t = parse("$hw", "$hw/events/device/default/thermo/twin/update/delta").unwrap();
    assert_eq!(
        t,
        Topic::Device {
            device: key("default", "thermo"),
            form: TopicForm::Namespaced,
            kind: DeviceTopic::TwinUpdateDelta
        }
    );
    let t = parse("kedge", "kedge/events/node/n1/membership/get/result").unwrap();
    assert_eq!(t, Topic::node("n1", NodeTopic::MembershipGetResult));
}

#[test]
fn legacy_form_defaults_namespace_and_replies_in_legacy_form() {
    for kind in DEVICE_TOPICS {
        let s = format!("$hw/events/device/sensor-7/{}", kind.suffix());
        let t = parse("$hw", &s).unwrap();
        assert_eq!(
            t,
            Topic::Device {
                device: key("default", "sensor-7"),
                form: TopicForm::Legacy,
                kind
            },
            "{s}"
        );
        assert_eq!(t.build("$hw").unwrap(), s);
    }
    let req = parse("$hw", "$hw/events/device/sensor-7/twin/update").unwrap();
    assert_eq!(
        req.reply().unwrap().build("$hw").unwrap(),
        "$hw/events/device/sensor-7/twin/update/result"
    );
}

#[test]
fn forms_do_not_collide_on_awkward_names() {
    // A device in namespace "a" named "twin".
    let t = parse("kedge", "kedge/events/device/a/twin/twin/update").unwrap();
    assert_eq!(t, Topic::device(key("a", "twin"), DeviceTopic::TwinUpdate));
    // A legacy device named "a": the suffix wins over reading "twin" as a name.
    let t = parse("kedge", "kedge/events/device/a/twin/update/result").unwrap();
    assert!(matches!(
        t,
        Topic::Device {
            form: TopicForm::Legacy,
            kind: DeviceTopic::TwinUpdateResult,
            ..
        }
    ));
    // A namespaced device named "state".
    let t = parse("kedge", "kedge/events/device/ns/state/state/update/result").unwrap();
    assert_eq!(
        t,
        Topic::device(key("ns", "state"), DeviceTopic::StateUpdateResult)
    );
}

#[test]
fn rejects_foreign_unknown_and_malformed() {
    use TopicError::*;
    let p = "kedge";
    assert!(matches!(
        parse(p, "$hw/events/device/a/b/twin/update"),
        Err(ForeignPrefix(_))
    ));
    assert!(matches!(
        parse(p, "kedgex/events/device/a/b/twin/update"),
        Err(ForeignPrefix(_))
    ));
    assert!(matches!(parse(p, "kedge"), Err(ForeignPrefix(_))));
    assert!(matches!(parse(p, ""), Err(ForeignPrefix(_))));
    assert!(matches!(
        parse(p, "kedge/events/device/a/b/twin/delete"),
        Err(Unknown(_))
    ));
    assert!(matches!(
        parse(p, "kedge/events/device/a/b/c/twin/update"),
        Err(Unknown(_))
    ));
    assert!(matches!(
        parse(p, "kedge/events/device/twin/update"),
        Err(Unknown(_))
    ));
    assert!(matches!(parse(p, "kedge/events/device/"), Err(Unknown(_))));
    assert!(matches!(parse(p, "kedge/events/device"), Err(Unknown(_))));
    assert!(matches!(parse(p, "kedge/events/node/n1"), Err(Unknown(_))));
    assert!(matches!(
        parse(p, "kedge/events/node/n1/membership"),
        Err(Unknown(_))
    ));
    assert!(matches!(parse(p, "kedge/events/other/x"), Err(Unknown(_))));
    assert!(matches!(
        parse(p, "kedge/events/device//b/twin/update"),
        Err(InvalidSegment(_))
    ));
    assert!(matches!(
        parse(p, "kedge/events/device/+/b/twin/update"),
        Err(InvalidSegment(_))
    ));
    assert!(matches!(
        parse(p, "kedge/events/device//twin/update"),
        Err(InvalidSegment(_))
    ));
    assert!(matches!(
        parse(p, "kedge/events/node//membership/get"),
        Err(InvalidSegment(_))
    ));
    assert!(matches!(
        parse(p, "kedge/events/node/#/membership/get"),
        Err(InvalidSegment(_))
    ));
    for bad in ["", "a/+", "#", "a//b", "/a", "a/"] {
        assert!(matches!(parse(bad, "x"), Err(InvalidPrefix(_))), "{bad:?}");
    }
}

#[test]
fn build_refuses_injection() {
    let t = Topic::device(key("ns", "a/b"), DeviceTopic::TwinUpdate);
    assert!(matches!(
        t.build("kedge"),
        Err(TopicError::InvalidSegment(_))
    ));
    let t = Topic::device(key("+", "a"), DeviceTopic::TwinUpdate);
    assert!(t.build("kedge").is_err());
    assert!(
        Topic::node("#", NodeTopic::MembershipGet)
            .build("kedge")
            .is_err()
    );
    assert!(
        Topic::node("n", NodeTopic::MembershipGet)
            .build("")
            .is_err()
    );
    assert_eq!(
        Topic::node("#", NodeTopic::MembershipGet)
            .display("kedge")
            .to_string(),
        "<invalid topic segment \"#\">"
    );
}

#[test]
fn replies_and_kinds() {
    assert_eq!(
        DeviceTopic::TwinUpdate.reply(),
        Some(DeviceTopic::TwinUpdateResult)
    );
    assert_eq!(
        DeviceTopic::TwinGet.reply(),
        Some(DeviceTopic::TwinGetResult)
    );
    assert_eq!(
        DeviceTopic::StateUpdate.reply(),
        Some(DeviceTopic::StateUpdateResult)
    );
    assert_eq!(DeviceTopic::TwinUpdateDelta.reply(), None);
    assert_eq!(
        NodeTopic::MembershipGet.reply(),
        Some(NodeTopic::MembershipGetResult)
    );
    assert_eq!(NodeTopic::MembershipUpdated.reply(), None);
    assert!(
        Topic::device(key("a", "b"), DeviceTopic::TwinUpdateDelta)
            .reply()
            .is_none()
    );
    let t = Topic::device(key("a", "b"), DeviceTopic::TwinUpdate);
    assert_eq!(
        t.with_device_kind(DeviceTopic::TwinUpdateDocument),
        Some(Topic::device(
            key("a", "b"),
            DeviceTopic::TwinUpdateDocument
        ))
    );
    assert_eq!(
        Topic::node("n", NodeTopic::MembershipGet).with_device_kind(DeviceTopic::TwinGet),
        None
    );
}

#[test]
fn edge_subscriptions_match_requests_only() {
    for prefix in [EMBEDDED_PREFIX, KUBEEDGE_PREFIX] {
        let filters = edge_subscriptions(prefix, "edge-1").unwrap();
        let hears = |topic: &str| filters.iter().any(|f| filter_matches(f, topic));
        for form in [TopicForm::Namespaced, TopicForm::Legacy] {
            for kind in DEVICE_TOPICS {
                let t = Topic::Device {
                    device: key("default", "d"),
                    form,
                    kind,
                }
                .build(prefix)
                .unwrap();
                assert_eq!(hears(&t), kind.is_request(), "{t}");
            }
        }
        for kind in NODE_TOPICS {
            let t = Topic::node("edge-1", kind).build(prefix).unwrap();
            assert_eq!(hears(&t), kind == NodeTopic::MembershipGet, "{t}");
        }
        assert!(!hears(
            &Topic::node("edge-2", NodeTopic::MembershipGet)
                .build(prefix)
                .unwrap()
        ));
    }
    assert!(edge_subscriptions("kedge", "a/b").is_err());
    assert!(edge_subscriptions("", "n").is_err());
}

#[test]
fn mapper_subscriptions_are_concrete() {
    let f = mapper_subscriptions("kedge", &key("ns", "d")).unwrap();
    assert!(f.contains(&"kedge/events/device/ns/d/twin/update/delta".to_owned()));
    assert!(f.iter().all(|f| !f.contains(['+', '#'])));
}

#[test]
fn filter_matching() {
    assert!(filter_matches("a/+/c", "a/b/c"));
    assert!(!filter_matches("a/+/c", "a/b/d"));
    assert!(filter_matches("a/#", "a"));
    assert!(filter_matches("a/#", "a/b/c"));
    assert!(!filter_matches("a/+", "a"));
    assert!(!filter_matches("a/b", "a/b/c"));
}
