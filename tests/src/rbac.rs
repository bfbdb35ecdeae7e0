//! A small RBAC evaluator (Kubernetes' RBAC authorizer, for the parts kedge's chart uses:
//! ClusterRole/Role rules with verbs, API groups, resources with subresources and
//! resourceNames, bound to one ServiceAccount by ClusterRoleBinding/RoleBinding), and the
//! API server's audit log read back as requests to evaluate.
//!
//! Used by `tests/tests/helm_chart.rs`: the chart's rendered (Cluster)Roles must allow every
//! request cloudcore makes — both a list derived from the code and every request cloudcore
//! actually made in e2e runs (the audit log of `cloudcore standalone`, in which cloudcore
//! authenticates as [`CLOUDCORE_USER`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The user cloudcore authenticates as in `cloudcore standalone` (a client certificate named
/// like its ServiceAccount in the chart), so its requests stand out in the audit log.
pub const CLOUDCORE_USER: &str = "system:serviceaccount:kedge-system:cloudcore";

/// One request as the API server's authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Req {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group (`""` = core).
    pub group: String,
    /// `pods` or `pods/status`; empty for a non-resource request.
    pub resource: String,
    /// `None` = cluster-scoped, or all namespaces.
    pub namespace: Option<String>,
    /// The object's name, when the request names one.
    pub name: Option<String>,
    /// The request path (non-resource requests are judged by it).
    #[serde(default)]
    pub path: String,
}

impl Req {
    /// A resource request.
    pub fn new(
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        Req {
            verb: verb.to_owned(),
            group: group.to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.map(str::to_owned),
            name: name.map(str::to_owned),
            path: String::new(),
        }
    }
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.resource.is_empty() {
            return write!(f, "{} {}", self.verb, self.path);
        }
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group}/{}", self.verb, self.resource)?;
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}")?,
            None => write!(f, " cluster-wide")?,
        }
        if let Some(n) = &self.name {
            write!(f, " (name {n})")?;
        }
        Ok(())
    }
}

/// The strings of a JSON array (empty for anything else).
pub fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether one PolicyRule allows `r`.
pub fn rule_allows(rule: &Value, r: &Req) -> bool {
    let m = |list: &Value, x: &str| strs(list).iter().any(|v| *v == x || *v == "*");
    if r.resource.is_empty() {
        return m(&rule["verbs"], &r.verb)
            && strs(&rule["nonResourceURLs"]).iter().any(|u| {
                *u == r.path || u.strip_suffix('*').is_some_and(|p| r.path.starts_with(p))
            });
    }
    m(&rule["verbs"], &r.verb)
        && m(&rule["apiGroups"], &r.group)
        && m(&rule["resources"], &r.resource)
        && (rule["resourceNames"].is_null()
            || r.name
                .as_deref()
                .is_some_and(|n| strs(&rule["resourceNames"]).contains(&n)))
}

/// Non-resource paths every authenticated user may read (Kubernetes' default
/// `system:discovery` and `system:public-info-viewer` ClusterRoles).
fn default_allowed(r: &Req) -> bool {
    const PUBLIC: &[&str] = &["/api", "/apis", "/version", "/healthz", "/livez", "/readyz"];
    r.resource.is_empty()
        && r.verb == "get"
        && (PUBLIC.contains(&r.path.as_str())
            || r.path.starts_with("/api/")
            || r.path.starts_with("/apis/")
            || r.path.starts_with("/openapi/"))
}

/// Whether the (Cluster)Roles in `docs` bound to ServiceAccount `namespace/sa` allow `r`.
pub fn allowed(docs: &[Value], namespace: &str, sa: &str, r: &Req) -> bool {
    if default_allowed(r) {
        return true;
    }
    let bound = |b: &Value| {
        b["subjects"].as_array().is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == namespace
            })
        })
    };
    let role_allows = |kind: &str, name: &str, ns: Option<&str>| {
        docs.iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .filter(|d| ns.is_none() || d["metadata"]["namespace"].as_str() == ns)
            .filter_map(|d| d["rules"].as_array())
            .flatten()
            .any(|rule| rule_allows(rule, r))
    };
    docs.iter().any(|b| {
        let role = b["roleRef"]["name"].as_str().unwrap_or_default();
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or_default();
        match b["kind"].as_str() {
            Some("ClusterRoleBinding") if bound(b) => role_allows("ClusterRole", role, None),
            Some("RoleBinding") if bound(b) => {
                let ns = b["metadata"]["namespace"].as_str();
                r.namespace.is_some()
                    && r.namespace.as_deref() == ns
                    && if role_kind == "ClusterRole" {
                        role_allows("ClusterRole", role, None)
                    } else {
                        role_allows("Role", role, ns)
                    }
            }
            _ => false,
        }
    })
}

/// One line of the embedded API server's audit log (`--audit-log`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditLine {
    /// Who.
    pub user: String,
    /// Kubernetes verb.
    pub verb: String,
    /// API group.
    #[serde(default)]
    pub group: String,
    /// Plural resource (empty for non-resource requests).
    #[serde(default)]
    pub resource: String,
    /// Subresource.
    #[serde(default)]
    pub subresource: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// The request URI.
    #[serde(default)]
    pub uri: String,
}

