//! create, update and patch (server-side apply is `handler/apply.rs`, deletes
//! `handler/delete.rs`).
//!
//! Every write goes the same way: decode and check the body, compute the new object from
//! the current one inside [`Store::mutate`] (so the resourceVersion check and the write are
//! one step), validate it against the resource's schema and metadata rules, let
//! `admission` apply the kind's own rules, record the field manager's fields in
//! `metadata.managedFields` (`fieldmanager`), then wait until the write is durable and
//! answer. `dryRun=All` runs the same steps and stores nothing.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Ctx, Resp, decode_body, value_resp};
use crate::admission;
use crate::api::Api;
use crate::fieldmanager;
use crate::patch::{self, PatchType};
use crate::patch_meta::NoMeta;
use crate::registry::{Origin, Resource};
use crate::request::ResourcePath;
use crate::schema;
use crate::status::{ApiError, ApiResult};
use crate::store::{Event, EventType, Outcome, Stored};
use crate::validation;

/// How unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub(super) fn from_ctx(ctx: &Ctx) -> ApiResult<Self> {
        match ctx.query.get("fieldValidation").unwrap_or("") {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict; got {other:?}"
            ))),
        }
    }
}

pub(super) fn dry_run(ctx: &Ctx) -> bool {
    ctx.query.get("dryRun") == Some("All")
}

/// Run a mutation, or (dry run) only compute it.
pub(super) fn run<F>(api: &Api, dry: bool, key: &str, f: F) -> ApiResult<Option<Arc<Event>>>
where
    F: FnOnce(Option<&Stored>, u64) -> ApiResult<Outcome>,
{
    if !dry {
        return api.store.mutate(key, f);
    }
    let cur = api.store.get(key);
    let rv = api.store.current_rv();
    Ok(match f(cur.as_ref(), rv)? {
        Outcome::Unchanged => None,
        Outcome::Put(v) => Some(Arc::new(Event {
            rv,
            kind: EventType::Modified,
            key: key.to_string(),
            obj: crate::store::Stored::detached(v, rv),
            prev: cur,
        })),
        Outcome::Delete => cur.map(|c| {
            Arc::new(Event {
                rv,
                kind: EventType::Deleted,
                key: key.to_string(),
                obj: c.clone(),
                prev: Some(c),
            })
        }),
    })
}

/// After a real write: wait for durability and run the kind's follow-ups.
pub(super) async fn commit(
    api: &Arc<Api>,
    dry: bool,
    res: &Resource,
    ev: &Option<Arc<Event>>,
) -> ApiResult<()> {
    if let Some(ev) = ev
        && !dry
    {
        api.store.durable(ev.rv).await?;
        admission::after_write(api, res, ev).await;
    }
    Ok(())
}

/// Check `apiVersion`/`kind` of a body against the resource; fill them when absent.
pub(super) fn check_type_meta(res: &Resource, obj: &mut Value) -> ApiResult<()> {
    let want_av = res.api_version();
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the body must be an object"));
    };
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), Value::String(want_av));
        }
        Some(av) if av == want_av => {}
        Some(av) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), Value::String(res.kind.clone()));
        }
        Some(k) if k == res.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                res.kind
            )));
        }
    }
    if !map.get("metadata").is_some_and(Value::is_object) {
        if map.get("metadata").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        map.insert("metadata".into(), Value::Object(Map::new()));
    }
    Ok(())
}

/// Schema validation of a whole object: type errors are 422; unknown fields are refused
/// (Strict: 400 BadRequest, "strict decoding error", as Kubernetes answers), or dropped
/// with a warning (Warn) or silently (Ignore).
pub fn validate_schema(
    warnings: &mut Vec<String>,
    mode: FieldValidation,
    res: &Resource,
    obj: &mut Value,
) -> ApiResult<()> {
    let Some(schema) = schema_of(res) else {
        return Ok(());
    };
    drop_unknown(warnings, mode, res, obj)?;
    if res.is_custom() {
        schema::apply_defaults(schema, obj);
    }
    let v = schema::validate(schema, obj);
    if !v.errors.is_empty() {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let causes: Vec<Value> = v
            .errors
            .iter()
            .map(|e| json!({"reason": e.reason.as_str(), "message": e.message, "field": e.path}))
            .collect();
        return Err(ApiError::invalid(&res.kind, name, causes, &res.group));
    }
    Ok(())
}

/// The schema of a resource's objects, when it has one.
pub fn schema_of(res: &Resource) -> Option<schema::SchemaRef<'_>> {
    match &res.origin {
        Origin::Builtin { definition } => schema::builtin_schema(definition),
        Origin::Custom(cv) => Some(schema::crd_schema(&cv.schema)),
    }
}

