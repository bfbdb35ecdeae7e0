//! Bound ServiceAccount tokens: their claims (Kubernetes' shape), the checks of a presented
//! token's claims, and the TokenRequest (`serviceaccounts/<name>/token`) handler.

use k8s_openapi::api::authentication::v1::TokenRequest;
use serde_json::{Value, json};

use super::sa_key;
use crate::handler::{Ctx, Resp, decode_body, value_resp};
use crate::request::ResourcePath;
use crate::status::{ApiError, ApiResult};

/// Default `expirationSeconds` (Kubernetes defaults the field to one hour).
pub const DEFAULT_TTL_SECONDS: i64 = 3600;
/// Longest `expirationSeconds` Kubernetes accepts.
pub const MAX_TTL_SECONDS: i64 = 1 << 32;
/// Clock skew tolerated on `nbf`.
const NBF_LEEWAY_SECONDS: i64 = 60;

/// The object a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// `pods` or `secrets`.
    pub plural: &'static str,
    pub name: String,
    pub uid: String,
}

impl Bound {
    fn claim_key(&self) -> &'static str {
        match self.plural {
            "pods" => "pod",
            _ => "secret",
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub namespace: String,
    /// The ServiceAccount's name and uid.
    pub name: String,
    pub uid: String,
    pub bound: Option<Bound>,
}

/// The claims of a new token.
#[allow(clippy::too_many_arguments)]
pub fn claims(
    issuer: &str,
    audiences: &[String],
    namespace: &str,
    name: &str,
    sa_uid: &str,
    bound: Option<&Bound>,
    now: i64,
    ttl: i64,
) -> Value {
    let mut k8s = json!({
        "namespace": namespace,
        "serviceaccount": {"name": name, "uid": sa_uid},
    });
    if let Some(b) = bound {
        k8s[b.claim_key()] = json!({"name": b.name, "uid": b.uid});
    }
    json!({
        "aud": audiences,
        "exp": now + ttl,
        "iat": now,
        "iss": issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "kubernetes.io": k8s,
        "nbf": now,
        "sub": format!("system:serviceaccount:{namespace}:{name}"),
    })
}

/// Check verified claims at time `now`: issuer, an API audience, not expired, not before
/// `nbf`, a well-formed subject that agrees with the `kubernetes.io` claims.
pub fn check(claims: &Value, issuer: &str, audiences: &[String], now: i64) -> Option<Verified> {
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return None;
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => audiences.contains(a),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .any(|x| audiences.iter().any(|y| y == x)),
        _ => false,
    };
    let exp = claims.get("exp").and_then(Value::as_i64)?;
    let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
    if !aud_ok || now >= exp || now + NBF_LEEWAY_SECONDS < nbf {
        return None;
    }
    let k8s = claims.get("kubernetes.io")?;
    let str_at = |p: &str| k8s.pointer(p).and_then(Value::as_str).map(str::to_string);
    let namespace = str_at("/namespace")?;
    let name = str_at("/serviceaccount/name")?;
    let uid = str_at("/serviceaccount/uid")?;
    let sub = format!("system:serviceaccount:{namespace}:{name}");
    if claims.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
        return None;
    }
    let bound = match (str_at("/pod/name"), str_at("/secret/name")) {
        (Some(n), None) => Some(Bound {
            plural: "pods",
            name: n,
            uid: str_at("/pod/uid")?,
        }),
        (None, Some(n)) => Some(Bound {
            plural: "secrets",
            name: n,
            uid: str_at("/secret/uid")?,
        }),
        (None, None) => None,
        (Some(_), Some(_)) => return None,
    };
    Some(Verified {
        namespace,
        name,
        uid,
        bound,
    })
}

fn invalid(name: &str, field: &str, value: &Value, why: &str) -> ApiError {
    ApiError::invalid(
        "TokenRequest.authentication.k8s.io",
        name,
        vec![json!({"reason": "FieldValueInvalid", "field": field,
            "message": format!("Invalid value: {value}: {why}")})],
        "authentication.k8s.io",
    )
}

