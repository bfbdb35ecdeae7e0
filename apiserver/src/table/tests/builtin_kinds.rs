//! Row tests for the built-in printers other than pods and nodes.

use super::{ago, cells, header_names, render};
use crate::table::Columns;
use serde_json::json;

fn b(group: &'static str, kind: &'static str) -> Columns<'static> {
    Columns::Builtin { group, kind }
}

fn meta(name: &str) -> serde_json::Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": ago(600)})
}

#[test]
fn core_kinds() {
    let ns = json!({"metadata": meta("kedge-system"), "status": {"phase": "Active"}});
    assert_eq!(
        cells(b("", "Namespace"), ns),
        [json!("kedge-system"), json!("Active"), json!("10m")]
    );

    let cm =
        json!({"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(
        cells(b("", "ConfigMap"), cm),
        [json!("cfg"), json!(3), json!("10m")]
    );

    let secret = json!({"metadata": meta("tok"), "type": "kubernetes.io/service-account-token", "data": {"token": "eA=="}});
    assert_eq!(
        cells(b("", "Secret"), secret),
        [
            json!("tok"),
            json!("kubernetes.io/service-account-token"),
            json!(1),
            json!("10m")
        ]
    );
    let opaque = json!({"metadata": meta("s"), "stringData": {"k": "v"}});
    assert_eq!(
        cells(b("", "Secret"), opaque)[1..3],
        [json!("Opaque"), json!(1)]
    );

    let sa = json!({"metadata": meta("default")});
    assert_eq!(
        cells(b("", "ServiceAccount"), sa),
        [json!("default"), json!(0), json!("10m")]
    );

    let lease = json!({"metadata": meta("edge-1"), "spec": {"holderIdentity": "edge-1", "renewTime": ago(3)}});
    assert_eq!(
        cells(b("coordination.k8s.io", "Lease"), lease),
        [json!("edge-1"), json!("edge-1"), json!("10m")]
    );
}

#[test]
fn services() {
    let svc = |spec: serde_json::Value, status: serde_json::Value| {
        cells(
            b("", "Service"),
            json!({"metadata": meta("web"), "spec": spec, "status": status}),
        )
    };
    assert_eq!(
        svc(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                   "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                   "selector": {"k8s-app": "kube-dns"}}),
            json!({})
        ),
        [
            json!("web"),
            json!("ClusterIP"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("53/UDP,53/TCP"),
            json!("10m"),
            json!("k8s-app=kube-dns")
        ]
    );
    let np = svc(
        json!({"type": "NodePort", "clusterIP": "None", "ports": [{"port": 80, "nodePort": 30080}]}),
        json!({}),
    );
    assert_eq!(
        np[1..5],
        [
            json!("NodePort"),
            json!("None"),
            json!("<none>"),
            json!("80:30080/TCP")
        ]
    );
    assert_eq!(np[6], "<none>");
    let lb = svc(json!({"type": "LoadBalancer", "ports": []}), json!({}));
    assert_eq!(
        lb[2..5],
        [json!("<none>"), json!("<pending>"), json!("<none>")]
    );
    let lb = svc(
        json!({"type": "LoadBalancer", "externalIPs": ["1.2.3.4"]}),
        json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}),
    );
    assert_eq!(lb[3], "5.6.7.8,lb.example.com,1.2.3.4");
    let ext = svc(
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        json!({}),
    );
    assert_eq!(ext[3], "db.example.com");
}

#[test]
fn endpoints_and_events() {
    let ep = json!({"metadata": meta("web"), "subsets": [{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}],
        "ports": [{"port": 8080}]
    }]});
    assert_eq!(
        cells(b("", "Endpoints"), ep)[1],
        "10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more..."
    );
    assert_eq!(
        cells(b("", "Endpoints"), json!({"metadata": meta("none")}))[1],
        "<none>"
    );

    let ev = json!({
        "metadata": meta("nginx.17c"), "type": "Warning", "reason": "BackOff",
        "involvedObject": {"kind": "Pod", "name": "nginx", "fieldPath": "spec.containers{nginx}"},
        "source": {"component": "kubelet", "host": "edge-1"},
        "message": "Back-off restarting failed container\n", "count": 4,
        "firstTimestamp": ago(300), "lastTimestamp": ago(20)
    });
    let t = render(b("", "Event"), &[ev]);
    assert_eq!(
        header_names(&t)
            .iter()
            .map(|(n, p)| format!("{n}:{p}"))
            .collect::<Vec<_>>(),
        [
            "Last Seen:0",
            "Type:0",
            "Reason:0",
            "Object:0",
            "Subobject:1",
            "Source:1",
            "Message:0",
            "First Seen:1",
            "Count:1",
            "Name:1"
        ]
    );
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            "20s",
            "Warning",
            "BackOff",
            "pod/nginx",
            "spec.containers{nginx}",
            "kubelet, edge-1",
            "Back-off restarting failed container",
            "5m",
            4,
            "nginx.17c"
        ])
    );

    let new_style = json!({
        "metadata": meta("n.1"), "type": "Normal", "reason": "Synced",
        "regarding": {"kind": "Device", "name": "thermo-1"}, "note": "twin synced",
        "eventTime": "2024-05-01T11:58:59.500000Z", "reportingController": "kedge/cloudcore",
        "reportingInstance": "cloudcore-0"
    });
    assert_eq!(
        cells(b("events.k8s.io", "Event"), new_style),
        [
            json!("60s"),
            json!("Normal"),
            json!("Synced"),
            json!("device/thermo-1"),
            json!(""),
            json!("kedge/cloudcore, cloudcore-0"),
            json!("twin synced"),
            json!("60s"),
            json!(1),
            json!("n.1")
        ]
    );
}

