//! Property tests of flag and KubeletConfiguration resolution (issue 10).
//!
//! Argument vectors are drawn from the real flag names (clap's own list, plus removed and
//! not-implemented kubelet flags) with good and bad values in every spelling pflag accepts;
//! config files are a valid skeleton with fields mutated. The property: `Options::from_args`
//! never panics; an error names the flag, or the file and the field; accepted options are
//! consistent (positive periods within Go's range, dialable endpoints, a node name that can
//! name pods, ports that do not collide), and the managers' arithmetic on them cannot overflow.
//!
//! Bounded case counts (`PROPTEST_CASES` overrides), no failure persistence files.

use super::*;
use crate::kuberuntime::backoff::{self, Backoff};
use crate::proptest_kit::run;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

/// Regression for the harness itself: a removed value flag swallows the next argument, so
/// the file named may be an earlier `--config`.
#[test]
fn a_swallowed_config_flag_is_not_a_naming_defect() {
    let dir = Dir::new("swallow");
    let path = dir.0.join("k.yaml");
    let argv = ["nodelet", "--config=0", "--container-runtime"]
        .map(String::from)
        .into_iter()
        .chain([format!("--config={}", path.display())])
        .collect();
    if let Err(e) = check(argv, Some(&path)) {
        panic!("{e}");
    }
}

/// A directory of this test's own for config files, removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let d =
            std::env::temp_dir().join(format!("nodelet-optprops-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmp dir");
        Self(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every long flag clap knows, and kubelet flags the prescan strips.
fn flag_names() -> Vec<String> {
    use clap::CommandFactory;
    let mut names: Vec<String> = Flags::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .collect();
    names.extend(
        [
            "container-runtime",
            "network-plugin",
            "logtostderr",
            "allow-privileged",
            "eviction-hard",
            "rotate-server-certificates",
            "cluster-dns",
            "no-such-flag",
            "help",
            "version",
        ]
        .map(String::from),
    );
    names
}

const VALUES: &[&str] = &[
    "",
    "0",
    "1",
    "-1",
    "65535",
    "65536",
    "10250",
    "10255",
    "10248",
    "true",
    "false",
    "T",
    "maybe",
    "20s",
    "1m30s",
    "0s",
    "1.5h",
    "-5s",
    "2562047h",
    "2562048h",
    "99999999999h",
    "1ns",
    "soon",
    "301s",
    "5m",
    "cgroupfs",
    "systemd",
    "cgroups",
    "Webhook",
    "AlwaysAllow",
    "Deny",
    "0.0.0.0",
    "127.0.0.1",
    "::",
    "::1",
    "10.0.0.1,10.0.0.2",
    "not-an-ip",
    "/",
    "/etc/k.yaml",
    "rel/path",
    "unix:///run/containerd/containerd.sock",
    "tcp://1.2.3.4:5",
    "unix://relative",
    "/run/x.sock",
    "node-a",
    "Node_A",
    "a b",
    "../../x",
    "é",
    "x.example.com",
    "example.com/role=edge,kubernetes.io/os=linux",
    "node-role.kubernetes.io/master=",
    "dedicated=gpu:NoSchedule",
    "k=v",
    "-",
    "--",
    "=",
    "a=b",
];

/// One argument group: `--name=value`, `--name value`, `--name`, `--name_with_underscores`,
/// short `-v`, a bare word or `--`.
fn arg() -> BoxedStrategy<Vec<String>> {
    let names = flag_names();
    let value = prop_oneof![
        6 => prop::sample::select(VALUES.to_vec()).prop_map(String::from),
        1 => ".{0,6}",
    ];
    prop_oneof![
        5 => (prop::sample::select(names.clone()), value.clone())
            .prop_map(|(n, v)| vec![format!("--{n}={v}")]),
        3 => (prop::sample::select(names.clone()), value.clone())
            .prop_map(|(n, v)| vec![format!("--{n}"), v]),
        1 => prop::sample::select(names.clone()).prop_map(|n| vec![format!("--{n}")]),
        1 => (prop::sample::select(names), value.clone())
            .prop_map(|(n, v)| vec![format!("--{}={v}", n.replace('-', "_"))]),
        1 => value.clone().prop_map(|v| vec!["-v".into(), v]),
        1 => value.prop_map(|v| vec![v]),
        1 => Just(vec!["--".to_string()]),
    ]
    .boxed()
}

fn argv() -> BoxedStrategy<Vec<String>> {
    prop::collection::vec(arg(), 0..6)
        .prop_map(|groups| {
            std::iter::once("nodelet".to_string())
                .chain(groups.into_iter().flatten())
                .collect()
        })
        .boxed()
}

/// Top-level config fields and values to put in them, good and bad.
const FIELDS: &[&str] = &[
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "maxPods",
    "registerWithTaints",
    "staticPodPath",
    "podLogsDir",
    "syncFrequency",
    "fileCheckFrequency",
    "runtimeRequestTimeout",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "cgroupDriver",
    "cgroupRoot",
    "cgroupsPerQOS",
    "registerNode",
    "seccompDefault",
    "allowedUnsafeSysctls",
    "resolvConf",
    "clusterDomain",
    "clusterDNS",
    "crashLoopBackOff",
    "logging",
    "address",
    "port",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "authentication",
    "authorization",
    "healthzPort",
    "healthzBindAddress",
    "evictionHard",
    "noSuchField",
    "apiVersion",
    "kind",
];

fn yaml_value() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(VALUES.to_vec()).prop_map(|v| format!("{v:?}")),
        3 => prop::sample::select(VALUES.to_vec()).prop_map(String::from),
        1 => Just("[1, 2]".to_string()),
        1 => Just("{maxContainerRestartPeriod: 10s}".to_string()),
        1 => Just("{maxContainerRestartPeriod: 0s}".to_string()),
        1 => Just("{verbosity: 300}".to_string()),
        1 => Just("{webhook: {cacheTTL: 2562048h, enabled: true}, x509: {clientCAFile: /ca}}".to_string()),
        1 => Just("{mode: Webhook, webhook: {cacheAuthorizedTTL: 1h, cacheUnauthorizedTTL: soon}}".to_string()),
        1 => Just("[\"10.96.0.10\", \"dns\"]".to_string()),
        1 => Just("[{key: dedicated, value: e2e, effect: NoSchedule}]".to_string()),
        1 => Just("[{key: \"bad key\", effect: Sometimes}]".to_string()),
        1 => Just("null".to_string()),
        1 => Just("99999999999999999999".to_string()),
    ]
    .boxed()
}

