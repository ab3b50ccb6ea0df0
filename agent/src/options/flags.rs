//! Command-line flags, named and defaulted as the kubelet's
//! (cmd/kubelet/app/options/options.go and the flag bindings of pkg/kubelet/apis/config).
//!
//! Flags are parsed in two passes. The first strips flags the kubelet has *removed* (a one-line
//! deprecation warning each, so old unit files keep starting) and flags the kubelet *has* but we
//! do not implement yet (logged as ignored, never dropped silently). What is left goes to clap,
//! so a flag the kubelet never had fails with clap's "unexpected argument" error.

use clap::{ArgAction, Parser};
use std::path::PathBuf;

/// The flags nodelet implements. `None` means "not given": the config file or default applies.
#[derive(Debug, Default, Parser)]
#[command(
    name = "nodelet",
    version,
    about = "nodelet: a Kubernetes node agent (kubelet-compatible flags)",
    // pflag: a repeated flag takes its last value (unit files and drop-ins append flags).
    args_override_self = true
)]
pub struct Flags {
    /// KubeletConfiguration file (kubelet.config.k8s.io/v1beta1); flags override its fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Kubeconfig for the API server; without it the agent runs standalone.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Bootstrap kubeconfig (TLS bootstrapping); cluster mode only.
    #[arg(long)]
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Directory of the client certificates from TLS bootstrapping (default <root-dir>/pki).
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Renew the client certificate before it expires (config: rotateCertificates).
    #[arg(long, require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub rotate_certificates: Option<bool>,
    /// CRI runtime endpoint, e.g. unix:///run/containerd/containerd.sock.
    #[arg(long)]
    pub container_runtime_endpoint: Option<String>,
    /// CRI image service endpoint; defaults to the runtime endpoint.
    #[arg(long)]
    pub image_service_endpoint: Option<String>,
    /// Directory (or file) of static pod manifests (config: staticPodPath).
    #[arg(long, visible_alias = "manifest-path")]
    pub pod_manifest_path: Option<PathBuf>,
    /// How often the static pod path is re-read in full (config: fileCheckFrequency).
    #[arg(long)]
    pub file_check_frequency: Option<String>,
    /// Maximum period between pod syncs (config: syncFrequency).
    #[arg(long)]
    pub sync_frequency: Option<String>,
    /// Timeout of every CRI request except long-running ones (config: runtimeRequestTimeout).
    #[arg(long)]
    pub runtime_request_timeout: Option<String>,
    /// The node's IP address(es), comma separated.
    #[arg(long)]
    pub node_ip: Option<String>,
    /// Register the node with the API server (cluster mode).
    #[arg(long, require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub register_node: Option<bool>,
    /// Unsafe sysctls (or `prefix*` patterns) pods may set, comma separated (config:
    /// allowedUnsafeSysctls).
    #[arg(long)]
    pub allowed_unsafe_sysctls: Option<String>,
    /// RuntimeDefault seccomp for containers that name no profile (config: seccompDefault).
    #[arg(long, require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub seccomp_default: Option<bool>,
    /// Node name to use instead of the host name.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// Labels to add when registering the node (cluster mode): `key=value,...`.
    #[arg(long)]
    pub node_labels: Option<String>,
    /// Taints to register the node with (config: registerWithTaints): `key=value:Effect,...`.
    #[arg(long)]
    pub register_with_taints: Option<String>,
    /// How often the node status is computed and posted if changed (config:
    /// nodeStatusUpdateFrequency).
    #[arg(long)]
    pub node_status_update_frequency: Option<String>,
    /// Duration of the node Lease in seconds (config: nodeLeaseDurationSeconds).
    #[arg(long, allow_negative_numbers = true)]
    pub node_lease_duration_seconds: Option<i32>,
    /// Log verbosity: 0 info, 2 kubelet's usual, 4 debug, 6+ trace.
    #[arg(short = 'v', long = "v", value_name = "LEVEL")]
    pub verbosity: Option<u8>,
    /// cgroup driver: cgroupfs or systemd (config: cgroupDriver).
    #[arg(long)]
    pub cgroup_driver: Option<String>,
    /// Root cgroup for pods (config: cgroupRoot).
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Create the QoS cgroup hierarchy (config: cgroupsPerQOS).
    #[arg(long = "cgroups-per-qos", require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub cgroups_per_qos: Option<bool>,
    /// Directory for the agent's files (volumes, plugins, pod state).
    #[arg(long)]
    pub root_dir: Option<PathBuf>,
    /// Maximum number of pods (config: maxPods).
    #[arg(long)]
    pub max_pods: Option<u32>,
    /// Steady API request rate, per second (config: kubeAPIQPS).
    #[arg(long)]
    pub kube_api_qps: Option<f32>,
    /// API requests allowed in a burst (config: kubeAPIBurst).
    #[arg(long)]
    pub kube_api_burst: Option<i32>,
    /// Disk usage percent that starts image GC (config: imageGCHighThresholdPercent).
    #[arg(long, allow_hyphen_values = true)]
    pub image_gc_high_threshold: Option<i32>,
    /// Disk usage percent image GC frees down to (config: imageGCLowThresholdPercent).
    #[arg(long, allow_hyphen_values = true)]
    pub image_gc_low_threshold: Option<i32>,
    /// Minimum age of an unused image before GC (config: imageMinimumGCAge).
    #[arg(long)]
    pub minimum_image_ttl_duration: Option<String>,
    /// Minimum age of a dead container before GC (deprecated in the kubelet, still read).
    #[arg(long)]
    pub minimum_container_ttl_duration: Option<String>,
    /// Dead instances kept per container (deprecated in the kubelet, still read).
    #[arg(long, allow_hyphen_values = true)]
    pub maximum_dead_containers_per_container: Option<i32>,
    /// Dead containers kept on the node, negative: no limit (deprecated, still read).
    #[arg(long, allow_hyphen_values = true)]
    pub maximum_dead_containers: Option<i32>,
    /// Pause image; the CRI runtime's own sandbox image setting wins, as in the kubelet >= 1.27.
    #[arg(long)]
    pub pod_infra_container_image: Option<String>,
    /// Fail when swap is on (config: failSwapOn); accepted, swap is not checked yet.
    #[arg(long, require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub fail_swap_on: Option<bool>,
    /// Bind address of the secure and read-only ports (config: address).
    #[arg(long)]
    pub address: Option<String>,
    /// Secure HTTPS port (config: port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Read-only HTTP port, 0 to disable (config: readOnlyPort).
    #[arg(long)]
    pub read_only_port: Option<u16>,
    /// Serving certificate (config: tlsCertFile).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (config: tlsPrivateKeyFile).
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle for client certificates (config: authentication.x509.clientCAFile).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// Allow unauthenticated requests as system:anonymous (config: authentication.anonymous.enabled).
    #[arg(long, require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub anonymous_auth: Option<bool>,
    /// Bearer tokens via TokenReview (config: authentication.webhook.enabled); cluster mode only.
    #[arg(long, require_equals = true, num_args = 0..=1, default_missing_value = "true", value_parser = parse_go_bool)]
    pub authentication_token_webhook: Option<bool>,
    /// How long TokenReview answers are reused (config: authentication.webhook.cacheTTL).
    #[arg(long)]
    pub authentication_token_webhook_cache_ttl: Option<String>,
    /// AlwaysAllow or Webhook (config: authorization.mode).
    #[arg(long)]
    pub authorization_mode: Option<String>,
    /// How long allowed SubjectAccessReview answers are reused (config:
    /// authorization.webhook.cacheAuthorizedTTL).
    #[arg(long)]
    pub authorization_webhook_cache_authorized_ttl: Option<String>,
    /// How long denied SubjectAccessReview answers are reused (config:
    /// authorization.webhook.cacheUnauthorizedTTL).
    #[arg(long)]
    pub authorization_webhook_cache_unauthorized_ttl: Option<String>,
    /// Port of the local /healthz endpoint, 0 to disable (config: healthzPort).
    #[arg(long)]
    pub healthz_port: Option<u16>,
    /// Bind address of /healthz (config: healthzBindAddress).
    #[arg(long)]
    pub healthz_bind_address: Option<String>,
    /// Hard eviction thresholds, `signal<value,...` (config: evictionHard); repeats add up.
    #[arg(long, action = ArgAction::Append, value_name = "SIGNAL<VALUE,...")]
    pub eviction_hard: Vec<String>,
    /// Soft eviction thresholds, `signal<value,...` (config: evictionSoft).
    #[arg(long, action = ArgAction::Append, value_name = "SIGNAL<VALUE,...")]
    pub eviction_soft: Vec<String>,
    /// Soft threshold grace periods, `signal=duration,...` (config: evictionSoftGracePeriod).
    #[arg(long, action = ArgAction::Append, value_name = "SIGNAL=DURATION,...")]
    pub eviction_soft_grace_period: Vec<String>,
    /// Minimum reclaims, `signal=value,...` (config: evictionMinimumReclaim).
    #[arg(long, action = ArgAction::Append, value_name = "SIGNAL=VALUE,...")]
    pub eviction_minimum_reclaim: Vec<String>,
    /// How long a pressure condition outlives its threshold (config:
    /// evictionPressureTransitionPeriod).
    #[arg(long)]
    pub eviction_pressure_transition_period: Option<String>,
    /// Grace period cap for soft evictions, seconds (config: evictionMaxPodGracePeriod).
    #[arg(long, allow_negative_numbers = true)]
    pub eviction_max_pod_grace_period: Option<i32>,
    /// Resources reserved for Kubernetes daemons, `cpu=200m,memory=500Mi` (config: kubeReserved).
    #[arg(long, action = ArgAction::Append, value_name = "RESOURCE=QUANTITY,...")]
    pub kube_reserved: Vec<String>,
    /// Resources reserved for the OS, `cpu=200m,memory=500Mi` (config: systemReserved).
    #[arg(long, action = ArgAction::Append, value_name = "RESOURCE=QUANTITY,...")]
    pub system_reserved: Vec<String>,
    /// Node allocatable enforcement levels, e.g. `pods` (config: enforceNodeAllocatable).
    #[arg(long)]
    pub enforce_node_allocatable: Option<String>,
    /// Per-module verbosity (klog); accepted, the level applies to all modules.
    #[arg(long, action = ArgAction::Set)]
    pub vmodule: Option<String>,
}

