//! The runtime manager: the only module that speaks CRI (kubelet pkg/kubelet/kuberuntime).
//! `sync_pod` reads the pod's runtime state, computes actions and carries them out; it is
//! idempotent, so a pod worker may run it as often as it likes. `terminate_pod` stops and
//! removes everything a pod has, including its cgroup and directories.

pub mod actions;
pub mod backoff;
pub mod client;
pub mod container;
pub mod env;
pub mod ephemeral;
pub mod etc_hosts;
pub mod gc;
pub mod health;
pub mod labels;
pub mod lifecycle;
pub mod sandbox;
pub mod security;
pub mod state;
pub mod termination;
#[cfg(test)]
pub mod test_support;

use crate::cm::ContainerManager;
use crate::pod::{DesiredPod, PodRef, QosClass};
use crate::recorder::{field_path, reasons as ev};
use backoff::Backoff;
pub use client::{Cri, CriError};
pub use ephemeral::ContainerKind;
use k8s_openapi::api::core::v1::Container;
use proto::runtime::v1 as cri;
use state::{ContainerState, PodRuntimeState};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::{debug, info, warn};

/// Node facts the generated configs need, fixed at start-up.
#[derive(Debug, Clone)]
pub struct NodeContext {
    /// Node name.
    pub node_name: String,
    /// Node IP for `status.hostIP`.
    pub host_ip: String,
    /// Container log root.
    pub pod_logs_dir: PathBuf,
    /// Agent state root (`<root>/pods/<uid>`).
    pub root_dir: PathBuf,
    /// Cluster DNS servers.
    pub cluster_dns: Vec<String>,
    /// Cluster domain.
    pub cluster_domain: Option<String>,
    /// The host's resolver config.
    pub host_dns: cri::DnsConfig,
    /// cgroup naming.
    pub cm: ContainerManager,
    /// Node memory, bytes.
    pub memory_capacity: i64,
    /// Node CPUs, millicores.
    pub cpu_capacity_milli: i64,
    /// configMap, secret, projected and downwardAPI volumes; env objects.
    pub volumes: crate::volumemanager::VolumeManager,
    /// Kubernetes Events about the pods (Pulling, Created, Started, Killing, BackOff...).
    pub recorder: crate::recorder::Recorder,
    /// RuntimeDefault seccomp where no profile is named (seccompDefault).
    pub seccomp_default: bool,
    /// Services for the containers' service environment variables (empty standalone).
    pub services: crate::services::Services,
}

/// Why a sync did not complete; the worker logs it with the pod and retries.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A CRI call failed.
    #[error(transparent)]
    Cri(#[from] CriError),
    /// The container config could not be built (CreateContainerConfigError).
    #[error("CreateContainerConfigError: {0}")]
    Config(#[from] container::ConfigError),
    /// A volume could not be set up (FailedMount; containers wait in ContainerCreating).
    #[error("FailedMount: {0}")]
    Volume(#[from] crate::volumemanager::VolumeError),
    /// Pulling failed (ErrImagePull).
    #[error("ErrImagePull: failed to pull image {image:?}: {source}")]
    Pull {
        /// The image.
        image: String,
        /// The CRI error.
        #[source]
        source: CriError,
    },
    /// The container's postStart hook failed; it was killed (PostStartHookError).
    #[error("PostStartHookError: {0}")]
    PostStartHook(String),
    /// The image is absent and the policy forbids pulling (ErrImageNeverPull).
    #[error(
        "ErrImageNeverPull: container image {image:?} is not present with pull policy of Never"
    )]
    NeverPull {
        /// The image.
        image: String,
    },
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncOutcome {
    /// All that can be done now is done; sync again on the next event or resync.
    Synced,
    /// Something waits on a back-off: sync again after this long.
    RequeueAfter(Duration),
    /// The pod reached a terminal phase; nothing will run again.
    Finished,
}

/// Per-pod state the worker keeps between syncs: back-offs and why containers wait (what the
/// status manager shows beside the runtime state).
#[derive(Debug, Clone)]
pub struct PodBackoffs {
    containers: Backoff,
    images: Backoff,
    /// (back-off key, exit time) last reported, so each wait is logged once, not per wake-up.
    reported: Option<(String, SystemTime)>,
    /// Container name -> (reason, message) while it cannot start (CrashLoopBackOff, ErrImagePull…).
    pub waiting: HashMap<String, (String, String)>,
}

impl PodBackoffs {
    /// Crash-loop back-off capped at `max` (crashLoopBackOff.maxContainerRestartPeriod).
    pub fn new(max: Duration) -> Self {
        Self {
            containers: Backoff::new(backoff::INITIAL, max),
            images: Backoff::new(backoff::INITIAL, backoff::MAX),
            reported: None,
            waiting: HashMap::new(),
        }
    }

    fn wait(&mut self, container: &str, reason: &str, message: String) {
        self.waiting
            .insert(container.to_string(), (reason.to_string(), message));
    }
}

/// What a command run in a container did (the kubelet's RunInContainer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// It exited; stdout then stderr, as the kubelet appends them.
    Exited {
        /// Exit code.
        code: i32,
        /// Combined output.
        output: Vec<u8>,
    },
    /// It ran past its timeout.
    TimedOut,
}

