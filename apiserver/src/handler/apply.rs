//! Server-side apply: `PATCH` with `application/apply-patch+yaml`.
//!
//! The body is an apply configuration (a partial object with `apiVersion`, `kind` and the
//! name); `fieldManager` is required, `force=true` takes conflicting fields over. The object
//! is created when absent (201) and merged into otherwise (200); `fieldmanager::apply`
//! decides the merge, the removals and the conflicts, then the write goes through the same
//! validation and admission as any other (`write::create_object`, `update::finish_update`).

use std::sync::Arc;

use serde_json::{Value, json};

use super::update::{Writing, finish_update, written};
use super::write::{
    FieldValidation, Managing, check_type_meta, commit, create_object, drop_unknown, dry_run,
    meta_mut, now, place_namespace, run, schema_of,
};
use super::{Ctx, Resp};
use crate::fieldmanager;
use crate::registry::Resource;
use crate::request::ResourcePath;
use crate::status::{ApiError, ApiResult};

/// Decode an apply configuration (YAML, or JSON as kubectl sends it).
fn decode(body: &[u8]) -> ApiResult<Value> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the apply configuration is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    Ok(v)
}

/// Check the configuration against the URL and take out what apply does not merge: the
/// resourceVersion (returned: a precondition), and the status (main resource) or everything
/// but the status (status subresource).
fn prepare(res: &Resource, rp: &ResourcePath, cfg: &mut Value) -> ApiResult<Option<String>> {
    for field in ["apiVersion", "kind"] {
        if cfg
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            let name = if field == "kind" {
                "Kind"
            } else {
                "APIVersion"
            };
            return Err(ApiError::bad_request(format!(
                "Object '{name}' is missing in the apply configuration"
            )));
        }
    }
    check_type_meta(res, cfg)?;
    if res.namespaced {
        place_namespace(res, rp, cfg)?;
    }
    let url_name = rp.name.clone().unwrap_or_default();
    let meta = meta_mut(cfg);
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("name".into(), json!(url_name));
        }
        Some(n) if n == url_name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({url_name})"
            )));
        }
    }
    if meta.get("managedFields").is_some_and(|m| !m.is_null()) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    meta.shift_remove("managedFields");
    let rv = match meta.shift_remove("resourceVersion") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    if let Some(m) = cfg.as_object_mut() {
        if rp.subresource.as_deref() == Some("status") {
            m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        } else if res.has_status {
            m.shift_remove("status");
        }
    }
    Ok(rv)
}

/// Server-side apply of the body to `rp`.
pub async fn apply(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    body: &[u8],
    mode: FieldValidation,
) -> ApiResult<Resp> {
    let manager = ctx
        .query
        .non_empty("fieldManager")
        .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply requests"))?
        .to_string();
    fieldmanager::check_manager(&manager)?;
    let force = ctx.query.flag("force");
    let mut cfg = decode(body)?;
    let want_rv = prepare(res, rp, &mut cfg)?;
    drop_unknown(&mut ctx.warnings, mode, res, &mut cfg)?;
    let name = rp.name.clone().unwrap_or_default();
    let sub = rp.subresource.as_deref();
    let api_version = res.api_version();
    let time = now();
    let op = fieldmanager::Op {
        manager: &manager,
        api_version: &api_version,
        subresource: sub,
        has_status: res.has_status,
        now: &time,
    };
    let key = res.key(rp.namespace.as_deref(), &name);
    let not_found = || ApiError::not_found(&res.group, &res.plural, &name);
    let conflict = |c: Vec<fieldmanager::Conflict>| fieldmanager::conflict_error(&c);
    let mut attempts = 0;
    while sub.is_none() && ctx.api.store.get(&key).is_none() {
        if want_rv.is_some() {
            return Err(not_found());
        }
        let obj =
            fieldmanager::apply(&json!({}), &cfg, schema_of(res), &op, force).map_err(conflict)?;
        match create_object(ctx, res, rp, obj, mode, Managing::Applied).await {
            // Created by someone else meanwhile: apply onto it.
            Err(e) if e.reason == "AlreadyExists" && attempts == 0 => attempts += 1,
            other => return other,
        }
    }
    let api = ctx.api.clone();
    let dry = dry_run(ctx);
    let user = ctx.user.clone();
    let w = Writing {
        api: &api,
        res,
        sub,
        mode,
        user: &user,
        managing: Managing::Applied,
    };
    let warnings = &mut ctx.warnings;
    let ev = run(&api, dry, &key, |cur, _| {
        let Some(cur) = cur else {
            return Err(not_found());
        };
        if let Some(want) = want_rv.as_deref().filter(|r| *r != cur.rv.to_string()) {
            return Err(ApiError::conflict(
                &res.group,
                &res.plural,
                &name,
                &format!(
                    "the object has been modified; please apply your changes to the latest version and try again (resourceVersion {want})"
                ),
            ));
        }
        let cur_value = cur.value();
        let new =
            fieldmanager::apply(&cur_value, &cfg, schema_of(res), &op, force).map_err(conflict)?;
        finish_update(warnings, &w, cur, &cur_value, new)
    })?;
    commit(&api, dry, res, &ev).await?;
    Ok(written(ev, ctx, &key))
}
