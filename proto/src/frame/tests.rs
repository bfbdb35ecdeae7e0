#![allow(clippy::unwrap_used)]

use super::*;
use crate::codec::{Limits, decode, encode, validate};

fn key(s: &str) -> ResourceKey {
    ResourceKey::parse(s).unwrap()
}

/// Every constructor yields a frame that validates and round-trips.
fn all_frames() -> Vec<Frame> {
    let pod = key("default/pod/nginx");
    vec![
        Frame::hello(&Hello {
            min_version: 1,
            max_version: 1,
            node_name: "edge-1".into(),
            info: Some(crate::pb::NodeInfo {
                os: "linux".into(),
                capacity: [("cpu".to_owned(), "4".to_owned())].into(),
                ..Default::default()
            }),
            max_frame_bytes: 0,
        }),
        Frame::hello_ack(&HelloAck {
            version: 1,
            session_id: "s-1".into(),
            ..Default::default()
        }),
        Frame::inventory(&Inventory::default()),
        Frame::ack(7),
        Frame::ping(1),
        Frame::pong(1),
        Frame::upsert(1, &pod, "u-1", "42", br#"{"kind":"Pod"}"#.to_vec()),
        Frame::object(2, &pod, "43", b"{}".to_vec()),
        Frame::delete(3, &pod, "u-1", "44"),
        Frame::tombstone(4, &key("default/configmap/cfg")),
        Frame::synced(5),
        Frame::request(1, Op::Get, &pod, Vec::new()),
        Frame::request(2, Op::Delete, &pod, br#"{"gracePeriodSeconds":0}"#.to_vec()),
        Frame::request(3, Op::PatchStatus, &pod, b"{}".to_vec())
            .with_content_type(STRATEGIC_MERGE_PATCH),
        Frame::list(4, &pod.collection()),
        Frame::response(
            1,
            &Response {
                code: 200,
                body: b"{}".to_vec(),
                ..Default::default()
            },
        )
        .with_resource_version("9"),
        Frame::event(5, Op::Create, &key("default/event/nginx.1"), b"{}".to_vec()),
        Frame::error(&ErrorInfo {
            code: 403,
            reason: "forbidden".into(),
            message: "no".into(),
            in_reply_to: 3,
        }),
        Frame::error(&ErrorInfo::default()),
        Frame::cert_renew_request(6, "-----BEGIN CERTIFICATE REQUEST-----"),
        Frame::cert_renew_response(6, &CertRenewResponse::default()),
    ]
}

#[test]
fn constructors_build_valid_frames() {
    for frame in all_frames() {
        let kind = validate(&frame).unwrap_or_else(|e| panic!("{frame:?}: {e}"));
        assert_eq!(kind.is_sequenced(), frame.id != 0);
        let decoded = decode(&encode(&frame), Limits::default()).unwrap();
        assert_eq!(decoded, frame);
    }
}

#[test]
fn control_accessors_read_payloads() {
    let ack = Frame::ack(9);
    assert_eq!(ack.control::<Ack>().unwrap().up_to, 9);
    assert_eq!(Frame::pong(5).control::<Ping>().unwrap().nonce, 5);
    assert_eq!(Frame::ping(5).control::<Ping>().unwrap().nonce, 5);
    let err = Frame::error(&ErrorInfo {
        in_reply_to: 4,
        ..Default::default()
    });
    assert_eq!(err.ack_of, Some(4));
    assert_eq!(err.control::<ErrorInfo>().unwrap().in_reply_to, 4);
    assert_eq!(Frame::error(&ErrorInfo::default()).ack_of, None);
    let hello = Frame::hello(&Hello {
        node_name: "n".into(),
        ..Default::default()
    });
    assert_eq!(hello.control::<Hello>().unwrap().node_name, "n");
}

#[test]
fn control_accessor_checks_kind_and_payload() {
    let err = Frame::ack(1).control::<Hello>().unwrap_err();
    assert_eq!(err.reason(), "wrong_kind");
    assert!(err.to_string().contains("Hello"), "{err}");
    let mut broken = Frame::ack(1);
    broken.payload = vec![0xff, 0xff, 0xff];
    assert_eq!(
        broken.control::<Ack>().unwrap_err().reason(),
        "invalid_payload"
    );
    let mut unknown = Frame::ack(1);
    unknown.kind = 99;
    assert_eq!(
        unknown.control::<Ack>().unwrap_err().reason(),
        "unknown_kind"
    );
}

#[test]
fn route_accessors() {
    let f = Frame::delete(1, &key("null/node/edge-1"), "u", "1");
    assert_eq!(f.op().unwrap(), Op::Delete);
    assert_eq!(f.key().unwrap(), key("null/node/edge-1"));
    assert_eq!(Frame::ack(1).op().unwrap_err().reason(), "missing_route");
    assert_eq!(Frame::ack(1).key().unwrap_err().reason(), "missing_route");
    let list = Frame::list(1, &key("default/pod/x").collection());
    assert_eq!(list.op().unwrap(), Op::List);
    assert_eq!(list.key().unwrap_err().reason(), "invalid_resource");
}

#[test]
fn content_type_needs_a_route() {
    let f = Frame::ack(1).with_content_type(JSON_PATCH);
    assert!(f.route.is_none());
}

#[test]
fn kind_labels_and_flags() {
    assert_eq!(Kind::HelloAck.label(), "hello_ack");
    assert_eq!(Kind::CertRenewResponse.label(), "cert_renew_response");
    assert!(Kind::Object.is_sequenced() && Kind::Object.has_route());
    assert!(Kind::CertRenewRequest.is_sequenced() && !Kind::CertRenewRequest.has_route());
    assert!(!Kind::Ack.is_sequenced() && !Kind::Response.is_sequenced());
    assert!(Kind::Synced.is_sequenced() && !Kind::Synced.has_route());
}

fn entry(i: usize) -> InventoryEntry {
    InventoryEntry {
        key: format!("default/configmap/cm-{i}"),
        uid: format!("00000000-0000-0000-0000-{i:012}"),
        resource_version: i.to_string(),
    }
}

#[test]
fn empty_inventory_is_one_complete_chunk() {
    let frames = inventory_frames(Vec::new(), 1024);
    assert_eq!(frames.len(), 1);
    let inv = frames[0].control::<Inventory>().unwrap();
    assert!(inv.complete);
    assert_eq!(inv.chunk, 0);
    assert!(inv.entries.is_empty());
}

#[test]
fn inventory_is_split_under_the_frame_limit() {
    let max = 1024;
    let entries: Vec<_> = (0..200).map(entry).collect();
    let frames = inventory_frames(entries.clone(), max);
    assert!(frames.len() > 1);
    let mut seen = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let bytes = crate::codec::encode_checked(frame, Limits::with_max_frame(max)).unwrap();
        assert!(bytes.len() <= max);
        let inv = decode(&bytes, Limits::with_max_frame(max))
            .unwrap()
            .control::<Inventory>()
            .unwrap();
        assert_eq!(inv.chunk as usize, i);
        assert_eq!(inv.complete, i == frames.len() - 1);
        seen.extend(inv.entries);
    }
    assert_eq!(seen, entries, "every entry once, in order");
}

#[test]
fn oversized_single_entry_gets_its_own_chunk() {
    let frames = inventory_frames(vec![entry(1), entry(2)], 10);
    assert_eq!(frames.len(), 2);
}
