//! Discovery: `/version`, `/api`, `/apis` (aggregated `apidiscovery.k8s.io/v2` documents
//! and the legacy lists), per-group-version resource lists, and the OpenAPI v3 documents.
//! Everything is generated from the [`Registry`](crate::registry::Registry) and the
//! reviews [`review::served`] answers, so discovery always matches what the handlers serve.

use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};

use crate::api::Api;
use crate::builtin::BuiltinKind;
use crate::handler::{Resp, json_resp, review, value_resp};
use crate::openapi::{self, ApiResource, ResourceSchema};
use crate::registry::{Origin, Resource};
use crate::request::Route;
use crate::status::{ApiError, ApiResult};

/// The Kubernetes version this server speaks (k8s-openapi's `v1_37` schemas).
pub const KUBE_MINOR: &str = "37";

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Answer a discovery route.
pub fn serve(api: &Api, route: &Route, accept: &str) -> ApiResult<Resp> {
    match route {
        Route::Version => Ok(value_resp(200, &version())),
        Route::CoreVersions => match aggregated(accept) {
            Some(v) => Ok(aggregated_resp(v, &aggregated_list(api, true, v))),
            None => Ok(value_resp(
                200,
                &json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":api.cfg.listen.to_string()}]}),
            )),
        },
        Route::Groups => match aggregated(accept) {
            Some(v) => Ok(aggregated_resp(v, &aggregated_list(api, false, v))),
            None => Ok(value_resp(200, &group_list(api))),
        },
        Route::Group(g) => {
            let groups = group_list(api);
            let found = groups["groups"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == g.as_str()).cloned())
                .ok_or_else(ApiError::no_route)?;
            let mut found = found;
            found["kind"] = json!("APIGroup");
            found["apiVersion"] = json!("v1");
            Ok(value_resp(200, &found))
        }
        Route::ResourceList { group, version } => {
            let list = resource_list(api, group, version).ok_or_else(ApiError::no_route)?;
            Ok(value_resp(200, &list))
        }
        Route::OpenApiIndex => Ok(value_resp(200, &openapi_index(api))),
        Route::OpenApiDoc { group, version } => {
            let (_, doc) = openapi_doc(api, group, version).ok_or_else(ApiError::no_route)?;
            let mut r = json_resp(200, doc);
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, immutable"),
            );
            Ok(r)
        }
        _ => Err(ApiError::no_route()),
    }
}

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBE_MINOR,
        "emulationMajor": "1",
        "emulationMinor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-kedge.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}

/// Which aggregated discovery version the client accepts (`v2`, `v2beta1`), if any.
fn aggregated(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("g=apidiscovery.k8s.io") && p.contains("as=APIGroupDiscoveryList") {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        }
    }
    None
}

fn aggregated_resp(v: &str, body: &Value) -> Resp {
    let mut r = value_resp(200, body);
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList");
    if let Ok(h) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, h);
    }
    r
}

/// `serviceaccounts/token` (TokenRequest) is served.
fn has_token(r: &Resource) -> bool {
    r.group.is_empty() && r.plural == "serviceaccounts"
}

fn scope(namespaced: bool) -> &'static str {
    if namespaced { "Namespaced" } else { "Cluster" }
}

