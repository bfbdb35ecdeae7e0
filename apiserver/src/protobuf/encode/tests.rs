//! Encoding objects as protobuf, read back by our decoder (round trip) and by prost with
//! `k8s-pb`'s messages (generated from Kubernetes' own `generated.proto`): an independent
//! reader of the wire format.
use super::*;
use k8s_pb::api::core::v1 as core;
use prost::Message;
use serde_json::json;

/// A pod as this server stores one: defaulted, with managedFields, the projected token
/// volume, probes and a kubelet's status.
fn stored_pod() -> Value {
    let t = "2026-01-01T10:20:30Z";
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-000001", "namespace": "bench", "uid": "6f0c6a3e-52b1-4b8e-9d1a-0c2f4d5e6a7b",
            "resourceVersion": "1234", "generation": 1, "creationTimestamp": t,
            "labels": {"app": "web", "shard": "1"},
            "annotations": {"prometheus.io/scrape": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f",
                                 "uid": "u-rs", "controller": true, "blockOwnerDeletion": true}],
            "finalizers": ["kedge.io/x"],
            "managedFields": [
                {"manager": "kedge-bench", "operation": "Update", "apiVersion": "v1", "time": t,
                 "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                              "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}}},
                {"manager": "edgecore", "operation": "Update", "apiVersion": "v1", "time": t,
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:phase": {}}}, "subresource": "status"}
            ]
        },
        "spec": {
            "volumes": [
                {"name": "kube-api-access-x1", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
                ]}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "web-cfg", "optional": false}}
            ],
            "containers": [{
                "name": "app", "image": "registry.example.com/web:1.27.3",
                "command": ["/web"], "args": ["--port", "8080"],
                "env": [{"name": "A", "value": "1"},
                        {"name": "NODE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "spec.nodeName"}}}],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
                "volumeMounts": [{"name": "kube-api-access-x1", "readOnly": true,
                                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"},
                                  "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
                "readinessProbe": {"tcpSocket": {"port": "http"}, "initialDelaySeconds": 0},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
                "securityContext": {"runAsUser": -1, "allowPrivilegeEscalation": false}
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "nodeName": "node-001",
            "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 300}],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": t}],
            "hostIP": "10.0.0.2", "hostIPs": [{"ip": "10.0.0.2"}],
            "podIP": "10.244.0.3", "podIPs": [{"ip": "10.244.0.3"}], "startTime": t,
            "containerStatuses": [{"name": "app", "state": {"running": {"startedAt": t}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "startedAt": t, "finishedAt": t}},
                "ready": true, "restartCount": 2, "image": "registry.example.com/web:1.27.3",
                "imageID": "sha256:abc", "containerID": "containerd://c1", "started": true}],
            "qosClass": "Burstable"
        }
    })
}

/// `value` without its `apiVersion`/`kind` and `null` fields: what a decoder gives back.
fn without_type_meta_and_nulls(value: &Value) -> Value {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(strip).collect()),
            v => v.clone(),
        }
    }
    let mut v = strip(value);
    let m = v.as_object_mut().unwrap();
    m.remove("apiVersion");
    m.remove("kind");
    v
}

#[test]
fn a_stored_pod_round_trips() {
    let pod = stored_pod();
    let kind = kind_of("v1", "Pod").unwrap();
    assert_eq!((kind.api_version, kind.kind), ("v1", "Pod"));
    let bytes = kind.encode(&pod).unwrap();
    let back = super::super::decode_msg(&bytes, kind.fields).unwrap();
    assert_eq!(Value::Object(back), without_type_meta_and_nulls(&pod));
}

