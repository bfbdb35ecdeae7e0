//! Every built-in resource kind the server serves, taken from k8s-openapi.
//!
//! [`all`] lists the top-level (listable, storable) kinds of the stable API groups of
//! Kubernetes 1.37 as k8s-openapi knows them: group, version, kind, plural, scope and schema
//! name all come from the `k8s_openapi::Resource` / `JsonSchema` impls. What k8s-openapi does
//! not know — short names, categories and which kinds have a `status` / `scale` subresource —
//! is ported from the Kubernetes registry (`pkg/registry/**/storage.go`) into the table in
//! [`all`]. [`create_only`] lists kinds that are only ever POSTed (reviews), and
//! [`subresource_kinds`] the bodies of subresources (`pods/binding`, `*/scale`, …).
//!
//! Start reading at [`BuiltinKind`]; `schema` turns [`BuiltinKind::register`] into the
//! definitions map behind validation and `/openapi/v3`.

use std::borrow::Cow;
use std::sync::LazyLock;

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope, Resource};
use schemars::{JsonSchema, Schema, SchemaGenerator};

use k8s_openapi::api::{
    admissionregistration::v1 as admreg, apps::v1 as apps, authentication::v1 as authn,
    authorization::v1 as authz, autoscaling::v1 as as1, autoscaling::v2 as as2, batch::v1 as batch,
    certificates::v1 as certs, coordination::v1 as coord, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, flowcontrol::v1 as flowcontrol,
    networking::v1 as net, node::v1 as node, policy::v1 as policy, rbac::v1 as rbac,
    resource::v1 as resource, scheduling::v1 as scheduling, storage::v1 as storage,
    storagemigration::v1 as storagemigration,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as apireg;

/// The verbs of an ordinary stored resource, as Kubernetes lists them in discovery.
pub const DEFAULT_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One built-in resource kind (e.g. `apps/v1 Deployment`, served at `deployments`).
#[derive(Debug, Clone)]
pub struct BuiltinKind {
    /// API group; `""` for the core group.
    pub group: &'static str,
    /// API version, e.g. `v1`.
    pub version: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Kind of the list, e.g. `DeploymentList`.
    pub list_kind: &'static str,
    /// Plural resource name (the URL segment), e.g. `deployments`.
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts (`deploy`).
    pub short_names: &'static [&'static str],
    /// Categories (`all`).
    pub categories: &'static [&'static str],
    /// Whether Kubernetes serves a `status` subresource for this kind.
    pub has_status: bool,
    /// Whether Kubernetes serves a `scale` subresource (autoscaling/v1 `Scale`).
    pub has_scale: bool,
    /// Kubernetes' OpenAPI definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub definition: &'static str,
    /// Definition name of the list, e.g. `io.k8s.api.apps.v1.DeploymentList`.
    pub list_definition: &'static str,
    /// Adds the kind's schema (and everything it references) to a generator's definitions
    /// and returns a `$ref` to it.
    pub register: fn(&mut SchemaGenerator) -> Schema,
}

impl BuiltinKind {
    /// `group/version`, or just `version` for the core group (the `apiVersion` field).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Singular resource name as discovery reports it (the lowercased kind).
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }
}

/// A kind that is the body of a subresource rather than a resource of its own.
#[derive(Debug, Clone)]
pub struct SubresourceKind {
    /// API group of the body, e.g. `autoscaling` for `Scale`.
    pub group: &'static str,
    /// API version of the body.
    pub version: &'static str,
    /// Kind of the body, e.g. `Scale`.
    pub kind: &'static str,
    /// Subresource name, e.g. `scale`, `binding`, `eviction`, `token`.
    pub subresource: &'static str,
    /// Definition name of the body.
    pub definition: &'static str,
    /// Adds the body's schema to a generator's definitions.
    pub register: fn(&mut SchemaGenerator) -> Schema,
}

/// Whether a `k8s_openapi` scope is namespaced.
trait Scoped {
    const NAMESPACED: bool;
}
impl Scoped for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}
impl Scoped for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// What the Kubernetes registry adds to a kind (`kind::<T>(&["po"], ALL, STATUS)`).
#[derive(Clone, Copy)]
struct Sub {
    status: bool,
    scale: bool,
}
const NONE: Sub = Sub {
    status: false,
    scale: false,
};
const STATUS: Sub = Sub {
    status: true,
    scale: false,
};
const SCALE: Sub = Sub {
    status: true,
    scale: true,
};
const ALL: &[&str] = &["all"];
const API_EXT: &[&str] = &["api-extensions"];
const NO: &[&str] = &[];

