//! get and list: answers from the in-memory store, as JSON, YAML-free, or as a Table when
//! the client asks `as=Table` (kubectl does).

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::{Ctx, Resp, json_resp, value_resp};
use crate::registry::{Origin, Resource};
use crate::request::ResourcePath;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::store::Stored;
use crate::table::{self, Columns, IncludeObject};

/// Parsed `labelSelector` + `fieldSelector`.
#[derive(Debug, Default)]
pub struct Selectors {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    /// The resource's group and plural (built-in field aliases and defaults).
    pub group: String,
    pub plural: String,
}

impl Selectors {
    /// Parse and check the selectors of a request against the resource.
    pub fn from_ctx(ctx: &Ctx, res: &Resource) -> ApiResult<Self> {
        let labels = match ctx.query.non_empty("labelSelector") {
            Some(s) => {
                Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        let fields = match ctx.query.non_empty("fieldSelector") {
            Some(s) => {
                let f =
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                let supported = res.selectable_fields();
                let names: Vec<&str> = supported.iter().map(String::as_str).collect();
                f.validate(&names)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                Some(f)
            }
            None => None,
        };
        Ok(Self {
            labels,
            fields,
            group: res.group.clone(),
            plural: res.plural.clone(),
        })
    }

    /// Does `obj` match both selectors?
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            let empty = serde_json::Map::new();
            let labels = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            if !l.matches(labels) {
                return false;
            }
        }
        if let Some(f) = &self.fields
            && !f.matches_resource(obj, &self.group, &self.plural)
        {
            return false;
        }
        true
    }
}

/// Table rendering requested by the Accept header, if any.
pub fn wants_table(ctx: &Ctx) -> bool {
    table::parse_table_accept(&ctx.accept).is_some()
}

/// The printer columns of a resource.
pub fn columns(res: &Resource) -> Columns<'_> {
    match &res.origin {
        Origin::Builtin { .. } => Columns::Builtin {
            group: &res.group,
            kind: &res.kind,
        },
        Origin::Custom(cv) => Columns::Custom(&cv.printer_columns),
    }
}

fn include_object(ctx: &Ctx) -> ApiResult<IncludeObject> {
    table::parse_include_object(ctx.query.get("includeObject"))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// GET of one object (or its status subresource).
pub async fn get(ctx: &Ctx, res: &Resource, rp: &ResourcePath) -> ApiResult<Resp> {
    let name = rp.name.as_deref().unwrap_or("");
    let key = res.key(rp.namespace.as_deref(), name);
    let obj = ctx
        .api
        .store
        .get(&key)
        .ok_or_else(|| ApiError::not_found(&res.group, &res.plural, name))?;
    ctx.api.store.durable(obj.rv).await?;
    if wants_table(ctx) {
        let t = table::table(
            columns(res),
            std::slice::from_ref(&obj.value),
            include_object(ctx)?,
            &obj.rv.to_string(),
            None,
        );
        return Ok(value_resp(200, &t));
    }
    Ok(json_resp(200, obj.raw.clone()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: u64,
    start: String,
}

/// Encode a continue token.
fn continue_token(rv: u64, last_key: &str) -> String {
    let c = Continue {
        rv,
        start: last_key.to_string(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&c).unwrap_or_default())
}

fn parse_continue(token: &str) -> ApiResult<Continue> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::bad_request("invalid continue token"))
}

/// The objects of a list request, the list's resourceVersion and a continue token.
pub fn select(
    ctx: &Ctx,
    res: &Resource,
    namespace: Option<&str>,
    sel: &Selectors,
) -> ApiResult<(Vec<Stored>, u64, Option<String>)> {
    let mut prefix = res.prefix();
    if let Some(ns) = namespace {
        prefix.push_str(ns);
        prefix.push('/');
    }
    let limit = ctx
        .query
        .int("limit")
        .map_err(ApiError::bad_request)?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    let cont = match ctx.query.non_empty("continue") {
        Some(t) => Some(parse_continue(t)?),
        None => None,
    };
    let (items, rv) = ctx
        .api
        .store
        .list(&prefix, cont.as_ref().map(|c| c.start.as_str()));
    let mut out = Vec::new();
    let mut next = None;
    let mut last_key = String::new();
    for (k, obj) in items {
        if !sel.matches(&obj.value) {
            continue;
        }
        if let Some(l) = limit
            && out.len() == l
        {
            next = Some(continue_token(rv, &last_key));
            break;
        }
        last_key = k;
        out.push(obj);
    }
    Ok((out, rv, next))
}

/// GET of a collection.
pub async fn list(ctx: &Ctx, res: &Resource, rp: &ResourcePath) -> ApiResult<Resp> {
    let sel = Selectors::from_ctx(ctx, res)?;
    let (items, rv, next) = select(ctx, res, rp.namespace.as_deref(), &sel)?;
    ctx.api.store.durable(rv).await?;
    if wants_table(ctx) {
        let values: Vec<Value> = items.iter().map(|o| o.value.clone()).collect();
        let t = table::table(
            columns(res),
            &values,
            include_object(ctx)?,
            &rv.to_string(),
            next.as_deref(),
        );
        return Ok(value_resp(200, &t));
    }
    Ok(json_resp(200, list_body(res, &items, rv, next.as_deref())))
}

/// `{"kind":"<Kind>List","apiVersion":..,"metadata":{..},"items":[..]}` from stored bytes.
pub fn list_body(res: &Resource, items: &[Stored], rv: u64, next: Option<&str>) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(n) = next {
        meta["continue"] = Value::String(n.to_string());
    }
    let head = json!({"kind": res.list_kind, "apiVersion": res.api_version(), "metadata": meta});
    let head = serde_json::to_vec(&head).unwrap_or_default();
    let size: usize = items.iter().map(|i| i.raw.len() + 1).sum();
    let mut out = BytesMut::with_capacity(head.len() + size + 16);
    out.put_slice(&head[..head.len() - 1]);
    out.put_slice(b",\"items\":[");
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&it.raw);
    }
    out.put_slice(b"]}");
    out.freeze()
}
