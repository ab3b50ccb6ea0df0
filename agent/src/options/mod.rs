//! Flags and KubeletConfiguration merged into one resolved [`Options`] (kubelet:
//! cmd/kubelet/app/options and pkg/kubelet/apis/config). Flags win over the file, as in the
//! kubelet; every default below is the kubelet's.

mod check;
pub mod duration;
pub mod eviction;
pub mod flags;
pub mod gc;
pub mod kubeletconfig;
pub mod node;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use flags::Flags;
pub use node::Taint;

/// How pod cgroups are named (kubelet `cgroupDriver`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// Plain paths such as `/kubepods/burstable/pod<uid>`.
    Cgroupfs,
    /// systemd slices such as `kubepods-burstable-pod<uid>.slice`.
    Systemd,
}

/// Authorization of secure-port requests (kubelet `authorization.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationMode {
    /// Every authenticated (or anonymous, when enabled) request is allowed.
    AlwaysAllow,
    /// SubjectAccessReview against the API server of `--kubeconfig`. Standalone there is none to
    /// ask: the server allows users authenticated by client certificate and denies anonymous ones
    /// (see `server::auth`).
    Webhook,
}

/// The HTTP server settings (kubelet `address`, `port`, `readOnlyPort`, TLS, authn/authz, healthz).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Bind address of the secure and read-only ports (default 0.0.0.0).
    pub address: IpAddr,
    /// Secure port (default 10250).
    pub port: u16,
    /// Read-only port; 0 is off (default 0 with --config, 10255 without, as the kubelet).
    pub read_only_port: u16,
    /// Serving certificate; with the key absent a self-signed one is made under <root-dir>/pki.
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key.
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle that client certificates must chain to.
    pub client_ca_file: Option<PathBuf>,
    /// Anonymous requests allowed (default false with --config, true without).
    pub anonymous_auth: bool,
    /// Bearer tokens checked by TokenReview (needs `--kubeconfig`; reported, not used standalone).
    pub authentication_webhook: bool,
    /// How long a TokenReview answer is reused (authentication.webhook.cacheTTL, default 2m).
    pub authentication_webhook_cache_ttl: Duration,
    /// How long an allowed SubjectAccessReview is reused (authorization.webhook.cacheAuthorizedTTL,
    /// default 5m).
    pub authorization_webhook_cache_authorized_ttl: Duration,
    /// How long a denied SubjectAccessReview is reused (authorization.webhook.cacheUnauthorizedTTL,
    /// default 30s).
    pub authorization_webhook_cache_unauthorized_ttl: Duration,
    /// Authorization mode (default Webhook with --config, AlwaysAllow without).
    pub authorization_mode: AuthorizationMode,
    /// /healthz port; 0 is off (default 10248).
    pub healthz_port: u16,
    /// /healthz bind address (default 127.0.0.1).
    pub healthz_bind_address: IpAddr,
}

