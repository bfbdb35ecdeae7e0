//! The ServiceAccount admission plugin's pod mutation: default the ServiceAccount and mount
//! its token as the `kube-api-access-<random>` projected volume, as Kubernetes does (no IO:
//! the caller looks the ServiceAccount up).

use rand::Rng;
use serde_json::{Map, Value, json};

use super::{DEFAULT_SA, ROOT_CA_CONFIGMAP, TOKEN_MOUNT_PATH};

/// Prefix of the token volume's name.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// Lifetime the kubelet asks for (Kubernetes' `3607`: one hour and a bit).
pub const PROJECTED_TOKEN_SECONDS: i64 = 3607;
/// Annotation of static (mirror) pods, which the plugin leaves alone.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// Kubernetes' `utilrand.String` alphabet (no vowels, no confusable digits).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod's ServiceAccount name after defaulting (`serviceAccountName`, the deprecated
/// `serviceAccount`, else `default`); writes both fields. `None` for mirror pods.
pub fn default_service_account(pod: &mut Value) -> Option<String> {
    if pod
        .pointer(&format!(
            "/metadata/annotations/{}",
            MIRROR_ANNOTATION.replace('/', "~1")
        ))
        .is_some()
    {
        return None;
    }
    let spec = object(pod, "spec");
    let name = ["serviceAccountName", "serviceAccount"]
        .iter()
        .find_map(|k| {
            spec.get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or(DEFAULT_SA)
        .to_string();
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    Some(name)
}

/// Whether the token is mounted: the pod's `automountServiceAccountToken`, else the
/// ServiceAccount's, else yes.
pub fn automount(pod: &Value, sa: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// Mount the token volume read-only at [`TOKEN_MOUNT_PATH`] in every init and regular
/// container that has nothing mounted there, adding the volume when one needs it (an
/// existing `kube-api-access-*` volume is reused).
pub fn mount_token(pod: &mut Value) {
    let spec = object(pod, "spec");
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with(VOLUME_PREFIX))
        .map(str::to_string);
    let taken: Vec<String> = spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    let name = existing.clone().unwrap_or_else(|| fresh_name(&taken));
    let mount = json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut().filter_map(Value::as_object_mut) {
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(TOKEN_MOUNT_PATH));
            if !taken {
                mounts.push(mount.clone());
                needed = true;
            }
        }
    }
    if needed && existing.is_none() {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(v) = volumes.as_array_mut() {
            v.push(volume(&name));
        }
    }
}

/// The projected volume: a bound token, the cluster CA and the namespace.
pub fn volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": PROJECTED_TOKEN_SECONDS, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        },
    })
}

fn fresh_name(taken: &[String]) -> String {
    let mut rng = rand::rng();
    loop {
        let suffix: String = (0..5)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        let name = format!("{VOLUME_PREFIX}{suffix}");
        if !taken.contains(&name) {
            return name;
        }
    }
}

fn object<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    match v.get_mut(key) {
        Some(Value::Object(m)) => m,
        // Made an object just above.
        _ => unreachable_object(),
    }
}

#[allow(clippy::panic)]
fn unreachable_object() -> ! {
    panic!("value was just made an object")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec})
    }

    #[test]
    fn defaults_the_service_account_and_mounts_everywhere() {
        let mut p = pod(json!({
            "initContainers": [{"name": "i", "image": "x"}],
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        }));
        assert_eq!(default_service_account(&mut p).as_deref(), Some("default"));
        assert_eq!(p["spec"]["serviceAccount"], "default");
        mount_token(&mut p);
        let vols = p["spec"]["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 2);
        let name = vols[1]["name"].as_str().unwrap();
        assert!(name.starts_with(VOLUME_PREFIX) && name.len() == VOLUME_PREFIX.len() + 5);
        assert_eq!(vols[1], volume(name));
        assert_eq!(vols[1]["projected"]["defaultMode"], 420);
        for path in [
            "/spec/initContainers/0",
            "/spec/containers/0",
            "/spec/containers/1",
        ] {
            let mounts = p.pointer(path).unwrap()["volumeMounts"].as_array().unwrap();
            let last = mounts.last().unwrap();
            assert_eq!(
                last,
                &json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH})
            );
        }
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"][0]["name"],
            "data"
        );
    }

    #[test]
    fn existing_mounts_and_volumes_are_respected() {
        let mut p = pod(json!({
            "serviceAccount": "builder",
            "containers": [{"name": "a", "image": "x",
                "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}],
            "volumes": [{"name": "own", "secret": {"secretName": "s"}}],
        }));
        assert_eq!(default_service_account(&mut p).as_deref(), Some("builder"));
        assert_eq!(p["spec"]["serviceAccountName"], "builder");
        mount_token(&mut p);
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        // A kube-api-access volume already there is reused, not duplicated.
        let mut p = pod(json!({
            "containers": [{"name": "a", "image": "x"}],
            "volumes": [volume("kube-api-access-abcde")],
        }));
        mount_token(&mut p);
        assert_eq!(p["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-abcde"
        );
    }

    #[test]
    fn automount_is_decided_by_the_pod_then_the_service_account() {
        let sa_off = json!({"automountServiceAccountToken": false});
        let sa = json!({});
        assert!(automount(&pod(json!({})), &sa));
        assert!(!automount(&pod(json!({})), &sa_off));
        let on = pod(json!({"automountServiceAccountToken": true}));
        assert!(automount(&on, &sa_off));
        let off = pod(json!({"automountServiceAccountToken": false}));
        assert!(!automount(&off, &sa));
    }

    #[test]
    fn mirror_pods_are_left_alone() {
        let mut p = json!({"metadata": {"annotations": {MIRROR_ANNOTATION: "x"}}, "spec": {}});
        assert_eq!(default_service_account(&mut p), None);
        assert!(p["spec"].get("serviceAccountName").is_none());
    }
}
