//! The CRI v1 client: `runtime.v1.RuntimeService` and `ImageService` over the runtime's
//! unix socket (tonic, lazily connected, so a runtime that is not up yet — or restarts — is
//! reached again on the next call without rebuilding the client).
//!
//! Every call has a deadline; [`CriError`] names the call that failed and keeps the gRPC
//! status. The generated types live in [`api`].

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// The generated CRI v1 messages and clients (`package runtime.v1`).
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    unreachable_pub
)]
pub mod api {
    tonic::include_proto!("runtime.v1");
}

use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;

/// Deadline of ordinary calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a CRI call failed.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The endpoint is not a `unix://` URI or a socket path.
    #[error("invalid CRI endpoint {endpoint:?}: {why}")]
    Endpoint {
        /// What was configured.
        endpoint: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The runtime answered with an error (or could not be reached).
    #[error("CRI {op} failed: {}", .status.message())]
    Call {
        /// The RPC.
        op: &'static str,
        /// The gRPC status.
        #[source]
        status: Box<tonic::Status>,
    },
    /// The call did not finish within its deadline.
    #[error("CRI {op} timed out after {after:?}")]
    Timeout {
        /// The RPC.
        op: &'static str,
        /// The deadline.
        after: Duration,
    },
}

impl CriError {
    /// The runtime is not reachable at all (socket missing, refused): the runtime-health
    /// condition, not a per-pod error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CriError::Call { status, .. } => status.code() == tonic::Code::Unavailable,
            CriError::Timeout { .. } => true,
            CriError::Endpoint { .. } => true,
        }
    }

    /// The object the call named does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound
            || status.message().contains("not found"))
    }
}

/// The socket path of a CRI endpoint: `unix:///run/x.sock` or a plain absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, CriError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if endpoint.contains("://") && !endpoint.starts_with("unix://") {
        return Err(CriError::Endpoint {
            endpoint: endpoint.to_owned(),
            why: "only unix:// endpoints are supported",
        });
    }
    if !path.starts_with('/') {
        return Err(CriError::Endpoint {
            endpoint: endpoint.to_owned(),
            why: "the socket path must be absolute",
        });
    }
    Ok(PathBuf::from(path))
}

/// A cheap clonable CRI client.
#[derive(Debug, Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    /// The endpoint, for messages.
    pub endpoint: String,
}

async fn deadline<T>(
    op: &'static str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, CriError> {
    match tokio::time::timeout(after, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(CriError::Call {
            op,
            status: Box::new(status),
        }),
        Err(_) => Err(CriError::Timeout { op, after }),
    }
}

