//! Property tests of the decoder: it never panics on any input, refuses
//! oversized input, and every valid frame round-trips through encode/decode.
//! Each property runs 10,000 cases (a few seconds in a debug build) in CI;
//! `KEDGE_DECODER_CASES=N` runs N instead — the million-frame run is
//! `KEDGE_DECODER_CASES=1000000 cargo test --release -p proto --test decoder_prop`
//! (docs/benchmarks.md, "The frame decoder, a million frames").
#![allow(clippy::unwrap_used)]

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proto::frame::{JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH};
use proto::pb::{
    CertRenewResponse, ErrorInfo, Hello, HelloAck, Inventory, InventoryEntry, NodeAddress,
    NodeInfo, Response,
};
use proto::{Frame, Limits, Op, ResourceKey, decode, encode, validate};

/// Cases per property: `KEDGE_DECODER_CASES`, else 10,000.
fn cases() -> u32 {
    std::env::var("KEDGE_DECODER_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn key() -> impl Strategy<Value = ResourceKey> {
    let ns = prop_oneof![
        Just(None),
        "[a-z]([a-z0-9-]{0,10}[a-z0-9])?"
            .prop_filter("null is reserved", |s| s != "null")
            .prop_map(Some),
    ];
    (ns, "[a-z][a-z0-9]{0,12}", "[a-z0-9][a-z0-9.:_-]{0,30}")
        .prop_map(|(ns, kind, name)| ResourceKey::new(ns.as_deref(), kind, name).unwrap())
}

fn id() -> impl Strategy<Value = u64> {
    prop_oneof![1..100u64, 1..=u64::MAX]
}

fn json() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 1..200)
}

fn text() -> impl Strategy<Value = String> {
    ".{0,20}"
}

fn node_info() -> impl Strategy<Value = NodeInfo> {
    (
        text(),
        text(),
        btree_map(text(), text(), 0..4),
        vec((text(), text()), 0..3),
        btree_map(text(), text(), 0..4),
    )
        .prop_map(|(os, arch, capacity, addrs, labels)| NodeInfo {
            os,
            arch,
            capacity,
            addresses: addrs
                .into_iter()
                .map(|(r#type, address)| NodeAddress { r#type, address })
                .collect(),
            labels,
            ..NodeInfo::default()
        })
}

fn control_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (
            any::<u32>(),
            any::<u32>(),
            text(),
            proptest::option::of(node_info())
        )
            .prop_map(
                |(min_version, max_version, node_name, info)| Frame::hello(&Hello {
                    min_version,
                    max_version,
                    node_name,
                    info,
                    max_frame_bytes: 0,
                })
            ),
        (any::<u32>(), text(), any::<u32>()).prop_map(|(version, session_id, ping)| {
            Frame::hello_ack(&HelloAck {
                version,
                session_id,
                ping_interval_secs: ping,
                ..HelloAck::default()
            })
        }),
        (
            vec((text(), text(), text()), 0..8),
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(|(entries, chunk, complete)| Frame::inventory(&Inventory {
                entries: entries
                    .into_iter()
                    .map(|(key, uid, resource_version)| InventoryEntry {
                        key,
                        uid,
                        resource_version,
                    })
                    .collect(),
                chunk,
                complete,
            })),
        any::<u64>().prop_map(Frame::ack),
        any::<u64>().prop_map(Frame::ping),
        any::<u64>().prop_map(Frame::pong),
        (any::<u32>(), text(), text(), any::<u64>()).prop_map(|(code, reason, message, irt)| {
            Frame::error(&ErrorInfo {
                code,
                reason,
                message,
                in_reply_to: irt,
            })
        }),
        (id(), any::<u32>(), json(), text()).prop_map(|(req, code, body, rv)| {
            Frame::response(
                req,
                &Response {
                    code,
                    body,
                    ..Response::default()
                },
            )
            .with_resource_version(&rv)
        }),
        (id(), text()).prop_map(|(id, csr)| Frame::cert_renew_request(id, &csr)),
        (id(), text(), text()).prop_map(|(req, cert_chain_pem, ca_pem)| {
            Frame::cert_renew_response(
                req,
                &CertRenewResponse {
                    cert_chain_pem,
                    ca_pem,
                },
            )
        }),
    ]
}

fn request_op() -> impl Strategy<Value = Op> {
    prop::sample::select(vec![
        Op::Get,
        Op::Delete,
        Op::Create,
        Op::Update,
        Op::Patch,
        Op::UpdateStatus,
        Op::PatchStatus,
    ])
}

fn data_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (id(), key(), text(), text(), json())
            .prop_map(|(id, k, uid, rv, j)| Frame::upsert(id, &k, &uid, &rv, j)),
        (id(), key(), "[a-f0-9-]{1,36}", text())
            .prop_map(|(id, k, uid, rv)| Frame::delete(id, &k, &uid, &rv)),
        (id(), key()).prop_map(|(id, k)| Frame::tombstone(id, &k)),
        id().prop_map(Frame::synced),
        (id(), request_op(), key(), json(), 0..4usize).prop_map(|(id, op, k, body, ct)| {
            let body = if op.needs_body() { body } else { Vec::new() };
            let f = Frame::request(id, op, &k, body);
            match (op.is_patch(), ct) {
                (true, 1) => f.with_content_type(MERGE_PATCH),
                (true, 2) => f.with_content_type(STRATEGIC_MERGE_PATCH),
                (true, 3) => f.with_content_type(JSON_PATCH),
                _ => f,
            }
        }),
        (id(), key()).prop_map(|(id, k)| Frame::list(id, &k.collection())),
        (
            id(),
            prop::sample::select(vec![Op::Create, Op::Update, Op::Patch]),
            key(),
            json()
        )
            .prop_map(|(id, op, k, j)| Frame::event(id, op, &k, j)),
    ]
}

