//! Unit tests of computePodActions' decisions.

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
