//! delete and deletecollection: preconditions, graceful deletion (pods bound to a node),
//! finalizers and background deletion (namespaces, CRDs), dry runs.

use std::sync::Arc;

use serde_json::{Value, json};

use super::read::{Selectors, select};
use super::write::{commit, dry_run, meta_mut, now, run, str_at};
use super::{Ctx, Resp, json_resp, value_resp};
use crate::admission;
use crate::registry::Resource;
use crate::request::ResourcePath;
use crate::status::{self, ApiError, ApiResult};
use crate::store::{Event, EventType, Outcome, Stored};

/// `DeleteOptions`, from the body or the query.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub preconditions: Option<Preconditions>,
    pub propagation_policy: Option<String>,
}

/// `DeleteOptions.preconditions`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

fn delete_options(ctx: &Ctx, body: &[u8]) -> ApiResult<DeleteOptions> {
    let mut opts: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    if let Some(g) = ctx
        .query
        .int("gracePeriodSeconds")
        .map_err(ApiError::bad_request)?
    {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(p) = ctx.query.non_empty("propagationPolicy") {
        opts.propagation_policy = Some(p.to_string());
    }
    Ok(opts)
}

/// What deleting `cur` means now: gone, or marked (graceful, finalizers).
pub fn delete_decision(res: &Resource, cur: &Stored, opts: &DeleteOptions) -> ApiResult<Outcome> {
    let mut obj = cur.value();
    let name = cur.fields().field("metadata.name").unwrap_or("");
    if let Some(p) = &opts.preconditions {
        let uid = str_at(&obj, "/metadata/uid").unwrap_or("");
        if let Some(want) = p.uid.as_deref().filter(|u| *u != uid) {
            return Err(ApiError::conflict(
                &res.group,
                &res.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
            ));
        }
        if let Some(want) = p
            .resource_version
            .as_deref()
            .filter(|r| *r != cur.rv.to_string())
        {
            return Err(ApiError::conflict(
                &res.group,
                &res.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                    cur.rv
                ),
            ));
        }
    }
    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
    if let Some(grace) = admission::graceful_period(res, &obj, opts.grace_period_seconds) {
        let current = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64);
        if deleting && current.is_some_and(|c| c <= grace) {
            return Ok(Outcome::Unchanged);
        }
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
        let meta = meta_mut(&mut obj);
        meta.insert(
            "deletionTimestamp".into(),
            Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        return Ok(Outcome::Put(obj));
    }
    let finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if finalizers || admission::deletes_in_background(res) {
        if deleting {
            return Ok(Outcome::Unchanged);
        }
        let meta = meta_mut(&mut obj);
        meta.insert("deletionTimestamp".into(), Value::String(now()));
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        admission::on_delete_marked(res, &mut obj);
        return Ok(Outcome::Put(obj));
    }
    Ok(Outcome::Delete)
}

fn delete_answer(res: &Resource, ev: Option<Arc<Event>>, cur: Option<Stored>) -> Resp {
    match ev {
        Some(e) if e.kind == EventType::Deleted && !admission::returns_deleted_object(res) => {
            let v = &e.obj.value();
            value_resp(
                200,
                &status::success(
                    &res.group,
                    &res.plural,
                    str_at(v, "/metadata/name").unwrap_or(""),
                    str_at(v, "/metadata/uid").unwrap_or(""),
                ),
            )
        }
        Some(e) => json_resp(200, e.obj.raw.clone()),
        None => match cur {
            Some(c) => json_resp(200, c.raw.clone()),
            None => value_resp(200, &Value::Null),
        },
    }
}

/// DELETE of one object.
pub async fn delete(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    body: &[u8],
) -> ApiResult<Resp> {
    let opts = delete_options(ctx, body)?;
    let name = rp.name.clone().unwrap_or_default();
    let key = res.key(rp.namespace.as_deref(), &name);
    let dry = dry_run(ctx);
    let ev = run(&ctx.api, dry, &key, |cur, _| {
        let Some(cur) = cur else {
            return Err(ApiError::not_found(&res.group, &res.plural, &name));
        };
        delete_decision(res, cur, &opts)
    })?;
    commit(&ctx.api, dry, res, &ev).await?;
    let cur = ctx.api.store.get(&key);
    Ok(delete_answer(res, ev, cur))
}

/// DELETE of a collection (selectors apply).
pub async fn delete_collection(
    ctx: &mut Ctx,
    res: &Arc<Resource>,
    rp: &ResourcePath,
    body: &[u8],
) -> ApiResult<Resp> {
    let opts = delete_options(ctx, body)?;
    let sel = Selectors::from_ctx(ctx, res)?;
    let items = select(ctx, res, rp.namespace.as_deref(), &sel)?.items;
    let dry = dry_run(ctx);
    let mut out = Vec::new();
    for item in items {
        let fields = item.fields();
        let ns = fields
            .field("metadata.namespace")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let name = fields.field("metadata.name").unwrap_or("").to_string();
        let key = res.key(ns.as_deref(), &name);
        let ev = run(&ctx.api, dry, &key, |cur, _| match cur {
            Some(cur) => delete_decision(res, cur, &opts),
            None => Ok(Outcome::Unchanged),
        })?;
        commit(&ctx.api, dry, res, &ev).await?;
        if let Some(ev) = ev {
            out.push(ev.obj.value());
        }
    }
    let list = json!({
        "kind": res.list_kind,
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": ctx.api.store.current_rv().to_string()},
        "items": out,
    });
    Ok(value_resp(200, &list))
}
