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
mod tests {
    use super::*;
    use crate::kuberuntime::state::{ContainerView, SandboxView};

    fn spec(policy: &str, inits: &[&str], containers: &[&str]) -> PodSpec {
        let mk = |n: &&str| Container {
            name: n.to_string(),
            image: Some("busybox:1.35".into()),
            ..Default::default()
        };
        PodSpec {
            restart_policy: Some(policy.into()),
            init_containers: (!inits.is_empty()).then(|| inits.iter().map(mk).collect()),
            containers: containers.iter().map(mk).collect(),
            ..Default::default()
        }
    }

    fn sandbox(ready: bool, attempt: u32) -> SandboxView {
        SandboxView {
            id: format!("sb{attempt}"),
            attempt,
            ready,
            created_at: i64::from(attempt),
        }
    }

    fn ctr(name: &str, state: ContainerState, exit: i32, spec: &PodSpec) -> ContainerView {
        let hash = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .map(container_hash);
        ContainerView {
            exit_code: exit,
            hash,
            ..crate::kuberuntime::test_support::container_view(
                &format!("id-{name}"),
                name,
                state,
                "sb0",
            )
        }
    }

    #[test]
    fn new_pod_gets_a_sandbox_and_all_containers() {
        let s = spec("Always", &[], &["a", "b"]);
        let a = compute(
            &s,
            &PodRuntimeState::default(),
            &Default::default(),
            &Default::default(),
        );
        assert_eq!(a.create_sandbox, Some(0));
        assert_eq!(a.containers_to_start, [0, 1]);
        assert!(!a.kill_pod);
    }

