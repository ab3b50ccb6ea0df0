//! The one place the agent speaks CRI: typed calls with per-call timeouts and errors that name
//! the call and the pod or container (kubelet counterpart: k8s.io/cri-client remote services).
//!
//! The channel is lazy and reconnects by itself, so a runtime restart shows up as failed calls
//! (retried by the next sync) rather than a dead agent.

use crate::instrument::{CounterVec, HistogramVec};
use proto::listing::Listed;
use proto::runtime::v1 as cri;
use proto::runtime::v1::image_service_client::ImageServiceClient;
use proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;

/// A failed CRI call.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The runtime answered with an error.
    #[error("CRI {call} for {target}: {code:?}: {message}", code = source.code(), message = source.message())]
    Call {
        /// RPC name, e.g. `RunPodSandbox`.
        call: &'static str,
        /// Pod or container the call was for.
        target: String,
        /// The gRPC status.
        #[source]
        source: tonic::Status,
    },
    /// No answer within the deadline.
    #[error("CRI {call} for {target}: no answer within {after:?}")]
    Timeout {
        /// RPC name.
        call: &'static str,
        /// Pod or container the call was for.
        target: String,
        /// The deadline.
        after: Duration,
    },
    /// The endpoint flag is unusable.
    #[error(transparent)]
    Endpoint(#[from] proto::EndpointError),
}

impl CriError {
    /// True when the runtime said the object does not exist (a normal outcome while removing).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Call { source, .. } if source.code() == tonic::Code::NotFound)
    }

    /// True when the runtime does not implement the call (e.g. GetContainerEvents on older runtimes).
    pub fn is_unimplemented(&self) -> bool {
        matches!(self, Self::Call { source, .. } if source.code() == tonic::Code::Unimplemented)
    }
}

/// CRI runtime and image clients sharing the agent's timeout policy. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Cri {
    rt: RuntimeServiceClient<Channel>,
    /// The runtime connection itself, for calls made without the generated client.
    channel: Channel,
    img: ImageServiceClient<Channel>,
    timeout: Duration,
    stats: std::sync::Arc<RuntimeOpStats>,
}

/// Call statistics of one CRI client and all its clones (kubelet
/// pkg/kubelet/kuberuntime/instrumented_services.go): owned here, rendered by `metrics/`.
#[derive(Debug)]
pub struct RuntimeOpStats {
    /// Call durations by operation type (kubelet_runtime_operations_duration_seconds).
    pub durations: HistogramVec,
    /// Calls by operation type (kubelet_runtime_operations_total).
    pub calls: CounterVec,
    /// Failed calls by operation type (kubelet_runtime_operations_errors_total).
    pub errors: CounterVec,
}

/// kubelet runtime_operations_duration_seconds: ExponentialBuckets(.005, 2.5, 14).
const RUNTIME_BUCKETS: &[f64] = &[
    0.005,
    0.0125,
    0.03125,
    0.078125,
    0.1953125,
    0.48828125,
    1.220703125,
    3.0517578125,
    7.62939453125,
    19.073486328125,
    47.6837158203125,
    119.20928955078125,
    298.0232238769531,
    745.0580596923828,
];

impl Default for RuntimeOpStats {
    fn default() -> Self {
        Self {
            durations: HistogramVec::new(RUNTIME_BUCKETS),
            calls: CounterVec::default(),
            errors: CounterVec::default(),
        }
    }
}

impl RuntimeOpStats {
    fn record(&self, call: &'static str, elapsed: Duration, ok: bool) {
        let op = operation_type(call);
        self.durations.observe(op, elapsed);
        self.calls.inc(op);
        if !ok {
            self.errors.inc(op);
        }
    }
}