/// Errors resolving options; each names the flag or field and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// The config file failed to load.
    #[error(transparent)]
    File(#[from] kubeletconfig::ConfigFileError),
    /// A flag or field has an invalid value.
    #[error("{source_name} {name}: invalid value {value:?}: {reason}")]
    Invalid {
        /// "flag" or "kubelet config file <path> field".
        source_name: String,
        /// Flag or field name.
        name: &'static str,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// One entry of a list flag or field (node labels, taints) is invalid.
    #[error("{source_name} {name}: invalid entry {entry:?}: {reason}")]
    InvalidEntry {
        /// "flag" or "kubelet config file <path> field".
        source_name: String,
        /// Flag or field name.
        name: &'static str,
        /// The entry at fault.
        entry: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// The resolved settings every manager reads.
#[derive(Debug, Clone)]
pub struct Options {
    /// The API client's rate limit (kubeAPIQPS / kubeAPIBurst; default 50 and 100).
    pub api_rate: ApiRate,
    /// Node name (lowercased host name or `--hostname-override`).
    pub node_name: String,
    /// Node IPs from `--node-ip`.
    pub node_ips: Vec<IpAddr>,
    /// Static pod manifests directory or file, if any.
    pub static_pod_path: Option<PathBuf>,
    /// Full re-read period of the static pod path (kubelet default 20s).
    pub file_check_frequency: Duration,
    /// Pod resync period (kubelet default 1m).
    pub sync_frequency: Duration,
    /// CRI request timeout (kubelet default 2m).
    pub runtime_request_timeout: Duration,
    /// CRI runtime endpoint.
    pub container_runtime_endpoint: String,
    /// CRI image endpoint (defaults to the runtime endpoint).
    pub image_service_endpoint: String,
    /// cgroup naming.
    pub cgroup_driver: CgroupDriver,
    /// Root cgroup for pods (kubelet default "/").
    pub cgroup_root: String,
    /// Put pods under QoS cgroups (kubelet default true).
    pub cgroups_per_qos: bool,
    /// Container log root (kubelet default /var/log/pods).
    pub pod_logs_dir: PathBuf,
    /// Agent state root (kubelet default /var/lib/kubelet).
    pub root_dir: PathBuf,
    /// Host resolv.conf used for dnsPolicy Default (kubelet default /etc/resolv.conf).
    pub resolv_conf: PathBuf,
    /// Cluster DNS domain (no default).
    pub cluster_domain: Option<String>,
    /// Cluster DNS servers.
    pub cluster_dns: Vec<String>,
    /// Cap of the restart back-off (kubelet default 5m).
    pub max_container_restart_period: Duration,
    /// Kubeconfig; `None` means standalone.
    pub kubeconfig: Option<PathBuf>,
    /// TLS bootstrapping and client certificate rotation.
    pub certificates: CertificateOptions,
    /// Register the node with the API server.
    pub register_node: bool,
    /// RuntimeDefault seccomp for containers that name no profile (the kubelet's
    /// seccompDefault; off by default).
    pub seccomp_default: bool,
    /// Unsafe sysctls (or `prefix*` patterns) pods may set beside the safe ones
    /// (allowedUnsafeSysctls).
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Node registration and heartbeat settings (cluster mode).
    pub node_status: NodeStatusOptions,
    /// klog verbosity.
    pub verbosity: u8,
    /// HTTP server settings.
    pub server: ServerOptions,
    /// Eviction thresholds and node allocatable reservations.
    pub eviction: eviction::EvictionOptions,
    /// Image and container garbage collection policies.
    pub gc: gc::GcOptions,
    /// Notes for the log once logging is up: ignored fields, deprecated flags.
    pub notices: Vec<String>,
}

/// How the node registers and reports itself (kubelet nodeStatusUpdateFrequency,
/// nodeStatusReportFrequency, nodeLeaseDurationSeconds, maxPods, --node-labels,
/// registerWithTaints).
#[derive(Debug, Clone)]
pub struct NodeStatusOptions {
    /// How often the status is computed and patched if it changed (default 10s).
    pub update_frequency: Duration,
    /// How often an unchanged status is still patched (default 5m, or the file's
    /// nodeStatusUpdateFrequency when only that is set, as the kubelet's defaulting).
    pub report_frequency: Duration,
    /// Lease duration in seconds (default 40); renewed every quarter of it.
    pub lease_duration_seconds: u32,
    /// The node's `pods` capacity (default 110).
    pub max_pods: u32,
    /// Labels added at registration (`--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// Taints set at registration (`--register-with-taints` / registerWithTaints).
    pub taints: Vec<Taint>,
}

/// The rate the agent's API client keeps to (client-go's token bucket): `qps` a second once a
/// `burst` is spent. The kubelet's v1beta1 defaults are 50 and 100.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiRate {
    /// Tokens added per second.
    pub qps: f64,
    /// Bucket size.
    pub burst: u32,
}

impl Default for ApiRate {
    fn default() -> Self {
        ApiRate {
            qps: 50.0,
            burst: 100,
        }
    }
}

/// kubeAPIQPS and kubeAPIBurst from flags or file; 0 or unset takes the default, as the
/// kubelet's defaulting does; negative values are refused.
fn api_rate(
    flags: &Flags,
    file: &kubeletconfig::KubeletConfigFile,
    file_label: &str,
) -> Result<ApiRate, OptionsError> {
    let d = ApiRate::default();
    let source = |flag: bool| {
        if flag {
            "flag".to_owned()
        } else {
            file_label.to_owned()
        }
    };
    let (qps, qps_from_flag): (f32, bool) = match (flags.kube_api_qps, file.kube_api_qps) {
        (Some(v), _) => (v, true),
        (None, Some(v)) => (v, false),
        (None, None) => (0.0, false),
    };
    if !qps.is_finite() || qps < 0.0 {
        return Err(OptionsError::Invalid {
            source_name: source(qps_from_flag),
            name: if qps_from_flag {
                "--kube-api-qps"
            } else {
                "kubeAPIQPS"
            },
            value: qps.to_string(),
            reason: "must not be a negative number",
        });
    }
    let (burst, burst_from_flag) = match (flags.kube_api_burst, file.kube_api_burst) {
        (Some(v), _) => (v, true),
        (None, Some(v)) => (v, false),
        (None, None) => (0, false),
    };
    let burst = u32::try_from(burst).map_err(|_| OptionsError::Invalid {
        source_name: source(burst_from_flag),
        name: if burst_from_flag {
            "--kube-api-burst"
        } else {
            "kubeAPIBurst"
        },
        value: burst.to_string(),
        reason: "must not be a negative number",
    })?;
    Ok(ApiRate {
        qps: if qps == 0.0 { d.qps } else { f64::from(qps) },
        burst: if burst == 0 { d.burst } else { burst },
    })
}

/// TLS bootstrapping (`--bootstrap-kubeconfig`, `--cert-dir`) and client certificate rotation
/// (`--rotate-certificates` / rotateCertificates), as the kubelet's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateOptions {
    /// Kubeconfig used to request a client certificate when `--kubeconfig` has no valid one.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Where the client certificates go (kubelet default `<root-dir>/pki`).
    pub cert_dir: PathBuf,
    /// Renew the client certificate before it expires (kubelet default false).
    pub rotate: bool,
}

/// Default CRI endpoint: containerd's, as kubeadm and most distributions configure.
pub const DEFAULT_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

impl Options {
    /// Resolves argv (program name first) into options.
    pub fn from_args(argv: impl IntoIterator<Item = String>) -> Result<Self, OptionsResolveError> {
        use clap::Parser;
        let pre = flags::prescan(argv);
        let flags = Flags::try_parse_from(&pre.args).map_err(OptionsResolveError::Clap)?;
        let mut opts = Self::resolve(flags)?;
        for (flag, release) in pre.removed {
            opts.notices.push(format!(
                "flag --{flag} was removed from the kubelet in {release}; accepted and ignored"
            ));
        }
        for flag in pre.not_implemented {
            opts.notices
                .push(format!("flag --{flag} is not implemented yet; ignored"));
        }
        Ok(opts)
    }

    /// Merges parsed flags with the config file they name.
    pub fn resolve(flags: Flags) -> Result<Self, OptionsError> {
        let mut notices = Vec::new();
        let (file, file_label) = match &flags.config {
            Some(path) => {
                let loaded = kubeletconfig::load(path)?;
                for f in &loaded.ignored {
                    notices.push(format!(
                        "kubelet config file {}: field {f} is not implemented yet; ignored",
                        path.display()
                    ));
                }
                for f in &loaded.unknown {
                    notices.push(format!(
                        "kubelet config file {}: unknown field {f} (not in {}); ignored",
                        path.display(),
                        kubeletconfig::API_VERSION
                    ));
                }
                (
                    loaded.config,
                    format!("kubelet config file {} field", path.display()),
                )
            }
            None => (Default::default(), String::new()),
        };

        let dur = |flag: &Option<String>,
                   field: &Option<String>,
                   name: &'static str,
                   field_name: &'static str,
                   default: Duration| {
            duration_option(flag, field, (name, field_name), default, &file_label)
        };

        let file_check_frequency = dur(
            &flags.file_check_frequency,
            &file.file_check_frequency,
            "--file-check-frequency",
            "fileCheckFrequency",
            Duration::from_secs(20),
        )?;
        let sync_frequency = dur(
            &flags.sync_frequency,
            &file.sync_frequency,
            "--sync-frequency",
            "syncFrequency",
            Duration::from_secs(60),
        )?;
        let runtime_request_timeout = dur(
            &flags.runtime_request_timeout,
            &file.runtime_request_timeout,
            "--runtime-request-timeout",
            "runtimeRequestTimeout",
            Duration::from_secs(120),
        )?;
        let max_restart = file
            .crash_loop_back_off
            .as_ref()
            .and_then(|c| c.max_container_restart_period.clone());
        let max_container_restart_period = dur(
            &None,
            &max_restart,
            "",
            "crashLoopBackOff.maxContainerRestartPeriod",
            Duration::from_secs(300),
        )?;

        let driver_value = flags
            .cgroup_driver
            .clone()
            .or(file.cgroup_driver.clone())
            .unwrap_or_else(|| "cgroupfs".into());
        let cgroup_driver = match driver_value.as_str() {
            "cgroupfs" => CgroupDriver::Cgroupfs,
            "systemd" => CgroupDriver::Systemd,
            _ => {
                return Err(OptionsError::Invalid {
                    source_name: if flags.cgroup_driver.is_some() {
                        "flag".into()
                    } else {
                        file_label
                    },
                    name: if flags.cgroup_driver.is_some() {
                        "--cgroup-driver"
                    } else {
                        "cgroupDriver"
                    },
                    value: driver_value,
                    reason: "must be cgroupfs or systemd",
                });
            }
        };

        let node_ips = match &flags.node_ip {
            Some(list) => list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    s.trim().parse().map_err(|_| OptionsError::Invalid {
                        source_name: "flag".into(),
                        name: "--node-ip",
                        value: list.clone(),
                        reason: "not a comma-separated list of IP addresses",
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };

        if flags.pod_infra_container_image.is_some() {
            notices.push(
                "flag --pod-infra-container-image is deprecated: the CRI runtime's sandbox image \
                 setting is used, as by the kubelet since 1.27"
                    .into(),
            );
        }
        if flags.vmodule.is_some() {
            notices.push("flag --vmodule is accepted; --v applies to every module".into());
        }
        if flags.fail_swap_on.is_some() {
            notices.push("flag --fail-swap-on is not implemented yet; ignored".into());
        }
        let node_status = node_status_options(&flags, &file, &file_label)?;
        let api_rate = api_rate(&flags, &file, &file_label)?;

        let runtime = flags
            .container_runtime_endpoint
            .clone()
            .or(file.container_runtime_endpoint.clone())
            .unwrap_or_else(|| DEFAULT_RUNTIME_ENDPOINT.into());
        let image = flags
            .image_service_endpoint
            .clone()
            .or(file.image_service_endpoint.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| runtime.clone());

        let server = server_options(&flags, &file, &file_label)?;
        let eviction = eviction::resolve(&flags, &file, &file_label)?;
        let gc = gc::resolve(&flags, &file, &file_label)?;

        let root_dir = flags
            .root_dir
            .clone()
            .unwrap_or_else(|| "/var/lib/kubelet".into());
        let certificates = CertificateOptions {
            bootstrap_kubeconfig: flags.bootstrap_kubeconfig.clone(),
            cert_dir: flags
                .cert_dir
                .clone()
                .unwrap_or_else(|| root_dir.join("pki")),
            rotate: flags
                .rotate_certificates
                .or(file.rotate_certificates)
                .unwrap_or(false),
        };
        let opts = Options {
            server,
            eviction,
            gc,
            node_name: node_name(flags.hostname_override.as_deref()),
            node_ips,
            static_pod_path: flags
                .pod_manifest_path
                .clone()
                .or(file.static_pod_path.clone())
                .filter(|p| !p.as_os_str().is_empty()),
            file_check_frequency,
            sync_frequency,
            runtime_request_timeout,
            container_runtime_endpoint: runtime,
            image_service_endpoint: image,
            cgroup_driver,
            cgroup_root: flags
                .cgroup_root
                .clone()
                .or(file.cgroup_root.clone())
                .unwrap_or_else(|| "/".into()),
            cgroups_per_qos: flags
                .cgroups_per_qos
                .or(file.cgroups_per_qos)
                .unwrap_or(true),
            pod_logs_dir: file
                .pod_logs_dir
                .clone()
                .unwrap_or_else(|| "/var/log/pods".into()),
            root_dir,
            resolv_conf: file
                .resolv_conf
                .clone()
                .unwrap_or_else(|| "/etc/resolv.conf".into()),
            cluster_domain: file.cluster_domain.clone().filter(|s| !s.is_empty()),
            cluster_dns: file.cluster_dns.clone().unwrap_or_default(),
            max_container_restart_period,
            kubeconfig: flags.kubeconfig.clone(),
            certificates,
            register_node: flags.register_node.or(file.register_node).unwrap_or(true),
            seccomp_default: flags
                .seccomp_default
                .or(file.seccomp_default)
                .unwrap_or(false),
            allowed_unsafe_sysctls: flags
                .allowed_unsafe_sysctls
                .as_deref()
                .map(|s| {
                    s.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .or_else(|| file.allowed_unsafe_sysctls.clone())
                .unwrap_or_default(),
            node_status,
            api_rate,
            verbosity: flags
                .verbosity
                .or(file.logging.as_ref().and_then(|l| l.verbosity))
                .unwrap_or(0),
            notices,
        };
        check::check(&opts, &flags, &file_label)?;
        Ok(opts)
    }
}

/// A duration from its flag, else its config-file field, else `default`; an error names the
/// flag or the field (and file) the bad value came from.
pub(crate) fn duration_option(
    flag: &Option<String>,
    field: &Option<String>,
    (flag_name, field_name): (&'static str, &'static str),
    default: Duration,
    file_label: &str,
) -> Result<Duration, OptionsError> {
    let (value, source_name, name) = match (flag, field) {
        (Some(v), _) => (v, "flag".to_string(), flag_name),
        (None, Some(v)) => (v, file_label.to_string(), field_name),
        (None, None) => return Ok(default),
    };
    duration::parse(value).ok_or_else(|| OptionsError::Invalid {
        source_name,
        name,
        value: value.clone(),
        reason: "not a duration such as 20s, 2m or 1h",
    })
}

/// Node status settings with the kubelet's defaults and checks (an error names the flag or
/// field).
fn node_status_options(
    flags: &Flags,
    file: &kubeletconfig::KubeletConfigFile,
    file_label: &str,
) -> Result<NodeStatusOptions, OptionsError> {
    let source = |from_flag: bool| {
        if from_flag {
            "flag".to_string()
        } else {
            file_label.to_string()
        }
    };
    // The file's zero values mean "unset" (the kubelet defaults them); a flag's zero is an
    // error, since a zero period would be a busy loop.
    let file_update = file
        .node_status_update_frequency
        .clone()
        .filter(|v| duration::parse(v) != Some(Duration::ZERO));
    let update_frequency = duration_option(
        &flags.node_status_update_frequency,
        &file_update,
        (
            "--node-status-update-frequency",
            "nodeStatusUpdateFrequency",
        ),
        Duration::from_secs(10),
        file_label,
    )?;
    if update_frequency.is_zero() {
        return Err(OptionsError::Invalid {
            source_name: source(true),
            name: "--node-status-update-frequency",
            value: flags
                .node_status_update_frequency
                .clone()
                .unwrap_or_default(),
            reason: "must be greater than 0",
        });
    }
    // v1beta1 defaulting runs on the file before flags apply: the report frequency follows
    // the file's update frequency, never the flag's.
    let report_default = match &file_update {
        Some(v) => duration::parse(v).unwrap_or(Duration::from_secs(300)),
        None => Duration::from_secs(300),
    };
    let report_frequency = duration_option(
        &None,
        &file
            .node_status_report_frequency
            .clone()
            .filter(|v| duration::parse(v) != Some(Duration::ZERO)),
        ("", "nodeStatusReportFrequency"),
        report_default,
        file_label,
    )?;
    // int32 in the kubelet; validation: nodeLeaseDurationSeconds must be greater than 0.
    let lease_duration_seconds = match (
        flags.node_lease_duration_seconds,
        file.node_lease_duration_seconds,
    ) {
        (Some(v), _) => {
            u32::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| OptionsError::Invalid {
                    source_name: source(true),
                    name: "--node-lease-duration-seconds",
                    value: v.to_string(),
                    reason: "must be greater than 0",
                })?
        }
        (None, None | Some(0)) => 40,
        (None, Some(v)) => u32::try_from(v).map_err(|_| OptionsError::Invalid {
            source_name: source(false),
            name: "nodeLeaseDurationSeconds",
            value: v.to_string(),
            reason: "must be greater than 0",
        })?,
    };
    let max_pods = match (flags.max_pods, file.max_pods) {
        (Some(v), _) => v,
        (None, None | Some(0)) => 110,
        (None, Some(v)) => u32::try_from(v).map_err(|_| OptionsError::Invalid {
            source_name: source(false),
            name: "maxPods",
            value: v.to_string(),
            reason: "must not be a negative number",
        })?,
    };
    let labels = match &flags.node_labels {
        Some(s) => {
            node::parse_node_labels(s).map_err(|(entry, reason)| OptionsError::InvalidEntry {
                source_name: source(true),
                name: "--node-labels",
                entry,
                reason,
            })?
        }
        None => BTreeMap::new(),
    };
    let taints = match (&flags.register_with_taints, &file.register_with_taints) {
        (Some(s), _) => {
            node::parse_taints(s).map_err(|(entry, reason)| OptionsError::InvalidEntry {
                source_name: source(true),
                name: "--register-with-taints",
                entry,
                reason,
            })?
        }
        (None, Some(list)) => {
            for (i, t) in list.iter().enumerate() {
                node::check_taint(t).map_err(|reason| OptionsError::InvalidEntry {
                    source_name: source(false),
                    name: "registerWithTaints",
                    entry: format!("[{i}] {}={}:{}", t.key, t.value, t.effect),
                    reason,
                })?;
            }
            list.clone()
        }
        (None, None) => Vec::new(),
    };
    Ok(NodeStatusOptions {
        update_frequency,
        report_frequency,
        lease_duration_seconds,
        max_pods,
        labels,
        taints,
    })
}

/// Server settings with the kubelet's defaults. Without --config the kubelet applies its legacy
/// defaults (cmd/kubelet/app/options applyLegacyDefaults): anonymous auth on, AlwaysAllow,
/// read-only port 10255; the v1beta1 file defaults are anonymous off, Webhook, read-only port 0.
fn server_options(
    flags: &Flags,
    file: &kubeletconfig::KubeletConfigFile,
    file_label: &str,
) -> Result<ServerOptions, OptionsError> {
    let legacy = flags.config.is_none();
    let ip = |flag: &Option<String>,
              field: &Option<String>,
              (flag_name, field_name): (&'static str, &'static str),
              default: IpAddr|
     -> Result<IpAddr, OptionsError> {
        let (value, source_name, name) = match (flag, field) {
            (Some(v), _) => (v, "flag".to_string(), flag_name),
            (None, Some(v)) => (v, file_label.to_string(), field_name),
            (None, None) => return Ok(default),
        };
        value.trim().parse().map_err(|_| OptionsError::Invalid {
            source_name,
            name,
            value: value.clone(),
            reason: "not an IP address",
        })
    };
    let authn = file.authentication.clone().unwrap_or_default();
    let authz_webhook = file
        .authorization
        .as_ref()
        .and_then(|a| a.webhook.clone())
        .unwrap_or_default();
    let authentication_webhook_cache_ttl = duration_option(
        &flags.authentication_token_webhook_cache_ttl,
        &authn.webhook.as_ref().and_then(|w| w.cache_ttl.clone()),
        (
            "--authentication-token-webhook-cache-ttl",
            "authentication.webhook.cacheTTL",
        ),
        Duration::from_secs(120),
        file_label,
    )?;
    let authorization_webhook_cache_authorized_ttl = duration_option(
        &flags.authorization_webhook_cache_authorized_ttl,
        &authz_webhook.cache_authorized_ttl,
        (
            "--authorization-webhook-cache-authorized-ttl",
            "authorization.webhook.cacheAuthorizedTTL",
        ),
        Duration::from_secs(300),
        file_label,
    )?;
    let authorization_webhook_cache_unauthorized_ttl = duration_option(
        &flags.authorization_webhook_cache_unauthorized_ttl,
        &authz_webhook.cache_unauthorized_ttl,
        (
            "--authorization-webhook-cache-unauthorized-ttl",
            "authorization.webhook.cacheUnauthorizedTTL",
        ),
        Duration::from_secs(30),
        file_label,
    )?;
    let mode_value = flags
        .authorization_mode
        .clone()
        .or(file.authorization.as_ref().and_then(|a| a.mode.clone()));
    let authorization_mode = match mode_value.as_deref() {
        None if legacy => AuthorizationMode::AlwaysAllow,
        None => AuthorizationMode::Webhook,
        Some("AlwaysAllow") => AuthorizationMode::AlwaysAllow,
        Some("Webhook") => AuthorizationMode::Webhook,
        Some(other) => {
            return Err(OptionsError::Invalid {
                source_name: if flags.authorization_mode.is_some() {
                    "flag".into()
                } else {
                    file_label.to_string()
                },
                name: if flags.authorization_mode.is_some() {
                    "--authorization-mode"
                } else {
                    "authorization.mode"
                },
                value: other.to_string(),
                reason: "must be AlwaysAllow or Webhook",
            });
        }
    };
    let port = flags.port.or(file.port).unwrap_or(10250);
    if port == 0 {
        return Err(OptionsError::Invalid {
            source_name: if flags.port.is_some() {
                "flag".into()
            } else {
                file_label.to_string()
            },
            name: if flags.port.is_some() {
                "--port"
            } else {
                "port"
            },
            value: "0".into(),
            reason: "must be between 1 and 65535",
        });
    }
    Ok(ServerOptions {
        address: ip(
            &flags.address,
            &file.address,
            ("--address", "address"),
            IpAddr::from([0, 0, 0, 0]),
        )?,
        port,
        read_only_port: flags
            .read_only_port
            .or(file.read_only_port)
            .unwrap_or(if legacy { 10255 } else { 0 }),
        tls_cert_file: flags
            .tls_cert_file
            .clone()
            .or(file.tls_cert_file.clone())
            .filter(|p| !p.as_os_str().is_empty()),
        tls_private_key_file: flags
            .tls_private_key_file
            .clone()
            .or(file.tls_private_key_file.clone())
            .filter(|p| !p.as_os_str().is_empty()),
        client_ca_file: flags
            .client_ca_file
            .clone()
            .or(authn.x509.and_then(|x| x.client_ca_file))
            .filter(|p| !p.as_os_str().is_empty()),
        anonymous_auth: flags
            .anonymous_auth
            .or(authn.anonymous.and_then(|a| a.enabled))
            .unwrap_or(legacy),
        authentication_webhook: flags
            .authentication_token_webhook
            .or(authn.webhook.and_then(|w| w.enabled))
            .unwrap_or(!legacy),
        authentication_webhook_cache_ttl,
        authorization_webhook_cache_authorized_ttl,
        authorization_webhook_cache_unauthorized_ttl,
        authorization_mode,
        healthz_port: flags.healthz_port.or(file.healthz_port).unwrap_or(10248),
        healthz_bind_address: ip(
            &flags.healthz_bind_address,
            &file.healthz_bind_address,
            ("--healthz-bind-address", "healthzBindAddress"),
            IpAddr::from([127, 0, 0, 1]),
        )?,
    })
}

/// Failure to turn argv into options: a clap usage error or a resolution error.
#[derive(Debug, thiserror::Error)]
pub enum OptionsResolveError {
    /// Bad command line (unknown flag, missing value); clap's message names the flag.
    #[error("{0}")]
    Clap(clap::Error),
    /// Bad value or config file.
    #[error(transparent)]
    Options(#[from] OptionsError),
}

/// The kubelet's node name: `--hostname-override` or the host name, lowercased
/// (pkg/util/node GetHostname).
fn node_name(override_name: Option<&str>) -> String {
    let raw = match override_name.map(str::trim).filter(|s| !s.is_empty()) {
        Some(n) => n.to_string(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into()),
    };
    raw.to_lowercase()
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