/// A valid KubeletConfiguration with up to four fields set to random values.
fn config_file() -> BoxedStrategy<String> {
    prop::collection::vec((prop::sample::select(FIELDS.to_vec()), yaml_value()), 0..5)
        .prop_map(|fields| {
            let mut text = String::from(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 staticPodPath: /etc/kubernetes/manifests\nsyncFrequency: 1m\n",
            );
            let mut seen = std::collections::HashSet::new();
            for (k, v) in fields {
                if seen.insert(k) && !text.contains(&format!("\n{k}:")) {
                    text.push_str(&format!("{k}: {v}\n"));
                }
            }
            text
        })
        .boxed()
}

/// Every value `--config` is given in `argv`.
fn config_values(argv: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in argv.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--config=") {
            out.push(v.to_string());
        } else if a == "--config"
            && let Some(v) = argv.get(i + 1)
        {
            out.push(v.clone());
        }
    }
    out
}

/// The property over one argv (and the config file it may name at `path`).
fn check(argv: Vec<String>, path: Option<&std::path::Path>) -> Result<(), TestCaseError> {
    let mut files = config_values(&argv);
    files.extend(path.map(|p| p.display().to_string()));
    let names_a_file = |msg: &str| {
        files
            .iter()
            .any(|f| msg.contains(&format!("kubelet config file {f}")))
    };
    match Options::from_args(argv) {
        Err(OptionsResolveError::Clap(e)) => {
            use clap::error::ErrorKind;
            let msg = e.to_string();
            if !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                prop_assert!(
                    msg.contains("--") || msg.contains("argument") || msg.contains('\''),
                    "usage error names no argument: {msg}"
                );
            }
        }
        Err(OptionsResolveError::Options(e)) => {
            let msg = e.to_string();
            match &e {
                OptionsError::Invalid {
                    source_name, name, ..
                } => {
                    if source_name == "flag" {
                        prop_assert!(name.starts_with("--"), "flag error names a field: {msg}");
                    } else if source_name.starts_with("kubelet config file") {
                        prop_assert!(names_a_file(&msg), "file error without the file: {msg}");
                        prop_assert!(!name.is_empty() && !name.starts_with("--"), "{msg}");
                    } else {
                        prop_assert!(name == &"node name", "unexpected source: {msg}");
                    }
                }
                OptionsError::File(_) => {
                    prop_assert!(names_a_file(&msg), "file error without the file: {msg}");
                }
                #[allow(unreachable_patterns)]
                other => {
                    let msg = other.to_string();
                    prop_assert!(
                        msg.contains("flag") || msg.contains("kubelet config file"),
                        "{msg}"
                    );
                }
            }
        }
        Ok(o) => consistent(&o)?,
    }
    Ok(())
}