#[test]
fn workloads() {
    let template = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx"}, {"name": "log", "image": "busybox"}]}});
    let dep = json!({"metadata": meta("web"),
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
    assert_eq!(
        cells(b("apps", "Deployment"), dep),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(2),
            json!("10m"),
            json!("web,log"),
            json!("nginx,busybox"),
            json!("app=web")
        ]
    );
    let sts = json!({"metadata": meta("db"), "spec": {"template": template}, "status": {}});
    assert_eq!(cells(b("apps", "StatefulSet"), sts)[1], "0/1");
    let rs = json!({"metadata": meta("web-5d"), "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template},
        "status": {"replicas": 2, "readyReplicas": 1}});
    assert_eq!(
        cells(b("apps", "ReplicaSet"), rs)[1..4],
        [json!(2), json!(2), json!(1)]
    );
    let ds = json!({"metadata": meta("agent"),
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"spec": {"nodeSelector": {"kedge.io/edge": "true"}, "containers": []}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}});
    assert_eq!(
        cells(b("apps", "DaemonSet"), ds)[1..8],
        [
            json!(2),
            json!(2),
            json!(1),
            json!(2),
            json!(1),
            json!("kedge.io/edge=true"),
            json!("10m")
        ]
    );

    let job = json!({"metadata": meta("pi"), "spec": {"completions": 1, "template": template},
        "status": {"succeeded": 1, "startTime": ago(100), "completionTime": ago(40),
                   "conditions": [{"type": "Complete", "status": "True"}]}});
    assert_eq!(
        cells(b("batch", "Job"), job)[1..4],
        [json!("Complete"), json!("1/1"), json!("60s")]
    );
    let running = json!({"metadata": meta("pi"), "spec": {"parallelism": 3, "template": template},
        "status": {"startTime": ago(30)}});
    assert_eq!(
        cells(b("batch", "Job"), running)[1..4],
        [json!("Running"), json!("0/1 of 3"), json!("30s")]
    );

    let cj = json!({"metadata": meta("nightly"),
        "spec": {"schedule": "0 3 * * *", "suspend": false, "jobTemplate": {"spec": {"template": template}}},
        "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(7200)}});
    assert_eq!(
        cells(b("batch", "CronJob"), cj)[1..7],
        [
            json!("0 3 * * *"),
            json!("<none>"),
            json!("False"),
            json!(1),
            json!("120m"),
            json!("10m")
        ]
    );

    let pdb = json!({"metadata": meta("web"), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
    assert_eq!(
        cells(b("policy", "PodDisruptionBudget"), pdb),
        [
            json!("web"),
            json!("50%"),
            json!("N/A"),
            json!(1),
            json!("10m")
        ]
    );
}

#[test]
fn rbac_webhooks_networking_storage() {
    let rb = json!({"metadata": meta("edge-nodes"),
        "roleRef": {"kind": "ClusterRole", "name": "system:node"},
        "subjects": [{"kind": "Group", "name": "system:nodes"}, {"kind": "User", "name": "alice"},
                     {"kind": "ServiceAccount", "name": "cloudcore", "namespace": "kedge-system"}]});
    assert_eq!(
        cells(b("rbac.authorization.k8s.io", "ClusterRoleBinding"), rb),
        [
            json!("edge-nodes"),
            json!("ClusterRole/system:node"),
            json!("10m"),
            json!("alice"),
            json!("system:nodes"),
            json!("kedge-system/cloudcore")
        ]
    );
    let mwc = json!({"metadata": meta("kedge-tolerations"), "webhooks": [{"name": "a"}]});
    assert_eq!(
        cells(
            b(
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration"
            ),
            mwc
        ),
        [json!("kedge-tolerations"), json!(1), json!("10m")]
    );
    let ing = json!({"metadata": meta("web"), "spec": {"ingressClassName": "nginx",
        "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}], "tls": [{"hosts": ["a.example.com"]}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
    assert_eq!(
        cells(b("networking.k8s.io", "Ingress"), ing),
        [
            json!("web"),
            json!("nginx"),
            json!("a.example.com,b.example.com"),
            json!("192.0.2.1"),
            json!("80, 443"),
            json!("10m")
        ]
    );
    let np = json!({"metadata": meta("deny"), "spec": {"podSelector": {}}});
    assert_eq!(
        cells(b("networking.k8s.io", "NetworkPolicy"), np)[1],
        "<none>"
    );
    let pvc = json!({"metadata": meta("data"),
        "spec": {"volumeName": "pv-1", "storageClassName": "local", "accessModes": ["ReadWriteOnce"]},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}});
    assert_eq!(
        cells(b("", "PersistentVolumeClaim"), pvc),
        [
            json!("data"),
            json!("Bound"),
            json!("pv-1"),
            json!("1Gi"),
            json!("RWO,ROX"),
            json!("local"),
            json!("<unset>"),
            json!("10m"),
            json!("<unset>")
        ]
    );
}