fn register<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// A `&'static str` from a schema name. k8s-openapi's names are all borrowed; an owned one
/// (never seen) is leaked once, inside the `LazyLock`s below.
fn static_name(name: Cow<'static, str>) -> &'static str {
    match name {
        Cow::Borrowed(s) => s,
        Cow::Owned(s) => Box::leak(s.into_boxed_str()),
    }
}

/// `io.k8s.api.apps.v1.Deployment` + `DeploymentList` → `io.k8s.api.apps.v1.DeploymentList`.
fn sibling_definition(definition: &str, kind: &str) -> &'static str {
    let prefix = definition.rsplit_once('.').map_or("", |(prefix, _)| prefix);
    Box::leak(format!("{prefix}.{kind}").into_boxed_str())
}

fn kind<T>(
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    sub: Sub,
) -> BuiltinKind
where
    T: Resource + k8s_openapi::ListableResource + JsonSchema,
    T::Scope: Scoped,
{
    let definition = static_name(T::schema_name());
    BuiltinKind {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        list_kind: T::LIST_KIND,
        plural: T::URL_PATH_SEGMENT,
        namespaced: <T::Scope as Scoped>::NAMESPACED,
        short_names,
        categories,
        has_status: sub.status,
        has_scale: sub.scale,
        definition,
        list_definition: sibling_definition(definition, T::LIST_KIND),
        register: register::<T>,
    }
}

/// A kind that is only created (a review), never stored or listed.
fn create_only_kind<T>() -> BuiltinKind
where
    T: Resource + JsonSchema,
    T::Scope: Scoped,
{
    let definition = static_name(T::schema_name());
    BuiltinKind {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        list_kind: "",
        plural: T::URL_PATH_SEGMENT,
        namespaced: <T::Scope as Scoped>::NAMESPACED,
        short_names: NO,
        categories: NO,
        has_status: false,
        has_scale: false,
        definition,
        list_definition: "",
        register: register::<T>,
    }
}

fn subresource_kind<T: Resource + JsonSchema>(subresource: &'static str) -> SubresourceKind {
    SubresourceKind {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        subresource,
        definition: static_name(T::schema_name()),
        register: register::<T>,
    }
}

