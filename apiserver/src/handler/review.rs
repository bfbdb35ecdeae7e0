//! The reviews: create-only resources that answer a question and store nothing.
//! `authentication.k8s.io/v1` `selfsubjectreviews` (who am I, `kubectl auth whoami`) and
//! `tokenreviews` (whose is this token); `authorization.k8s.io/v1`
//! `selfsubjectaccessreviews` (`kubectl auth can-i`), `selfsubjectrulesreviews`
//! (`kubectl auth can-i --list`), `subjectaccessreviews` and the namespaced
//! `localsubjectaccessreviews`.
//!
//! Start at [`REVIEWS`]: one row per review, its kind (group, plural and scope come from
//! [`builtin::create_only`]) and the function computing its `status`. Discovery lists
//! exactly these ([`served`]).
//!
//! This server has no authorizer: every authenticated user may do everything (anonymous
//! requests get 401 before they reach a handler). So every access review is allowed, for
//! whoever it asks about, and the rules review answers `*`. Answers follow kube-apiserver's
//! `pkg/registry/{authentication,authorization}/*/rest.go`: the request body comes back
//! with its `status` filled in, `201 Created`; a spec that fails Kubernetes' validation is a
//! `422 Invalid`, a body that does not decode a `400 BadRequest`.

use http::Method;
use k8s_openapi::api::{authentication::v1 as authn, authorization::v1 as authz};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{Ctx, Resp, decode_body, value_resp};
use crate::builtin::{self, BuiltinKind};
use crate::request::ResourcePath;
use crate::status::{ApiError, ApiResult};

/// Why every access review is allowed.
pub const ALLOWED_REASON: &str =
    "the embedded API server has no authorizer: every authenticated user may do everything";

/// One review the server answers.
struct Review {
    /// Kind of the body, as in [`builtin::create_only`].
    kind: &'static str,
    /// The `status` of the answer to `body`, or why `body` is refused.
    status: fn(&Ctx, &ResourcePath, &mut Value) -> ApiResult<Value>,
}

/// Every review served.
const REVIEWS: &[Review] = &[
    Review {
        kind: "SelfSubjectReview",
        status: self_subject,
    },
    Review {
        kind: "TokenReview",
        status: token,
    },
    Review {
        kind: "SelfSubjectAccessReview",
        status: self_subject_access,
    },
    Review {
        kind: "SelfSubjectRulesReview",
        status: self_subject_rules,
    },
    Review {
        kind: "SubjectAccessReview",
        status: subject_access,
    },
    Review {
        kind: "LocalSubjectAccessReview",
        status: local_subject_access,
    },
];

/// The kinds of the served reviews, in [`builtin::create_only`] order (for discovery and
/// `/openapi/v3`).
pub fn served() -> impl Iterator<Item = &'static BuiltinKind> {
    builtin::create_only()
        .iter()
        .filter(|k| REVIEWS.iter().any(|r| r.kind == k.kind))
}

/// The review served at `rp`'s group, version and plural, if any.
fn find(rp: &ResourcePath) -> Option<(&'static BuiltinKind, &'static Review)> {
    let kind = served()
        .find(|k| k.group == rp.group && k.version == rp.version && k.plural == rp.plural)?;
    REVIEWS
        .iter()
        .find(|r| r.kind == kind.kind)
        .map(|r| (kind, r))
}

/// Is `rp` a review (of a version this server serves)?
pub fn is_review(rp: &ResourcePath) -> bool {
    find(rp).is_some()
}

/// Answer a request to a review: only `POST` of the collection (in a namespace for
/// `localsubjectaccessreviews`, outside one for the others); other methods are 405.
pub fn answer(ctx: &Ctx, method: &Method, rp: &ResourcePath, body: &[u8]) -> ApiResult<Resp> {
    let (kind, review) = find(rp).ok_or_else(ApiError::no_route)?;
    if rp.namespace.is_some() != kind.namespaced || rp.name.is_some() || rp.subresource.is_some() {
        return Err(ApiError::no_route());
    }
    if method != Method::POST {
        return Err(super::method_not_allowed(method));
    }
    let mut v = if body.is_empty() {
        json!({})
    } else {
        decode_body(&ctx.content_type, body)?
    };
    check_type(&v, kind)?;
    typed::<ObjectMeta>(&v, "metadata")?;
    let status = (review.status)(ctx, rp, &mut v)?;
    v["apiVersion"] = json!(kind.api_version());
    v["kind"] = json!(kind.kind);
    if v.get("metadata").is_none_or(Value::is_null) {
        v["metadata"] = json!({});
    }
    v["status"] = status;
    Ok(value_resp(201, &v))
}

