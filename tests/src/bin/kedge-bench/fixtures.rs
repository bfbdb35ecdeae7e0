//! The objects the benchmark stores: realistic pods (about 2.4 KB of JSON once the server
//! has defaulted them and their status is set) and small ConfigMaps.

use bytes::Bytes;
use serde_json::{Value, json};

/// The name of pod `i`.
pub fn pod_name(i: usize) -> String {
    format!("web-{i:06}")
}

/// The name of ConfigMap `i` under `prefix`.
pub fn cm_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:06}")
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// A small ConfigMap (about 250 bytes stored).
pub fn configmap(name: &str) -> Bytes {
    to_bytes(&json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "bench", "role": "durability"}},
        "data": {"config.yaml": "log-level: info\nreplicas: 3\n", "owner": "kedge-bench"}
    }))
}

/// Pod `i`: two containers with env, ports and resources, bound to one of 50 nodes.
pub fn pod(i: usize) -> Bytes {
    let name = pod_name(i);
    to_bytes(&json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {
                "app": "web", "tier": "frontend", "release": "bench",
                "pod-template-hash": "7d9f8c6b5d", "shard": (i % 16).to_string()
            },
            "annotations": {
                "kubectl.kubernetes.io/default-container": "app",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "9090"
            }
        },
        "spec": {
            "nodeName": format!("node-{:03}", i % 50),
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/team/web-frontend:1.27.3",
                    "env": [
                        {"name": "POD_NAME", "value": name},
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "UPSTREAM_URL", "value": "http://api.bench.svc.cluster.local:8080"},
                        {"name": "CACHE_SIZE_MB", "value": "256"}
                    ],
                    "ports": [
                        {"name": "http", "containerPort": 8080},
                        {"name": "metrics", "containerPort": 9090}
                    ],
                    "resources": {
                        "requests": {"cpu": "250m", "memory": "256Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"}
                    }
                },
                {
                    "name": "sidecar",
                    "image": "registry.example.com/infra/log-shipper:3.4.1",
                    "env": [
                        {"name": "SHIP_TO", "value": "logs.example.com:5044"},
                        {"name": "BUFFER", "value": "64k"}
                    ],
                    "ports": [{"name": "admin", "containerPort": 9901}],
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "200m", "memory": "128Mi"}
                    }
                }
            ]
        }
    }))
}

/// The status a kubelet would report for pod `i` (a merge patch of `/status`): phase,
/// conditions and addresses. Container statuses are left out to keep the pod near the
/// 2 KB the targets assume (with two of them a pod is about 3 KB).
pub fn pod_status(i: usize) -> Bytes {
    let t = "2026-01-01T00:00:00Z";
    let cond = |ty: &str| json!({"type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    let ip = format!("10.244.{}.{}", i / 250 % 250, i % 250 + 2);
    to_bytes(&json!({
        "status": {
            "phase": "Running",
            "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
            "hostIP": format!("10.0.0.{}", i % 50 + 1),
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": t
        }
    }))
}