fn valid_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![control_frame(), data_frame()]
}

/// A byte-level edit applied to an encoded frame.
#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Truncate { at: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..8usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match m {
        Mutation::Flip { at, mask } if n > 0 => bytes[at % n] ^= mask,
        Mutation::Set { at, byte } if n > 0 => bytes[at % n] = *byte,
        Mutation::Truncate { at } => bytes.truncate(at % (n + 1)),
        Mutation::Insert { at, bytes: ins } => {
            let at = at % (n + 1);
            bytes.splice(at..at, ins.iter().copied());
        }
        Mutation::Remove { at, len } if n > 0 => {
            let at = at % n;
            bytes.drain(at..(at + len).min(n));
        }
        _ => {}
    }
}

/// Whatever `decode` accepts must be valid and survive a second round trip.
fn check_accepted(bytes: &[u8], limits: Limits) {
    if let Ok(frame) = decode(bytes, limits) {
        assert!(validate(&frame).is_ok());
        let again = decode(&encode(&frame), Limits::default()).unwrap();
        assert_eq!(again, frame);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        check_accepted(&bytes, Limits::default());
    }

    #[test]
    fn valid_frames_round_trip(frame in valid_frame()) {
        prop_assert!(validate(&frame).is_ok(), "{:?}", validate(&frame));
        let decoded = decode(&encode(&frame), Limits::default());
        prop_assert!(decoded.is_ok(), "{:?}", decoded);
        prop_assert_eq!(decoded.unwrap(), frame);
    }

    #[test]
    fn mutated_frames_never_panic(frame in valid_frame(), edits in vec(mutation(), 1..4)) {
        let mut bytes = encode(&frame);
        for m in &edits {
            apply(&mut bytes, m);
        }
        check_accepted(&bytes, Limits::default());
    }

    #[test]
    fn size_limit_is_enforced(frame in valid_frame(), max in 0..300usize) {
        let bytes = encode(&frame);
        match decode(&bytes, Limits::with_max_frame(max)) {
            Err(e) if bytes.len() > max => prop_assert_eq!(e.reason(), "oversized"),
            Err(e) => prop_assert!(false, "refused a valid frame within the limit: {e}"),
            Ok(_) => prop_assert!(bytes.len() <= max),
        }
    }
}