/// A body naming another kind or group is refused, as Kubernetes' decoder does.
fn check_type(v: &Value, kind: &BuiltinKind) -> ApiResult<()> {
    let expected = kind.api_version();
    let k = v.get("kind").and_then(Value::as_str).unwrap_or(kind.kind);
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(&expected);
    if k != kind.kind || api_version != expected {
        return Err(ApiError::bad_request(format!(
            "the body is a {api_version} {k}, not a {expected} {}",
            kind.kind
        )));
    }
    Ok(())
}

/// `v[field]` decoded as `T` (absent or null: `T::default()`); a wrong shape is a 400, as
/// Kubernetes' JSON decoder answers.
fn typed<T: DeserializeOwned + Default>(v: &Value, field: &str) -> ApiResult<T> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(T::default()),
        Some(x) => serde_json::from_value(x.clone()).map_err(|e| {
            ApiError::bad_request(format!("the request body's {field} does not decode: {e}"))
        }),
    }
}

/// A `FieldValueInvalid` cause.
fn invalid(field: &str, value: &str, message: &str) -> Value {
    json!({
        "reason": "FieldValueInvalid",
        "field": field,
        "message": format!("Invalid value: {value}: {message}"),
    })
}

/// 422 for `causes`, if any.
fn refuse(kind: &str, group: &str, causes: Vec<Value>) -> ApiResult<()> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(kind, "", causes, group))
    }
}

/// `metadata` minus what may be set (`managedFields`, a null `creationTimestamp`, and the
/// `keep` fields) is empty: access reviews have no name, labels or annotations.
fn metadata_is_empty(v: &Value, keep: &[&str]) -> bool {
    match v.get("metadata") {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.iter().all(|(k, x)| {
            keep.contains(&k.as_str())
                || k == "managedFields"
                || (k == "creationTimestamp" && x.is_null())
        }),
        Some(_) => false,
    }
}

/// The `metadata` cause of an access review whose metadata holds more than `keep`.
fn metadata_cause(v: &Value, keep: &[&str], message: &str) -> Option<Value> {
    (!metadata_is_empty(v, keep)).then(|| invalid("metadata", &v["metadata"].to_string(), message))
}

fn user_info(user: &crate::auth::UserInfo) -> Value {
    let mut u = json!({"username": user.name, "groups": user.groups});
    if let Some(uid) = &user.uid {
        u["uid"] = Value::String(uid.clone());
    }
    u
}

/// `SelfSubjectReview`: the caller's identity; `creationTimestamp` is now, as Kubernetes
/// sets it.
fn self_subject(ctx: &Ctx, _: &ResourcePath, v: &mut Value) -> ApiResult<Value> {
    v["metadata"] = json!({"creationTimestamp": super::write::now()});
    Ok(json!({"userInfo": user_info(&ctx.user)}))
}

/// `TokenReview`: the token checked by the server's own authenticator, for the requested
/// audiences (default: the API's). The authenticator accepts only tokens for the API's
/// audiences, so a review for other audiences is unauthenticated.
fn token(ctx: &Ctx, _: &ResourcePath, v: &mut Value) -> ApiResult<Value> {
    let spec: authn::TokenReviewSpec = typed(v, "spec")?;
    let token = spec.token;
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let api = &ctx.api.service_accounts.audiences;
    let wanted = spec.audiences.unwrap_or_default();
    let audiences: Vec<&String> = if wanted.is_empty() {
        api.iter().collect()
    } else {
        wanted.iter().filter(|a| api.contains(a)).collect()
    };
    if audiences.is_empty() {
        return Ok(json!({
            "authenticated": false,
            "user": {},
            "error": format!("the target audiences {wanted:?} are not this server's: it authenticates tokens for {api:?} only"),
        }));
    }
    let header = format!("Bearer {token}");
    Ok(
        match crate::auth::authenticate(None, Some(&header), &ctx.api.tokens) {
            Ok(user) => json!({
                "authenticated": true,
                "user": user_info(&user),
                "audiences": audiences,
            }),
            Err(_) => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
        },
    )
}

