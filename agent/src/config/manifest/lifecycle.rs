//! Lifecycle fields of a container, validated as the API server's validateLifecycle,
//! validateHandler and validateContainerRestartPolicy word them
//! (pkg/apis/core/validation/validation.go): hooks, `restartPolicy` and `restartPolicyRules`
//! refuse a bad manifest naming the field.

use super::Errs;
use super::probes::{OneHandler, exec, http_get, port};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

/// Checks `lifecycle`, `restartPolicy` and `restartPolicyRules` of a container; `init` for
/// init containers, where hooks need `restartPolicy: Always` (a sidecar).
pub(super) fn validate(c: &Container, at: &str, init: bool, errs: &mut Errs) {
    let sidecar = init && c.restart_policy.as_deref() == Some("Always");
    restart_policy(c, at, errs);
    let Some(l) = c.lifecycle.as_ref() else {
        return;
    };
    if init && !sidecar {
        errs.forbidden(
            format!("{at}.lifecycle"),
            "may not be set for init containers without restartPolicy=Always",
        );
        return;
    }
    for (name, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
        if let Some(h) = h {
            handler(h, &format!("{at}.lifecycle.{name}"), errs);
        }
    }
}

/// A container's own restart policy and rules (validateContainerRestartPolicy, with the
/// ContainerRestartRules and RestartAllContainersOnContainerExits gates on, as in our release).
fn restart_policy(c: &Container, at: &str, errs: &mut Errs) {
    let rules = c.restart_policy_rules.as_deref().unwrap_or_default();
    let Some(p) = c.restart_policy.as_deref() else {
        if !rules.is_empty() {
            errs.required_because(
                format!("{at}.restartPolicy"),
                "must specify restartPolicy when restart rules are used",
            );
        }
        return;
    };
    let policies = ["Always", "Never", "OnFailure"];
    if !policies.contains(&p) {
        errs.unsupported(format!("{at}.restartPolicy"), p, &policies);
    }
    if rules.len() > 20 {
        errs.too_many(format!("{at}.restartPolicyRules"), rules.len(), 20);
    }
    for (i, r) in rules.iter().enumerate() {
        let at = format!("{at}.restartPolicyRules[{i}]");
        let actions = ["Restart", "RestartAllContainers"];
        if !actions.contains(&r.action.as_str()) {
            errs.unsupported(format!("{at}.action"), &r.action, &actions);
        }
        let Some(codes) = &r.exit_codes else {
            errs.required_because(format!("{at}.exitCodes"), "must be specified");
            continue;
        };
        let operators = ["In", "NotIn"];
        if !operators.contains(&codes.operator.as_str()) {
            errs.unsupported(
                format!("{at}.exitCodes.operator"),
                &codes.operator,
                &operators,
            );
        }
        let n = codes.values.as_ref().map_or(0, Vec::len);
        if n > 255 {
            errs.too_many(format!("{at}.exitCodes.values"), n, 255);
        }
    }
}

/// Exactly one of exec, httpGet, tcpSocket, sleep (validateHandler).
fn handler(h: &LifecycleHandler, at: &str, errs: &mut Errs) {
    let mut one = OneHandler::new(at);
    if let Some(e) = &h.exec
        && one.take("exec", errs)
    {
        exec(e, at, errs);
    }
    if let Some(g) = &h.http_get
        && one.take("httpGet", errs)
    {
        http_get(g, at, errs);
    }
    if let Some(t) = &h.tcp_socket
        && one.take("tcpSocket", errs)
    {
        port(&t.port, &format!("{at}.tcpSocket.port"), errs);
    }
    if let Some(s) = &h.sleep
        && one.take("sleep", errs)
        && s.seconds < 0
    {
        errs.invalid(
            format!("{at}.sleep.seconds"),
            s.seconds,
            "must be greater than or equal to 0",
        );
    }
    one.finish(errs);
}

#[cfg(test)]
mod tests {
    use super::super::validate as validate_pod;
    use k8s_openapi::api::core::v1::Pod;

    fn errors(inits: &str, containers: &str) -> Vec<String> {
        let json = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p","namespace":"default"}},
               "spec":{{"initContainers":[{inits}],"containers":[{containers}]}}}}"#
        );
        let pod: Pod = serde_json::from_str(&json).expect("pod json");
        validate_pod(&pod)
    }

    const MAIN: &str = r#"{"name":"c","image":"busybox"}"#;

    #[test]
    fn sidecars_and_their_hooks_pass() {
        let side = r#"{"name":"s","image":"busybox","restartPolicy":"Always",
            "lifecycle":{"postStart":{"exec":{"command":["true"]}},"preStop":{"sleep":{"seconds":1}}},
            "startupProbe":{"exec":{"command":["true"]}}}"#;
        assert_eq!(errors(side, MAIN), Vec::<String>::new());
    }

    #[test]
    fn bad_restart_policies_and_hooks_name_the_field() {
        let e = errors(
            r#"{"name":"i","image":"busybox","restartPolicy":"Sometimes"}"#,
            r#"{"name":"c","image":"busybox","restartPolicy":"Never","restartPolicyRules":[
                {"action":"Restart","exitCodes":{"operator":"In","values":[42]}},
                {"action":"Reboot","exitCodes":{"operator":"Maybe"}},
                {"action":"Restart"}]}"#,
        );
        assert_eq!(
            e,
            [
                r#"spec.initContainers[0].restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "Never", "OnFailure""#,
                r#"spec.containers[0].restartPolicyRules[1].action: Unsupported value: "Reboot": supported values: "Restart", "RestartAllContainers""#,
                r#"spec.containers[0].restartPolicyRules[1].exitCodes.operator: Unsupported value: "Maybe": supported values: "In", "NotIn""#,
                "spec.containers[0].restartPolicyRules[2].exitCodes: Required value: must be specified",
            ]
        );
        let e = errors(
            "",
            r#"{"name":"c","image":"busybox","restartPolicyRules":[
                {"action":"Restart","exitCodes":{"operator":"In","values":[1]}}]}"#,
        );
        assert_eq!(
            e,
            [
                "spec.containers[0].restartPolicy: Required value: must specify restartPolicy when restart rules are used"
            ]
        );
        let e = errors(
            r#"{"name":"i","image":"busybox","lifecycle":{"postStart":{"exec":{"command":["true"]}}}}"#,
            r#"{"name":"c","image":"busybox","lifecycle":{"preStop":{"exec":{}}}}"#,
        );
        assert_eq!(
            e,
            [
                "spec.initContainers[0].lifecycle: Forbidden: may not be set for init containers without restartPolicy=Always",
                "spec.containers[0].lifecycle.preStop.exec.command: Required value",
            ]
        );
        let e = errors(
            "",
            r#"{"name":"c","image":"busybox","lifecycle":{"postStart":{}}}"#,
        );
        assert_eq!(
            e,
            ["spec.containers[0].lifecycle.postStart: Required value: must specify a handler type"]
        );
    }
}
