//! Schemas of every kind the server stores: built-in definitions, merge keys, validation.
//!
//! One definitions map ([`builtin_definitions`]) holds the OpenAPI 3 schemas of all built-in
//! kinds under Kubernetes' definition names (`io.k8s.api.core.v1.PodSpec`, …), generated once
//! from k8s-openapi's `schemars` impls (`defs`), normalised so that free-form fields,
//! quantities and int-or-strings validate as Kubernetes decodes them, and annotated with the
//! server's strategic-merge-patch table (`merge_keys`). The same map backs `/openapi/v3`
//! (`crate::openapi`), strategic merge patch (through [`SchemaRef`]'s
//! [`PatchMeta`] impl) and field validation (`validate`).
//!
//! Start reading at [`SchemaRef`]: a cursor over (definitions, node) that resolves `$ref`
//! and single-element `allOf` transparently. [`builtin_schema`] and [`crd_schema`] give the
//! root cursor of a kind; [`validate()`], [`prune()`] and [`apply_defaults`] walk an object
//! with it; [`check_structural`] vets a CRD's own schema before the CRD is accepted.

mod defs;
mod facts;
mod merge_keys;
mod prune;
mod structural;
mod validate;
mod values;

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use serde_json::{Map, Value, json};

use crate::patch_meta::PatchMeta;
pub(crate) use facts::NodeFacts;

pub use defs::{list_schema, refs_in};
pub use prune::{apply_defaults, prune};
pub use structural::check_structural;
pub use validate::{CauseType, FieldError, Validation, unknown_field_message, validate};

/// Prefix of the `$ref`s between definitions (OpenAPI 3 components).
pub const REF_PREFIX: &str = "#/components/schemas/";

/// Definition name of `ObjectMeta`, which every root `metadata` is validated against.
pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// How many `$ref` / `allOf` hops [`SchemaRef::resolved`] follows before giving up (a cycle
/// of bare references would otherwise never end).
const MAX_HOPS: usize = 32;

static EMPTY_DEFS: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);
static STRING_SCHEMA: LazyLock<Value> = LazyLock::new(|| json!({"type": "string"}));

/// The schemas of all built-in kinds, their lists, subresource bodies and the meta types
/// the API uses (`DeleteOptions`, `Status`, `Patch`, `WatchEvent`), keyed by Kubernetes'
/// definition names, with `$ref`s of the form `#/components/schemas/<name>`. Built on first
/// use (tens of milliseconds), then shared.
pub fn builtin_definitions() -> &'static Map<String, Value> {
    &defs::DEFINITIONS
}

/// The root schema of built-in definition `definition` (e.g. `io.k8s.api.core.v1.Pod`).
pub fn builtin_schema(definition: &str) -> Option<SchemaRef<'static>> {
    let defs = builtin_definitions();
    defs.get(definition).map(|node| SchemaRef {
        defs,
        node,
        origin: Origin::Builtin,
        root: true,
    })
}

/// The root schema of a custom resource from its CRD version's `schema.openAPIV3Schema`
/// (self-contained: structural schemas have no `$ref`). Root `apiVersion` and `kind` are
/// strings and root `metadata` is the built-in `ObjectMeta`, whatever the schema says.
pub fn crd_schema(open_api_v3_schema: &Value) -> SchemaRef<'_> {
    SchemaRef {
        defs: &EMPTY_DEFS,
        node: open_api_v3_schema,
        origin: Origin::Crd,
        root: true,
    }
}

/// The definition name a `$ref` points at (`#/components/schemas/X` or `#/definitions/X`).
pub fn ref_name(reference: &str) -> Option<&str> {
    reference
        .strip_prefix(REF_PREFIX)
        .or_else(|| reference.strip_prefix("#/definitions/"))
}

/// A `{"$ref": "#/components/schemas/<name>"}` schema.
pub fn definition_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

/// Where a schema comes from; decides the few rules Kubernetes applies to custom resources
/// only (`x-kubernetes-list-type` uniqueness — built-in lists such as `env` tolerate
/// duplicates for compatibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A built-in kind's definition.
    Builtin,
    /// A CustomResourceDefinition's structural schema.
    Crd,
}

/// A cursor on one node of a schema, with the definitions its `$ref`s point into.
///
/// Cheap to copy. The node is kept unresolved so that annotations sitting beside a `$ref`
/// or `allOf` (the merge keys, `description`) stay visible; lookups go through
/// [`SchemaRef::resolved`].
#[derive(Clone, Copy)]
pub struct SchemaRef<'a> {
    defs: &'a Map<String, Value>,
    node: &'a Value,
    origin: Origin,
    /// The object root of a kind: `apiVersion`, `kind` and `metadata` are implied.
    root: bool,
}

impl fmt::Debug for SchemaRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&String> = self
            .node
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        f.debug_struct("SchemaRef")
            .field("origin", &self.origin)
            .field("root", &self.root)
            .field("keys", &keys)
            .finish()
    }
}