#[test]
fn k8s_pb_reads_the_pod_and_its_envelope() {
    let pod = stored_pod();
    let kind = kind_of("v1", "Pod").unwrap();
    let raw = kind.encode(&pod).unwrap();
    let mut body = envelope_head("v1", "Pod", raw.len());
    body.extend_from_slice(&raw);

    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..]).unwrap();
    assert_eq!(&body[..4], b"k8s\0");
    let tm = unknown.type_meta.clone().unwrap();
    assert_eq!((tm.api_version(), tm.kind()), ("v1", "Pod"));
    let p = core::Pod::decode(unknown.raw()).unwrap();

    let meta = p.metadata.unwrap();
    assert_eq!(meta.name(), "web-000001");
    assert_eq!(meta.uid(), "6f0c6a3e-52b1-4b8e-9d1a-0c2f4d5e6a7b");
    assert_eq!(meta.generation(), 1);
    assert_eq!(
        meta.creation_timestamp.unwrap().seconds(),
        chrono::DateTime::parse_from_rfc3339("2026-01-01T10:20:30Z")
            .unwrap()
            .timestamp()
    );
    assert_eq!(meta.labels["shard"], "1");
    assert!(meta.owner_references[0].controller());
    let mf = &meta.managed_fields;
    assert_eq!(mf.len(), 2);
    assert_eq!(mf[1].subresource(), "status");
    let fields: Value = serde_json::from_slice(mf[0].fields_v1.as_ref().unwrap().raw()).unwrap();
    assert_eq!(fields, pod["metadata"]["managedFields"][0]["fieldsV1"]);

    let spec = p.spec.unwrap();
    let c = &spec.containers[0];
    assert_eq!(c.image(), "registry.example.com/web:1.27.3");
    assert_eq!(c.args, ["--port", "8080"]);
    assert_eq!(c.ports[0].container_port(), 8080);
    let res = c.resources.as_ref().unwrap();
    assert_eq!(res.limits["memory"].string(), "512Mi");
    assert_eq!(res.requests["cpu"].string(), "250m");
    let env = &c.env[1].value_from.as_ref().unwrap().field_ref;
    assert_eq!(env.as_ref().unwrap().field_path(), "spec.nodeName");
    let live = c.liveness_probe.as_ref().unwrap();
    let http = live.handler.as_ref().unwrap().http_get.as_ref().unwrap();
    assert_eq!(http.port.as_ref().unwrap().int_val(), 8080);
    assert_eq!(live.failure_threshold(), 3);
    let ready = c.readiness_probe.as_ref().unwrap();
    let tcp = ready.handler.as_ref().unwrap().tcp_socket.as_ref().unwrap();
    assert_eq!(tcp.port.as_ref().unwrap().str_val(), "http");
    assert_eq!(c.security_context.as_ref().unwrap().run_as_user(), -1);
    assert!(
        !c.security_context
            .as_ref()
            .unwrap()
            .allow_privilege_escalation()
    );

    let projected = spec.volumes[0]
        .volume_source
        .as_ref()
        .unwrap()
        .projected
        .as_ref()
        .unwrap();
    assert_eq!(projected.default_mode(), 420);
    let token = projected.sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(token.expiration_seconds(), 3607);
    let cm = projected.sources[1].config_map.as_ref().unwrap();
    assert_eq!(
        cm.local_object_reference.as_ref().unwrap().name(),
        "kube-root-ca.crt"
    );
    let src = spec.volumes[1].volume_source.as_ref().unwrap();
    assert!(src.empty_dir.is_some(), "emptyDir: {{}} is kept");
    assert!(spec.security_context.is_some());
    assert_eq!(spec.tolerations[0].toleration_seconds(), 300);
    assert_eq!(spec.priority(), 0);
    assert_eq!(spec.node_name(), "node-001");

    let status = p.status.unwrap();
    assert_eq!(status.phase(), "Running");
    assert_eq!(status.conditions[0].r#type(), "Ready");
    assert!(
        status.conditions[0].last_probe_time.is_none(),
        "null is unset"
    );
    assert_eq!(status.pod_ips[0].ip(), "10.244.0.3");
    let cs = &status.container_statuses[0];
    assert_eq!(cs.restart_count(), 2);
    assert!(cs.state.as_ref().unwrap().running.is_some());
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code(), last.reason()), (137, "OOMKilled"));
}

#[test]
fn k8s_pb_reads_a_list() {
    let kind = kind_of("v1", "Pod").unwrap();
    let mut a = stored_pod();
    a["metadata"]["name"] = json!("a");
    let b = json!({"metadata": {"name": "b", "namespace": "bench"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let items = [kind.encode(&a).unwrap(), kind.encode(&b).unwrap()];
    let mut raw = list_meta("77", Some("tok"), Some(5));
    for i in &items {
        raw.extend(item_head(i.len()));
        raw.extend_from_slice(i);
    }
    let mut body = envelope_head("v1", "PodList", raw.len());
    body.extend(raw);

    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..]).unwrap();
    assert_eq!(unknown.type_meta.clone().unwrap().kind(), "PodList");
    let list = core::PodList::decode(unknown.raw()).unwrap();
    let meta = list.metadata.unwrap();
    assert_eq!(meta.resource_version(), "77");
    assert_eq!(meta.r#continue(), "tok");
    assert_eq!(meta.remaining_item_count(), 5);
    let names: Vec<_> = list
        .items
        .iter()
        .map(|p| p.metadata.as_ref().unwrap().name())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn other_kinds_round_trip_and_k8s_pb_reads_them() {
    let t = "2026-02-03T04:05:06.123456Z";
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "node-1", "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40, "renewTime": t}});
    let k = kind_of("coordination.k8s.io/v1", "Lease").unwrap();
    let raw = k.encode(&lease).unwrap();
    let back = super::super::decode_msg(&raw, k.fields).unwrap();
    assert_eq!(Value::Object(back), without_type_meta_and_nulls(&lease));
    let l = k8s_pb::api::coordination::v1::Lease::decode(raw.as_slice()).unwrap();
    let renew = l.spec.unwrap().renew_time.unwrap();
    assert_eq!(renew.nanos(), 123_456_000, "MicroTime keeps microseconds");

    let secret =
        json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"p": "aHVudGVyMg=="}});
    let k = kind_of("v1", "Secret").unwrap();
    let s = core::Secret::decode(k.encode(&secret).unwrap().as_slice()).unwrap();
    assert_eq!(s.data["p"], b"hunter2");

    let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/edge": ""}},
        "spec": {"podCIDR": "10.244.1.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]},
        "status": {"capacity": {"cpu": "2", "memory": "24Gi", "pods": 110},
                   "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-01T00:00:00Z"}],
                   "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "nodeInfo": {"kubeletVersion": "v1.31.0-kedge", "architecture": "amd64"}}});
    let k = kind_of("v1", "Node").unwrap();
    let n = core::Node::decode(k.encode(&node).unwrap().as_slice()).unwrap();
    let status = n.status.unwrap();
    assert_eq!(
        status.capacity["pods"].string(),
        "110",
        "a numeric quantity"
    );
    assert_eq!(status.node_info.unwrap().kubelet_version(), "v1.31.0-kedge");
    assert_eq!(
        n.metadata.unwrap().labels["node-role.kubernetes.io/edge"],
        ""
    );
}