/// Unknown fields: refused (Strict), dropped with a warning (Warn) or silently (Ignore);
/// nulls of non-nullable fields dropped. Values are not checked (apply configurations are
/// partial objects).
pub(super) fn drop_unknown(
    warnings: &mut Vec<String>,
    mode: FieldValidation,
    res: &Resource,
    obj: &mut Value,
) -> ApiResult<()> {
    let Some(schema) = schema_of(res) else {
        return Ok(());
    };
    let v = schema::validate(schema, obj);
    if !v.unknown_fields.is_empty() {
        match mode {
            FieldValidation::Strict => {
                let list: Vec<String> = v
                    .unknown_fields
                    .iter()
                    .map(|f| format!("unknown field \"{f}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{ver}\" cannot be handled as a {kind}: strict decoding error: {}",
                    list.join(", "),
                    kind = res.kind,
                    ver = res.version
                )));
            }
            FieldValidation::Warn => warnings.extend(
                v.unknown_fields
                    .iter()
                    .map(|f| format!("unknown field \"{f}\"")),
            ),
            FieldValidation::Ignore => {}
        }
    }
    // Unknown fields and nulls of non-nullable fields are dropped, as the decoder does,
    // before the values are checked.
    schema::prune(schema, obj);
    Ok(())
}

/// Who manages the fields a write sets.
#[derive(Debug, Clone)]
pub(super) enum Managing {
    /// A non-apply write by this manager: record an `Update` entry.
    Update(String),
    /// Server-side apply: managedFields were computed already.
    Applied,
}

/// The manager of a non-apply write: `fieldManager`, else from the user agent.
pub(super) fn update_manager(ctx: &Ctx) -> ApiResult<Managing> {
    if ctx.query.get("force").is_some() {
        return Err(ApiError::bad_request(
            "force: Invalid value: force is only allowed for apply requests",
        ));
    }
    let name = match ctx.query.non_empty("fieldManager") {
        Some(m) => m.to_string(),
        None => fieldmanager::default_manager(&ctx.user_agent),
    };
    fieldmanager::check_manager(&name)?;
    Ok(Managing::Update(name))
}

/// Record an `Update` by `managing` of `new` over `cur` (nothing for applies).
fn record_update(
    res: &Resource,
    sub: Option<&str>,
    cur: Option<&Value>,
    new: &mut Value,
    managing: &Managing,
) {
    let Managing::Update(manager) = managing else {
        return;
    };
    let api_version = res.api_version();
    let now = now();
    let op = fieldmanager::Op {
        manager,
        api_version: &api_version,
        subresource: sub,
        has_status: res.has_status,
        now: &now,
    };
    fieldmanager::update(cur, new, schema_of(res), &op);
}

/// Metadata rules (names, labels, annotations, finalizers).
pub(super) fn validate_meta(res: &Resource, obj: &Value) -> ApiResult<()> {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let errs = validation::validate_object_meta(
        &meta,
        validation::name_rule(&res.group, &res.plural),
        res.namespaced,
    );
    if errs.is_empty() {
        return Ok(());
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    let details = validation::to_status_details(&res.kind, name, &errs);
    let causes = details
        .get("causes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Err(ApiError::invalid(&res.kind, name, causes, &res.group))
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub(super) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable_meta(),
    }
}

#[allow(clippy::panic)]
fn unreachable_meta() -> ! {
    // metadata was made an object just above.
    panic!("metadata is an object")
}

pub(super) fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// Decide the namespace of a body against the URL.
pub(super) fn place_namespace(res: &Resource, rp: &ResourcePath, obj: &mut Value) -> ApiResult<()> {
    let meta = meta_mut(obj);
    if !res.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let Some(url_ns) = rp.namespace.as_deref() else {
        return Err(ApiError::bad_request(
            "a namespaced resource must be created in a namespace",
        ));
    };
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {
            meta.insert("namespace".into(), Value::String(url_ns.to_string()));
            Ok(())
        }
        Some(ns) if ns == url_ns => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
    }
}

/// POST to a collection.
pub async fn create(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    body: &[u8],
) -> ApiResult<Resp> {
    let mode = FieldValidation::from_ctx(ctx)?;
    let managing = update_manager(ctx)?;
    let obj = decode_body(&ctx.content_type, body)?;
    create_object(ctx, res, rp, obj, mode, managing).await
}

