#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;

/// A test clock: milliseconds as `Duration` since an arbitrary zero.
fn at(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn window(capacity: usize) -> SendWindow<&'static str, Duration> {
    SendWindow::new(WindowConfig {
        capacity,
        initial_timeout: at(100),
        max_timeout: at(350),
    })
}

#[test]
fn push_assigns_contiguous_ids_from_one() {
    let mut w = window(8);
    assert_eq!(w.next_id(), Some(1));
    assert_eq!(w.push("a", at(0)), Ok(1));
    assert_eq!(w.push("b", at(0)), Ok(2));
    assert_eq!(w.push("c", at(0)), Ok(3));
    assert_eq!(w.len(), 3);
    assert_eq!(w.highest_sent(), 3);
    assert_eq!(w.get(2), Some(&"b"));
    assert_eq!(w.get(0), None);
    assert_eq!(w.get(4), None);
    assert_eq!(w.sends(1), Some(1));
}

#[test]
fn full_window_refuses_until_acked() {
    let mut w = window(2);
    w.push("a", at(0)).unwrap();
    w.push("b", at(0)).unwrap();
    assert!(w.is_full());
    let rejected = w.push("c", at(0)).unwrap_err();
    assert_eq!(rejected.error, WindowError::Full { capacity: 2 });
    assert_eq!(rejected.item, "c", "a refused item is handed back");
    assert_eq!(rejected.error.reason(), "window_full");
    assert_eq!(w.on_ack(1).unwrap(), vec![(1, "a")]);
    assert!(!w.is_full());
    assert_eq!(w.push("c", at(0)), Ok(3));
}

#[test]
fn zero_capacity_means_one() {
    let mut w = window(0);
    assert_eq!(w.config().capacity, 1);
    assert_eq!(w.push("a", at(0)), Ok(1));
    assert!(w.is_full());
}

#[test]
fn cumulative_ack_releases_prefix_in_order() {
    let mut w = window(8);
    for item in ["a", "b", "c", "d"] {
        w.push(item, at(0)).unwrap();
    }
    assert_eq!(w.on_ack(3).unwrap(), vec![(1, "a"), (2, "b"), (3, "c")]);
    assert_eq!(w.acked(), 3);
    assert_eq!(w.len(), 1);
    assert_eq!(w.get(4), Some(&"d"));
    assert_eq!(w.get(3), None);
    // ids continue after the acked prefix
    assert_eq!(w.push("e", at(0)), Ok(5));
}

#[test]
fn stale_and_duplicate_acks_release_nothing() {
    let mut w = window(8);
    w.push("a", at(0)).unwrap();
    w.push("b", at(0)).unwrap();
    assert_eq!(w.on_ack(0).unwrap(), vec![]);
    assert_eq!(w.on_ack(2).unwrap().len(), 2);
    assert_eq!(w.on_ack(2).unwrap(), vec![]);
    assert_eq!(w.on_ack(1).unwrap(), vec![]);
    assert_eq!(w.acked(), 2);
}

#[test]
fn ack_beyond_sent_is_a_protocol_error() {
    let mut w = window(8);
    w.push("a", at(0)).unwrap();
    let err = w.on_ack(2).unwrap_err();
    assert_eq!(
        err,
        WindowError::AckBeyondSent {
            up_to: 2,
            highest: 1
        }
    );
    assert_eq!(err.reason(), "ack_beyond_sent");
    // nothing was released by the bad ack
    assert_eq!(w.len(), 1);
    assert_eq!(window(1).on_ack(1).unwrap_err().reason(), "ack_beyond_sent");
}

#[test]
fn nothing_due_before_timeout() {
    let mut w = window(8);
    w.push("a", at(0)).unwrap();
    assert_eq!(w.next_deadline(), Some(at(100)));
    assert!(w.due(at(99)).is_empty());
    assert_eq!(w.due(at(100)), vec![(1, &"a")]);
}

#[test]
fn retransmit_backs_off_exponentially_with_cap() {
    let mut w = window(8);
    w.push("a", at(0)).unwrap();
    // sends: 1 at 0 -> due 100; 2 at 100 -> due 300; 3 at 300 -> due 700
    // but capped at 350 -> due 650; 4 at 650 -> due 1000.
    assert_eq!(w.due(at(100)).len(), 1);
    assert_eq!(w.sends(1), Some(2));
    assert_eq!(w.next_deadline(), Some(at(300)));
    assert!(w.due(at(299)).is_empty());
    assert_eq!(w.due(at(300)).len(), 1);
    assert_eq!(w.next_deadline(), Some(at(650)));
    assert_eq!(w.due(at(650)).len(), 1);
    assert_eq!(w.next_deadline(), Some(at(1000)));
    assert_eq!(w.sends(1), Some(4));
}