    #[test]
    fn running_pod_is_left_alone() {
        let s = spec("Always", &[], &["a"]);
        let st = PodRuntimeState {
            sandboxes: vec![sandbox(true, 0)],
            containers: vec![ctr("a", ContainerState::Running, 0, &s)],
            pod_ip: String::new(),
        };
        let a = compute(&s, &st, &Default::default(), &Default::default());
        assert_eq!(
            a,
            PodActions {
                sandbox_id: Some("sb0".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn ephemeral_containers_start_once_even_before_initialization() {
        let mut s = spec("Always", &["i"], &["a"]);
        let eph = |n: &str| k8s_openapi::api::core::v1::EphemeralContainer {
            name: n.into(),
            ..Default::default()
        };
        s.ephemeral_containers = Some(vec![eph("e0"), eph("e1")]);
        let mut e0 = ctr("i", ContainerState::Exited, 0, &s);
        e0.name = "e0".into();
        let st = PodRuntimeState {
            sandboxes: vec![sandbox(true, 0)],
            containers: vec![ctr("i", ContainerState::Running, 0, &s), e0],
            pod_ip: String::new(),
        };
        let a = compute(&s, &st, &Default::default(), &Default::default());
        assert_eq!(a.ephemeral_to_start, vec![1], "e0 ran already: never again");
        assert!(a.containers_to_kill.is_empty() && a.containers_to_start.is_empty());
        // A new sandbox first: nothing ephemeral starts with it.
        let none = PodRuntimeState::default();
        let a = compute(&s, &none, &Default::default(), &Default::default());
        assert!(a.ephemeral_to_start.is_empty());
    }

    #[test]
    fn restart_policies_decide_exited_containers() {
        for (policy, exit, restart) in [
            ("Always", 0, true),
            ("OnFailure", 0, false),
            ("OnFailure", 1, true),
            ("Never", 1, false),
        ] {
            let s = spec(policy, &[], &["a"]);
            let st = PodRuntimeState {
                sandboxes: vec![sandbox(true, 0)],
                containers: vec![ctr("a", ContainerState::Exited, exit, &s)],
                pod_ip: String::new(),
            };
            let a = compute(&s, &st, &Default::default(), &Default::default());
            assert_eq!(
                !a.containers_to_start.is_empty(),
                restart,
                "{policy} exit {exit}"
            );
            assert_eq!(a.finished, !restart, "{policy} exit {exit}");
        }
    }

    #[test]
    fn a_containers_own_policy_and_rules_override_the_pods() {
        for (pod_policy, own, rule, exit, restart) in [
            ("Never", "Never", Some(42), 42, true),
            ("Never", "Never", Some(42), 1, false),
            ("Always", "Never", None, 1, false),
            ("Never", "Always", None, 1, true),
        ] {
            let mut s = spec(pod_policy, &[], &["a"]);
            s.containers[0].restart_policy = Some(own.into());
            s.containers[0].restart_policy_rules = rule.map(|code| {
                vec![k8s_openapi::api::core::v1::ContainerRestartRule {
                    action: "Restart".into(),
                    exit_codes: Some(
                        k8s_openapi::api::core::v1::ContainerRestartRuleOnExitCodes {
                            operator: "In".into(),
                            values: Some(vec![code]),
                        },
                    ),
                }]
            });
            let st = PodRuntimeState {
                sandboxes: vec![sandbox(true, 0)],
                containers: vec![ctr("a", ContainerState::Exited, exit, &s)],
                pod_ip: String::new(),
            };
            let a = compute(&s, &st, &Default::default(), &Default::default());
            let case = format!("pod {pod_policy}, container {own}, rule {rule:?}, exit {exit}");
            assert_eq!(!a.containers_to_start.is_empty(), restart, "{case}");
            assert_eq!(a.finished, !restart, "{case}");
        }
    }

    #[test]
    fn dead_sandbox_is_recreated_except_for_finished_never_pods() {
        let s = spec("Always", &[], &["a"]);
        let st = PodRuntimeState {
            sandboxes: vec![sandbox(false, 0)],
            containers: vec![ctr("a", ContainerState::Exited, 0, &s)],
            pod_ip: String::new(),
        };
        let a = compute(&s, &st, &Default::default(), &Default::default());
        assert_eq!(a.create_sandbox, Some(1));
        assert!(a.kill_pod);
        let never = spec("Never", &[], &["a"]);
        let a = compute(&never, &st, &Default::default(), &Default::default());
        assert_eq!(a.create_sandbox, None);
        assert!(a.finished);
    }

    #[test]
    fn init_containers_run_in_order() {
        let s = spec("Always", &["i1", "i2"], &["a"]);
        let mut st = PodRuntimeState {
            sandboxes: vec![sandbox(true, 0)],
            containers: vec![],
            pod_ip: String::new(),
        };
        assert_eq!(
            compute(&s, &st, &Default::default(), &Default::default()).init_to_start,
            Some(0)
        );
        st.containers
            .push(ctr("i1", ContainerState::Running, 0, &s));
        let a = compute(&s, &st, &Default::default(), &Default::default());
        assert_eq!((a.init_to_start, a.containers_to_start.len()), (None, 0));
        st.containers[0] = ctr("i1", ContainerState::Exited, 0, &s);
        assert_eq!(
            compute(&s, &st, &Default::default(), &Default::default()).init_to_start,
            Some(1)
        );
        st.containers
            .insert(0, ctr("i2", ContainerState::Exited, 0, &s));
        assert_eq!(
            compute(&s, &st, &Default::default(), &Default::default()).containers_to_start,
            [0]
        );
    }

    #[test]
    fn failed_init_container_fails_a_never_pod_and_retries_otherwise() {
        for (policy, finished) in [("Never", true), ("OnFailure", false), ("Always", false)] {
            let s = spec(policy, &["i1"], &["a"]);
            let st = PodRuntimeState {
                sandboxes: vec![sandbox(true, 0)],
                containers: vec![ctr("i1", ContainerState::Exited, 3, &s)],
                pod_ip: String::new(),
            };
            let a = compute(&s, &st, &Default::default(), &Default::default());
            assert_eq!(a.finished, finished, "{policy}");
            assert_eq!(a.init_to_start.is_some(), !finished, "{policy}");
        }
    }

    #[test]
    fn changed_spec_replaces_the_running_container() {
        let s = spec("Always", &[], &["a"]);
        let mut c = ctr("a", ContainerState::Running, 0, &s);
        c.hash = Some(1);
        let st = PodRuntimeState {
            sandboxes: vec![sandbox(true, 0)],
            containers: vec![c],
            pod_ip: String::new(),
        };
        let a = compute(&s, &st, &Default::default(), &Default::default());
        assert_eq!(a.containers_to_kill.len(), 1);
        assert_eq!(a.containers_to_start, [0]);
    }

    #[test]
    fn failed_liveness_kills_and_restarts_unless_never() {
        let s = spec("Always", &[], &["a"]);
        let st = PodRuntimeState {
            sandboxes: vec![sandbox(true, 0)],
            containers: vec![ctr("a", ContainerState::Running, 0, &s)],
            ..Default::default()
        };
        let id = st.containers[0].id.clone();
        let bad: super::super::Unhealthy = [(
            id.clone(),
            ("Container a failed liveness probe".to_owned(), None),
        )]
        .into();
        let a = compute(&s, &st, &bad, &Default::default());
        assert_eq!(
            a.containers_to_kill,
            [(
                id.clone(),
                "a".to_owned(),
                "Container a failed liveness probe, will be restarted".to_owned()
            )]
        );
        assert_eq!(a.containers_to_start, [0]);
        let never = spec("Never", &[], &["a"]);
        let a = compute(&never, &st, &bad, &Default::default());
        assert_eq!(a.containers_to_kill.len(), 1);
        assert!(a.containers_to_start.is_empty());
    }

    fn with_sidecar(policy: &str) -> PodSpec {
        let mut s = spec(policy, &["side", "i2"], &["a"]);
        if let Some(inits) = s.init_containers.as_mut() {
            inits[0].restart_policy = Some("Always".into());
        }
        s
    }

    #[test]
    fn a_started_sidecar_lets_the_next_init_container_go() {
        let s = with_sidecar("Never");
        let mut st = PodRuntimeState {
            sandboxes: vec![sandbox(true, 0)],
            ..Default::default()
        };
        let (sick, none) = (Default::default(), Default::default());
        assert_eq!(compute(&s, &st, &sick, &none).init_to_start, Some(0));
        st.containers
            .push(ctr("side", ContainerState::Running, 0, &s));
        // Its startup probe has not passed: the next init container waits.
        let unstarted: super::super::Unstarted = ["id-side".to_owned()].into();
        let a = compute(&s, &st, &sick, &unstarted);
        assert_eq!((a.init_to_start, a.containers_to_start.len()), (None, 0));
        assert_eq!(compute(&s, &st, &sick, &none).init_to_start, Some(1));
        st.containers
            .insert(0, ctr("i2", ContainerState::Exited, 0, &s));
        let a = compute(&s, &st, &sick, &none);
        assert_eq!(a.containers_to_start, [0]);
        assert!(a.sidecars_to_start.is_empty());
    }

    #[test]
    fn an_exited_sidecar_is_restarted_even_in_a_never_pod() {
        let s = with_sidecar("Never");
        let st = PodRuntimeState {
            sandboxes: vec![sandbox(true, 0)],
            containers: vec![
                ctr("a", ContainerState::Running, 0, &s),
                ctr("i2", ContainerState::Exited, 0, &s),
                ctr("side", ContainerState::Exited, 1, &s),
            ],
            ..Default::default()
        };
        let (sick, none) = (Default::default(), Default::default());
        let a = compute(&s, &st, &sick, &none);
        assert_eq!(a.sidecars_to_start, [0]);
        assert!(!a.finished);
    }

    #[test]
    fn sidecars_do_not_hold_a_finished_pod() {
        let s = with_sidecar("Never");
        let st = PodRuntimeState {
            sandboxes: vec![sandbox(true, 0)],
            containers: vec![
                ctr("a", ContainerState::Exited, 0, &s),
                ctr("i2", ContainerState::Exited, 0, &s),
                ctr("side", ContainerState::Running, 0, &s),
            ],
            ..Default::default()
        };
        let (sick, none) = (Default::default(), Default::default());
        let a = compute(&s, &st, &sick, &none);
        assert!(a.finished && a.kill_pod, "{a:?}");
        assert!(a.sidecars_to_start.is_empty());
    }
}