/// Containers the pod worker wants stopped for the agent's own reasons: runtime container ID ->
/// (message, grace period override). A failed liveness or startup probe puts them here.
pub type Unhealthy = HashMap<String, (String, Option<i64>)>;

/// Running sidecars (runtime container IDs) whose startup probe has not passed yet: the next
/// init container waits for them.
pub type Unstarted = std::collections::HashSet<String>;

/// Runs pods on the CRI runtime.
#[derive(Debug, Clone)]
pub struct RuntimeManager {
    cri: Cri,
    ctx: Arc<NodeContext>,
    /// Poked after this manager started a container: PLEG relists at once instead of at its
    /// next period, so a started pod's status does not wait up to a second (containerd 1.6 has
    /// no event stream to tell PLEG instead).
    changed: Arc<tokio::sync::Notify>,
}

/// Logs a pod event the way the kubelet records one (reason + message); in cluster mode these
/// also become API events.
macro_rules! pod_event {
    (Normal, $pod:expr, $reason:expr, $($msg:tt)+) => {
        info!(pod = %$pod, reason = $reason, $($msg)+)
    };
    (Warning, $pod:expr, $reason:expr, $($msg:tt)+) => {
        warn!(pod = %$pod, reason = $reason, $($msg)+)
    };
}

impl RuntimeManager {
    /// A manager over a CRI connection.
    pub fn new(cri: Cri, ctx: NodeContext) -> Self {
        Self {
            cri,
            ctx: Arc::new(ctx),
            changed: Arc::default(),
        }
    }

    /// What this manager pokes after it changed the runtime (for PLEG to relist on).
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// The event recorder (the pod workers record verdicts and kill failures with it).
    pub fn recorder(&self) -> &crate::recorder::Recorder {
        &self.ctx.recorder
    }

    /// Runs `cmd` in a running container with a timeout (exec probes; ExecSync).
    pub async fn run_in_container(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
        target: &str,
    ) -> Result<ExecOutcome, CriError> {
        match self.cri.exec_sync(container_id, cmd, timeout, target).await {
            Ok(r) => {
                let mut output = r.stdout;
                output.extend_from_slice(&r.stderr);
                Ok(ExecOutcome::Exited {
                    code: r.exit_code,
                    output,
                })
            }
            Err(CriError::Timeout { .. }) => Ok(ExecOutcome::TimedOut),
            Err(CriError::Call { source, .. })
                if source.code() == tonic::Code::DeadlineExceeded
                    || source.message().contains("timeout") =>
            {
                Ok(ExecOutcome::TimedOut)
            }
            Err(e) => Err(e),
        }
    }