impl Cri {
    /// A client for `endpoint`; connects lazily (on the first call, again after failures).
    pub fn new(endpoint: &str) -> Result<Cri, CriError> {
        let path = socket_path(endpoint)?;
        // The URI is a placeholder: the connector ignores it and dials the socket.
        let channel = Endpoint::from_static("http://cri.local")
            .connect_timeout(Duration::from_secs(2))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }));
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
            endpoint: endpoint.to_owned(),
        })
    }

    /// `Version`: the runtime's name and version (a health check).
    pub async fn version(&self) -> Result<api::VersionResponse, CriError> {
        let mut c = self.runtime.clone();
        let req = api::VersionRequest {
            version: "v1".to_owned(),
        };
        deadline("Version", Duration::from_secs(5), c.version(req)).await
    }

    /// Sandboxes carrying every label of `labels`.
    pub async fn list_sandboxes(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<api::PodSandbox>, CriError> {
        let mut c = self.runtime.clone();
        let filter = api::PodSandboxFilter {
            label_selector: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        };
        let req = api::ListPodSandboxRequest {
            filter: Some(filter),
        };
        Ok(
            deadline("ListPodSandbox", CALL_TIMEOUT, c.list_pod_sandbox(req))
                .await?
                .items,
        )
    }

    /// Containers carrying every label of `labels`.
    pub async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<api::Container>, CriError> {
        let mut c = self.runtime.clone();
        let filter = api::ContainerFilter {
            label_selector: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        };
        let req = api::ListContainersRequest {
            filter: Some(filter),
        };
        Ok(
            deadline("ListContainers", CALL_TIMEOUT, c.list_containers(req))
                .await?
                .containers,
        )
    }

    /// `PodSandboxStatus` (the pod IP lives here).
    pub async fn sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, CriError> {
        let mut c = self.runtime.clone();
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        deadline("PodSandboxStatus", CALL_TIMEOUT, c.pod_sandbox_status(req))
            .await?
            .status
            .ok_or(CriError::Timeout {
                op: "PodSandboxStatus (empty answer)",
                after: Duration::ZERO,
            })
    }

    /// `ContainerStatus` (exit code, reason, times, image ref).
    pub async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, CriError> {
        let mut c = self.runtime.clone();
        let req = api::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        deadline("ContainerStatus", CALL_TIMEOUT, c.container_status(req))
            .await?
            .status
            .ok_or(CriError::Timeout {
                op: "ContainerStatus (empty answer)",
                after: Duration::ZERO,
            })
    }

    /// `RunPodSandbox`: returns the sandbox id.
    pub async fn run_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        let req = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Ok(
            deadline("RunPodSandbox", CALL_TIMEOUT * 2, c.run_pod_sandbox(req))
                .await?
                .pod_sandbox_id,
        )
    }

    /// `StopPodSandbox` (idempotent).
    pub async fn stop_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        let req = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        deadline("StopPodSandbox", CALL_TIMEOUT, c.stop_pod_sandbox(req)).await?;
        Ok(())
    }

    /// `RemovePodSandbox` (idempotent).
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        let req = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        deadline("RemovePodSandbox", CALL_TIMEOUT, c.remove_pod_sandbox(req)).await?;
        Ok(())
    }

    /// `CreateContainer`: returns the container id.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut c = self.runtime.clone();
        let req = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(
            deadline("CreateContainer", CALL_TIMEOUT, c.create_container(req))
                .await?
                .container_id,
        )
    }

    /// `StartContainer`.
    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        let req = api::StartContainerRequest {
            container_id: id.to_owned(),
        };
        deadline("StartContainer", CALL_TIMEOUT, c.start_container(req)).await?;
        Ok(())
    }

    /// `StopContainer`: SIGTERM (or the image's stop signal), SIGKILL after `grace`.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        let req = api::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
        };
        deadline("StopContainer", grace + CALL_TIMEOUT, c.stop_container(req)).await?;
        Ok(())
    }

    /// `RemoveContainer` (idempotent).
    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut c = self.runtime.clone();
        let req = api::RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        deadline("RemoveContainer", CALL_TIMEOUT, c.remove_container(req)).await?;
        Ok(())
    }

    /// `ExecSync`: runs `cmd` in the container; `(exit code, stdout+stderr)`.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), CriError> {
        let mut c = self.runtime.clone();
        let req = api::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd,
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(1),
        };
        let r = deadline(
            "ExecSync",
            timeout + Duration::from_secs(5),
            c.exec_sync(req),
        )
        .await?;
        let mut out = r.stdout;
        out.extend_from_slice(&r.stderr);
        Ok((r.exit_code, out))
    }

    /// `ImageStatus`: the image if present locally.
    pub async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        let mut c = self.image.clone();
        let req = api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        Ok(deadline("ImageStatus", CALL_TIMEOUT, c.image_status(req))
            .await?
            .image)
    }

    /// `PullImage` within `timeout`: the image reference.
    pub async fn pull_image(&self, image: &str, timeout: Duration) -> Result<String, CriError> {
        let mut c = self.image.clone();
        let req = api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: None,
        };
        Ok(deadline("PullImage", timeout, c.pull_image(req))
            .await?
            .image_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").ok(),
            Some(PathBuf::from("/run/containerd/containerd.sock"))
        );
        assert_eq!(
            socket_path("/tmp/c.sock").ok(),
            Some(PathBuf::from("/tmp/c.sock"))
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
        assert!(socket_path("unix://relative.sock").is_err());
    }
}
