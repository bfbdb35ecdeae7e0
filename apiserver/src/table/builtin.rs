//! Printers for built-in kinds, ported from Kubernetes'
//! `pkg/printers/internalversion/printers.go` (v1.32). The server always
//! generates the wide (`-o wide`) cells; kubectl hides columns whose
//! `priority` is non-zero unless asked for them.
//!
//! [`lookup`] maps a group and kind to its [`Printer`]; kinds without a
//! printer there (roles, CRDs, ...) use the default Name / Created At table.
//! The bigger printers live in sibling modules: `pod` (pods, nodes, events),
//! `workload` (apps, batch, policy), `network` (services, ingresses, ...)
//! and `storage` (volumes, claims, storage classes).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::format::{age, arr, format_labels, get, human_duration, int, len_at, s};
use super::{network, pod, storage, workload};

/// `metav1.ObjectMeta{}.SwaggerDoc()["name"]`.
pub(crate) const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// `metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]`.
pub(crate) const CREATED_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// One `TableColumnDefinition` of a built-in printer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Col {
    pub name: &'static str,
    pub ty: &'static str,
    pub format: &'static str,
    pub priority: i32,
    pub desc: &'static str,
}

/// A normal column.
pub(crate) const fn col(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        priority: 0,
        desc,
    }
}

/// A column only shown by `kubectl get -o wide` (priority 1).
pub(crate) const fn wide(name: &'static str, ty: &'static str, desc: &'static str) -> Col {
    Col {
        name,
        ty,
        format: "",
        priority: 1,
        desc,
    }
}

/// The `Name` column every printer starts with.
pub(crate) const NAME: Col = Col {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    desc: NAME_DESC,
};

/// The `Age` column.
pub(crate) const AGE: Col = col("Age", "string", CREATED_DESC);

/// The wide `Containers` column of workload printers.
pub(crate) const CONTAINERS: Col = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
/// The wide `Images` column of workload printers.
pub(crate) const IMAGES: Col = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// The cells (and row conditions) of one table row.
#[derive(Debug, Default)]
pub(crate) struct Row {
    pub cells: Vec<Value>,
    pub conditions: Option<Value>,
}

impl From<Vec<Value>> for Row {
    fn from(cells: Vec<Value>) -> Self {
        Self {
            cells,
            conditions: None,
        }
    }
}

/// The columns of a built-in kind and the function that fills one row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    pub columns: &'static [Col],
    pub row: fn(&Value, DateTime<Utc>) -> Row,
}

/// The printer Kubernetes registers for `group`/`kind`, if any.
pub(crate) fn lookup(group: &str, kind: &str) -> Option<Printer> {
    Some(match (group, kind) {
        ("", "Pod") => pod::POD,
        ("", "Node") => pod::NODE,
        ("" | "events.k8s.io", "Event") => pod::EVENT,
        ("", "Namespace") => NAMESPACE,
        ("", "ConfigMap") => CONFIG_MAP,
        ("", "Secret") => SECRET,
        ("", "ServiceAccount") => SERVICE_ACCOUNT,
        ("", "PersistentVolumeClaim") => storage::PVC,
        ("", "PersistentVolume") => storage::PV,
        ("", "PodTemplate") => POD_TEMPLATE,
        ("", "Service") => network::SERVICE,
        ("", "Endpoints") => network::ENDPOINTS,
        ("discovery.k8s.io", "EndpointSlice") => network::ENDPOINT_SLICE,
        ("networking.k8s.io", "Ingress") => network::INGRESS,
        ("networking.k8s.io", "IngressClass") => network::INGRESS_CLASS,
        ("networking.k8s.io", "NetworkPolicy") => network::NETWORK_POLICY,
        ("", "ReplicationController") => workload::REPLICATION_CONTROLLER,
        ("apps", "Deployment") => workload::DEPLOYMENT,
        ("apps", "ReplicaSet") => workload::REPLICA_SET,
        ("apps", "StatefulSet") => workload::STATEFUL_SET,
        ("apps", "DaemonSet") => workload::DAEMON_SET,
        ("apps", "ControllerRevision") => workload::CONTROLLER_REVISION,
        ("batch", "Job") => workload::JOB,
        ("batch", "CronJob") => workload::CRON_JOB,
        ("policy", "PodDisruptionBudget") => workload::PDB,
        ("coordination.k8s.io", "Lease") => LEASE,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => ROLE_BINDING,
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => WEBHOOK_CONFIGURATION,
        ("storage.k8s.io", "StorageClass") => storage::STORAGE_CLASS,
        ("scheduling.k8s.io", "PriorityClass") => PRIORITY_CLASS,
        ("node.k8s.io", "RuntimeClass") => RUNTIME_CLASS,
        ("certificates.k8s.io", "CertificateSigningRequest") => CSR,
        _ => return None,
    })
}