#[test]
fn late_poll_reschedules_from_now() {
    let mut w = window(8);
    w.push("a", at(0)).unwrap();
    // polled long after the deadline: the next timeout counts from now
    assert_eq!(w.due(at(5_000)).len(), 1);
    assert_eq!(w.next_deadline(), Some(at(5_200)));
}

#[test]
fn due_returns_only_expired_frames_in_id_order() {
    let mut w = window(8);
    w.push("a", at(0)).unwrap();
    w.push("b", at(50)).unwrap();
    w.push("c", at(200)).unwrap();
    assert_eq!(w.due(at(160)), vec![(1, &"a"), (2, &"b")]);
    assert_eq!(w.next_deadline(), Some(at(300)));
    // an ack of 1 leaves b (resent at 160, due 360) and c (due 300)
    w.on_ack(1).unwrap();
    assert_eq!(w.next_deadline(), Some(at(300)));
    assert_eq!(w.due(at(300)), vec![(3, &"c")]);
    assert_eq!(w.due(at(360)), vec![(2, &"b")]);
}

#[test]
fn acked_frames_are_never_due() {
    let mut w = window(8);
    w.push("a", at(0)).unwrap();
    w.on_ack(1).unwrap();
    assert!(w.due(at(10_000)).is_empty());
    assert_eq!(w.next_deadline(), None);
    assert!(w.is_empty());
}

#[test]
fn restart_returns_unacked_in_order_and_restarts_ids() {
    let mut w = window(8);
    for item in ["a", "b", "c"] {
        w.push(item, at(0)).unwrap();
    }
    w.on_ack(1).unwrap();
    assert_eq!(w.restart(), vec!["b", "c"]);
    assert!(w.is_empty());
    assert_eq!(w.acked(), 0);
    assert_eq!(w.next_id(), Some(1));
    // the new session's first frame is id 1, and acks refer to new ids
    assert_eq!(w.push("b", at(1_000)), Ok(1));
    assert_eq!(
        w.on_ack(2).unwrap_err().reason(),
        "ack_beyond_sent",
        "an ack from the old session must not release new frames"
    );
    assert_eq!(w.on_ack(1).unwrap(), vec![(1, "b")]);
}

#[test]
fn ids_exhausted_at_u64_max() {
    let mut w = window(8);
    w.acked = u64::MAX - 1;
    assert_eq!(w.push("last", at(0)), Ok(u64::MAX));
    assert_eq!(w.next_id(), None);
    let rejected = w.push("over", at(0)).unwrap_err();
    assert_eq!(
        (rejected.error, rejected.item),
        (WindowError::Exhausted, "over")
    );
    assert_eq!(w.get(u64::MAX), Some(&"last"));
    assert_eq!(w.due(at(100)), vec![(u64::MAX, &"last")]);
    assert_eq!(w.on_ack(u64::MAX).unwrap(), vec![(u64::MAX, "last")]);
}

#[test]
fn works_with_std_instant() {
    let start = Instant::now();
    let mut w: SendWindow<u32> = SendWindow::new(WindowConfig::default());
    w.push(7, start).unwrap();
    assert!(w.due(start).is_empty());
    assert_eq!(w.due(start + Duration::from_secs(3)).len(), 1);
}

#[test]
fn backoff_never_overflows() {
    let config = WindowConfig {
        capacity: 1,
        initial_timeout: Duration::MAX,
        max_timeout: Duration::MAX,
    };
    assert_eq!(backoff(&config, u32::MAX), Duration::MAX);
    assert_eq!(backoff(&WindowConfig::default(), 1), Duration::from_secs(3));
    assert_eq!(backoff(&WindowConfig::default(), 2), Duration::from_secs(6));
    assert_eq!(
        backoff(&WindowConfig::default(), 99),
        Duration::from_secs(30)
    );
}

#[test]
fn huge_timeouts_are_capped() {
    let mut w: SendWindow<u32> = SendWindow::new(WindowConfig {
        capacity: 4,
        initial_timeout: Duration::MAX,
        max_timeout: Duration::MAX,
    });
    assert_eq!(w.config().initial_timeout, TIMEOUT_CAP);
    let now = Instant::now();
    w.push(1, now).unwrap();
    assert_eq!(w.next_deadline(), Some(now + TIMEOUT_CAP));
    assert_eq!(w.due(now + TIMEOUT_CAP).len(), 1);
}