/// Go's strconv.ParseBool, which pflag uses for `--flag=value` booleans.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?} (want true or false)")),
    }
}

/// Whether a flag that we only accept takes a value (`--x v`) or is boolean (`--x`, `--x=false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Arity {
    Value,
    Bool,
}

/// Flags the kubelet removed; old unit files still pass them.
/// Source: kubernetes CHANGELOGs: dockershim and CNI flags in 1.24 (kubernetes#106907), klog's
/// file flags in 1.26 (#112120), `--container-runtime` in 1.27 (#114017),
/// `--keep-terminated-pod-volumes` in 1.30 (#122082).
const REMOVED: &[(&str, Arity, &str)] = &[
    ("container-runtime", Arity::Value, "1.27"),
    ("network-plugin", Arity::Value, "1.24"),
    ("network-plugin-mtu", Arity::Value, "1.24"),
    ("cni-bin-dir", Arity::Value, "1.24"),
    ("cni-conf-dir", Arity::Value, "1.24"),
    ("cni-cache-dir", Arity::Value, "1.24"),
    ("image-pull-progress-deadline", Arity::Value, "1.24"),
    ("docker-endpoint", Arity::Value, "1.24"),
    ("docker", Arity::Value, "1.24"),
    (
        "experimental-dockershim-root-directory",
        Arity::Value,
        "1.24",
    ),
    ("non-masquerade-cidr", Arity::Value, "1.24"),
    ("redirect-container-streaming", Arity::Bool, "1.20"),
    ("dynamic-config-dir", Arity::Value, "1.24"),
    ("master-service-namespace", Arity::Value, "1.27"),
    ("allow-privileged", Arity::Bool, "1.15"),
    ("cadvisor-port", Arity::Value, "1.12"),
    ("enable-custom-metrics", Arity::Bool, "1.12"),
    ("keep-terminated-pod-volumes", Arity::Bool, "1.30"),
    ("logtostderr", Arity::Bool, "1.26"),
    ("alsologtostderr", Arity::Bool, "1.26"),
    ("log-dir", Arity::Value, "1.26"),
    ("log-file", Arity::Value, "1.26"),
    ("log-file-max-size", Arity::Value, "1.26"),
    ("log-backtrace-at", Arity::Value, "1.26"),
    ("add-dir-header", Arity::Bool, "1.26"),
    ("skip-headers", Arity::Bool, "1.26"),
    ("skip-log-headers", Arity::Bool, "1.26"),
    ("stderrthreshold", Arity::Value, "1.26"),
    ("one-output", Arity::Bool, "1.26"),
];

