//! `/openapi/v3`: the index and one OpenAPI 3.0 document per group-version.
//!
//! kubectl (`apply`, `explain`, client-side apply's strategic merge) reads these. What it
//! needs, measured: the index `{"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=…"}}}`
//! ([`index`]); per group-version a document whose PATCH operations carry
//! `x-kubernetes-group-version-kind` and a `fieldValidation` query parameter (then kubectl
//! leaves validation to the server and sends `?fieldValidation=Strict`), and whose
//! `components.schemas` have each kind under Kubernetes' definition name with
//! `x-kubernetes-group-version-kind` and the patch merge keys ([`group_version_doc`]).
//!
//! Everything here is pure: the same resources give the same document and the same
//! [`doc_hash`]. Building the core/v1 document takes milliseconds, so the caller memoises
//! per group-version, keyed by the set of resources served there (it changes only when a
//! CRD is created, updated or deleted), and serves the cached bytes with the hash as ETag.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use crate::builtin::{self, BuiltinKind};
use crate::schema::{self, OBJECT_META, definition_ref};

/// Where a resource's schema comes from.
#[derive(Debug, Clone, Copy)]
pub enum ResourceSchema<'a> {
    /// A built-in definition, e.g. `io.k8s.api.core.v1.Pod`.
    Builtin {
        /// Definition name in [`schema::builtin_definitions`].
        definition: &'a str,
    },
    /// A CustomResourceDefinition version's `schema.openAPIV3Schema`.
    Crd {
        /// The structural schema.
        schema: &'a Value,
    },
}

/// One resource served in a group-version, as the document describes it.
#[derive(Debug, Clone, Copy)]
pub struct ApiResource<'a> {
    /// API group (`""` for core).
    pub group: &'a str,
    /// API version.
    pub version: &'a str,
    /// Kind, e.g. `Pod`.
    pub kind: &'a str,
    /// Kind of the list, e.g. `PodList`.
    pub list_kind: &'a str,
    /// Plural resource name (URL segment).
    pub plural: &'a str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether a `status` subresource is served.
    pub has_status: bool,
    /// Whether a `scale` subresource is served (body: autoscaling/v1 `Scale`).
    pub has_scale: bool,
    /// Verbs served (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`); operations for other verbs are left out.
    pub verbs: &'a [&'a str],
    /// The resource's schema.
    pub schema: ResourceSchema<'a>,
}

impl ApiResource<'static> {
    /// The description of a built-in kind with all [`builtin::DEFAULT_VERBS`].
    pub fn builtin(kind: &'static BuiltinKind) -> Self {
        ApiResource {
            group: kind.group,
            version: kind.version,
            kind: kind.kind,
            list_kind: kind.list_kind,
            plural: kind.plural,
            namespaced: kind.namespaced,
            has_status: kind.has_status,
            has_scale: kind.has_scale,
            verbs: builtin::DEFAULT_VERBS,
            schema: ResourceSchema::Builtin {
                definition: kind.definition,
            },
        }
    }
}

/// The index key of a group-version: `api/v1` for core, `apis/<group>/<version>` otherwise.
pub fn group_version_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The `/openapi/v3` index: `{"paths": {"api/v1": {"serverRelativeURL":
/// "/openapi/v3/api/v1?hash=<hash(group, version)>"}, "apis/apps/v1": {…}}}`.
pub fn index(group_versions: &[(&str, &str)], hash: impl Fn(&str, &str) -> String) -> Value {
    let mut paths = Map::new();
    for (group, version) in group_versions {
        let key = group_version_key(group, version);
        let url = format!("/openapi/v3/{key}?hash={}", hash(group, version));
        paths.insert(key, json!({ "serverRelativeURL": url }));
    }
    json!({ "paths": paths })
}

/// The hash of a document as Kubernetes computes it for the index and the ETag: uppercase
/// hex SHA-512 of its JSON bytes.
pub fn doc_hash(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    hex::encode_upper(Sha512::digest(&bytes))
}

/// The document of a built-in group-version with every built-in kind in it, or `None` when
/// no built-in kind lives there.
pub fn builtin_group_version_doc(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<ApiResource<'static>> = builtin::all()
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .map(ApiResource::builtin)
        .collect();
    (!resources.is_empty()).then(|| group_version_doc(group, version, &resources))
}

