//! Pod volumes on the node: `<runtime root>/pods/<uid>/volumes/<name>` (see
//! [`runtime_root`](super::runtime_root)).
//!
//! Content volumes (configMap, secret, projected, downwardAPI) are written with
//! Kubernetes' atomic-writer layout: the files live in a timestamped `..<ts>` directory,
//! `..data` is a symlink to it, and every visible name is a symlink through `..data`. An
//! update writes a new directory and swaps `..data` with one `rename(2)`, so a container
//! that has the volume mounted sees the new content at once, never a half-written set, and
//! is not restarted ([`refresh`] runs on every cache change). emptyDir is a directory;
//! hostPath is checked/created per its `type`.
//!
//! ServiceAccount tokens: a projected `serviceAccountToken` is written once the cloud issued
//! a token bound to the pod ([`crate::satoken`] requests and renews them; a renewal swaps the
//! file like any other change); until then the file is left out and the rest of the volume
//! is still written.
//! Secrets land on the data dir's disk (Kubernetes uses a tmpfs).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use super::env::{ConfigError, PodFacts, Sources, field};
use super::spec::{ObjectVolume, Pod, Volume};

/// Relative path -> (content, mode).
pub type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Name of the symlink to the current content directory.
const DATA: &str = "..data";
/// Default file mode of content volumes.
const DEFAULT_MODE: u32 = 0o644;

/// `<root>/<uid>`: everything of one pod.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join(uid)
}

/// The host directory of a pod's volume.
pub fn volume_dir(root: &Path, uid: &str, name: &str) -> PathBuf {
    pod_dir(root, uid).join("volumes").join(name)
}

fn object_files(
    kind: &str,
    src: &ObjectVolume,
    data: Option<super::env::Data>,
    default_mode: u32,
    strict: bool,
    files: &mut Files,
) -> Result<(), ConfigError> {
    let name = src.object_name();
    let Some(data) = data else {
        if src.optional == Some(true) || !strict {
            return Ok(());
        }
        return Err(ConfigError(format!("{kind} {name:?} not found")));
    };
    let mode = src.default_mode.unwrap_or(default_mode);
    if src.items.is_empty() {
        for (k, v) in data {
            files.insert(k, (v, mode));
        }
        return Ok(());
    }
    for item in &src.items {
        match data.get(&item.key) {
            Some(v) => {
                files.insert(item.path.clone(), (v.clone(), item.mode.unwrap_or(mode)));
            }
            None if src.optional == Some(true) => {}
            None => {
                return Err(ConfigError(format!(
                    "{kind} {name:?} has no key {:?}",
                    item.key
                )));
            }
        }
    }
    Ok(())
}

/// The files of a content volume, or `None` for other kinds. Pure.
pub fn content(
    pod: &Pod,
    volume: &Volume,
    sources: &dyn Sources,
    facts: &PodFacts,
) -> Result<Option<Files>, ConfigError> {
    let ns = &pod.metadata.namespace;
    let mut files = Files::new();
    if let Some(cm) = &volume.config_map {
        let data = sources.config_map(ns, cm.object_name());
        object_files("configmap", cm, data, DEFAULT_MODE, true, &mut files)?;
    } else if let Some(s) = &volume.secret {
        let data = sources.secret(ns, s.object_name());
        object_files("secret", s, data, DEFAULT_MODE, true, &mut files)?;
    } else if let Some(d) = &volume.downward_api {
        for item in &d.items {
            if let Some(f) = &item.field_ref {
                let v = field(pod, facts, &f.field_path)?;
                files.insert(item.path.clone(), (v.into_bytes(), DEFAULT_MODE));
            }
        }
    } else if let Some(p) = &volume.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        for source in &p.sources {
            // Projected sources that are not cached are left out (the default
            // kube-api-access volume names kube-root-ca.crt, which a cloud may not send).
            if let Some(cm) = &source.config_map {
                let data = sources.config_map(ns, cm.object_name());
                object_files("configmap", cm, data, mode, false, &mut files)?;
            }
            if let Some(s) = &source.secret {
                let data = sources.secret(ns, s.object_name());
                object_files("secret", s, data, mode, false, &mut files)?;
            }
            if let Some(d) = &source.downward_api {
                for item in &d.items {
                    if let Some(f) = &item.field_ref {
                        let v = field(pod, facts, &f.field_path)?;
                        files.insert(item.path.clone(), (v.into_bytes(), mode));
                    }
                }
            }
            if let Some(t) = &source.service_account_token
                && let Some(token) = sources.service_account_token(pod, t)
            {
                files.insert(t.path.clone(), (token.into_bytes(), 0o600));
            }
        }
    } else {
        return Ok(None);
    }
    for path in files.keys() {
        if path.is_empty()
            || path.starts_with('/')
            || path.split('/').any(|c| c == ".." || c.starts_with(".."))
        {
            return Err(ConfigError(format!(
                "volume {:?}: invalid file path {path:?}",
                volume.name
            )));
        }
    }
    Ok(Some(files))
}