static ALL_KINDS: LazyLock<Vec<BuiltinKind>> = LazyLock::new(|| {
    vec![
        // core/v1
        kind::<core::Pod>(&["po"], ALL, STATUS),
        kind::<core::Service>(&["svc"], ALL, STATUS),
        kind::<core::ConfigMap>(&["cm"], NO, NONE),
        kind::<core::Secret>(NO, NO, NONE),
        kind::<core::Namespace>(&["ns"], NO, STATUS),
        kind::<core::Node>(&["no"], NO, STATUS),
        kind::<core::ServiceAccount>(&["sa"], NO, NONE),
        kind::<core::Event>(&["ev"], NO, NONE),
        kind::<core::Endpoints>(&["ep"], NO, NONE),
        kind::<core::PersistentVolume>(&["pv"], NO, STATUS),
        kind::<core::PersistentVolumeClaim>(&["pvc"], NO, STATUS),
        kind::<core::ReplicationController>(&["rc"], ALL, SCALE),
        kind::<core::PodTemplate>(NO, NO, NONE),
        kind::<core::LimitRange>(&["limits"], NO, NONE),
        kind::<core::ResourceQuota>(&["quota"], NO, STATUS),
        kind::<core::ComponentStatus>(&["cs"], NO, NONE),
        // apiregistration.k8s.io/v1
        kind::<apireg::APIService>(NO, API_EXT, STATUS),
        // apps/v1
        kind::<apps::Deployment>(&["deploy"], ALL, SCALE),
        kind::<apps::ReplicaSet>(&["rs"], ALL, SCALE),
        kind::<apps::StatefulSet>(&["sts"], ALL, SCALE),
        kind::<apps::DaemonSet>(&["ds"], ALL, STATUS),
        kind::<apps::ControllerRevision>(NO, NO, NONE),
        // events.k8s.io/v1
        kind::<events::Event>(&["ev"], NO, NONE),
        // autoscaling/v1, v2
        kind::<as2::HorizontalPodAutoscaler>(&["hpa"], ALL, STATUS),
        kind::<as1::HorizontalPodAutoscaler>(&["hpa"], ALL, STATUS),
        // batch/v1
        kind::<batch::Job>(NO, ALL, STATUS),
        kind::<batch::CronJob>(&["cj"], ALL, STATUS),
        // certificates.k8s.io/v1
        kind::<certs::CertificateSigningRequest>(&["csr"], NO, STATUS),
        kind::<certs::ClusterTrustBundle>(NO, NO, NONE),
        kind::<certs::PodCertificateRequest>(NO, NO, STATUS),
        // networking.k8s.io/v1
        kind::<net::Ingress>(&["ing"], NO, STATUS),
        kind::<net::IngressClass>(NO, NO, NONE),
        kind::<net::NetworkPolicy>(&["netpol"], NO, NONE),
        kind::<net::IPAddress>(&["ip"], NO, NONE),
        kind::<net::ServiceCIDR>(NO, NO, STATUS),
        // policy/v1
        kind::<policy::PodDisruptionBudget>(&["pdb"], NO, STATUS),
        // rbac.authorization.k8s.io/v1
        kind::<rbac::ClusterRole>(NO, NO, NONE),
        kind::<rbac::ClusterRoleBinding>(NO, NO, NONE),
        kind::<rbac::Role>(NO, NO, NONE),
        kind::<rbac::RoleBinding>(NO, NO, NONE),
        // storage.k8s.io/v1
        kind::<storage::StorageClass>(&["sc"], NO, NONE),
        kind::<storage::VolumeAttachment>(NO, NO, STATUS),
        kind::<storage::CSIDriver>(NO, NO, NONE),
        kind::<storage::CSINode>(NO, NO, NONE),
        kind::<storage::CSIStorageCapacity>(NO, NO, NONE),
        kind::<storage::VolumeAttributesClass>(&["vac"], NO, NONE),
        // admissionregistration.k8s.io/v1
        kind::<admreg::MutatingWebhookConfiguration>(NO, API_EXT, NONE),
        kind::<admreg::ValidatingWebhookConfiguration>(NO, API_EXT, NONE),
        kind::<admreg::ValidatingAdmissionPolicy>(NO, API_EXT, STATUS),
        kind::<admreg::ValidatingAdmissionPolicyBinding>(NO, API_EXT, NONE),
        kind::<admreg::MutatingAdmissionPolicy>(NO, API_EXT, NONE),
        kind::<admreg::MutatingAdmissionPolicyBinding>(NO, API_EXT, NONE),
        // apiextensions.k8s.io/v1
        kind::<apiext::CustomResourceDefinition>(&["crd", "crds"], API_EXT, STATUS),
        // scheduling.k8s.io/v1
        kind::<scheduling::PriorityClass>(&["pc"], NO, NONE),
        // coordination.k8s.io/v1
        kind::<coord::Lease>(NO, NO, NONE),
        // node.k8s.io/v1
        kind::<node::RuntimeClass>(NO, NO, NONE),
        // discovery.k8s.io/v1
        kind::<discovery::EndpointSlice>(NO, NO, NONE),
        // flowcontrol.apiserver.k8s.io/v1
        kind::<flowcontrol::FlowSchema>(NO, NO, STATUS),
        kind::<flowcontrol::PriorityLevelConfiguration>(NO, NO, STATUS),
        // resource.k8s.io/v1
        kind::<resource::DeviceClass>(NO, NO, NONE),
        kind::<resource::DeviceTaintRule>(NO, NO, STATUS),
        kind::<resource::ResourceClaim>(NO, NO, STATUS),
        kind::<resource::ResourceClaimTemplate>(NO, NO, NONE),
        kind::<resource::ResourceSlice>(NO, NO, NONE),
        // storagemigration.k8s.io/v1
        kind::<storagemigration::StorageVersionMigration>(NO, NO, STATUS),
    ]
});

static CREATE_ONLY: LazyLock<Vec<BuiltinKind>> = LazyLock::new(|| {
    vec![
        create_only_kind::<authn::TokenReview>(),
        create_only_kind::<authn::SelfSubjectReview>(),
        create_only_kind::<authz::SubjectAccessReview>(),
        create_only_kind::<authz::SelfSubjectAccessReview>(),
        create_only_kind::<authz::SelfSubjectRulesReview>(),
        create_only_kind::<authz::LocalSubjectAccessReview>(),
    ]
});

