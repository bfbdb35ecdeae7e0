//! Start-up: serve the CRDs already stored, create the namespaces every cluster has, and an
//! in-process way to create-or-update objects (`ensure`) that goes through the same
//! handlers, validation and admission as a client's request.

use std::sync::Arc;

use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::api::Api;
use crate::auth::UserInfo;
use crate::handler::{Ctx, update, write};
use crate::request::{Query, ResourcePath};
use crate::status::{ApiError, ApiResult};

/// Namespaces every Kubernetes cluster starts with.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Run the start-up steps.
pub async fn run(api: &Arc<Api>) {
    let (crds, _) = api
        .store
        .list("apiextensions.k8s.io/customresourcedefinitions/", None);
    for (_, crd) in crds {
        let value = crd.value();
        if value.pointer("/metadata/deletionTimestamp").is_some() {
            let api2 = api.clone();
            let ev = crate::store::Event {
                rv: crd.rv,
                kind: crate::store::EventType::Modified,
                key: String::new(),
                obj: crd.clone(),
                prev: None,
            };
            crate::admission::crd_changed(&api2, &ev).await;
        } else {
            crate::admission::register_crd(api, &value);
        }
    }
    for ns in SYSTEM_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        if let Err(e) = ensure(api, obj).await {
            tracing::error!(namespace = ns, error = %e, "creating a system namespace failed");
        }
    }
    // Resume namespace deletions a restart interrupted; give the others their
    // ServiceAccount and CA bundle (namespaces stored before this server published them).
    let (nss, _) = api.store.list("core/namespaces/", None);
    for (_, n) in nss {
        let value = n.value();
        if value.pointer("/metadata/deletionTimestamp").is_none() {
            let name = value.pointer("/metadata/name").and_then(Value::as_str);
            crate::serviceaccount::ensure_namespace_defaults(api, name.unwrap_or("")).await;
        } else {
            let name = value
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let api = api.clone();
            tokio::spawn(
                async move { crate::admission::delete_namespace_contents(&api, &name).await },
            );
        }
    }
}

fn internal_ctx(api: &Arc<Api>) -> Ctx {
    Ctx {
        api: api.clone(),
        user: UserInfo::new("system:apiserver", ["system:masters"]),
        query: Query::default(),
        accept: "application/json".into(),
        content_type: "application/json".into(),
        user_agent: "kedge-apiserver".into(),
        warnings: Vec::new(),
    }
}

async fn check(resp: crate::handler::Resp) -> ApiResult<Value> {
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if code >= 400 {
        let msg = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        return Err(ApiError::new(code, "InternalError", msg));
    }
    Ok(v)
}

/// Create `obj`, or update it when it exists and its content differs (spec, data, labels).
pub async fn ensure(api: &Arc<Api>, obj: Value) -> ApiResult<Value> {
    let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let (group, version) = match av.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", av),
    };
    let res = api
        .registry
        .by_kind(group, version, kind)
        .ok_or_else(|| ApiError::not_found(group, kind, "(kind)"))?;
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let namespace = if res.namespaced {
        Some(
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
        )
    } else {
        None
    };
    let mut rp = ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        namespace: namespace.clone(),
        plural: res.plural.clone(),
        name: None,
        subresource: None,
    };
    let mut ctx = internal_ctx(api);
    match api.store.get(&res.key(namespace.as_deref(), &name)) {
        None => {
            let body = serde_json::to_vec(&obj).unwrap_or_default();
            check(write::create(&mut ctx, &res, &rp, &body).await?).await
        }
        Some(cur) => {
            let cur_value = cur.value();
            let same = ["spec", "data", "stringData", "rules"]
                .iter()
                .all(|k| obj.get(*k).is_none() || obj.get(*k) == cur_value.get(*k));
            if same {
                return Ok(cur_value);
            }
            let mut new = obj.clone();
            new["metadata"]["resourceVersion"] = json!(cur.rv.to_string());
            rp.name = Some(name);
            let body = serde_json::to_vec(&new).unwrap_or_default();
            check(update::update(&mut ctx, &res, &rp, &body).await?).await
        }
    }
}
