//! AdmissionReview (`admission.k8s.io/v1`) in and out, without IO: [`parse`] a request
//! body, [`decide`] with the node's labels already looked up, [`response`] with a JSON
//! Patch. The webhook never refuses a pod: every error still answers `allowed: true`, with a
//! warning kubectl shows, because a broken autonomy webhook must not stop workloads.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use apiserver::admission::autonomy::{self, Decision};

/// Why a request body is not an AdmissionReview we can answer (HTTP 400: without a uid
/// there is no response to give; the API server then applies the failurePolicy).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an `admission.k8s.io/v1` AdmissionReview with `request.uid`.
    #[error("not an admission.k8s.io/v1 AdmissionReview with request.uid")]
    NotAReview,
}

/// What we need from a review request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `request.uid`, echoed in the response.
    pub uid: String,
    /// `request.operation` (`CREATE`, `UPDATE`...).
    pub operation: String,
    /// `request.resource.resource` and `request.subResource`.
    pub resource: String,
    pub sub_resource: String,
    /// `request.object`.
    pub object: Value,
    /// `request.namespace` / name for logs.
    pub namespace: String,
    pub name: String,
}

/// Parse a request body.
pub fn parse(body: &[u8]) -> Result<Request, ReviewError> {
    let v: Value = serde_json::from_slice(body).map_err(ReviewError::NotJson)?;
    if v.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || v.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err(ReviewError::NotAReview);
    }
    let req = v.get("request").ok_or(ReviewError::NotAReview)?;
    let s = |p: &str| {
        req.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let uid = s("/uid");
    if uid.is_empty() {
        return Err(ReviewError::NotAReview);
    }
    let object = req.get("object").cloned().unwrap_or(Value::Null);
    let name = match s("/name") {
        n if n.is_empty() => object
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        n => n,
    };
    Ok(Request {
        uid,
        operation: s("/operation"),
        resource: s("/resource/resource"),
        sub_resource: s("/subResource"),
        namespace: s("/namespace"),
        name,
        object,
    })
}

/// Whether the webhook has anything to do with this request: a pod itself (not a
/// subresource) being created or updated.
pub fn concerns_pods(req: &Request) -> bool {
    req.resource == "pods"
        && req.sub_resource.is_empty()
        && matches!(req.operation.as_str(), "CREATE" | "UPDATE")
        && req.object.is_object()
}

/// The decision for a request; `enabled` false admits everything unchanged.
pub fn decide(
    req: &Request,
    enabled: bool,
    edge_label: &str,
    node_labels: Option<&Map<String, Value>>,
) -> Decision {
    if !enabled || !concerns_pods(req) {
        return Decision::NotEdge;
    }
    autonomy::decide(&req.object, edge_label, node_labels)
}

/// The AdmissionReview answering `uid`: always allowed, with the JSON Patch of `decision`
/// against `object` when it mutates, and `warnings`.
pub fn response(uid: &str, object: &Value, decision: &Decision, warnings: &[String]) -> Value {
    let mut resp = json!({"uid": uid, "allowed": true});
    if let Some(patch) = autonomy::json_patch(object, decision) {
        resp["patchType"] = json!("JSONPatch");
        resp["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
    }
    if !warnings.is_empty() {
        resp["warnings"] = json!(warnings);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn review(op: &str, resource: &str, sub: &str, object: Value) -> Vec<u8> {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": op, "namespace": "default",
                "resource": {"group": "", "version": "v1", "resource": resource},
                "subResource": sub, "object": object}})
        .to_string()
        .into_bytes()
    }

    fn edge_pod() -> Value {
        json!({"metadata": {"generateName": "web-"}, "spec": {"nodeSelector": {"node-role.kubernetes.io/edge": ""}, "containers": []}})
    }

    const EDGE: &str = "node-role.kubernetes.io/edge";

    #[test]
    fn parse_takes_what_the_decision_needs() {
        let r = parse(&review("CREATE", "pods", "", edge_pod())).unwrap();
        assert_eq!(r.uid, "u-1");
        assert_eq!(r.name, "web-");
        assert!(concerns_pods(&r));
        assert!(matches!(
            decide(&r, true, EDGE, None),
            Decision::Mutate { .. }
        ));
        assert_eq!(decide(&r, false, EDGE, None), Decision::NotEdge);
    }

    #[test]
    fn bad_bodies_are_refused_with_a_reason() {
        assert!(matches!(parse(b"{"), Err(ReviewError::NotJson(_))));
        assert!(matches!(parse(b"{}"), Err(ReviewError::NotAReview)));
        let no_uid =
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}});
        assert!(matches!(
            parse(no_uid.to_string().as_bytes()),
            Err(ReviewError::NotAReview)
        ));
        let v1beta1 = json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {"uid": "x"}});
        assert!(matches!(
            parse(v1beta1.to_string().as_bytes()),
            Err(ReviewError::NotAReview)
        ));
    }

    #[test]
    fn other_resources_operations_and_subresources_pass_unchanged() {
        for (op, res, sub) in [
            ("DELETE", "pods", ""),
            ("CREATE", "pods", "binding"),
            ("CREATE", "services", ""),
        ] {
            let r = parse(&review(op, res, sub, edge_pod())).unwrap();
            assert!(!concerns_pods(&r), "{op} {res}/{sub}");
            assert_eq!(decide(&r, true, EDGE, None), Decision::NotEdge);
        }
    }

    #[test]
    fn response_echoes_the_uid_and_carries_a_base64_json_patch() {
        let r = parse(&review("CREATE", "pods", "", edge_pod())).unwrap();
        let d = decide(&r, true, EDGE, None);
        let out = response(&r.uid, &r.object, &d, &["w".into()]);
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        assert_eq!(out["response"]["warnings"], json!(["w"]));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(patch[0]["op"], "add");
        assert_eq!(patch[0]["path"], "/spec/tolerations");
        let none = response("u-2", &r.object, &Decision::NotEdge, &[]);
        assert!(none["response"].get("patch").is_none());
        assert!(none["response"].get("warnings").is_none());
    }
}
