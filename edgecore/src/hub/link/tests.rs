#![allow(clippy::unwrap_used, clippy::panic)]

use proto::{Ack, HelloAck, Inventory, ResourceKey};

use super::*;

fn state() -> LinkState {
    let backoff = Backoff::seeded(Duration::from_secs(1), Duration::from_secs(30), 3);
    LinkState::new(
        LinkConfig::default(),
        Hello {
            node_name: "edge-1".into(),
            ..Hello::default()
        },
        backoff,
    )
}

fn key() -> ResourceKey {
    ResourceKey::parse("default/pod/a").unwrap()
}

fn obj(id: u64) -> Frame {
    Frame::upsert(id, &key(), "u1", &id.to_string(), b"{}".to_vec())
}

fn hello_ack(ping: u32, idle: u32) -> Frame {
    Frame::hello_ack(&HelloAck {
        version: 1,
        session_id: "s-1".into(),
        ping_interval_secs: ping,
        idle_timeout_secs: idle,
        max_frame_bytes: 0,
    })
}

/// A state that is Syncing (dialed + HELLO_ACK), and the time.
fn syncing() -> (LinkState, Instant) {
    let now = Instant::now();
    let mut s = state();
    s.handle(Event::Start, now);
    s.handle(Event::Dialed, now);
    s.handle(Event::Frame(hello_ack(0, 0)), now);
    assert_eq!(s.link(), Link::Syncing);
    (s, now)
}

fn sent(actions: &[Action]) -> Vec<Kind> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(f) => Some(Kind::try_from(f.kind).unwrap()),
            _ => None,
        })
        .collect()
}

fn acks(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(f) if f.kind == Kind::Ack as i32 => {
                Some(f.control::<Ack>().unwrap().up_to)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn start_dials_then_hello_then_inventory_after_hello_ack() {
    let now = Instant::now();
    let mut s = state();
    assert_eq!(s.handle(Event::Start, now), vec![Action::Dial]);
    let a = s.handle(Event::Dialed, now);
    let [Action::Send(hello)] = a.as_slice() else {
        panic!("{a:?}")
    };
    let hello = hello.control::<Hello>().unwrap();
    assert_eq!(hello.node_name, "edge-1");
    assert_eq!((hello.min_version, hello.max_version), (1, 1));
    assert!(!s.can_send(), "no upstream before HELLO_ACK");
    let a = s.handle(Event::Frame(hello_ack(0, 0)), now);
    assert!(a.contains(&Action::State(Link::Syncing)));
    assert!(a.contains(&Action::SendInventory {
        max_frame: proto::DEFAULT_MAX_FRAME
    }));
    assert!(a.contains(&Action::SessionUp {
        session_id: "s-1".into()
    }));
    assert!(s.can_send());
}

#[test]
fn objects_are_acked_only_after_commit_and_batched_while_applying() {
    let (mut s, now) = syncing();
    let a = s.handle(Event::Frame(obj(1)), now);
    assert!(matches!(a.as_slice(), [Action::Apply(b)] if b.len() == 1));
    // while the writer flushes, more frames queue up: no Apply, no ACK
    assert!(s.handle(Event::Frame(obj(2)), now).is_empty());
    assert!(s.handle(Event::Frame(obj(3)), now).is_empty());
    assert_eq!(s.handle(Event::Tick, now + Duration::from_secs(1)), vec![]);
    // the first batch is durable: ACK 1 and hand over the next batch (2, 3)
    let a = s.handle(Event::Committed { up_to: 1 }, now);
    assert_eq!(acks(&a), vec![1]);
    let batch = a
        .iter()
        .find_map(|a| match a {
            Action::Apply(b) => Some(b.iter().map(|f| f.id).collect::<Vec<_>>()),
            _ => None,
        })
        .unwrap();
    assert_eq!(batch, vec![2, 3]);
    let a = s.handle(Event::Committed { up_to: 3 }, now);
    assert_eq!(acks(&a), vec![3]);
}

#[test]
fn synced_turns_live_only_when_durable() {
    let (mut s, now) = syncing();
    s.handle(Event::Frame(obj(1)), now);
    s.handle(Event::Frame(Frame::synced(2)), now);
    assert_eq!(s.link(), Link::Syncing);
    let a = s.handle(Event::Committed { up_to: 1 }, now);
    assert_eq!(s.link(), Link::Syncing);
    assert!(matches!(a.last(), Some(Action::Apply(b)) if b[0].id == 2));
    let a = s.handle(Event::Committed { up_to: 2 }, now);
    assert!(a.contains(&Action::State(Link::Live)));
    assert_eq!(s.link(), Link::Live);
}

#[test]
fn duplicates_are_reacked_and_gaps_dropped() {
    let (mut s, now) = syncing();
    s.handle(Event::Frame(obj(1)), now);
    s.handle(Event::Committed { up_to: 1 }, now);
    // retransmit of 1: ack again so the cloud stops resending
    assert_eq!(acks(&s.handle(Event::Frame(obj(1)), now)), vec![1]);
    // 3 before 2: dropped, nothing applied
    assert!(s.handle(Event::Frame(obj(3)), now).is_empty());
    assert!(
        matches!(s.handle(Event::Frame(obj(2)), now).as_slice(), [Action::Apply(b)] if b[0].id == 2)
    );
}

#[test]
fn ping_pong_and_pings_on_interval() {
    let (mut s, now) = syncing();
    let a = s.handle(Event::Frame(Frame::ping(7)), now);
    assert_eq!(a, vec![Action::Send(Frame::pong(7))]);
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(15)));
    let a = s.handle(Event::Tick, now + Duration::from_secs(15));
    assert_eq!(sent(&a), vec![Kind::Ping]);
}

