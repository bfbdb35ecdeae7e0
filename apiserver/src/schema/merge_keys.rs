//! The strategic-merge-patch table: which list fields merge, and by which key.
//!
//! Ported from the Go struct tags of `k8s.io/api` (`patchStrategy:"merge"
//! patchMergeKey:"name"`, `+listType=map`, `+listMapKey=…`), keyed by (definition,
//! property). k8s-openapi's schemas lack these, so [`annotate`] writes them onto the
//! built-in definitions as `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
//! `x-kubernetes-list-type` and `x-kubernetes-list-map-keys` — where Kubernetes' own
//! `/openapi/v3` has them, and where kubectl's client-side apply and our strategic merge
//! patch look. core/v1 and apps/v1 are complete; other groups cover their merge-keyed lists
//! (status conditions, webhooks, CSI drivers).

use serde_json::{Map, Value};

/// One annotated property.
pub(super) struct Entry {
    /// Definition name, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub definition: &'static str,
    /// Property of that definition, e.g. `containers`.
    pub property: &'static str,
    /// `x-kubernetes-patch-strategy` (`merge`, `retainKeys`, `merge,retainKeys`), or `""`.
    pub strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`, or `""`.
    pub merge_key: &'static str,
    /// `x-kubernetes-list-type` (`map`, `set`, `atomic`), or `""`.
    pub list_type: &'static str,
    /// `x-kubernetes-list-map-keys` of a `map` list.
    pub map_keys: &'static [&'static str],
}

macro_rules! entries {
    ($( $prefix:literal $def:literal . $prop:literal => $strategy:literal $key:literal $list:literal [$($mk:literal),*] ;)*) => {
        &[$( Entry {
            definition: concat!($prefix, $def),
            property: $prop,
            strategy: $strategy,
            merge_key: $key,
            list_type: $list,
            map_keys: &[$($mk),*],
        } ),*]
    };
}

/// The table. Columns: definition . property => strategy, merge key, list type [map keys].
pub(super) const TABLE: &[Entry] = entries! {
    "io.k8s.apimachinery.pkg.apis.meta.v1." "ObjectMeta"."finalizers" => "merge" "" "set" [];
    "io.k8s.apimachinery.pkg.apis.meta.v1." "ObjectMeta"."ownerReferences" => "merge" "uid" "map" ["uid"];

    // core/v1 — PodSpec
    "io.k8s.api.core.v1." "PodSpec"."volumes" => "merge,retainKeys" "name" "map" ["name"];
    "io.k8s.api.core.v1." "PodSpec"."initContainers" => "merge" "name" "map" ["name"];
    "io.k8s.api.core.v1." "PodSpec"."containers" => "merge" "name" "map" ["name"];
    "io.k8s.api.core.v1." "PodSpec"."ephemeralContainers" => "merge" "name" "map" ["name"];
    "io.k8s.api.core.v1." "PodSpec"."imagePullSecrets" => "merge" "name" "map" ["name"];
    "io.k8s.api.core.v1." "PodSpec"."hostAliases" => "merge" "ip" "map" ["ip"];
    "io.k8s.api.core.v1." "PodSpec"."topologySpreadConstraints" => "merge" "topologyKey" "map" ["topologyKey", "whenUnsatisfiable"];
    "io.k8s.api.core.v1." "PodSpec"."schedulingGates" => "merge" "name" "map" ["name"];
    "io.k8s.api.core.v1." "PodSpec"."resourceClaims" => "merge,retainKeys" "name" "map" ["name"];
    // core/v1 — PodStatus, ContainerStatus
    "io.k8s.api.core.v1." "PodStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.core.v1." "PodStatus"."podIPs" => "merge" "ip" "map" ["ip"];
    "io.k8s.api.core.v1." "PodStatus"."hostIPs" => "merge" "ip" "map" ["ip"];
    "io.k8s.api.core.v1." "PodStatus"."resourceClaimStatuses" => "merge,retainKeys" "name" "map" ["name"];
    "io.k8s.api.core.v1." "ContainerStatus"."allocatedResourcesStatus" => "merge" "name" "map" ["name"];
    // core/v1 — Container and EphemeralContainer (same tags)
    "io.k8s.api.core.v1." "Container"."ports" => "merge" "containerPort" "map" ["containerPort", "protocol"];
    "io.k8s.api.core.v1." "Container"."env" => "merge" "name" "map" ["name"];
    "io.k8s.api.core.v1." "Container"."volumeMounts" => "merge" "mountPath" "map" ["mountPath"];
    "io.k8s.api.core.v1." "Container"."volumeDevices" => "merge" "devicePath" "map" ["devicePath"];
    "io.k8s.api.core.v1." "EphemeralContainer"."ports" => "merge" "containerPort" "map" ["containerPort", "protocol"];
    "io.k8s.api.core.v1." "EphemeralContainer"."env" => "merge" "name" "map" ["name"];
    "io.k8s.api.core.v1." "EphemeralContainer"."volumeMounts" => "merge" "mountPath" "map" ["mountPath"];
    "io.k8s.api.core.v1." "EphemeralContainer"."volumeDevices" => "merge" "devicePath" "map" ["devicePath"];
    // core/v1 — other kinds
    "io.k8s.api.core.v1." "NodeSpec"."podCIDRs" => "merge" "" "set" [];
    "io.k8s.api.core.v1." "NodeStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.core.v1." "NodeStatus"."addresses" => "merge" "type" "map" ["type"];
    "io.k8s.api.core.v1." "ServiceSpec"."ports" => "merge" "port" "map" ["port", "protocol"];
    "io.k8s.api.core.v1." "ServiceStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.core.v1." "ServiceAccount"."secrets" => "merge" "name" "map" ["name"];
    "io.k8s.api.core.v1." "NamespaceStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.core.v1." "PersistentVolumeClaimStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.core.v1." "ReplicationControllerStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.core.v1." "ComponentStatus"."conditions" => "merge" "type" "map" ["type"];

    // apps/v1
    "io.k8s.api.apps.v1." "DeploymentSpec"."strategy" => "retainKeys" "" "" [];
    "io.k8s.api.apps.v1." "DeploymentStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.apps.v1." "ReplicaSetStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.apps.v1." "StatefulSetStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.apps.v1." "DaemonSetStatus"."conditions" => "merge" "type" "map" ["type"];

    // other groups
    "io.k8s.api.batch.v1." "JobStatus"."conditions" => "merge" "type" "atomic" [];
    "io.k8s.api.autoscaling.v2." "HorizontalPodAutoscalerStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.policy.v1." "PodDisruptionBudgetStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.admissionregistration.v1." "MutatingWebhookConfiguration"."webhooks" => "merge" "name" "map" ["name"];
    "io.k8s.api.admissionregistration.v1." "ValidatingWebhookConfiguration"."webhooks" => "merge" "name" "map" ["name"];
    "io.k8s.api.admissionregistration.v1." "ValidatingAdmissionPolicyStatus"."conditions" => "" "" "map" ["type"];
    "io.k8s.api.storage.v1." "CSINodeSpec"."drivers" => "merge" "name" "map" ["name"];
    "io.k8s.api.flowcontrol.v1." "FlowSchemaStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.flowcontrol.v1." "PriorityLevelConfigurationStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.networking.v1." "ServiceCIDRStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.api.certificates.v1." "CertificateSigningRequestStatus"."conditions" => "" "" "map" ["type"];
    "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1." "APIServiceStatus"."conditions" => "merge" "type" "map" ["type"];
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1." "CustomResourceDefinitionStatus"."conditions" => "" "" "map" ["type"];
};

/// Writes [`TABLE`] onto `defs`. Entries whose definition or property is missing are
/// skipped (a test checks there are none).
pub(super) fn annotate(defs: &mut Map<String, Value>) {
    for e in TABLE {
        let Some(Value::Object(prop)) = defs
            .get_mut(e.definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(e.property))
        else {
            continue;
        };
        if !e.strategy.is_empty() {
            prop.insert("x-kubernetes-patch-strategy".into(), e.strategy.into());
        }
        if !e.merge_key.is_empty() {
            prop.insert("x-kubernetes-patch-merge-key".into(), e.merge_key.into());
        }
        if !e.list_type.is_empty() {
            prop.insert("x-kubernetes-list-type".into(), e.list_type.into());
        }
        if !e.map_keys.is_empty() {
            let keys: Vec<Value> = e.map_keys.iter().map(|k| Value::from(*k)).collect();
            prop.insert("x-kubernetes-list-map-keys".into(), keys.into());
        }
    }
}
