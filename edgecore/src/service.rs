//! The systemd unit of `edgecore join --install-service` and its removal by `edgecore reset`.
//!
//! The unit is `deploy/systemd/edgecore.service`, compiled in and adapted to this join by
//! [`render_unit`] (the binary that ran join, the config and data paths under `--root`).
//! [`install`] writes it only when its content changed (join is idempotent);
//! [`activation`] decides which `systemctl` calls follow, with no IO, and [`run_systemctl`]
//! makes them — only where systemd is the init system ([`systemd_running`], the check of
//! `sd_booted(3)`). Elsewhere (a container, a chroot, an OS without systemd) the unit is
//! still written and the caller prints what to run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::Layout;

/// The unit file as shipped in `deploy/systemd/`.
pub const UNIT_TEMPLATE: &str = include_str!("../../deploy/systemd/edgecore.service");
/// The unit's file name.
pub const UNIT_NAME: &str = "edgecore.service";
/// Default directory of local units.
pub const DEFAULT_UNIT_DIR: &str = "/etc/systemd/system";
/// First line of a unit written by join: reset removes only units carrying it.
pub const MARKER: &str = "# Written by `edgecore join --install-service`";

/// Why installing or removing the unit failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// Writing or removing the unit file failed.
    #[error("cannot {action} {path}: {source}")]
    File {
        /// `write` or `remove`.
        action: &'static str,
        /// The unit file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// `systemctl` failed or could not be run.
    #[error("`systemctl {args}` failed: {detail}")]
    Systemctl {
        /// Its arguments.
        args: String,
        /// Exit status and stderr, or why it did not start.
        detail: String,
    },
}

/// What [`install`] did to the unit file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// Written (new or changed).
    Written,
    /// Already there with the same content.
    Unchanged,
}

/// The unit for a node whose files live under `root`, run by the binary `exe`.
pub fn render_unit(exe: &Path, root: &Path, config: &Path, data_dir: &Path) -> String {
    let layout = Layout::new(root);
    let mut rw = vec![
        data_dir.display().to_string(),
        layout.etc.display().to_string(),
    ];
    rw.push("/run/containerd".to_owned());
    let mut out = format!(
        "{MARKER} for {}; a new join rewrites it, `edgecore reset` removes it.\n",
        config.display()
    );
    for line in UNIT_TEMPLATE.lines() {
        if line.starts_with("ExecStart=") {
            out.push_str(&format!(
                "ExecStart={} run --config {}\n",
                quote(&exe.display().to_string()),
                quote(&config.display().to_string())
            ));
        } else if line.starts_with("ReadWritePaths=") {
            let paths: Vec<String> = rw.iter().map(|p| quote(p)).collect();
            out.push_str(&format!("ReadWritePaths={}\n", paths.join(" ")));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// systemd's quoting of one command-line word or path (only when needed).
fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| !c.is_whitespace() && c != '"' && c != '\\')
    {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// Writes `unit` as `dir/edgecore.service` unless it is already there, unchanged.
pub fn install(dir: &Path, unit: &str) -> Result<Installed, ServiceError> {
    let path = dir.join(UNIT_NAME);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == unit) {
        return Ok(Installed::Unchanged);
    }
    crate::join::write_file(&path, unit.as_bytes(), 0o644).map_err(|e| match e {
        crate::join::JoinError::Write { path, source } => ServiceError::File {
            action: "write",
            path,
            source,
        },
        other => ServiceError::File {
            action: "write",
            path: path.clone(),
            source: std::io::Error::other(other.to_string()),
        },
    })?;
    Ok(Installed::Written)
}

/// Whether systemd is the running init system (`sd_booted(3)`: `/run/systemd/system`
/// exists).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The `systemctl` calls that make the installed unit run: reload the unit files when the
/// file changed, enable it at boot, and (re)start it — join just rewrote the config, and a
/// restart is what makes a changed config or unit take effect (pods keep running: their
/// shims belong to containerd, not to this unit).
pub fn activation(installed: Installed) -> Vec<Vec<&'static str>> {
    let mut calls = Vec::new();
    if installed == Installed::Written {
        calls.push(vec!["daemon-reload"]);
    }
    calls.push(vec!["enable", UNIT_NAME]);
    calls.push(vec!["restart", UNIT_NAME]);
    calls
}

/// The calls that stop and forget the unit before its file is removed (a reload follows
/// the removal: [`after_removal`]).
pub fn deactivation() -> Vec<Vec<&'static str>> {
    vec![vec!["disable", "--now", UNIT_NAME]]
}

/// The call after the unit file was removed.
pub fn after_removal() -> Vec<Vec<&'static str>> {
    vec![vec!["daemon-reload"]]
}

