//! What to do to bring a pod's runtime state to its spec: a pure function, unit-tested, in the
//! shape of the kubelet's computePodActions (kuberuntime_manager.go) and
//! ShouldContainerBeRestarted (pkg/kubelet/container/helpers.go).

use super::labels::container_hash;
use super::state::{ContainerState, PodRuntimeState};
use crate::pod::{RestartPolicy, container_policy, container_restarts};
use k8s_openapi::api::core::v1::{Container, PodSpec};

/// The plan for one sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodActions {
    /// Stop every container and sandbox first (sandbox changed, or the pod is done).
    pub kill_pod: bool,
    /// Create a sandbox with this attempt number.
    pub create_sandbox: Option<u32>,
    /// The ready sandbox to use when none is created.
    pub sandbox_id: Option<String>,
    /// Init container (index) to start next.
    pub init_to_start: Option<usize>,
    /// Sidecars (init indexes) to start again once the pod has initialized.
    pub sidecars_to_start: Vec<usize>,
    /// Regular containers (indexes) to start.
    pub containers_to_start: Vec<usize>,
    /// Ephemeral containers (indexes) to start: those never started; they are not restarted.
    pub ephemeral_to_start: Vec<usize>,
    /// Container instances to stop and remove first: (id, name, reason).
    pub containers_to_kill: Vec<(String, String, String)>,
    /// The pod has finished for good (terminal phase): nothing will run again.
    pub finished: bool,
}

/// A sidecar: an init container with restartPolicy Always (KEP-753). It starts in init order,
/// keeps running beside the regular containers and is restarted whenever it exits.
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// What a running sidecar means for initialization and whether it must be replaced.
enum SidecarCheck {
    /// Started (its startup probe, if any, passed): the next init container may go.
    Started,
    /// Running, its startup probe not passed yet: initialization waits.
    Starting,
    /// Replace it (spec changed, failed probe): (reason).
    Replace(String),
}

fn check_running_sidecar(
    c: &Container,
    v: &super::state::ContainerView,
    unhealthy: &super::Unhealthy,
    unstarted: &super::Unstarted,
) -> SidecarCheck {
    if v.hash.is_some_and(|h| h != container_hash(c)) {
        return SidecarCheck::Replace(format!("Init container {} definition changed", c.name));
    }
    if let Some((message, _)) = unhealthy.get(&v.id) {
        return SidecarCheck::Replace(format!("{message}, will be restarted"));
    }
    if unstarted.contains(&v.id) {
        return SidecarCheck::Starting;
    }
    SidecarCheck::Started
}

