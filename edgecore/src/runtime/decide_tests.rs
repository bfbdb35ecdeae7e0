use serde_json::json;

use super::*;

const B: Backoff = Backoff {
    base_ms: 10_000,
    max_ms: 300_000,
};

fn pod(policy: &str, init: &[&str], containers: &[&str]) -> Pod {
    let c = |n: &&str| json!({"name": n, "image": "busybox"});
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "d", "uid": "u1"},
        "spec": {"nodeName": "n", "restartPolicy": policy,
                 "terminationGracePeriodSeconds": 5,
                 "initContainers": init.iter().map(c).collect::<Vec<_>>(),
                 "containers": containers.iter().map(c).collect::<Vec<_>>()}
    }))
    .unwrap()
}

fn sandbox(id: &str, attempt: u32, ready: bool) -> Sandbox {
    Sandbox {
        id: id.into(),
        uid: "u1".into(),
        attempt,
        ready,
        created_ms: i64::from(attempt),
    }
}

fn ctr(id: &str, name: &str, attempt: u32, state: CState) -> Ctr {
    Ctr {
        id: id.into(),
        sandbox_id: "s1".into(),
        uid: "u1".into(),
        name: name.into(),
        attempt,
        state,
    }
}

fn exited(code: i32, finished_ms: i64) -> CState {
    CState::Exited {
        code,
        started_ms: finished_ms - 1000,
        finished_ms,
    }
}

fn start(name: &str, init: bool, attempt: u32) -> Action {
    Action::StartContainer {
        uid: "u1".into(),
        sandbox_id: "s1".into(),
        name: name.into(),
        init,
        attempt,
    }
}

fn run(p: &Pod, a: &Actual, m: &Memory, now: i64) -> Vec<Action> {
    decide(std::slice::from_ref(p), a, m, B, now)
}

#[test]
fn new_pod_gets_a_sandbox_first() {
    let p = pod("Always", &[], &["app"]);
    let a = run(&p, &Actual::default(), &Memory::default(), 0);
    assert_eq!(
        a,
        vec![Action::RunSandbox {
            uid: "u1".into(),
            attempt: 0
        }]
    );
}

#[test]
fn dead_sandbox_is_replaced_with_the_next_attempt() {
    let p = pod("Always", &[], &["app"]);
    let actual = Actual {
        sandboxes: vec![sandbox("s1", 0, false)],
        containers: vec![],
    };
    let a = run(&p, &actual, &Memory::default(), 0);
    assert_eq!(
        a,
        vec![Action::RunSandbox {
            uid: "u1".into(),
            attempt: 1
        }]
    );
}

#[test]
fn init_containers_run_in_order_before_containers() {
    let p = pod("Always", &["i1", "i2"], &["app"]);
    let mut actual = Actual {
        sandboxes: vec![sandbox("s1", 0, true)],
        containers: vec![],
    };
    let m = Memory::default();
    assert_eq!(run(&p, &actual, &m, 0), vec![start("i1", true, 0)]);
    actual.containers.push(ctr("c1", "i1", 0, CState::Running));
    assert_eq!(run(&p, &actual, &m, 0), vec![]);
    actual.containers[0].state = exited(0, 0);
    assert_eq!(run(&p, &actual, &m, 0), vec![start("i2", true, 0)]);
    actual.containers.push(ctr("c2", "i2", 0, exited(0, 0)));
    assert_eq!(run(&p, &actual, &m, 0), vec![start("app", false, 0)]);
}

#[test]
fn failed_init_container_restarts_with_backoff_unless_never() {
    let p = pod("Always", &["i1"], &["app"]);
    let actual = Actual {
        sandboxes: vec![sandbox("s1", 0, true)],
        containers: vec![ctr("c1", "i1", 0, exited(1, 1_000))],
    };
    let m = Memory::default();
    assert_eq!(run(&p, &actual, &m, 5_000), vec![]);
    assert_eq!(run(&p, &actual, &m, 11_000), vec![start("i1", true, 1)]);
    let never = pod("Never", &["i1"], &["app"]);
    assert_eq!(run(&never, &actual, &m, 100_000), vec![]);
}

#[test]
fn restart_policy_decides_restarts_and_backoff_doubles() {
    let actual = |code, attempt| Actual {
        sandboxes: vec![sandbox("s1", 0, true)],
        containers: vec![ctr("c1", "app", attempt, exited(code, 1_000))],
    };
    let m = Memory::default();
    let always = pod("Always", &[], &["app"]);
    assert_eq!(run(&always, &actual(0, 0), &m, 10_999), vec![]);
    assert_eq!(
        run(&always, &actual(0, 0), &m, 11_000),
        vec![start("app", false, 1)]
    );
    // Third restart waits 40 s.
    assert_eq!(run(&always, &actual(0, 2), &m, 40_999), vec![]);
    assert_eq!(
        run(&always, &actual(0, 2), &m, 41_000),
        vec![start("app", false, 3)]
    );
    let on_failure = pod("OnFailure", &[], &["app"]);
    assert_eq!(run(&on_failure, &actual(0, 0), &m, 99_000), vec![]);
    assert_eq!(
        run(&on_failure, &actual(2, 0), &m, 99_000),
        vec![start("app", false, 1)]
    );
    let never = pod("Never", &[], &["app"]);
    assert_eq!(run(&never, &actual(2, 0), &m, 99_000), vec![]);
}

#[test]
fn backoff_is_capped() {
    assert_eq!(B.delay(0), 10_000);
    assert_eq!(B.delay(3), 80_000);
    assert_eq!(B.delay(10), 300_000);
    assert_eq!(B.delay(u32::MAX), 300_000);
}

