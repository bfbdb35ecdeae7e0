//! The PATCH verb's bodies: JSON Patch, JSON Merge Patch and strategic merge patch.
//!
//! Owns turning (stored object, patch body, content type) into the patched object. Start
//! reading at [`apply_patch`]; [`PatchType::from_content_type`] picks the kind. No IO and no
//! validation of the result: the caller decodes, validates and stores what comes back.
//!
//! - **JSON Patch** (RFC 6902, `application/json-patch+json`) runs on the `json-patch` crate,
//!   on a copy, so a failing op leaves nothing half-applied; failures are 422 with the op index.
//! - **JSON Merge Patch** (RFC 7396, `application/merge-patch+json`) is done here so that map
//!   keys keep their order.
//! - **Strategic merge patch** (`application/strategic-merge-patch+json`) follows apimachinery's
//!   `strategicpatch` (server side: `StrategicMergeMapPatch`), guided by a [`PatchMeta`] for the
//!   merge keys and strategies of the built-in types. Custom resources have no patch metadata:
//!   the caller refuses strategic merge on them with 415, as Kubernetes does. Deliberate
//!   differences from apimachinery, all where it would leak directives or misbehave:
//!   directives never reach the result (new subtrees are merged into nothing rather than copied);
//!   `$patch: delete` on a map removes the key instead of leaving `{}`; `$patch: merge` is
//!   accepted as the no-op it means; `$deleteFromPrimitiveList` deletes even from lists without
//!   merge strategy; `$retainKeys` is honoured wherever it appears (kubectl only sends it where
//!   the strategy has `retainKeys`).
//! - **Apply** (`application/apply-patch+yaml`) is server-side apply, handled elsewhere:
//!   [`apply_patch`] answers [`PatchError::ApplyNotHandledHere`].

use crate::patch_meta::PatchMeta;
use serde_json::{Map, Value};

#[path = "patch/order.rs"]
mod order;
#[path = "patch/strategic.rs"]
mod strategic;

/// Kubernetes refuses JSON patches with more operations than this (413).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The four PATCH body kinds, named by their Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`: RFC 6902 operations.
    Json,
    /// `application/merge-patch+json`: RFC 7396 merge patch.
    Merge,
    /// `application/strategic-merge-patch+json`: Kubernetes strategic merge patch.
    StrategicMerge,
    /// `application/apply-patch+yaml`: server-side apply.
    Apply,
}