/// The kubelet's operation_type label for a CRI call (instrumented_services.go).
fn operation_type(call: &'static str) -> &'static str {
    match call {
        "Version" => "version",
        "Status" => "status",
        "RunPodSandbox" => "run_podsandbox",
        "StopPodSandbox" => "stop_podsandbox",
        "RemovePodSandbox" => "remove_podsandbox",
        "PodSandboxStatus" => "podsandbox_status",
        "ListPodSandbox" => "list_podsandbox",
        "CreateContainer" => "create_container",
        "StartContainer" => "start_container",
        "StopContainer" => "stop_container",
        "RemoveContainer" => "remove_container",
        "ListContainers" => "list_containers",
        "ContainerStatus" => "container_status",
        "ExecSync" => "exec_sync",
        "Exec" => "exec",
        "Attach" => "attach",
        "PortForward" => "port_forward",
        "GetContainerEvents" => "get_container_events",
        "ImageStatus" => "image_status",
        "PullImage" => "pull_image",
        "ListImages" => "list_images",
        "RemoveImage" => "remove_image",
        "ContainerStats" => "container_stats",
        "ListContainerStats" => "list_container_stats",
        "PodSandboxStats" => "podsandbox_stats",
        "ListPodSandboxStats" => "list_podsandbox_stats",
        "ImageFsInfo" => "image_fs_info",
        other => other,
    }
}

impl Cri {
    /// Dials the runtime and image endpoints lazily (`unix:///…` or a socket path).
    pub fn connect(runtime: &str, image: &str, timeout: Duration) -> Result<Self, CriError> {
        let rt = proto::Client::connect_lazy(proto::parse_endpoint(runtime)?);
        let img = if image == runtime {
            rt.clone()
        } else {
            proto::Client::connect_lazy(proto::parse_endpoint(image)?)
        };
        Ok(Self {
            rt: rt.runtime(),
            channel: rt.channel().clone(),
            img: img.image(),
            timeout,
            stats: std::sync::Arc::default(),
        })
    }

    /// Call statistics of this client and its clones, for `metrics/`.
    pub fn op_stats(&self) -> std::sync::Arc<RuntimeOpStats> {
        self.stats.clone()
    }

    async fn run<T, Fut>(
        &self,
        call: &'static str,
        target: impl FnOnce() -> String,
        after: Option<Duration>,
        fut: Fut,
    ) -> Result<T, CriError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = std::time::Instant::now();
        let res = match after {
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => {
                    self.stats.record(call, d, false);
                    return Err(CriError::Timeout {
                        call,
                        target: target(),
                        after: d,
                    });
                }
            },
            None => fut.await,
        };
        self.stats.record(call, started.elapsed(), res.is_ok());
        res.map(tonic::Response::into_inner)
            .map_err(|source| CriError::Call {
                call,
                target: target(),
                source,
            })
    }

    /// `Version`: runtime name and version.
    pub async fn version(&self) -> Result<cri::VersionResponse, CriError> {
        let mut c = self.rt.clone();
        self.run(
            "Version",
            || "runtime".into(),
            Some(self.timeout),
            c.version(cri::VersionRequest::default()),
        )
        .await
    }

    /// `RunPodSandbox`.
    pub async fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        target: &str,
    ) -> Result<String, CriError> {
        let mut c = self.rt.clone();
        let req = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        // The kubelet allows RunPodSandbox the full request timeout; CNI setup can be slow.
        self.run(
            "RunPodSandbox",
            || target.to_string(),
            Some(self.timeout),
            c.run_pod_sandbox(req),
        )
        .await
        .map(|r| r.pod_sandbox_id)
    }

    /// `StopPodSandbox`; NotFound counts as success.
    pub async fn stop_pod_sandbox(&self, id: &str, target: &str) -> Result<(), CriError> {
        let mut c = self.rt.clone();
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        ok_if_gone(
            self.run(
                "StopPodSandbox",
                || format!("sandbox {id} of {target}"),
                Some(self.timeout),
                c.stop_pod_sandbox(req),
            )
            .await,
        )
    }

    /// `RemovePodSandbox`; NotFound counts as success.
    pub async fn remove_pod_sandbox(&self, id: &str, target: &str) -> Result<(), CriError> {
        let mut c = self.rt.clone();
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        ok_if_gone(
            self.run(
                "RemovePodSandbox",
                || format!("sandbox {id} of {target}"),
                Some(self.timeout),
                c.remove_pod_sandbox(req),
            )
            .await,
        )
    }

    /// `PodSandboxStatus`.
    pub async fn pod_sandbox_status(
        &self,
        id: &str,
        target: &str,
    ) -> Result<Option<cri::PodSandboxStatus>, CriError> {
        let mut c = self.rt.clone();
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        self.run(
            "PodSandboxStatus",
            || format!("sandbox {id} of {target}"),
            Some(self.timeout),
            c.pod_sandbox_status(req),
        )
        .await
        .map(|r| r.status)
    }

    /// `ListPodSandbox`, optionally only the sandboxes of one pod UID.
    pub async fn list_pod_sandboxes(
        &self,
        uid: Option<&str>,
    ) -> Result<Vec<cri::PodSandbox>, CriError> {
        let mut c = self.rt.clone();
        let filter = uid.map(|u| cri::PodSandboxFilter {
            label_selector: [(super::labels::POD_UID.to_string(), u.to_string())].into(),
            ..Default::default()
        });
        self.run(
            "ListPodSandbox",
            || uid.map_or("all pods".into(), |u| format!("pod {u}")),
            Some(self.timeout),
            c.list_pod_sandbox(cri::ListPodSandboxRequest { filter }),
        )
        .await
        .map(|r| r.items)
    }

    /// `ListContainers`, optionally only the containers of one pod UID.
    pub async fn list_containers(
        &self,
        uid: Option<&str>,
    ) -> Result<Vec<cri::Container>, CriError> {
        let mut c = self.rt.clone();
        let filter = uid.map(|u| cri::ContainerFilter {
            label_selector: [(super::labels::POD_UID.to_string(), u.to_string())].into(),
            ..Default::default()
        });
        self.run(
            "ListContainers",
            || uid.map_or("all pods".into(), |u| format!("pod {u}")),
            Some(self.timeout),
            c.list_containers(cri::ListContainersRequest { filter }),
        )
        .await
        .map(|r| r.containers)
    }

    /// `ListPodSandbox` of all pods for a relist: each sandbox read only as far as its id,
    /// state and labels, the rest decoded on demand ([`proto::listing`]).
    pub async fn relist_pod_sandboxes(&self) -> Result<Vec<Listed<cri::PodSandbox>>, CriError> {
        self.run(
            "ListPodSandbox",
            || "all pods".into(),
            Some(self.timeout),
            proto::listing::list_pod_sandboxes(self.channel.clone(), Default::default()),
        )
        .await
    }

    /// `ListContainers` of all pods for a relist, read as [`Cri::relist_pod_sandboxes`] reads.
    pub async fn relist_containers(&self) -> Result<Vec<Listed<cri::Container>>, CriError> {
        self.run(
            "ListContainers",
            || "all pods".into(),
            Some(self.timeout),
            proto::listing::list_containers(self.channel.clone(), Default::default()),
        )
        .await
    }

    /// `ContainerStatus`.
    pub async fn container_status(
        &self,
        id: &str,
        target: &str,
    ) -> Result<Option<cri::ContainerStatus>, CriError> {
        let mut c = self.rt.clone();
        let req = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        self.run(
            "ContainerStatus",
            || format!("container {id} of {target}"),
            Some(self.timeout),
            c.container_status(req),
        )
        .await
        .map(|r| r.status)
    }

    /// `CreateContainer`.
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
        target: &str,
    ) -> Result<String, CriError> {
        let mut c = self.rt.clone();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        self.run(
            "CreateContainer",
            || target.to_string(),
            Some(self.timeout),
            c.create_container(req),
        )
        .await
        .map(|r| r.container_id)
    }

    /// `StartContainer`.
    pub async fn start_container(&self, id: &str, target: &str) -> Result<(), CriError> {
        let mut c = self.rt.clone();
        let req = cri::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.run(
            "StartContainer",
            || format!("container {id} of {target}"),
            Some(self.timeout),
            c.start_container(req),
        )
        .await
        .map(drop)
    }

    /// `StopContainer` with a grace period; the deadline is the grace plus the request timeout,
    /// as in the kubelet's remote runtime. NotFound counts as success.
    pub async fn stop_container(
        &self,
        id: &str,
        grace_seconds: i64,
        target: &str,
    ) -> Result<(), CriError> {
        let mut c = self.rt.clone();
        let req = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: grace_seconds,
        };
        let after = self.timeout + Duration::from_secs(grace_seconds.max(0) as u64);
        ok_if_gone(
            self.run(
                "StopContainer",
                || format!("container {id} of {target}"),
                Some(after),
                c.stop_container(req),
            )
            .await,
        )
    }

    /// `RemoveContainer`; NotFound counts as success.
    pub async fn remove_container(&self, id: &str, target: &str) -> Result<(), CriError> {
        let mut c = self.rt.clone();
        let req = cri::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        ok_if_gone(
            self.run(
                "RemoveContainer",
                || format!("container {id} of {target}"),
                Some(self.timeout),
                c.remove_container(req),
            )
            .await,
        )
    }

    /// `GetContainerEvents`: the runtime's event stream (no deadline; it lives until cancelled).
    pub async fn container_events(
        &self,
    ) -> Result<tonic::Streaming<cri::ContainerEventResponse>, CriError> {
        let mut c = self.rt.clone();
        self.run(
            "GetContainerEvents",
            || "runtime".into(),
            Some(self.timeout),
            c.get_container_events(cri::GetEventsRequest::default()),
        )
        .await
    }

    /// `ImageStatus`: `None` when the image is not present.
    pub async fn image_status(&self, image: &str) -> Result<Option<cri::Image>, CriError> {
        let mut c = self.img.clone();
        let req = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        self.run(
            "ImageStatus",
            || format!("image {image}"),
            Some(self.timeout),
            c.image_status(req),
        )
        .await
        .map(|r| r.image)
    }

    /// `ImageFsInfo`: the filesystems holding images (and container layers, if separate).
    pub async fn image_fs_info(&self) -> Result<cri::ImageFsInfoResponse, CriError> {
        let mut c = self.img.clone();
        self.run(
            "ImageFsInfo",
            || "runtime".into(),
            Some(self.timeout),
            c.image_fs_info(cri::ImageFsInfoRequest::default()),
        )
        .await
    }

    /// `ListContainerStats` of every container: the stats task reads each writable layer's
    /// use from it (containerd refreshes it every 10 s).
    pub async fn list_container_stats(&self) -> Result<Vec<cri::ContainerStats>, CriError> {
        let mut c = self.rt.clone();
        self.run(
            "ListContainerStats",
            || "runtime".into(),
            Some(self.timeout),
            c.list_container_stats(cri::ListContainerStatsRequest::default()),
        )
        .await
        .map(|r| r.stats)
    }

    /// `ListImages`: every image the runtime holds.
    pub async fn list_images(&self) -> Result<Vec<cri::Image>, CriError> {
        let mut c = self.img.clone();
        self.run(
            "ListImages",
            || "runtime".into(),
            Some(self.timeout),
            c.list_images(cri::ListImagesRequest::default()),
        )
        .await
        .map(|r| r.images)
    }

    /// `RemoveImage` by id or reference; NotFound counts as success.
    pub async fn remove_image(&self, image: &str) -> Result<(), CriError> {
        let mut c = self.img.clone();
        let req = cri::RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        ok_if_gone(
            self.run(
                "RemoveImage",
                || format!("image {image}"),
                Some(self.timeout),
                c.remove_image(req),
            )
            .await,
        )
    }

    /// `ContainerStats` of one container (its writable layer's use among them).
    pub async fn container_stats(
        &self,
        id: &str,
        target: &str,
    ) -> Result<Option<cri::ContainerStats>, CriError> {
        let mut c = self.rt.clone();
        let req = cri::ContainerStatsRequest {
            container_id: id.to_string(),
        };
        self.run(
            "ContainerStats",
            || format!("container {id} of {target}"),
            Some(self.timeout),
            c.container_stats(req),
        )
        .await
        .map(|r| r.stats)
    }

    /// `PullImage`: no deadline, as in the kubelet; pulls end when done or cancelled.
    pub async fn pull_image(
        &self,
        image: &str,
        sandbox_config: cri::PodSandboxConfig,
        target: &str,
    ) -> Result<String, CriError> {
        let mut c = self.img.clone();
        let req = cri::PullImageRequest {
            image: Some(image_spec(image)),
            auth: None,
            sandbox_config: Some(sandbox_config),
        };
        self.run(
            "PullImage",
            || format!("image {image} for {target}"),
            None,
            c.pull_image(req),
        )
        .await
        .map(|r| r.image_ref)
    }

    /// `Status`: runtime conditions (RuntimeReady, NetworkReady).
    pub async fn status(&self) -> Result<cri::StatusResponse, CriError> {
        let mut c = self.rt.clone();
        self.run(
            "Status",
            || "runtime".into(),
            Some(self.timeout),
            c.status(cri::StatusRequest { verbose: false }),
        )
        .await
    }

    /// The runtime's sandbox (pause) image, from verbose `Status` (containerd's
    /// `config.sandboxImage`); `None` when the runtime does not say.
    pub async fn sandbox_image(&self) -> Result<Option<String>, CriError> {
        let mut c = self.rt.clone();
        let r = self
            .run(
                "Status",
                || "runtime".into(),
                Some(self.timeout),
                c.status(cri::StatusRequest { verbose: true }),
            )
            .await?;
        Ok(r.info
            .get("config")
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
            .and_then(|v| v.get("sandboxImage")?.as_str().map(str::to_owned))
            .filter(|s| !s.is_empty()))
    }

    /// `ExecSync`: runs `cmd` in a container and returns its output; the deadline is `timeout`
    /// (zero: none) plus the request timeout, as in the kubelet's remote runtime.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
        target: &str,
    ) -> Result<cri::ExecSyncResponse, CriError> {
        let mut c = self.rt.clone();
        let req = cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd,
            timeout: timeout.as_secs() as i64,
        };
        let after = (!timeout.is_zero()).then(|| self.timeout + timeout);
        self.run(
            "ExecSync",
            || format!("container {id} of {target}"),
            after,
            c.exec_sync(req),
        )
        .await
    }

    /// `Exec`: the runtime's streaming URL for an interactive exec.
    pub async fn exec(&self, req: cri::ExecRequest, target: &str) -> Result<String, CriError> {
        let mut c = self.rt.clone();
        let id = req.container_id.clone();
        self.run(
            "Exec",
            || format!("container {id} of {target}"),
            Some(self.timeout),
            c.exec(req),
        )
        .await
        .map(|r| r.url)
    }

    /// `Attach`: the runtime's streaming URL for attaching to a container.
    pub async fn attach(&self, req: cri::AttachRequest, target: &str) -> Result<String, CriError> {
        let mut c = self.rt.clone();
        let id = req.container_id.clone();
        self.run(
            "Attach",
            || format!("container {id} of {target}"),
            Some(self.timeout),
            c.attach(req),
        )
        .await
        .map(|r| r.url)
    }

    /// `PortForward`: the runtime's streaming URL for forwarding ports of a sandbox.
    pub async fn port_forward(
        &self,
        req: cri::PortForwardRequest,
        target: &str,
    ) -> Result<String, CriError> {
        let mut c = self.rt.clone();
        let id = req.pod_sandbox_id.clone();
        self.run(
            "PortForward",
            || format!("sandbox {id} of {target}"),
            Some(self.timeout),
            c.port_forward(req),
        )
        .await
        .map(|r| r.url)
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

fn ok_if_gone<T>(r: Result<T, CriError>) -> Result<(), CriError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
