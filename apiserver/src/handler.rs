//! HTTP request handling: authenticate, route, dispatch to a verb, answer in JSON (or a
//! Table), audit and count. Start at [`handle`]; the verbs live in `handler/read.rs`,
//! `handler/write.rs` and `handler/watch.rs`; kind-specific rules in `admission`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use serde_json::Value;

use crate::api::{Api, RequestLabels};
use crate::auth::UserInfo;
use crate::registry::Resource;
use crate::request::{Query, ResourcePath, Route, route};
use crate::status::{ApiError, ApiResult};

pub mod apply;
pub mod delete;
pub mod read;
pub mod review;
pub mod update;
pub mod watch;
pub mod write;

/// Response body: a whole buffer or a stream (watch).
pub type Body = BoxBody<Bytes, std::io::Error>;
/// A response.
pub type Resp = Response<Body>;

/// One request, parsed.
#[derive(Debug)]
pub struct Ctx {
    pub api: Arc<Api>,
    pub user: UserInfo,
    pub query: Query,
    pub accept: String,
    pub content_type: String,
    /// `User-Agent` (names the field manager of writes without `fieldManager`).
    pub user_agent: String,
    /// Warnings for the `Warning` header (e.g. dropped unknown fields).
    pub warnings: Vec<String>,
}

/// A body from bytes.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A JSON response.
pub fn json_resp(code: u16, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// A JSON response from a value.
pub fn value_resp(code: u16, v: &Value) -> Resp {
    json_resp(code, serde_json::to_vec(v).unwrap_or_default())
}

/// The Status response of an error.
pub fn error_resp(e: &ApiError) -> Resp {
    value_resp(e.code, &e.to_status())
}

/// What the verb was, for metrics and the audit log.
fn verb_of(method: &Method, rp: Option<&ResourcePath>, q: &Query) -> &'static str {
    let named = rp.is_some_and(|p| p.name.is_some());
    match *method {
        Method::GET if q.flag("watch") => "watch",
        Method::GET if named || rp.is_none() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// Handle one request. `peer` is the identity of a verified client certificate, if any.
pub async fn handle<B>(api: Arc<Api>, peer: Option<UserInfo>, req: Request<B>) -> Resp
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let uri = req.uri().to_string();
    let rt = route(&path);
    let rp = match &rt {
        Some(Route::Resource(p)) => Some(p.clone()),
        _ => None,
    };
    let verb = verb_of(req.method(), rp.as_ref(), &query);
    let public = matches!(
        rt,
        Some(Route::Healthz | Route::Livez | Route::Readyz | Route::Version)
    );
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match crate::auth::authenticate(peer.as_ref(), auth_header, &api.tokens) {
        Ok(u) => Some(u),
        Err(_) if public => None,
        Err(_) => {
            api.reject("unauthenticated");
            let resp = error_resp(&ApiError::unauthorized());
            finish(&api, None, verb, rp.as_ref(), &uri, &resp);
            return resp;
        }
    };
    let resp = match rt {
        None => error_resp(&ApiError::no_route()),
        Some(Route::Healthz | Route::Livez) => plain(200, "ok"),
        Some(Route::Readyz) if api.is_ready() => plain(200, "ok"),
        Some(Route::Readyz) => plain(500, "not ready: bootstrap in progress"),
        Some(Route::Metrics) => metrics_resp(&api),
        Some(Route::Resource(rp)) => {
            let ctx = Ctx {
                api: api.clone(),
                user: user.clone().unwrap_or_else(|| {
                    UserInfo::new("system:anonymous", ["system:unauthenticated"])
                }),
                query,
                accept: header_str(&req, header::ACCEPT),
                content_type: header_str(&req, header::CONTENT_TYPE),
                user_agent: header_str(&req, header::USER_AGENT),
                warnings: Vec::new(),
            };
            resource(ctx, rp, req).await
        }
        Some(other) => {
            match crate::discovery::serve(&api, &other, &header_str(&req, header::ACCEPT)) {
                Ok(r) => r,
                Err(e) => error_resp(&e),
            }
        }
    };
    finish(&api, user.as_ref(), verb, rp.as_ref(), &uri, &resp);
    resp
}

fn finish(
    api: &Api,
    user: Option<&UserInfo>,
    verb: &str,
    rp: Option<&ResourcePath>,
    uri: &str,
    resp: &Resp,
) {
    let code = resp.status().as_u16();
    let resource = rp.map(|p| p.plural.as_str()).unwrap_or("");
    api.metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: verb.to_string(),
            resource: resource.to_string(),
            code,
        })
        .inc();
    if let Some(audit) = &api.audit {
        let none = Vec::new();
        audit.record(&crate::audit::AuditEvent {
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            user: user.map(|u| u.name.as_str()).unwrap_or("system:anonymous"),
            groups: user.map(|u| &u.groups).unwrap_or(&none),
            verb,
            group: rp.map(|p| p.group.as_str()).unwrap_or(""),
            resource,
            subresource: rp.and_then(|p| p.subresource.as_deref()).unwrap_or(""),
            namespace: rp.and_then(|p| p.namespace.as_deref()).unwrap_or(""),
            name: rp.and_then(|p| p.name.as_deref()).unwrap_or(""),
            uri,
            code,
        });
    }
    tracing::debug!(verb, resource, code, uri, "request");
}

