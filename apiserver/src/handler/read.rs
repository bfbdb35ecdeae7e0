//! get and list: answers from the in-memory store, as JSON, YAML-free, or as a Table when
//! the client asks `as=Table` (kubectl does), or as protobuf for the built-in kinds that
//! have a message table when the client asks for protobuf first (client-go's typed
//! clients and informers do).

use base64::Engine;
use bytes::{BufMut, BytesMut};
use serde_json::{Value, json};

use super::{Ctx, Resp, json_resp, value_resp};
use crate::protobuf::ProtoKind;
use crate::registry::{Origin, Resource};
use crate::request::ResourcePath;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult};
use crate::store::{ListRequest, Snapshot, SnapshotError, Stored};
use crate::table::{self, Columns, IncludeObject};

mod stream;

/// The media type of protobuf bodies.
const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// Does the Accept header prefer protobuf to JSON and YAML (client-go's typed clients send
/// `application/vnd.kubernetes.protobuf, application/json`)? The highest `q` wins (default
/// 1; `q=0` is "not acceptable"), then the earlier range. Ranges with an `as=` parameter
/// (Tables) are not plain objects and are skipped.
pub fn prefers_protobuf(accept: &str) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let mut q = 1.0f32;
        let mut table = false;
        for p in parts {
            if p.starts_with("as=") {
                table = true;
            } else if let Some(v) = p.strip_prefix("q=") {
                q = v.parse().unwrap_or(0.0);
            }
        }
        let protobuf = match media {
            PROTOBUF => true,
            "application/json" | "application/yaml" | "application/*" | "*/*" => false,
            _ => continue,
        };
        if table || q <= 0.0 {
            continue;
        }
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, protobuf));
        }
    }
    best.is_some_and(|(_, protobuf)| protobuf)
}

/// The protobuf kind to answer `res` in, when the client prefers protobuf and the
/// resource is a built-in kind with a message table.
pub fn protobuf_kind(ctx: &Ctx, res: &Resource) -> Option<ProtoKind> {
    if !matches!(res.origin, Origin::Builtin { .. }) || !prefers_protobuf(&ctx.accept) {
        return None;
    }
    crate::protobuf::kind_of(&res.api_version(), &res.kind)
}

/// 406 for a client that accepts only protobuf, when an object cannot be encoded.
fn not_encodable(ctx: &Ctx) -> ApiResult<()> {
    if super::accepts_only_protobuf(&ctx.accept) {
        return Err(ApiError::not_acceptable(
            "an object has fields this server does not encode as protobuf; ask for application/json",
        ));
    }
    Ok(())
}

/// A protobuf response: the envelope (`k8s\0`, `runtime.Unknown`) around `raw`.
fn protobuf_resp(head: Vec<u8>, raw: &[u8]) -> Resp {
    let mut body = head;
    body.extend_from_slice(raw);
    let mut resp = json_resp(200, bytes::Bytes::from(body));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(PROTOBUF),
    );
    resp
}

/// Parsed `labelSelector` + `fieldSelector`.
#[derive(Debug, Default)]
pub struct Selectors {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    /// The resource's group and plural (built-in field aliases and defaults).
    pub group: String,
    pub plural: String,
    /// Every field the selectors read is in [`Stored::fields`] (else the object is parsed).
    pub indexed: bool,
}