static SUBRESOURCE_KINDS: LazyLock<Vec<SubresourceKind>> = LazyLock::new(|| {
    vec![
        subresource_kind::<core::Binding>("binding"),
        subresource_kind::<policy::Eviction>("eviction"),
        subresource_kind::<as1::Scale>("scale"),
        subresource_kind::<authn::TokenRequest>("token"),
    ]
});

/// Every stored built-in kind, in Kubernetes' discovery order of groups (core first).
/// Within a group the preferred version comes first (`autoscaling/v2` before `v1`).
pub fn all() -> &'static [BuiltinKind] {
    &ALL_KINDS
}

/// Kinds that are only ever created and never stored: `TokenReview`, `SubjectAccessReview`
/// and the other reviews. A server that does not implement them can leave them out of
/// discovery.
pub fn create_only() -> &'static [BuiltinKind] {
    &CREATE_ONLY
}

/// Bodies of subresources: `pods/binding` (`Binding`), `pods/eviction` (`Eviction`),
/// `*/scale` (`autoscaling/v1 Scale`), `serviceaccounts/token` (`TokenRequest`).
pub fn subresource_kinds() -> &'static [SubresourceKind] {
    &SUBRESOURCE_KINDS
}

/// The stored built-in kind served at `group/version/plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static BuiltinKind> {
    all()
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The stored built-in kind `kind` of `group`, preferred version first (so
/// `find_kind("autoscaling", "HorizontalPodAutoscaler")` is the `v2` one).
pub fn find_kind(group: &str, kind: &str) -> Option<&'static BuiltinKind> {
    all().iter().find(|k| k.group == group && k.kind == kind)
}

/// The stored built-in kind `kind` of exactly `group/version`.
pub fn find_gvk(group: &str, version: &str, kind: &str) -> Option<&'static BuiltinKind> {
    all()
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// The distinct `(group, version)` pairs of [`all`], in order of first appearance.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for k in all() {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn core_kinds_are_there_with_kubernetes_names() {
        let pod = find("", "v1", "pods").unwrap();
        assert_eq!(pod.kind, "Pod");
        assert_eq!(pod.list_kind, "PodList");
        assert!(pod.namespaced);
        assert!(pod.has_status);
        assert_eq!(pod.short_names, &["po"]);
        assert_eq!(pod.categories, &["all"]);
        assert_eq!(pod.definition, "io.k8s.api.core.v1.Pod");
        assert_eq!(pod.list_definition, "io.k8s.api.core.v1.PodList");
        assert_eq!(pod.api_version(), "v1");

        let node = find_kind("", "Node").unwrap();
        assert!(!node.namespaced);
        let cm = find("", "v1", "configmaps").unwrap();
        assert!(!cm.has_status);
        let deploy = find_kind("apps", "Deployment").unwrap();
        assert!(deploy.has_scale);
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(
            find_kind("autoscaling", "HorizontalPodAutoscaler")
                .unwrap()
                .version,
            "v2"
        );
        let crd = find("apiextensions.k8s.io", "v1", "customresourcedefinitions").unwrap();
        assert_eq!(crd.short_names, &["crd", "crds"]);
        assert!(!crd.namespaced);
        assert_eq!(
            crd.definition,
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
        );
    }

    #[test]
    fn plurals_are_unique_per_group_version() {
        let mut seen = std::collections::HashSet::new();
        for k in all() {
            assert!(seen.insert((k.group, k.version, k.plural)), "{k:?}");
            assert!(!k.plural.is_empty() && !k.definition.is_empty());
        }
        let gvs = group_versions();
        assert_eq!(gvs[0], ("", "v1"));
        assert!(gvs.contains(&("rbac.authorization.k8s.io", "v1")));
        assert!(gvs.contains(&("resource.k8s.io", "v1")));
    }

    #[test]
    fn subresource_and_create_only_kinds() {
        assert!(
            subresource_kinds()
                .iter()
                .any(|s| s.kind == "Scale" && s.group == "autoscaling")
        );
        assert!(
            create_only()
                .iter()
                .any(|k| k.kind == "SubjectAccessReview")
        );
        assert!(find("authorization.k8s.io", "v1", "subjectaccessreviews").is_none());
    }
}
