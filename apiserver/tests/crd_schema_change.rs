//! A CRD whose schema changes: the next write of its objects is judged by the new schema
//! (nothing about the old one may be kept — see `schema/facts`).

#![allow(clippy::unwrap_used)]

#[path = "support/server.rs"]
mod support;

use serde_json::{Value, json};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

fn crd(spec_properties: Value, rv: Option<&Value>) -> Value {
    let mut crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": spec_properties}}}}}],
        },
    });
    if let Some(rv) = rv {
        crd["metadata"]["resourceVersion"] = rv.clone();
    }
    crd
}

fn widget(name: &str, spec: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": name}, "spec": spec}))
    .unwrap()
}

async fn create_widget(s: &support::Server, name: &str, spec: Value) -> (u16, Value) {
    let uri = format!("{WIDGETS}?fieldValidation=Strict");
    s.raw("POST", &uri, "application/json", widget(name, spec))
        .await
}

/// Waits until the widgets resource is served (the CRD is registered after its write).
async fn served(s: &support::Server) {
    support::within("widgets served", async {
        loop {
            if s.get(WIDGETS).await.0 == 200 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_changed_crd_schema_applies_to_the_next_write() {
    let s = support::start(|_| {}).await;
    let body = serde_json::to_vec(&crd(json!({"size": {"type": "integer"}}), None)).unwrap();
    let (code, created) = s.raw("POST", CRDS, "application/json", body).await;
    assert_eq!(code, 201, "{created}");
    served(&s).await;

    let (code, body) = create_widget(&s, "a", json!({"size": 1})).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = create_widget(&s, "b", json!({"colour": "red"})).await;
    assert_eq!(
        code, 400,
        "colour is unknown under the first schema: {body}"
    );
    let (code, body) = create_widget(&s, "c", json!({"size": "big"})).await;
    assert_eq!(
        code, 422,
        "size is an integer under the first schema: {body}"
    );

    // The new schema: `size` is a string, `colour` is known.
    let (_, current) = s.get(&format!("{CRDS}/widgets.example.com")).await;
    let rv = &current["metadata"]["resourceVersion"];
    let changed = crd(
        json!({"size": {"type": "string"}, "colour": {"type": "string"}}),
        Some(rv),
    );
    let uri = format!("{CRDS}/widgets.example.com");
    let (code, body) = s
        .raw(
            "PUT",
            &uri,
            "application/json",
            serde_json::to_vec(&changed).unwrap(),
        )
        .await;
    assert_eq!(code, 200, "{body}");

    support::within("the new schema is used", async {
        loop {
            let (code, _) = create_widget(&s, "d", json!({"colour": "red", "size": "big"})).await;
            if code == 201 {
                return;
            }
            assert_eq!(code, 400, "only the registration may lag, not validation");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let (code, body) = create_widget(&s, "e", json!({"size": 1})).await;
    assert_eq!(code, 422, "size is a string under the new schema: {body}");
}
