use serde_json::json;

use super::*;

fn pod(policy: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "d", "uid": "u1"},
        "spec": {"restartPolicy": policy,
                 "initContainers": [{"name": "init", "image": "busybox"}],
                 "containers": [{"name": "app", "image": "busybox"}]}
    }))
    .unwrap()
}

const B: Backoff = Backoff {
    base_ms: 10_000,
    max_ms: 300_000,
};

fn sandbox() -> Sandbox {
    Sandbox {
        id: "s1".into(),
        uid: "u1".into(),
        attempt: 0,
        ready: true,
        created_ms: 1_000,
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

fn exited(code: i32) -> CState {
    CState::Exited {
        code,
        started_ms: 2_000,
        finished_ms: 3_000,
    }
}

fn status(p: &Pod, ctrs: &[Ctr], failures: &BTreeMap<(String, String), Failure>) -> Value {
    let sb = sandbox();
    let details = BTreeMap::new();
    let not_ready = BTreeSet::new();
    pod_status(&View {
        pod: p,
        sandbox: Some(&sb),
        containers: ctrs.iter().collect(),
        details: &details,
        failures,
        not_ready: &not_ready,
        pod_ip: "10.1.0.5".into(),
        host_ip: "192.0.2.1".into(),
        previous: None,
        backoff: B,
        now_ms: 10_000,
    })
}

fn cond(s: &Value, kind: &str) -> String {
    s["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == kind)
        .unwrap()["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn running_pod_is_running_and_ready() {
    let p = pod("Always");
    let s = status(
        &p,
        &[
            ctr("i", "init", 0, exited(0)),
            ctr("a", "app", 0, CState::Running),
        ],
        &BTreeMap::new(),
    );
    assert_eq!(s["phase"], "Running");
    assert_eq!(cond(&s, "Ready"), "True");
    assert_eq!(cond(&s, "Initialized"), "True");
    assert_eq!(s["podIP"], "10.1.0.5");
    assert_eq!(s["containerStatuses"][0]["containerID"], "containerd://a");
    assert!(s["containerStatuses"][0]["state"]["running"].is_object());
    assert_eq!(
        s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(s["startTime"], "1970-01-01T00:00:01Z");
}

#[test]
fn crash_loop_shows_waiting_last_state_and_restart_count() {
    let p = pod("Always");
    let s = status(
        &p,
        &[
            ctr("i", "init", 0, exited(0)),
            ctr("a", "app", 2, exited(3)),
        ],
        &BTreeMap::new(),
    );
    let c = &s["containerStatuses"][0];
    assert_eq!(c["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(c["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(c["restartCount"], 2);
    assert_eq!(s["phase"], "Running");
    assert_eq!(cond(&s, "Ready"), "False");
}

#[test]
fn failures_show_as_waiting_reasons() {
    let p = pod("Always");
    let mut f = BTreeMap::new();
    let fail = |reason: &str, count| Failure {
        reason: reason.into(),
        message: "m".into(),
        count,
        at_ms: 0,
    };
    f.insert(("u1".into(), "init".into()), fail("ErrImagePull", 1));
    let s = status(&p, &[], &f);
    assert_eq!(
        s["initContainerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImagePull"
    );
    assert_eq!(s["phase"], "Pending");
    f.insert(("u1".into(), "init".into()), fail("ErrImagePull", 2));
    let s = status(&p, &[], &f);
    assert_eq!(
        s["initContainerStatuses"][0]["state"]["waiting"]["reason"],
        "ImagePullBackOff"
    );
    f.insert(
        ("u1".into(), "app".into()),
        fail("CreateContainerConfigError", 1),
    );
    let s = status(&p, &[ctr("i", "init", 0, exited(0))], &f);
    assert_eq!(
        s["containerStatuses"][0]["state"]["waiting"]["reason"],
        "CreateContainerConfigError"
    );
}

#[test]
fn completed_pods_succeed_or_fail() {
    let p = pod("Never");
    let ok = status(
        &p,
        &[
            ctr("i", "init", 0, exited(0)),
            ctr("a", "app", 0, exited(0)),
        ],
        &BTreeMap::new(),
    );
    assert_eq!(ok["phase"], "Succeeded");
    let bad = status(
        &p,
        &[
            ctr("i", "init", 0, exited(0)),
            ctr("a", "app", 0, exited(1)),
        ],
        &BTreeMap::new(),
    );
    assert_eq!(bad["phase"], "Failed");
    let init_bad = status(&p, &[ctr("i", "init", 0, exited(1))], &BTreeMap::new());
    assert_eq!(init_bad["phase"], "Failed");
}

#[test]
fn transition_times_are_kept_from_the_previous_status() {
    let p = pod("Always");
    let sb = sandbox();
    let details = BTreeMap::new();
    let not_ready = BTreeSet::new();
    let failures = BTreeMap::new();
    let ctrs = [
        ctr("i", "init", 0, exited(0)),
        ctr("a", "app", 0, CState::Running),
    ];
    let view = |now_ms, previous| View {
        pod: &p,
        sandbox: Some(&sb),
        containers: ctrs.iter().collect(),
        details: &details,
        failures: &failures,
        not_ready: &not_ready,
        pod_ip: String::new(),
        host_ip: "h".into(),
        previous,
        backoff: B,
        now_ms,
    };
    let first = pod_status(&view(10_000, None));
    let second = pod_status(&view(99_000, Some(&first)));
    assert_eq!(first, second, "an unchanged pod yields an identical status");
}

#[test]
fn events_name_the_pod() {
    let p = pod("Always");
    let e = event(
        &p,
        "edge",
        "Normal",
        "Started",
        "Started container app",
        5_000,
    );
    assert_eq!(e["involvedObject"]["uid"], "u1");
    assert_eq!(e["metadata"]["namespace"], "d");
    assert!(e["metadata"]["name"].as_str().unwrap().starts_with("p."));
}
