//! Printers for storage: persistent volume claims, persistent volumes and
//! storage classes.

use serde_json::{Value, json};

use super::builtin::{AGE, NAME, Printer, col, wide};
use super::format::{age, arr, boolean, get, s};

fn name(o: &Value) -> Value {
    json!(s(o, &["metadata", "name"]))
}

/// `helper.GetAccessModesAsString`.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class of a PV/PVC: the beta annotation wins over the field.
fn storage_class(o: &Value) -> String {
    match get(
        o,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    )
    .and_then(Value::as_str)
    {
        Some(c) => c.to_owned(),
        None => s(o, &["spec", "storageClassName"]).to_owned(),
    }
}

fn or_unset(v: &str) -> &str {
    if v.is_empty() { "<unset>" } else { v }
}

fn terminating_or(o: &Value, phase: &str) -> String {
    if get(o, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null()) {
        "Terminating".to_owned()
    } else {
        phase.to_owned()
    }
}

/// Persistent volume claims.
pub(crate) const PVC: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Status",
            "string",
            "phase represents the current phase of PersistentVolumeClaim.",
        ),
        col(
            "Volume",
            "string",
            "volumeName is the binding reference to the PersistentVolume backing this claim.",
        ),
        col(
            "Capacity",
            "string",
            "capacity represents the actual resources of the underlying volume.",
        ),
        col(
            "Access Modes",
            "string",
            "accessModes contains the actual access modes the volume backing the PVC has.",
        ),
        col("StorageClass", "string", "StorageClass of the pvc"),
        col(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pvc",
        ),
        AGE,
        wide(
            "VolumeMode",
            "string",
            "volumeMode defines what type of volume is required by the claim.",
        ),
    ],
    row: |o, now| {
        let volume = s(o, &["spec", "volumeName"]);
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                s(o, &["status", "capacity", "storage"]).to_owned(),
                access_modes(arr(o, &["status", "accessModes"])),
            )
        };
        vec![
            name(o),
            json!(terminating_or(o, s(o, &["status", "phase"]))),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(storage_class(o)),
            json!(or_unset(s(o, &["spec", "volumeAttributesClassName"]))),
            json!(age(o, now)),
            json!(or_unset(s(o, &["spec", "volumeMode"]))),
        ]
        .into()
    },
};

/// Persistent volumes.
pub(crate) const PV: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Capacity",
            "string",
            "capacity is the description of the persistent volume's resources and capacity.",
        ),
        col(
            "Access Modes",
            "string",
            "accessModes contains all ways the volume can be mounted.",
        ),
        col(
            "Reclaim Policy",
            "string",
            "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
        ),
        col(
            "Status",
            "string",
            "phase indicates if a volume is available, bound to a claim, or released by a claim.",
        ),
        col(
            "Claim",
            "string",
            "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
        ),
        col("StorageClass", "string", "StorageClass of the pv"),
        col(
            "VolumeAttributesClass",
            "string",
            "VolumeAttributesClass of the pv",
        ),
        col(
            "Reason",
            "string",
            "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI.",
        ),
        AGE,
        wide(
            "VolumeMode",
            "string",
            "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
        ),
    ],
    row: |o, now| {
        let claim = match get(o, &["spec", "claimRef"]) {
            Some(c) if !c.is_null() => format!("{}/{}", s(c, &["namespace"]), s(c, &["name"])),
            _ => String::new(),
        };
        vec![
            name(o),
            json!(s(o, &["spec", "capacity", "storage"])),
            json!(access_modes(arr(o, &["spec", "accessModes"]))),
            json!(s(o, &["spec", "persistentVolumeReclaimPolicy"])),
            json!(terminating_or(o, s(o, &["status", "phase"]))),
            json!(claim),
            json!(storage_class(o)),
            json!(or_unset(s(o, &["spec", "volumeAttributesClassName"]))),
            json!(s(o, &["status", "reason"])),
            json!(age(o, now)),
            json!(or_unset(s(o, &["spec", "volumeMode"]))),
        ]
        .into()
    },
};

/// Storage classes.
pub(crate) const STORAGE_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Provisioner",
            "string",
            "provisioner indicates the type of the provisioner.",
        ),
        col(
            "ReclaimPolicy",
            "string",
            "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
        ),
        col(
            "VolumeBindingMode",
            "string",
            "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
        ),
        col(
            "AllowVolumeExpansion",
            "string",
            "allowVolumeExpansion shows whether the storage class allow volume expand.",
        ),
        AGE,
    ],
    row: |o, now| {
        let ann = |k: &str| s(o, &["metadata", "annotations", k]) == "true";
        let mut n = s(o, &["metadata", "name"]).to_owned();
        if ann("storageclass.kubernetes.io/is-default-class")
            || ann("storageclass.beta.kubernetes.io/is-default-class")
        {
            n.push_str(" (default)");
        }
        let or = |v: &'static str, d: &'static str| -> Value {
            json!(match s(o, &[v]) {
                "" => d,
                x => x,
            })
        };
        vec![
            json!(n),
            json!(s(o, &["provisioner"])),
            or("reclaimPolicy", "Delete"),
            or("volumeBindingMode", "Immediate"),
            json!(boolean(o, &["allowVolumeExpansion"])),
            json!(age(o, now)),
        ]
        .into()
    },
};
