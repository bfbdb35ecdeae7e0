//! Tests for the table module: realistic objects through [`table_with`] with
//! exact cells, CRD printer columns, envelopes, watch tables and Accept
//! negotiation.

use super::*;
use serde_json::json;

const NOW: &str = "2024-05-01T12:00:00Z";

fn now() -> DateTime<Utc> {
    parse_time(NOW).unwrap()
}

/// `NOW` minus `secs`, as an RFC 3339 timestamp.
fn ago(secs: i64) -> String {
    (now() - chrono::TimeDelta::seconds(secs)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn opts(include: IncludeObject) -> TableOptions<'static> {
    TableOptions {
        now: now(),
        ..TableOptions::new(include, "42")
    }
}

fn render(columns: Columns<'_>, objects: &[Value]) -> Value {
    table_with(columns, objects, &opts(IncludeObject::Metadata))
}

fn cells(columns: Columns<'_>, obj: Value) -> Vec<Value> {
    let t = render(columns, &[obj]);
    t["rows"][0]["cells"].as_array().unwrap().clone()
}

fn header_names(t: &Value) -> Vec<(String, i64)> {
    t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

const POD: Columns<'static> = Columns::Builtin {
    group: "",
    kind: "Pod",
};
const NODE: Columns<'static> = Columns::Builtin {
    group: "",
    kind: "Node",
};

fn running_container(name: &str, restarts: i64) -> Value {
    json!({
        "name": name, "ready": true, "restartCount": restarts, "started": true,
        "image": "nginx:1.27", "imageID": "", "containerID": "containerd://abc",
        "state": {"running": {"startedAt": ago(250)}}
    })
}

fn pod(statuses: Value, extra_status: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "nginx", "namespace": "default", "uid": "u-1",
            "resourceVersion": "17", "creationTimestamp": ago(300),
            "labels": {"app": "nginx"}
        },
        "spec": {
            "nodeName": "edge-1",
            "containers": [{"name": "nginx", "image": "nginx:1.27"}]
        },
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "podIPs": [{"ip": "10.0.0.5"}],
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True"}
            ],
            "containerStatuses": statuses
        }
    });
    if let (Some(st), Some(extra)) = (p["status"].as_object_mut(), extra_status.as_object()) {
        st.extend(extra.clone());
    }
    p
}

#[test]
fn running_pod_prints_like_kubectl() {
    let p = pod(json!([running_container("nginx", 0)]), json!({}));
    let t = render(POD, std::slice::from_ref(&p));
    assert_eq!(
        header_names(&t),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1)
        ]
        .map(|(n, p)| (n.to_owned(), p))
    );
    assert_eq!(t["columnDefinitions"][0]["format"], "name");
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            "nginx", "1/1", "Running", "0", "5m", "10.0.0.5", "edge-1", "<none>", "<none>"
        ])
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"], json!({"resourceVersion": "42"}));
    assert_eq!(
        t["rows"][0]["object"],
        json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": p["metadata"]
        })
    );
    assert!(t["rows"][0].get("conditions").is_none());
}

#[test]
fn crashing_container_shows_reason_and_last_restart() {
    let crashing = json!({
        "name": "sidecar", "ready": false, "restartCount": 5,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(90)}}
    });
    let mut p = pod(json!([running_container("nginx", 0), crashing]), json!({}));
    p["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "busybox"}));
    let c = cells(POD, p);
    assert_eq!(
        c[1..4],
        [
            json!("1/2"),
            json!("CrashLoopBackOff"),
            json!("5 (90s ago)")
        ]
    );
}

#[test]
fn terminated_container_reasons() {
    let exited = |term: Value| {
        let st = json!([{"name": "nginx", "ready": false, "restartCount": 0, "state": {"terminated": term}}]);
        cells(POD, pod(st, json!({"phase": "Failed"})))[2].clone()
    };
    assert_eq!(
        exited(json!({"exitCode": 137, "reason": "OOMKilled"})),
        "OOMKilled"
    );
    assert_eq!(exited(json!({"exitCode": 2})), "ExitCode:2");
    assert_eq!(exited(json!({"exitCode": 0, "signal": 9})), "Signal:9");
}