#[test]
fn objects_with_fields_the_tables_lack_are_not_encoded() {
    let kind = kind_of("v1", "Pod").unwrap();
    let mut pod = stored_pod();
    pod["spec"]["containers"][0]["futureField"] = json!(true);
    let e = kind.encode(&pod).unwrap_err();
    assert!(e.0.contains("futureField"), "{e:?}");

    let mut pod = stored_pod();
    pod["spec"]["futureInline"] = json!({"a": 1});
    assert!(kind.encode(&pod).unwrap_err().0.contains("futureInline"));

    let mut pod = stored_pod();
    pod["status"]["futureTop"] = json!("x");
    assert!(kind.encode(&pod).is_err());

    for wrong in [
        json!({"spec": {"containers": {"name": "c"}}}),
        json!({"spec": {"priority": "high"}}),
        json!({"metadata": {"creationTimestamp": "yesterday"}}),
        json!({"metadata": {"labels": {"a": 1}}}),
        json!({"spec": {"volumes": [{"name": "v", "hostPath": "/x"}]}}),
        json!("a string"),
    ] {
        assert!(kind.encode(&wrong).is_err(), "{wrong}");
    }
    assert!(kind_of("v1", "ComponentStatus").is_none());
    assert!(kind_of("rbac.authorization.k8s.io/v1", "Role").is_none());
    assert!(kind_of("devices.kubeedge.io/v1beta1", "Device").is_none());
}

#[test]
fn workloads_and_endpoint_slices_round_trip_and_k8s_pb_reads_them() {
    let template = json!({"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
                                 "ports": [{"containerPort": 80}]}]}});
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "d", "generation": 3},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template,
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                 "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        "status": {"observedGeneration": 3, "replicas": 3, "readyReplicas": 2,
                   "conditions": [{"type": "Available", "status": "True",
                                   "lastUpdateTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let k = kind_of("apps/v1", "Deployment").unwrap();
    assert_eq!((k.api_version, k.kind), ("apps/v1", "Deployment"));
    let raw = k.encode(&deploy).unwrap();
    let back = super::super::decode_msg(&raw, k.fields).unwrap();
    assert_eq!(Value::Object(back), without_type_meta_and_nulls(&deploy));
    let d = k8s_pb::api::apps::v1::Deployment::decode(raw.as_slice()).unwrap();
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas(), 3);
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(ru.max_surge.unwrap().str_val(), "25%");
    assert_eq!(ru.max_unavailable.unwrap().int_val(), 1);
    let pod = spec.template.unwrap().spec.unwrap();
    assert_eq!(pod.containers[0].image(), "nginx:1.27");
    assert_eq!(d.status.unwrap().ready_replicas(), 2);

    let cron = json!({"metadata": {"name": "nightly"},
        "spec": {"schedule": "0 3 * * *", "timeZone": "Etc/UTC", "concurrencyPolicy": "Forbid",
                 "jobTemplate": {"spec": {"backoffLimit": 2, "template": template,
                     "podFailurePolicy": {"rules": [{"action": "FailJob",
                         "onExitCodes": {"operator": "In", "values": [1, 42]}}]}}}}});
    let k = kind_of("batch/v1", "CronJob").unwrap();
    let c = k8s_pb::api::batch::v1::CronJob::decode(k.encode(&cron).unwrap().as_slice()).unwrap();
    let job = c.spec.unwrap().job_template.unwrap().spec.unwrap();
    assert_eq!(job.backoff_limit(), 2);
    let rule = &job.pod_failure_policy.unwrap().rules[0];
    assert_eq!(rule.on_exit_codes.as_ref().unwrap().values, [1, 42]);

    let slice = json!({"metadata": {"name": "web-abc", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.3"], "conditions": {"ready": true}, "nodeName": "edge-a"}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    let k = kind_of("discovery.k8s.io/v1", "EndpointSlice").unwrap();
    let raw = k.encode(&slice).unwrap();
    let back = super::super::decode_msg(&raw, k.fields).unwrap();
    assert_eq!(Value::Object(back), without_type_meta_and_nulls(&slice));
    let s = k8s_pb::api::discovery::v1::EndpointSlice::decode(raw.as_slice()).unwrap();
    assert_eq!(s.endpoints[0].addresses, ["10.244.0.3"]);
    assert!(s.endpoints[0].conditions.as_ref().unwrap().ready());
    assert_eq!(s.ports[0].port(), 80);
}