/// Does every field `fields` reads have a copy in [`Stored::fields`] (the resource's
/// built-in selectable fields), so that matching needs no parse?
fn indexed(fields: Option<&FieldSelector>, group: &str, plural: &str) -> bool {
    let builtin = crate::selector::builtin_fields(group, plural);
    fields.is_none_or(|f| {
        f.requirements()
            .iter()
            .all(|r| builtin.contains(&r.field.as_str()))
    })
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
        let indexed = indexed(fields.as_ref(), &res.group, &res.plural);
        Ok(Self {
            labels,
            fields,
            group: res.group.clone(),
            plural: res.plural.clone(),
            indexed,
        })
    }

    /// No label and no field selector: everything matches.
    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    /// Does the stored `obj` match both selectors? Reads its [`Stored::fields`], or parses
    /// it when a selector reads other fields.
    pub fn matches_stored(&self, obj: &Stored) -> bool {
        if self.is_empty() {
            return true;
        }
        if !self.indexed {
            return self.matches(&obj.value());
        }
        let f = obj.fields();
        if let Some(l) = &self.labels
            && !l.matches_with(|k| f.label(k))
        {
            return false;
        }
        let Some(fs) = &self.fields else {
            return true;
        };
        if fs
            .requirements()
            .iter()
            .any(|r| f.field(&r.field).is_none())
        {
            return self.matches(&obj.value());
        }
        fs.matches_with(|name| std::borrow::Cow::Borrowed(f.field(name).unwrap_or("")))
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
            std::slice::from_ref(&obj.value()),
            include_object(ctx)?,
            &obj.rv.to_string(),
            None,
        );
        return Ok(value_resp(200, &t));
    }
    if let Some(kind) = protobuf_kind(ctx, res) {
        match obj.protobuf(&kind) {
            Some(raw) => {
                let head = crate::protobuf::envelope_head(kind.api_version, kind.kind, raw.len());
                return Ok(protobuf_resp(head, raw));
            }
            None => not_encodable(ctx)?,
        }
    }
    Ok(json_resp(200, obj.raw.clone()))
}

/// A continue token: the snapshot a list is paged through and where the next page starts.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Continue {
    /// Token format version (Kubernetes' tokens carry `meta.k8s.io/v1` too).
    v: String,
    /// The snapshot; `-1` after an expired token: read the current state.
    rv: i64,
    /// The key of the last item returned.
    start: String,
    /// Objects left after `start` (for `remainingItemCount`), when counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rem: Option<usize>,
}

const TOKEN_VERSION: &str = "meta.k8s.io/v1";

/// Encode a continue token.
fn continue_token(rv: i64, last_key: &str, rem: Option<usize>) -> String {
    let c = Continue {
        v: TOKEN_VERSION.into(),
        rv,
        start: last_key.to_string(),
        rem,
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&c).unwrap_or_default())
}

fn parse_continue(token: &str, prefix: &str) -> ApiResult<Continue> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<Continue>(&b).ok())
        .filter(|c| c.v == TOKEN_VERSION && c.start.starts_with(prefix) && c.rv >= -1)
        .ok_or_else(|| ApiError::bad_request("continue key is not valid: invalid continue token"))
}

/// Kubernetes' message for a continue token whose snapshot was compacted.
pub const EXPIRED_CONTINUE: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// The objects of a list request and where it stands.
#[derive(Debug)]
pub struct Selection {
    /// The matching objects of this page.
    pub items: Vec<Stored>,
    /// The list's resourceVersion (the snapshot it was read at).
    pub rv: u64,
    /// The continue token when more follow.
    pub next: Option<String>,
    /// `remainingItemCount` (only without selectors).
    pub remaining: Option<usize>,
}

fn list_options_invalid(field: &str, kind: &str, message: String) -> ApiError {
    let reason = match kind {
        "Unsupported value" => "FieldValueNotSupported",
        _ => "FieldValueForbidden",
    };
    ApiError::invalid(
        "ListOptions",
        "",
        vec![json!({"reason": reason, "field": field, "message": format!("{kind}: {message}")})],
        "meta.k8s.io",
    )
}

fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version {s:?}")))
}