/// Runs `systemctl <args>` for each call, stopping at the first failure.
pub fn run_systemctl(calls: &[Vec<&str>]) -> Result<(), ServiceError> {
    for args in calls {
        let out =
            Command::new("systemctl")
                .args(args)
                .output()
                .map_err(|e| ServiceError::Systemctl {
                    args: args.join(" "),
                    detail: e.to_string(),
                })?;
        if !out.status.success() {
            return Err(ServiceError::Systemctl {
                args: args.join(" "),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
    }
    Ok(())
}

/// The unit at `dir/edgecore.service` if it was written by join for the node whose config
/// is `config` (a hand-written unit, or one for another root, is left alone).
pub fn installed_for(dir: &Path, config: &Path) -> Option<PathBuf> {
    let path = dir.join(UNIT_NAME);
    let text = std::fs::read_to_string(&path).ok()?;
    let first = text.lines().next()?;
    let ours = first.starts_with(MARKER)
        && first
            .strip_prefix(MARKER)
            .is_some_and(|rest| rest.starts_with(&format!(" for {};", config.display())));
    ours.then_some(path)
}

/// Removes the unit file at `path`.
pub fn remove(path: &Path) -> Result<(), ServiceError> {
    std::fs::remove_file(path).map_err(|source| ServiceError::File {
        action: "remove",
        path: path.to_owned(),
        source,
    })
}

/// `edgecore join --install-service`: writes the unit for the node joined under `root`
/// (config `config`) into `dir`, then starts it through systemd where systemd runs, or
/// says what to run where it does not. Progress lines go to `out`.
pub fn install_for_join(
    root: &Path,
    config: &Path,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<(), ServiceError> {
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/edgecore"));
    let data_dir = crate::config::Config::load(config)
        .map(|c| c.data_dir)
        .unwrap_or_else(|_| Layout::new(root).data);
    let unit = render_unit(&exe, root, config, &data_dir);
    let installed = install(dir, &unit)?;
    let path = dir.join(UNIT_NAME);
    let _ = match installed {
        Installed::Written => writeln!(out, "wrote {}", path.display()),
        Installed::Unchanged => writeln!(out, "{} is up to date", path.display()),
    };
    let calls = activation(installed);
    if !systemd_running() {
        let _ = writeln!(
            out,
            "systemd is not running on this machine (no /run/systemd/system): the unit was written but not started.\nOn a systemd host, run: {}\nHere, start edgecore yourself: {} run --config {}",
            commands(&calls),
            exe.display(),
            config.display()
        );
        return Ok(());
    }
    for call in &calls {
        let _ = writeln!(out, "systemctl {}", call.join(" "));
        run_systemctl(std::slice::from_ref(call))?;
    }
    let _ = writeln!(
        out,
        "edgecore is running as {UNIT_NAME}: `systemctl status edgecore`, `journalctl -u edgecore -f`"
    );
    Ok(())
}

/// `edgecore reset`: stops, disables and removes the unit join installed in `dir` for the
/// node whose config is `config`. Returns the removed file, if there was one.
pub fn remove_for_reset(
    config: &Path,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<Option<PathBuf>, ServiceError> {
    let Some(path) = installed_for(dir, config) else {
        return Ok(None);
    };
    let running = systemd_running();
    if running {
        for call in deactivation() {
            let _ = writeln!(out, "systemctl {}", call.join(" "));
            run_systemctl(&[call])?;
        }
    }
    remove(&path)?;
    if running {
        run_systemctl(&after_removal())?;
    }
    Ok(Some(path))
}

fn commands(calls: &[Vec<&str>]) -> String {
    calls
        .iter()
        .map(|c| format!("systemctl {}", c.join(" ")))
        .collect::<Vec<_>>()
        .join(" && ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_this_binary_with_this_config_and_keeps_the_hardening() {
        let root = Path::new("/srv/gw one");
        let layout = Layout::new(root);
        let unit = render_unit(
            Path::new("/opt/kedge/bin/edgecore"),
            root,
            &layout.config,
            &layout.data,
        );
        assert!(unit.starts_with(MARKER), "{unit}");
        assert!(unit.contains(
            "\nExecStart=/opt/kedge/bin/edgecore run --config \"/srv/gw one/etc/kedge/edgecore.toml\"\n"
        ), "{unit}");
        assert!(unit.contains(
            "\nReadWritePaths=\"/srv/gw one/var/lib/kedge\" \"/srv/gw one/etc/kedge\" /run/containerd\n"
        ), "{unit}");
        assert_eq!(unit.matches("ExecStart=").count(), 1);
        for kept in [
            "Restart=always",
            "After=network-online.target containerd.service",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "WantedBy=multi-user.target",
        ] {
            assert!(unit.contains(kept), "{kept} missing:\n{unit}");
        }
    }

    #[test]
    fn install_is_idempotent_and_reset_finds_only_its_own_unit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Path::new("/etc/kedge/edgecore.toml");
        let unit = render_unit(Path::new("/usr/bin/edgecore"), Path::new("/"), cfg, cfg);
        assert_eq!(install(dir.path(), &unit).unwrap(), Installed::Written);
        assert_eq!(install(dir.path(), &unit).unwrap(), Installed::Unchanged);
        assert!(installed_for(dir.path(), cfg).is_some());
        assert!(installed_for(dir.path(), Path::new("/other/edgecore.toml")).is_none());
        std::fs::write(dir.path().join(UNIT_NAME), UNIT_TEMPLATE).unwrap();
        assert!(
            installed_for(dir.path(), cfg).is_none(),
            "hand-written unit"
        );
    }

    #[test]
    fn activation_reloads_only_after_a_change() {
        assert_eq!(
            activation(Installed::Written),
            vec![
                vec!["daemon-reload"],
                vec!["enable", UNIT_NAME],
                vec!["restart", UNIT_NAME],
            ]
        );
        assert_eq!(
            activation(Installed::Unchanged),
            vec![vec!["enable", UNIT_NAME], vec!["restart", UNIT_NAME]]
        );
    }
}
