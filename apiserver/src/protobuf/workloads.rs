//! Field tables of the workload kinds kubectl's generators send as protobuf: `kubectl run`
//! (Pod), `kubectl create deployment|job|cronjob|service …` (Deployment, Job, CronJob,
//! Service). Field numbers are those of `k8s.io/api`'s `generated.proto`.
//!
//! The tables cover what those commands and their flags set, and the parts of a pod
//! template people commonly put in `--overrides` (env and envFrom, resources, ports,
//! volumes of the usual sources, probes, security context, tolerations, selectors); any
//! other field is skipped, as unknown JSON fields are dropped.

use super::{F, OBJECT_META, Ty, f, rep};

const META: F = f(1, "metadata", Ty::Msg(OBJECT_META));

const NAME_REF: F = f(1, "", Ty::Inline(&[f(1, "name", Ty::Str)]));

const LABEL_SELECTOR: &[F] = &[
    f(1, "matchLabels", Ty::MapStr),
    rep(
        2,
        "matchExpressions",
        Ty::Msg(&[
            f(1, "key", Ty::Str),
            f(2, "operator", Ty::Str),
            rep(3, "values", Ty::Str),
        ]),
    ),
];

const KEY_TO_PATH: &[F] = &[
    f(1, "key", Ty::Str),
    f(2, "path", Ty::Str),
    f(3, "mode", Ty::Int),
];

const VOLUME_SOURCE: &[F] = &[
    f(
        1,
        "hostPath",
        Ty::Opt(&[f(1, "path", Ty::Str), f(2, "type", Ty::Str)]),
    ),
    f(
        2,
        "emptyDir",
        Ty::Opt(&[f(1, "medium", Ty::Str), f(2, "sizeLimit", Ty::Quantity)]),
    ),
    f(
        6,
        "secret",
        Ty::Opt(&[
            f(1, "secretName", Ty::Str),
            rep(2, "items", Ty::Msg(KEY_TO_PATH)),
            f(3, "defaultMode", Ty::Int),
            f(4, "optional", Ty::Bool),
        ]),
    ),
    f(
        10,
        "persistentVolumeClaim",
        Ty::Opt(&[f(1, "claimName", Ty::Str), f(2, "readOnly", Ty::Flag)]),
    ),
    f(
        19,
        "configMap",
        Ty::Opt(&[
            NAME_REF,
            rep(2, "items", Ty::Msg(KEY_TO_PATH)),
            f(3, "defaultMode", Ty::Int),
            f(4, "optional", Ty::Bool),
        ]),
    ),
];

const VOLUME: &[F] = &[f(1, "name", Ty::Str), f(2, "", Ty::Inline(VOLUME_SOURCE))];

const KEY_SELECTOR: &[F] = &[NAME_REF, f(2, "key", Ty::Str), f(3, "optional", Ty::Bool)];

const ENV_VAR: &[F] = &[
    f(1, "name", Ty::Str),
    f(2, "value", Ty::Str),
    f(
        3,
        "valueFrom",
        Ty::Opt(&[
            f(
                1,
                "fieldRef",
                Ty::Opt(&[f(1, "apiVersion", Ty::Str), f(2, "fieldPath", Ty::Str)]),
            ),
            f(
                2,
                "resourceFieldRef",
                Ty::Opt(&[
                    f(1, "containerName", Ty::Str),
                    f(2, "resource", Ty::Str),
                    f(3, "divisor", Ty::Quantity),
                ]),
            ),
            f(3, "configMapKeyRef", Ty::Opt(KEY_SELECTOR)),
            f(4, "secretKeyRef", Ty::Opt(KEY_SELECTOR)),
        ]),
    ),
];

const ENV_SOURCE: &[F] = &[NAME_REF, f(2, "optional", Ty::Bool)];

const ENV_FROM: &[F] = &[
    f(1, "prefix", Ty::Str),
    f(2, "configMapRef", Ty::Opt(ENV_SOURCE)),
    f(3, "secretRef", Ty::Opt(ENV_SOURCE)),
];

const CONTAINER_PORT: &[F] = &[
    f(1, "name", Ty::Str),
    f(2, "hostPort", Ty::Num),
    f(3, "containerPort", Ty::Num),
    f(4, "protocol", Ty::Str),
    f(5, "hostIP", Ty::Str),
];

const RESOURCES: &[F] = &[
    f(1, "limits", Ty::MapQuantity),
    f(2, "requests", Ty::MapQuantity),
];