/// Create `obj` (decoded; for apply, already carrying its managedFields).
pub(super) async fn create_object(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    mut obj: Value,
    mode: FieldValidation,
    managing: Managing,
) -> ApiResult<Resp> {
    check_type_meta(res, &mut obj)?;
    place_namespace(res, rp, &mut obj)?;
    if let Some(ns) = rp.namespace.as_deref() {
        admission::check_namespace_open(&ctx.api, ns)?;
    }
    {
        let meta = meta_mut(&mut obj);
        let has_name = meta
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has_name {
            match meta.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let name = validation::generate_name(prefix);
                    meta.insert("name".into(), Value::String(name));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &res.kind,
                        "",
                        vec![
                            json!({"reason":"FieldValueRequired","message":"Required value: name or generateName is required","field":"metadata.name"}),
                        ],
                        &res.group,
                    ));
                }
            }
        }
        if meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now()));
        meta.insert("generation".into(), json!(1));
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        meta.remove("selfLink");
    }
    validate_schema(&mut ctx.warnings, mode, res, &mut obj)?;
    validate_meta(res, &obj)?;
    admission::on_create(&ctx.api, res, &mut obj, &ctx.user)?;
    record_update(res, None, None, &mut obj, &managing);
    let name = str_at(&obj, "/metadata/name").unwrap_or("").to_string();
    let key = res.key(rp.namespace.as_deref(), &name);
    let dry = dry_run(ctx);
    let ev = run(&ctx.api, dry, &key, |cur, _| match cur {
        Some(_) => Err(ApiError::already_exists(&res.group, &res.plural, &name)),
        None => Ok(Outcome::Put(obj)),
    })?;
    commit(&ctx.api, dry, res, &ev).await?;
    let obj = ev.map(|e| e.obj.value.clone()).unwrap_or(Value::Null);
    Ok(value_resp(201, &obj))
}

/// Carry what a client cannot change from `cur` into `new`, and bump `generation` when
/// anything but metadata and status changed.
fn carry_system_fields(res: &Resource, cur: &Value, new: &mut Value, sub: Option<&str>) {
    if sub == Some("status") {
        let status = new.get("status").cloned();
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
    let cur_meta = cur.get("metadata").cloned().unwrap_or(Value::Null);
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
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    if strip(cur) != strip(new) {
        let g = cur_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta_mut(new).insert("generation".into(), json!(g + 1));
    }
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

/// Shared tail of update, patch and apply, run under the store lock.
pub(super) fn finish_update(
    warnings: &mut Vec<String>,
    w: &Writing<'_>,
    cur: &Stored,
    mut new: Value,
) -> ApiResult<Outcome> {
    let (mode, api, res, sub, user) = (w.mode, w.api, w.res, w.sub, w.user);
    check_type_meta(res, &mut new)?;
    let want = str_at(&new, "/metadata/resourceVersion").unwrap_or("");
    let name = str_at(&cur.value, "/metadata/name")
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
    carry_system_fields(res, &cur.value, &mut new, sub);
    if let Some(mf) = applied_fields {
        meta_mut(&mut new).insert("managedFields".into(), mf);
    }
    validate_schema(warnings, mode, res, &mut new)?;
    validate_meta(res, &new)?;
    admission::on_update(api, res, &cur.value, &mut new, sub, user)?;
    record_update(res, sub, Some(&cur.value), &mut new, &w.managing);
    // Unchanged apart from the version: no write, no event (as Kubernetes).
    let mut a = new.clone();
    let mut b = cur.value.clone();
    for v in [&mut a, &mut b] {
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
    }
    if a == b {
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

/// Answer of a write that may have changed nothing.
pub(super) fn written(ev: Option<Arc<Event>>, ctx: &Ctx, key: &str) -> Value {
    match ev {
        Some(e) if e.kind != EventType::Deleted => e.obj.value.clone(),
        Some(e) => e.obj.value.clone(),
        None => ctx
            .api
            .store
            .get(key)
            .map(|s| s.value.clone())
            .unwrap_or(Value::Null),
    }
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
    let warnings = &mut ctx.warnings;
    let ev = run(&api, dry, &key, |cur, _| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&res.group, &res.plural, &name));
        };
        finish_update(warnings, &w, cur, new)
    })?;
    commit(&api, dry, res, &ev).await?;
    let out = written(ev, ctx, &key);
    Ok(value_resp(200, &out))
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
    let warnings = &mut ctx.warnings;
    let ev = run(&api, dry, &key, |cur, _| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&res.group, &res.plural, &name));
        };
        let new = apply_patch_for(res, pt, &cur.value, body)?;
        finish_update(warnings, &w, cur, new)
    })?;
    commit(&api, dry, res, &ev).await?;
    let out = written(ev, ctx, &key);
    Ok(value_resp(200, &out))
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
