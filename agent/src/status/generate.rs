//! A pod's API status from its spec and runtime state: the kubelet's generateAPIPodStatus,
//! getPhase and convertToAPIContainerStatuses (pkg/kubelet/kubelet_pods.go), as pure functions.

use crate::kuberuntime::actions::is_sidecar;
use crate::kuberuntime::state::{ContainerState, ContainerView, PodRuntimeState};
use crate::pod::{DesiredPod, QosClass, container_restarts, qos_class};
use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::HashMap;
use std::time::SystemTime;

/// Why containers cannot start: container name -> (reason, message).
pub type Waiting = HashMap<String, (String, String)>;

/// Node facts the status carries.
#[derive(Debug, Clone, Default)]
pub struct StatusContext {
    /// The node's IP (`status.hostIP`).
    pub host_ip: String,
    /// When the agent first saw the pod (`status.startTime`).
    pub start_time: Option<SystemTime>,
    /// Probe results: `ready` and `started` of the containers (none: running means both).
    pub probes: Option<crate::prober::results::ProbeResults>,
    /// The pod is terminated for good (getPhase's podIsTerminal): its containers are never
    /// restarted, so an API pod whose containers all stopped is Succeeded or Failed.
    pub terminal: bool,
}

/// metav1.Time: whole seconds on the wire (RFC 3339 without fraction), as the API server keeps
/// it; sub-second parts would make every status differ from what the API stores.
fn time(t: SystemTime) -> Option<Time> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    k8s_openapi::jiff::Timestamp::new(i64::try_from(d.as_secs()).ok()?, 0)
        .ok()
        .map(Time)
}

/// The pod object with its status, as /pods shows it.
pub fn pod_with_status(
    p: &DesiredPod,
    rt: &PodRuntimeState,
    waiting: &Waiting,
    ctx: &StatusContext,
) -> Pod {
    let mut pod = p.pod.clone();
    pod.status = Some(pod_status(p, rt, waiting, ctx));
    pod
}

