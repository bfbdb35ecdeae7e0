#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn tracker(max_pending: u64, delay_ms: u64) -> AckTracker<Duration> {
    AckTracker::new(AckPolicy {
        max_pending,
        max_delay: at(delay_ms),
    })
}

/// Delivers and commits `1..=n` at time 0.
fn deliver_commit(t: &mut AckTracker<Duration>, n: u64) {
    for id in t.delivered() + 1..=n {
        assert_eq!(t.on_frame(id), Receipt::Deliver);
    }
    t.commit(n, at(0)).unwrap();
}

#[test]
fn in_order_frames_are_delivered() {
    let mut t = tracker(100, 10);
    assert_eq!(t.expected(), Some(1));
    assert_eq!(t.on_frame(1), Receipt::Deliver);
    assert_eq!(t.on_frame(2), Receipt::Deliver);
    assert_eq!(t.delivered(), 2);
    assert_eq!(t.expected(), Some(3));
}

#[test]
fn unsequenced_frames_are_not_tracked() {
    let mut t = tracker(1, 10);
    assert_eq!(t.on_frame(0), Receipt::Unsequenced);
    assert_eq!(t.delivered(), 0);
    assert!(!t.ack_due(at(1_000)));
}

#[test]
fn gap_is_dropped_until_the_missing_frame_arrives() {
    let mut t = tracker(100, 10);
    assert_eq!(t.on_frame(1), Receipt::Deliver);
    assert_eq!(t.on_frame(3), Receipt::Gap { expected: 2 });
    assert_eq!(t.on_frame(4), Receipt::Gap { expected: 2 });
    assert_eq!(t.delivered(), 1);
    assert_eq!(t.on_frame(2), Receipt::Deliver);
    // 3 was dropped, so its retransmission is delivered, not a duplicate
    assert_eq!(t.on_frame(3), Receipt::Deliver);
}

#[test]
fn new_session_starting_above_one_is_a_gap() {
    let mut t = tracker(100, 10);
    assert_eq!(t.on_frame(5), Receipt::Gap { expected: 1 });
}

#[test]
fn retransmit_of_delivered_frame_is_a_duplicate() {
    let mut t = tracker(100, 10);
    assert_eq!(t.on_frame(1), Receipt::Deliver);
    assert_eq!(t.on_frame(2), Receipt::Deliver);
    assert_eq!(t.on_frame(1), Receipt::Duplicate);
    assert_eq!(t.on_frame(2), Receipt::Duplicate);
    // not committed yet: a duplicate does not trigger an ack of nothing
    assert!(!t.ack_due(at(0)));
    assert_eq!(t.poll_ack(at(0)), None);
}

#[test]
fn ack_waits_for_commit_not_delivery() {
    let mut t = tracker(1, 10);
    assert_eq!(t.on_frame(1), Receipt::Deliver);
    assert_eq!(t.poll_ack(at(1_000)), None, "delivered is not durable");
    t.commit(1, at(1_000)).unwrap();
    assert_eq!(t.poll_ack(at(1_000)), Some(1));
    assert_eq!(t.acked(), 1);
    assert_eq!(t.poll_ack(at(2_000)), None, "nothing new to ack");
}

#[test]
fn commit_beyond_delivered_is_refused() {
    let mut t = tracker(1, 10);
    t.on_frame(1);
    assert_eq!(
        t.commit(2, at(0)),
        Err(AckError::CommitBeyondDelivered {
            up_to: 2,
            delivered: 1
        })
    );
    assert_eq!(t.committed(), 0);
}

#[test]
fn stale_commit_is_ignored() {
    let mut t = tracker(100, 10);
    deliver_commit(&mut t, 3);
    t.commit(2, at(0)).unwrap();
    assert_eq!(t.committed(), 3);
}

#[test]
fn ack_is_delayed_then_sent() {
    let mut t = tracker(100, 10);
    deliver_commit(&mut t, 2);
    assert_eq!(t.next_deadline(), Some(at(10)));
    assert_eq!(t.poll_ack(at(9)), None);
    assert_eq!(t.poll_ack(at(10)), Some(2));
    assert_eq!(t.next_deadline(), None);
}

#[test]
fn delay_counts_from_first_unacked_commit() {
    let mut t = tracker(100, 10);
    t.on_frame(1);
    t.commit(1, at(0)).unwrap();
    t.on_frame(2);
    t.commit(2, at(8)).unwrap();
    assert_eq!(t.next_deadline(), Some(at(10)));
    assert_eq!(t.poll_ack(at(10)), Some(2));
    t.on_frame(3);
    t.commit(3, at(50)).unwrap();
    assert_eq!(t.next_deadline(), Some(at(60)));
}

