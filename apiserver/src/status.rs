//! Kubernetes `Status` errors: every failure the API returns is one of these.
//!
//! Handlers return `Result<_, ApiError>`; the server turns an [`ApiError`] into a
//! `meta.k8s.io/v1` `Status` body with the matching HTTP code and `reason`, the shape kubectl
//! and kube-rs parse (`kube::core::ErrorResponse`).

use serde_json::{Value, json};

/// A failed API request, as Kubernetes reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// Kubernetes `StatusReason` (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// `details` of the Status (name, group, kind, causes), if any; boxed, as `metadata`,
    /// to keep the error small.
    pub details: Option<Box<Value>>,
    /// `metadata` of the Status (`continue` after an expired continue token); boxed to keep
    /// the error small.
    pub metadata: Option<Box<Value>>,
}

impl ApiError {
    /// An error with an explicit code and reason.
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            metadata: None,
        }
    }

    /// Attach `details` to the Status.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    /// 404 NotFound for `resource` `name` (`pods "x" not found`).
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, resource)),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// 404 NotFound for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, resource)),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// 409 Conflict (stale resourceVersion, UID precondition, ...).
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, resource)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": resource}))
    }

    /// 410 Gone / Expired: the requested resourceVersion was compacted.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    /// 504 Timeout: a resourceVersion newer than any the server has written.
    pub fn too_large_resource_version(requested: u64, current: u64) -> Self {
        Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {requested}, current: {current}"),
        )
        .with_details(json!({
            "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
            "retryAfterSeconds": 1,
        }))
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }

    /// 422 Invalid with field causes.
    pub fn invalid(kind: &str, name: &str, causes: Vec<Value>, group: &str) -> Self {
        let parts: Vec<String> = causes
            .iter()
            .map(|c| {
                let field = c.get("field").and_then(Value::as_str).unwrap_or("");
                let msg = c.get("message").and_then(Value::as_str).unwrap_or("");
                if field.is_empty() {
                    msg.to_string()
                } else {
                    format!("{field}: {msg}")
                }
            })
            .collect();
        let body = match parts.len() {
            0 => String::new(),
            1 => parts[0].clone(),
            _ => format!("[{}]", parts.join(", ")),
        };
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {body}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(obj)) = (&self.details, status.as_object_mut()) {
            obj.insert("details".into(), (**details).clone());
        }
        if let Some(m) = &self.metadata {
            status["metadata"] = (**m).clone();
        }
        status
    }
}

/// A success `Status` (what a DELETE of an object that is gone at once returns).
pub fn success(group: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": group, "kind": kind, "uid": uid},
    })
}

/// `pods` or `deployments.apps`, as Kubernetes names a resource in messages.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_code_and_reason() {
        let s = ApiError::not_found("", "pods", "x").to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "pods \"x\" not found");
        let s = ApiError::already_exists("apps", "deployments", "d").to_status();
        assert_eq!(s["message"], "deployments.apps \"d\" already exists");
    }

    #[test]
    fn invalid_lists_causes() {
        let e = ApiError::invalid(
            "Pod",
            "Foo",
            vec![json!({"reason":"FieldValueInvalid","field":"metadata.name","message":"bad"})],
            "",
        );
        assert_eq!(e.code, 422);
        assert_eq!(e.message, "Pod \"Foo\" is invalid: metadata.name: bad");
    }
}
