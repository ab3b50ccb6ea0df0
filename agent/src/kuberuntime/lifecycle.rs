//! Lifecycle hooks (kubelet pkg/kubelet/lifecycle/handlers.go; kuberuntime_container.go
//! startContainer step 4, killContainer, executePreStopHook).
//!
//! Handlers: exec (CRI ExecSync without a deadline of its own, as the kubelet passes 0),
//! httpGet (the shared [`crate::httpget`] client, `User-Agent: kube-lifecycle/1.37`; any HTTP
//! answer completes the hook, since the kubelet looks only at the transport error) and sleep.
//!
//! postStart runs right after StartContainer and holds the pod's sync until it ends; a failure
//! kills the container (`FailedPostStartHook`, Killing "FailedPostStartHook"), which then waits
//! with reason `PostStartHookError`. preStop runs before StopContainer and is bounded by the
//! grace period; the whole seconds it took come off the grace StopContainer gets, which is at
//! least [`MINIMUM_GRACE_PERIOD`]. A container whose spec is gone (an orphan after an agent
//! restart) gets its preStop back from the annotations written at creation, as the kubelet's
//! restoreSpecsFromContainerLabels. Killing a whole pod stops the regular containers first, all
//! at once, then the sidecars one by one in reverse order with what is left of the grace (the
//! kubelet's terminationOrdering, simplified: a sidecar's preStop runs when its turn comes).

use super::state::{self, ContainerState, PodRuntimeState};
use super::{CriError, RuntimeManager, SyncError, actions, labels};
use crate::httpget;
use crate::pod::DesiredPod;
use crate::pod::PodRef;
use crate::recorder::field_path;
use crate::recorder::reasons as ev;
use k8s_openapi::api::core::v1::{Container, ContainerPort, Lifecycle, LifecycleHandler};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The shortest grace StopContainer is given (kuberuntime minimumGracePeriodInSeconds): a
/// container always has a moment to shut down before SIGKILL.
pub const MINIMUM_GRACE_PERIOD: i64 = 2;
/// The kubelet's User-Agent for httpGet hooks (`kube-lifecycle/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-lifecycle/1.37";

/// One container to stop (killContainer's arguments).
#[derive(Debug, Clone)]
pub struct Kill {
    /// The pod.
    pub pod: PodRef,
    /// Runtime container ID.
    pub id: String,
    /// Container name.
    pub name: String,
    /// The spec, when the pod's spec is known; otherwise restored from annotations.
    pub container: Option<Container>,
    /// Grace period, seconds, before the preStop hook takes its part.
    pub grace: i64,
    /// The pod's IP (httpGet hooks without a host).
    pub pod_ip: String,
    /// The container's field path for events.
    pub field_path: String,
}

/// `name_namespace(uid)`, the kubelet's format.Pod.
fn shown(pod: &PodRef) -> String {
    format!("{}_{}({})", pod.name, pod.namespace, pod.uid)
}