/// Group → versions (preferred first) of everything served: the registry's and the reviews'.
fn groups(api: &Api) -> Vec<(String, Vec<String>)> {
    let mut out = api.registry.groups();
    for k in review::served() {
        match out.iter_mut().find(|(g, _)| g == k.group) {
            Some((_, vs)) if vs.iter().any(|v| v == k.version) => {}
            Some((_, vs)) => vs.push(k.version.to_string()),
            None => out.push((k.group.to_string(), vec![k.version.to_string()])),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The reviews served in `group/version`: create-only, nothing else.
fn reviews_in(group: &str, version: &str) -> impl Iterator<Item = &'static BuiltinKind> {
    review::served().filter(move |k| k.group == group && k.version == version)
}

fn aggregated_list(api: &Api, core: bool, v: &str) -> Value {
    let mut items = Vec::new();
    for (group, versions) in groups(api) {
        if group.is_empty() != core {
            continue;
        }
        let mut vs = Vec::new();
        for ver in &versions {
            let resources: Vec<Value> = api
                .registry
                .all()
                .into_iter()
                .filter(|r| r.group == group && &r.version == ver)
                .map(|r| {
                    let kind = json!({"group": r.group, "version": r.version, "kind": r.kind});
                    let mut subs = Vec::new();
                    if r.has_status {
                        subs.push(json!({"subresource":"status","responseKind":kind,"verbs":["get","patch","update"]}));
                    }
                    if has_token(&r) {
                        subs.push(json!({"subresource":"token","responseKind":{"group":"authentication.k8s.io","version":"v1","kind":"TokenRequest"},"verbs":["create"]}));
                    }
                    let mut e = json!({
                        "resource": r.plural,
                        "responseKind": kind,
                        "scope": scope(r.namespaced),
                        "singularResource": r.singular,
                        "verbs": r.verbs(),
                    });
                    if !r.short_names.is_empty() {
                        e["shortNames"] = json!(r.short_names);
                    }
                    if !r.categories.is_empty() {
                        e["categories"] = json!(r.categories);
                    }
                    if !subs.is_empty() {
                        e["subresources"] = json!(subs);
                    }
                    e
                })
                .chain(reviews_in(&group, ver).map(|k| {
                    json!({
                        "resource": k.plural,
                        "responseKind": {"group": k.group, "version": k.version, "kind": k.kind},
                        "scope": scope(k.namespaced),
                        "singularResource": k.singular(),
                        "verbs": ["create"],
                    })
                }))
                .collect();
            vs.push(json!({"version": ver, "resources": resources, "freshness": "Current"}));
        }
        items.push(json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": vs}));
    }
    json!({"kind":"APIGroupDiscoveryList","apiVersion":format!("apidiscovery.k8s.io/{v}"),"metadata":{},"items":items})
}

fn group_list(api: &Api) -> Value {
    let groups: Vec<Value> = groups(api)
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            let preferred = versions.first().cloned().unwrap_or(Value::Null);
            json!({"name": g, "versions": versions, "preferredVersion": preferred})
        })
        .collect();
    json!({"kind":"APIGroupList","apiVersion":"v1","groups":groups})
}

fn resource_list(api: &Api, group: &str, version: &str) -> Option<Value> {
    let rs: Vec<_> = api
        .registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let reviews: Vec<_> = reviews_in(group, version).collect();
    if rs.is_empty() && reviews.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for r in &rs {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        if r.has_status {
            resources.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get","patch","update"]}));
        }
        if has_token(r) {
            resources.push(json!({"name": "serviceaccounts/token", "singularName": "", "namespaced": true, "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest", "verbs": ["create"]}));
        }
    }
    for k in reviews {
        resources.push(json!({"name": k.plural, "singularName": k.singular(), "namespaced": k.namespaced, "kind": k.kind, "verbs": ["create"]}));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":gv,"resources":resources}),
    )
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The OpenAPI v3 document of one group-version (cached until the registry changes) and
/// its hash.
pub fn openapi_doc(api: &Api, group: &str, version: &str) -> Option<(String, Bytes)> {
    let path = gv_path(group, version);
    if let Some(hit) = api
        .openapi_cache
        .lock()
        .ok()
        .and_then(|c| c.get(&path).cloned())
    {
        return Some(hit);
    }
    let rs: Vec<_> = api
        .registry
        .all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    let reviews = reviews_in(group, version).map(|k| ApiResource {
        verbs: &["create"],
        ..ApiResource::builtin(k)
    });
    let ars: Vec<ApiResource<'_>> = rs
        .iter()
        .map(|r| ApiResource {
            group: &r.group,
            version: &r.version,
            kind: &r.kind,
            plural: &r.plural,
            namespaced: r.namespaced,
            has_status: r.has_status,
            has_scale: false,
            verbs: &VERBS,
            list_kind: &r.list_kind,
            schema: match &r.origin {
                Origin::Builtin { definition } => ResourceSchema::Builtin { definition },
                Origin::Custom(cv) => ResourceSchema::Crd { schema: &cv.schema },
            },
        })
        .chain(reviews)
        .collect();
    if ars.is_empty() {
        return None;
    }
    let doc = openapi::group_version_doc(group, version, &ars);
    let hash = openapi::doc_hash(&doc);
    let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
    if let Ok(mut c) = api.openapi_cache.lock() {
        c.insert(path, (hash.clone(), bytes.clone()));
    }
    Some((hash, bytes))
}

fn openapi_index(api: &Api) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in groups(api) {
        for v in versions {
            if let Some((hash, _)) = openapi_doc(api, &group, &v) {
                let p = gv_path(&group, &v);
                paths.insert(
                    p.clone(),
                    json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
                );
            }
        }
    }
    json!({"paths": paths})
}
