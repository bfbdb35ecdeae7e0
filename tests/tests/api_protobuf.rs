//! Protobuf answers (`Accept: application/vnd.kubernetes.protobuf, application/json`, as
//! client-go's typed clients send it), read with `k8s-pb` — prost messages generated from
//! Kubernetes' own `generated.proto` — and compared with the JSON answers of the same
//! objects, written by kube-rs and kubectl-style defaulting on the server.

#![allow(clippy::unwrap_used)]

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use prost::Message;
use serde_json::json;
use tests::Standalone;

const PROTOBUF_FIRST: &str = "application/vnd.kubernetes.protobuf, application/json";

/// GET `path` with `accept`: status, content type and body.
async fn get(client: &kube::Client, path: &str, accept: &str) -> (u16, String, Vec<u8>) {
    let req = http::Request::get(path)
        .header(http::header::ACCEPT, accept)
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = client.send(req).await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, ct, body)
}

/// The `runtime.Unknown` of an enveloped protobuf body.
fn unwrap_envelope(body: &[u8]) -> Unknown {
    assert_eq!(&body[..4], b"k8s\0", "the protobuf envelope's magic");
    Unknown::decode(&body[4..]).unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}, "annotations": {"a": "b"}},
        "spec": {
            "nodeName": "edge-a",
            "containers": [{
                "name": "app", "image": "registry.example.com/web:1.2",
                "env": [{"name": "A", "value": "1"}],
                "ports": [{"name": "http", "containerPort": 8080}],
                "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}}
            }],
            "volumes": [{"name": "scratch", "emptyDir": {}}]
        }
    }))
    .unwrap()
}

/// What both encodings must agree on, per pod.
fn check_same(json: &Pod, p: &pb::Pod) {
    let (jm, pm) = (&json.metadata, p.metadata.as_ref().unwrap());
    assert_eq!(jm.name.as_deref(), Some(pm.name()));
    assert_eq!(jm.uid.as_deref(), Some(pm.uid()));
    assert_eq!(jm.resource_version.as_deref(), Some(pm.resource_version()));
    assert_eq!(
        jm.creation_timestamp.as_ref().unwrap().0.as_second(),
        pm.creation_timestamp.as_ref().unwrap().seconds()
    );
    assert_eq!(jm.labels.as_ref().unwrap()["app"], pm.labels["app"]);
    let (jmf, pmf) = (jm.managed_fields.as_ref().unwrap(), &pm.managed_fields);
    assert_eq!(jmf.len(), pmf.len(), "managedFields");
    for (j, p) in jmf.iter().zip(pmf) {
        assert_eq!(j.manager.as_deref(), Some(p.manager()));
        let raw: serde_json::Value =
            serde_json::from_slice(p.fields_v1.as_ref().unwrap().raw()).unwrap();
        assert_eq!(
            serde_json::to_value(j.fields_v1.as_ref().unwrap()).unwrap(),
            raw
        );
    }
    let (js, ps) = (json.spec.as_ref().unwrap(), p.spec.as_ref().unwrap());
    assert_eq!(js.node_name.as_deref(), Some(ps.node_name()));
    assert_eq!(js.containers.len(), ps.containers.len());
    assert_eq!(
        js.containers[0].image.as_deref(),
        Some(ps.containers[0].image())
    );
    assert_eq!(
        js.containers[0].termination_message_path.as_deref(),
        Some(ps.containers[0].termination_message_path()),
        "server defaults are in both"
    );
    assert_eq!(js.volumes.as_ref().unwrap().len(), ps.volumes.len());
    let (jst, pst) = (json.status.as_ref().unwrap(), p.status.as_ref().unwrap());
    assert_eq!(jst.phase.as_deref(), Some(pst.phase()));
    assert_eq!(
        jst.conditions.as_ref().map_or(0, Vec::len),
        pst.conditions.len()
    );
}