/// Kubernetes' definition name for a custom kind: the group reversed, then version and
/// kind (`devices.kubeedge.io`, `v1beta1`, `Device` → `io.kubeedge.devices.v1beta1.Device`).
pub fn crd_definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The published schema of a custom kind: the CRD's schema with `apiVersion`, `kind` and
/// `metadata` (→ `ObjectMeta`) properties and the GVK extension.
pub fn crd_resource_schema(
    group: &str,
    version: &str,
    kind: &str,
    open_api_v3_schema: &Value,
) -> Value {
    let mut out = match open_api_v3_schema {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    out.entry("type").or_insert_with(|| "object".into());
    let props = out
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(props) = props {
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        props.insert("metadata".into(), json!({"description": "Standard object's metadata.", "allOf": [definition_ref(OBJECT_META)]}));
    }
    out.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{ "group": group, "kind": kind, "version": version }]),
    );
    Value::Object(out)
}

/// The OpenAPI 3.0 document of one group-version serving `resources`: paths for the
/// collection, item, `status`, `scale`, all-namespaces list and watch endpoints, and
/// `components.schemas` closed under `$ref` (only what this group-version needs).
pub fn group_version_doc(group: &str, version: &str, resources: &[ApiResource<'_>]) -> Value {
    let names = Names::new(group, version);
    let mut paths = Map::new();
    let mut local = Map::new();
    let discovery = json!({"get": {
        "tags": [names.tag],
        "description": "get available resources",
        "operationId": format!("get{}APIResources", names.gv),
        "responses": responses(&["200"], "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList"),
    }});
    paths.insert(format!("{}/", names.base), discovery);
    for r in resources {
        let (definition, list_definition) = match r.schema {
            ResourceSchema::Builtin { definition } => {
                let list = builtin::find_gvk(r.group, r.version, r.kind).map_or_else(
                    || sibling(definition, r.list_kind),
                    |k| k.list_definition.to_owned(),
                );
                (definition.to_owned(), list)
            }
            ResourceSchema::Crd { schema } => {
                let (g, v) = (r.group, r.version);
                let definition = crd_definition_name(g, v, r.kind);
                let list = crd_definition_name(g, v, r.list_kind);
                local.insert(
                    definition.clone(),
                    crd_resource_schema(g, v, r.kind, schema),
                );
                let mut list_schema = schema::list_schema(&definition, r.list_kind, r.kind);
                list_schema["x-kubernetes-group-version-kind"] =
                    json!([{ "group": g, "kind": r.list_kind, "version": v }]);
                local.insert(list.clone(), list_schema);
                (definition, list)
            }
        };
        let ctx = Resource {
            names: &names,
            r,
            definition: &definition,
            list_definition: &list_definition,
            crd: matches!(r.schema, ResourceSchema::Crd { .. }),
        };
        ctx.add_paths(&mut paths);
    }
    let mut roots: Vec<String> = local.keys().cloned().collect();
    for path in paths.values() {
        schema::refs_in(path, &mut roots);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "unversioned"},
        "paths": paths,
        "components": {
            "schemas": closure(roots, &local),
            "securitySchemes": {"BearerToken": {
                "type": "apiKey", "description": "Bearer Token authentication",
                "name": "authorization", "in": "header",
            }},
        },
    })
}

/// `io.k8s.api.core.v1.Pod` + `PodList` → `io.k8s.api.core.v1.PodList`.
fn sibling(definition: &str, kind: &str) -> String {
    let prefix = definition.rsplit_once('.').map_or("", |(p, _)| p);
    format!("{prefix}.{kind}")
}

/// Every definition reachable from `roots`, from `local` (CRD schemas) or the built-ins,
/// sorted by name as Kubernetes serves them.
fn closure(roots: Vec<String>, local: &Map<String, Value>) -> Map<String, Value> {
    let builtins = schema::builtin_definitions();
    let mut found: std::collections::BTreeMap<String, Value> = Default::default();
    let mut stack = roots;
    while let Some(name) = stack.pop() {
        if found.contains_key(&name) {
            continue;
        }
        let Some(def) = local.get(&name).or_else(|| builtins.get(&name)) else {
            continue;
        };
        schema::refs_in(def, &mut stack);
        found.insert(name, def.clone());
    }
    found.into_iter().collect()
}