#[test]
fn hello_ack_sets_ping_and_idle() {
    let now = Instant::now();
    let mut s = state();
    s.handle(Event::Start, now);
    s.handle(Event::Dialed, now);
    s.handle(Event::Frame(hello_ack(2, 6)), now);
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(2)));
    // heard nothing for 6 s: dropped into back-off
    let a = s.handle(Event::Tick, now + Duration::from_secs(6));
    assert!(
        matches!(&a[0], Action::EndSession { began: true, .. }),
        "{a:?}"
    );
    assert_eq!(s.link(), Link::Backoff);
}

#[test]
fn idle_session_backs_off_then_redials_with_growing_delay() {
    let (mut s, now) = syncing();
    let t = now + Duration::from_secs(45);
    s.handle(Event::Tick, t);
    assert_eq!(s.link(), Link::Backoff);
    let first = s.next_deadline().unwrap() - t;
    assert!(
        first <= Duration::from_secs(1) && first >= Duration::from_millis(500),
        "{first:?}"
    );
    // before the deadline nothing happens
    assert!(s.handle(Event::Tick, t).is_empty());
    let t2 = t + first;
    assert_eq!(
        s.handle(Event::Tick, t2),
        vec![Action::State(Link::Connecting), Action::Dial]
    );
    // dial fails: the second delay is drawn from [1 s, 2 s]
    s.handle(Event::DialFailed("refused".into()), t2);
    let second = s.next_deadline().unwrap() - t2;
    assert!(
        second >= Duration::from_secs(1) && second <= Duration::from_secs(2),
        "{second:?}"
    );
}

#[test]
fn no_hello_ack_in_time_fails() {
    let now = Instant::now();
    let mut s = state();
    s.handle(Event::Start, now);
    s.handle(Event::Dialed, now);
    let a = s.handle(Event::Tick, now + Duration::from_secs(45));
    assert!(
        matches!(&a[0], Action::EndSession { began: false, .. }),
        "{a:?}"
    );
}

#[test]
fn error_before_hello_ack_or_version_mismatch_fail() {
    let now = Instant::now();
    let mut s = state();
    s.handle(Event::Start, now);
    s.handle(Event::Dialed, now);
    let err = Frame::error(&ErrorInfo {
        code: 403,
        reason: "forbidden".into(),
        message: "no".into(),
        in_reply_to: 0,
    });
    let a = s.handle(Event::Frame(err), now);
    assert!(matches!(&a[0], Action::CloudError(e) if e.code == 403));
    assert_eq!(s.link(), Link::Backoff);

    let mut s = state();
    s.handle(Event::Start, now);
    s.handle(Event::Dialed, now);
    let mut ack = hello_ack(0, 0);
    ack.payload = prost_like_hello_ack(99);
    s.handle(Event::Frame(ack), now);
    assert_eq!(s.link(), Link::Backoff);
}

fn prost_like_hello_ack(version: u32) -> Vec<u8> {
    Frame::hello_ack(&HelloAck {
        version,
        ..HelloAck::default()
    })
    .payload
}

#[test]
fn upstream_window_ack_response_and_retransmit() {
    let (mut s, now) = syncing();
    let f = s
        .send_upstream("node".into(), 9, |id| Frame::ping(0).tap_id(id), now)
        .unwrap();
    assert_eq!(f.id, 1);
    let resp = Frame::response(
        1,
        &Response {
            code: 503,
            ..Response::default()
        },
    );
    let a = s.handle(Event::Frame(resp), now);
    assert!(
        matches!(&a[..], [Action::Responded { key, seq: 9, response }] if key == "node" && response.code == 503)
    );
    // not acked within the window's timeout: retransmitted
    let a = s.handle(Event::Tick, now + Duration::from_secs(3));
    assert!(a.iter().any(|a| matches!(a, Action::Send(f) if f.id == 1)));
    let a = s.handle(Event::Frame(Frame::ack(1)), now);
    assert!(matches!(&a[..], [Action::Acked(items)] if items[0].seq == 9));
    // a RESPONSE after the ACK still reaches the outbox
    let late = Frame::response(
        1,
        &Response {
            code: 404,
            ..Response::default()
        },
    );
    let a = s.handle(Event::Frame(late), now);
    assert!(matches!(&a[..], [Action::Responded { seq: 9, response, .. }] if response.code == 404));
    // an ACK beyond what was sent is a protocol violation
    s.handle(Event::Frame(Frame::ack(5)), now);
    assert_eq!(s.link(), Link::Backoff);
}