/// Computes the actions for `spec` given the runtime `state`; `unhealthy` names running
/// containers a failed liveness or startup probe condemns (runtime ID -> message), `unstarted`
/// running sidecars whose startup probe has not passed yet.
pub fn compute(
    spec: &PodSpec,
    state: &PodRuntimeState,
    unhealthy: &super::Unhealthy,
    unstarted: &super::Unstarted,
) -> PodActions {
    let policy = RestartPolicy::of(spec);
    let inits = spec.init_containers.as_deref().unwrap_or(&[]);
    let mut a = PodActions::default();

    let ready: Vec<_> = state.sandboxes.iter().filter(|s| s.ready).collect();
    let newest = state.sandboxes.first();
    let next_attempt = newest.map_or(0, |s| s.attempt + 1);
    let changed = match (newest, ready.len()) {
        (None, _) => true,
        (Some(_), n) if n > 1 => true,
        (Some(s), _) => !s.ready,
    };

    if changed {
        a.kill_pod = !state.is_empty();
        // A Never pod that already ran is not given a new sandbox: it is finished.
        if policy == RestartPolicy::Never && next_attempt != 0 && !state.containers.is_empty() {
            a.finished = true;
            return a;
        }
        let to_start: Vec<usize> = spec
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                !(container_policy(c, spec) == RestartPolicy::OnFailure
                    && state
                        .latest(&c.name)
                        .is_some_and(|v| v.state == ContainerState::Exited && v.exit_code == 0))
            })
            .map(|(i, _)| i)
            .collect();
        if to_start.is_empty() && inits.is_empty() {
            a.finished = true;
            return a;
        }
        a.create_sandbox = Some(next_attempt);
        if inits.is_empty() {
            a.containers_to_start = to_start;
        } else {
            a.init_to_start = Some(0);
        }
        return a;
    }
    a.sandbox_id = newest.map(|s| s.id.clone());
    // Ephemeral containers may start before initialization is done, each once only.
    a.ephemeral_to_start = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, e)| state.latest(&e.name).is_none())
        .map(|(i, _)| i)
        .collect();

    // Init containers run one at a time, in order, each to success. Once a regular container
    // exists, initialization is over (its records may have been garbage-collected).
    let regular_started = spec.containers.iter().any(|c| {
        state
            .latest(&c.name)
            .is_some_and(|v| matches!(v.state, ContainerState::Running | ContainerState::Created))
    });
    if !regular_started {
        for (i, ic) in inits.iter().enumerate() {
            let sidecar = is_sidecar(ic);
            match state.latest(&ic.name) {
                None => {
                    a.init_to_start = Some(i);
                    return a;
                }
                Some(v) => match v.state {
                    ContainerState::Running if sidecar => {
                        match check_running_sidecar(ic, v, unhealthy, unstarted) {
                            SidecarCheck::Started => continue,
                            SidecarCheck::Starting => return a,
                            SidecarCheck::Replace(why) => {
                                a.containers_to_kill
                                    .push((v.id.clone(), v.name.clone(), why));
                                a.init_to_start = Some(i);
                                return a;
                            }
                        }
                    }
                    // A sidecar is restarted whatever the pod's restart policy.
                    ContainerState::Exited if sidecar => {
                        a.init_to_start = Some(i);
                        return a;
                    }
                    ContainerState::Running => return a,
                    ContainerState::Exited if v.exit_code == 0 => continue,
                    ContainerState::Exited => {
                        if container_restarts(ic, spec, v.exit_code) {
                            a.init_to_start = Some(i);
                        } else {
                            a.kill_pod = true;
                            a.finished = true;
                        }
                        return a;
                    }
                    ContainerState::Created | ContainerState::Unknown => {
                        a.containers_to_kill.push((
                            v.id.clone(),
                            v.name.clone(),
                            "init container in unknown state".to_owned(),
                        ));
                        // No exit code: the container's own policy alone decides.
                        if container_policy(ic, spec) == RestartPolicy::Never {
                            a.kill_pod = true;
                            a.finished = true;
                        } else {
                            a.init_to_start = Some(i);
                        }
                        return a;
                    }
                },
            }
        }
    }

    let mut keep = 0;
    for (i, c) in spec.containers.iter().enumerate() {
        match state.latest(&c.name) {
            None => a.containers_to_start.push(i),
            Some(v) => match v.state {
                ContainerState::Running => {
                    if v.hash.is_some_and(|h| h != container_hash(c)) {
                        a.containers_to_kill.push((
                            v.id.clone(),
                            v.name.clone(),
                            "container definition changed".to_owned(),
                        ));
                        a.containers_to_start.push(i);
                    } else if let Some((message, _)) = unhealthy.get(&v.id) {
                        // computePodActions: a failed liveness or startup probe kills the
                        // container; it starts again unless its policy (the container's
                        // own, else the pod's; not the rules: there is no exit) is Never.
                        if container_policy(c, spec) == RestartPolicy::Never {
                            a.containers_to_kill.push((
                                v.id.clone(),
                                v.name.clone(),
                                message.clone(),
                            ));
                        } else {
                            let m = format!("{message}, will be restarted");
                            a.containers_to_kill.push((v.id.clone(), v.name.clone(), m));
                            a.containers_to_start.push(i);
                        }
                    } else {
                        keep += 1;
                    }
                }
                ContainerState::Created | ContainerState::Unknown => {
                    a.containers_to_kill.push((
                        v.id.clone(),
                        v.name.clone(),
                        "container never started".to_owned(),
                    ));
                    a.containers_to_start.push(i);
                }
                ContainerState::Exited => {
                    if container_restarts(c, spec, v.exit_code) {
                        a.containers_to_start.push(i);
                    }
                }
            },
        }
    }
    if keep == 0 && a.containers_to_start.is_empty() {
        // Sidecars never hold a pod whose regular containers are done.
        a.kill_pod = true;
        a.finished = true;
        return a;
    }
    if regular_started {
        // After initialization sidecars are kept running beside the regular containers.
        for (i, ic) in inits.iter().enumerate().filter(|(_, c)| is_sidecar(c)) {
            match state.latest(&ic.name) {
                None => a.sidecars_to_start.push(i),
                Some(v) => match v.state {
                    ContainerState::Exited => a.sidecars_to_start.push(i),
                    ContainerState::Running => {
                        if let SidecarCheck::Replace(why) =
                            check_running_sidecar(ic, v, unhealthy, unstarted)
                        {
                            a.containers_to_kill
                                .push((v.id.clone(), v.name.clone(), why));
                            a.sidecars_to_start.push(i);
                        }
                    }
                    ContainerState::Created | ContainerState::Unknown => {
                        let why = "init container in unknown state".to_owned();
                        a.containers_to_kill
                            .push((v.id.clone(), v.name.clone(), why));
                        a.sidecars_to_start.push(i);
                    }
                },
            }
        }
    }
    a
}

#[cfg(test)]
mod tests;