fn plain(code: u16, text: &'static str) -> Resp {
    let mut r = Response::new(full(text));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn metrics_resp(api: &Api) -> Resp {
    let mut out = String::new();
    if let Ok(reg) = api.prom.lock() {
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    }
    let mut r = Response::new(full(out));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

fn header_str<B>(req: &Request<B>, h: header::HeaderName) -> String {
    req.headers()
        .get(h)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

async fn resource<B>(mut ctx: Ctx, rp: ResourcePath, req: Request<B>) -> Resp
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    let method = req.method().clone();
    if review::is_review(&rp) {
        let answer = match read_body(&ctx, req).await {
            Ok(body) => review::answer(&ctx, &method, &rp, &body),
            Err(e) => Err(e),
        };
        return answer.unwrap_or_else(|e| refused(&ctx, &e));
    }
    let res = match ctx.api.registry.get(&rp.group, &rp.version, &rp.plural) {
        Some(r) => r,
        None => {
            ctx.api.reject("unknown_resource");
            return error_resp(&ApiError::no_route());
        }
    };
    if let Err(e) = check_scope(&res, &rp) {
        return error_resp(&e);
    }
    let protobuf_read = method == Method::GET
        && !ctx.query.flag("watch")
        && read::protobuf_kind(&ctx, &res).is_some();
    if accepts_only_protobuf(&ctx.accept) && !protobuf_read {
        return error_resp(&ApiError::not_acceptable(
            "protobuf responses are served for get and list of built-in kinds only; ask for application/json",
        ));
    }
    let result: ApiResult<Resp> = async {
        let body = if matches!(
            method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            read_body(&ctx, req).await?
        } else {
            Bytes::new()
        };
        match (&method, rp.name.is_some()) {
            (&Method::GET, false) if ctx.query.flag("watch") => watch::watch(&ctx, &res, &rp).await,
            (&Method::GET, false) => read::list(&ctx, &res, &rp).await,
            (&Method::GET, true) => read::get(&ctx, &res, &rp).await,
            (&Method::POST, false) => write::create(&mut ctx, &res, &rp, &body).await,
            (&Method::POST, true) if rp.subresource.is_some() => {
                update::create_subresource(&mut ctx, &res, &rp, &body).await
            }
            (&Method::PUT, true) => update::update(&mut ctx, &res, &rp, &body).await,
            (&Method::PATCH, true) => update::patch(&mut ctx, &res, &rp, &body).await,
            (&Method::DELETE, true) => delete::delete(&mut ctx, &res, &rp, &body).await,
            (&Method::DELETE, false) => delete::delete_collection(&mut ctx, &res, &rp, &body).await,
            _ => Err(method_not_allowed(&method)),
        }
    }
    .await;
    let mut resp = result.unwrap_or_else(|e| refused(&ctx, &e));
    for w in &ctx.warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// The error response for `e`; bad input (400, 413, 415, 422) is counted by reason.
fn refused(ctx: &Ctx, e: &ApiError) -> Resp {
    if matches!(e.code, 400 | 413 | 415 | 422) {
        ctx.api.reject(e.reason);
    }
    error_resp(e)
}

/// 405 for `method` on a resource that does not take it.
pub(crate) fn method_not_allowed(method: &Method) -> ApiError {
    ApiError::method_not_allowed(format!(
        "the server does not allow this method on the requested resource ({method})"
    ))
}

fn check_scope(res: &Resource, rp: &ResourcePath) -> ApiResult<()> {
    if !res.namespaced && rp.namespace.is_some() {
        return Err(ApiError::no_route());
    }
    if res.namespaced && rp.name.is_some() && rp.namespace.is_none() {
        return Err(ApiError::no_route());
    }
    match rp.subresource.as_deref() {
        None => Ok(()),
        Some("status") if res.has_status => Ok(()),
        Some("finalize") if res.plural == "namespaces" && res.group.is_empty() => Ok(()),
        Some("token") if res.plural == "serviceaccounts" && res.group.is_empty() => Ok(()),
        Some(_) => Err(ApiError::no_route()),
    }
}

fn accepts_only_protobuf(accept: &str) -> bool {
    !accept.is_empty()
        && accept.split(',').all(|a| {
            let a = a.trim();
            a.starts_with("application/vnd.kubernetes.protobuf")
        })
}

async fn read_body<B>(ctx: &Ctx, req: Request<B>) -> ApiResult<Bytes>
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Display,
{
    use bytes::BufMut;
    let limit = ctx.api.cfg.max_body_bytes;
    // Past the limit the rest is read and dropped (up to a bound) so that the client
    // receives the 413 instead of a connection reset in the middle of its upload.
    let drain_bound = limit.saturating_mul(8).max(64 << 20);
    let mut body = std::pin::pin!(req.into_body());
    let mut out = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen <= limit {
                out.put_slice(&data);
            } else if seen > drain_bound {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ApiError::too_large(limit));
    }
    Ok(out.freeze())
}

/// Decode a request body as JSON or YAML by its Content-Type.
pub fn decode_body(content_type: &str, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let v: Value = match ct.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            serde_saphyr::from_str(text)
                .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?
        }
        "application/vnd.kubernetes.protobuf" => match crate::protobuf::decode(body) {
            Ok(v) => v,
            Err(e @ crate::protobuf::ProtoError::Unsupported(_)) => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml ({e})"
                )));
            }
            Err(e) => return Err(ApiError::bad_request(e.to_string())),
        },
        other => {
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: application/json, application/yaml"
            )));
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(v)
}