#[tokio::test]
async fn lists_and_gets_in_protobuf_match_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("d"), &[]).unwrap();
    let client = s.client().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for i in 0..5 {
        pods.create(&PostParams::default(), &pod(&format!("p{i}")))
            .await
            .unwrap();
    }
    pods.patch_status(
        "p1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "podIP": "10.244.0.7",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 3, "image": "x", "imageID": "",
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}})),
    )
    .await
    .unwrap();

    let path = "/api/v1/namespaces/default/pods";
    let (code, ct, body) = get(&client, path, PROTOBUF_FIRST).await;
    assert_eq!(
        (code, ct.as_str()),
        (200, "application/vnd.kubernetes.protobuf")
    );
    let env = unwrap_envelope(&body);
    let tm = env.type_meta.clone().unwrap();
    assert_eq!((tm.api_version(), tm.kind()), ("v1", "PodList"));
    let list = pb::PodList::decode(env.raw()).unwrap();
    let json_list = pods.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.metadata.as_ref().unwrap().resource_version(),
        json_list.metadata.resource_version.as_deref().unwrap()
    );
    assert_eq!(list.items.len(), 5);
    for (j, p) in json_list.items.iter().zip(&list.items) {
        check_same(j, p);
    }
    let p1 = &list.items[1];
    let cs = &p1.status.as_ref().unwrap().container_statuses[0];
    assert_eq!(cs.restart_count(), 3);
    assert!(cs.state.as_ref().unwrap().running.is_some());

    // Paged: the continue token and remaining count are carried.
    let (_, _, body) = get(&client, &format!("{path}?limit=2"), PROTOBUF_FIRST).await;
    let page = pb::PodList::decode(unwrap_envelope(&body).raw()).unwrap();
    let meta = page.metadata.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(meta.remaining_item_count(), 3);
    let (_, _, body) = get(
        &client,
        &format!("{path}?limit=10&continue={}", meta.r#continue()),
        PROTOBUF_FIRST,
    )
    .await;
    let rest = pb::PodList::decode(unwrap_envelope(&body).raw()).unwrap();
    assert_eq!(rest.items.len(), 3);

    // One object, and its status subresource.
    for p in [format!("{path}/p1"), format!("{path}/p1/status")] {
        let (code, ct, body) = get(&client, &p, PROTOBUF_FIRST).await;
        assert_eq!(
            (code, ct.as_str()),
            (200, "application/vnd.kubernetes.protobuf")
        );
        let env = unwrap_envelope(&body);
        assert_eq!(env.type_meta.clone().unwrap().kind(), "Pod");
        check_same(
            &pods.get("p1").await.unwrap(),
            &pb::Pod::decode(env.raw()).unwrap(),
        );
    }

    // Only protobuf accepted: still served for built-in kinds.
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "c"}, "data": {"k": "v"}, "binaryData": {"b": "AAEC"}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let (code, _, body) = get(
        &client,
        "/api/v1/namespaces/default/configmaps/c",
        "application/vnd.kubernetes.protobuf",
    )
    .await;
    assert_eq!(code, 200);
    let c = pb::ConfigMap::decode(unwrap_envelope(&body).raw()).unwrap();
    assert_eq!(c.data["k"], "v");
    assert_eq!(c.binary_data["b"], [0, 1, 2]);

    // JSON first, or Tables (kubectl get): JSON as before.
    let (_, ct, body) = get(
        &client,
        path,
        "application/json, application/vnd.kubernetes.protobuf",
    )
    .await;
    assert_eq!(ct, "application/json");
    assert!(body.starts_with(b"{"));
    let table = "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let (_, ct, body) = get(&client, path, table).await;
    assert_eq!(ct, "application/json");
    let t: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(t["kind"], "Table");

    // Watches, and kinds without a message (CRDs): 406 for protobuf only, JSON otherwise.
    let (code, _, _) = get(
        &client,
        &format!("{path}?watch=1"),
        "application/vnd.kubernetes.protobuf",
    )
    .await;
    assert_eq!(code, 406);
    let crd = "/apis/devices.kubeedge.io/v1beta1/namespaces/default/devices";
    let (code, _, _) = get(&client, crd, "application/vnd.kubernetes.protobuf").await;
    assert_eq!(code, 406);
    let (code, ct, _) = get(&client, crd, PROTOBUF_FIRST).await;
    assert_eq!((code, ct.as_str()), (200, "application/json"));
}