/// Naming of one group-version's paths and operations.
struct Names {
    /// `/api/v1` or `/apis/<group>/<version>`.
    base: String,
    /// `CoreV1`, `AppsV1`, `RbacAuthorizationV1`, `DevicesKubeedgeIoV1beta1`.
    gv: String,
    /// `core_v1`, `rbacAuthorization_v1`.
    tag: String,
}

impl Names {
    fn new(group: &str, version: &str) -> Self {
        let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
        let words: Vec<&str> = match group {
            "" => vec!["core"],
            _ => trimmed
                .split(['.', '-'])
                .filter(|w| !w.is_empty())
                .collect(),
        };
        let camel: String = words.iter().map(|w| capitalize(w)).collect();
        let lower = match words.split_first() {
            Some((first, rest)) => format!(
                "{first}{}",
                rest.iter().map(|w| capitalize(w)).collect::<String>()
            ),
            None => String::new(),
        };
        Names {
            base: format!("/{}", group_version_key(group, version)),
            gv: format!("{camel}{}", capitalize(version)),
            tag: format!("{lower}_{version}"),
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A path or query parameter as Kubernetes publishes it.
fn param(name: &str, location: &str, description: &str) -> Value {
    let ty = match name {
        "allowWatchBookmarks"
        | "watch"
        | "sendInitialEvents"
        | "orphanDependents"
        | "force"
        | "ignoreStoreReadErrorWithClusterBreakingPotential" => "boolean",
        "limit" | "timeoutSeconds" | "gracePeriodSeconds" => "integer",
        _ => "string",
    };
    let mut p = json!({
        "name": name, "in": location, "description": description,
        "schema": {"type": ty, "uniqueItems": true},
    });
    if location == "path" {
        p["required"] = true.into();
    }
    p
}

fn query(name: &str) -> Value {
    let description = match name {
        "pretty" => "If 'true', then the output is pretty printed.",
        "dryRun" => {
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed"
        }
        "fieldManager" => {
            "fieldManager is a name associated with the actor or entity that is making these changes."
        }
        "fieldValidation" => {
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict"
        }
        "force" => {
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people."
        }
        _ => "",
    };
    param(name, "query", description)
}

#[rustfmt::skip]
const LIST: &[&str] = &[
    "allowWatchBookmarks", "continue", "fieldSelector", "labelSelector", "limit", "resourceVersion",
    "resourceVersionMatch", "sendInitialEvents", "timeoutSeconds", "watch",
];
const WRITE: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
#[rustfmt::skip]
const DELETE: &[&str] = &[
    "dryRun", "gracePeriodSeconds", "ignoreStoreReadErrorWithClusterBreakingPotential",
    "orphanDependents", "propagationPolicy",
];
#[rustfmt::skip]
const DELETE_COLLECTION: &[&str] = &[
    "continue", "dryRun", "fieldSelector", "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential", "labelSelector", "limit",
    "orphanDependents", "propagationPolicy", "resourceVersion", "resourceVersionMatch",
    "sendInitialEvents", "timeoutSeconds",
];

const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const WATCH_EVENT: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

fn responses(codes: &[&str], definition: &str) -> Value {
    let schema = json!({"schema": definition_ref(definition)});
    let mut out = Map::new();
    for code in codes {
        let content = json!({"application/json": schema, "application/yaml": schema});
        out.insert(
            (*code).to_owned(),
            json!({"description": "OK", "content": content}),
        );
    }
    out.insert("401".into(), json!({"description": "Unauthorized"}));
    Value::Object(out)
}

/// What a request or response body is, relative to the resource.
#[derive(Clone, Copy)]
enum Body {
    /// The kind itself (or `Scale` on the scale subresource).
    Kind,
    List,
    Status,
    DeleteOptions,
    Patch,
    WatchEvent,
}

/// One operation of a path: HTTP method, the verb that enables it, the operationId verb,
/// `x-kubernetes-action`, query parameters, request body, success codes, response body,
/// description (`{}` is the kind, `{sub}` the subresource).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
    Option<Body>,
    &'static [&'static str],
    Body,
    &'static str,
);

#[rustfmt::skip]
const COLLECTION_OPS: &[Row] = &[
    ("get", "list", "list", "list", LIST, None, &["200"], Body::List, "list or watch objects of kind {}"),
    ("post", "create", "create", "post", WRITE, Some(Body::Kind), &["200", "201", "202"], Body::Kind, "create a {}"),
    ("delete", "deletecollection", "delete", "deletecollection", DELETE_COLLECTION, Some(Body::DeleteOptions), &["200"], Body::Status, "delete collection of {}"),
];
#[rustfmt::skip]
const ITEM_OPS: &[Row] = &[
    ("get", "get", "read", "get", &[], None, &["200"], Body::Kind, "read the specified {}"),
    ("put", "update", "replace", "put", WRITE, Some(Body::Kind), &["200", "201"], Body::Kind, "replace the specified {}"),
    ("patch", "patch", "patch", "patch", PATCH_PARAMS, Some(Body::Patch), &["200", "201"], Body::Kind, "partially update the specified {}"),
    ("delete", "delete", "delete", "delete", DELETE, Some(Body::DeleteOptions), &["200", "202"], Body::Status, "delete a {}"),
];
#[rustfmt::skip]
const SUBRESOURCE_OPS: &[Row] = &[
    ("get", "get", "read", "get", &[], None, &["200"], Body::Kind, "read {sub} of the specified {}"),
    ("put", "update", "replace", "put", WRITE, Some(Body::Kind), &["200", "201"], Body::Kind, "replace {sub} of the specified {}"),
    ("patch", "patch", "patch", "patch", PATCH_PARAMS, Some(Body::Patch), &["200", "201"], Body::Kind, "partially update {sub} of the specified {}"),
];
#[rustfmt::skip]
const ALL_NAMESPACES_OPS: &[Row] = &[
    ("get", "list", "list", "list", &[], None, &["200"], Body::List, "list or watch objects of kind {}"),
];
#[rustfmt::skip]
const WATCH_LIST_OPS: &[Row] = &[
    ("get", "watch", "watch", "watchlist", &[], None, &["200"], Body::WatchEvent, "watch individual changes to a list of {}"),
];
#[rustfmt::skip]
const WATCH_OPS: &[Row] = &[
    ("get", "watch", "watch", "watch", &[], None, &["200"], Body::WatchEvent, "watch changes to an object of kind {}"),
];

/// One resource being described.
struct Resource<'n> {
    names: &'n Names,
    r: &'n ApiResource<'n>,
    definition: &'n str,
    list_definition: &'n str,
    crd: bool,
}

