//! The containerd floor of `kedge-bench pods`: the same N pods started straight through
//! CRI, no cloud, no edgecore loop — each pod its own task doing what edgecore's start steps
//! do (RunPodSandbox, ImageStatus, CreateContainer, StartContainer, with the configs
//! edgecore builds), all pods at once, and again one pod after another. What is left of the
//! API's create -> Running over this is ours; this much is containerd, runc and the shims on
//! this machine.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edgecore::runtime::cri::Cri;
use edgecore::runtime::podconfig::{self, MANAGED};
use edgecore::runtime::spec::Pod;
use tests::containerd::IMAGE;

/// Per pod, from the start of all: sandbox up, container started.
pub struct Floor {
    /// RunPodSandbox returned, per pod.
    pub sandbox: Vec<Duration>,
    /// StartContainer returned, per pod (the pod runs).
    pub running: Vec<Duration>,
}

impl Floor {
    /// Each pod's (sandbox up, container started), sorted per column.
    fn of(starts: Vec<(Duration, Duration)>) -> Floor {
        let (mut sandbox, mut running): (Vec<_>, Vec<_>) = starts.into_iter().unzip();
        sandbox.sort();
        running.sort();
        Floor { sandbox, running }
    }
}

/// Starts `n` hostNetwork busybox pods through CRI at `endpoint`, all at once, then stops
/// and removes them again.
pub async fn measure(endpoint: &str, n: usize, logs: &Path) -> Result<Floor> {
    let cri = Cri::new(endpoint)?;
    let t0 = Instant::now();
    let starts = (0..n).map(|i| start_one(&cri, format!("floor{i}"), logs, t0));
    let done = futures::future::join_all(starts)
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    remove_all(&cri).await?;
    Ok(Floor::of(done))
}

/// The same `n` pods started one after another (each once the one before runs); per pod the
/// time from its own first call. This is the floor of the one-at-a-time row.
pub async fn measure_one_by_one(endpoint: &str, n: usize, logs: &Path) -> Result<Floor> {
    let cri = Cri::new(endpoint)?;
    let mut done = Vec::with_capacity(n);
    for i in 0..n {
        done.push(start_one(&cri, format!("single{i}"), logs, Instant::now()).await?);
    }
    remove_all(&cri).await?;
    Ok(Floor::of(done))
}

/// Starts pod `name` as edgecore would; returns (sandbox up, container started) since `t0`.
async fn start_one(
    cri: &Cri,
    name: String,
    logs: &Path,
    t0: Instant,
) -> Result<(Duration, Duration)> {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid")},
        "spec": {"nodeName": "floor", "hostNetwork": true,
            "containers": [{"name": "app", "image": IMAGE,
                "command": ["sleep", "100000"]}]}
    }))?;
    let sandbox_config = podconfig::sandbox_config(&pod, 0, logs);
    std::fs::create_dir_all(&sandbox_config.log_directory)?;
    let sandbox = cri.run_sandbox(sandbox_config.clone()).await?;
    let up = t0.elapsed();
    let c = pod
        .spec
        .containers
        .first()
        .context("the pod has a container")?;
    cri.image_status(IMAGE)
        .await?
        .context("the test image is not in containerd")?;
    let config = podconfig::container_config(&pod, c, 0, IMAGE, &[], &[]);
    let id = cri
        .create_container(&sandbox, config, sandbox_config)
        .await?;
    cri.start_container(&id).await?;
    Ok((up, t0.elapsed()))
}

/// Stops and removes every sandbox kedge's label marks.
async fn remove_all(cri: &Cri) -> Result<()> {
    for sb in cri.list_sandboxes(&[MANAGED]).await? {
        cri.stop_sandbox(&sb.id).await?;
        cri.remove_sandbox(&sb.id).await?;
    }
    Ok(())
}