/// Names and images of the containers of the pod template at `spec.template`.
pub(crate) fn template_containers(obj: &Value, template: &[&str]) -> (String, String) {
    let mut path = template.to_vec();
    path.extend(["spec", "containers"]);
    super::format::layout_containers(arr(obj, &path))
}

fn name(obj: &Value) -> Value {
    json!(s(obj, &["metadata", "name"]))
}

const NAMESPACE: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "The status of the namespace"),
        AGE,
    ],
    row: |o, now| {
        // The namespace strategy sets phase Active on create; show that for
        // objects stored before the phase was filled in.
        let phase = match s(o, &["status", "phase"]) {
            "" => "Active",
            p => p,
        };
        vec![name(o), json!(phase), json!(age(o, now))].into()
    },
};

const CONFIG_MAP: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Data",
            "string",
            "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
        ),
        AGE,
    ],
    row: |o, now| {
        let n = len_at(o, &["data"]) + len_at(o, &["binaryData"]);
        vec![name(o), json!(n), json!(age(o, now))].into()
    },
};

const SECRET: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Type",
            "string",
            "Used to facilitate programmatic handling of secret data.",
        ),
        col(
            "Data",
            "string",
            "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'.",
        ),
        AGE,
    ],
    row: |o, now| {
        let ty = match s(o, &["type"]) {
            "" => "Opaque",
            t => t,
        };
        // stringData is merged into data on write; count keys not yet merged too.
        let data = get(o, &["data"]).and_then(Value::as_object);
        let extra = get(o, &["stringData"])
            .and_then(Value::as_object)
            .map(|sd| {
                sd.keys()
                    .filter(|k| data.is_none_or(|d| !d.contains_key(*k)))
                    .count()
            })
            .unwrap_or(0);
        let n = data.map_or(0, |d| d.len()) + extra;
        vec![name(o), json!(ty), json!(n), json!(age(o, now))].into()
    },
};

const SERVICE_ACCOUNT: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Secrets",
            "string",
            "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
        ),
        AGE,
    ],
    row: |o, now| vec![name(o), json!(len_at(o, &["secrets"])), json!(age(o, now))].into(),
};

const LEASE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Holder",
            "string",
            "holderIdentity contains the identity of the holder of a current lease.",
        ),
        AGE,
    ],
    row: |o, now| {
        vec![
            name(o),
            json!(s(o, &["spec", "holderIdentity"])),
            json!(age(o, now)),
        ]
        .into()
    },
};

