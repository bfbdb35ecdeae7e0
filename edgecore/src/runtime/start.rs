//! Starting things: a pod's sandbox, and a container (image ensured with the offline
//! fallback, env and volumes resolved, created, started). Each returns the [`Effect`]s the
//! loop folds into its memory and the Events it writes upstream.

use std::path::Path;
use std::time::Instant;

use super::cri::Cri;
use super::env::{PodFacts, Sources};
use super::spec::{Container, Pod};
use super::{RuntimeConfig, podconfig, volumes};

/// What an action changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// `(uid, container)` failed: back off, show `reason` as the waiting reason.
    Fail {
        /// Pod UID.
        uid: String,
        /// Container name (`""` = the sandbox).
        name: String,
        /// Waiting reason.
        reason: String,
        /// Message.
        message: String,
    },
    /// `(uid, container)` succeeded: forget its failures.
    Clear {
        /// Pod UID.
        uid: String,
        /// Container name.
        name: String,
    },
    /// An Event about the pod.
    Event {
        /// Pod UID.
        uid: String,
        /// `Normal` / `Warning`.
        kind: &'static str,
        /// Reason.
        reason: &'static str,
        /// Message.
        message: String,
    },
}

fn event(uid: &str, kind: &'static str, reason: &'static str, message: String) -> Effect {
    Effect::Event {
        uid: uid.to_owned(),
        kind,
        reason,
        message,
    }
}

fn fail(uid: &str, name: &str, reason: &str, message: String) -> Effect {
    Effect::Fail {
        uid: uid.to_owned(),
        name: name.to_owned(),
        reason: reason.to_owned(),
        message,
    }
}

/// Runs the sandbox of `pod`.
pub async fn sandbox(cri: &Cri, cfg: &RuntimeConfig, pod: &Pod, attempt: u32) -> Vec<Effect> {
    let uid = &pod.metadata.uid;
    let config = podconfig::sandbox_config(pod, attempt, &cfg.logs_dir);
    if let Err(e) = std::fs::create_dir_all(&config.log_directory) {
        tracing::warn!(pod = %pod.metadata.name, error = %e, "cannot create the pod log directory");
    }
    let t = Instant::now();
    match cri.run_sandbox(config).await {
        Ok(id) => {
            let ms = t.elapsed().as_millis();
            tracing::info!(pod = %pod.metadata.name, namespace = %pod.metadata.namespace, sandbox = %id, attempt, ms, "sandbox running");
            vec![Effect::Clear {
                uid: uid.clone(),
                name: String::new(),
            }]
        }
        Err(e) => {
            let msg = format!("Failed to create pod sandbox: {e}");
            tracing::warn!(pod = %pod.metadata.name, error = %e, "running the sandbox failed");
            vec![
                event(uid, "Warning", "FailedCreatePodSandBox", msg.clone()),
                fail(uid, "", "CreatePodSandboxError", msg),
            ]
        }
    }
}

/// The effective pull policy (Kubernetes' default: `Always` for `:latest` or no tag).
pub fn pull_policy(c: &Container) -> &str {
    if let Some(p) = c.image_pull_policy.as_deref() {
        return p;
    }
    let last = c.image.rsplit('/').next().unwrap_or_default();
    if c.image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            None | Some((_, "latest")) => "Always",
            Some(_) => "IfNotPresent",
        }
    }
}

/// Ensures the image of `c` is present: pulls per the pull policy, and falls back to a
/// local copy whatever the policy when the pull fails (an offline edge keeps running).
pub async fn ensure_image(
    cri: &Cri,
    cfg: &RuntimeConfig,
    uid: &str,
    c: &Container,
    out: &mut Vec<Effect>,
) -> Result<(), ()> {
    let image = &c.image;
    let present = cri.image_status(image).await.ok().flatten().is_some();
    let policy = pull_policy(c);
    let must_pull = match policy {
        "Never" => false,
        "IfNotPresent" => !present,
        _ => true,
    };
    if !must_pull {
        if present {
            out.push(event(
                uid,
                "Normal",
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            ));
            return Ok(());
        }
        let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
        out.push(event(uid, "Warning", "ErrImageNeverPull", msg.clone()));
        out.push(fail(uid, &c.name, "ErrImageNeverPull", msg));
        return Err(());
    }
    out.push(event(
        uid,
        "Normal",
        "Pulling",
        format!("Pulling image \"{image}\""),
    ));
    let t = Instant::now();
    match cri.pull_image(image, cfg.pull_timeout()).await {
        Ok(_) => {
            out.push(event(
                uid,
                "Normal",
                "Pulled",
                format!(
                    "Successfully pulled image \"{image}\" in {:.3}s",
                    t.elapsed().as_secs_f64()
                ),
            ));
            Ok(())
        }
        Err(e) if present => {
            tracing::info!(%image, error = %e, "pull failed; using the local image");
            out.push(event(
                uid,
                "Normal",
                "Pulled",
                format!("Pull of \"{image}\" failed ({e}); using the image present on the machine"),
            ));
            Ok(())
        }
        Err(e) => {
            let msg = format!("Failed to pull image \"{image}\": {e}");
            out.push(event(uid, "Warning", "Failed", msg.clone()));
            out.push(event(
                uid,
                "Warning",
                "Failed",
                "Error: ErrImagePull".to_owned(),
            ));
            out.push(fail(uid, &c.name, "ErrImagePull", msg));
            Err(())
        }
    }
}

