//! What to do to bring a pod's runtime state to its spec: a pure function, unit-tested, in the
//! shape of the kubelet's computePodActions (kuberuntime_manager.go) and
//! ShouldContainerBeRestarted (pkg/kubelet/container/helpers.go).

use super::labels::container_hash;
use super::state::{ContainerState, PodRuntimeState};
use crate::pod::RestartPolicy;
use k8s_openapi::api::core::v1::PodSpec;

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
    /// Regular containers (indexes) to start.
    pub containers_to_start: Vec<usize>,
    /// Container instances to stop and remove first: (id, name, reason).
    pub containers_to_kill: Vec<(String, String, String)>,
    /// The pod has finished for good (terminal phase): nothing will run again.
    pub finished: bool,
}

/// Computes the actions for `spec` given the runtime `state`; `unhealthy` names running
/// containers a failed liveness or startup probe condemns (runtime ID -> message).
pub fn compute(
    spec: &PodSpec,
    state: &PodRuntimeState,
    unhealthy: &super::Unhealthy,
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
                !(policy == RestartPolicy::OnFailure
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

    // Init containers run one at a time, in order, each to success. Once a regular container
    // exists, initialization is over (its records may have been garbage-collected).
    let regular_started = spec.containers.iter().any(|c| {
        state
            .latest(&c.name)
            .is_some_and(|v| matches!(v.state, ContainerState::Running | ContainerState::Created))
    });
    if !regular_started {
        for (i, ic) in inits.iter().enumerate() {
            match state.latest(&ic.name) {
                None => {
                    a.init_to_start = Some(i);
                    return a;
                }
                Some(v) => match v.state {
                    ContainerState::Running => return a,
                    ContainerState::Exited if v.exit_code == 0 => continue,
                    ContainerState::Exited => {
                        if policy == RestartPolicy::Never {
                            a.kill_pod = true;
                            a.finished = true;
                        } else {
                            a.init_to_start = Some(i);
                        }
                        return a;
                    }
                    ContainerState::Created | ContainerState::Unknown => {
                        a.containers_to_kill.push((
                            v.id.clone(),
                            v.name.clone(),
                            "init container in unknown state".to_owned(),
                        ));
                        if policy == RestartPolicy::Never {
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
                        // container; it starts again unless the pod never restarts.
                        if policy == RestartPolicy::Never {
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
                    if policy.restarts(v.exit_code) {
                        a.containers_to_start.push(i);
                    }
                }
            },
        }
    }
    if keep == 0 && a.containers_to_start.is_empty() {
        a.kill_pod = true;
        a.finished = true;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kuberuntime::state::{ContainerView, SandboxView};
    use k8s_openapi::api::core::v1::Container;

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
            id: format!("id-{name}"),
            name: name.into(),
            restart_count: 0,
            state,
            created_at: 1,
            exit_code: exit,
            started_at: None,
            finished_at: None,
            reason: String::new(),
            message: String::new(),
            image: String::new(),
            image_ref: String::new(),
            hash,
            grace: None,
            sandbox_id: "sb0".into(),
        }
    }

    #[test]
    fn new_pod_gets_a_sandbox_and_all_containers() {
        let s = spec("Always", &[], &["a", "b"]);
        let a = compute(&s, &PodRuntimeState::default(), &Default::default());
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
        let a = compute(&s, &st, &Default::default());
        assert_eq!(
            a,
            PodActions {
                sandbox_id: Some("sb0".into()),
                ..Default::default()
            }
        );
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
            let a = compute(&s, &st, &Default::default());
            assert_eq!(
                !a.containers_to_start.is_empty(),
                restart,
                "{policy} exit {exit}"
            );
            assert_eq!(a.finished, !restart, "{policy} exit {exit}");
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
        let a = compute(&s, &st, &Default::default());
        assert_eq!(a.create_sandbox, Some(1));
        assert!(a.kill_pod);
        let never = spec("Never", &[], &["a"]);
        let a = compute(&never, &st, &Default::default());
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
        assert_eq!(compute(&s, &st, &Default::default()).init_to_start, Some(0));
        st.containers
            .push(ctr("i1", ContainerState::Running, 0, &s));
        let a = compute(&s, &st, &Default::default());
        assert_eq!((a.init_to_start, a.containers_to_start.len()), (None, 0));
        st.containers[0] = ctr("i1", ContainerState::Exited, 0, &s);
        assert_eq!(compute(&s, &st, &Default::default()).init_to_start, Some(1));
        st.containers
            .insert(0, ctr("i2", ContainerState::Exited, 0, &s));
        assert_eq!(
            compute(&s, &st, &Default::default()).containers_to_start,
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
            let a = compute(&s, &st, &Default::default());
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
        let a = compute(&s, &st, &Default::default());
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
        let a = compute(&s, &st, &bad);
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
        let a = compute(&never, &st, &bad);
        assert_eq!(a.containers_to_kill.len(), 1);
        assert!(a.containers_to_start.is_empty());
    }
}
