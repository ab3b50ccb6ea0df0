//! Lifecycle fields of a container, validated as the API server's validateLifecycle and
//! validateHandler word them (pkg/apis/core/validation/validation.go): hooks and
//! `restartPolicy` (sidecars) refuse a bad manifest naming the field.

use super::Errs;
use super::probes::{OneHandler, exec, http_get, port};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler};

/// Checks `lifecycle` and `restartPolicy` of a container; `init` for init containers, where
/// only `restartPolicy: Always` (a sidecar) is allowed and hooks need it.
pub(super) fn validate(c: &Container, at: &str, init: bool, errs: &mut Errs) {
    let sidecar = init && c.restart_policy.as_deref() == Some("Always");
    if let Some(p) = c.restart_policy.as_deref() {
        if !init {
            // The ContainerRestartRules feature (regular containers' own restart policy) is
            // alpha and off in the kubelet of our release.
            errs.forbidden(
                format!("{at}.restartPolicy"),
                "may not be set for non init containers",
            );
        } else if p != "Always" {
            errs.unsupported(format!("{at}.restartPolicy"), p, &["Always"]);
        }
    }
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
            r#"{"name":"i","image":"busybox","restartPolicy":"Never"}"#,
            r#"{"name":"c","image":"busybox","restartPolicy":"Always"}"#,
        );
        assert_eq!(
            e,
            [
                r#"spec.initContainers[0].restartPolicy: Unsupported value: "Never": supported values: "Always""#,
                "spec.containers[0].restartPolicy: Forbidden: may not be set for non init containers",
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