/// What Kubernetes' `ValidateSubjectAccessReviewSpec` checks of the attributes: exactly
/// one of `resourceAttributes` and `nonResourceAttributes`.
fn attribute_causes(resource: bool, non_resource: bool, nr_value: &Value, out: &mut Vec<Value>) {
    if resource && non_resource {
        out.push(invalid(
            "spec.nonResourceAttributes",
            &nr_value.to_string(),
            "cannot be specified in combination with resourceAttributes",
        ));
    }
    if !resource && !non_resource {
        out.push(invalid(
            "spec.resourceAttributes",
            "\"null\"",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        ));
    }
}

fn allowed() -> Value {
    json!({"allowed": true, "reason": ALLOWED_REASON})
}

/// `SelfSubjectAccessReview` (`kubectl auth can-i`): allowed.
fn self_subject_access(_: &Ctx, _: &ResourcePath, v: &mut Value) -> ApiResult<Value> {
    let spec: authz::SelfSubjectAccessReviewSpec = typed(v, "spec")?;
    let mut causes = Vec::new();
    attribute_causes(
        spec.resource_attributes.is_some(),
        spec.non_resource_attributes.is_some(),
        &v["spec"]["nonResourceAttributes"],
        &mut causes,
    );
    causes.extend(metadata_cause(v, &[], "must be empty"));
    refuse("SelfSubjectAccessReview", "authorization.k8s.io", causes)?;
    Ok(allowed())
}

/// `SubjectAccessReview`: allowed, for any user or group.
fn subject_access(_: &Ctx, _: &ResourcePath, v: &mut Value) -> ApiResult<Value> {
    let causes = subject_access_causes(v, &[], "must be empty")?;
    refuse("SubjectAccessReview", "authorization.k8s.io", causes)?;
    Ok(allowed())
}

/// `LocalSubjectAccessReview` (in the URL's namespace): allowed, for any user or group.
fn local_subject_access(_: &Ctx, rp: &ResourcePath, v: &mut Value) -> ApiResult<Value> {
    let ns = rp.namespace.clone().unwrap_or_default();
    match v["metadata"]["namespace"].as_str() {
        None | Some("") => {
            if !v.get("metadata").is_some_and(Value::is_object) {
                v["metadata"] = json!({});
            }
            v["metadata"]["namespace"] = json!(ns);
        }
        Some(other) if other != ns => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Some(_) => {}
    }
    let mut causes =
        subject_access_causes(v, &["namespace"], "must be empty except for namespace")?;
    let spec = &v["spec"];
    if let Some(attrs) = spec.get("resourceAttributes").filter(|a| !a.is_null()) {
        let attr_ns = attrs["namespace"].as_str().unwrap_or("");
        if attr_ns != ns {
            causes.push(invalid(
                "spec.resourceAttributes.namespace",
                &format!("{attr_ns:?}"),
                "must match metadata.namespace",
            ));
        }
    }
    if spec
        .get("nonResourceAttributes")
        .is_some_and(|a| !a.is_null())
    {
        causes.push(invalid(
            "spec.nonResourceAttributes",
            &spec["nonResourceAttributes"].to_string(),
            "disallowed on this kind of request",
        ));
    }
    refuse("LocalSubjectAccessReview", "authorization.k8s.io", causes)?;
    Ok(allowed())
}