    /// Brings the runtime in line with the pod spec once, from `state` (the runtime cache's
    /// view, newer than this worker's last sync).
    pub async fn sync_pod(
        &self,
        p: &DesiredPod,
        state: &PodRuntimeState,
        b: &mut PodBackoffs,
        unhealthy: &Unhealthy,
        unstarted: &Unstarted,
    ) -> Result<SyncOutcome, SyncError> {
        let target = p.pod_ref.to_string();
        let spec = p.pod.spec.clone().unwrap_or_default();
        let plan = actions::compute(&spec, state, unhealthy, unstarted);
        debug!(pod = %target, ?plan, "sync");

        let (rec, pod_ref) = (&self.ctx.recorder, &p.pod_ref);
        if plan.kill_pod && plan.create_sandbox.is_some() && !state.sandboxes.is_empty() {
            rec.pod(pod_ref, ev::sandbox_changed());
        }
        if plan.kill_pod {
            let grace = crate::pod::grace_period_seconds(&p.pod);
            self.kill_pod(state, Some(p), pod_ref, grace).await?;
        }
        for (id, name, reason) in &plan.containers_to_kill {
            pod_event!(Normal, target, "Killing", container = %name, "stopping container: {reason}");
            // A probe's verdict carries the kubelet's message and the probe-level grace.
            let (message, grace) = match unhealthy.get(id) {
                Some((_, g)) => (ev::killing_because(reason), *g),
                None => (ev::killing(name), None),
            };
            rec.container(pod_ref, field_path(Some(&spec), name), message);
            let grace = grace.unwrap_or_else(|| crate::pod::grace_period_seconds(&p.pod));
            self.kill_container(self.kill_of(p, &spec, id, name, grace, &state.pod_ip))
                .await?;
            // A container killed for a probe stays as the exited instance (restartCount,
            // lastState, logs --previous), as the kubelet's killContainer leaves it.
            if !unhealthy.contains_key(id) {
                self.cri.remove_container(id, &target).await?;
            }
        }
        if plan.finished {
            if plan.kill_pod {
                info!(pod = %target, "pod finished; its sandbox is stopped and nothing will be restarted");
            }
            return Ok(SyncOutcome::Finished);
        }

        // Volumes before the sandbox, as the kubelet's WaitForAttachAndMount; on every sync, so
        // changed objects and expiring tokens reach running pods.
        if let Err(e) = self.ctx.volumes.prepare(p).await {
            pod_event!(
                Warning,
                target,
                "FailedMount",
                "Unable to attach or mount volumes: {e}"
            );
            rec.pod(pod_ref, ev::failed_mount(&e));
            let inits = spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| (c, "PodInitializing"));
            // convertToAPIContainerStatuses' default: PodInitializing in a pod with init
            // containers, ContainerCreating otherwise.
            let regular = if spec.init_containers.as_ref().is_some_and(|v| !v.is_empty()) {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            for (c, reason) in inits.chain(spec.containers.iter().map(|c| (c, regular))) {
                if state.latest(&c.name).is_none() {
                    b.wait(&c.name, reason, format!("FailedMount: {e}"));
                }
            }
            return Err(e.into());
        }

        let mut pod_ip = state.pod_ip.clone();
        let sandbox_id = match (plan.create_sandbox, plan.sandbox_id.clone()) {
            (Some(attempt), _) => {
                let cfg = sandbox::sandbox_config(&self.ctx, p, attempt);
                let dir = sandbox::pod_logs_dir(&self.ctx, &p.pod_ref);
                tokio::fs::create_dir_all(&dir).await.map_err(|source| {
                    container::ConfigError::Io {
                        container: String::new(),
                        path: dir.clone(),
                        source,
                    }
                })?;
                let created = self.cri.run_pod_sandbox(cfg, &target).await;
                let id = created.inspect_err(|e| rec.pod(pod_ref, ev::failed_create_sandbox(e)))?;
                pod_event!(Normal, target, "SandboxCreated", sandbox = %id, attempt, "pod sandbox created");
                if let Some(s) = self.cri.pod_sandbox_status(&id, &target).await? {
                    pod_ip = s.network.map(|n| n.ip).unwrap_or_default();
                }
                id
            }
            (None, Some(id)) => id,
            (None, None) => return Ok(SyncOutcome::Synced),
        };
        let attempt = plan
            .create_sandbox
            .or_else(|| state.sandboxes.first().map(|s| s.attempt))
            .unwrap_or(0);
        let sandbox_cfg = sandbox::sandbox_config(&self.ctx, p, attempt);

        let mut wait: Option<Duration> = None;
        let mut queue: Vec<(usize, ContainerKind)> = Vec::new();
        if let Some(i) = plan.init_to_start {
            queue.push((i, ContainerKind::Init));
        }
        queue.extend(
            plan.sidecars_to_start
                .iter()
                .map(|i| (*i, ContainerKind::Init)),
        );
        queue.extend(
            plan.containers_to_start
                .iter()
                .map(|i| (*i, ContainerKind::Regular)),
        );
        // SyncPod step 7: ephemeral containers after the pod's own.
        queue.extend(
            plan.ephemeral_to_start
                .iter()
                .map(|i| (*i, ContainerKind::Ephemeral)),
        );
        let ephemerals = ephemeral::containers(&spec);
        let mut first_err = None;
        for (idx, kind) in queue {
            let c = match kind {
                ContainerKind::Init => spec.init_containers.as_ref().and_then(|v| v.get(idx)),
                ContainerKind::Regular => spec.containers.get(idx),
                ContainerKind::Ephemeral => ephemerals.get(idx),
            };
            let Some(c) = c else { continue };
            let prior = state.latest(&c.name);
            // targetContainerName: the target's running instance, whose PID namespace it joins.
            let pid_target = (kind == ContainerKind::Ephemeral)
                .then(|| ephemeral::target_name(&spec, &c.name))
                .flatten()
                .and_then(|t| state.latest(t))
                .filter(|v| v.state == ContainerState::Running)
                .map(|v| v.id.as_str());
            match self
                .start_container(
                    p,
                    (c, kind, pid_target),
                    prior,
                    &sandbox_id,
                    &sandbox_cfg,
                    &pod_ip,
                    b,
                    &target,
                )
                .await
            {
                Ok(None) => {}
                Ok(Some(d)) => wait = Some(wait.map_or(d, |w| w.min(d))),
                Err(e) => {
                    warn!(pod = %target, container = %c.name, error = %e, "container start failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        self.garbage_collect(p, state, &target).await;
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(wait.map_or(SyncOutcome::Synced, SyncOutcome::RequeueAfter))
    }

    /// Starts one container unless it is backing off; returns the remaining back-off if so.
    #[allow(clippy::too_many_arguments)]
    async fn start_container(
        &self,
        p: &DesiredPod,
        (c, kind, pid_target): (&Container, ContainerKind, Option<&str>),
        prior: Option<&state::ContainerView>,
        sandbox_id: &str,
        sandbox_cfg: &cri::PodSandboxConfig,
        pod_ip: &str,
        b: &mut PodBackoffs,
        target: &str,
    ) -> Result<Option<Duration>, SyncError> {
        let now = SystemTime::now();
        let key = format!(
            "{}_{}_{}_{}_{:x}",
            p.pod_ref.name,
            p.pod_ref.namespace,
            p.pod_ref.uid,
            c.name,
            labels::container_hash(c)
        );
        if let Some(prev) = prior.filter(|v| v.state == ContainerState::Exited) {
            let finished = prev.finished_at.unwrap_or(now);
            if let Some(left) = b.containers.remaining_since(&key, finished, now) {
                let delay = b.containers.get(&key).unwrap_or(left);
                b.wait(
                    &c.name,
                    "CrashLoopBackOff",
                    format!(
                        "back-off {delay:?} restarting failed container={} pod={}",
                        c.name, p.pod_ref.name
                    ),
                );
                let report = (key.clone(), finished);
                if b.reported.as_ref() == Some(&report) {
                    return Ok(Some(left));
                }
                b.reported = Some(report);
                pod_event!(Warning, target, "BackOff", container = %c.name,
                    "CrashLoopBackOff: back-off {delay:?} restarting failed container {} (exit code {}, {}); next try in {left:.1?}",
                    c.name, prev.exit_code, if prev.reason.is_empty() { "Error" } else { &prev.reason });
                self.container_event(p, c, ev::crash_back_off(&c.name, &p.pod_ref));
                return Ok(Some(left));
            }
            b.containers.next(&key, finished, now);
        }

        let image = c.image.clone().unwrap_or_default();
        let image_ref = match self
            .ensure_image(p, c, &image, sandbox_cfg, b, target)
            .await
        {
            Ok(Ok(r)) => r,
            Ok(Err(left)) => {
                self.container_event(p, c, ev::error("ImagePullBackOff"));
                b.wait(
                    &c.name,
                    "ImagePullBackOff",
                    format!("Back-off pulling image {image:?}"),
                );
                return Ok(Some(left));
            }
            Err(e) => {
                let reason = match &e {
                    SyncError::NeverPull { .. } => "ErrImageNeverPull",
                    _ => "ErrImagePull",
                };
                self.container_event(p, c, ev::error(reason));
                b.wait(&c.name, reason, e.to_string());
                return Err(e);
            }
        };
        let restart_count = match prior {
            Some(v) => v.restart_count + 1,
            None => self.restart_count_from_logs(p, &c.name).await,
        };
        // getImageUser: only the runAsNonRoot check without a runAsUser needs the image's user.
        let image_user = if security::needs_image_user(p, c) {
            let img = self.cri.image_status(&image_ref).await?;
            Some(security::ImageUser::of(img.as_ref()))
        } else {
            None
        };
        let mut cfg = container::container_config(
            &self.ctx,
            p,
            &container::ContainerInputs {
                container: c,
                kind,
                restart_count,
                image_ref,
                pod_ip: pod_ip.to_string(),
                image_user,
            },
        )
        .inspect_err(|e| {
            self.container_event(p, c, ev::error(e));
            b.wait(&c.name, "CreateContainerConfigError", e.to_string())
        })?;
        if let Some(t) = pid_target {
            ephemeral::target_pid_namespace(&mut cfg, t);
        }
        let id = self
            .cri
            .create_container(
                sandbox_id,
                cfg,
                sandbox_cfg.clone(),
                &format!("container {} of {target}", c.name),
            )
            .await
            .inspect_err(|e| {
                self.container_event(p, c, ev::error(e));
                b.wait(&c.name, "CreateContainerError", e.to_string())
            })?;
        pod_event!(Normal, target, "Created", container = %c.name, id = %id, restart_count, "created container {}", c.name);
        self.container_event(p, c, ev::created());
        if let Err(e) = self.cri.start_container(&id, target).await {
            pod_event!(Warning, target, "Failed", container = %c.name, "Error: {e}");
            // Runtime errors name the container by ID; users know it by name (and a per-ID
            // message would defeat the correlator's dedup).
            self.container_event(p, c, ev::error(e.to_string().replace(id.as_str(), &c.name)));
            b.wait(&c.name, "RunContainerError", e.to_string());
            return Err(e.into());
        }
        b.waiting.remove(&c.name);
        self.changed.notify_one();
        pod_event!(Normal, target, "Started", container = %c.name, id = %id, "started container {}", c.name);
        self.container_event(p, c, ev::started());
        let spec = p.pod.spec.clone().unwrap_or_default();
        let grace = crate::pod::grace_period_seconds(&p.pod);
        let kill = self.kill_of(p, &spec, &id, &c.name, grace, pod_ip);
        if let Err(msg) = self.post_start(&p.pod_ref, c, &id, kill).await {
            b.wait(&c.name, "PostStartHookError", msg.clone());
            return Err(SyncError::PostStartHook(msg));
        }
        Ok(None)
    }

    /// Records an event about container `c` of `p` (recordContainerEvent).
    fn container_event(&self, p: &DesiredPod, c: &Container, m: ev::Message) {
        let path = field_path(p.pod.spec.as_ref(), &c.name);
        self.ctx.recorder.container(&p.pod_ref, path, m);
    }

    /// EnsureImageExists: honours imagePullPolicy (default Always for `:latest` or untagged
    /// images, IfNotPresent otherwise) and the image pull back-off. `Err(delay)` inside `Ok` means
    /// ImagePullBackOff.
    async fn ensure_image(
        &self,
        p: &DesiredPod,
        c: &Container,
        image: &str,
        sandbox_cfg: &cri::PodSandboxConfig,
        b: &mut PodBackoffs,
        target: &str,
    ) -> Result<Result<String, Duration>, SyncError> {
        let policy = c
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| default_pull_policy(image).into());
        let present = if policy == "Always" {
            None
        } else {
            self.cri.image_status(image).await?
        };
        if let Some(img) = present {
            self.container_event(p, c, ev::already_present(image));
            return Ok(Ok(if img.id.is_empty() {
                image.to_string()
            } else {
                img.id
            }));
        }
        if policy == "Never" {
            pod_event!(Warning, target, "ErrImageNeverPull", container = %c.name, image, "image is not present with pull policy of Never");
            self.container_event(p, c, ev::never_pull(image));
            return Err(SyncError::NeverPull {
                image: image.into(),
            });
        }
        let key = format!("{}_{image}", p.pod_ref.uid);
        let now = SystemTime::now();
        if let Some(left) = b.images.remaining_since_update(&key, now) {
            pod_event!(Normal, target, "BackOff", container = %c.name, image,
                "ImagePullBackOff: back-off pulling image {image:?}; next try in {left:.1?}");
            self.container_event(p, c, ev::pull_back_off(image));
            return Ok(Err(left));
        }
        pod_event!(Normal, target, "Pulling", container = %c.name, image, "pulling image {image:?}");
        self.container_event(p, c, ev::pulling(image));
        let started = std::time::Instant::now();
        match self
            .cri
            .pull_image(image, sandbox_cfg.clone(), target)
            .await
        {
            Ok(r) => {
                b.images.reset(&key);
                pod_event!(Normal, target, "Pulled", container = %c.name, image,
                    "successfully pulled image {image:?} in {:.3?}", started.elapsed());
                self.container_event(p, c, ev::pulled(image, started.elapsed()));
                Ok(Ok(if r.is_empty() { image.to_string() } else { r }))
            }
            Err(source) => {
                b.images.next(&key, now, now);
                pod_event!(Warning, target, "Failed", container = %c.name, image, "failed to pull image {image:?}: {source}");
                self.container_event(p, c, ev::pull_failed(image, &source));
                Err(SyncError::Pull {
                    image: image.into(),
                    source,
                })
            }
        }
    }

    /// The kubelet's calcRestartCountByLogDir: with no record of a previous instance, continue
    /// after the highest `<n>.log` so logs are never overwritten.
    async fn restart_count_from_logs(&self, p: &DesiredPod, name: &str) -> u32 {
        let dir = sandbox::pod_logs_dir(&self.ctx, &p.pod_ref).join(name);
        let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
            return 0;
        };
        let mut highest: Option<u32> = None;
        while let Ok(Some(e)) = entries.next_entry().await {
            let n = e.file_name();
            if let Some(i) = n
                .to_string_lossy()
                .split('.')
                .next()
                .and_then(|s| s.parse().ok())
            {
                highest = highest.max(Some(i));
            }
        }
        highest.map_or(0, |m| m + 1)
    }

    /// Stops and removes everything the runtime has for `uid`, then its cgroup and directories.
    /// `grace` is the pod's grace period, or `None` for a pod whose spec is gone (the grace
    /// recorded on its containers applies, as the kubelet's restoreSpecsFromContainerLabels does).
    /// Returns the pod's state once stopped and before removal, when it could be read.
    pub async fn terminate_pod(
        &self,
        pod: &PodRef,
        desired: Option<&DesiredPod>,
        grace: Option<i64>,
    ) -> Result<Option<PodRuntimeState>, SyncError> {
        let (uid, target) = (pod.uid.as_str(), &pod.to_string());
        let state = state::load(&self.cri, uid, target).await?;
        let grace = grace.unwrap_or_else(|| {
            state
                .containers
                .iter()
                .filter_map(|c| c.grace)
                .max()
                .unwrap_or(30)
                .max(2)
        });
        self.kill_pod(&state, desired, pod, grace).await?;
        // The containers' end states (exit codes, finishedAt) are read before they are
        // removed, as the kubelet's SyncTerminatingPod does: the pod's final status needs them.
        let stopped = match state::load(&self.cri, uid, target).await {
            Ok(mut s) => {
                // The stopped sandbox no longer reports its IP (preserveDataFromBeforeStopping).
                s.pod_ip.clone_from(&state.pod_ip);
                Some(s)
            }
            Err(e) => {
                warn!(pod = %target, error = %e, "cannot read the stopped pod's state; its final status lacks the containers' end states");
                None
            }
        };
        for c in &state.containers {
            self.cri.remove_container(&c.id, target).await?;
        }
        for s in &state.sandboxes {
            self.cri.stop_pod_sandbox(&s.id, target).await?;
            self.cri.remove_pod_sandbox(&s.id, target).await?;
        }
        self.ctx.volumes.cleanup(uid).await;
        // Cgroup and directory removal walk the filesystem: off the async workers.
        let (ctx, uid_owned, target_owned) = (self.ctx.clone(), uid.to_owned(), target.clone());
        let log_dir = sandbox::pod_logs_dir(&self.ctx, pod);
        let cleaned = tokio::task::spawn_blocking(move || {
            for qos in [
                QosClass::Guaranteed,
                QosClass::Burstable,
                QosClass::BestEffort,
            ] {
                ctx.cm.remove_pod_cgroup(&uid_owned, qos);
            }
            let pod_dir = ctx.root_dir.join("pods").join(&uid_owned);
            for (dir, what) in [(pod_dir, "pod directory"), (log_dir, "pod log directory")] {
                if let Err(e) = std::fs::remove_dir_all(&dir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!(pod = %target_owned, dir = %dir.display(), error = %e, "cannot remove {what}");
                }
            }
        })
        .await;
        if let Err(e) = cleaned {
            warn!(pod = %target, error = %e, "pod cleanup task failed");
        }
        info!(pod = %target, "pod terminated: containers and sandboxes removed");
        Ok(stopped)
    }

    /// Keeps the newest exited instance of each container (for `logs --previous`) and removes
    /// older ones with their log files, and removes dead sandboxes left without containers
    /// (kubelet container GC with MaxPerPodContainer = 1), as of `state`.
    async fn garbage_collect(&self, p: &DesiredPod, state: &PodRuntimeState, target: &str) {
        let mut kept = std::collections::HashSet::new();
        let log_dir = sandbox::pod_logs_dir(&self.ctx, &p.pod_ref);
        for c in state
            .containers
            .iter()
            .filter(|c| c.state == ContainerState::Exited)
        {
            if kept.insert(c.name.clone()) {
                continue;
            }
            if let Err(e) = self.cri.remove_container(&c.id, target).await {
                debug!(pod = %target, error = %e, "container GC");
                continue;
            }
            let _ =
                tokio::fs::remove_file(log_dir.join(container::log_path(&c.name, c.restart_count)))
                    .await;
        }
        let newest = state.sandboxes.first().map(|s| s.id.clone());
        for s in state.sandboxes.iter().filter(|s| !s.ready) {
            let used = state
                .containers
                .iter()
                .any(|c| c.sandbox_id == s.id && kept.contains(&c.name));
            if Some(&s.id) != newest.as_ref() && !used {
                let _ = self.cri.remove_pod_sandbox(&s.id, target).await;
            }
        }
    }
}

/// Default pull policy (pkg/apis/core/v1/defaults.go): Always for `:latest` or no tag.
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

#[cfg(test)]
mod tests {
    use super::default_pull_policy;

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("busybox:1.35"), "IfNotPresent");
        assert_eq!(default_pull_policy("127.0.0.1:5000/x"), "Always");
        assert_eq!(default_pull_policy("127.0.0.1:5000/x:1"), "IfNotPresent");
        assert_eq!(default_pull_policy("x@sha256:abc"), "IfNotPresent");
    }
}
