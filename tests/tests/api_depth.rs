//! The embedded API server's depth, end to end against the real `cloudcore standalone`:
//! ServiceAccount admission (a pod created by kubectl has the projected token volume),
//! TokenRequest tokens that authenticate with curl and stop when they expire or their pod
//! goes, server-side apply with two kubectl managers (conflict, force, managedFields),
//! consistent pagination through kube-rs while writes happen, and a third-party-shaped
//! manifest set that applies and reads back as written.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tests::{Standalone, curl};

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn start() -> (tempfile::TempDir, Standalone) {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("data"), &[]).unwrap();
    (dir, s)
}

fn json_of(s: &Standalone, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.kubectl_ok(&a)).unwrap()
}

/// `kubectl` that must fail; returns stderr.
fn kubectl_err(s: &Standalone, args: &[&str], stdin: Option<&str>) -> String {
    let out = s.kubectl_stdin(args, stdin);
    assert!(
        !out.status.success(),
        "kubectl {args:?} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// GET `path` with a bearer token (no client certificate): the HTTP code.
fn get_with_token(s: &Standalone, path: &str, token: &str) -> u16 {
    let ca = s.ca_file();
    let auth = format!("Authorization: Bearer {token}");
    let url = format!("{}{path}", s.url);
    curl(&["--cacert", ca.to_str().unwrap(), "-H", &auth, &url]).0
}

#[test]
fn a_pod_created_by_kubectl_has_the_projected_token_volume() {
    let (_d, s) = start();
    s.apply(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: depth}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: depth}
spec:
  initContainers:
  - {name: init, image: busybox:1.36}
  containers:
  - {name: main, image: busybox:1.36}
  - name: own
    image: busybox:1.36
    volumeMounts: [{name: mine, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}]
  volumes:
  - {name: mine, emptyDir: {}}
"#,
    );
    let pod = json_of(&s, &["get", "pod", "web", "-n", "depth"]);
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    let vols = spec["volumes"].as_array().unwrap();
    let vol = vols
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no kube-api-access volume: {spec}"));
    let name = vol["name"].as_str().unwrap();
    assert_eq!(name.len(), "kube-api-access-".len() + 5);
    assert_eq!(
        vol["projected"],
        json!({
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        })
    );
    let want = json!({"name": name, "readOnly": true, "mountPath": MOUNT});
    for c in ["/initContainers/0", "/containers/0"] {
        let mounts = spec.pointer(c).unwrap()["volumeMounts"].as_array().unwrap();
        assert!(mounts.contains(&want), "{c}: {mounts:?}");
    }
    // A container with its own mount there keeps it.
    assert_eq!(
        spec["containers"][1]["volumeMounts"],
        json!([{"name": "mine", "mountPath": MOUNT}])
    );
    // The namespace got its ServiceAccount and the CA bundle.
    s.kubectl_ok(&["get", "serviceaccount", "default", "-n", "depth"]);
    let cm = json_of(&s, &["get", "configmap", "kube-root-ca.crt", "-n", "depth"]);
    let ca = std::fs::read_to_string(s.ca_file()).unwrap();
    assert_eq!(cm["data"]["ca.crt"], ca.as_str());
    // A missing ServiceAccount is refused as Kubernetes does; automount can be off.
    let err = kubectl_err(
        &s,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: ghost, namespace: depth}\nspec: {serviceAccountName: ghost, containers: [{name: c, image: busybox}]}\n",
        ),
    );
    assert!(
        err.contains(
            "error looking up service account depth/ghost: serviceaccount \"ghost\" not found"
        ),
        "{err}"
    );
    s.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: quiet, namespace: depth}\nspec: {automountServiceAccountToken: false, containers: [{name: c, image: busybox}]}\n");
    let quiet = json_of(&s, &["get", "pod", "quiet", "-n", "depth"]);
    assert!(quiet["spec"].get("volumes").is_none(), "{quiet}");
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn b64url_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        _ => 63,
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, c)| n | u32::from(val(*c)) << (18 - 6 * i));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The claims of a JWT (unverified).
fn claims(token: &str) -> Value {
    serde_json::from_slice(&b64url_decode(token.split('.').nth(1).unwrap())).unwrap()
}

