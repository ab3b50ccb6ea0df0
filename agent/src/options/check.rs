//! Checks of resolved options that the managers would otherwise trip over later, far from the
//! flag or field at fault: zero periods (busy loops, or every CRI call timing out at once), an
//! endpoint the CRI client cannot dial, a node name that cannot name pods and directories,
//! ports that collide, half a TLS key pair. Where the kubelet validates the same thing
//! (pkg/kubelet/apis/config/validation), the rule and wording are its own.

use super::{Flags, Options, OptionsError};
use std::net::IpAddr;
use std::path::{Component, Path};
use std::time::Duration;

/// Names the flag when it was given, else the config file's field.
struct Source<'a> {
    file_label: &'a str,
}

impl Source<'_> {
    fn err(
        &self,
        from_flag: bool,
        (flag, field): (&'static str, &'static str),
        value: impl ToString,
        reason: &'static str,
    ) -> OptionsError {
        OptionsError::Invalid {
            source_name: if from_flag {
                "flag".into()
            } else {
                self.file_label.to_string()
            },
            name: if from_flag { flag } else { field },
            value: value.to_string(),
            reason,
        }
    }
}

/// Checks `o`, resolved from `flags` and the file `file_label` names.
pub(super) fn check(o: &Options, flags: &Flags, file_label: &str) -> Result<(), OptionsError> {
    let src = Source { file_label };
    // TLS bootstrapping writes the kubeconfig it obtains to --kubeconfig; without one it has
    // nowhere to put it (the kubelet fails the same way, later).
    if let (Some(b), None) = (&o.certificates.bootstrap_kubeconfig, &o.kubeconfig) {
        return Err(src.err(
            true,
            ("--bootstrap-kubeconfig", "--bootstrap-kubeconfig"),
            b.display(),
            "needs --kubeconfig, the file the bootstrapped kubeconfig is written to",
        ));
    }
    for (d, given, names) in [
        (
            o.file_check_frequency,
            flags.file_check_frequency.is_some(),
            ("--file-check-frequency", "fileCheckFrequency"),
        ),
        (
            o.sync_frequency,
            flags.sync_frequency.is_some(),
            ("--sync-frequency", "syncFrequency"),
        ),
        (
            o.runtime_request_timeout,
            flags.runtime_request_timeout.is_some(),
            ("--runtime-request-timeout", "runtimeRequestTimeout"),
        ),
    ] {
        if d.is_zero() {
            return Err(src.err(given, names, "0", "must be greater than 0"));
        }
    }
    // validation.go: CrashLoopBackOff.MaxContainerRestartPeriod must be set between 1s and 300s.
    let max = o.max_container_restart_period;
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&max) {
        return Err(src.err(
            false,
            ("", "crashLoopBackOff.maxContainerRestartPeriod"),
            format!("{max:?}"),
            "must be between 1s and 300s",
        ));
    }
    if proto::parse_endpoint(&o.container_runtime_endpoint).is_err() {
        return Err(src.err(
            flags.container_runtime_endpoint.is_some(),
            ("--container-runtime-endpoint", "containerRuntimeEndpoint"),
            &o.container_runtime_endpoint,
            "not a CRI endpoint nodelet can dial: unix:///<absolute path> or an absolute socket path",
        ));
    }
    if proto::parse_endpoint(&o.image_service_endpoint).is_err() {
        return Err(src.err(
            flags.image_service_endpoint.is_some(),
            ("--image-service-endpoint", "imageServiceEndpoint"),
            &o.image_service_endpoint,
            "not a CRI endpoint nodelet can dial: unix:///<absolute path> or an absolute socket path",
        ));
    }
    // The node name becomes part of every static pod's name, its log directory and the serving
    // certificate's SAN.
    if !is_dns_subdomain(&o.node_name) {
        return Err(OptionsError::Invalid {
            source_name: if flags.hostname_override.is_some() {
                "flag".into()
            } else {
                "host name (/proc/sys/kernel/hostname) as".into()
            },
            name: if flags.hostname_override.is_some() {
                "--hostname-override"
            } else {
                "node name"
            },
            value: o.node_name.clone(),
            reason: "must be a lowercase RFC 1123 subdomain of at most 253 characters",
        });
    }
    if !o.cgroup_root.starts_with('/') {
        return Err(src.err(
            flags.cgroup_root.is_some(),
            ("--cgroup-root", "cgroupRoot"),
            &o.cgroup_root,
            "must be an absolute cgroup path",
        ));
    }
    // validation.go: podLogsDir must be absolute and normalized.
    if !is_absolute_normal(&o.pod_logs_dir) {
        return Err(src.err(
            false,
            ("", "podLogsDir"),
            o.pod_logs_dir.display(),
            "must be an absolute, normalized path",
        ));
    }
    if let Some(ip) = o.cluster_dns.iter().find(|s| s.parse::<IpAddr>().is_err()) {
        return Err(src.err(false, ("", "clusterDNS"), ip, "not an IP address"));
    }
    if let Some(d) = &o.cluster_domain
        && !is_dns_subdomain(d.strip_suffix('.').unwrap_or(d))
    {
        return Err(src.err(
            false,
            ("", "clusterDomain"),
            d,
            "must be a lowercase RFC 1123 subdomain",
        ));
    }
    check_server(o, flags, &src)
}