/// What the managers assume of resolved options, and their arithmetic on them.
fn consistent(o: &Options) -> Result<(), TestCaseError> {
    let go_max = Duration::from_nanos(i64::MAX as u64);
    for (name, d) in [
        ("fileCheckFrequency", o.file_check_frequency),
        ("syncFrequency", o.sync_frequency),
        ("runtimeRequestTimeout", o.runtime_request_timeout),
        ("maxContainerRestartPeriod", o.max_container_restart_period),
        ("cacheTTL", o.server.authentication_webhook_cache_ttl),
        (
            "cacheAuthorizedTTL",
            o.server.authorization_webhook_cache_authorized_ttl,
        ),
        (
            "cacheUnauthorizedTTL",
            o.server.authorization_webhook_cache_unauthorized_ttl,
        ),
    ] {
        prop_assert!(d <= go_max, "{name} {d:?} is past Go's duration range");
        // server/webhook.rs caches until now + ttl; pod_workers' jitter adds up to half.
        prop_assert!(
            Instant::now().checked_add(d).is_some(),
            "{name}: now + {d:?}"
        );
        prop_assert!(d.checked_add(d / 2).is_some(), "{name}: jitter of {d:?}");
    }
    for (name, d) in [
        ("fileCheckFrequency", o.file_check_frequency),
        ("syncFrequency", o.sync_frequency),
        ("runtimeRequestTimeout", o.runtime_request_timeout),
        ("nodeStatusUpdateFrequency", o.node_status.update_frequency),
        ("nodeStatusReportFrequency", o.node_status.report_frequency),
    ] {
        prop_assert!(!d.is_zero(), "{name} is zero");
        prop_assert!(d <= go_max, "{name} {d:?} is past Go's duration range");
        // nodestatus jitters the update period by 4 % and schedules reports at 1.5x.
        prop_assert!(
            Instant::now().checked_add(d.mul_f64(1.5)).is_some(),
            "{name}: now + 1.5 x {d:?}"
        );
    }
    // The Lease's leaseDurationSeconds is an int32 > 0.
    let lease = o.node_status.lease_duration_seconds;
    prop_assert!(lease > 0 && i32::try_from(lease).is_ok(), "lease {lease}");
    for t in &o.node_status.taints {
        prop_assert!(super::node::check_taint(t).is_ok(), "taint {t:?}");
    }
    let mut b = Backoff::new(backoff::INITIAL, o.max_container_restart_period);
    let now = SystemTime::now();
    for _ in 0..3 {
        b.next("k", now, now);
    }
    let _ = b.remaining_since("k", now, now);
    prop_assert!(proto::parse_endpoint(&o.container_runtime_endpoint).is_ok());
    prop_assert!(proto::parse_endpoint(&o.image_service_endpoint).is_ok());
    prop_assert!(
        !o.node_name.is_empty()
            && o.node_name.len() <= 253
            && o.node_name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.'),
        "node name {:?}",
        o.node_name
    );
    prop_assert!(o.server.port != 0);
    prop_assert!(o.server.read_only_port == 0 || o.server.read_only_port != o.server.port);
    prop_assert!(
        o.cgroup_root.starts_with('/'),
        "cgroupRoot {:?}",
        o.cgroup_root
    );
    prop_assert!(o.pod_logs_dir.is_absolute());
    prop_assert!(
        o.server.tls_cert_file.is_some() == o.server.tls_private_key_file.is_some(),
        "half a TLS key pair"
    );
    for ip in &o.cluster_dns {
        prop_assert!(ip.parse::<IpAddr>().is_ok(), "clusterDNS {ip:?}");
    }
    let cm = crate::cm::ContainerManager::new(o);
    let parent = cm.pod_cgroup_parent("0b9c3ad6-6c1e", crate::pod::QosClass::Burstable);
    prop_assert!(
        !parent.split('/').any(|s| s == ".."),
        "cgroup parent {parent:?}"
    );
    Ok(())
}