/// The causes Kubernetes' `SubjectAccessReview` validation finds in `v`.
fn subject_access_causes(
    v: &Value,
    keep: &[&str],
    metadata_message: &str,
) -> ApiResult<Vec<Value>> {
    let spec: authz::SubjectAccessReviewSpec = typed(v, "spec")?;
    let mut causes = Vec::new();
    attribute_causes(
        spec.resource_attributes.is_some(),
        spec.non_resource_attributes.is_some(),
        &v["spec"]["nonResourceAttributes"],
        &mut causes,
    );
    let user = spec.user.unwrap_or_default();
    if user.is_empty() && spec.groups.unwrap_or_default().is_empty() {
        causes.push(invalid(
            "spec.user",
            &format!("{user:?}"),
            "at least one of user or group must be specified",
        ));
    }
    causes.extend(metadata_cause(v, keep, metadata_message));
    Ok(causes)
}

/// `SelfSubjectRulesReview` (`kubectl auth can-i --list`): everything, in any namespace.
fn self_subject_rules(_: &Ctx, _: &ResourcePath, v: &mut Value) -> ApiResult<Value> {
    let spec: authz::SelfSubjectRulesReviewSpec = typed(v, "spec")?;
    if spec.namespace.unwrap_or_default().is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    Ok(json!({
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "incomplete": false,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rp(group: &str, version: &str, plural: &str) -> ResourcePath {
        ResourcePath {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_review_has_its_kind() {
        assert_eq!(served().count(), REVIEWS.len());
        let lsar = served()
            .find(|k| k.plural == "localsubjectaccessreviews")
            .unwrap();
        assert!(lsar.namespaced);
        assert_eq!(lsar.group, "authorization.k8s.io");
    }

    #[test]
    fn only_the_v1_collections_are_reviews() {
        let authn = "authentication.k8s.io";
        assert!(is_review(&rp(authn, "v1", "selfsubjectreviews")));
        assert!(is_review(&rp(authn, "v1", "tokenreviews")));
        assert!(is_review(&rp(
            "authorization.k8s.io",
            "v1",
            "selfsubjectaccessreviews"
        )));
        assert!(!is_review(&rp(authn, "v1alpha1", "selfsubjectreviews")));
        assert!(!is_review(&rp("", "v1", "pods")));
    }

    #[test]
    fn body_of_another_kind_is_refused() {
        let ssr = served().find(|k| k.kind == "SelfSubjectReview").unwrap();
        assert!(check_type(&json!({}), ssr).is_ok());
        let ok = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
        assert!(check_type(&ok, ssr).is_ok());
        let other = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview"});
        assert!(check_type(&other, ssr).is_err());
        assert!(
            check_type(
                &json!({"apiVersion": "v1", "kind": "SelfSubjectReview"}),
                ssr
            )
            .is_err()
        );
    }

    #[test]
    fn access_reviews_need_exactly_one_kind_of_attributes() {
        let mut causes = Vec::new();
        attribute_causes(false, false, &Value::Null, &mut causes);
        assert_eq!(causes[0]["field"], "spec.resourceAttributes");
        causes.clear();
        attribute_causes(true, true, &json!({"path": "/"}), &mut causes);
        assert_eq!(causes[0]["field"], "spec.nonResourceAttributes");
        causes.clear();
        attribute_causes(true, false, &Value::Null, &mut causes);
        assert!(causes.is_empty());
    }

    #[test]
    fn subject_access_needs_a_subject_and_empty_metadata() {
        let v = json!({"spec": {"nonResourceAttributes": {"path": "/", "verb": "get"}}});
        let causes = subject_access_causes(&v, &[], "must be empty").unwrap();
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0]["field"], "spec.user");
        let v =
            json!({"metadata": {"name": "x"}, "spec": {"groups": ["g"], "resourceAttributes": {}}});
        let causes = subject_access_causes(&v, &[], "must be empty").unwrap();
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0]["field"], "metadata");
        assert!(metadata_is_empty(
            &json!({"metadata": {"namespace": "a"}}),
            &["namespace"]
        ));
        assert!(metadata_is_empty(
            &json!({"metadata": {"creationTimestamp": null}}),
            &[]
        ));
        let wrong = json!({"spec": {"user": 3}});
        assert_eq!(
            subject_access_causes(&wrong, &[], "").unwrap_err().code,
            400
        );
    }
}