impl RuntimeManager {
    /// Runs one lifecycle handler of container `c` (runtime ID `id`); `Err` carries the
    /// kubelet's message (handlerRunner.Run).
    pub(super) async fn run_hook(
        &self,
        pod: &PodRef,
        c: &Container,
        id: &str,
        h: &LifecycleHandler,
        pod_ip: &str,
    ) -> Result<(), String> {
        let who = format!("for Container {:?} in Pod {:?}", c.name, shown(pod));
        if let Some(e) = &h.exec {
            let cmd = e.command.clone().unwrap_or_default();
            let shown_cmd = format!("[{}]", cmd.join(" "));
            let target = pod.to_string();
            let (err, output) = match self
                .cri
                .exec_sync(id, cmd.clone(), Duration::ZERO, &target)
                .await
            {
                Ok(r) if r.exit_code == 0 => return Ok(()),
                Ok(r) => {
                    // The CRI client's CodeExitError, then stdout and stderr as RunInContainer
                    // appends them.
                    let err = format!(
                        "command '{}' exited with {}: {}",
                        cmd.join(" "),
                        r.exit_code,
                        String::from_utf8_lossy(&r.stderr)
                    );
                    let mut out = r.stdout;
                    out.extend_from_slice(&r.stderr);
                    (err, out)
                }
                Err(e) => (e.to_string(), Vec::new()),
            };
            let output = String::from_utf8_lossy(&output);
            return Err(format!(
                "Exec lifecycle hook ({shown_cmd}) {who} failed - error: {err}, message: {output:?}"
            ));
        }
        if let Some(g) = &h.http_get {
            let path = g.path.clone().unwrap_or_default();
            let result = async {
                let port = httpget::resolve_port(&g.port, c)?;
                if g.host.as_deref().unwrap_or_default().is_empty() && pod_ip.is_empty() {
                    return Err("failed to find networking container".to_owned());
                }
                let (url, headers) = httpget::request_for(g, pod_ip, port);
                httpget::get(&url, &headers, USER_AGENT)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("Get {:?}: {e}", url.to_string()))
            }
            .await;
            return result
                .map_err(|e| format!("HTTP lifecycle hook ({path}) {who} failed - error: {e}"));
        }
        if let Some(s) = &h.sleep {
            // Dropped (and so ended early) when the caller's grace runs out or the sync is
            // cancelled, as runSleepHandler returns on its context.
            tokio::time::sleep(Duration::from_secs(u64::try_from(s.seconds).unwrap_or(0))).await;
            return Ok(());
        }
        Err("Cannot run handler: invalid handler: no exec, httpGet or sleep".to_owned())
    }

    /// Runs container `c`'s postStart hook, if any; on failure records FailedPostStartHook,
    /// kills the container with the pod's grace and returns the hook's message.
    pub(super) async fn post_start(
        &self,
        pod: &PodRef,
        c: &Container,
        id: &str,
        k: Kill,
    ) -> Result<(), String> {
        let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return Ok(());
        };
        let Err(msg) = self.run_hook(pod, c, id, h, &k.pod_ip).await else {
            return Ok(());
        };
        warn!(pod = %pod, container = %c.name, error = %msg, "PostStartHook failed");
        let path = k.field_path.clone();
        self.ctx
            .recorder
            .container(pod, path.clone(), ev::failed_post_start_hook());
        self.ctx
            .recorder
            .container(pod, path, ev::killing_because("FailedPostStartHook"));
        if let Err(e) = self.kill_container(k).await {
            warn!(pod = %pod, container = %c.name, error = %e, "failed to kill container after its PostStartHook failed");
        }
        Err(msg)
    }

    /// killContainer without its event (the caller records Killing): the preStop hook within
    /// the grace period, then StopContainer with what is left (at least 2 s).
    pub(super) async fn kill_container(&self, k: Kill) -> Result<(), CriError> {
        let target = k.pod.to_string();
        let container = match k.container {
            Some(c) => Some(c),
            None => self.restore_spec(&k.id, &k.name, &target).await,
        };
        let mut grace = k.grace;
        if let Some(c) = container.as_ref()
            && let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref())
            && grace > 0
        {
            debug!(pod = %target, container = %k.name, "running preStop hook");
            let started = Instant::now();
            let limit = Duration::from_secs(u64::try_from(grace).unwrap_or(0));
            let hook = self.run_hook(&k.pod, c, &k.id, h, &k.pod_ip);
            match tokio::time::timeout(limit, hook).await {
                Ok(Ok(())) => debug!(pod = %target, container = %k.name, "preStop hook completed"),
                Ok(Err(msg)) => {
                    warn!(pod = %target, container = %k.name, error = %msg, "PreStop hook failed");
                    let path = k.field_path.clone();
                    self.ctx
                        .recorder
                        .container(&k.pod, path, ev::failed_pre_stop_hook());
                }
                Err(_) => {
                    info!(pod = %target, container = %k.name, grace, "PreStop hook not completed in grace period");
                }
            }
            // Whole seconds, truncated, as executePreStopHook returns them.
            grace -= i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
        }
        let grace = grace.max(MINIMUM_GRACE_PERIOD);
        info!(pod = %target, container = %k.name, grace, "killing container with a grace period");
        self.cri.stop_container(&k.id, grace, &target).await
    }

    /// The parts of a container's spec that killing it needs (name, ports, preStop), from
    /// the annotations written at creation; `None` if the runtime has no status for it.
    async fn restore_spec(&self, id: &str, name: &str, target: &str) -> Option<Container> {
        let status = match self.cri.container_status(id, target).await {
            Ok(Some(s)) => s,
            Ok(None) => return None,
            Err(e) => {
                debug!(pod = %target, container = %name, error = %e, "cannot restore the container's spec");
                return None;
            }
        };
        let a = &status.annotations;
        let pre_stop: Option<LifecycleHandler> = a
            .get(labels::PRE_STOP_HANDLER)
            .and_then(|j| serde_json::from_str(j).ok());
        let ports: Option<Vec<ContainerPort>> = a
            .get(labels::CONTAINER_PORTS)
            .and_then(|j| serde_json::from_str(j).ok());
        Some(Container {
            name: name.to_owned(),
            ports,
            lifecycle: pre_stop.map(|p| Lifecycle {
                pre_stop: Some(p),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// What killing container `name` (runtime ID `id`) of `p` needs; the pod IP falls back to
    /// the node's for a host-network pod.
    pub(super) fn kill_of(
        &self,
        p: &DesiredPod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        id: &str,
        name: &str,
        grace: i64,
        pod_ip: &str,
    ) -> Kill {
        let container = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .cloned();
        Kill {
            pod: p.pod_ref.clone(),
            id: id.to_owned(),
            name: name.to_owned(),
            container,
            grace,
            pod_ip: self.hook_ip(&p.pod, pod_ip),
            field_path: field_path(Some(spec), name),
        }
    }

    /// The IP hooks reach the pod on: the sandbox's, or the node's for host networking.
    fn hook_ip(&self, pod: &k8s_openapi::api::core::v1::Pod, pod_ip: &str) -> String {
        if pod_ip.is_empty() && crate::pod::host_network(pod) {
            self.ctx.host_ip.clone()
        } else {
            pod_ip.to_owned()
        }
    }

    /// Stops every running container (in parallel, each with its preStop hook and the grace
    /// period) and every ready sandbox of the pod. `p` is `None` for a pod whose spec is gone:
    /// the containers' annotations give their preStop hooks back.
    pub(super) async fn kill_pod(
        &self,
        state: &PodRuntimeState,
        p: Option<&DesiredPod>,
        pod: &PodRef,
        grace: i64,
    ) -> Result<(), SyncError> {
        let target = &pod.to_string();
        let spec = p.and_then(|p| p.pod.spec.as_ref());
        let sidecars: Vec<&str> = spec
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| actions::is_sidecar(c))
            .map(|c| c.name.as_str())
            .collect();
        let live: Vec<&state::ContainerView> = state
            .containers
            .iter()
            .filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Unknown))
            .collect();
        // Regular containers first, all at once; then sidecars one by one in reverse order,
        // each with what is left of the grace (the kubelet's terminationOrdering).
        let started = std::time::Instant::now();
        let (side, main): (Vec<_>, Vec<_>) = live
            .into_iter()
            .partition(|c| sidecars.contains(&c.name.as_str()));
        self.kill_containers(main, state, p, pod, grace).await?;
        for name in sidecars.iter().rev() {
            let left = grace - i64::try_from(started.elapsed().as_secs()).unwrap_or(i64::MAX);
            let these = side.iter().filter(|c| c.name == *name).copied().collect();
            self.kill_containers(these, state, p, pod, left.max(0))
                .await?;
        }
        for s in state.sandboxes.iter().filter(|s| s.ready) {
            self.cri.stop_pod_sandbox(&s.id, target).await?;
        }
        Ok(())
    }

    /// Kills `containers` of the pod in parallel, each with its preStop hook and `grace`.
    async fn kill_containers(
        &self,
        containers: Vec<&state::ContainerView>,
        state: &PodRuntimeState,
        p: Option<&DesiredPod>,
        pod: &PodRef,
        grace: i64,
    ) -> Result<(), SyncError> {
        let target = &pod.to_string();
        let spec = p.and_then(|p| p.pod.spec.as_ref());
        let mut set = tokio::task::JoinSet::new();
        for c in containers {
            info!(pod = %target, reason = "Killing", container = %c.name, "stopping container {}", c.name);
            let path = field_path(spec, &c.name);
            self.ctx.recorder.container(pod, path, ev::killing(&c.name));
            let kill = match (p, spec) {
                (Some(p), Some(spec)) => {
                    self.kill_of(p, spec, &c.id, &c.name, grace, &state.pod_ip)
                }
                _ => Kill {
                    pod: pod.clone(),
                    id: c.id.clone(),
                    name: c.name.clone(),
                    container: None,
                    grace,
                    pod_ip: state.pod_ip.clone(),
                    field_path: field_path(None, &c.name),
                },
            };
            let rm = self.clone();
            set.spawn(async move { rm.kill_container(kill).await });
        }
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            if let Ok(Err(e)) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