/// `POST /api/v1/namespaces/{ns}/serviceaccounts/{name}/token`: issue a token.
pub async fn token_request(ctx: &Ctx, rp: &ResourcePath, body: &[u8]) -> ApiResult<Resp> {
    let ns = rp.namespace.clone().unwrap_or_default();
    let name = rp.name.clone().unwrap_or_default();
    let mut raw = decode_body(&ctx.content_type, body)?;
    for (field, want) in [
        ("apiVersion", "authentication.k8s.io/v1"),
        ("kind", "TokenRequest"),
    ] {
        match raw.get(field).and_then(Value::as_str) {
            None | Some("") => raw[field] = json!(want),
            Some(v) if v == want => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the {field} of the body ({v}) is not {want}"
                )));
            }
        }
    }
    let req: TokenRequest = serde_json::from_value(raw).map_err(|e| {
        ApiError::bad_request(format!(
            "TokenRequest in version \"v1\" cannot be handled: {e}"
        ))
    })?;
    let api = &ctx.api;
    let sas = &api.service_accounts;
    let sa = api
        .store
        .get(&sa_key(&ns, &name))
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", &name))?;
    let sa_uid = super::uid(&sa.value()).unwrap_or("").to_string();
    let spec = req.spec.unwrap_or_default();
    let ttl = spec.expiration_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    let min = i64::try_from(sas.min_ttl.as_secs()).unwrap_or(i64::MAX);
    if ttl < min {
        let why = if min == 600 {
            "may not specify a duration less than 10 minutes".to_string()
        } else {
            format!("may not specify a duration less than {min} seconds")
        };
        return Err(invalid(&name, "spec.expirationSeconds", &json!(ttl), &why));
    }
    if ttl > MAX_TTL_SECONDS {
        let why = "may not specify a duration larger than 2^32 seconds";
        return Err(invalid(&name, "spec.expirationSeconds", &json!(ttl), why));
    }
    let audiences = match spec.audiences.filter(|a| !a.is_empty()) {
        Some(a) => a,
        None => sas.audiences.clone(),
    };
    let bound = match &spec.bound_object_ref {
        None => None,
        Some(r) => Some(bind(ctx, &ns, &name, r)?),
    };
    let now = chrono::Utc::now().timestamp();
    let claims = claims(
        &sas.issuer,
        &audiences,
        &ns,
        &name,
        &sa_uid,
        bound.as_ref(),
        now,
        ttl,
    );
    let token = sas
        .signer
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = chrono::DateTime::from_timestamp(now + ttl, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": {
            "audiences": audiences,
            "expirationSeconds": ttl,
            "boundObjectRef": spec.bound_object_ref,
        },
        "status": {"token": token, "expirationTimestamp": expires},
    });
    Ok(value_resp(201, &out))
}

/// Resolve a `boundObjectRef`: a Pod (running as this ServiceAccount) or a Secret that
/// exists, with the given uid when one is given.
fn bind(
    ctx: &Ctx,
    ns: &str,
    sa: &str,
    r: &k8s_openapi::api::authentication::v1::BoundObjectReference,
) -> ApiResult<Bound> {
    let kind = r.kind.as_deref().unwrap_or("");
    let api_version = r.api_version.as_deref().unwrap_or("");
    let plural = match (api_version, kind) {
        ("v1", "Pod") => "pods",
        ("v1", "Secret") => "secrets",
        _ => {
            let gvk = match api_version.split_once('/') {
                Some((g, v)) => format!("{g}/{v}, Kind={kind}"),
                None => format!("/{api_version}, Kind={kind}"),
            };
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {gvk}"
            )));
        }
    };
    let name = r.name.clone().unwrap_or_default();
    let obj = ctx
        .api
        .store
        .get(&format!("core/{plural}/{ns}/{name}"))
        .ok_or_else(|| ApiError::not_found("", plural, &name))?
        .value();
    if plural == "pods"
        && obj
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("")
            != sa
    {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{sa}\" to pod running with different serviceaccount name."
        )));
    }
    let uid = super::uid(&obj).unwrap_or("").to_string();
    if let Some(want) = r.uid.as_deref().filter(|u| !u.is_empty() && *u != uid) {
        return Err(ApiError::conflict(
            "",
            kind,
            &name,
            &format!(
                "the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    Ok(Bound { plural, name, uid })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn aud() -> Vec<String> {
        vec!["https://kubernetes.default.svc.cluster.local".to_string()]
    }

    #[test]
    fn claims_round_trip_through_check() {
        let pod = Bound {
            plural: "pods",
            name: "web".into(),
            uid: "p-1".into(),
        };
        let iss = "https://kubernetes.default.svc.cluster.local";
        let c = claims(iss, &aud(), "ns", "sa", "s-1", Some(&pod), 1000, 600);
        assert_eq!(c["sub"], "system:serviceaccount:ns:sa");
        assert_eq!(c["exp"], 1600);
        assert_eq!(c["kubernetes.io"]["pod"]["uid"], "p-1");
        assert_eq!(c["kubernetes.io"]["serviceaccount"]["uid"], "s-1");
        let v = check(&c, iss, &aud(), 1599).unwrap();
        assert_eq!(
            v,
            Verified {
                namespace: "ns".into(),
                name: "sa".into(),
                uid: "s-1".into(),
                bound: Some(pod)
            }
        );
        // Expired, too early, other issuer, other audience, forged subject.
        assert_eq!(check(&c, iss, &aud(), 1600), None);
        assert_eq!(check(&c, iss, &aud(), 900), None);
        assert!(check(&c, iss, &aud(), 950).is_some());
        assert_eq!(check(&c, "https://other", &aud(), 1200), None);
        assert_eq!(check(&c, iss, &["vault".to_string()], 1200), None);
        let mut forged = c.clone();
        forged["sub"] = json!("system:serviceaccount:kube-system:admin");
        assert_eq!(check(&forged, iss, &aud(), 1200), None);
        let mut custom = claims(iss, &["vault".to_string()], "ns", "sa", "u", None, 0, 600);
        assert_eq!(check(&custom, iss, &aud(), 10), None);
        custom["aud"] = json!(iss);
        assert!(check(&custom, iss, &aud(), 10).unwrap().bound.is_none());
    }
}