/// Flags the current kubelet has that nodelet accepts but does not act on yet.
/// Each is logged once as ignored so that no setting disappears silently.
const NOT_IMPLEMENTED: &[(&str, Arity)] = &[
    ("tls-cipher-suites", Arity::Value),
    ("tls-min-version", Arity::Value),
    ("rotate-server-certificates", Arity::Bool),
    ("cluster-dns", Arity::Value),
    ("cluster-domain", Arity::Value),
    ("resolv-conf", Arity::Value),
    ("kube-reserved-cgroup", Arity::Value),
    ("system-reserved-cgroup", Arity::Value),
    ("reserved-cpus", Arity::Value),
    ("cpu-manager-policy", Arity::Value),
    ("topology-manager-policy", Arity::Value),
    ("memory-manager-policy", Arity::Value),
    ("feature-gates", Arity::Value),
    ("provider-id", Arity::Value),
    ("cloud-provider", Arity::Value),
    ("cloud-config", Arity::Value),
    ("image-credential-provider-config", Arity::Value),
    ("image-credential-provider-bin-dir", Arity::Value),
    ("serialize-image-pulls", Arity::Bool),
    ("registry-qps", Arity::Value),
    ("registry-burst", Arity::Value),
    ("event-qps", Arity::Value),
    ("event-burst", Arity::Value),
    ("kube-api-content-type", Arity::Value),
    ("make-iptables-util-chains", Arity::Bool),
    ("protect-kernel-defaults", Arity::Bool),
    ("volume-plugin-dir", Arity::Value),
    ("volume-stats-agg-period", Arity::Value),
    ("pods-per-core", Arity::Value),
    ("pod-max-pids", Arity::Value),
    ("pod-cidr", Arity::Value),
    ("node-status-max-images", Arity::Value),
    ("runtime-cgroups", Arity::Value),
    ("kubelet-cgroups", Arity::Value),
    ("system-cgroups", Arity::Value),
    ("container-log-max-size", Arity::Value),
    ("container-log-max-files", Arity::Value),
    ("manifest-url", Arity::Value),
    ("manifest-url-header", Arity::Value),
    ("http-check-frequency", Arity::Value),
    ("register-schedulable", Arity::Bool),
    ("lock-file", Arity::Value),
    ("exit-on-lock-contention", Arity::Bool),
    ("oom-score-adj", Arity::Value),
    ("local-storage-capacity-isolation", Arity::Bool),
    ("streaming-connection-idle-timeout", Arity::Value),
    ("housekeeping-interval", Arity::Value),
    ("logging-format", Arity::Value),
    ("log-flush-frequency", Arity::Value),
    ("log-json-info-buffer-size", Arity::Value),
    ("log-json-split-stream", Arity::Bool),
    ("log-text-info-buffer-size", Arity::Value),
    ("log-text-split-stream", Arity::Bool),
    ("runonce", Arity::Bool),
    ("enable-server", Arity::Bool),
    ("enable-debugging-handlers", Arity::Bool),
    ("enable-controller-attach-detach", Arity::Bool),
    ("hairpin-mode", Arity::Value),
    ("max-open-files", Arity::Value),
    ("experimental-mounter-path", Arity::Value),
    ("experimental-allocatable-ignore-eviction", Arity::Bool),
    ("config-dir", Arity::Value),
    ("contention-profiling", Arity::Bool),
    ("cpu-cfs-quota", Arity::Bool),
    ("cpu-cfs-quota-period", Arity::Value),
    ("cpu-manager-policy-options", Arity::Value),
    ("cpu-manager-reconcile-period", Arity::Value),
    ("qos-reserved", Arity::Value),
    ("reserved-memory", Arity::Value),
    ("topology-manager-scope", Arity::Value),
    ("topology-manager-policy-options", Arity::Value),
    ("kernel-memcg-notification", Arity::Bool),
    ("fail-cgroupv1", Arity::Bool),
];