const VOLUME_MOUNT: &[F] = &[
    f(1, "name", Ty::Str),
    f(2, "readOnly", Ty::Flag),
    f(3, "mountPath", Ty::Str),
    f(4, "subPath", Ty::Str),
    f(5, "mountPropagation", Ty::Str),
    f(6, "subPathExpr", Ty::Str),
];

const PROBE_HANDLER: &[F] = &[
    f(1, "exec", Ty::Opt(&[rep(1, "command", Ty::Str)])),
    f(
        2,
        "httpGet",
        Ty::Opt(&[
            f(1, "path", Ty::Str),
            f(2, "port", Ty::IntOrStr),
            f(3, "host", Ty::Str),
            f(4, "scheme", Ty::Str),
        ]),
    ),
    f(
        3,
        "tcpSocket",
        Ty::Opt(&[f(1, "port", Ty::IntOrStr), f(2, "host", Ty::Str)]),
    ),
];

const PROBE: &[F] = &[
    f(1, "", Ty::Inline(PROBE_HANDLER)),
    f(2, "initialDelaySeconds", Ty::Num),
    f(3, "timeoutSeconds", Ty::Num),
    f(4, "periodSeconds", Ty::Num),
    f(5, "successThreshold", Ty::Num),
    f(6, "failureThreshold", Ty::Num),
    f(7, "terminationGracePeriodSeconds", Ty::Int),
];

const SECURITY_CONTEXT: &[F] = &[
    f(
        1,
        "capabilities",
        Ty::Opt(&[rep(1, "add", Ty::Str), rep(2, "drop", Ty::Str)]),
    ),
    f(2, "privileged", Ty::Bool),
    f(4, "runAsUser", Ty::Int),
    f(8, "runAsGroup", Ty::Int),
    f(5, "runAsNonRoot", Ty::Bool),
    f(6, "readOnlyRootFilesystem", Ty::Bool),
    f(7, "allowPrivilegeEscalation", Ty::Bool),
];

const CONTAINER: &[F] = &[
    f(1, "name", Ty::Str),
    f(2, "image", Ty::Str),
    rep(3, "command", Ty::Str),
    rep(4, "args", Ty::Str),
    f(5, "workingDir", Ty::Str),
    rep(6, "ports", Ty::Msg(CONTAINER_PORT)),
    rep(19, "envFrom", Ty::Msg(ENV_FROM)),
    rep(7, "env", Ty::Msg(ENV_VAR)),
    f(8, "resources", Ty::Msg(RESOURCES)),
    f(24, "restartPolicy", Ty::Str),
    rep(9, "volumeMounts", Ty::Msg(VOLUME_MOUNT)),
    f(10, "livenessProbe", Ty::Opt(PROBE)),
    f(11, "readinessProbe", Ty::Opt(PROBE)),
    f(22, "startupProbe", Ty::Opt(PROBE)),
    f(13, "terminationMessagePath", Ty::Str),
    f(20, "terminationMessagePolicy", Ty::Str),
    f(14, "imagePullPolicy", Ty::Str),
    f(15, "securityContext", Ty::Opt(SECURITY_CONTEXT)),
    f(16, "stdin", Ty::Flag),
    f(17, "stdinOnce", Ty::Flag),
    f(18, "tty", Ty::Flag),
];

const TOLERATION: &[F] = &[
    f(1, "key", Ty::Str),
    f(2, "operator", Ty::Str),
    f(3, "value", Ty::Str),
    f(4, "effect", Ty::Str),
    f(5, "tolerationSeconds", Ty::Int),
];

const POD_SPEC: &[F] = &[
    rep(1, "volumes", Ty::Msg(VOLUME)),
    rep(20, "initContainers", Ty::Msg(CONTAINER)),
    rep(2, "containers", Ty::Msg(CONTAINER)),
    f(3, "restartPolicy", Ty::Str),
    f(4, "terminationGracePeriodSeconds", Ty::Int),
    f(5, "activeDeadlineSeconds", Ty::Int),
    f(6, "dnsPolicy", Ty::Str),
    f(7, "nodeSelector", Ty::MapStr),
    f(8, "serviceAccountName", Ty::Str),
    f(9, "serviceAccount", Ty::Str),
    f(21, "automountServiceAccountToken", Ty::Bool),
    f(10, "nodeName", Ty::Str),
    f(11, "hostNetwork", Ty::Flag),
    f(12, "hostPID", Ty::Flag),
    f(13, "hostIPC", Ty::Flag),
    f(27, "shareProcessNamespace", Ty::Bool),
    rep(15, "imagePullSecrets", Ty::Msg(&[f(1, "name", Ty::Str)])),
    f(16, "hostname", Ty::Str),
    f(17, "subdomain", Ty::Str),
    f(19, "schedulerName", Ty::Str),
    rep(22, "tolerations", Ty::Msg(TOLERATION)),
    f(24, "priorityClassName", Ty::Str),
    f(25, "priority", Ty::Int),
    f(29, "runtimeClassName", Ty::Str),
    f(30, "enableServiceLinks", Ty::Bool),
];