/// An ES256 JWT over `claims`, signed with the server's ServiceAccount key (the test plays
/// the token issuer to get an `exp` reachable within seconds).
fn mint(key_pem: &str, claims: &Value) -> String {
    use rcgen::SigningKey;
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    let input = format!(
        "{}.{}",
        b64url(br#"{"alg":"ES256"}"#),
        b64url(&serde_json::to_vec(claims).unwrap())
    );
    let der = key.sign(input.as_bytes()).unwrap();
    // DER SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each.
    let mut fixed = Vec::new();
    let mut i = 2;
    for _ in 0..2 {
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = &int[int.len().saturating_sub(32)..];
        fixed.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        fixed.extend_from_slice(int);
        i += 2 + len;
    }
    format!("{input}.{}", b64url(&fixed))
}

#[test]
fn token_request_tokens_authenticate_and_stop_when_expired_or_unbound() {
    let (_d, s) = start();
    let path = "/api/v1/namespaces/default/configmaps";
    let token = s
        .kubectl_ok(&["create", "token", "default"])
        .trim()
        .to_string();
    assert_eq!(get_with_token(&s, path, &token), 200);
    assert_eq!(get_with_token(&s, path, "not-a-token"), 401);
    let c = claims(&token);
    assert_eq!(c["sub"], "system:serviceaccount:default:default");
    assert_eq!(c["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        3600
    );
    let ten = s.kubectl_ok(&["create", "token", "default", "--duration=10m"]);
    let c = claims(ten.trim());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
    let err = kubectl_err(&s, &["create", "token", "default", "--duration=1m"], None);
    assert!(
        err.contains("may not specify a duration less than 10 minutes"),
        "{err}"
    );

    // Bound to a pod: good while the pod lives.
    s.kubectl_ok(&["run", "holder", "--image=busybox:1.36", "--restart=Never"]);
    let bound = s
        .kubectl_ok(&[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=holder",
        ])
        .trim()
        .to_string();
    assert_eq!(claims(&bound)["kubernetes.io"]["pod"]["name"], "holder");
    assert_eq!(get_with_token(&s, path, &bound), 200);
    s.kubectl_ok(&["delete", "pod", "holder", "--wait=true"]);
    assert_eq!(get_with_token(&s, path, &bound), 401, "pod deleted");

    // Expiry: a token of this server's key whose exp is two seconds away.
    let key = std::fs::read_to_string(s.data_dir.join("apiserver/pki/sa.key")).unwrap();
    let uid = s.kubectl_ok(&[
        "get",
        "serviceaccount",
        "default",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut c = claims(&token);
    c["iat"] = json!(now);
    c["nbf"] = json!(now);
    c["exp"] = json!(now + 2);
    c["kubernetes.io"]["serviceaccount"]["uid"] = json!(uid);
    let short = mint(&key, &c);
    assert_eq!(get_with_token(&s, path, &short), 200);
    std::thread::sleep(Duration::from_millis(2600));
    assert_eq!(get_with_token(&s, path, &short), 401, "expired");
    // A forged claim (another ServiceAccount) under the same signature fails.
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims(&token);
    forged["sub"] = json!("system:serviceaccount:kube-system:default");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64url(&serde_json::to_vec(&forged).unwrap()),
        parts[2]
    );
    assert_eq!(get_with_token(&s, path, &forged), 401);
}

const DEPLOY_A: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: nginx, image: "nginx:1.27"}
"#;

const DEPLOY_B: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
"#;

#[test]
fn server_side_apply_by_two_managers_conflicts_and_is_forced() {
    let (_d, s) = start();
    let out = s.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        Some(DEPLOY_A),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("serverside-applied"));
    // Re-applying is a no-op.
    s.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        Some(DEPLOY_A),
    );
    let err = kubectl_err(
        &s,
        &["apply", "--server-side", "--field-manager=b", "-f", "-"],
        Some(DEPLOY_B),
    );
    assert!(err.contains("conflict with \"a\": .spec.replicas"), "{err}");
    let out = s.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=b",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(DEPLOY_B),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replicas = s.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "3");
    // managedFields are shown on request, hidden otherwise.
    let yaml = s.kubectl_ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    for want in [
        "managedFields:",
        "manager: a",
        "manager: b",
        "operation: Apply",
        "f:replicas: {}",
    ] {
        assert!(yaml.contains(want), "{want} missing in\n{yaml}");
    }
    let plain = s.kubectl_ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(!plain.contains("managedFields"));
    let d = json_of(&s, &["get", "deploy", "web", "--show-managed-fields"]);
    let mf = d["metadata"]["managedFields"].as_array().unwrap();
    let fields = |m: &str| {
        mf.iter()
            .find(|e| e["manager"] == m && e["operation"] == "Apply")
            .map(|e| e["fieldsV1"].clone())
            .unwrap()
    };
    assert!(fields("a")["f:spec"].get("f:replicas").is_none(), "{d}");
    assert!(fields("a")["f:spec"]["f:template"].is_object());
    assert_eq!(fields("b"), json!({"f:spec": {"f:replicas": {}}}));
    // a re-applies its configuration: replicas now conflicts with b.
    let err = kubectl_err(
        &s,
        &["apply", "--server-side", "--field-manager=a", "-f", "-"],
        Some(DEPLOY_A),
    );
    assert!(err.contains("conflict with \"b\": .spec.replicas"), "{err}");
    // An edit through an ordinary patch is recorded as an Update.
    s.kubectl_ok(&["label", "deploy", "web", "tier=front"]);
    let d = json_of(&s, &["get", "deploy", "web", "--show-managed-fields"]);
    let label = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["operation"] == "Update")
        .unwrap()
        .clone();
    assert_eq!(label["manager"], "kubectl-label");
    assert!(label["fieldsV1"]["f:metadata"]["f:labels"]["f:tier"].is_object());
}