/// What the first pass found: flags to warn about, and the arguments clap should see.
#[derive(Debug, Default)]
pub struct Prescan {
    /// The remaining arguments, program name first.
    pub args: Vec<String>,
    /// Removed flags that were given, with the release that removed them.
    pub removed: Vec<(String, &'static str)>,
    /// Kubelet flags we accept but do not implement yet.
    pub not_implemented: Vec<String>,
}

/// Our flags that take the next argument as their value (`--config <path>`, `-v <n>`), by
/// long name, alias and short name.
fn value_flags() -> std::collections::HashSet<String> {
    use clap::CommandFactory;
    let mut out = std::collections::HashSet::new();
    for a in Flags::command().get_arguments() {
        if !a.get_action().takes_values() || a.is_require_equals_set() {
            continue;
        }
        out.extend(a.get_long().map(|l| format!("--{l}")));
        out.extend(
            a.get_all_aliases()
                .into_iter()
                .flatten()
                .map(|l| format!("--{l}")),
        );
        out.extend(a.get_short().map(|c| format!("-{c}")));
    }
    out
}

/// First pass over argv: strips removed and not-yet-implemented kubelet flags.
pub fn prescan(argv: impl IntoIterator<Item = String>) -> Prescan {
    let mut out = Prescan::default();
    // The argument after one of our value flags is its value, whatever it looks like (pflag
    // reads it so too): `--config --container-runtime=x` must not lose the second word as a
    // removed flag and read the following one as the config file.
    let takes_value = value_flags();
    let mut it = argv.into_iter().peekable();
    if let Some(prog) = it.next() {
        out.args.push(prog);
    }
    while let Some(arg) = it.next() {
        if arg == "--" {
            out.args.push(arg);
            out.args.extend(it.by_ref());
            break;
        }
        let Some(body) = arg.strip_prefix("--") else {
            let value_next = takes_value.contains(&arg);
            out.args.push(arg);
            if value_next {
                out.args.extend(it.next());
            }
            continue;
        };
        let (raw_name, has_inline_value) = match body.split_once('=') {
            Some((n, _)) => (n, true),
            None => (body, false),
        };
        // pflag's WordSepNormalizeFunc makes `--foo_bar` the same flag as `--foo-bar`.
        let normalized = raw_name.replace('_', "-");
        let name = normalized.as_str();
        let removed = REMOVED.iter().find(|(n, _, _)| *n == name);
        let unimpl = NOT_IMPLEMENTED.iter().find(|(n, _)| *n == name);
        let arity = match (removed, unimpl) {
            (Some((_, a, release)), _) => {
                out.removed.push((name.to_string(), release));
                *a
            }
            (None, Some((_, a))) => {
                out.not_implemented.push(name.to_string());
                *a
            }
            (None, None) => {
                out.args.push(match body.split_once('=') {
                    Some((_, v)) => format!("--{name}={v}"),
                    None => format!("--{name}"),
                });
                if !has_inline_value && takes_value.contains(&format!("--{name}")) {
                    out.args.extend(it.next());
                }
                continue;
            }
        };
        // pflag: a value flag takes the next argument when not given inline; a bool never does.
        if arity == Arity::Value && !has_inline_value {
            it.next();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        std::iter::once("nodelet")
            .chain(s.split_whitespace())
            .map(String::from)
            .collect()
    }

    #[test]
    fn removed_flags_are_stripped_with_their_values() {
        let p = prescan(argv(
            "--container-runtime=remote --network-plugin cni --cni-bin-dir /opt/cni/bin \
             --v=2 --image-pull-progress-deadline=2m --redirect-container-streaming --node-ip 10.0.0.1",
        ));
        assert_eq!(p.args, argv("--v=2 --node-ip 10.0.0.1"));
        let names: Vec<_> = p.removed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "container-runtime",
                "network-plugin",
                "cni-bin-dir",
                "image-pull-progress-deadline",
                "redirect-container-streaming"
            ]
        );
    }

