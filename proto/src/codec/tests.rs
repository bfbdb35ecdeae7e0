#![allow(clippy::unwrap_used)]

use super::*;
use crate::frame::{JSON_PATCH, Op};
use crate::key::ResourceKey;
use crate::pb::Route;

fn pod() -> ResourceKey {
    ResourceKey::parse("default/pod/nginx").unwrap()
}

fn reason(frame: &Frame) -> &'static str {
    let err = decode(&encode(frame), Limits::default()).unwrap_err();
    // the same rule refuses it on the sending side
    assert_eq!(
        encode_checked(frame, Limits::default())
            .unwrap_err()
            .reason(),
        err.reason()
    );
    err.reason()
}

#[test]
fn round_trip() {
    let f = Frame::upsert(1, &pod(), "u", "5", br#"{"kind":"Pod"}"#.to_vec());
    let bytes = encode(&f);
    assert_eq!(decode(&bytes, Limits::default()).unwrap(), f);
    assert_eq!(encode_checked(&f, Limits::default()).unwrap(), bytes);
}

#[test]
fn oversized_is_refused_before_parsing() {
    let f = Frame::upsert(1, &pod(), "u", "5", vec![b' '; 2048]);
    let bytes = encode(&f);
    let limits = Limits::with_max_frame(1024);
    let err = decode(&bytes, limits).unwrap_err();
    assert_eq!(err.reason(), "oversized");
    assert_eq!(err.code(), 413);
    assert!(matches!(err, DecodeError::Oversized { max: 1024, .. }));
    assert_eq!(
        encode_checked(&f, limits).unwrap_err().reason(),
        "oversized"
    );
    // exactly at the limit is fine
    assert!(decode(&bytes, Limits::with_max_frame(bytes.len())).is_ok());
    // garbage larger than the limit is "oversized", not "malformed"
    assert_eq!(
        decode(&[0xff; 100], Limits::with_max_frame(10))
            .unwrap_err()
            .reason(),
        "oversized"
    );
    assert_eq!(Limits::default().max_frame, 4 * 1024 * 1024);
}

#[test]
fn malformed_bytes() {
    for bytes in [&[0xffu8, 0xff, 0xff][..], &[0x0a], &[0x32, 0x05, 0x01]] {
        let err = decode(bytes, Limits::default()).unwrap_err();
        assert_eq!(err.reason(), "malformed", "{bytes:?}");
    }
}

#[test]
fn empty_bytes_are_a_frame_without_kind() {
    assert_eq!(
        decode(&[], Limits::default()).unwrap_err().reason(),
        "missing_kind"
    );
}

#[test]
fn unknown_kind() {
    let mut f = Frame::ack(1);
    f.kind = 1000;
    assert_eq!(reason(&f), "unknown_kind");
    f.kind = -1;
    assert_eq!(reason(&f), "unknown_kind");
}

#[test]
fn sequencing_rules() {
    assert_eq!(
        reason(&Frame::upsert(0, &pod(), "u", "1", b"{}".to_vec())),
        "invalid_id"
    );
    assert_eq!(reason(&Frame::synced(0)), "invalid_id");
    let mut ack = Frame::ack(1);
    ack.id = 3;
    assert_eq!(reason(&ack), "invalid_id");
}

#[test]
fn ack_of_rules() {
    let mut resp = Frame::response(1, &Default::default());
    resp.ack_of = None;
    assert_eq!(reason(&resp), "invalid_ack_of");
    resp.ack_of = Some(0);
    assert_eq!(reason(&resp), "invalid_ack_of");
    let mut err = Frame::error(&Default::default());
    err.ack_of = Some(0);
    assert_eq!(reason(&err), "invalid_ack_of");
    let mut ping = Frame::ping(1);
    ping.ack_of = Some(1);
    assert_eq!(reason(&ping), "invalid_ack_of");
}

#[test]
fn route_rules() {
    let mut f = Frame::upsert(1, &pod(), "u", "1", b"{}".to_vec());
    f.route = None;
    assert_eq!(reason(&f), "missing_route");

    let mut ping = Frame::ping(1);
    ping.route = Some(Route::default());
    assert_eq!(reason(&ping), "unexpected_route");

    let mut bad_op = Frame::upsert(1, &pod(), "u", "1", b"{}".to_vec());
    bad_op.route.as_mut().unwrap().op = "explode".into();
    assert_eq!(reason(&bad_op), "unknown_op");

    let get_object = Frame {
        id: 1,
        kind: Kind::Object as i32,
        route: Some(Route {
            op: "get".into(),
            resource: pod().to_string(),
            content_type: String::new(),
        }),
        ..Frame::default()
    };
    assert_eq!(reason(&get_object), "invalid_op");
    assert_eq!(
        reason(&Frame::event(1, Op::Delete, &pod(), Vec::new())),
        "invalid_op"
    );

    let mut tomb = Frame::tombstone(1, &pod());
    tomb.route.as_mut().unwrap().op = "delete".into();
    assert_eq!(reason(&tomb), "invalid_op");

    let mut bad_key = Frame::tombstone(1, &pod());
    bad_key.route.as_mut().unwrap().resource = "default/pod".into();
    assert_eq!(reason(&bad_key), "invalid_resource");

    let mut bad_list = Frame::list(1, &pod().collection());
    bad_list.route.as_mut().unwrap().resource = pod().to_string();
    assert_eq!(reason(&bad_list), "invalid_resource");
}

#[test]
fn content_type_rules() {
    let patch = Frame::request(1, Op::Patch, &pod(), b"[]".to_vec()).with_content_type(JSON_PATCH);
    assert!(validate(&patch).is_ok());
    let bad = patch.clone().with_content_type("text/plain");
    assert_eq!(reason(&bad), "invalid_content_type");
    let on_update =
        Frame::request(1, Op::Update, &pod(), b"{}".to_vec()).with_content_type(JSON_PATCH);
    assert_eq!(reason(&on_update), "invalid_content_type");
}

#[test]
fn payload_rules() {
    assert_eq!(
        reason(&Frame::upsert(1, &pod(), "u", "1", Vec::new())),
        "missing_payload"
    );
    assert_eq!(
        reason(&Frame::request(1, Op::Create, &pod(), Vec::new())),
        "missing_payload"
    );
    assert_eq!(
        reason(&Frame::request(1, Op::Get, &pod(), b"{}".to_vec())),
        "unexpected_payload"
    );
    let mut tomb = Frame::tombstone(1, &pod());
    tomb.payload = b"{}".to_vec();
    assert_eq!(reason(&tomb), "unexpected_payload");
    let mut synced = Frame::synced(1);
    synced.payload = vec![1];
    assert_eq!(reason(&synced), "unexpected_payload");
    assert_eq!(reason(&Frame::delete(1, &pod(), "", "1")), "missing_uid");
}

#[test]
fn control_payload_must_parse() {
    let mut hello = Frame::hello(&Default::default());
    hello.payload = vec![0x0a, 0x10, 0x01];
    assert_eq!(reason(&hello), "invalid_payload");
}

#[test]
fn error_info_for_refusals() {
    let err = decode(&[0xff], Limits::default()).unwrap_err();
    let info = err.to_error_info(0);
    assert_eq!(info.code, 400);
    assert_eq!(info.reason, "malformed");
    assert!(!info.message.is_empty());
    let reply = Frame::error(&info);
    assert!(validate(&reply).is_ok());
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let mut bytes = encode(&Frame::ack(3));
    // field 99, varint 1
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    let f = decode(&bytes, Limits::default()).unwrap();
    assert_eq!(f.control::<crate::pb::Ack>().unwrap().up_to, 3);
}