/// The status itself.
pub fn pod_status(
    p: &DesiredPod,
    rt: &PodRuntimeState,
    waiting: &Waiting,
    ctx: &StatusContext,
) -> PodStatus {
    let spec = p.pod.spec.clone().unwrap_or_default();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let mut init_statuses: Vec<ContainerStatus> = inits
        .iter()
        .map(|c| container_status(c, rt, waiting, true, true))
        .collect();
    let mut statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, rt, waiting, false, !inits.is_empty()))
        .collect();
    let sidecars: Vec<Container> = inits.iter().filter(|c| is_sidecar(c)).cloned().collect();
    if let Some(probes) = &ctx.probes {
        probes.update_pod_status(&spec, &mut statuses);
        probes.update_statuses(&sidecars, &mut init_statuses);
    }
    // A sidecar counts as initialized once started (its startup probe passed), a regular init
    // container once it succeeded.
    let init_done = |c: &Container, s: &ContainerStatus| {
        if is_sidecar(c) {
            return s.started == Some(true);
        }
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    };
    // The names the conditions' messages list (Go's %s of a []string: "[a b]").
    let listed = |names: Vec<&str>| format!("[{}]", names.join(" "));
    let incomplete: Vec<&str> = inits
        .iter()
        .zip(&init_statuses)
        .filter(|(c, s)| !init_done(c, s))
        .map(|(c, _)| c.name.as_str())
        .collect();
    let unready: Vec<&str> = inits
        .iter()
        .zip(&init_statuses)
        .filter(|(c, s)| is_sidecar(c) && !s.ready)
        .map(|(c, _)| c.name.as_str())
        .chain(
            statuses
                .iter()
                .filter(|s| !s.ready)
                .map(|s| s.name.as_str()),
        )
        .collect();
    let initialized = incomplete.is_empty()
        || statuses
            .iter()
            .any(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()));
    // The kubelet leaves static pods' phase to the restart policy (kubernetes#116484).
    let terminal = ctx.terminal && p.is_api();
    let phase = phase(&spec, &init_statuses, &statuses, initialized, terminal);
    // Sidecars' readiness counts for the pod's (KEP-753).
    let sidecars_ready = inits
        .iter()
        .zip(&init_statuses)
        .all(|(c, s)| !is_sidecar(c) || s.ready);
    let ready = phase == "Running" && statuses.iter().all(|s| s.ready) && sidecars_ready;
    let gates_unready = readiness_gates_unready(p, &spec);
    let cond = |type_: &str, ok: bool, reason: Option<&str>| PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok)
            .then(|| reason.unwrap_or_default().to_string())
            .filter(|r| !r.is_empty()),
        last_transition_time: ctx.start_time.and_then(time),
        ..Default::default()
    };
    // GenerateContainersReadyCondition: a finished pod's containers are not ready because it
    // completed or failed; otherwise the message names the unready ones.
    let containers_ready = |type_: &str| match phase {
        "Succeeded" => cond(type_, false, Some("PodCompleted")),
        "Failed" => cond(type_, false, Some("PodFailed")),
        _ => PodCondition {
            message: (!ready && !unready.is_empty()).then(|| {
                format!(
                    "containers with unready status: {}",
                    listed(unready.clone())
                )
            }),
            ..cond(type_, ready, Some("ContainersNotReady"))
        },
    };
    let ready_condition = if ready && !gates_unready.is_empty() {
        PodCondition {
            message: Some(gates_unready.join(", ")),
            ..cond("Ready", false, Some("ReadinessGatesNotReady"))
        }
    } else {
        containers_ready("Ready")
    };
    let initialized_condition = PodCondition {
        message: (!initialized && !incomplete.is_empty()).then(|| {
            format!(
                "containers with incomplete status: {}",
                listed(incomplete.clone())
            )
        }),
        ..cond("Initialized", initialized, Some("ContainersNotInitialized"))
    };
    let mut conditions = vec![
        cond(
            "PodReadyToStartContainers",
            rt.sandboxes.iter().any(|s| s.ready),
            None,
        ),
        initialized_condition,
        ready_condition,
        containers_ready("ContainersReady"),
        cond("PodScheduled", true, None),
    ];
    // Conditions others own stay as the API server holds them (generateAPIPodStatus).
    conditions.extend(p.external_conditions().cloned());
    let pod_ip = if rt.pod_ip.is_empty() && crate::pod::host_network(&p.pod) {
        ctx.host_ip.clone()
    } else {
        rt.pod_ip.clone()
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(ctx.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: ctx.host_ip.clone(),
        }]),
        pod_ip: (!pod_ip.is_empty()).then(|| pod_ip.clone()),
        pod_ips: (!pod_ip.is_empty()).then(|| vec![PodIP { ip: pod_ip }]),
        start_time: ctx.start_time.and_then(time),
        qos_class: Some(
            match qos_class(&p.pod) {
                QosClass::Guaranteed => "Guaranteed",
                QosClass::Burstable => "Burstable",
                QosClass::BestEffort => "BestEffort",
            }
            .into(),
        ),
        container_statuses: Some(statuses),
        init_container_statuses: (!inits.is_empty()).then_some(init_statuses),
        ephemeral_container_statuses: super::ephemeral::statuses(&spec, rt, waiting),
        ..Default::default()
    }
}

