//! Restart decisions: the pod's `restartPolicy`, and a container's own `restartPolicy` and
//! `restartPolicyRules` (ContainerRestartRules, beta and on by default since 1.35), as the
//! kubelet's podutil.ContainerShouldRestart decides.

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// A restart policy (`spec.restartPolicy`, default Always, or a container's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart on any exit.
    Always,
    /// Restart on non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Reads the policy from a pod spec; unknown values were rejected by validation.
    pub fn of(spec: &PodSpec) -> Self {
        Self::parse(spec.restart_policy.as_deref()).unwrap_or(Self::Always)
    }

    fn parse(s: Option<&str>) -> Option<Self> {
        match s? {
            "Always" => Some(Self::Always),
            "OnFailure" => Some(Self::OnFailure),
            "Never" => Some(Self::Never),
            _ => None,
        }
    }

    /// Whether a container that exited with `exit_code` is started again
    /// (kubelet pkg/kubelet/container/helpers.go ShouldContainerBeRestarted).
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            Self::Always => true,
            Self::OnFailure => exit_code != 0,
            Self::Never => false,
        }
    }
}

/// The policy that governs container `c`: its own `restartPolicy` when set, else the pod's.
/// Alone (without the rules) it decides where no exit code is known: a container killed by a
/// failed probe, one in an unknown state, a succeeded one on sandbox re-creation.
pub fn container_policy(c: &Container, spec: &PodSpec) -> RestartPolicy {
    RestartPolicy::parse(c.restart_policy.as_deref()).unwrap_or_else(|| RestartPolicy::of(spec))
}

/// Whether container `c`, exited with `exit_code`, is started again: the first of its
/// `restartPolicyRules` that matches the code decides, then its own policy, then the pod's
/// (podutil.ContainerShouldRestart). A `RestartAllContainers` action falls back to the
/// container's policy, as the kubelet does without its feature gate (reported unsupported).
pub fn container_restarts(c: &Container, spec: &PodSpec, exit_code: i32) -> bool {
    if c.restart_policy.is_some() {
        let matched = c.restart_policy_rules.iter().flatten().find(|r| {
            r.exit_codes.as_ref().is_some_and(|e| {
                let listed = e.values.iter().flatten().any(|v| *v == exit_code);
                match e.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                }
            })
        });
        if matched.is_some_and(|r| r.action == "Restart") {
            return true;
        }
    }
    container_policy(c, spec).restarts(exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_decisions() {
        assert!(RestartPolicy::Always.restarts(0));
        assert!(!RestartPolicy::OnFailure.restarts(0));
        assert!(RestartPolicy::OnFailure.restarts(1));
        assert!(!RestartPolicy::Never.restarts(1));
    }

    fn container(json: &str) -> Container {
        serde_json::from_str(json).expect("a container")
    }

    #[test]
    fn rules_then_the_containers_policy_then_the_pods() {
        let pod = |p: &str| PodSpec {
            restart_policy: Some(p.into()),
            ..Default::default()
        };
        let ruled = container(
            r#"{"name":"c","restartPolicy":"Never","restartPolicyRules":[
                {"action":"Restart","exitCodes":{"operator":"In","values":[42]}}]}"#,
        );
        assert!(container_restarts(&ruled, &pod("Never"), 42), "rule match");
        assert!(
            !container_restarts(&ruled, &pod("Always"), 1),
            "rule mismatch: Never"
        );
        let not_in = container(
            r#"{"name":"c","restartPolicy":"Never","restartPolicyRules":[
                {"action":"Restart","exitCodes":{"operator":"NotIn","values":[0]}}]}"#,
        );
        assert!(container_restarts(&not_in, &pod("Never"), 3));
        assert!(!container_restarts(&not_in, &pod("Never"), 0));
        let always = container(r#"{"name":"c","restartPolicy":"Always"}"#);
        assert!(container_restarts(&always, &pod("Never"), 1));
        let never = container(r#"{"name":"c","restartPolicy":"Never"}"#);
        assert!(!container_restarts(&never, &pod("Always"), 1));
        assert_eq!(
            container_policy(&never, &pod("Always")),
            RestartPolicy::Never
        );
        let plain = container(r#"{"name":"c"}"#);
        assert!(container_restarts(&plain, &pod("Always"), 1));
        assert!(!container_restarts(&plain, &pod("OnFailure"), 0));
        let all = container(
            r#"{"name":"c","restartPolicy":"Never","restartPolicyRules":[
                {"action":"RestartAllContainers","exitCodes":{"operator":"In","values":[1]}}]}"#,
        );
        assert!(!container_restarts(&all, &pod("Always"), 1), "falls back");
    }
}