    #[test]
    fn kubelet_unit_file_flags_parse() {
        let p = prescan(argv(
            "--config=/var/lib/kubelet/kubelet-config.yaml --kubeconfig=/etc/kubernetes/kubelet.conf \
             --container-runtime-endpoint=unix:///run/containerd/containerd.sock \
             --image-pull-progress-deadline=2m --node-ip=10.1.2.3 --register-node=true --v=2 \
             --container-runtime=remote --network-plugin=cni --cni-bin-dir=/opt/cni/bin \
             --cni-conf-dir=/etc/cni/net.d --cgroup-driver=cgroupfs",
        ));
        let f = Flags::try_parse_from(&p.args).expect("kubelet flags parse");
        assert_eq!(f.verbosity, Some(2));
        assert_eq!(f.register_node, Some(true));
        assert_eq!(f.cgroup_driver.as_deref(), Some("cgroupfs"));
        assert_eq!(f.node_ip.as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn repeated_flag_takes_the_last_value() {
        let f = Flags::try_parse_from(argv(
            "--v=4 --v=2 --cgroup-driver=systemd --cgroup-driver=cgroupfs",
        ))
        .expect("repeats are fine");
        assert_eq!(f.verbosity, Some(2));
        assert_eq!(f.cgroup_driver.as_deref(), Some("cgroupfs"));
    }

    #[test]
    fn unknown_flag_is_an_error() {
        let p = prescan(argv("--no-such-kubelet-flag=1"));
        let err = Flags::try_parse_from(&p.args).expect_err("must fail");
        assert!(err.to_string().contains("--no-such-kubelet-flag"), "{err}");
    }

    #[test]
    fn bool_flags_take_inline_values_only() {
        let f = Flags::try_parse_from(argv("--register-node=false -v 4")).expect("parse");
        assert_eq!(f.register_node, Some(false));
        assert_eq!(f.verbosity, Some(4));
        let f = Flags::try_parse_from(argv("--register-node")).expect("parse");
        assert_eq!(f.register_node, Some(true));
    }

    #[test]
    fn a_value_flags_argument_is_never_stripped() {
        // Found by options::props: the config path came from the word after the removed flag.
        let p = prescan(argv("--config --container-runtime= 0"));
        assert_eq!(p.args, argv("--config --container-runtime= 0"));
        assert!(p.removed.is_empty());
        let p = prescan(argv("-v --logtostderr --node-ip 10.0.0.1"));
        assert_eq!(p.args, argv("-v --logtostderr --node-ip 10.0.0.1"));
    }

    #[test]
    fn not_implemented_flags_are_reported() {
        let p = prescan(argv(
            "--rotate-server-certificates=false --kube-reserved-cgroup /kube --v=1",
        ));
        assert_eq!(
            p.not_implemented,
            ["rotate-server-certificates", "kube-reserved-cgroup"]
        );
        assert_eq!(p.args, argv("--v=1"));
    }
}
