//! Every request cloudcore makes is allowed by the Helm chart's RBAC — checked on what
//! cloudcore really did, not on a list: `cloudcore standalone` authenticates to its embedded
//! API as `system:serviceaccount:kedge-system:cloudcore` (the chart's ServiceAccount), the
//! harness always runs it with `--audit-log`, and this test evaluates every audited request
//! of that user with the RBAC evaluator (`tests::rbac`) against the chart's rendered
//! ClusterRole/Roles:
//!
//! - the requests of a representative workload run here (an edge joins and runs; a pod with
//!   its ConfigMap and Secret, a DeviceModel and a Device are sent to it; the pod is deleted
//!   gracefully; the edge is killed, declared Unknown, restarted and Ready again);
//! - plus the requests collected from every other e2e test of this build
//!   (`Standalone`'s drop keeps them under `target/<profile>/kedge-audit/`), so a test that
//!   ran before this one extends the check to what it made cloudcore do.
//!
//! The node-lifecycle emulation of standalone runs under its own identity (Kubernetes'
//! `node-controller`), which the chart does not need to grant. A denied request fails the
//! test with the verb, resource and namespace listed.
//!
//! Skips (with the reason printed) only when python3 or `helm_python` cannot be imported.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tests::Standalone;
use tests::edge::{Edge, edge_objects, wait_until};
use tests::helm::{NS, render};
use tests::rbac::{self, CLOUDCORE_USER, Req};

const NODE: &str = "edge-audit";

fn workload(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: audit-cfg, namespace: default}}
data: {{mode: test}}
---
apiVersion: v1
kind: Secret
metadata: {{name: audit-secret, namespace: default}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: audit-pod, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - name: app
    image: docker.io/library/busybox:1.36
    command: [sleep, "3600"]
    envFrom:
    - configMapRef: {{name: audit-cfg}}
    - secretRef: {{name: audit-secret}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata: {{name: audit-model, namespace: default}}
spec:
  protocol: virtual
  properties:
  - {{name: temperature, type: INT, accessMode: ReadWrite}}
---
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata: {{name: audit-device, namespace: default}}
spec:
  deviceModelRef: {{name: audit-model}}
  nodeName: {node}
  protocol: {{protocolName: virtual}}
  properties:
  - {{name: temperature}}
"#
    )
}

/// Runs the workload and returns the distinct requests cloudcore made, and how many requests
/// the node-lifecycle emulation made under its own identity.
fn run_workload(dir: &Path) -> (BTreeSet<Req>, usize) {
    let cloud = dir.join("cloud");
    std::fs::create_dir_all(&cloud).unwrap();
    let cfg = cloud.join("cloud.toml");
    std::fs::write(&cfg, "[lifecycle]\ngrace_seconds = 4\n").unwrap();
    let mut s = Standalone::start(&cloud, &["--config", cfg.to_str().unwrap()]).unwrap();

    let root = dir.join("edge");
    let mut edge = Edge::join(&s, NODE, &root, &[]);
    edge.start();
    wait_until("the edge Ready", Duration::from_secs(60), || {
        s.node_ready(NODE) == "True"
    });

    s.apply(&workload(NODE));
    wait_until(
        "the edge holding the pod, its ConfigMap and Secret, the Device and its model",
        Duration::from_secs(60),
        || edge_objects(&root) >= 5,
    );
    // Graceful deletion of a node-bound pod: cloudcore sends the deletion to the edge (the
    // pod stays Terminating until the edge's runtime confirms).
    s.kubectl_ok(&["delete", "pod", "audit-pod", "--wait=false"]);

    // Node lifecycle: kill -9 → Unknown (node-controller), restart → Ready (cloudcore).
    edge.kill9();
    wait_until(
        "Ready=Unknown after kill -9",
        Duration::from_secs(60),
        || s.node_ready(NODE) == "Unknown",
    );
    edge.start();
    wait_until(
        "Ready again after the restart",
        Duration::from_secs(60),
        || s.node_ready(NODE) == "True",
    );
    drop(edge);
    let status = s.stop().unwrap();
    assert!(
        status.success(),
        "cloudcore standalone exited with {status}"
    );

    let log = cloud.join("audit.log");
    let reqs = rbac::audited_requests(&log, CLOUDCORE_USER);
    let controller =
        rbac::audited_requests(&log, "system:serviceaccount:kube-system:node-controller").len();
    (reqs, controller)
}

#[test]
fn every_audited_cloudcore_request_is_allowed_by_the_chart() {
    let Some(chart) = render(&json!({})) else {
        return;
    };
    let docs = chart.docs();
    let dir = tempfile::tempdir().unwrap();
    let (workload, controller) = run_workload(dir.path());

    // The identity is recognised: the workload's key requests are cloudcore's.
    let has = |verb: &str, resource: &str| {
        workload
            .iter()
            .any(|r| r.verb == verb && r.resource == resource)
    };
    for (verb, resource) in [
        ("watch", "pods"),
        ("watch", "configmaps"),
        ("watch", "devices"),
        ("patch", "nodes/status"),
    ] {
        assert!(
            has(verb, resource),
            "no audited {verb} {resource} by {CLOUDCORE_USER}: {workload:#?}"
        );
    }
    assert!(
        workload
            .iter()
            .any(|r| r.resource == "leases" && r.namespace.as_deref() == Some("kube-node-lease")),
        "no Lease renewal by {CLOUDCORE_USER}: {workload:#?}"
    );
    assert!(
        controller > 0,
        "the node-lifecycle emulation made no request under its own identity"
    );

    let collected = rbac::collected_requests();
    let all: BTreeSet<&Req> = workload.iter().chain(collected.iter()).collect();
    let denied = rbac::denied(&docs, NS, "cloudcore", all.iter().copied());
    assert!(
        denied.is_empty(),
        "the chart's RBAC refuses {} of the {} distinct requests cloudcore made:\n  {}",
        denied.len(),
        all.len(),
        denied
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    eprintln!(
        "checked {} distinct cloudcore requests ({} from this workload, {} collected from the e2e runs of this build, this one included)",
        all.len(),
        workload.len(),
        collected.len()
    );
}