impl<'a> SchemaRef<'a> {
    /// The node as written (before resolving `$ref` / `allOf`).
    pub fn node(&self) -> &'a Value {
        self.node
    }

    /// Where this schema comes from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Whether this is the object root of a kind.
    pub fn is_root(&self) -> bool {
        self.root
    }

    fn child(&self, node: &'a Value) -> SchemaRef<'a> {
        SchemaRef {
            defs: self.defs,
            node,
            origin: self.origin,
            root: false,
        }
    }

    /// Follows `$ref` and a lone `allOf: [x]` wrapper (how OpenAPI 3 puts a description
    /// beside a reference) to the node that carries the type. Unknown references resolve to
    /// themselves (which then constrain nothing).
    pub fn resolved(&self) -> SchemaRef<'a> {
        let node = match facts::builtin(self) {
            Some(f) => f.resolved,
            None => facts::resolve(self.defs, self.node),
        };
        SchemaRef { node, ..*self }
    }

    /// What the walks ask of this node, worked out once (kept for built-in nodes).
    pub(crate) fn facts(&self) -> Cow<'a, NodeFacts<'a>> {
        match facts::builtin(self) {
            Some(f) => Cow::Borrowed(f),
            None => Cow::Owned(NodeFacts::of(*self)),
        }
    }

    /// [`Self::resolved`] with this node's facts at hand.
    pub(crate) fn resolved_in(&self, f: &NodeFacts<'a>) -> SchemaRef<'a> {
        SchemaRef {
            node: f.resolved,
            ..*self
        }
    }

    /// A keyword of the resolved node.
    pub fn get(&self, keyword: &str) -> Option<&'a Value> {
        self.resolved().node.get(keyword)
    }

    /// Whether boolean keyword `keyword` (`x-kubernetes-preserve-unknown-fields`, …) is true
    /// on the resolved node.
    pub fn flag(&self, keyword: &str) -> bool {
        self.get(keyword).and_then(Value::as_bool).unwrap_or(false)
    }

    /// `type` of the resolved node.
    pub fn type_name(&self) -> Option<&'a str> {
        self.get("type").and_then(Value::as_str)
    }

    /// Whether this node (with facts `f`) is the root of an object (a kind or an embedded
    /// resource), where `apiVersion`, `kind` and `metadata` are always known.
    fn is_object_root(&self, f: &NodeFacts<'a>) -> bool {
        self.root || f.embedded
    }

    /// The schema of property `name` for a value of JSON type `want`: from the resolved
    /// node, then the branches of its `allOf`/`anyOf`/`oneOf` that declare type `want` (or
    /// any container type when `want` is `None`). Branches without a type only add value
    /// constraints (structural schemas), so they never define fields.
    pub(crate) fn property_for(&self, name: &str, want: Option<&str>) -> Option<SchemaRef<'a>> {
        self.property_in(&self.facts(), name, want)
    }

    /// [`Self::property_for`] with this node's facts at hand.
    pub(crate) fn property_in(
        &self,
        f: &NodeFacts<'a>,
        name: &str,
        want: Option<&str>,
    ) -> Option<SchemaRef<'a>> {
        if self.is_object_root(f) {
            match name {
                "metadata" => return object_meta().map(|m| SchemaRef { root: false, ..m }),
                "apiVersion" | "kind" => {
                    let declared = f.property(name, want).map(|n| self.child(n));
                    return Some(declared.unwrap_or_else(|| self.child(&STRING_SCHEMA)));
                }
                _ => {}
            }
        }
        f.property(name, want).map(|n| self.child(n))
    }

    /// `additionalProperties` for an object value: `Some(Some(schema))`, `Some(None)` when
    /// any key is allowed unchecked (`true`), `None` when absent or `false`.
    pub(crate) fn additional_for(&self, want: Option<&str>) -> Option<Option<SchemaRef<'a>>> {
        self.additional_in(&self.facts(), want)
    }

    /// [`Self::additional_for`] with this node's facts at hand.
    pub(crate) fn additional_in(
        &self,
        f: &NodeFacts<'a>,
        want: Option<&str>,
    ) -> Option<Option<SchemaRef<'a>>> {
        f.additional(want).map(|a| a.map(|n| self.child(n)))
    }

    /// `items` for an array value.
    pub(crate) fn items_for(&self, want: Option<&str>) -> Option<SchemaRef<'a>> {
        self.items_in(&self.facts(), want)
    }

    /// [`Self::items_for`] with this node's facts at hand.
    pub(crate) fn items_in(&self, f: &NodeFacts<'a>, want: Option<&str>) -> Option<SchemaRef<'a>> {
        f.items(want).map(|n| self.child(n))
    }

    /// Whether this node declares the fields of an object value (`type: object` or
    /// `properties`, or an object root), so that keys it does not name are unknown — unless
    /// [`NodeFacts::preserves_unknown`].
    pub(crate) fn defines_fields_in(&self, f: &NodeFacts<'a>) -> bool {
        self.is_object_root(f) || f.declares_fields()
    }

    /// Whether `null` is a value of this node (`nullable: true`); otherwise Kubernetes drops
    /// the field as if it were absent.
    pub(crate) fn nullable(&self) -> bool {
        self.node.get("nullable") == Some(&Value::Bool(true)) || self.flag("nullable")
    }

    /// An extension on this node or, failing that, on the resolved node.
    fn annotation(&self, keyword: &str) -> Option<&'a Value> {
        self.node.get(keyword).or_else(|| self.get(keyword))
    }
}

/// The built-in `ObjectMeta` schema.
fn object_meta() -> Option<SchemaRef<'static>> {
    builtin_schema(OBJECT_META)
}

impl PatchMeta for SchemaRef<'_> {
    fn field(&self, name: &str) -> Option<Self> {
        self.property_for(name, None)
            .or_else(|| self.additional_for(None).flatten())
    }

    fn items(&self) -> Option<Self> {
        self.items_for(None)
            .or_else(|| self.additional_for(None).flatten())
    }

    fn merge_key(&self) -> Option<String> {
        self.annotation("x-kubernetes-patch-merge-key")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn strategies(&self) -> Vec<String> {
        self.annotation("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