const POD_TEMPLATE: &[F] = &[META, f(2, "spec", Ty::Msg(POD_SPEC))];

/// `v1 Pod` (`kubectl run`).
pub(super) const POD: &[F] = &[META, f(2, "spec", Ty::Msg(POD_SPEC))];

/// `apps/v1 Deployment` (`kubectl create deployment`).
pub(super) const DEPLOYMENT: &[F] = &[
    META,
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "replicas", Ty::Int),
            f(2, "selector", Ty::Opt(LABEL_SELECTOR)),
            f(3, "template", Ty::Msg(POD_TEMPLATE)),
            f(
                4,
                "strategy",
                Ty::Msg(&[
                    f(1, "type", Ty::Str),
                    f(
                        2,
                        "rollingUpdate",
                        Ty::Opt(&[
                            f(1, "maxUnavailable", Ty::IntOrStr),
                            f(2, "maxSurge", Ty::IntOrStr),
                        ]),
                    ),
                ]),
            ),
            f(5, "minReadySeconds", Ty::Num),
            f(6, "revisionHistoryLimit", Ty::Int),
            f(7, "paused", Ty::Flag),
            f(9, "progressDeadlineSeconds", Ty::Int),
        ]),
    ),
];

const JOB_SPEC: &[F] = &[
    f(1, "parallelism", Ty::Int),
    f(2, "completions", Ty::Int),
    f(3, "activeDeadlineSeconds", Ty::Int),
    f(4, "selector", Ty::Opt(LABEL_SELECTOR)),
    f(5, "manualSelector", Ty::Bool),
    f(6, "template", Ty::Msg(POD_TEMPLATE)),
    f(7, "backoffLimit", Ty::Int),
    f(8, "ttlSecondsAfterFinished", Ty::Int),
    f(9, "completionMode", Ty::Str),
    f(10, "suspend", Ty::Bool),
];

/// `batch/v1 Job` (`kubectl create job`, also `--from=cronjob/…`).
pub(super) const JOB: &[F] = &[META, f(2, "spec", Ty::Msg(JOB_SPEC))];

/// `batch/v1 CronJob` (`kubectl create cronjob`).
pub(super) const CRON_JOB: &[F] = &[
    META,
    f(
        2,
        "spec",
        Ty::Msg(&[
            f(1, "schedule", Ty::Str),
            f(8, "timeZone", Ty::Str),
            f(2, "startingDeadlineSeconds", Ty::Int),
            f(3, "concurrencyPolicy", Ty::Str),
            f(4, "suspend", Ty::Bool),
            f(
                5,
                "jobTemplate",
                Ty::Opt(&[META, f(2, "spec", Ty::Msg(JOB_SPEC))]),
            ),
            f(6, "successfulJobsHistoryLimit", Ty::Int),
            f(7, "failedJobsHistoryLimit", Ty::Int),
        ]),
    ),
];

/// `v1 Service` (`kubectl create service clusterip|nodeport|loadbalancer|externalname`,
/// `kubectl expose`).
pub(super) const SERVICE: &[F] = &[
    META,
    f(
        2,
        "spec",
        Ty::Msg(&[
            rep(
                1,
                "ports",
                Ty::Msg(&[
                    f(1, "name", Ty::Str),
                    f(2, "protocol", Ty::Str),
                    f(6, "appProtocol", Ty::Str),
                    f(3, "port", Ty::Num),
                    f(4, "targetPort", Ty::IntOrStr),
                    f(5, "nodePort", Ty::Num),
                ]),
            ),
            f(2, "selector", Ty::MapStr),
            f(3, "clusterIP", Ty::Str),
            rep(18, "clusterIPs", Ty::Str),
            f(4, "type", Ty::Str),
            rep(5, "externalIPs", Ty::Str),
            f(7, "sessionAffinity", Ty::Str),
            f(8, "loadBalancerIP", Ty::Str),
            f(10, "externalName", Ty::Str),
            f(11, "externalTrafficPolicy", Ty::Str),
            f(13, "publishNotReadyAddresses", Ty::Flag),
            rep(19, "ipFamilies", Ty::Str),
            f(17, "ipFamilyPolicy", Ty::Str),
            f(22, "internalTrafficPolicy", Ty::Str),
        ]),
    ),
];