impl PatchType {
    /// Picks the patch kind from a Content-Type header (parameters and case ignored); anything
    /// else is [`PatchError::UnsupportedMediaType`] (415).
    pub fn from_content_type(content_type: &str) -> Result<Self, PatchError> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::StrategicMerge),
            "application/apply-patch+yaml" => Ok(Self::Apply),
            _ => Err(PatchError::UnsupportedMediaType(content_type.to_owned())),
        }
    }

    /// The media type this kind is sent with.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::StrategicMerge => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch could not be applied; [`PatchError::code`] is the HTTP status to answer with.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The Content-Type names no patch kind (415).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, \
         application/apply-patch+yaml, application/strategic-merge-patch+json"
    )]
    UnsupportedMediaType(String),
    /// Server-side apply bodies are not handled by [`apply_patch`] (415 if it ever escapes).
    #[error("server-side apply is not handled by this patch path")]
    ApplyNotHandledHere,
    /// The body is not JSON of the expected shape (400).
    #[error("invalid patch body: {0}")]
    DecodeBody(#[source] serde_json::Error),
    /// A merge or strategic merge patch body is not a JSON object (400).
    #[error("invalid patch body: a {0} must be a JSON object")]
    NotAnObject(&'static str),
    /// A JSON patch has more than [`MAX_JSON_PATCH_OPERATIONS`] operations (413).
    #[error("The allowed maximum operations in a JSON patch is {max}, got {got}")]
    TooManyOperations { max: usize, got: usize },
    /// A JSON patch operation failed, `test` included (422).
    #[error("json patch {op} operation {index} failed at path {path:?}: {reason}")]
    JsonPatchFailed {
        index: usize,
        op: &'static str,
        path: String,
        reason: String,
    },
    /// A strategic merge patch directive is malformed, e.g. `$setElementOrder/x` not a list (400).
    #[error("{0}")]
    BadDirective(String),
    /// A strategic merge patch does not fit the object or its schema, e.g. a merge-list element
    /// without its merge key or an unknown `$patch` value (422).
    #[error("{0}")]
    InvalidStrategicPatch(String),
}

impl PatchError {
    /// The HTTP status code Kubernetes answers this error with.
    pub fn code(&self) -> u16 {
        match self {
            Self::UnsupportedMediaType(_) | Self::ApplyNotHandledHere => 415,
            Self::DecodeBody(_) | Self::NotAnObject(_) | Self::BadDirective(_) => 400,
            Self::TooManyOperations { .. } => 413,
            Self::JsonPatchFailed { .. } | Self::InvalidStrategicPatch(_) => 422,
        }
    }
}

/// Applies a patch body of kind `kind` to `original` and returns the patched object. `meta`
/// describes the root object for strategic merge (use `NoMeta` where nothing is known); the
/// other kinds ignore it. `Apply` answers [`PatchError::ApplyNotHandledHere`].
pub fn apply_patch(
    kind: PatchType,
    original: &Value,
    patch_body: &[u8],
    meta: &impl PatchMeta,
) -> Result<Value, PatchError> {
    match kind {
        PatchType::Json => json_patch(original, patch_body),
        PatchType::Merge => {
            let patch: Value =
                serde_json::from_slice(patch_body).map_err(PatchError::DecodeBody)?;
            if !patch.is_object() {
                return Err(PatchError::NotAnObject("merge patch"));
            }
            let mut doc = original.clone();
            merge_patch(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::StrategicMerge => {
            let patch: Value =
                serde_json::from_slice(patch_body).map_err(PatchError::DecodeBody)?;
            let Value::Object(patch) = patch else {
                return Err(PatchError::NotAnObject("strategic merge patch"));
            };
            let original = match original {
                Value::Object(o) => o.clone(),
                _ => Map::new(),
            };
            Ok(Value::Object(
                strategic::merge_map(original, patch, Some(meta))?.unwrap_or_default(),
            ))
        }
        PatchType::Apply => Err(PatchError::ApplyNotHandledHere),
    }
}

fn json_patch(original: &Value, body: &[u8]) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_slice(body).map_err(PatchError::DecodeBody)?;
    if ops.0.len() > MAX_JSON_PATCH_OPERATIONS {
        let (max, got) = (MAX_JSON_PATCH_OPERATIONS, ops.0.len());
        return Err(PatchError::TooManyOperations { max, got });
    }
    // `patch_unsafe` on a copy: the copy is dropped on failure, and the crate's undo path
    // (which can panic) is never taken.
    let mut doc = original.clone();
    json_patch::patch_unsafe(&mut doc, &ops).map_err(|e| {
        use json_patch::PatchOperation as Op;
        let op = match ops.0.get(e.operation) {
            Some(Op::Add(_)) => "add",
            Some(Op::Remove(_)) => "remove",
            Some(Op::Replace(_)) => "replace",
            Some(Op::Move(_)) => "move",
            Some(Op::Copy(_)) => "copy",
            Some(Op::Test(_)) | None => "test",
        };
        PatchError::JsonPatchFailed {
            index: e.operation,
            op,
            path: e.path.to_string(),
            reason: e.kind.to_string(),
        }
    })?;
    Ok(doc)
}

/// RFC 7396: objects merge recursively, `null` removes a key, anything else replaces.
fn merge_patch(doc: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *doc = patch.clone();
        return;
    };
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Value::Object(doc) = doc {
        for (k, v) in patch {
            if v.is_null() {
                doc.shift_remove(k);
            } else {
                merge_patch(doc.entry(k.as_str()).or_insert(Value::Null), v);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::patch_meta::NoMeta;
    use serde_json::json;

    fn run(kind: PatchType, original: &Value, body: &str) -> Result<Value, PatchError> {
        apply_patch(kind, original, body.as_bytes(), &NoMeta)
    }

    #[test]
    fn content_types_pick_the_kind() {
        let t = |ct: &str| PatchType::from_content_type(ct).map_err(|e| e.code());
        assert_eq!(t("application/json-patch+json"), Ok(PatchType::Json));
        assert_eq!(
            t("Application/Merge-Patch+JSON; charset=utf-8"),
            Ok(PatchType::Merge)
        );
        assert_eq!(
            t("application/strategic-merge-patch+json"),
            Ok(PatchType::StrategicMerge)
        );
        assert_eq!(t("application/apply-patch+yaml"), Ok(PatchType::Apply));
        assert_eq!(t("application/json"), Err(415));
        assert_eq!(t(""), Err(415));
        for k in [
            PatchType::Json,
            PatchType::Merge,
            PatchType::StrategicMerge,
            PatchType::Apply,
        ] {
            assert_eq!(PatchType::from_content_type(k.media_type()).unwrap(), k);
        }
        let apply = run(PatchType::Apply, &json!({}), "{}").unwrap_err();
        assert!(matches!(apply, PatchError::ApplyNotHandledHere));
    }

    #[test]
    fn json_patch_ops_and_edge_cases() {
        let doc =
            json!({"metadata": {"labels": {"a/b": "1", "m~n": "2"}}, "spec": {"args": ["x"]}});
        let body = r#"[
            {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
            {"op": "remove", "path": "/metadata/labels/m~0n"},
            {"op": "add", "path": "/spec/args/-", "value": "z"},
            {"op": "add", "path": "/spec/args/1", "value": "y"},
            {"op": "copy", "from": "/spec/args/0", "path": "/spec/first"},
            {"op": "move", "from": "/spec/first", "path": "/spec/moved"},
            {"op": "replace", "path": "/metadata/labels/a~1b", "value": "3"}
        ]"#;
        let out = run(PatchType::Json, &doc, body).unwrap();
        let want = json!({"metadata": {"labels": {"a/b": "3"}}, "spec": {"args": ["x", "y", "z"], "moved": "x"}});
        assert_eq!(out, want);
        assert_eq!(run(PatchType::Json, &doc, "[]").unwrap(), doc);
    }

    #[test]
    fn json_patch_failures_are_422_with_the_op_index() {
        let doc = json!({"spec": {"replicas": 1}});
        let body = r#"[{"op": "replace", "path": "/spec/replicas", "value": 2},
                       {"op": "test", "path": "/spec/replicas", "value": 1}]"#;
        let e = run(PatchType::Json, &doc, body).unwrap_err();
        assert_eq!(e.code(), 422);
        assert!(
            matches!(
                e,
                PatchError::JsonPatchFailed {
                    index: 1,
                    op: "test",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "json patch test operation 1 failed at path \"/spec/replicas\": value did not match"
        );
        for bad in [
            r#"[{"op": "remove", "path": "/spec/missing"}]"#,
            r#"[{"op": "replace", "path": "/nope", "value": 1}]"#,
            r#"[{"op": "add", "path": "/a/b", "value": 1}]"#,
            r#"[{"op": "add", "path": "/spec/list/5", "value": 1}]"#,
            r#"[{"op": "move", "from": "/spec", "path": "/spec/x"}]"#,
        ] {
            assert_eq!(
                run(PatchType::Json, &doc, bad).unwrap_err().code(),
                422,
                "{bad}"
            );
        }
        for malformed in [
            "",
            "{}",
            "[{\"op\": \"frob\", \"path\": \"/a\"}]",
            "[{\"op\": \"add\", \"path\": \"a\", \"value\": 1}]",
        ] {
            assert_eq!(
                run(PatchType::Json, &doc, malformed).unwrap_err().code(),
                400,
                "{malformed}"
            );
        }
        let many = format!(
            "[{}]",
            vec![r#"{"op":"test","path":"","value":null}"#; 10_001].join(",")
        );
        assert_eq!(run(PatchType::Json, &doc, &many).unwrap_err().code(), 413);
    }

    #[test]
    fn merge_patch_follows_rfc7396_and_keeps_key_order() {
        let doc = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "f": "x"});
        let out = run(
            PatchType::Merge,
            &doc,
            r#"{"b": {"c": null, "g": {"h": null, "i": 1}}, "e": [3], "a": null}"#,
        );
        let out = out.unwrap();
        assert_eq!(
            out,
            json!({"b": {"d": 3, "g": {"i": 1}}, "e": [3], "f": "x"})
        );
        let keys: Vec<_> = out.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["b", "e", "f"]);
        assert_eq!(run(PatchType::Merge, &doc, "[1]").unwrap_err().code(), 400);
        assert_eq!(run(PatchType::Merge, &doc, "{").unwrap_err().code(), 400);
        assert_eq!(
            run(PatchType::StrategicMerge, &doc, "null")
                .unwrap_err()
                .code(),
            400
        );
    }
}
