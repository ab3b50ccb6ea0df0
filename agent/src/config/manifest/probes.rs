//! Probe fields of a container, validated as the API server's validateProbe and friends
//! (pkg/apis/core/validation/validation.go) word them, so a bad probe refuses the manifest
//! naming the field instead of failing later on every probe.

use super::{Errs, is_port_name};
use k8s_openapi::api::core::v1::{Container, ExecAction, HTTPGetAction, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Checks the three probes of a container; `init` containers other than sidecars may have none.
pub(super) fn validate(c: &Container, at: &str, init: bool, errs: &mut Errs) {
    let probes = [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ];
    for (name, p) in probes {
        let Some(p) = p else { continue };
        let fat = format!("{at}.{name}");
        if init {
            errs.forbidden(
                &fat,
                "may not be set for init containers without restartPolicy=Always",
            );
            continue;
        }
        probe(p, &fat, errs);
        match name {
            "readinessProbe" => {
                if let Some(g) = p.termination_grace_period_seconds {
                    errs.invalid(
                        format!("{fat}.terminationGracePeriodSeconds"),
                        g,
                        "must not be set for readinessProbes",
                    );
                }
            }
            _ => {
                if let Some(s) = p.success_threshold
                    && s != 1
                {
                    errs.invalid(format!("{fat}.successThreshold"), s, "must be 1");
                }
            }
        }
    }
}

fn probe(p: &Probe, at: &str, errs: &mut Errs) {
    handler(p, at, errs);
    for (field, v) in [
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("periodSeconds", p.period_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v
            && v < 0
        {
            errs.invalid(
                format!("{at}.{field}"),
                v,
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(g) = p.termination_grace_period_seconds
        && g <= 0
    {
        errs.invalid(
            format!("{at}.terminationGracePeriodSeconds"),
            g,
            "must be greater than 0",
        );
    }
}

/// validateHandler's count: the first handler type set is checked, each further one is
/// forbidden, and none at all is an error ([`OneHandler::finish`]).
pub(super) struct OneHandler<'a> {
    at: &'a str,
    n: usize,
}

impl<'a> OneHandler<'a> {
    /// Counting the handlers under field path `at`.
    pub(super) fn new(at: &'a str) -> Self {
        Self { at, n: 0 }
    }

    /// Counts handler `field`; true when it is the first, so its own fields are checked.
    pub(super) fn take(&mut self, field: &str, errs: &mut Errs) -> bool {
        self.n += 1;
        if self.n > 1 {
            errs.forbidden(
                format!("{}.{field}", self.at),
                "may not specify more than 1 handler type",
            );
        }
        self.n == 1
    }

    /// Reports a missing handler.
    pub(super) fn finish(self, errs: &mut Errs) {
        if self.n == 0 {
            errs.0.push(format!(
                "{}: Required value: must specify a handler type",
                self.at
            ));
        }
    }
}

/// The exec handler: a command is required.
pub(super) fn exec(e: &ExecAction, at: &str, errs: &mut Errs) {
    if e.command.as_ref().is_none_or(Vec::is_empty) {
        errs.required(format!("{at}.exec.command"));
    }
}

/// The httpGet handler: port, scheme and header names.
pub(super) fn http_get(h: &HTTPGetAction, at: &str, errs: &mut Errs) {
    let hat = format!("{at}.httpGet");
    port(&h.port, &format!("{hat}.port"), errs);
    if let Some(s) = h.scheme.as_deref()
        && !["HTTP", "HTTPS"].contains(&s)
    {
        errs.unsupported(format!("{hat}.scheme"), s, &["HTTP", "HTTPS"]);
    }
    for hd in h.http_headers.iter().flatten() {
        let ok = !hd.name.is_empty()
            && hd
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            errs.invalid(
                format!("{hat}.httpHeaders"),
                &hd.name,
                "a valid HTTP header must consist of alphanumeric characters or '-' (e.g. 'X-Header-Name', regex used for validation is '[-A-Za-z0-9]+')",
            );
        }
    }
}

/// Exactly one of exec, httpGet, tcpSocket, grpc (validateHandler).
fn handler(p: &Probe, at: &str, errs: &mut Errs) {
    let mut one = OneHandler::new(at);
    if let Some(e) = &p.exec
        && one.take("exec", errs)
    {
        exec(e, at, errs);
    }
    if let Some(h) = &p.http_get
        && one.take("httpGet", errs)
    {
        http_get(h, at, errs);
    }
    if let Some(t) = &p.tcp_socket
        && one.take("tcpSocket", errs)
    {
        port(&t.port, &format!("{at}.tcpSocket.port"), errs);
    }
    if let Some(g) = &p.grpc
        && one.take("grpc", errs)
        && !(1..=65535).contains(&g.port)
    {
        errs.invalid(
            format!("{at}.grpc.port"),
            g.port,
            "must be between 1 and 65535, inclusive",
        );
    }
    one.finish(errs);
}

/// ValidatePortNumOrName.
pub(super) fn port(p: &IntOrString, at: &str, errs: &mut Errs) {
    match p {
        IntOrString::Int(n) if !(1..=65535).contains(n) => {
            errs.invalid(at, n, "must be between 1 and 65535, inclusive");
        }
        IntOrString::String(s) if !is_port_name(s) => errs.invalid(
            at,
            s,
            "must be an IANA_SVC_NAME (at most 15 characters, lowercase letters, digits and '-', at least one letter, no leading, trailing or double '-')",
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate as validate_pod;
    use k8s_openapi::api::core::v1::Pod;

    fn errors(container_extra: &str) -> Vec<String> {
        let json = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p","namespace":"default"}},
               "spec":{{"containers":[{{"name":"c","image":"busybox",{container_extra}}}]}}}}"#
        );
        let pod: Pod = serde_json::from_str(&json).expect("pod json");
        validate_pod(&pod)
    }

    #[test]
    fn a_good_probe_passes() {
        let e = errors(
            r#""livenessProbe":{"httpGet":{"path":"/","port":"http"},"periodSeconds":5},"ports":[{"name":"http","containerPort":80}]"#,
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn errors_name_the_probe_field() {
        let e = errors(
            r#""livenessProbe":{"exec":{"command":[]},"tcpSocket":{"port":0},"successThreshold":2,"periodSeconds":-1}"#,
        );
        assert!(
            e.contains(&"spec.containers[0].livenessProbe.exec.command: Required value".into()),
            "{e:?}"
        );
        assert!(e.contains(&"spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type".into()), "{e:?}");
        assert!(
            e.contains(
                &"spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"
                    .into()
            ),
            "{e:?}"
        );
        assert!(e.contains(&"spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0".into()), "{e:?}");
    }

    #[test]
    fn a_probe_needs_a_handler_and_readiness_no_grace() {
        let e = errors(r#""readinessProbe":{"terminationGracePeriodSeconds":5}"#);
        assert!(
            e.contains(
                &"spec.containers[0].readinessProbe: Required value: must specify a handler type"
                    .into()
            ),
            "{e:?}"
        );
        assert!(e.contains(&"spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: must not be set for readinessProbes".into()), "{e:?}");
    }
}