#[test]
fn window_full_stops_upstream() {
    let (mut s, now) = syncing();
    for i in 0..64 {
        assert!(
            s.send_upstream(format!("k{i}"), i, |id| Frame::ping(0).tap_id(id), now)
                .is_some()
        );
    }
    assert!(!s.can_send());
    assert!(
        s.send_upstream("x".into(), 99, |id| Frame::ping(0).tap_id(id), now)
            .is_none()
    );
}

#[test]
fn garbage_or_early_objects_end_the_session() {
    let (mut s, now) = syncing();
    s.handle(
        Event::Refused {
            reason: "malformed",
        },
        now,
    );
    assert_eq!(s.link(), Link::Backoff);

    let now = Instant::now();
    let mut s = state();
    s.handle(Event::Start, now);
    s.handle(Event::Dialed, now);
    s.handle(Event::Frame(obj(1)), now);
    assert_eq!(s.link(), Link::Backoff);
    let _ = Inventory::default();
}

#[test]
fn results_of_an_old_session_are_ignored() {
    let (mut s, now) = syncing();
    s.handle(Event::Frame(obj(1)), now);
    s.handle(Event::Closed("reset".into()), now);
    assert!(s.handle(Event::Committed { up_to: 1 }, now).is_empty());
}

trait TapId {
    fn tap_id(self, id: u64) -> Frame;
}

impl TapId for Frame {
    fn tap_id(mut self, id: u64) -> Frame {
        self.id = id;
        self
    }
}

/// A Live link: Syncing, then SYNCED delivered and durable.
fn live() -> (LinkState, Instant) {
    let (mut s, now) = syncing();
    s.handle(Event::Frame(Frame::synced(1)), now);
    s.handle(Event::Committed { up_to: 1 }, now);
    assert_eq!(s.link(), Link::Live);
    (s, now)
}

#[test]
fn cert_renewal_is_sequenced_answered_and_never_reaches_the_outbox() {
    let (mut s, now) = syncing();
    assert!(s.send_cert_renew("csr", now).is_none(), "only while live");
    let (mut s, now) = live();
    let req = s.send_cert_renew("csr", now).unwrap();
    assert_eq!(req.checked_kind().ok(), Some(Kind::CertRenewRequest));
    assert!(req.id > 0);
    assert!(s.send_cert_renew("csr", now).is_none(), "one at a time");
    // Its ACK releases it without an outbox action.
    let a = s.handle(Event::Frame(Frame::ack(req.id)), now);
    assert!(!a.iter().any(|a| matches!(a, Action::Acked(_))), "{a:?}");
    // A stray answer is ignored; the right one is reported once.
    let other = Frame::cert_renew_response(req.id + 7, &proto::CertRenewResponse::default());
    assert!(s.handle(Event::Frame(other), now).is_empty());
    let answer = proto::CertRenewResponse {
        cert_chain_pem: "pem".into(),
        ca_pem: String::new(),
    };
    let a = s.handle(
        Event::Frame(Frame::cert_renew_response(req.id, &answer)),
        now,
    );
    assert_eq!(a, vec![Action::CertRenewed(answer.clone())]);
    assert!(
        s.handle(
            Event::Frame(Frame::cert_renew_response(req.id, &answer)),
            now
        )
        .is_empty()
    );

    // A refusal in reply to the request is reported as such.
    let req = s.send_cert_renew("csr", now).unwrap();
    let info = ErrorInfo {
        code: 403,
        reason: "CSRIdentityMismatch".into(),
        message: "no".into(),
        in_reply_to: req.id,
    };
    let a = s.handle(Event::Frame(Frame::error(&info)), now);
    assert_eq!(
        a,
        vec![
            Action::CertRenewRefused(info.clone()),
            Action::CloudError(info)
        ]
    );

    // A session ending with a renewal in flight abandons it.
    s.send_cert_renew("csr", now).unwrap();
    let a = s.handle(Event::Closed("gone".into()), now);
    assert!(a.contains(&Action::CertRenewAbandoned), "{a:?}");
    // Backing off: credentials written by a re-join end the wait at once.
    assert_eq!(s.link(), Link::Backoff);
    let a = s.handle(Event::RetryNow, now);
    assert!(a.contains(&Action::Dial), "{a:?}");
}