fn check_server(o: &Options, flags: &Flags, src: &Source<'_>) -> Result<(), OptionsError> {
    let s = &o.server;
    // A collision is blamed on the port that was set explicitly, a flag first.
    if s.read_only_port != 0 && s.read_only_port == s.port {
        let names = if flags.read_only_port.is_none() && flags.port.is_some() {
            ("--port", "port")
        } else {
            ("--read-only-port", "readOnlyPort")
        };
        return Err(src.err(
            flags.read_only_port.is_some() || flags.port.is_some(),
            names,
            s.read_only_port,
            "the secure and read-only ports must differ: both are bound to the same address",
        ));
    }
    let overlap = s.healthz_bind_address == s.address
        || s.healthz_bind_address.is_unspecified()
        || s.address.is_unspecified();
    if s.healthz_port != 0 && overlap && [s.port, s.read_only_port].contains(&s.healthz_port) {
        let names = match (flags.healthz_port, flags.port, flags.read_only_port) {
            (None, Some(p), _) if p == s.healthz_port => ("--port", "port"),
            (None, _, Some(p)) if p == s.healthz_port => ("--read-only-port", "readOnlyPort"),
            _ => ("--healthz-port", "healthzPort"),
        };
        return Err(src.err(
            flags.healthz_port.is_some()
                || flags.port == Some(s.healthz_port)
                || flags.read_only_port == Some(s.healthz_port),
            names,
            s.healthz_port,
            "the healthz port must differ from the secure and read-only ports on an overlapping address",
        ));
    }
    // The kubelet loads the pair or fails; serving a self-signed certificate instead of the one
    // configured would hide the mistake.
    match (&s.tls_cert_file, &s.tls_private_key_file) {
        (Some(_), None) => Err(src.err(
            flags.tls_cert_file.is_some(),
            ("--tls-private-key-file", "tlsPrivateKeyFile"),
            "",
            "required with the TLS certificate file",
        )),
        (None, Some(_)) => Err(src.err(
            flags.tls_private_key_file.is_some(),
            ("--tls-cert-file", "tlsCertFile"),
            "",
            "required with the TLS private key file",
        )),
        _ => Ok(()),
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Absolute, with no `.`, `..`, repeated or trailing separators (filepath.Clean(p) == p).
fn is_absolute_normal(p: &Path) -> bool {
    let Some(s) = p.to_str() else {
        return false;
    };
    p.is_absolute()
        && (s == "/" || !s.ends_with('/'))
        && !s.contains("//")
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !s.split('/').any(|part| part == ".")
}