/// GeneratePodReadyCondition's readiness gate check: one message per gate whose condition is
/// missing or not True.
fn readiness_gates_unready(
    p: &DesiredPod,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Vec<String> {
    let held: Vec<&PodCondition> = p.external_conditions().collect();
    spec.readiness_gates
        .iter()
        .flatten()
        .filter_map(|g| {
            let t = &g.condition_type;
            match held.iter().find(|c| &c.type_ == t) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {t:?} does not exist."
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {t:?} is not \"True\", but {}",
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect()
}

/// getPhase (kubelet_pods.go, ContainerRestartRules on): init containers first, then the
/// running/waiting/stopped counts, a stopped container counting as restarting when its rules
/// and policies (the container's own, else the pod's) would start it again.
fn phase(
    spec: &PodSpec,
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
    initialized: bool,
    terminal: bool,
) -> &'static str {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    // The exit code of a stopped container: its current state's, or, waiting to restart, its
    // last state's (and whether that is the current one).
    let exited = |s: &ContainerStatus| -> Option<(i32, bool)> {
        let st = s.state.as_ref()?;
        if let Some(t) = &st.terminated {
            return Some((t.exit_code, true));
        }
        st.waiting.as_ref()?;
        let last = s.last_state.as_ref()?.terminated.as_ref()?;
        Some((last.exit_code, false))
    };
    // A sidecar's exit never fails the pod: it is restarted.
    let init_failed_for_good = inits.iter().zip(init_statuses).any(|(c, s)| {
        !is_sidecar(c)
            && exited(s).is_some_and(|(code, _)| code != 0 && !container_restarts(c, spec, code))
    });
    if init_failed_for_good {
        return "Failed";
    }
    if !inits.is_empty() && !initialized {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut for_good, mut succeeded) = (0, 0, 0, 0, 0);
    for (c, s) in spec.containers.iter().zip(statuses) {
        if s.state.as_ref().is_some_and(|st| st.running.is_some()) {
            running += 1;
        } else if let Some((code, current)) = exited(s) {
            stopped += 1;
            if !container_restarts(c, spec, code) {
                for_good += 1;
            }
            if current && code == 0 {
                succeeded += 1;
            }
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped == 0 {
        "Pending"
    } else if !terminal && stopped != for_good {
        // At least one container is on its way back.
        "Running"
    } else if stopped == succeeded {
        "Succeeded"
    } else {
        "Failed"
    }
}

fn api_state(v: &ContainerView) -> ApiState {
    match v.state {
        ContainerState::Running => ApiState {
            running: Some(ContainerStateRunning {
                started_at: v.started_at.and_then(time),
            }),
            ..Default::default()
        },
        ContainerState::Exited => ApiState {
            terminated: Some(ContainerStateTerminated {
                exit_code: v.exit_code,
                reason: Some(if v.reason.is_empty() {
                    if v.exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .to_string()
                } else {
                    v.reason.clone()
                }),
                message: (!v.message.is_empty()).then(|| v.message.clone()),
                started_at: v.started_at.and_then(time),
                finished_at: v.finished_at.and_then(time),
                container_id: Some(format!("containerd://{}", v.id)),
                ..Default::default()
            }),
            ..Default::default()
        },
        ContainerState::Created | ContainerState::Unknown => ApiState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        },
    }
}

/// The state of a container not started yet: PodInitializing in a pod with init containers,
/// else ContainerCreating (convertToAPIContainerStatuses' default).
fn not_started(has_inits: bool) -> ApiState {
    let reason = if has_inits {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: None,
        }),
        ..Default::default()
    }
}

/// One container's status; `has_inits` says the pod has init containers, whose containers
/// not yet created wait as PodInitializing (convertToAPIContainerStatuses' default).
pub(super) fn container_status(
    c: &Container,
    rt: &PodRuntimeState,
    waiting: &Waiting,
    init: bool,
    has_inits: bool,
) -> ContainerStatus {
    let latest = rt.latest(&c.name);
    let why = waiting.get(&c.name);
    // A container waiting to (re)start shows Waiting with the reason, its last run in lastState.
    let (state, last) = match (latest, why) {
        // A sidecar restarts like a regular container, so it waits the same way.
        (Some(v), Some((reason, message)))
            if v.state == ContainerState::Exited && (!init || is_sidecar(c)) =>
        {
            (
                ApiState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: Some(message.clone()),
                    }),
                    ..Default::default()
                },
                Some(api_state(v)),
            )
        }
        // Created, not started yet: waits as one not created yet (the kubelet shows an empty
        // Waiting that a relist seldom catches; an event-driven PLEG sees the gap between
        // CreateContainer and StartContainer, and readers expect PodInitializing there).
        (Some(v), _) if v.state == ContainerState::Created => {
            (not_started(has_inits), rt.previous(&c.name).map(api_state))
        }
        (Some(v), _) => (api_state(v), rt.previous(&c.name).map(api_state)),
        (None, Some((reason, message))) => (
            ApiState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: Some(message.clone()),
                }),
                ..Default::default()
            },
            None,
        ),
        (None, None) => (not_started(has_inits), None),
    };
    let running = state.running.is_some();
    // An init container that ran to completion is ready (the prober manager's UpdatePodStatus);
    // a sidecar is ready as a regular container is.
    let ready = if init && !is_sidecar(c) {
        state.terminated.as_ref().is_some_and(|t| t.exit_code == 0)
    } else {
        running
    };
    ContainerStatus {
        name: c.name.clone(),
        ready,
        started: Some(running),
        restart_count: latest.map_or(0, |v| v.restart_count as i32),
        image: c.image.clone().unwrap_or_default(),
        image_id: latest.map(|v| v.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|v| format!("containerd://{}", v.id)),
        state: Some(state),
        last_state: Some(last.unwrap_or_default()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kuberuntime::state::SandboxView;
    use std::path::Path;

    fn pod(policy: &str) -> DesiredPod {
        let text = format!(
            "metadata: {{name: p}}\nspec:\n  restartPolicy: {policy}\n  containers:\n  - {{name: a, image: busybox:1.35}}\n"
        );
        crate::config::manifest::decode(Path::new("/m/p.yaml"), text.as_bytes(), "n")
            .expect("valid")
            .pod
    }

    fn view(state: ContainerState, exit: i32, restarts: u32) -> ContainerView {
        ContainerView {
            id: format!("id{restarts}"),
            name: "a".into(),
            restart_count: restarts,
            state,
            created_at: i64::from(restarts),
            exit_code: exit,
            started_at: Some(SystemTime::UNIX_EPOCH),
            finished_at: None,
            reason: String::new(),
            message: String::new(),
            image: String::new(),
            image_ref: "sha256:abc".into(),
            hash: None,
            grace: None,
            sandbox_id: "sb".into(),
        }
    }

    fn rt(containers: Vec<ContainerView>) -> PodRuntimeState {
        PodRuntimeState {
            sandboxes: vec![SandboxView {
                id: "sb".into(),
                attempt: 0,
                ready: true,
                created_at: 0,
            }],
            containers,
            pod_ip: "10.89.1.5".into(),
        }
    }

    fn phase_of(policy: &str, cs: Vec<ContainerView>, waiting: &Waiting) -> String {
        let p = pod(policy);
        pod_status(&p, &rt(cs), waiting, &StatusContext::default())
            .phase
            .unwrap_or_default()
    }

    #[test]
    fn phases_follow_get_phase() {
        let none = Waiting::new();
        assert_eq!(phase_of("Always", vec![], &none), "Pending");
        assert_eq!(
            phase_of("Always", vec![view(ContainerState::Running, 0, 0)], &none),
            "Running"
        );
        assert_eq!(
            phase_of("Never", vec![view(ContainerState::Exited, 0, 0)], &none),
            "Succeeded"
        );
        assert_eq!(
            phase_of("Never", vec![view(ContainerState::Exited, 2, 0)], &none),
            "Failed"
        );
        assert_eq!(
            phase_of("OnFailure", vec![view(ContainerState::Exited, 0, 0)], &none),
            "Succeeded"
        );
        let crash: Waiting = [(
            "a".to_string(),
            ("CrashLoopBackOff".to_string(), "back-off".to_string()),
        )]
        .into();
        assert_eq!(
            phase_of("Always", vec![view(ContainerState::Exited, 1, 3)], &crash),
            "Running"
        );
    }

    #[test]
    fn a_terminated_api_pod_ends_succeeded_or_failed_whatever_its_restart_policy() {
        let terminal = StatusContext {
            terminal: true,
            ..Default::default()
        };
        let phase = |p: &DesiredPod, exit: i32| {
            let rt = rt(vec![view(ContainerState::Exited, exit, 0)]);
            pod_status(p, &rt, &Waiting::new(), &terminal)
                .phase
                .unwrap_or_default()
        };
        let mut api = pod("Always");
        api.source = crate::pod::PodSource::Api;
        assert_eq!(phase(&api, 0), "Succeeded");
        assert_eq!(phase(&api, 137), "Failed");
        // Static pods keep the restart policy's answer (kubernetes#116484).
        assert_eq!(phase(&pod("Always"), 137), "Running");
    }

    #[test]
    fn crash_looping_container_shows_waiting_with_last_state() {
        let p = pod("Always");
        let crash: Waiting = [(
            "a".to_string(),
            ("CrashLoopBackOff".to_string(), "back-off 20s".to_string()),
        )]
        .into();
        let st = pod_status(
            &p,
            &rt(vec![view(ContainerState::Exited, 1, 2)]),
            &crash,
            &StatusContext::default(),
        );
        let cs = &st.container_statuses.expect("statuses")[0];
        assert_eq!(cs.restart_count, 2);
        let waiting = cs
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .expect("waiting");
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("last");
        assert_eq!(last.exit_code, 1);
        assert_eq!(last.container_id.as_deref(), Some("containerd://id2"));
        assert!(!cs.ready);
    }

    #[test]
    fn running_pod_is_ready_with_ips() {
        let p = pod("Always");
        let ctx = StatusContext {
            probes: None,
            host_ip: "192.0.2.1".into(),
            start_time: Some(SystemTime::UNIX_EPOCH),
            ..Default::default()
        };
        let st = pod_status(
            &p,
            &rt(vec![view(ContainerState::Running, 0, 0)]),
            &Waiting::new(),
            &ctx,
        );
        assert_eq!(st.pod_ip.as_deref(), Some("10.89.1.5"));
        assert_eq!(st.host_ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
        let ready = st
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(ready.status, "True");
        let cs = &st.container_statuses.expect("statuses")[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("containerd://id0"));
    }

    #[test]
    fn ephemeral_containers_have_statuses_but_no_say_in_readiness() {
        let mut p = pod("Always");
        let eph = |n: &str| k8s_openapi::api::core::v1::EphemeralContainer {
            name: n.into(),
            image: Some("busybox:1.35".into()),
            ..Default::default()
        };
        let spec = p.pod.spec.as_mut().expect("spec");
        spec.ephemeral_containers = Some(vec![eph("d"), eph("e")]);
        let ctx = StatusContext {
            probes: None,
            host_ip: "192.0.2.1".into(),
            start_time: Some(SystemTime::UNIX_EPOCH),
            ..Default::default()
        };
        let mut d = view(ContainerState::Exited, 1, 0);
        d.name = "d".into();
        d.id = "idd".into();
        let st = pod_status(
            &p,
            &rt(vec![view(ContainerState::Running, 0, 0), d]),
            &Waiting::new(),
            &ctx,
        );
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let es = st.ephemeral_container_statuses.expect("ephemeral statuses");
        assert_eq!(es.len(), 2);
        let term = es[0].state.as_ref().and_then(|s| s.terminated.as_ref());
        assert_eq!(term.map(|t| t.exit_code), Some(1));
        assert_eq!(es[0].container_id.as_deref(), Some("containerd://idd"));
        assert_eq!(es[0].image, "busybox:1.35");
        assert!(!es[0].ready && es[0].started.is_none());
        let waiting = es[1].state.as_ref().and_then(|s| s.waiting.as_ref());
        assert_eq!(
            waiting.and_then(|w| w.reason.as_deref()),
            Some("ContainerCreating")
        );
        let ready = st.conditions.iter().flatten().find(|c| c.type_ == "Ready");
        assert_eq!(ready.map(|c| c.status.as_str()), Some("True"));
    }

    #[test]
    fn a_running_sidecar_initializes_the_pod_and_its_exit_fails_nothing() {
        let text = "metadata: {name: p}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - {name: s, image: busybox:1.35, restartPolicy: Always}\n  containers:\n  - {name: a, image: busybox:1.35}\n";
        let p = crate::config::manifest::decode(Path::new("/m/p.yaml"), text.as_bytes(), "n")
            .expect("valid")
            .pod;
        let mut side = view(ContainerState::Running, 0, 0);
        side.name = "s".into();
        side.id = "side".into();
        let st = pod_status(
            &p,
            &rt(vec![side.clone(), view(ContainerState::Running, 0, 0)]),
            &Waiting::new(),
            &StatusContext::default(),
        );
        assert_eq!(st.phase.as_deref(), Some("Running"));
        let cond = |t: &str| {
            st.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .map(|c| c.status.clone())
        };
        assert_eq!(cond("Initialized").as_deref(), Some("True"));
        assert_eq!(cond("Ready").as_deref(), Some("True"));
        // Before any regular container ran, an exited sidecar leaves the pod Pending, not Failed.
        side.state = ContainerState::Exited;
        side.exit_code = 1;
        let st = pod_status(
            &p,
            &rt(vec![side]),
            &Waiting::new(),
            &StatusContext::default(),
        );
        assert_eq!(st.phase.as_deref(), Some("Pending"));
    }

    #[test]
    fn readiness_gates_hold_ready_until_their_conditions_are_true() {
        let mut p = pod("Always");
        if let Some(spec) = p.pod.spec.as_mut() {
            spec.readiness_gates = Some(vec![
                k8s_openapi::api::core::v1::PodReadinessGate {
                    condition_type: "k8s.io/one".into(),
                },
                k8s_openapi::api::core::v1::PodReadinessGate {
                    condition_type: "k8s.io/two".into(),
                },
            ]);
        }
        let held = |one: &str| {
            let c = |t: &str, s: &str| PodCondition {
                type_: t.into(),
                status: s.into(),
                ..Default::default()
            };
            Some(k8s_openapi::api::core::v1::PodStatus {
                conditions: Some(vec![c("Ready", "False"), c("k8s.io/one", one)]),
                ..Default::default()
            })
        };
        let ready = |p: &DesiredPod| {
            let st = pod_status(
                p,
                &rt(vec![view(ContainerState::Running, 0, 0)]),
                &Waiting::new(),
                &StatusContext::default(),
            );
            let conditions = st.conditions.unwrap_or_default();
            let find = |t: &str| conditions.iter().find(|c| c.type_ == t).cloned();
            let r = find("Ready").expect("Ready");
            assert_eq!(
                find("ContainersReady").map(|c| c.status),
                Some("True".into())
            );
            (r, find("k8s.io/one").map(|c| c.status))
        };
        p.pod.status = held("False");
        let (r, one) = ready(&p);
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref()),
            ("False", Some("ReadinessGatesNotReady"))
        );
        assert_eq!(
            r.message.as_deref(),
            Some(
                r#"the status of pod readiness gate "k8s.io/one" is not "True", but False, corresponding condition of pod readiness gate "k8s.io/two" does not exist."#
            )
        );
        // The gate's condition is kept as the API server holds it.
        assert_eq!(one.as_deref(), Some("False"));
        p.pod.status = held("True");
        if let Some(st) = p.pod.status.as_mut() {
            st.conditions.get_or_insert_default().push(PodCondition {
                type_: "k8s.io/two".into(),
                status: "True".into(),
                ..Default::default()
            });
        }
        assert_eq!(ready(&p).0.status, "True");
    }

    #[test]
    fn containers_of_a_pod_with_init_containers_wait_as_pod_initializing() {
        let mut p = pod("Always");
        if let Some(spec) = p.pod.spec.as_mut() {
            spec.init_containers = Some(vec![Container {
                name: "i".into(),
                image: Some("busybox:1.35".into()),
                ..Default::default()
            }]);
        }
        let st = pod_status(&p, &rt(vec![]), &Waiting::new(), &StatusContext::default());
        let message = |t: &str| {
            st.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == t)
                .and_then(|c| c.message.clone())
        };
        assert_eq!(
            message("Initialized").as_deref(),
            Some("containers with incomplete status: [i]")
        );
        assert_eq!(
            message("ContainersReady").as_deref(),
            Some("containers with unready status: [a]")
        );
        let reason = |cs: Option<Vec<ContainerStatus>>| {
            cs.and_then(|v| v.into_iter().next())
                .and_then(|c| c.state)
                .and_then(|s| s.waiting)
                .and_then(|w| w.reason)
        };
        assert_eq!(
            reason(st.container_statuses).as_deref(),
            Some("PodInitializing")
        );
        assert_eq!(
            reason(st.init_container_statuses).as_deref(),
            Some("PodInitializing")
        );
        // Created but not started: still PodInitializing, not ContainerCreating.
        let mut created = view(ContainerState::Created, 0, 0);
        created.name = "i".into();
        let st = pod_status(
            &p,
            &rt(vec![created]),
            &Waiting::new(),
            &StatusContext::default(),
        );
        assert_eq!(
            reason(st.init_container_statuses).as_deref(),
            Some("PodInitializing")
        );
        // An init container that completed is ready.
        let mut done = view(ContainerState::Exited, 0, 0);
        done.name = "i".into();
        let st = pod_status(
            &p,
            &rt(vec![done]),
            &Waiting::new(),
            &StatusContext::default(),
        );
        let init = &st.init_container_statuses.expect("init statuses")[0];
        assert!(init.ready && init.started == Some(false), "{init:?}");
        let st = pod_status(
            &pod("Always"),
            &rt(vec![]),
            &Waiting::new(),
            &StatusContext::default(),
        );
        assert_eq!(
            reason(st.container_statuses).as_deref(),
            Some("ContainerCreating")
        );
    }
}
