//! Lifecycle fields of a container, validated as the API server's validateLifecycle and
//! validateHandler word them (pkg/apis/core/validation/validation.go): hooks and
//! `restartPolicy` (sidecars) refuse a bad manifest naming the field.

use super::Errs;
use super::probes::port;
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
    let mut n = 0;
    let mut one = |field: &str, errs: &mut Errs| {
        n += 1;
        if n > 1 {
            errs.forbidden(
                format!("{at}.{field}"),
                "may not specify more than 1 handler type",
            );
        }
        n == 1
    };
    if let Some(e) = &h.exec
        && one("exec", errs)
        && e.command.as_ref().is_none_or(Vec::is_empty)
    {
        errs.required(format!("{at}.exec.command"));
    }
    if let Some(g) = &h.http_get
        && one("httpGet", errs)
    {
        port(&g.port, &format!("{at}.httpGet.port"), errs);
        if let Some(s) = g.scheme.as_deref()
            && !["HTTP", "HTTPS"].contains(&s)
        {
            errs.unsupported(format!("{at}.httpGet.scheme"), s, &["HTTP", "HTTPS"]);
        }
    }
    if let Some(t) = &h.tcp_socket
        && one("tcpSocket", errs)
    {
        port(&t.port, &format!("{at}.tcpSocket.port"), errs);
    }
    if let Some(s) = &h.sleep
        && one("sleep", errs)
        && s.seconds < 0
    {
        errs.invalid(
            format!("{at}.sleep.seconds"),
            s.seconds,
            "must be greater than or equal to 0",
        );
    }
    if n == 0 {
        errs.0
            .push(format!("{at}: Required value: must specify a handler type"));
    }
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
