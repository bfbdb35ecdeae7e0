//! What strategic merge patch needs to know about a schema node.
//!
//! Kubernetes decides how to merge a list by the `x-kubernetes-patch-merge-key` and
//! `x-kubernetes-patch-strategy` of the field that holds it. `patch` walks the patch and the
//! object with a [`PatchMeta`] beside them; `schema` implements it for the built-in schemas
//! (annotated with the server's merge-key table) so the same data serves `/openapi/v3` and
//! the merge.

/// Patch metadata of one node of a schema (an object, a list or a scalar).
pub trait PatchMeta: Sized {
    /// The schema of property `name` of this object node, if known.
    fn field(&self, name: &str) -> Option<Self>;
    /// The schema of the items of this list node, or of the values of a map node.
    fn items(&self) -> Option<Self>;
    /// `x-kubernetes-patch-merge-key` of this (list) node.
    fn merge_key(&self) -> Option<String>;
    /// `x-kubernetes-patch-strategy` of this node split on `,` (e.g. `merge`, `retainKeys`,
    /// `replace`); empty when absent (lists are then replaced atomically).
    fn strategies(&self) -> Vec<String>;
}

/// A schema that knows nothing: every list is replaced, every map is merged. Strategic merge
/// patch with this behaves like JSON merge patch except for the directives.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMeta;

impl PatchMeta for NoMeta {
    fn field(&self, _name: &str) -> Option<Self> {
        None
    }
    fn items(&self) -> Option<Self> {
        None
    }
    fn merge_key(&self) -> Option<String> {
        None
    }
    fn strategies(&self) -> Vec<String> {
        Vec::new()
    }
}
