//! `edgecore reset`: remove a node's local state.

use std::path::{Path, PathBuf};

use crate::config::{Config, Layout};

/// `edgecore reset` with the service: first stops and removes the systemd unit
/// `join --install-service` wrote into `unit_dir` for this root (so the store is no longer
/// locked), then [`reset`]. Returns the paths removed.
pub fn reset_all(root: &Path, unit_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let layout = Layout::new(root);
    let unit = crate::service::remove_for_reset(&layout.config, unit_dir, &mut std::io::stdout())
        .map_err(|e| e.to_string())?;
    let mut removed: Vec<PathBuf> = unit.into_iter().collect();
    removed.extend(reset(root)?);
    Ok(removed)
}

/// `edgecore reset`: removes the node's config, certificates and data under
/// `root`. Refuses while edgecore runs (the store is locked). Returns the
/// paths removed.
pub fn reset(root: &Path) -> Result<Vec<PathBuf>, String> {
    let layout = Layout::new(root);
    // The data dir may be configured elsewhere; honour the config if present.
    let data = Config::load(&layout.config)
        .map(|c| c.data_dir)
        .unwrap_or_else(|_| layout.data.clone());
    if data.exists() {
        // Opened (and closed again when dropped) or unreadable: either way removable.
        if let Err(crate::store::StoreError::Locked { .. }) =
            crate::store::Store::open(&data, &crate::store::StoreConfig::default())
        {
            return Err(format!(
                "edgecore is running (store {} is locked): stop it first",
                data.display()
            ));
        }
    }
    let mut removed = Vec::new();
    // Pod volumes and container logs live next to the store (see `runtime::runtime_root`).
    let mut targets = vec![
        layout.config.clone(),
        layout.pki.clone(),
        data.clone(),
        crate::runtime::runtime_root(&data),
    ];
    let mut lock = data.as_os_str().to_owned();
    lock.push(".lock");
    targets.push(PathBuf::from(lock));
    if let (Some(parent), Some(name)) = (data.parent(), data.file_name())
        && let Ok(entries) = std::fs::read_dir(parent)
    {
        let prefix = format!("{}.corrupt-", name.to_string_lossy());
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                targets.push(e.path());
            }
        }
    }
    for t in targets {
        let res = if t.is_dir() {
            std::fs::remove_dir_all(&t)
        } else if t.exists() {
            std::fs::remove_file(&t)
        } else {
            continue;
        };
        res.map_err(|e| format!("cannot remove {}: {e}", t.display()))?;
        removed.push(t);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_removes_config_pki_store_and_pod_runtime_state() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(root.path());
        let runtime = crate::runtime::runtime_root(&layout.data);
        std::fs::create_dir_all(&layout.pki).unwrap();
        std::fs::write(&layout.config, "node_name = \"n\"\n").unwrap();
        std::fs::create_dir_all(runtime.join("pods/uid-1/volumes")).unwrap();
        let corrupt = layout.data.with_file_name("kedge.corrupt-1");
        std::fs::create_dir_all(&corrupt).unwrap();
        let removed = reset(root.path()).unwrap();
        for p in [&layout.config, &layout.pki, &runtime, &corrupt] {
            assert!(!p.exists(), "{} survived reset", p.display());
            assert!(removed.contains(p), "{} not reported", p.display());
        }
        // A second reset has nothing left to remove.
        assert!(reset(root.path()).unwrap().is_empty());
    }
}