/// Everything needed to start one container.
#[derive(Debug)]
pub struct StartRequest<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// The container.
    pub container: &'a Container,
    /// Sandbox id.
    pub sandbox_id: &'a str,
    /// Sandbox attempt (to rebuild its config for CreateContainer).
    pub sandbox_attempt: u32,
    /// Attempt of the container.
    pub attempt: u32,
    /// Pod / host IPs.
    pub facts: PodFacts,
}

/// Ensures the image, resolves env and volumes, creates and starts the container.
pub async fn container(
    cri: &Cri,
    cfg: &RuntimeConfig,
    sources: &(dyn Sources + Sync),
    req: StartRequest<'_>,
) -> Vec<Effect> {
    let StartRequest {
        pod,
        container: c,
        sandbox_id,
        sandbox_attempt,
        attempt,
        facts,
    } = req;
    let uid = &pod.metadata.uid;
    let mut out = Vec::new();
    let config_error = |out: &mut Vec<Effect>, msg: String| {
        out.push(event(uid, "Warning", "Failed", format!("Error: {msg}")));
        out.push(fail(uid, &c.name, "CreateContainerConfigError", msg));
    };
    // Config first: a missing ConfigMap is reported even when the image is absent too.
    let env = match super::env::resolve(pod, c, sources, &facts) {
        Ok(env) => env,
        Err(e) => {
            config_error(&mut out, e.0);
            return out;
        }
    };
    let mounts = match volumes::prepare(&cfg.pods_dir, pod, sources, &facts)
        .and_then(|vols| podconfig::mounts(c, &vols))
    {
        Ok(m) => m,
        Err(e) => {
            config_error(&mut out, e.0);
            return out;
        }
    };
    let t = Instant::now();
    if ensure_image(cri, cfg, uid, c, &mut out).await.is_err() {
        return out;
    }
    let image_ms = t.elapsed().as_millis();
    let config = podconfig::container_config(pod, c, attempt, &c.image, &env, &mounts);
    let sandbox_config = podconfig::sandbox_config(pod, sandbox_attempt, &cfg.logs_dir);
    let log_dir = Path::new(&sandbox_config.log_directory).join(&c.name);
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        tracing::warn!(dir = %log_dir.display(), error = %e, "cannot create the container log directory");
    }
    let t = Instant::now();
    let id = match cri
        .create_container(sandbox_id, config, sandbox_config)
        .await
    {
        Ok(id) => id,
        Err(e) => {
            let msg = format!("Error: {e}");
            out.push(event(uid, "Warning", "Failed", msg.clone()));
            out.push(fail(uid, &c.name, "CreateContainerError", msg));
            return out;
        }
    };
    let create_ms = t.elapsed().as_millis();
    out.push(event(
        uid,
        "Normal",
        "Created",
        format!("Created container {}", c.name),
    ));
    let t = Instant::now();
    if let Err(e) = cri.start_container(&id).await {
        let msg = format!("Error: {e}");
        out.push(event(uid, "Warning", "Failed", msg.clone()));
        out.push(fail(uid, &c.name, "RunContainerError", msg));
        return out;
    }
    tracing::info!(
        pod = %pod.metadata.name, namespace = %pod.metadata.namespace, container = %c.name,
        id = %id, attempt, image_ms, create_ms, start_ms = t.elapsed().as_millis(),
        "container started"
    );
    out.push(event(
        uid,
        "Normal",
        "Started",
        format!("Started container {}", c.name),
    ));
    out.push(Effect::Clear {
        uid: uid.clone(),
        name: c.name.clone(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_pull_policies() {
        let c = |image: &str| Container {
            image: image.into(),
            ..Container::default()
        };
        assert_eq!(pull_policy(&c("busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:latest")), "Always");
        assert_eq!(pull_policy(&c("localhost:5000/busybox")), "Always");
        assert_eq!(
            pull_policy(&c("localhost:5000/busybox:1.36")),
            "IfNotPresent"
        );
        assert_eq!(pull_policy(&c("busybox@sha256:abc")), "IfNotPresent");
        let mut never = c("busybox");
        never.image_pull_policy = Some("Never".into());
        assert_eq!(pull_policy(&never), "Never");
    }
}