/// How one path's operations are named and typed.
struct PathSpec<'s> {
    /// Between group-version and kind in operationIds: `Collection` for deletecollection.
    infix: &'s str,
    /// Whether operationIds say `Namespaced`.
    namespaced_word: bool,
    /// After the kind in operationIds: `Status`, `Scale`, `List`, `ForAllNamespaces`.
    suffix: &'s str,
    /// Definition of [`Body::Kind`] on this path.
    kind_definition: &'s str,
    /// GVK of the operations (autoscaling/v1 Scale on `scale`).
    gvk: Value,
    /// Subresource name for descriptions.
    sub: &'s str,
}

impl Resource<'_> {
    fn add_paths(&self, paths: &mut Map<String, Value>) {
        let r = self.r;
        let (base, kind, ns) = (&self.names.base, r.kind, r.namespaced);
        let gvk = json!({"group": r.group, "kind": kind, "version": r.version});
        let ns_prefix = if ns { "/namespaces/{namespace}" } else { "" };
        let collection = format!("{base}{ns_prefix}/{}", r.plural);
        let item = format!("{collection}/{{name}}");
        let spec = |infix, namespaced_word, suffix, kind_definition, gvk: &Value, sub| PathSpec {
            infix,
            namespaced_word,
            suffix,
            kind_definition,
            gvk: gvk.clone(),
            sub,
        };
        let def = self.definition;
        let plain = spec("", ns, "", def, &gvk, "");
        let scoped = |named: bool| {
            let mut p = Vec::new();
            if named {
                p.push(param("name", "path", &format!("name of the {kind}")));
            }
            if ns {
                p.push(param(
                    "namespace",
                    "path",
                    "object name and auth scope, such as for teams and projects",
                ));
            }
            p.push(query("pretty"));
            p
        };
        self.add(
            paths,
            &collection,
            scoped(false),
            &plain,
            &COLLECTION_OPS[..2],
        );
        // deletecollection is named `delete<GV>Collection<Namespaced><Kind>`.
        let collection_delete = spec("Collection", ns, "", def, &gvk, "");
        self.add(
            paths,
            &collection,
            scoped(false),
            &collection_delete,
            &COLLECTION_OPS[2..],
        );
        self.add(paths, &item, scoped(true), &plain, ITEM_OPS);
        if r.has_status {
            let status = spec("", ns, "Status", def, &gvk, "status");
            self.add(
                paths,
                &format!("{item}/status"),
                scoped(true),
                &status,
                SUBRESOURCE_OPS,
            );
        }
        if r.has_scale {
            let scale_gvk = json!({"group": "autoscaling", "kind": "Scale", "version": "v1"});
            let scale = spec("", ns, "Scale", SCALE, &scale_gvk, "scale");
            self.add(
                paths,
                &format!("{item}/scale"),
                scoped(true),
                &scale,
                SUBRESOURCE_OPS,
            );
        }
        let list_params = |named: bool, namespaced: bool| {
            let mut p: Vec<Value> = LIST.iter().map(|q| query(q)).collect();
            p.push(query("pretty"));
            if namespaced {
                p.insert(
                    0,
                    param(
                        "namespace",
                        "path",
                        "object name and auth scope, such as for teams and projects",
                    ),
                );
            }
            if named {
                p.insert(0, param("name", "path", &format!("name of the {kind}")));
            }
            p
        };
        let watch_base = format!("{base}/watch{ns_prefix}/{}", r.plural);
        let watch_list = spec("", ns, "List", def, &gvk, "");
        self.add(
            paths,
            &watch_base,
            list_params(false, ns),
            &watch_list,
            WATCH_LIST_OPS,
        );
        self.add(
            paths,
            &format!("{watch_base}/{{name}}"),
            list_params(true, ns),
            &plain,
            WATCH_OPS,
        );
        if ns {
            let all = spec("", false, "ForAllNamespaces", def, &gvk, "");
            self.add(
                paths,
                &format!("{base}/{}", r.plural),
                list_params(false, false),
                &all,
                ALL_NAMESPACES_OPS,
            );
            let watch_all = spec("", false, "ListForAllNamespaces", def, &gvk, "");
            let path = format!("{base}/watch/{}", r.plural);
            self.add(
                paths,
                &path,
                list_params(false, false),
                &watch_all,
                WATCH_LIST_OPS,
            );
        }
    }

    /// Adds the operations of `rows` whose verb is served to `path` (merging with what is
    /// there), with the path-level `parameters`.
    fn add(
        &self,
        paths: &mut Map<String, Value>,
        path: &str,
        parameters: Vec<Value>,
        spec: &PathSpec<'_>,
        rows: &[Row],
    ) {
        let r = self.r;
        let ns_word = if spec.namespaced_word {
            "Namespaced"
        } else {
            ""
        };
        for &(method, verb, id_verb, action, params, body, ok, response, description) in rows {
            if !r.verbs.contains(&verb) {
                continue;
            }
            let id = format!(
                "{id_verb}{}{}{ns_word}{}{}",
                self.names.gv, spec.infix, r.kind, spec.suffix
            );
            let mut op = json!({
                "tags": [self.names.tag],
                "description": description.replace("{sub}", spec.sub).replace("{}", r.kind),
                "operationId": id,
                "responses": responses(ok, self.body(response, spec)),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": spec.gvk,
            });
            if !params.is_empty() {
                op["parameters"] = params.iter().map(|q| query(q)).collect::<Vec<_>>().into();
            }
            if let Some(body) = body {
                let types: &[&str] = match body {
                    Body::Patch if self.crd => &[PATCH_TYPES[0], PATCH_TYPES[1], PATCH_TYPES[3]],
                    Body::Patch => PATCH_TYPES,
                    _ => &["*/*"],
                };
                let schema = json!({"schema": definition_ref(self.body(body, spec))});
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| ((*t).to_owned(), schema.clone()))
                    .collect();
                op["requestBody"] = json!({"content": content, "required": true});
            }
            let entry = paths.entry(path).or_insert_with(|| json!({}));
            entry[method] = op;
            entry["parameters"] = parameters.clone().into();
        }
    }

    fn body<'s>(&'s self, body: Body, spec: &PathSpec<'s>) -> &'s str {
        match body {
            Body::Kind => spec.kind_definition,
            Body::List => self.list_definition,
            Body::Status => STATUS,
            Body::DeleteOptions => DELETE_OPTIONS,
            Body::Patch => PATCH,
            Body::WatchEvent => WATCH_EVENT,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every `$ref` in `doc` points into its own `components.schemas`.
    fn assert_closed(doc: &Value) {
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut refs = Vec::new();
        schema::refs_in(doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            assert!(schemas.contains_key(&r), "dangling $ref {r}");
        }
    }

    /// kubectl's `supportsQueryParamV3`: a PATCH operation with the GVK and the parameter.
    fn supports_field_validation(doc: &Value, group: &str, version: &str, kind: &str) -> bool {
        let gvk = json!({"group": group, "kind": kind, "version": version});
        doc["paths"].as_object().unwrap().values().any(|p| {
            p.get("patch").is_some_and(|op| {
                op["x-kubernetes-group-version-kind"] == gvk
                    && op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
            })
        })
    }

    #[test]
    fn index_lists_group_versions() {
        let idx = index(&[("", "v1"), ("apps", "v1")], |g, v| format!("H{g}{v}"));
        assert_eq!(
            idx,
            json!({"paths": {
                "api/v1": {"serverRelativeURL": "/openapi/v3/api/v1?hash=Hv1"},
                "apis/apps/v1": {"serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=Happsv1"},
            }})
        );
    }

    #[test]
    fn core_v1_document() {
        let doc = builtin_group_version_doc("", "v1").unwrap();
        assert_eq!(doc["openapi"], "3.0.0");
        let pods = &doc["paths"]["/api/v1/namespaces/{namespace}/pods"];
        let post = &pods["post"];
        assert_eq!(post["x-kubernetes-action"], "post");
        assert_eq!(post["operationId"], "createCoreV1NamespacedPod");
        assert_eq!(
            post["x-kubernetes-group-version-kind"],
            json!({"group": "", "kind": "Pod", "version": "v1"})
        );
        assert!(
            post["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert_eq!(
            post["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Pod"
        );
        assert_eq!(pods["get"]["x-kubernetes-action"], "list");
        assert_eq!(pods["delete"]["x-kubernetes-action"], "deletecollection");
        assert_eq!(
            pods["delete"]["operationId"],
            "deleteCoreV1CollectionNamespacedPod"
        );
        let pod = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"];
        for (method, action) in [
            ("get", "get"),
            ("put", "put"),
            ("patch", "patch"),
            ("delete", "delete"),
        ] {
            assert_eq!(pod[method]["x-kubernetes-action"], action, "{method}");
        }
        assert!(
            pod["patch"]["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_some()
        );
        assert_eq!(
            doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["patch"]["operationId"],
            "patchCoreV1NamespacedPodStatus"
        );
        assert_eq!(
            doc["paths"]["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        assert_eq!(
            doc["paths"]["/api/v1/watch/namespaces/{namespace}/pods/{name}"]["get"]["x-kubernetes-action"],
            "watch"
        );
        assert_eq!(
            doc["paths"]["/api/v1/nodes/{name}"]["get"]["operationId"],
            "readCoreV1Node"
        );
        assert!(
            doc["paths"]
                .get("/api/v1/namespaces/{namespace}/configmaps/{name}/status")
                .is_none()
        );
        assert_eq!(
            doc["paths"]["/api/v1/namespaces/{namespace}/replicationcontrollers/{name}/scale"]["put"]
                ["requestBody"]["content"]["*/*"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
        );
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
            json!([{"group": "", "kind": "Pod", "version": "v1"}])
        );
        assert_eq!(
            schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert!(
            schemas.get("io.k8s.api.apps.v1.Deployment").is_none(),
            "only what core/v1 needs"
        );
        assert_closed(&doc);
        for k in builtin::all().iter().filter(|k| k.group.is_empty()) {
            assert!(
                supports_field_validation(&doc, "", "v1", k.kind),
                "{}",
                k.kind
            );
        }
    }

    #[test]
    fn every_builtin_document_is_closed_and_kubectl_sees_field_validation() {
        for (group, version) in builtin::group_versions() {
            let doc = builtin_group_version_doc(group, version).unwrap();
            assert_closed(&doc);
            for k in builtin::all()
                .iter()
                .filter(|k| k.group == group && k.version == version)
            {
                assert!(
                    supports_field_validation(&doc, group, version, k.kind),
                    "{group}/{version} {}",
                    k.kind
                );
            }
        }
        let rbac = builtin_group_version_doc("rbac.authorization.k8s.io", "v1").unwrap();
        assert!(
            rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["post"]["operationId"]
                == "createRbacAuthorizationV1ClusterRole"
        );
        assert!(builtin_group_version_doc("nope", "v1").is_none());
    }

    #[test]
    fn crd_document() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"model": {"type": "string"}}}}});
        let res = ApiResource {
            group: "devices.kubeedge.io",
            version: "v1beta1",
            kind: "Device",
            list_kind: "DeviceList",
            plural: "devices",
            namespaced: true,
            has_status: true,
            has_scale: false,
            verbs: builtin::DEFAULT_VERBS,
            schema: ResourceSchema::Crd { schema: &schema },
        };
        let doc = group_version_doc("devices.kubeedge.io", "v1beta1", &[res]);
        let name = crd_definition_name("devices.kubeedge.io", "v1beta1", "Device");
        assert_eq!(name, "io.kubeedge.devices.v1beta1.Device");
        let patch = &doc["paths"]["/apis/devices.kubeedge.io/v1beta1/namespaces/{namespace}/devices/{name}"]
            ["patch"];
        assert_eq!(
            patch["operationId"],
            "patchDevicesKubeedgeIoV1beta1NamespacedDevice"
        );
        assert!(
            patch["requestBody"]["content"]
                .get("application/strategic-merge-patch+json")
                .is_none()
        );
        assert!(supports_field_validation(
            &doc,
            "devices.kubeedge.io",
            "v1beta1",
            "Device"
        ));
        let schemas = &doc["components"]["schemas"];
        let device = &schemas[&name];
        assert_eq!(
            device["x-kubernetes-group-version-kind"],
            json!([{"group": "devices.kubeedge.io", "kind": "Device", "version": "v1beta1"}])
        );
        assert_eq!(
            device["properties"]["metadata"]["allOf"][0]["$ref"],
            format!("#/components/schemas/{OBJECT_META}")
        );
        assert_eq!(
            device["properties"]["spec"]["properties"]["model"]["type"],
            "string"
        );
        assert_eq!(
            schemas["io.kubeedge.devices.v1beta1.DeviceList"]["properties"]["items"]["items"]["$ref"],
            format!("#/components/schemas/{name}")
        );
        assert!(schemas.get(OBJECT_META).is_some());
        assert_closed(&doc);
        assert!(
            doc["paths"]
                .get(
                    "/apis/devices.kubeedge.io/v1beta1/namespaces/{namespace}/devices/{name}/status"
                )
                .is_some()
        );
    }

    #[test]
    fn verbs_limit_operations() {
        let res = ApiResource {
            verbs: &["get", "list"],
            ..ApiResource::builtin(builtin::find("", "v1", "componentstatuses").unwrap())
        };
        let doc = group_version_doc("", "v1", &[res]);
        let item = &doc["paths"]["/api/v1/componentstatuses/{name}"];
        assert!(
            item.get("get").is_some() && item.get("put").is_none() && item.get("patch").is_none()
        );
        assert!(
            doc["paths"]["/api/v1/componentstatuses"]
                .get("post")
                .is_none()
        );
    }

    #[test]
    fn hash_is_uppercase_sha512_and_stable() {
        let a = builtin_group_version_doc("apps", "v1").unwrap();
        let h = doc_hash(&a);
        assert_eq!(h.len(), 128);
        assert!(
            h.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        assert_eq!(
            h,
            doc_hash(&builtin_group_version_doc("apps", "v1").unwrap())
        );
        assert_ne!(
            h,
            doc_hash(&builtin_group_version_doc("batch", "v1").unwrap())
        );
    }
}