#[test]
fn completed_pod_has_row_condition() {
    let st = json!([{"name": "job", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]);
    let t = render(POD, &[pod(st, json!({"phase": "Succeeded"}))]);
    assert_eq!(
        t["rows"][0]["cells"].as_array().unwrap()[1..3],
        [json!("0/1"), json!("Completed")]
    );
    assert_eq!(
        t["rows"][0]["conditions"],
        json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}])
    );
}

#[test]
fn terminating_and_node_lost_pods() {
    let mut p = pod(json!([running_container("nginx", 0)]), json!({}));
    p["metadata"]["deletionTimestamp"] = json!(ago(3));
    assert_eq!(cells(POD, p.clone())[2], "Terminating");
    p["status"]["reason"] = json!("NodeLost");
    assert_eq!(cells(POD, p)[2], "Unknown");
    // A finished pod being deleted keeps its phase.
    let st = json!([{"name": "job", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]);
    let mut done = pod(st, json!({"phase": "Succeeded"}));
    done["metadata"]["deletionTimestamp"] = json!(ago(3));
    assert_eq!(cells(POD, done)[2], "Completed");
}

fn init_pod(init_statuses: Value) -> Value {
    let mut p = pod(
        json!([{"name": "nginx", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}]),
        json!({"phase": "Pending", "initContainerStatuses": init_statuses,
               "conditions": [{"type": "Initialized", "status": "False"}]}),
    );
    p["spec"]["initContainers"] =
        json!([{"name": "fetch", "image": "busybox"}, {"name": "migrate", "image": "busybox"}]);
    p
}

#[test]
fn init_container_progress() {
    let done = json!({"name": "fetch", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}});
    let running =
        json!({"name": "migrate", "restartCount": 0, "state": {"running": {"startedAt": ago(5)}}});
    let c = cells(POD, init_pod(json!([done, running])));
    assert_eq!(c[1..4], [json!("0/1"), json!("Init:1/2"), json!("0")]);

    let pulling = json!({"name": "fetch", "restartCount": 0, "state": {"waiting": {"reason": "ErrImagePull"}}});
    assert_eq!(
        cells(POD, init_pod(json!([pulling])))[2],
        "Init:ErrImagePull"
    );

    let failed = json!({"name": "fetch", "restartCount": 3,
        "state": {"terminated": {"exitCode": 1, "reason": "Error"}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}});
    let c = cells(POD, init_pod(json!([failed])));
    assert_eq!(c[2..4], [json!("Init:Error"), json!("3 (30s ago)")]);

    let crashed =
        json!({"name": "fetch", "restartCount": 0, "state": {"terminated": {"exitCode": 2}}});
    assert_eq!(cells(POD, init_pod(json!([crashed])))[2], "Init:ExitCode:2");
}

#[test]
fn sidecar_init_containers_count_towards_ready() {
    let mut p = pod(
        json!([running_container("nginx", 1)]),
        json!({"initContainerStatuses": [
            {"name": "proxy", "ready": true, "started": true, "restartCount": 2,
             "state": {"running": {"startedAt": ago(100)}}}
        ]}),
    );
    p["spec"]["initContainers"] =
        json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
    let c = cells(POD, p);
    assert_eq!(c[1..4], [json!("2/2"), json!("Running"), json!("3")]);
}

#[test]
fn pod_without_creation_timestamp_is_unknown_age_and_wide_gates() {
    let mut p = pod(
        json!([]),
        json!({"phase": "Pending", "conditions": [{"type": "www.example.com/gate", "status": "True"}]}),
    );
    p["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("creationTimestamp");
    p["spec"]["readinessGates"] =
        json!([{"conditionType": "www.example.com/gate"}, {"conditionType": "other"}]);
    p["status"].as_object_mut().unwrap().remove("podIPs");
    p["status"].as_object_mut().unwrap().remove("podIP");
    let c = cells(POD, p);
    assert_eq!(
        c[1..],
        [
            json!("0/1"),
            json!("Pending"),
            json!("0"),
            json!("<unknown>"),
            json!("<none>"),
            json!("edge-1"),
            json!("<none>"),
            json!("1/2")
        ]
    );
}

fn node(ready: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "edge-1", "creationTimestamp": ago(2 * 86400 + 3 * 3600 + 50), "labels": labels},
        "spec": {},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": ready, "reason": "KubeletReady"}
            ],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "edge-1"}],
            "nodeInfo": {
                "kubeletVersion": "v1.32.0-kedge", "osImage": "Debian GNU/Linux 12 (bookworm)",
                "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.6.20"
            }
        }
    })
}