impl AuditLine {
    /// The request as the authorizer sees it. Creates carry no name (Kubernetes authorizes
    /// `create` before the object exists, so `resourceNames` never match a create).
    pub fn request(&self) -> Req {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        Req {
            verb: self.verb.clone(),
            group: self.group.clone(),
            resource,
            namespace: opt(&self.namespace),
            name: if self.verb == "create" && self.subresource.is_empty() {
                None
            } else {
                opt(&self.name)
            },
            path: self.uri.split('?').next().unwrap_or_default().to_owned(),
        }
    }
}

/// The distinct requests `user` made according to the audit log at `path` (missing file:
/// none). Lines that do not parse are skipped: the log may end in a partial line.
pub fn audited_requests(path: &Path, user: &str) -> BTreeSet<Req> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<AuditLine>(l).ok())
        .filter(|l| l.user == user)
        .map(|l| l.request())
        .collect()
}

/// The requests of `reqs` that the chart's RBAC (`docs`, bound to `namespace/sa`) refuses.
pub fn denied<'a>(
    docs: &[Value],
    namespace: &str,
    sa: &str,
    reqs: impl IntoIterator<Item = &'a Req>,
) -> Vec<&'a Req> {
    reqs.into_iter()
        .filter(|r| !allowed(docs, namespace, sa, r))
        .collect()
}

/// Where e2e runs leave cloudcore's audited requests for the RBAC check
/// (`target/<profile>/kedge-audit/`).
pub fn collected_dir() -> PathBuf {
    crate::bin_dir().join("kedge-audit")
}

/// Keeps cloudcore's distinct requests from one standalone run's audit log in
/// [`collected_dir`], so the chart test can check what the whole suite made cloudcore do.
/// Best effort: never fails the test that dropped the server.
pub fn collect(audit_log: &Path) {
    let reqs = audited_requests(audit_log, CLOUDCORE_USER);
    if reqs.is_empty() {
        return;
    }
    let dir = collected_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let file = dir.join(format!("{}-{nanos}.json", std::process::id()));
    if let Ok(text) = serde_json::to_string(&reqs) {
        let _ = std::fs::write(file, text);
    }
}

/// Every request collected by [`collect`] from runs of the current cloudcore binary (files
/// older than the binary came from an earlier build and are ignored).
pub fn collected_requests() -> BTreeSet<Req> {
    let built = std::fs::metadata(crate::bin_dir().join("cloudcore"))
        .and_then(|m| m.modified())
        .ok();
    let Ok(entries) = std::fs::read_dir(collected_dir()) else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok();
            match (built, modified) {
                (Some(b), Some(m)) => m >= b,
                _ => true,
            }
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<Vec<Req>>(&t).ok())
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn docs() -> Vec<Value> {
        vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "cc"}, "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            ]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "cc"},
                "roleRef": {"kind": "ClusterRole", "name": "cc"},
                "subjects": [{"kind": "ServiceAccount", "name": "cloudcore", "namespace": "ns"}]}),
            json!({"kind": "Role", "metadata": {"name": "own", "namespace": "ns"}, "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"],
                 "verbs": ["update"]},
            ]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "own", "namespace": "ns"},
                "roleRef": {"kind": "Role", "name": "own"},
                "subjects": [{"kind": "ServiceAccount", "name": "cloudcore", "namespace": "ns"}]}),
        ]
    }

    #[test]
    fn evaluates_cluster_roles_roles_and_resource_names() {
        let d = docs();
        let ok = |r: Req| allowed(&d, "ns", "cloudcore", &r);
        assert!(ok(Req::new("list", "", "pods", None, None)));
        assert!(!ok(Req::new("watch", "", "pods", None, None)));
        assert!(!ok(Req::new("get", "", "pods/log", Some("x"), Some("p"))));
        assert!(ok(Req::new("update", "", "secrets", Some("ns"), Some("a"))));
        assert!(!ok(Req::new(
            "update",
            "",
            "secrets",
            Some("ns"),
            Some("b")
        )));
        assert!(!ok(Req::new(
            "update",
            "",
            "secrets",
            Some("other"),
            Some("a")
        )));
        assert!(!allowed(
            &d,
            "ns",
            "someone-else",
            &Req::new("list", "", "pods", None, None)
        ));
    }

    #[test]
    fn audit_lines_become_requests() {
        let line: AuditLine = serde_json::from_value(json!({
            "user": CLOUDCORE_USER, "verb": "patch", "group": "", "resource": "nodes",
            "subresource": "status", "namespace": "", "name": "n1",
            "uri": "/api/v1/nodes/n1/status?fieldManager=x", "code": 200,
        }))
        .unwrap();
        let r = line.request();
        assert_eq!(r, {
            let mut want = Req::new("patch", "", "nodes/status", None, Some("n1"));
            want.path = "/api/v1/nodes/n1/status".into();
            want
        });
        let create: AuditLine = serde_json::from_value(json!({
            "user": "u", "verb": "create", "resource": "secrets", "namespace": "ns",
            "name": "x", "uri": "/api/v1/namespaces/ns/secrets"
        }))
        .unwrap();
        assert_eq!(create.request().name, None);
        assert_eq!(
            create.request().to_string(),
            "create core/secrets in namespace ns"
        );
    }
}
