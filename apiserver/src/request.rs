//! Turning an HTTP request line into what it asks for: a discovery document or a verb on a
//! resource, with its query parameters parsed once.

use std::collections::HashMap;

/// What a URL path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Version,
    Healthz,
    Readyz,
    Livez,
    Metrics,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
    /// `/openapi/v3`
    OpenApiIndex,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/<g>/<v>`
    OpenApiDoc {
        group: String,
        version: String,
    },
    /// `/openapi/v2`
    OpenApiV2,
    /// A resource, collection or subresource.
    Resource(ResourcePath),
}

/// The parts of a resource URL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    /// Namespace from the URL (`/namespaces/<ns>/...`).
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

/// Parse a request path (without query). `None` = not served.
pub fn route(path: &str) -> Option<Route> {
    let path = path.trim_end_matches('/');
    let segs: Vec<String> = path.split('/').skip(1).map(percent_decode).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    Some(match s.as_slice() {
        ["version"] => Route::Version,
        ["healthz", ..] => Route::Healthz,
        ["readyz", ..] => Route::Readyz,
        ["livez", ..] => Route::Livez,
        ["metrics"] => Route::Metrics,
        ["api"] => Route::CoreVersions,
        ["apis"] => Route::Groups,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::ResourceList {
            group: String::new(),
            version: v.to_string(),
        },
        ["apis", g, v] => Route::ResourceList {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["openapi", "v3"] => Route::OpenApiIndex,
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3", "api", v] => Route::OpenApiDoc {
            group: String::new(),
            version: v.to_string(),
        },
        ["openapi", "v3", "apis", g, v] => Route::OpenApiDoc {
            group: g.to_string(),
            version: v.to_string(),
        },
        ["api", v, rest @ ..] => Route::Resource(resource_path("", v, rest)?),
        ["apis", g, v, rest @ ..] => Route::Resource(resource_path(g, v, rest)?),
        _ => return None,
    })
}

fn resource_path(group: &str, version: &str, rest: &[&str]) -> Option<ResourcePath> {
    let base = ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        ..Default::default()
    };
    let own = |s: &&str| Some(s.to_string());
    let p = match rest {
        // The namespace object itself and its subresources.
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => ResourcePath {
            plural: "namespaces".into(),
            name: own(name),
            subresource: Some(sub.to_string()),
            ..base
        },
        ["namespaces", ns, plural] => ResourcePath {
            namespace: own(ns),
            plural: plural.to_string(),
            ..base
        },
        ["namespaces", ns, plural, name] => ResourcePath {
            namespace: own(ns),
            plural: plural.to_string(),
            name: own(name),
            ..base
        },
        ["namespaces", ns, plural, name, sub] => ResourcePath {
            namespace: own(ns),
            plural: plural.to_string(),
            name: own(name),
            subresource: own(sub),
            ..base
        },
        [plural] => ResourcePath {
            plural: plural.to_string(),
            ..base
        },
        [plural, name] => ResourcePath {
            plural: plural.to_string(),
            name: own(name),
            ..base
        },
        [plural, name, sub] => ResourcePath {
            plural: plural.to_string(),
            name: own(name),
            subresource: own(sub),
            ..base
        },
        _ => return None,
    };
    if p.plural.is_empty() || p.name.as_deref() == Some("") {
        return None;
    }
    Some(p)
}

/// Query parameters, decoded.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parse `a=b&c=d` (percent- and `+`-decoded).
    pub fn parse(q: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            );
        }
        Self(map)
    }

    /// A parameter's value.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A non-empty parameter's value.
    pub fn non_empty(&self, k: &str) -> Option<&str> {
        self.get(k).filter(|v| !v.is_empty())
    }

    /// `true`/`1` as Kubernetes accepts them.
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1" | "True" | "TRUE"))
    }

    /// An integer parameter; `Err` names it when malformed.
    pub fn int(&self, k: &str) -> Result<Option<i64>, String> {
        match self.non_empty(k) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid value for {k}: {v:?}")),
        }
    }
}

/// Decode `%XX` escapes (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/api"), Some(Route::CoreVersions));
        assert_eq!(route("/apis/apps"), Some(Route::Group("apps".into())));
        let Some(Route::Resource(p)) = route("/api/v1/namespaces/default/pods/x/status") else {
            panic!()
        };
        assert_eq!(p.namespace.as_deref(), Some("default"));
        assert_eq!(p.plural, "pods");
        assert_eq!(p.name.as_deref(), Some("x"));
        assert_eq!(p.subresource.as_deref(), Some("status"));
        let Some(Route::Resource(p)) = route("/api/v1/namespaces/kube-system") else {
            panic!()
        };
        assert_eq!(p.plural, "namespaces");
        assert_eq!(p.name.as_deref(), Some("kube-system"));
        let Some(Route::Resource(p)) = route("/api/v1/namespaces/x/status") else {
            panic!()
        };
        assert_eq!((p.plural.as_str(), p.namespace), ("namespaces", None));
        assert_eq!(route("/api/v1/a/b/c/d"), None);
    }

    #[test]
    fn query() {
        let q = Query::parse(Some("labelSelector=app%3Dx%2Cb+in+(1)&watch=1&limit=5"));
        assert_eq!(q.get("labelSelector"), Some("app=x,b in (1)"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit"), Ok(Some(5)));
        assert!(Query::parse(Some("limit=x")).int("limit").is_err());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