fn read_current(dir: &Path) -> Option<Files> {
    let data = dir.join(DATA);
    let target = std::fs::canonicalize(&data).ok()?;
    let mut out = Files::new();
    fn walk(base: &Path, dir: &Path, out: &mut Files) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(base, &path, out)?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                let rel = path
                    .strip_prefix(base)
                    .map_err(io::Error::other)?
                    .to_string_lossy()
                    .into_owned();
                let mode = entry.metadata()?.permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(&path)?, mode));
            }
        }
        Ok(())
    }
    walk(&target, &target, &mut out).ok()?;
    Some(out)
}

/// Writes `files` into `dir` with the atomic `..data` swap; `Ok(false)` when the content
/// was already current.
pub fn write_atomic(dir: &Path, files: &Files) -> io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    if read_current(dir).as_ref() == Some(files) {
        return Ok(false);
    }
    let stamp = chrono::Utc::now()
        .format("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let new_dir = dir.join(&stamp);
    std::fs::create_dir_all(&new_dir)?;
    for (rel, (bytes, mode)) in files {
        let path = new_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))?;
    }
    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;
    // Visible names: one symlink per top-level entry, through ..data.
    let top: std::collections::BTreeSet<String> = files
        .keys()
        .filter_map(|k| k.split('/').next().map(str::to_owned))
        .collect();
    for name in &top {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    if let Some(old) = old
        && old != Path::new(&stamp)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

/// Prepares every volume of `pod` (writes content, creates emptyDirs, checks hostPaths)
/// and returns volume name -> host path.
pub fn prepare(
    root: &Path,
    pod: &Pod,
    sources: &dyn Sources,
    facts: &PodFacts,
) -> Result<BTreeMap<String, PathBuf>, ConfigError> {
    let uid = &pod.metadata.uid;
    let mut out = BTreeMap::new();
    let io = |v: &Volume, e: io::Error| ConfigError(format!("volume {:?}: {e}", v.name));
    for v in &pod.spec.volumes {
        if let Some(hp) = &v.host_path {
            let path = PathBuf::from(&hp.path);
            match hp.kind.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(|e| io(v, e))?,
                "FileOrCreate" => {
                    if let Some(p) = path.parent() {
                        std::fs::create_dir_all(p).map_err(|e| io(v, e))?;
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| io(v, e))?;
                }
                "Directory" if !path.is_dir() => {
                    return Err(ConfigError(format!(
                        "hostPath {:?} is not a directory",
                        hp.path
                    )));
                }
                "File" if !path.is_file() => {
                    return Err(ConfigError(format!("hostPath {:?} is not a file", hp.path)));
                }
                _ => {}
            }
            out.insert(v.name.clone(), path);
            continue;
        }
        let dir = volume_dir(root, uid, &v.name);
        match content(pod, v, sources, facts)? {
            Some(files) => {
                write_atomic(&dir, &files).map_err(|e| io(v, e))?;
            }
            None => std::fs::create_dir_all(&dir).map_err(|e| io(v, e))?,
        }
        out.insert(v.name.clone(), dir);
    }
    Ok(out)
}

