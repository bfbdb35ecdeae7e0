//! `selfsubjectreviews` (`authentication.k8s.io/v1`): who the caller is, as
//! `kubectl auth whoami` asks. Nothing is stored; every authenticated caller may ask about
//! itself, whatever its credential (admin token, client certificate, ServiceAccount token).

use http::Method;
use serde_json::{Value, json};

use super::{Ctx, Resp, decode_body, value_resp};
use crate::request::ResourcePath;
use crate::status::{ApiError, ApiResult};

/// The group serving the review.
pub const GROUP: &str = "authentication.k8s.io";
/// The resource.
pub const PLURAL: &str = "selfsubjectreviews";
const KIND: &str = "SelfSubjectReview";

/// Is `rp` the self-subject review (of a version this server serves)?
pub fn is_self_subject_review(rp: &ResourcePath) -> bool {
    rp.group == GROUP && rp.version == "v1" && rp.plural == PLURAL
}

/// Answer a request to `selfsubjectreviews`: only `POST` of the collection, with an
/// (optional) `SelfSubjectReview` body; the reply carries the caller's identity.
pub fn self_subject_review(
    ctx: &Ctx,
    method: &Method,
    rp: &ResourcePath,
    body: &[u8],
) -> ApiResult<Resp> {
    if rp.namespace.is_some() || rp.name.is_some() || rp.subresource.is_some() {
        return Err(ApiError::no_route());
    }
    if method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method})"
        )));
    }
    if !body.is_empty() {
        let v = decode_body(&ctx.content_type, body)?;
        check_type(&v)?;
    }
    Ok(value_resp(201, &review(ctx)))
}

/// A body naming another kind or group is refused, as Kubernetes' decoder does.
fn check_type(v: &Value) -> ApiResult<()> {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or(KIND);
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("authentication.k8s.io/v1");
    if kind != KIND || api_version != "authentication.k8s.io/v1" {
        return Err(ApiError::bad_request(format!(
            "the body is a {api_version} {kind}, not an authentication.k8s.io/v1 {KIND}"
        )));
    }
    Ok(())
}

fn review(ctx: &Ctx) -> Value {
    let mut user = json!({"username": ctx.user.name, "groups": ctx.user.groups});
    if let Some(uid) = &ctx.user.uid {
        user["uid"] = Value::String(uid.clone());
    }
    json!({
        "kind": KIND,
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": super::write::now()},
        "status": {"userInfo": user},
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn body_of_another_kind_is_refused() {
        assert!(check_type(&json!({})).is_ok());
        assert!(
            check_type(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": KIND})).is_ok()
        );
        assert!(
            check_type(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"}))
                .is_err()
        );
        assert!(check_type(&json!({"apiVersion": "v1", "kind": KIND})).is_err());
    }

    #[test]
    fn only_the_v1_collection_is_the_review() {
        let rp = |v: &str, p: &str| ResourcePath {
            group: GROUP.into(),
            version: v.into(),
            plural: p.into(),
            ..Default::default()
        };
        assert!(is_self_subject_review(&rp("v1", PLURAL)));
        assert!(!is_self_subject_review(&rp("v1", "tokenreviews")));
        assert!(!is_self_subject_review(&rp("v1alpha1", PLURAL)));
    }
}
