//! update (PUT) and patch (JSON, merge, strategic merge; apply goes to `handler/apply.rs`),
//! of an object or its status, and POSTs to subresources (`serviceaccounts/<name>/token`).
//! [`finish_update`] is the tail every update shares, run under the store lock.

use std::sync::Arc;

use serde_json::{Value, json};

use super::write::{
    FieldValidation, Managing, check_type_meta, commit, dry_run, meta_mut, place_namespace,
    record_update, run, str_at, update_manager, validate_meta, validate_schema,
};
use super::{Ctx, Resp, decode_body, json_resp};
use crate::admission;
use crate::api::Api;
use crate::patch::{self, PatchType};
use crate::patch_meta::NoMeta;
use crate::registry::{Origin, Resource};
use crate::request::ResourcePath;
use crate::schema;
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, Outcome, Stored};

/// Carry what a client cannot change from `cur` into `new`, and bump `generation` when
/// anything but metadata and status changed.
fn carry_system_fields(res: &Resource, cur: &Value, new: &mut Value, sub: Option<&str>) {
    if sub == Some("status") {
        let status = new.as_object_mut().and_then(|m| m.remove("status"));
        let mut merged = cur.clone();
        match status {
            Some(s) => merged["status"] = s,
            None => {
                if let Some(m) = merged.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        *new = merged;
        return;
    }
    if res.has_status {
        match cur.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    let cur_meta = cur.get("metadata").unwrap_or(&Value::Null);
    let meta = meta_mut(new);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "generation",
    ] {
        match cur_meta.get(k) {
            Some(v) => {
                meta.insert(k.into(), v.clone());
            }
            None => {
                meta.remove(k);
            }
        }
    }
    meta.remove("selfLink");
    if !same_but_meta_and_status(cur, new) {
        let g = cur_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(new).insert("generation".into(), json!(g + 1));
    }
}

/// `a == b` but for `metadata` and `status` (without copying either object).
fn same_but_meta_and_status(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let skipped = |k: &str| k == "metadata" || k == "status";
    let count = |m: &serde_json::Map<String, Value>| m.keys().filter(|k| !skipped(k)).count();
    count(a) == count(b) && a.iter().all(|(k, v)| skipped(k) || b.get(k) == Some(v))
}

/// What an update is: its resource, subresource, validation mode, user and field manager.
pub(super) struct Writing<'a> {
    pub api: &'a Api,
    pub res: &'a Resource,
    pub sub: Option<&'a str>,
    pub mode: FieldValidation,
    pub user: &'a crate::auth::UserInfo,
    pub managing: Managing,
}

/// Attempts of [`run_optimistic`] before it computes the write under the store lock.
const OPTIMISTIC_ATTEMPTS: usize = 8;

/// Run a read-modify-write whose computation (patching, validation, admission,
/// `managedFields`) is too long to hold the store lock for: `f` runs on a snapshot of the
/// current object, outside the lock, and its outcome is stored only if the object is still
/// that version — otherwise it is computed again on the newer one (optimistic concurrency,
/// as kube-apiserver's `GuaranteedUpdate` does). Writes to different objects so no longer
/// queue behind each other's CPU work. Dry runs store nothing and need no check.
pub(super) fn run_optimistic<F>(
    api: &Api,
    dry: bool,
    key: &str,
    warnings: &mut Vec<String>,
    mut f: F,
) -> ApiResult<Option<Arc<Event>>>
where
    F: FnMut(&mut Vec<String>, Option<&Stored>) -> ApiResult<Outcome>,
{
    if !dry {
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let seen = api.store.get(key);
            let mark = warnings.len();
            let outcome = f(warnings, seen.as_ref())?;
            let mut raced = false;
            let ev = api.store.mutate(key, |now, _| {
                let same = match (now, &seen) {
                    (Some(a), Some(b)) => Stored::same(a, b),
                    (None, None) => true,
                    _ => false,
                };
                if same {
                    Ok(outcome)
                } else {
                    raced = true;
                    Ok(Outcome::Unchanged)
                }
            })?;
            if !raced {
                return Ok(ev);
            }
            warnings.truncate(mark);
        }
    }
    run(api, dry, key, |cur, _| f(warnings, cur))
}

/// Shared tail of update, patch and apply: the new object from the current one (`cur`,
/// parsed as `cur_value`).
pub(super) fn finish_update(
    warnings: &mut Vec<String>,
    w: &Writing<'_>,
    cur: &Stored,
    cur_value: &Value,
    mut new: Value,
) -> ApiResult<Outcome> {
    let (mode, api, res, sub, user) = (w.mode, w.api, w.res, w.sub, w.user);
    check_type_meta(res, &mut new)?;
    let want = str_at(&new, "/metadata/resourceVersion").unwrap_or("");
    let name = str_at(cur_value, "/metadata/name")
        .unwrap_or("")
        .to_string();
    if !want.is_empty() && want != cur.rv.to_string() {
        return Err(ApiError::conflict(
            &res.group,
            &res.plural,
            &name,
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    if str_at(&new, "/metadata/name").is_some_and(|n| n != name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            str_at(&new, "/metadata/name").unwrap_or("")
        )));
    }
    // An apply computed the managedFields; carrying a status write's metadata over from
    // `cur` must not lose them.
    let applied_fields = match w.managing {
        Managing::Applied => new.pointer("/metadata/managedFields").cloned(),
        Managing::Update(_) => None,
    };
    carry_system_fields(res, cur_value, &mut new, sub);
    if let Some(mf) = applied_fields {
        meta_mut(&mut new).insert("managedFields".into(), mf);
    }
    validate_schema(warnings, mode, res, &mut new)?;
    validate_meta(res, &new)?;
    admission::on_update(api, res, cur_value, &mut new, sub, user)?;
    record_update(res, sub, Some(cur_value), &mut new, &w.managing);
    // Unchanged apart from the version: no write, no event (as Kubernetes).
    if same_but_version(&new, cur_value) {
        return Ok(Outcome::Unchanged);
    }
    // The last finalizer removed from an object being deleted: it goes now.
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    let finalizers = new
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if deleting && !finalizers && !admission::waits_for_confirmation(res, &new) {
        return Ok(Outcome::Delete);
    }
    Ok(Outcome::Put(new))
}