#[tokio::test]
async fn paging_1200_configmaps_sees_one_snapshot_while_writes_happen() {
    let (_dir, s) = start();
    s.kubectl_ok(&["create", "namespace", "paging"]);
    let cms: Api<ConfigMap> = Api::namespaced(s.client().await.unwrap(), "paging");
    let create = |name: String| {
        let cms = cms.clone();
        async move {
            let cm: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": "0"}}))
                    .unwrap();
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
    };
    let filled = futures::stream::iter((0..1200).map(|i| format!("cm-{i:04}")))
        .for_each_concurrent(32, create);
    tokio::time::timeout(Duration::from_secs(120), filled)
        .await
        .expect("creating 1200 configmaps within 120 s");

    let page = cms.list(&ListParams::default().limit(500)).await.unwrap();
    let snapshot: u64 = page
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(page.metadata.remaining_item_count, Some(701));
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut pages = 0;
    let mut page = page;
    loop {
        pages += 1;
        for c in &page.items {
            let name = c.metadata.name.clone().unwrap();
            let rv = c
                .metadata
                .resource_version
                .clone()
                .unwrap()
                .parse()
                .unwrap();
            assert!(seen.insert(name.clone(), rv).is_none(), "{name} seen twice");
        }
        let Some(token) = page.metadata.continue_.clone().filter(|t| !t.is_empty()) else {
            break;
        };
        // Writes between pages, before and after the cursor.
        for i in [pages * 10, 1000 + pages] {
            cms.delete(&format!("cm-{i:04}"), &DeleteParams::default())
                .await
                .unwrap();
        }
        let patch = Patch::Merge(json!({"data": {"v": "changed"}}));
        cms.patch(
            &format!("cm-{:04}", 700 + pages),
            &PatchParams::default(),
            &patch,
        )
        .await
        .unwrap();
        create(format!("cm-0500-new-{pages}")).await;
        create(format!("cm-9999-new-{pages}")).await;
        page = cms
            .list(&ListParams::default().limit(500).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(
            page.metadata.resource_version.as_deref(),
            Some(snapshot.to_string().as_str())
        );
    }
    assert_eq!(pages, 3);
    let mut want: Vec<String> = (0..1200).map(|i| format!("cm-{i:04}")).collect();
    want.push("kube-root-ca.crt".into());
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), want);
    assert!(seen.values().all(|rv| *rv <= snapshot));
    // kubectl's own chunking (limit=100 + continue) sees the current state: 1201 - 4 + 4.
    let out = s.kubectl_ok(&[
        "get",
        "cm",
        "-n",
        "paging",
        "--chunk-size=100",
        "-o",
        "name",
    ]);
    assert_eq!(out.lines().count(), 1201);
}