#[test]
fn failures_gate_retries() {
    let p = pod("Always", &[], &["app"]);
    let actual = Actual {
        sandboxes: vec![sandbox("s1", 0, true)],
        containers: vec![],
    };
    let mut m = Memory::default();
    m.failures.insert(
        ("u1".into(), "app".into()),
        Failure {
            reason: "ErrImagePull".into(),
            message: String::new(),
            count: 2,
            at_ms: 1_000,
        },
    );
    assert_eq!(run(&p, &actual, &m, 20_999), vec![]);
    assert_eq!(run(&p, &actual, &m, 21_000), vec![start("app", false, 0)]);
}

#[test]
fn unhealthy_container_is_killed() {
    let p = pod("Always", &[], &["app"]);
    let actual = Actual {
        sandboxes: vec![sandbox("s1", 0, true)],
        containers: vec![ctr("c1", "app", 0, CState::Running)],
    };
    let mut m = Memory::default();
    assert_eq!(run(&p, &actual, &m, 0), vec![]);
    m.unhealthy.insert("c1".into());
    assert_eq!(
        run(&p, &actual, &m, 0),
        vec![Action::KillContainer {
            uid: "u1".into(),
            id: "c1".into(),
            name: "app".into(),
            grace: 5
        }]
    );
}

#[test]
fn old_instances_old_sandboxes_and_unknown_names_are_collected() {
    let p = pod("Always", &[], &["app"]);
    let actual = Actual {
        sandboxes: vec![sandbox("s0", 0, false), sandbox("s1", 1, true)],
        containers: vec![
            ctr("c0", "app", 0, exited(1, 0)),
            ctr("c1", "app", 1, CState::Running),
            ctr("cx", "gone", 0, CState::Running),
            ctr("cc", "app", 2, CState::Created),
        ],
    };
    let a = run(&p, &actual, &Memory::default(), 0);
    assert!(a.contains(&Action::RemoveSandbox { id: "s0".into() }));
    assert!(a.contains(&Action::RemoveContainer { id: "c0".into() }));
    assert!(a.contains(&Action::RemoveContainer { id: "cx".into() }));
    // The latest attempt was created but never started: removed, then started again.
    assert!(a.contains(&Action::RemoveContainer { id: "cc".into() }));
    assert!(!a.contains(&Action::RemoveContainer { id: "c1".into() }));
}

#[test]
fn deleting_pod_is_killed_with_its_grace_then_confirmed_once() {
    let mut p = pod("Always", &[], &["app"]);
    p.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
    p.metadata.deletion_grace_period_seconds = Some(7);
    let actual = Actual {
        sandboxes: vec![sandbox("s1", 0, true)],
        containers: vec![ctr("c1", "app", 0, CState::Running)],
    };
    let mut m = Memory::default();
    assert_eq!(
        run(&p, &actual, &m, 0),
        vec![Action::KillPod {
            uid: "u1".into(),
            grace: 7
        }]
    );
    m.stopping.insert("u1".into());
    assert_eq!(run(&p, &actual, &m, 0), vec![]);
    m.stopping.clear();
    let confirm = Action::ConfirmDeletion {
        uid: "u1".into(),
        namespace: "d".into(),
        name: "p".into(),
    };
    assert_eq!(run(&p, &Actual::default(), &m, 0), vec![confirm]);
    m.confirmed.insert("u1".into());
    assert_eq!(run(&p, &Actual::default(), &m, 0), vec![]);
}

#[test]
fn pods_nobody_wants_are_garbage() {
    let actual = Actual {
        sandboxes: vec![sandbox("s1", 0, true)],
        containers: vec![ctr("c1", "app", 0, CState::Running)],
    };
    assert_eq!(
        decide(&[], &actual, &Memory::default(), B, 0),
        vec![Action::KillPod {
            uid: "u1".into(),
            grace: GONE_GRACE
        }]
    );
}

#[test]
fn completed_never_pod_gets_no_new_sandbox() {
    let p = pod("Never", &[], &["app"]);
    let actual = Actual {
        sandboxes: vec![sandbox("s1", 0, false)],
        containers: vec![ctr("c1", "app", 0, exited(0, 0))],
    };
    assert_eq!(run(&p, &actual, &Memory::default(), 0), vec![]);
}

#[test]
fn a_pod_whose_start_is_in_flight_gets_nothing_until_it_reports() {
    let p = pod("Always", &[], &["app"]);
    let mut m = Memory::default();
    m.starting.insert("u1".into());
    // Its sandbox is being created: no second RunSandbox.
    assert_eq!(run(&p, &Actual::default(), &m, 0), vec![]);
    // The sandbox is up but the step has not reported yet: no StartContainer racing it.
    let up = Actual {
        sandboxes: vec![sandbox("s1", 0, true)],
        containers: vec![],
    };
    assert_eq!(run(&p, &up, &m, 0), vec![]);
    // Deleted or gone meanwhile: the stop waits for the step too (no kill racing a start).
    let mut deleted = p.clone();
    deleted.metadata.deletion_timestamp = Some("2026-01-01T00:00:00Z".into());
    assert_eq!(run(&deleted, &up, &m, 0), vec![]);
    assert_eq!(decide(&[], &up, &m, B, 0), vec![]);
    // Once it reported, the pod goes on from what the runtime shows.
    m.starting.clear();
    assert_eq!(run(&p, &up, &m, 0), vec![start("app", false, 0)]);
    assert_eq!(
        decide(&[], &up, &m, B, 0),
        vec![Action::KillPod {
            uid: "u1".into(),
            grace: GONE_GRACE
        }]
    );
}