/// Rewrites the content volumes of a running pod whose sources changed; returns how many
/// volumes changed. Errors (a source deleted) keep the last content, like the kubelet.
pub fn refresh(root: &Path, pod: &Pod, sources: &dyn Sources, facts: &PodFacts) -> usize {
    let mut changed = 0;
    for v in &pod.spec.volumes {
        let Ok(Some(files)) = content(pod, v, sources, facts) else {
            continue;
        };
        let dir = volume_dir(root, &pod.metadata.uid, &v.name);
        if !dir.exists() {
            continue;
        }
        match write_atomic(&dir, &files) {
            Ok(true) => changed += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(volume = %v.name, error = %e, "refreshing a volume failed"),
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::env::Data;
    use serde_json::json;

    struct One(Data);
    impl Sources for One {
        fn config_map(&self, _: &str, name: &str) -> Option<Data> {
            (name == "cm").then(|| self.0.clone())
        }
        fn secret(&self, _: &str, _: &str) -> Option<Data> {
            None
        }
    }

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d", "uid": "u"},
            "spec": {"containers": [], "volumes": [
                {"name": "cfg", "configMap": {"name": "cm"}},
                {"name": "sec", "secret": {"secretName": "nope", "optional": true}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "proj", "projected": {"sources": [
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}
                ]}}
            ]}
        }))
        .unwrap()
    }

    #[test]
    fn atomic_swap_updates_in_place_and_drops_stale_names() {
        let tmp = tempfile::tempdir().unwrap();
        let p = pod();
        let v1 = One(Data::from([
            ("a".into(), b"1".to_vec()),
            ("b".into(), b"2".to_vec()),
        ]));
        let paths = prepare(tmp.path(), &p, &v1, &PodFacts::default()).unwrap();
        let cfg = &paths["cfg"];
        assert_eq!(std::fs::read(cfg.join("a")).unwrap(), b"1");
        assert!(
            std::fs::symlink_metadata(cfg.join("a"))
                .unwrap()
                .is_symlink()
        );
        assert!(paths["scratch"].is_dir());
        assert_eq!(std::fs::read(paths["proj"].join("ns")).unwrap(), b"d");
        assert!(!paths["proj"].join("token").exists());
        // Unchanged content: nothing rewritten.
        assert_eq!(refresh(tmp.path(), &p, &v1, &PodFacts::default()), 0);
        let before = std::fs::read_link(cfg.join(DATA)).unwrap();
        let v2 = One(Data::from([("a".into(), b"changed".to_vec())]));
        assert_eq!(refresh(tmp.path(), &p, &v2, &PodFacts::default()), 1);
        assert_eq!(std::fs::read(cfg.join("a")).unwrap(), b"changed");
        assert!(!cfg.join("b").exists());
        assert!(!cfg.join(before).exists(), "the old content dir is removed");
    }

    #[test]
    fn missing_required_source_and_bad_paths_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let p = pod();
        let empty = One(Data::new());
        struct NoCm;
        impl Sources for NoCm {
            fn config_map(&self, _: &str, _: &str) -> Option<Data> {
                None
            }
            fn secret(&self, _: &str, _: &str) -> Option<Data> {
                None
            }
        }
        let err = prepare(tmp.path(), &p, &NoCm, &PodFacts::default()).unwrap_err();
        assert_eq!(err.0, "configmap \"cm\" not found");
        let mut bad = p.clone();
        bad.spec.volumes[0].config_map.as_mut().unwrap().items =
            vec![serde_json::from_value(json!({"key": "a", "path": "../x"})).unwrap()];
        let data = One(Data::from([("a".into(), b"1".to_vec())]));
        assert!(prepare(tmp.path(), &bad, &data, &PodFacts::default()).is_err());
        assert!(prepare(tmp.path(), &p, &empty, &PodFacts::default()).is_ok());
    }
}