/// Every field of `want` is in `got` with the same value (lists item by item, same length).
fn contains(got: &Value, want: &Value, path: &str) -> Result<(), String> {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => {
            for (k, wv) in w {
                let gv = g.get(k).ok_or_else(|| format!("{path}.{k} missing"))?;
                contains(gv, wv, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(g), Value::Array(w)) if g.len() == w.len() => {
            for (i, (gv, wv)) in g.iter().zip(w).enumerate() {
                contains(gv, wv, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ if got == want => Ok(()),
        _ => Err(format!("{path}: got {got}, want {want}")),
    }
}

const CHART: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: gizmo-system, labels: {app.kubernetes.io/part-of: gizmo}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gizmos.acme.example.com}
spec:
  group: acme.example.com
  scope: Namespaced
  names: {plural: gizmos, singular: gizmo, kind: Gizmo, listKind: GizmoList, shortNames: [gz]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer, minimum: 1}
              tags: {type: array, items: {type: string}, x-kubernetes-list-type: set}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: gizmo-controller
  namespace: gizmo-system
  labels: {app.kubernetes.io/name: gizmo}
automountServiceAccountToken: true
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: gizmo-controller, labels: {app.kubernetes.io/name: gizmo}}
rules:
- apiGroups: [acme.example.com]
  resources: [gizmos, gizmos/status]
  verbs: [get, list, watch, update, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- nonResourceURLs: [/metrics]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: gizmo-controller}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: gizmo-controller}
subjects:
- {kind: ServiceAccount, name: gizmo-controller, namespace: gizmo-system}
---
apiVersion: v1
kind: Service
metadata: {name: gizmo-webhook, namespace: gizmo-system}
spec:
  selector: {app.kubernetes.io/name: gizmo}
  ports:
  - {name: https, port: 443, targetPort: 9443, protocol: TCP}
  - {name: metrics, port: 8080, targetPort: metrics}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: gizmo-controller
  namespace: gizmo-system
  labels: {app.kubernetes.io/name: gizmo}
  annotations: {deployment.kubernetes.io/revision: "1"}
spec:
  replicas: 2
  revisionHistoryLimit: 5
  selector: {matchLabels: {app.kubernetes.io/name: gizmo}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 25%, maxUnavailable: 0}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: gizmo}
      annotations: {kubectl.kubernetes.io/default-container: manager}
    spec:
      serviceAccountName: gizmo-controller
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: manager
        image: ghcr.io/acme/gizmo:v0.3.1
        args: [--leader-elect, --metrics-bind-address=:8080]
        ports:
        - {name: webhook, containerPort: 9443, protocol: TCP}
        - {name: metrics, containerPort: 8080}
        env:
        - name: POD_NAMESPACE
          valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
        resources:
          limits: {cpu: 500m, memory: 128Mi}
          requests: {cpu: 10m, memory: 64Mi}
        livenessProbe: {httpGet: {path: /healthz, port: 8081}, initialDelaySeconds: 15}
        volumeMounts: [{name: cert, mountPath: /tmp/k8s-webhook-server/serving-certs, readOnly: true}]
      volumes:
      - {name: cert, secret: {secretName: gizmo-webhook-cert, defaultMode: 420}}
      tolerations: [{key: node-role.kubernetes.io/edge, operator: Exists, effect: NoSchedule}]
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: gizmo-mutating, annotations: {cert-manager.io/inject-ca-from: gizmo-system/gizmo-cert}}
webhooks:
- name: mgizmo.acme.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  clientConfig:
    service: {name: gizmo-webhook, namespace: gizmo-system, path: /mutate-acme-example-com-v1alpha1-gizmo, port: 443}
  rules:
  - apiGroups: [acme.example.com]
    apiVersions: [v1alpha1]
    operations: [CREATE, UPDATE]
    resources: [gizmos]
    scope: Namespaced
  namespaceSelector:
    matchExpressions: [{key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system]}]
"#;

#[test]
fn a_third_party_manifest_set_applies_and_reads_back_as_written() {
    let (_d, s) = start();
    let out = s.apply(CHART);
    assert_eq!(out.lines().count(), 8, "{out}");
    let docs: Vec<Value> = CHART
        .split("\n---\n")
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect();
    let check_all = |what: &str| {
        for want in &docs {
            let kind = want["kind"].as_str().unwrap();
            let name = want["metadata"]["name"].as_str().unwrap();
            let mut args = vec!["get", kind, name];
            let ns = want["metadata"]["namespace"].as_str();
            if let Some(ns) = ns {
                args.extend(["-n", ns]);
            }
            let got = json_of(&s, &args);
            for (k, v) in want.as_object().unwrap() {
                if let Err(e) = contains(&got[k], v, k) {
                    panic!("{what}: {kind}/{name}: {e}\n{got:#}");
                }
            }
        }
    };
    check_all("client-side apply");
    // Applying again changes nothing; kubectl diff sees no difference.
    let again = s.apply(CHART);
    assert!(again.lines().all(|l| l.ends_with("unchanged")), "{again}");
    let diff = s.kubectl_stdin(&["diff", "-f", "-"], Some(CHART));
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    // The same set applied server-side (taking over from the client-side manager).
    let out = s.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=helm",
            "-f",
            "-",
        ],
        Some(CHART),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_all("server-side apply");
    // A custom resource of the new CRD applies server-side too.
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/gizmos.acme.example.com",
        "--timeout=20s",
    ]);
    let cr = "apiVersion: acme.example.com/v1alpha1\nkind: Gizmo\nmetadata: {name: g1, namespace: gizmo-system}\nspec: {size: 3, tags: [a, b]}\n";
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], Some(cr));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = json_of(
        &s,
        &[
            "get",
            "gz",
            "g1",
            "-n",
            "gizmo-system",
            "--show-managed-fields",
        ],
    );
    assert_eq!(g["spec"], json!({"size": 3, "tags": ["a", "b"]}));
    let fields = &g["metadata"]["managedFields"][0]["fieldsV1"];
    assert_eq!(
        fields["f:spec"]["f:tags"],
        json!({"v:\"a\"": {}, "v:\"b\"": {}})
    );
}
