//! Printers for workload controllers: apps (deployments, replica sets,
//! stateful sets, daemon sets, controller revisions), replication
//! controllers, batch (jobs, cron jobs) and pod disruption budgets.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::builtin::{AGE, CONTAINERS, IMAGES, NAME, Printer, Row, col, template_containers, wide};
use super::format::{
    age, arr, format_label_selector, format_labels, get, human_duration, int, int_or,
    int_or_string, parse_time, s, selector_string, since,
};

const SELECTOR_DESC: &str = "A label query over pods that should match the replica count.";

fn name(o: &Value) -> Value {
    json!(s(o, &["metadata", "name"]))
}

/// `spec.replicas`, which API defaulting sets to 1 when omitted.
fn replicas(o: &Value) -> i64 {
    int_or(o, &["spec", "replicas"], 1)
}

/// Deployments.
pub(crate) const DEPLOYMENT: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Number of the pod with ready state"),
        col(
            "Up-to-date",
            "string",
            "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        ),
        col(
            "Available",
            "string",
            "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
        ),
    ],
    row: |o, now| {
        let (names, images) = template_containers(o, &["spec", "template"]);
        let selector = selector_string(get(o, &["spec", "selector"]))
            .unwrap_or_else(|| "<invalid>".to_owned());
        vec![
            name(o),
            json!(format!(
                "{}/{}",
                int(o, &["status", "readyReplicas"]),
                replicas(o)
            )),
            json!(int(o, &["status", "updatedReplicas"])),
            json!(int(o, &["status", "availableReplicas"])),
            json!(age(o, now)),
            json!(names),
            json!(images),
            json!(selector),
        ]
        .into()
    },
};

/// Replica sets.
pub(crate) const REPLICA_SET: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas.",
        ),
        col(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        col(
            "Ready",
            "integer",
            "The number of ready replicas for this replica set.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", SELECTOR_DESC),
    ],
    row: |o, now| {
        let (names, images) = template_containers(o, &["spec", "template"]);
        vec![
            name(o),
            json!(replicas(o)),
            json!(int(o, &["status", "replicas"])),
            json!(int(o, &["status", "readyReplicas"])),
            json!(age(o, now)),
            json!(names),
            json!(images),
            json!(format_label_selector(get(o, &["spec", "selector"]))),
        ]
        .into()
    },
};

/// Replication controllers (core/v1; the selector is a plain map).
pub(crate) const REPLICATION_CONTROLLER: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            "Replicas is the number of desired replicas.",
        ),
        col(
            "Current",
            "integer",
            "Replicas is the most recently observed number of replicas.",
        ),
        col(
            "Ready",
            "integer",
            "The number of ready replicas for this replication controller.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide("Selector", "string", SELECTOR_DESC),
    ],
    row: |o, now| {
        let (names, images) = template_containers(o, &["spec", "template"]);
        vec![
            name(o),
            json!(replicas(o)),
            json!(int(o, &["status", "replicas"])),
            json!(int(o, &["status", "readyReplicas"])),
            json!(age(o, now)),
            json!(names),
            json!(images),
            json!(format_labels(get(o, &["spec", "selector"]))),
        ]
        .into()
    },
};

/// Stateful sets.
pub(crate) const STATEFUL_SET: Printer = Printer {
    columns: &[
        NAME,
        col("Ready", "string", "Number of the pod with ready state"),
        AGE,
        CONTAINERS,
        IMAGES,
    ],
    row: |o, now| {
        let (names, images) = template_containers(o, &["spec", "template"]);
        vec![
            name(o),
            json!(format!(
                "{}/{}",
                int(o, &["status", "readyReplicas"]),
                replicas(o)
            )),
            json!(age(o, now)),
            json!(names),
            json!(images),
        ]
        .into()
    },
};

/// Daemon sets.
pub(crate) const DAEMON_SET: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Desired",
            "integer",
            "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
        ),
        col(
            "Current",
            "integer",
            "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
        ),
        col(
            "Ready",
            "integer",
            "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
        ),
        col(
            "Up-to-date",
            "integer",
            "The total number of nodes that are running updated daemon pod",
        ),
        col(
            "Available",
            "integer",
            "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
        ),
        col(
            "Node Selector",
            "string",
            "NodeSelector is a selector which must be true for the pod to fit on a node.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "A label query over pods that are managed by the daemon set.",
        ),
    ],
    row: |o, now| {
        let (names, images) = template_containers(o, &["spec", "template"]);
        let st = |k: &str| json!(int(o, &["status", k]));
        vec![
            name(o),
            st("desiredNumberScheduled"),
            st("currentNumberScheduled"),
            st("numberReady"),
            st("updatedNumberScheduled"),
            st("numberAvailable"),
            json!(format_labels(get(
                o,
                &["spec", "template", "spec", "nodeSelector"]
            ))),
            json!(age(o, now)),
            json!(names),
            json!(images),
            json!(format_label_selector(get(o, &["spec", "selector"]))),
        ]
        .into()
    },
};

