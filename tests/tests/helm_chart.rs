//! The Helm chart `deploy/helm/cloudcore`, with the real Helm engine (PyPI `helm-python-sdk`,
//! Helm v4's library, driven by `tests/helm_render.py`): lint, render with default and
//! custom values, least-privilege RBAC (checked by a small RBAC evaluator against the
//! requests cloudcore's code makes), the rendered config accepted by `cloudcore run --check`,
//! the CRDs byte-identical to `deploy/crds/`, and the rendered manifests applied with kubectl
//! to `cloudcore standalone` and read back.
//!
//! Skips (with the reason printed) only when python3 or `helm_python` cannot be imported.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};
use tests::helm::{NS, RenderResult, chart_dir, render, try_render};
use tests::rbac::{self, Req, strs};
use tests::{Standalone, bin, workspace_root};

fn custom_values() -> Value {
    json!({
        "namespace": {"create": true},
        "replicas": 2,
        "image": {"repository": "registry.example.com/kedge/cloudcore", "tag": "1.2.3",
                  "pullPolicy": "Always"},
        "service": {"type": "LoadBalancer", "loadBalancerIP": "203.0.113.10"},
        "hub": {"advertise": ["cloudcore.example.com", "203.0.113.10"],
                "nodeCertValiditySeconds": 2_592_000,
                "clusterCIDR": "10.128.0.0/12", "nodeCIDRMaskSize": 26},
        "nodeCA": {"existingSecret": "kedge-node-ca"},
        "autonomy": {"webhook": {
            "enabled": true, "certgen": "manual",
            // base64 of a PEM header: the API stores caBundle as bytes, nothing checks it.
            "caBundle": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==",
        }},
    })
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn count(docs: &[Value], kind: &str) -> usize {
    docs.iter().filter(|d| d["kind"] == kind).count()
}

/// The config the Deployment runs with, and `cloudcore run --check` on it.
fn check_config(docs: &[Value]) -> String {
    let toml = find(docs, "ConfigMap", "cloudcore-config")["data"]["cloudcore.toml"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloudcore.toml");
    std::fs::write(&path, &toml).unwrap();
    let out = Command::new(bin("cloudcore"))
        .args(["run", "--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cloudcore run --check refused the rendered config: {}{}\n{toml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    toml
}

// ---------------------------------------------------------------- RBAC (tests::rbac)

/// Whether the chart's RBAC for cloudcore's ServiceAccount allows `r`.
fn allowed(docs: &[Value], r: &Req) -> bool {
    rbac::allowed(docs, NS, "cloudcore", r)
}

/// (verb, API group, resource, namespace, name).
type Access = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// The requests `cloudcore run` makes (from `cloudcore/src`: `Api::` calls and the edge
/// requests `hub/authz.rs` lets through), as (verb, group, resource, namespace, name).
#[rustfmt::skip]
const NEEDED: &[Access] = &[
    // edge/watch.rs watchers (all namespaces) and fetch; upstream get/list for edges
    ("list", "", "nodes", None, None), ("watch", "", "nodes", None, None),
    ("get", "", "nodes", None, Some("edge-1")),
    ("list", "", "pods", None, None), ("watch", "", "pods", None, None),
    ("get", "", "pods", Some("default"), Some("p")),
    ("list", "", "configmaps", None, None), ("watch", "", "configmaps", None, None),
    ("get", "", "configmaps", Some("default"), Some("cfg")),
    ("list", "", "secrets", None, None), ("watch", "", "secrets", None, None),
    ("get", "", "secrets", Some("default"), Some("s")),
    ("list", "devices.kubeedge.io", "devices", None, None),
    ("watch", "devices.kubeedge.io", "devices", None, None),
    ("get", "devices.kubeedge.io", "devices", Some("default"), Some("d")),
    ("list", "devices.kubeedge.io", "devicemodels", None, None),
    ("watch", "devices.kubeedge.io", "devicemodels", None, None),
    ("get", "devices.kubeedge.io", "devicemodels", Some("default"), Some("m")),
    ("get", "", "serviceaccounts", Some("default"), Some("default")),
    ("list", "", "serviceaccounts", Some("default"), None),
    // join.rs / lifecycle.rs: Node create-if-absent, labels, pod CIDR, status
    ("create", "", "nodes", None, None), ("patch", "", "nodes", None, Some("edge-1")),
    ("patch", "", "nodes/status", None, Some("edge-1")),
    ("update", "", "nodes/status", None, Some("edge-1")),
    // Leases
    ("get", "coordination.k8s.io", "leases", Some("kube-node-lease"), Some("edge-1")),
    ("create", "coordination.k8s.io", "leases", Some("kube-node-lease"), None),
    ("patch", "coordination.k8s.io", "leases", Some("kube-node-lease"), Some("edge-1")),
    ("update", "coordination.k8s.io", "leases", Some("kube-node-lease"), Some("edge-1")),
    // edge writes (hub/authz.rs)
    ("patch", "", "pods/status", Some("default"), Some("p")),
    ("update", "", "pods/status", Some("default"), Some("p")),
    ("delete", "", "pods", Some("default"), Some("p")),
    ("create", "", "serviceaccounts/token", Some("default"), Some("default")),
    ("create", "", "events", Some("default"), None),
    ("patch", "", "events", Some("default"), Some("e")),
    ("update", "", "events", Some("default"), Some("e")),
    ("patch", "devices.kubeedge.io", "devices", Some("default"), Some("d")),
    ("patch", "devices.kubeedge.io", "devices/status", Some("default"), Some("d")),
    // nodeca.rs, token.rs, join/revoke.rs, lifecycle/cidr.rs in kedge-system
    ("create", "", "namespaces", None, None),
    ("get", "", "secrets", Some(NS), Some("kedge-node-ca")),
    ("create", "", "secrets", Some(NS), None),
    ("list", "", "secrets", Some(NS), None), ("watch", "", "secrets", Some(NS), None),
    ("delete", "", "secrets", Some(NS), Some("kedge-token-abc123")),
    ("update", "", "secrets", Some(NS), Some("kedge-node-certs-37")),
    ("get", "", "configmaps", Some(NS), Some("kedge-pod-cidrs")),
    ("create", "", "configmaps", Some(NS), None),
    ("update", "", "configmaps", Some(NS), Some("kedge-pod-cidrs")),
];

/// Requests that must be refused (least privilege).
#[rustfmt::skip]
const REFUSED: &[Access] = &[
    ("create", "", "secrets", Some("default"), None),
    ("update", "", "secrets", Some("default"), Some("s")),
    ("delete", "", "secrets", Some("default"), Some("s")),
    ("update", "", "secrets", Some(NS), Some("kedge-node-ca")),
    ("patch", "", "secrets", Some(NS), Some("kedge-node-ca")),
    ("update", "", "secrets", Some(NS), Some("kedge-node-certs-64")),
    ("create", "", "configmaps", Some("default"), None),
    ("delete", "", "nodes", None, Some("edge-1")),
    ("update", "", "nodes", None, Some("edge-1")),
    ("create", "", "pods", Some("default"), None),
    ("deletecollection", "", "pods", Some("default"), None),
    ("create", "coordination.k8s.io", "leases", Some("default"), None),
    ("delete", "", "namespaces", None, Some(NS)),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", None, None),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", None, None),
    ("impersonate", "", "users", None, None),
    ("create", "devices.kubeedge.io", "devices", Some("default"), None),
    ("delete", "devices.kubeedge.io", "devices", Some("default"), Some("d")),
];

fn assert_least_privilege(docs: &[Value]) {
    for kind in ["ClusterRole", "Role"] {
        for role in docs.iter().filter(|d| d["kind"] == kind) {
            for rule in role["rules"].as_array().unwrap() {
                for field in ["verbs", "resources", "apiGroups"] {
                    assert!(!strs(&rule[field]).contains(&"*"), "{kind} has `*`: {rule}");
                }
                let verbs = strs(&rule["verbs"]);
                for bad in ["escalate", "bind", "impersonate", "deletecollection"] {
                    assert!(!verbs.contains(&bad), "{kind} grants {bad}: {rule}");
                }
                let res = strs(&rule["resources"]);
                let writes = verbs.iter().any(|v| !["get", "list", "watch"].contains(v));
                if kind == "ClusterRole" && res.contains(&"secrets") {
                    assert!(!writes, "secret writes outside kedge-system: {rule}");
                }
                if kind == "ClusterRole" && res.contains(&"configmaps") {
                    assert!(!writes, "configmap writes outside kedge-system: {rule}");
                }
            }
            if kind == "Role" {
                let ns = role["metadata"]["namespace"].as_str().unwrap();
                assert!([NS, "kube-node-lease"].contains(&ns), "Role in {ns}");
            }
        }
    }
    for &(verb, group, resource, namespace, name) in NEEDED {
        let r = Req::new(verb, group, resource, namespace, name);
        assert!(
            allowed(docs, &r),
            "cloudcore needs {verb} {group}/{resource} in {namespace:?} ({name:?}): not allowed"
        );
    }
    for &(verb, group, resource, namespace, name) in REFUSED {
        let r = Req::new(verb, group, resource, namespace, name);
        assert!(
            !allowed(docs, &r),
            "over-privileged: {verb} {group}/{resource} in {namespace:?} ({name:?}) is allowed"
        );
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn chart_crds_are_copies_of_deploy_crds() {
    let src = workspace_root().join("deploy/crds");
    let dst = chart_dir().join("crds");
    let names = |d: &PathBuf| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&src),
        names(&dst),
        "chart crds/ must mirror deploy/crds/"
    );
    for n in names(&src) {
        let a = std::fs::read(src.join(&n)).unwrap();
        let b = std::fs::read(dst.join(&n)).unwrap();
        assert!(
            a == b,
            "deploy/helm/cloudcore/crds/{n} differs from deploy/crds/{n}: copy it again"
        );
    }
    // And Helm loads them as the chart's CRDs.
    if let Some(r) = render(&json!({})) {
        let mut loaded: Vec<String> = r
            .crds
            .iter()
            .map(|c| {
                c["name"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("crds/")
                    .to_owned()
            })
            .collect();
        loaded.sort();
        assert_eq!(loaded, names(&src));
    }
}

#[test]
fn default_values_lint_render_and_are_least_privilege() {
    let Some(r) = render(&json!({})) else { return };
    r.assert_lint_clean();
    let docs = r.docs();
    assert_eq!(
        count(&docs, "Namespace"),
        0,
        "namespace.create defaults to false"
    );
    assert_eq!(
        count(&docs, "MutatingWebhookConfiguration"),
        0,
        "webhook defaults off"
    );
    for d in docs
        .iter()
        .filter(|d| !d["metadata"]["namespace"].is_null())
    {
        let ns = d["metadata"]["namespace"].as_str().unwrap();
        assert!(
            [NS, "kube-node-lease"].contains(&ns),
            "{} in {ns}",
            d["kind"]
        );
    }

    let dep = find(&docs, "Deployment", "cloudcore");
    assert_eq!(dep["spec"]["replicas"], 1);
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/kedge/cloudcore:0.1.0");
    assert_eq!(c["command"], json!(["/usr/local/bin/cloudcore"]));
    assert_eq!(
        c["args"],
        json!(["run", "--config", "/etc/kedge/cloudcore.toml"])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["serviceAccountName"], "cloudcore");
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(
        anti[0]["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let ports: Vec<(&str, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [("hub", 10000), ("metrics", 9100)]);

    let svc = find(&docs, "Service", "cloudcore");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["ports"][0]["port"], 10000);
    let metrics = find(&docs, "Service", "cloudcore-metrics");
    assert_eq!(metrics["spec"]["type"], "ClusterIP");
    assert_eq!(metrics["spec"]["ports"][0]["port"], 9100);

    let toml = check_config(&docs);
    assert!(toml.contains("listen = \"0.0.0.0:9100\""), "{toml}");
    assert!(toml.contains("listen = \"0.0.0.0:10000\""), "{toml}");
    assert!(toml.contains("\"cloudcore.kedge-system.svc\""), "{toml}");

    assert_least_privilege(&docs);

    let notes = r.notes();
    assert!(
        notes.contains(
            "kubectl -n kedge-system exec deploy/cloudcore -- cloudcore token create --ttl 24h"
        ),
        "{notes}"
    );
    assert!(
        notes.contains("edgecore join --server wss://<hub-address>:10000 --token"),
        "{notes}"
    );
    assert!(notes.contains("create-if-absent"), "{notes}");
    assert!(notes.contains("hub.advertise is empty"), "{notes}");
}

#[test]
fn custom_values_render() {
    let Some(r) = render(&custom_values()) else {
        return;
    };
    r.assert_lint_clean();
    let docs = r.docs();
    assert_eq!(docs[0]["kind"], "Namespace");
    assert_eq!(docs[0]["metadata"]["name"], NS);

    let dep = find(&docs, "Deployment", "cloudcore");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example.com/kedge/cloudcore:1.2.3");
    assert_eq!(c["imagePullPolicy"], "Always");
    let ca = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "node-ca")
        .expect("existing node CA mounted");
    assert_eq!(ca["secret"]["secretName"], "kedge-node-ca");
    assert_eq!(ca["secret"]["optional"], false);

    let toml = check_config(&docs);
    assert!(
        toml.contains(r#"advertise = ["cloudcore.example.com","203.0.113.10","cloudcore","#),
        "{toml}"
    );
    assert!(
        toml.contains("node_cert_validity_seconds = 2592000"),
        "{toml}"
    );
    assert!(
        toml.contains("cluster_cidr = \"10.128.0.0/12\"\nnode_cidr_mask_size = 26\n"),
        "{toml}"
    );
    let svc = find(&docs, "Service", "cloudcore");
    assert_eq!(svc["spec"]["loadBalancerIP"], "203.0.113.10");

    let wh = find(&docs, "MutatingWebhookConfiguration", "cloudcore-autonomy");
    let hook = &wh["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["clientConfig"]["service"]["name"], "cloudcore-webhook");
    assert_eq!(hook["rules"][0]["resources"], json!(["pods"]));
    assert_eq!(hook["rules"][0]["operations"], json!(["CREATE"]));
    find(&docs, "Service", "cloudcore-webhook");
    assert!(
        r.notes()
            .contains("Using the existing Secret kedge-system/kedge-node-ca")
    );
    assert_least_privilege(&docs);

    // NodePort variant, and the cert-manager flavour of the webhook certificate.
    let Some(r) = render(&json!({
        "service": {"type": "NodePort", "nodePort": 30000},
        "autonomy": {"webhook": {"enabled": true}},
    })) else {
        return;
    };
    let docs = r.docs();
    let svc = find(&docs, "Service", "cloudcore");
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30000);
    find(&docs, "Certificate", "cloudcore-webhook");
    let wh = find(&docs, "MutatingWebhookConfiguration", "cloudcore-autonomy");
    assert_eq!(
        wh["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "kedge-system/cloudcore-webhook"
    );
}

#[test]
fn bad_values_fail_with_a_clear_message() {
    for (values, needle) in [
        (
            json!({"nodeCA": {"existingSecret": "my-ca"}}),
            "kedge-node-ca",
        ),
        (
            json!({"service": {"type": "ClusterIP"}}),
            "LoadBalancer or NodePort",
        ),
        (
            json!({"autonomy": {"webhook": {"enabled": true, "certgen": "manual"}}}),
            "caBundle",
        ),
        (
            json!({"hub": {"nodeCertValiditySeconds": 5}}),
            "hub.nodeCertValiditySeconds must be between 10",
        ),
    ] {
        match try_render(&values) {
            RenderResult::Skip(why) => {
                eprintln!("SKIP helm_chart: {why}");
                return;
            }
            RenderResult::Ok(_) => panic!("{values} rendered"),
            RenderResult::Failed(e) => assert!(e.contains(needle), "{values}: {e}"),
        }
    }
}

/// `want` is contained in `got` (the server adds defaults, never changes what was sent).
fn assert_subset(want: &Value, got: &Value, at: &str) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                let child = g.get(k).unwrap_or(&Value::Null);
                assert_subset(v, child, &format!("{at}.{k}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{at}: {want} vs {got}");
            for (i, (a, b)) in w.iter().zip(g).enumerate() {
                assert_subset(a, b, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(want, got, "{at}"),
    }
}

#[test]
fn rendered_manifests_apply_to_standalone() {
    let Some(defaults) = render(&json!({})) else {
        return;
    };
    let Some(custom) = render(&custom_values()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(dir.path(), &["--hub-listen", "127.0.0.1:0"]).unwrap();

    // CRDs first (Helm installs crds/ before templates).
    for crd in &defaults.crds {
        s.apply(crd["data"].as_str().unwrap());
    }
    // A fresh install, then an upgrade to the custom values.
    for r in [&defaults, &custom] {
        let docs = r.docs();
        let stream: Vec<String> = docs
            .iter()
            .map(|d| serde_saphyr::to_string(d).unwrap())
            .collect();
        s.apply(&stream.join("\n---\n"));
        for d in &docs {
            let kind = d["kind"].as_str().unwrap();
            let name = d["metadata"]["name"].as_str().unwrap();
            let mut args = vec!["get", kind, name, "-o", "json"];
            let ns = d["metadata"]["namespace"].as_str();
            if let Some(ns) = ns {
                args.extend(["-n", ns]);
            }
            let got: Value = serde_json::from_str(&s.kubectl_ok(&args)).unwrap();
            for field in ["spec", "rules", "roleRef", "subjects", "data", "webhooks"] {
                if !d[field].is_null() {
                    assert_subset(&d[field], &got[field], &format!("{kind}/{name}.{field}"));
                }
            }
            assert_subset(&d["metadata"]["labels"], &got["metadata"]["labels"], name);
        }
    }
    // The upgrade took: read the key objects back.
    let dep: Value = serde_json::from_str(&s.kubectl_ok(&[
        "get",
        "deployment",
        "cloudcore",
        "-n",
        NS,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    let cr: Value =
        serde_json::from_str(&s.kubectl_ok(&["get", "clusterrole", "cloudcore", "-o", "json"]))
            .unwrap();
    assert_eq!(
        cr["rules"],
        find(&custom.docs(), "ClusterRole", "cloudcore")["rules"]
    );
    let svc = s.kubectl_ok(&[
        "get",
        "svc",
        "cloudcore",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.type}",
    ]);
    assert_eq!(svc, "LoadBalancer");
    s.kubectl_ok(&["get", "mutatingwebhookconfiguration", "cloudcore-autonomy"]);
}

/// Several replicas get a PodDisruptionBudget keeping one serving through drains (its
/// selector is the Deployment's, so it counts the replicas); one replica gets none, since a
/// PDB of one would block every drain; a negative count is refused.
#[test]
fn replicas_get_a_pod_disruption_budget() {
    let Some(one) = render(&json!({})) else {
        return;
    };
    assert_eq!(count(&one.docs(), "PodDisruptionBudget"), 0);

    let Some(three) = render(&json!({"replicas": 3})) else {
        return;
    };
    three.assert_lint_clean();
    let docs = three.docs();
    let dep = find(&docs, "Deployment", "cloudcore");
    assert_eq!(dep["spec"]["replicas"], 3);
    let pdb = find(&docs, "PodDisruptionBudget", "cloudcore");
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["metadata"]["namespace"], NS);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"]
    );
    let pod_labels = &dep["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &pod_labels[k], v,
            "the PDB selects the cloudcore pods ({k})"
        );
    }

    match try_render(&json!({"replicas": -1})) {
        RenderResult::Skip(why) => eprintln!("SKIP helm_chart: {why}"),
        RenderResult::Ok(_) => panic!("replicas -1 rendered"),
        RenderResult::Failed(e) => assert!(e.contains("replicas must be 0 or more"), "{e}"),
    }
}