#[test]
fn arbitrary_flags_resolve_or_name_the_flag() {
    run(512, argv(), |a| check(a, None));
}

#[test]
fn mutated_config_files_resolve_or_name_file_and_field() {
    let dir = Dir::new("file");
    let path = dir.0.join("kubelet.yaml");
    run(512, (config_file(), argv()), |(text, mut a)| {
        std::fs::write(&path, &text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Random flags may still name another file (a later --config, or ours swallowed as the
        // value of a flag before it): any of them may be the one an error names.
        a.push(format!("--config={}", path.display()));
        check(a, Some(&path))
    });
}

/// Minimal inputs the properties found, kept as plain tests.
mod regressions {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        std::iter::once("nodelet")
            .chain(s.split_whitespace())
            .map(String::from)
            .collect()
    }

    fn refused(argv: &str, named: &str) {
        let err = Options::from_args(args(argv)).expect_err(argv).to_string();
        assert!(err.contains(named), "{named} not in: {err}");
    }

    #[test]
    fn flag_errors_name_the_flag_not_the_config_field() {
        refused("--cgroup-driver=cgroups", "flag --cgroup-driver");
        refused("--authorization-mode=Deny", "flag --authorization-mode");
        refused("--port=0", "flag --port");
        refused("--address=not-an-ip", "flag --address");
        refused("--healthz-bind-address=x", "flag --healthz-bind-address");
    }

    #[test]
    fn durations_past_gos_range_are_refused() {
        // 2562048h was accepted and overflowed `Instant::now() + ttl` in the webhook cache.
        refused(
            "--authentication-token-webhook-cache-ttl=2562048h",
            "--authentication-token-webhook-cache-ttl",
        );
        refused("--sync-frequency=99999999999h", "--sync-frequency");
    }

    #[test]
    fn zero_periods_are_refused() {
        refused("--file-check-frequency=0s", "flag --file-check-frequency");
        refused("--sync-frequency=0", "flag --sync-frequency");
        refused(
            "--runtime-request-timeout=0s",
            "flag --runtime-request-timeout",
        );
    }

    #[test]
    fn endpoints_the_cri_client_cannot_dial_are_refused() {
        refused(
            "--container-runtime-endpoint=tcp://1.2.3.4:5",
            "flag --container-runtime-endpoint",
        );
        refused(
            "--image-service-endpoint=unix://relative",
            "flag --image-service-endpoint",
        );
    }

    #[test]
    fn node_names_that_cannot_name_pods_are_refused() {
        for name in ["../../x", "Node_A", "é"] {
            refused(
                &format!("--hostname-override={name}"),
                "flag --hostname-override",
            );
        }
    }

    #[test]
    fn colliding_ports_and_half_key_pairs_are_refused() {
        refused("--port=10255", "flag --port");
        refused("--read-only-port=10250", "flag --read-only-port");
        refused("--healthz-port=10250", "flag --healthz-port");
        refused("--tls-cert-file=/c.pem", "flag --tls-private-key-file");
        refused("--cgroup-root=kubepods", "flag --cgroup-root");
    }

    #[test]
    fn config_file_values_name_the_file_and_field() {
        let dir = Dir::new("regression");
        let path = dir.0.join("k.yaml");
        for (field, named) in [
            (
                "crashLoopBackOff: {maxContainerRestartPeriod: 10m}",
                "crashLoopBackOff.maxContainerRestartPeriod",
            ),
            ("clusterDNS: [dns]", "clusterDNS"),
            ("clusterDomain: \"a b\"", "clusterDomain"),
            ("podLogsDir: logs", "podLogsDir"),
            ("cgroupDriver: cgroups", "field cgroupDriver"),
        ] {
            std::fs::write(
                &path,
                format!("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{field}\n"),
            )
            .expect("write");
            let err = Options::from_args(args(&format!("--config={}", path.display())))
                .expect_err(field)
                .to_string();
            assert!(
                err.contains(named) && err.contains(&path.display().to_string()),
                "{err}"
            );
        }
    }
}