const ROLE_BINDING: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Role",
            "string",
            "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
        ),
        AGE,
        wide("Users", "string", "Users in the roleBinding"),
        wide("Groups", "string", "Groups in the roleBinding"),
        wide(
            "ServiceAccounts",
            "string",
            "ServiceAccounts in the roleBinding",
        ),
    ],
    row: |o, now| {
        let role = format!(
            "{}/{}",
            s(o, &["roleRef", "kind"]),
            s(o, &["roleRef", "name"])
        );
        let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
        for subj in arr(o, &["subjects"]) {
            let n = s(subj, &["name"]);
            match s(subj, &["kind"]) {
                "ServiceAccount" => sas.push(format!("{}/{n}", s(subj, &["namespace"]))),
                "User" => users.push(n.to_owned()),
                "Group" => groups.push(n.to_owned()),
                _ => {}
            }
        }
        vec![
            name(o),
            json!(role),
            json!(age(o, now)),
            json!(users.join(", ")),
            json!(groups.join(", ")),
            json!(sas.join(", ")),
        ]
        .into()
    },
};

const WEBHOOK_CONFIGURATION: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Webhooks",
            "integer",
            "Webhooks indicates the number of webhooks registered in this configuration",
        ),
        AGE,
    ],
    row: |o, now| vec![name(o), json!(len_at(o, &["webhooks"])), json!(age(o, now))].into(),
};

const POD_TEMPLATE: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Containers",
            "string",
            "Names of each container in the template.",
        ),
        col(
            "Images",
            "string",
            "Images referenced by each container in the template.",
        ),
        col("Pod Labels", "string", "The labels for the pod template."),
    ],
    row: |o, _| {
        let (names, images) = template_containers(o, &["template"]);
        vec![
            name(o),
            json!(names),
            json!(images),
            json!(format_labels(get(o, &["template", "metadata", "labels"]))),
        ]
        .into()
    },
};

const PRIORITY_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Value",
            "integer",
            "value represents the integer value of this priority class.",
        ),
        col(
            "Global-Default",
            "boolean",
            "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
        ),
        AGE,
        col(
            "PreemptionPolicy",
            "string",
            "preemptionPolicy is the Policy for preempting pods with lower priority.",
        ),
    ],
    row: |o, now| {
        vec![
            name(o),
            json!(int(o, &["value"])),
            json!(super::format::boolean(o, &["globalDefault"])),
            json!(age(o, now)),
            json!(s(o, &["preemptionPolicy"])),
        ]
        .into()
    },
};

const RUNTIME_CLASS: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Handler",
            "string",
            "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class.",
        ),
        AGE,
    ],
    row: |o, now| vec![name(o), json!(s(o, &["handler"])), json!(age(o, now))].into(),
};

const CSR: Printer = Printer {
    columns: &[
        NAME,
        AGE,
        col(
            "SignerName",
            "string",
            "signerName indicates the requested signer, and is a qualified name.",
        ),
        col(
            "Requestor",
            "string",
            "Name of the user that requested the certificate.",
        ),
        col(
            "RequestedDuration",
            "string",
            "expirationSeconds is the requested duration of validity of the issued certificate.",
        ),
        col("Condition", "string", "conditions applied to the request."),
    ],
    row: |o, now| {
        let (mut approved, mut denied, mut failed) = (false, false, false);
        for c in arr(o, &["status", "conditions"]) {
            match s(c, &["type"]) {
                "Approved" => approved = true,
                "Denied" => denied = true,
                "Failed" => failed = true,
                _ => {}
            }
        }
        let mut status = if denied {
            "Denied"
        } else if approved {
            "Approved"
        } else {
            "Pending"
        }
        .to_owned();
        if failed {
            status.push_str(",Failed");
        }
        if !s(o, &["status", "certificate"]).is_empty() {
            status.push_str(",Issued");
        }
        let duration = match get(o, &["spec", "expirationSeconds"]).and_then(Value::as_i64) {
            Some(secs) => human_duration(chrono::TimeDelta::seconds(secs)),
            None => "<none>".to_owned(),
        };
        vec![
            name(o),
            json!(age(o, now)),
            json!(match s(o, &["spec", "signerName"]) {
                "" => "<none>",
                x => x,
            }),
            json!(s(o, &["spec", "username"])),
            json!(duration),
            json!(status),
        ]
        .into()
    },
};