/// Controller revisions.
pub(crate) const CONTROLLER_REVISION: Printer = Printer {
    columns: &[
        NAME,
        col("Controller", "string", "Controller of the object"),
        col(
            "Revision",
            "string",
            "Revision indicates the revision of the state represented by Data.",
        ),
        AGE,
    ],
    row: |o, now| {
        let controller = arr(o, &["metadata", "ownerReferences"])
            .iter()
            .find(|r| get(r, &["controller"]).and_then(Value::as_bool) == Some(true))
            .map_or_else(
                || "<none>".to_owned(),
                |r| {
                    let api_version = s(r, &["apiVersion"]);
                    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                    let kind = s(r, &["kind"]);
                    let gk = if group.is_empty() {
                        kind.to_owned()
                    } else {
                        format!("{kind}.{group}")
                    };
                    if gk.is_empty() {
                        s(r, &["name"]).to_owned()
                    } else {
                        format!("{}/{}", gk.to_lowercase(), s(r, &["name"]))
                    }
                },
            );
        vec![
            name(o),
            json!(controller),
            json!(int(o, &["revision"])),
            json!(age(o, now)),
        ]
        .into()
    },
};

fn has_condition(o: &Value, ty: &str) -> bool {
    arr(o, &["status", "conditions"])
        .iter()
        .find(|c| s(c, &["type"]) == ty)
        .is_some_and(|c| s(c, &["status"]) == "True")
}

/// Jobs.
pub(crate) const JOB: Printer = Printer {
    columns: &[
        NAME,
        col("Status", "string", "Status of the job."),
        col(
            "Completions",
            "string",
            "The number of pods which reached phase Succeeded.",
        ),
        col("Duration", "string", "Time required to complete the job."),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "A label query over pods that should match the pod count.",
        ),
    ],
    row: job_row,
};

fn job_row(o: &Value, now: DateTime<Utc>) -> Row {
    let succeeded = int(o, &["status", "succeeded"]);
    let completions = match get(o, &["spec", "completions"]).and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(o, &["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let time = |k: &str| {
        get(o, &["status", k])
            .and_then(Value::as_str)
            .and_then(parse_time)
    };
    let duration = match (time("startTime"), time("completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let deleting = get(o, &["metadata", "deletionTimestamp"]).is_some_and(|d| !d.is_null());
    let status = if has_condition(o, "Complete") {
        "Complete"
    } else if has_condition(o, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if has_condition(o, "Suspended") {
        "Suspended"
    } else if has_condition(o, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = template_containers(o, &["spec", "template"]);
    vec![
        name(o),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(o, now)),
        json!(names),
        json!(images),
        json!(format_label_selector(get(o, &["spec", "selector"]))),
    ]
    .into()
}

/// Cron jobs.
pub(crate) const CRON_JOB: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Schedule",
            "string",
            "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
        ),
        col(
            "Timezone",
            "string",
            "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
        ),
        col(
            "Suspend",
            "boolean",
            "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
        ),
        col(
            "Active",
            "integer",
            "A list of pointers to currently running jobs.",
        ),
        col(
            "Last Schedule",
            "string",
            "Information when was the last time the job was successfully scheduled.",
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        wide(
            "Selector",
            "string",
            "A label query over pods that should match the pod count.",
        ),
    ],
    row: |o, now| {
        let last = match get(o, &["status", "lastScheduleTime"]) {
            Some(t) if !t.is_null() => since(Some(t), now),
            _ => "<none>".to_owned(),
        };
        // printBoolPtr: the cell is the string "True"/"False"/"<unset>".
        let suspend = match get(o, &["spec", "suspend"]).and_then(Value::as_bool) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        };
        let (names, images) = template_containers(o, &["spec", "jobTemplate", "spec", "template"]);
        vec![
            name(o),
            json!(s(o, &["spec", "schedule"])),
            json!(match s(o, &["spec", "timeZone"]) {
                "" => "<none>",
                tz => tz,
            }),
            json!(suspend),
            json!(arr(o, &["status", "active"]).len()),
            json!(last),
            json!(age(o, now)),
            json!(names),
            json!(images),
            json!(format_label_selector(get(
                o,
                &["spec", "jobTemplate", "spec", "selector"]
            ))),
        ]
        .into()
    },
};

/// Pod disruption budgets.
pub(crate) const PDB: Printer = Printer {
    columns: &[
        NAME,
        col(
            "Min Available",
            "string",
            "The minimum number of pods that must be available.",
        ),
        col(
            "Max Unavailable",
            "string",
            "The maximum number of pods that may be unavailable.",
        ),
        col(
            "Allowed Disruptions",
            "integer",
            "Calculated number of pods that may be disrupted at this time.",
        ),
        AGE,
    ],
    row: |o, now| {
        let or_na = |k: &str| match get(o, &["spec", k]) {
            Some(v) if !v.is_null() => int_or_string(v),
            _ => "N/A".to_owned(),
        };
        vec![
            name(o),
            json!(or_na("minAvailable")),
            json!(or_na("maxUnavailable")),
            json!(int(o, &["status", "disruptionsAllowed"])),
            json!(age(o, now)),
        ]
        .into()
    },
};