#[test]
fn many_pending_commits_ack_at_once() {
    let mut t = tracker(4, 1_000);
    deliver_commit(&mut t, 3);
    assert_eq!(t.poll_ack(at(0)), None);
    deliver_commit(&mut t, 4);
    assert_eq!(t.poll_ack(at(0)), Some(4));
    deliver_commit(&mut t, 7);
    assert_eq!(t.poll_ack(at(0)), None, "3 pending < 4");
    assert_eq!(t.poll_ack(at(1_000)), Some(7));
}

#[test]
fn duplicate_of_committed_frame_forces_reack() {
    let mut t = tracker(100, 10);
    deliver_commit(&mut t, 2);
    assert_eq!(t.poll_ack(at(10)), Some(2));
    // the sender did not see our ack and resends 1
    assert_eq!(t.on_frame(1), Receipt::Duplicate);
    assert!(t.ack_due(at(10)));
    assert_eq!(t.poll_ack(at(10)), Some(2), "re-ack at once, same up_to");
    assert_eq!(t.poll_ack(at(10)), None);
}

#[test]
fn duplicate_of_uncommitted_frame_does_not_reack() {
    let mut t = tracker(100, 10);
    deliver_commit(&mut t, 1);
    assert_eq!(t.poll_ack(at(10)), Some(1));
    assert_eq!(t.on_frame(2), Receipt::Deliver);
    assert_eq!(t.on_frame(2), Receipt::Duplicate);
    assert_eq!(t.poll_ack(at(10)), None, "2 is not durable yet");
}

#[test]
fn redeliver_after_failed_commit() {
    let mut t = tracker(1, 10);
    deliver_commit(&mut t, 2);
    assert_eq!(t.on_frame(3), Receipt::Deliver);
    assert_eq!(t.on_frame(4), Receipt::Deliver);
    // flushing 3 and 4 failed: they must come again
    t.redeliver_from(3);
    assert_eq!(t.delivered(), 2);
    assert_eq!(t.on_frame(4), Receipt::Gap { expected: 3 });
    assert_eq!(t.on_frame(3), Receipt::Deliver);
    assert_eq!(t.on_frame(4), Receipt::Deliver);
}

#[test]
fn redeliver_never_uncommits() {
    let mut t = tracker(1, 10);
    deliver_commit(&mut t, 3);
    t.on_frame(4);
    t.redeliver_from(1);
    assert_eq!(t.delivered(), 3);
    assert_eq!(t.committed(), 3);
    assert_eq!(t.on_frame(2), Receipt::Duplicate);
    assert_eq!(t.on_frame(4), Receipt::Deliver);
    // redeliver_from(0) does not underflow
    t.redeliver_from(0);
    assert_eq!(t.delivered(), 3);
}

#[test]
fn reset_restarts_ids_for_a_new_session() {
    let mut t = tracker(1, 10);
    deliver_commit(&mut t, 5);
    assert_eq!(t.poll_ack(at(0)), Some(5));
    t.reset();
    assert_eq!(t.delivered(), 0);
    assert_eq!(t.committed(), 0);
    assert_eq!(t.acked(), 0);
    assert_eq!(t.on_frame(1), Receipt::Deliver, "ids restart at 1");
    assert_eq!(t.on_frame(6), Receipt::Gap { expected: 2 });
    assert_eq!(t.poll_ack(at(0)), None);
}

#[test]
fn highest_id_does_not_overflow() {
    let mut t = tracker(1, 10);
    t.delivered = u64::MAX - 1;
    t.committed = u64::MAX - 1;
    t.acked = u64::MAX - 1;
    assert_eq!(t.on_frame(u64::MAX), Receipt::Deliver);
    assert_eq!(t.expected(), None);
    assert_eq!(t.on_frame(u64::MAX), Receipt::Duplicate);
    t.commit(u64::MAX, at(0)).unwrap();
    assert_eq!(t.poll_ack(at(0)), Some(u64::MAX));
}

#[test]
fn zero_policy_values_are_sane() {
    let mut t: AckTracker<Duration> = AckTracker::new(AckPolicy {
        max_pending: 0,
        max_delay: Duration::MAX,
    });
    t.on_frame(1);
    t.commit(1, at(0)).unwrap();
    assert_eq!(t.poll_ack(at(0)), Some(1), "max_pending 0 acts as 1");
}

#[test]
fn default_policy_with_std_instant() {
    let now = Instant::now();
    let mut t: AckTracker = AckTracker::new(AckPolicy::default());
    t.on_frame(1);
    t.commit(1, now).unwrap();
    assert_eq!(t.poll_ack(now), None);
    assert_eq!(t.poll_ack(now + Duration::from_millis(20)), Some(1));
}