/// Where a list reads: the snapshot, the continue point and the remaining count carried by a
/// continue token. Kubernetes' rules for `resourceVersion` × `resourceVersionMatch` ×
/// `limit` × `continue`: no version or `0` (any) read the current state; a version with
/// `NotOlderThan` — or, legacy, without a match and without a limit — reads the current
/// state once it is at least that new; `Exact` — or, legacy, a version with a limit — reads
/// that very snapshot; a continue token reads its snapshot.
fn plan(
    ctx: &Ctx,
    prefix: &str,
    limit: Option<usize>,
) -> ApiResult<(Snapshot, Option<String>, Option<usize>)> {
    let rv = ctx.query.non_empty("resourceVersion");
    let rvm = ctx.query.non_empty("resourceVersionMatch");
    if let Some(token) = ctx.query.non_empty("continue") {
        if rv.is_some() {
            return Err(ApiError::bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        if rvm.is_some() {
            return Err(list_options_invalid(
                "resourceVersionMatch",
                "Forbidden",
                "resourceVersionMatch is forbidden when continue is provided".into(),
            ));
        }
        let c = parse_continue(token, prefix)?;
        let at = u64::try_from(c.rv).map_or(Snapshot::Latest, Snapshot::At);
        return Ok((at, Some(c.start), c.rem));
    }
    let current = ctx.api.store.current_rv();
    let not_older_than = |n: u64| {
        if n > current {
            Err(ApiError::too_large_resource_version(n, current))
        } else {
            Ok(Snapshot::Latest)
        }
    };
    let at = match (rvm, rv) {
        (Some(m), _) if m != "Exact" && m != "NotOlderThan" => {
            return Err(list_options_invalid(
                "resourceVersionMatch",
                "Unsupported value",
                format!("\"{m}\": supported values: \"Exact\", \"NotOlderThan\", \"\""),
            ));
        }
        (Some(_), None) => {
            return Err(list_options_invalid(
                "resourceVersionMatch",
                "Forbidden",
                "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
            ));
        }
        (Some("Exact"), Some("0")) => {
            return Err(list_options_invalid(
                "resourceVersionMatch",
                "Forbidden",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"".into(),
            ));
        }
        (_, None | Some("0")) => Snapshot::Latest,
        (Some("Exact"), Some(n)) => Snapshot::At(parse_rv(n)?),
        (None, Some(n)) if limit.is_some() => Snapshot::At(parse_rv(n)?),
        (_, Some(n)) => not_older_than(parse_rv(n)?)?,
    };
    Ok((at, None, None))
}

/// The objects of a list request: one page at the snapshot the request names.
pub fn select(
    ctx: &Ctx,
    res: &Resource,
    namespace: Option<&str>,
    sel: &Selectors,
) -> ApiResult<Selection> {
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
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    let (at, after, carried) = plan(ctx, &prefix, limit)?;
    let unfiltered = sel.labels.is_none() && sel.fields.is_none();
    let req = ListRequest {
        prefix: &prefix,
        at,
        after: after.as_deref(),
        limit,
        count_remaining: unfiltered && carried.is_none(),
    };
    let page = ctx
        .api
        .store
        .list_page(&req, &mut |o| unfiltered || sel.matches_stored(o))
        .map_err(|e| match (e, &after) {
            (SnapshotError::Compacted { .. }, Some(start)) => {
                let mut err = ApiError::gone(EXPIRED_CONTINUE);
                err.metadata = Some(Box::new(
                    json!({"continue": continue_token(-1, start, None)}),
                ));
                err
            }
            (SnapshotError::Compacted { requested, oldest }, None) => {
                ApiError::gone(format!("too old resource version: {requested} ({oldest})"))
            }
            (SnapshotError::TooNew { requested, current }, _) => {
                ApiError::too_large_resource_version(requested, current)
            }
        })?;
    let remaining = if unfiltered && page.next.is_some() {
        page.remaining
            .or_else(|| carried.map(|before| before.saturating_sub(page.items.len())))
    } else {
        None
    };
    let rv = i64::try_from(page.rv).unwrap_or(i64::MAX);
    let next = page
        .next
        .as_deref()
        .map(|k| continue_token(rv, k, remaining));
    Ok(Selection {
        items: page.items,
        rv: page.rv,
        next,
        remaining,
    })
}

/// GET of a collection: streamed from the stored bytes (see `stream`).
pub async fn list(ctx: &Ctx, res: &Resource, rp: &ResourcePath) -> ApiResult<Resp> {
    let sel = Selectors::from_ctx(ctx, res)?;
    let s = select(ctx, res, rp.namespace.as_deref(), &sel)?;
    ctx.api.store.durable(s.rv).await?;
    if wants_table(ctx) {
        let include = include_object(ctx)?;
        let rv = s.rv.to_string();
        let mut opts = table::TableOptions::new(include, &rv);
        opts.continue_token = s.next.as_deref();
        let (rows, envelope) = table::TableRows::new(columns(res), &opts);
        let head = open_array(&envelope);
        let chunks = stream::Chunks::new(&head, s.items, TableItems(rows), b"]}");
        return Ok(stream::chunked_resp(chunks, "application/json"));
    }
    let mut s = s;
    if let Some(kind) = protobuf_kind(ctx, res) {
        // The first protobuf list of many objects encodes each of them (~0.1 ms a pod):
        // off the async workers, which keep serving other requests meanwhile.
        let head;
        (s, head) = if s.items.len() > 64 {
            tokio::task::spawn_blocking(move || {
                let head = protobuf_head(&kind, &s);
                (s, head)
            })
            .await
            .map_err(|e| ApiError::internal(format!("encoding a list: {e}")))?
        } else {
            let head = protobuf_head(&kind, &s);
            (s, head)
        };
        match head {
            Some(head) => {
                let chunks = stream::Chunks::new(&head, s.items, ProtoItems(kind), b"");
                return Ok(stream::chunked_resp(chunks, PROTOBUF));
            }
            None => not_encodable(ctx)?,
        }
    }
    let head = open_array(&list_head(res, &s));
    let chunks = stream::Chunks::new(&head, s.items, stream::RawItems, b"]}");
    Ok(stream::chunked_resp(chunks, "application/json"))
}

/// The head of a protobuf list of `s`: the envelope and the list's metadata, up to its
/// items — or `None` when an item cannot be encoded. Encodes (or finds encoded) every item:
/// the envelope states the length of the whole list.
fn protobuf_head(kind: &ProtoKind, s: &Selection) -> Option<Vec<u8>> {
    let remaining = s.remaining.map(|r| i64::try_from(r).unwrap_or(i64::MAX));
    let meta = crate::protobuf::list_meta(&s.rv.to_string(), s.next.as_deref(), remaining);
    let mut len = meta.len();
    for item in &s.items {
        let n = item.protobuf(kind)?.len();
        len += crate::protobuf::item_head(n).len() + n;
    }
    let list_kind = format!("{}List", kind.kind);
    let mut head = crate::protobuf::envelope_head(kind.api_version, &list_kind, len);
    head.extend(meta);
    Some(head)
}

/// Protobuf list items: each object's message (encoded once per stored version), keyed as
/// the list's `items`.
struct ProtoItems(ProtoKind);

impl stream::RenderItems for ProtoItems {
    fn render(&mut self, item: &Stored, out: &mut BytesMut) {
        // Every item was encoded by `protobuf_head`; this reads the kept bytes.
        if let Some(raw) = item.protobuf(&self.0) {
            out.put_slice(&crate::protobuf::item_head(raw.len()));
            out.put_slice(raw);
        }
    }

    fn separator(&self) -> &'static [u8] {
        b""
    }
}

/// Table rows, rendered from the parsed objects.
struct TableItems(table::TableRows);

impl stream::RenderItems for TableItems {
    fn render(&mut self, item: &Stored, out: &mut BytesMut) {
        let row = self.0.row(&item.value());
        let _ = serde_json::to_writer((&mut *out).writer(), &row);
    }
}

/// The serialised `envelope` up to and including the `[` of its last key, an empty array
/// (`…,"items":[` of `…,"items":[]}`).
fn open_array(envelope: &Value) -> Vec<u8> {
    let mut head = serde_json::to_vec(envelope).unwrap_or_default();
    if head.ends_with(b"]}") {
        head.truncate(head.len() - 2);
    }
    head
}

/// `{"kind":"<Kind>List","apiVersion":..,"metadata":{..},"items":[]}`.
fn list_head(res: &Resource, s: &Selection) -> Value {
    let mut meta = json!({"resourceVersion": s.rv.to_string()});
    if let Some(n) = &s.next {
        meta["continue"] = Value::String(n.clone());
    }
    if let Some(r) = s.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    json!({"kind": res.list_kind, "apiVersion": res.api_version(), "metadata": meta, "items": []})
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_is_chosen_by_order_and_quality() {
        for (accept, want) in [
            (
                "application/vnd.kubernetes.protobuf, application/json",
                true,
            ),
            ("application/vnd.kubernetes.protobuf", true),
            (
                "application/json, application/vnd.kubernetes.protobuf",
                false,
            ),
            ("application/json", false),
            ("", false),
            ("*/*", false),
            (
                "application/vnd.kubernetes.protobuf;q=0.5, application/json",
                false,
            ),
            (
                "application/json;q=0.9, application/vnd.kubernetes.protobuf",
                true,
            ),
            (
                "application/vnd.kubernetes.protobuf;q=0, application/json;q=0.1",
                false,
            ),
            ("text/html, application/vnd.kubernetes.protobuf", true),
            (
                "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json",
                false,
            ),
        ] {
            assert_eq!(prefers_protobuf(accept), want, "{accept}");
        }
    }

    fn sel(group: &str, plural: &str, labels: &str, fields: &str) -> Selectors {
        let fields = (!fields.is_empty()).then(|| FieldSelector::parse(fields).unwrap());
        let indexed = indexed(fields.as_ref(), group, plural);
        Selectors {
            labels: (!labels.is_empty()).then(|| LabelSelector::parse(labels).unwrap()),
            fields,
            group: group.into(),
            plural: plural.into(),
            indexed,
        }
    }

    /// Matching a stored object by its selector fields gives what matching its parsed value
    /// gives, for every kind of term.
    #[test]
    fn stored_fields_match_as_the_object_does() {
        let pods = [
            json!({"metadata": {"name": "a", "namespace": "d", "labels": {"app": "web", "tier": "1"}},
                   "spec": {"nodeName": "n1", "hostNetwork": true}, "status": {"phase": "Running"}}),
            json!({"metadata": {"name": "b", "namespace": "d", "labels": {"app": "db"}},
                   "spec": {}, "status": {"phase": "Pending"}}),
            json!({"metadata": {"name": "c", "namespace": "e"}}),
        ];
        let cases = [
            ("app=web", ""),
            ("app!=web", ""),
            ("app in (web,db),!tier", ""),
            ("tier>0", ""),
            ("", "spec.nodeName!="),
            ("", "spec.nodeName=n1,status.phase=Running"),
            ("", "spec.hostNetwork=false"),
            ("", "metadata.namespace=d,metadata.name!=a"),
            ("app", "status.phase!=Pending"),
        ];
        for p in &pods {
            let name = p["metadata"]["name"].as_str().unwrap();
            let stored = Stored::detached(p.clone(), &format!("core/pods/d/{name}"), 1);
            for (l, f) in cases {
                let s = sel("", "pods", l, f);
                assert!(s.indexed);
                assert_eq!(
                    s.matches_stored(&stored),
                    s.matches(&stored.value()),
                    "{name}: labels {l:?} fields {f:?}"
                );
            }
        }
        // A field outside the built-in table (a CRD's selectable field) reads the object.
        let w = json!({"metadata": {"name": "w"}, "spec": {"color": "red"}});
        let stored = Stored::detached(w, "example.com/widgets/d/w", 1);
        let s = sel("example.com", "widgets", "", "spec.color=red");
        assert!(!s.indexed);
        assert!(s.matches_stored(&stored));
        assert!(!sel("example.com", "widgets", "", "spec.color=blue").matches_stored(&stored));
    }
}