/// Answer (200) of a write that may have changed nothing: the stored bytes of the object
/// as written (no clone of its tree, no second serialisation).
pub(super) fn written(ev: Option<Arc<Event>>, ctx: &Ctx, key: &str) -> Resp {
    let raw = match ev {
        Some(e) => e.obj.raw.clone(),
        None => ctx
            .api
            .store
            .get(key)
            .map(|s| s.raw.clone())
            .unwrap_or_else(|| bytes::Bytes::from_static(b"null")),
    };
    json_resp(200, raw)
}

/// `a == b` but for `metadata.resourceVersion` (without copying either object).
fn same_but_version(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let meta_eq = |x: Option<&Value>, y: Option<&Value>| match (x, y) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let rv = "resourceVersion";
            x.len() - usize::from(x.contains_key(rv)) == y.len() - usize::from(y.contains_key(rv))
                && x.iter().all(|(k, v)| k == rv || y.get(k) == Some(v))
        }
        (x, y) => x == y,
    };
    a.len() == b.len()
        && a.iter().all(|(k, v)| {
            if k == "metadata" {
                meta_eq(Some(v), b.get(k))
            } else {
                b.get(k) == Some(v)
            }
        })
}

/// PUT of an object or its status.
pub async fn update(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    body: &[u8],
) -> ApiResult<Resp> {
    let mode = FieldValidation::from_ctx(ctx)?;
    let managing = update_manager(ctx)?;
    let mut new = decode_body(&ctx.content_type, body)?;
    check_type_meta(res, &mut new)?;
    if res.namespaced {
        place_namespace(res, rp, &mut new)?;
    }
    let name = rp.name.clone().unwrap_or_default();
    let key = res.key(rp.namespace.as_deref(), &name);
    let api = ctx.api.clone();
    let dry = dry_run(ctx);
    let user = ctx.user.clone();
    let w = Writing {
        api: &api,
        res,
        sub: rp.subresource.as_deref(),
        mode,
        user: &user,
        managing,
    };
    let ev = run_optimistic(&api, dry, &key, &mut ctx.warnings, |warnings, cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&res.group, &res.plural, &name));
        };
        finish_update(warnings, &w, cur, &cur.value(), new.clone())
    })?;
    commit(&api, dry, res, &ev).await?;
    Ok(written(ev, ctx, &key))
}

/// PATCH of an object or its status (JSON, merge, strategic merge; apply is server-side
/// apply).
pub async fn patch(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    body: &[u8],
) -> ApiResult<Resp> {
    let mode = FieldValidation::from_ctx(ctx)?;
    let pt = PatchType::from_content_type(&ctx.content_type).map_err(patch_error)?;
    if pt == PatchType::StrategicMerge && res.is_custom() {
        return Err(ApiError::unsupported_media_type(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    if pt == PatchType::Apply {
        return super::apply::apply(ctx, res, rp, body, mode).await;
    }
    let managing = update_manager(ctx)?;
    let name = rp.name.clone().unwrap_or_default();
    let key = res.key(rp.namespace.as_deref(), &name);
    let api = ctx.api.clone();
    let dry = dry_run(ctx);
    let user = ctx.user.clone();
    let w = Writing {
        api: &api,
        res,
        sub: rp.subresource.as_deref(),
        mode,
        user: &user,
        managing,
    };
    let ev = run_optimistic(&api, dry, &key, &mut ctx.warnings, |warnings, cur| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&res.group, &res.plural, &name));
        };
        let cur_value = cur.value();
        let new = apply_patch_for(res, pt, &cur_value, body)?;
        finish_update(warnings, &w, cur, &cur_value, new)
    })?;
    commit(&api, dry, res, &ev).await?;
    Ok(written(ev, ctx, &key))
}

/// Apply a JSON, merge or strategic merge patch with the resource's patch metadata.
pub fn apply_patch_for(
    res: &Resource,
    pt: PatchType,
    cur: &Value,
    body: &[u8],
) -> ApiResult<Value> {
    let out = match (&res.origin, pt) {
        (Origin::Builtin { definition }, PatchType::StrategicMerge) => {
            match schema::builtin_schema(definition) {
                Some(meta) => patch::apply_patch(pt, cur, body, &meta),
                None => patch::apply_patch(pt, cur, body, &NoMeta),
            }
        }
        _ => patch::apply_patch(pt, cur, body, &NoMeta),
    };
    out.map_err(patch_error)
}

fn patch_error(e: patch::PatchError) -> ApiError {
    let code = e.code();
    let reason = match code {
        415 => "UnsupportedMediaType",
        413 => "RequestEntityTooLarge",
        422 => "Invalid",
        409 => "Conflict",
        _ => "BadRequest",
    };
    ApiError::new(code, reason, e.to_string())
}

/// POST to a subresource (`serviceaccounts/<name>/token`).
pub async fn create_subresource(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    body: &[u8],
) -> ApiResult<Resp> {
    if res.group.is_empty()
        && res.plural == "serviceaccounts"
        && rp.subresource.as_deref() == Some("token")
    {
        return crate::serviceaccount::token::token_request(ctx, rp, body).await;
    }
    Err(ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({}/{})",
        res.plural,
        rp.subresource.as_deref().unwrap_or("")
    )))
}