#[tokio::test]
async fn a_pod_with_a_field_the_protobuf_message_lacks_is_answered_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("d"), &[]).unwrap();
    let client = s.client().await.unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.create(&PostParams::default(), &pod("plain"))
        .await
        .unwrap();
    // `schedulingGroup` is newer than the generated.proto our tables come from.
    let mut newer = pod("newer");
    newer.spec.as_mut().unwrap().scheduling_group =
        Some(serde_json::from_value(json!({"podGroupName": "g1"})).unwrap());
    pods.create(&PostParams::default(), &newer).await.unwrap();

    let path = "/api/v1/namespaces/default/pods";
    let (code, ct, body) = get(&client, path, PROTOBUF_FIRST).await;
    assert_eq!(
        (code, ct.as_str()),
        (200, "application/json"),
        "the whole list falls back"
    );
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "newer");
    assert_eq!(
        list["items"][0]["spec"]["schedulingGroup"]["podGroupName"],
        "g1"
    );
    let (code, ct, _) = get(&client, &format!("{path}/plain"), PROTOBUF_FIRST).await;
    assert_eq!(
        (code, ct.as_str()),
        (200, "application/vnd.kubernetes.protobuf")
    );
    let (code, _, body) = get(
        &client,
        &format!("{path}/newer"),
        "application/vnd.kubernetes.protobuf",
    )
    .await;
    assert_eq!(code, 406, "{}", String::from_utf8_lossy(&body));
    // A label selector that leaves out the newer pod: protobuf again.
    pods.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"gen": "old"}}})),
    )
    .await
    .unwrap();
    let (_, ct, body) = get(
        &client,
        &format!("{path}?labelSelector=gen%3Dold"),
        PROTOBUF_FIRST,
    )
    .await;
    assert_eq!(ct, "application/vnd.kubernetes.protobuf");
    let list = pb::PodList::decode(unwrap_envelope(&body).raw()).unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(
        list.items[0].metadata.as_ref().unwrap().labels["gen"],
        "old"
    );
}

#[tokio::test]
async fn deployments_in_protobuf_match_json() {
    use k8s_openapi::api::apps::v1::Deployment;
    let dir = tempfile::tempdir().unwrap();
    let s = Standalone::start(&dir.path().join("d"), &[]).unwrap();
    let client = s.client().await.unwrap();
    let deploys: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let json = deploys.get("web").await.unwrap();

    let path = "/apis/apps/v1/namespaces/default/deployments";
    let (code, ct, body) = get(&client, path, PROTOBUF_FIRST).await;
    assert_eq!(
        (code, ct.as_str()),
        (200, "application/vnd.kubernetes.protobuf")
    );
    let env = unwrap_envelope(&body);
    assert_eq!(env.type_meta.clone().unwrap().kind(), "DeploymentList");
    let list = k8s_pb::api::apps::v1::DeploymentList::decode(env.raw()).unwrap();
    assert_eq!(list.items.len(), 1);
    let p = &list.items[0];
    let meta = p.metadata.as_ref().unwrap();
    assert_eq!(Some(meta.uid()), json.metadata.uid.as_deref());
    assert_eq!(
        meta.managed_fields.len(),
        json.metadata.managed_fields.as_ref().unwrap().len()
    );
    let (jspec, pspec) = (&json.spec, p.spec.as_ref().unwrap());
    assert_eq!(jspec.replicas, Some(pspec.replicas()));
    let ru = pspec
        .strategy
        .as_ref()
        .unwrap()
        .rolling_update
        .as_ref()
        .unwrap();
    assert_eq!(ru.max_surge.as_ref().unwrap().str_val(), "50%");
    assert_eq!(ru.max_unavailable.as_ref().unwrap().int_val(), 0);
    let pod = pspec.template.as_ref().unwrap().spec.as_ref().unwrap();
    assert_eq!(pod.containers[0].image(), "nginx:1.27");
    assert_eq!(
        jspec.template.spec.as_ref().unwrap().containers[0]
            .termination_message_policy
            .as_deref(),
        pod.containers[0].termination_message_policy.as_deref(),
        "set (or not) alike"
    );
}