#[test]
fn ready_edge_node() {
    let n = node(
        "True",
        json!({"node-role.kubernetes.io/edge": "", "kubernetes.io/hostname": "edge-1"}),
    );
    let t = render(NODE, &[n]);
    assert_eq!(
        header_names(&t)
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        [
            "Name",
            "Status",
            "Roles",
            "Age",
            "Version",
            "Internal-IP",
            "External-IP",
            "OS-Image",
            "Kernel-Version",
            "Container-Runtime"
        ]
    );
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            "edge-1",
            "Ready",
            "edge",
            "2d3h",
            "v1.32.0-kedge",
            "192.168.1.10",
            "<none>",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0-18-amd64",
            "containerd://1.6.20"
        ])
    );
}

#[test]
fn not_ready_cordoned_and_unknown_nodes() {
    let mut n = node("False", json!({}));
    n["spec"]["unschedulable"] = json!(true);
    let c = cells(NODE, n);
    assert_eq!(
        c[1..3],
        [json!("NotReady,SchedulingDisabled"), json!("<none>")]
    );

    let mut n = node(
        "Unknown",
        json!({"kubernetes.io/role": "gateway", "node-role.kubernetes.io/control-plane": ""}),
    );
    assert_eq!(
        cells(NODE, n.clone())[1..3],
        [json!("NotReady"), json!("control-plane,gateway")]
    );
    n["status"]["conditions"] = json!([]);
    n["status"]["nodeInfo"] = json!({});
    let c = cells(NODE, n);
    assert_eq!(c[1], "Unknown");
    assert_eq!(
        c[7..],
        [json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
    );
}

fn device(extra: Value) -> Value {
    let mut d = json!({
        "apiVersion": "devices.kubeedge.io/v1beta1", "kind": "Device",
        "metadata": {"name": "thermo-1", "namespace": "default", "creationTimestamp": ago(3600),
                     "labels": {"app.kubernetes.io/name": "thermo"}},
        "spec": {"deviceModelRef": {"name": "thermo-model"}, "nodeName": "edge-1",
                 "protocol": {"protocolName": "modbus", "configData": {"slaveID": 3, "scale": 0.5}}},
        "status": {
            "twins": [{"propertyName": "temperature"}, {"propertyName": "humidity"}],
            "conditions": [{"type": "Synced", "status": "False"}, {"type": "Ready", "status": "True"}],
            "online": true,
            "lastOnlineTime": ago(65)
        }
    });
    if let (Some(o), Some(e)) = (d.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    d
}

fn printer_columns() -> Vec<PrinterColumn> {
    serde_json::from_value(json!([
        {"name": "Model", "type": "string", "jsonPath": ".spec.deviceModelRef.name"},
        {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName", "priority": 1, "description": "Node the device is bound to"},
        {"name": "First Twin", "type": "string", "jsonPath": ".status.twins[*].propertyName"},
        {"name": "Second Twin", "type": "string", "jsonPath": ".status.twins[1].propertyName"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "App", "type": "string", "jsonPath": ".metadata.labels['app.kubernetes.io/name']"},
        {"name": "Slave", "type": "integer", "jsonPath": ".spec.protocol.configData.slaveID"},
        {"name": "Scale", "type": "number", "jsonPath": ".spec.protocol.configData.scale"},
        {"name": "Online", "type": "boolean", "jsonPath": ".status.online"},
        {"name": "Last Online", "type": "date", "jsonPath": ".status.lastOnlineTime"},
        {"name": "Missing", "type": "string", "jsonPath": ".status.nothing.here"},
        {"name": "Config", "type": "string", "jsonPath": ".spec.protocol.configData"},
        {"name": "Slave As String", "type": "string", "jsonPath": ".spec.protocol.configData.slaveID"},
        {"name": "Wrong Type", "type": "integer", "jsonPath": ".spec.nodeName"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]))
    .unwrap()
}

#[test]
fn crd_printer_columns() {
    let cols = printer_columns();
    let t = render(Columns::Custom(&cols), &[device(json!({}))]);
    assert_eq!(
        t["columnDefinitions"][1],
        json!({"name": "Model", "type": "string", "format": "",
               "description": "Custom resource definition column (in JSONPath format): .spec.deviceModelRef.name",
               "priority": 0})
    );
    assert_eq!(
        t["columnDefinitions"][2]["description"],
        "Node the device is bound to"
    );
    assert_eq!(t["columnDefinitions"][2]["priority"], 1);
    assert_eq!(
        t["rows"][0]["cells"],
        json!([
            "thermo-1",
            "thermo-model",
            "edge-1",
            "temperature",
            "humidity",
            "True",
            "thermo",
            3,
            0.5,
            true,
            "65s",
            null,
            "{\"scale\":0.5,\"slaveID\":3}",
            "3",
            null,
            "60m"
        ])
    );
}

#[test]
fn crd_without_columns_gets_name_and_age() {
    let t = render(Columns::Custom(&[]), &[device(json!({}))]);
    assert_eq!(
        header_names(&t),
        [("Name".to_owned(), 0), ("Age".to_owned(), 0)]
    );
    assert_eq!(t["columnDefinitions"][1]["type"], "date");
    assert_eq!(t["rows"][0]["cells"], json!(["thermo-1", "60m"]));
}

#[test]
fn custom_cells_follow_cell_for_json_value() {
    let n = now();
    assert_eq!(
        custom_cell("date", Some(&json!("not a date")), n),
        "<invalid>"
    );
    assert_eq!(custom_cell("date", Some(&json!("")), n), "<unknown>");
    assert_eq!(custom_cell("date", Some(&json!(5)), n), Value::Null);
    assert_eq!(custom_cell("integer", Some(&json!(2.9)), n), json!(2));
    assert_eq!(custom_cell("number", Some(&json!(2)), n), json!(2.0));
    assert_eq!(custom_cell("boolean", Some(&json!("true")), n), Value::Null);
    assert_eq!(custom_cell("string", Some(&json!(1.5e-7)), n), "1.5e-07");
    assert_eq!(custom_cell("string", Some(&json!(2.0)), n), "2");
    assert_eq!(custom_cell("string", Some(&json!(1e21)), n), "1e+21");
    assert_eq!(
        custom_cell("string", Some(&json!([1, "a"])), n),
        "[1,\"a\"]"
    );
    assert_eq!(custom_cell("string", Some(&Value::Null), n), Value::Null);
    assert_eq!(custom_cell("string", None, n), Value::Null);
}

#[test]
fn default_table_is_name_and_created_at() {
    let role = json!({"kind": "ClusterRole", "metadata": {"name": "view", "creationTimestamp": "2024-04-01T08:00:00+02:00"}});
    for cols in [
        Columns::Default,
        Columns::Builtin {
            group: "rbac.authorization.k8s.io",
            kind: "ClusterRole",
        },
    ] {
        let t = render(cols, std::slice::from_ref(&role));
        assert_eq!(
            header_names(&t),
            [("Name".to_owned(), 0), ("Created At".to_owned(), 0)]
        );
        assert_eq!(t["columnDefinitions"][1]["type"], "date");
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["view", "2024-04-01T06:00:00Z"])
        );
    }
    let crd = json!({"metadata": {"name": "devices.devices.kubeedge.io"}});
    assert_eq!(
        cells(
            Columns::Builtin {
                group: "apiextensions.k8s.io",
                kind: "CustomResourceDefinition"
            },
            crd
        ),
        [
            json!("devices.devices.kubeedge.io"),
            json!("0001-01-01T00:00:00Z")
        ]
    );
}

#[test]
fn include_object_modes_and_envelope() {
    let p = pod(json!([running_container("nginx", 0)]), json!({}));
    let mut o = opts(IncludeObject::Object);
    o.continue_token = Some("abc");
    o.remaining_item_count = Some(7);
    o.version = TableVersion::V1Beta1;
    let t = table_with(POD, std::slice::from_ref(&p), &o);
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1beta1");
    assert_eq!(
        t["metadata"],
        json!({"resourceVersion": "42", "continue": "abc", "remainingItemCount": 7})
    );
    assert_eq!(t["rows"][0]["object"], p);
    let t = table_with(POD, std::slice::from_ref(&p), &opts(IncludeObject::None));
    assert_eq!(t["rows"][0]["object"], Value::Null);
    let empty = table(POD, &[], IncludeObject::Metadata, "", None);
    assert_eq!(empty["metadata"], json!({}));
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["columnDefinitions"].as_array().unwrap().len(), 9);
}

#[test]
fn watch_tables_send_headers_once() {
    let p = pod(json!([running_container("nginx", 0)]), json!({}));
    let first = watch_table(POD, &p, TableVersion::V1, IncludeObject::Metadata, true);
    assert_eq!(first["metadata"], json!({"resourceVersion": "17"}));
    assert_eq!(first["columnDefinitions"].as_array().unwrap().len(), 9);
    assert_eq!(first["rows"].as_array().unwrap().len(), 1);
    let next = watch_table(POD, &p, TableVersion::V1, IncludeObject::Metadata, false);
    assert_eq!(next["columnDefinitions"], Value::Null);
    assert_eq!(next["rows"][0]["cells"][0], "nginx");
    assert_eq!(next["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[test]
fn accept_header_negotiation() {
    let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    assert_eq!(parse_table_accept(kubectl), Some(TableVersion::V1));
    assert_eq!(
        parse_table_accept("application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json"),
        Some(TableVersion::V1Beta1)
    );
    assert_eq!(parse_table_accept("application/json"), None);
    assert_eq!(parse_table_accept(""), None);
    assert_eq!(parse_table_accept("*/*"), None);
    // A more specific clause wins over plain JSON at equal q ...
    assert_eq!(
        parse_table_accept("application/json, application/json; as=Table; g=meta.k8s.io; v=v1"),
        Some(TableVersion::V1)
    );
    // ... but not over a higher q.
    assert_eq!(
        parse_table_accept(
            "application/json;q=1, application/json;as=Table;v=v1;g=meta.k8s.io;q=0.5"
        ),
        None
    );
    // Unservable conversions are skipped.
    assert_eq!(
        parse_table_accept("application/json;as=Table;v=v2;g=meta.k8s.io,application/json"),
        None
    );
    assert_eq!(
        parse_table_accept(
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io"
        ),
        Some(TableVersion::V1)
    );
}

#[test]
fn include_object_parameter() {
    assert_eq!(parse_include_object(None).unwrap(), IncludeObject::Metadata);
    assert_eq!(
        parse_include_object(Some("")).unwrap(),
        IncludeObject::Metadata
    );
    assert_eq!(
        parse_include_object(Some("Object")).unwrap(),
        IncludeObject::Object
    );
    assert_eq!(
        parse_include_object(Some("None")).unwrap(),
        IncludeObject::None
    );
    let err = parse_include_object(Some("all")).unwrap_err();
    assert_eq!(err.to_string(), "unrecognized includeObject value: \"all\"");
}

#[test]
fn printer_column_validation() {
    assert!(validate_printer_columns(&printer_columns()).is_ok());
    let bad: Vec<PrinterColumn> =
        serde_json::from_value(json!([{"name": "X", "type": "string", "jsonPath": ".a[?(@.b=)]"}]))
            .unwrap();
    assert!(matches!(
        validate_printer_columns(&bad),
        Err(TableError::InvalidPrinterColumn { .. })
    ));
}

mod builtin_kinds;
