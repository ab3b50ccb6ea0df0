//! The KubeletConfiguration file (`--config`, kubelet.config.k8s.io/v1beta1).
//!
//! Decoding follows the kubelet's (pkg/kubelet/kubeletconfig/util/codec/codec.go,
//! DecodeKubeletConfiguration): a wrong type or a bad value is an error naming the file and field;
//! a field the schema does not know is logged and skipped, as the kubelet's lenient fallback does.
//! A field the kubelet knows and nodelet does not implement yet is reported so that the caller
//! logs it once as ignored.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// API group/version of the file, as the kubelet requires it.
pub const API_VERSION: &str = "kubelet.config.k8s.io/v1beta1";

/// Errors loading the configuration file; each names the file and, where one is at fault, the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("reading kubelet config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML/JSON, or not a mapping.
    #[error("kubelet config file {path}: not a YAML or JSON object: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// apiVersion or kind is wrong.
    #[error("kubelet config file {path}: {field} is {found:?}, want {want:?}")]
    Kind {
        /// The file.
        path: PathBuf,
        /// `apiVersion` or `kind`.
        field: &'static str,
        /// What the file says.
        found: String,
        /// What the kubelet accepts.
        want: &'static str,
    },
    /// A field has the wrong type or an invalid value.
    #[error("kubelet config file {path}: field {field}: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field, e.g. `crashLoopBackOff.maxContainerRestartPeriod`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// `crashLoopBackOff` (KEP-4603).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CrashLoopBackOffConfig {
    /// Cap of the container restart back-off (Go duration).
    pub max_container_restart_period: Option<String>,
}

/// `logging` (component-base LoggingConfiguration); only verbosity is used.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingConfig {
    /// Same as `--v`.
    pub verbosity: Option<u8>,
}

/// `authentication` (KubeletAuthentication).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticationConfig {
    /// `x509`: client certificate authentication.
    pub x509: Option<X509AuthConfig>,
    /// `webhook`: bearer tokens checked by TokenReview against the API server.
    pub webhook: Option<WebhookAuthnConfig>,
    /// `anonymous`: requests without credentials.
    pub anonymous: Option<EnabledConfig>,
}

/// `authentication.x509`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct X509AuthConfig {
    /// PEM bundle of the CAs that sign client certificates.
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<PathBuf>,
}

/// `authentication.webhook` (KubeletWebhookAuthentication).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAuthnConfig {
    /// Whether bearer tokens are accepted.
    pub enabled: Option<bool>,
    /// How long a TokenReview answer is reused (Go duration, kubelet default 2m).
    #[serde(rename = "cacheTTL")]
    pub cache_ttl: Option<String>,
}

/// A sub-section whose only field nodelet reads is `enabled`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnabledConfig {
    /// Whether the mechanism is on.
    pub enabled: Option<bool>,
}

/// `authorization` (KubeletAuthorization).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationConfig {
    /// `AlwaysAllow` or `Webhook`.
    pub mode: Option<String>,
    /// `webhook`: SubjectAccessReview cache settings.
    pub webhook: Option<WebhookAuthzConfig>,
}

/// `authorization.webhook` (KubeletWebhookAuthorization).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAuthzConfig {
    /// How long an "allowed" answer is reused (Go duration, kubelet default 5m).
    #[serde(rename = "cacheAuthorizedTTL")]
    pub cache_authorized_ttl: Option<String>,
    /// How long a "denied" answer is reused (Go duration, kubelet default 30s).
    #[serde(rename = "cacheUnauthorizedTTL")]
    pub cache_unauthorized_ttl: Option<String>,
}

/// The fields nodelet implements; all optional, defaults are applied by `options`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfigFile {
    /// Static pod manifests directory or file.
    pub static_pod_path: Option<PathBuf>,
    /// Where container logs go (`/var/log/pods` by default).
    pub pod_logs_dir: Option<PathBuf>,
    /// Pod resync period.
    pub sync_frequency: Option<String>,
    /// Full re-read period of the static pod path.
    pub file_check_frequency: Option<String>,
    /// CRI request timeout.
    pub runtime_request_timeout: Option<String>,
    /// CRI runtime endpoint.
    pub container_runtime_endpoint: Option<String>,
    /// CRI image endpoint.
    pub image_service_endpoint: Option<String>,
    /// cgroupfs or systemd.
    pub cgroup_driver: Option<String>,
    /// Root cgroup for pods.
    pub cgroup_root: Option<String>,
    /// Whether pods go under QoS cgroups.
    #[serde(rename = "cgroupsPerQOS")]
    pub cgroups_per_qos: Option<bool>,
    /// Register the node (cluster mode).
    pub register_node: Option<bool>,
    /// RuntimeDefault seccomp for containers that name no profile.
    pub seccomp_default: Option<bool>,
    /// Unsafe sysctls (or `prefix*` patterns) pods may set beside the safe ones.
    pub allowed_unsafe_sysctls: Option<Vec<String>>,
    /// Host resolver file for pods with dnsPolicy Default.
    pub resolv_conf: Option<PathBuf>,
    /// Cluster DNS domain.
    pub cluster_domain: Option<String>,
    /// Cluster DNS server IPs.
    #[serde(rename = "clusterDNS")]
    pub cluster_dns: Option<Vec<String>>,
    /// Restart back-off settings.
    pub crash_loop_back_off: Option<CrashLoopBackOffConfig>,
    /// Logging settings.
    pub logging: Option<LoggingConfig>,
    /// Bind address of the secure and read-only ports.
    pub address: Option<String>,
    /// Secure (HTTPS) port.
    pub port: Option<u16>,
    /// Read-only HTTP port; 0 disables it.
    pub read_only_port: Option<u16>,
    /// Serving certificate (PEM).
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    pub tls_private_key_file: Option<PathBuf>,
    /// Client authentication on the secure port.
    pub authentication: Option<AuthenticationConfig>,
    /// Authorization on the secure port.
    pub authorization: Option<AuthorizationConfig>,
    /// Port of the local /healthz endpoint; 0 disables it.
    pub healthz_port: Option<u16>,
    /// Bind address of the local /healthz endpoint.
    pub healthz_bind_address: Option<String>,
    /// How often the node status is computed (Go duration).
    pub node_status_update_frequency: Option<String>,
    /// How often an unchanged node status is still posted (Go duration).
    pub node_status_report_frequency: Option<String>,
    /// Duration of the node Lease in seconds.
    pub node_lease_duration_seconds: Option<i32>,
    /// Pods this node may run (its `pods` capacity).
    pub max_pods: Option<i32>,
    /// Steady API request rate, per second.
    #[serde(rename = "kubeAPIQPS")]
    pub kube_api_qps: Option<f32>,
    /// API requests allowed in a burst.
    #[serde(rename = "kubeAPIBurst")]
    pub kube_api_burst: Option<i32>,
    /// Taints the node registers with.
    pub register_with_taints: Option<Vec<super::node::Taint>>,
    /// Hard eviction thresholds by signal.
    pub eviction_hard: Option<BTreeMap<String, String>>,
    /// Soft eviction thresholds by signal.
    pub eviction_soft: Option<BTreeMap<String, String>>,
    /// Grace periods of the soft thresholds by signal (Go durations).
    pub eviction_soft_grace_period: Option<BTreeMap<String, String>>,
    /// How long a pressure condition outlives its threshold (Go duration).
    pub eviction_pressure_transition_period: Option<String>,
    /// Grace period cap for soft evictions, seconds.
    pub eviction_max_pod_grace_period: Option<i32>,
    /// Minimum reclaims by signal.
    pub eviction_minimum_reclaim: Option<BTreeMap<String, String>>,
    /// Merge the default hard thresholds into a given evictionHard.
    pub merge_default_eviction_settings: Option<bool>,
    /// Renew the client certificate before it expires (TLS bootstrapping).
    pub rotate_certificates: Option<bool>,
    /// Disk usage percent that starts image GC.
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<i32>,
    /// Disk usage percent image GC frees down to.
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<i32>,
    /// Minimum age of an unused image before GC (Go duration).
    #[serde(rename = "imageMinimumGCAge")]
    pub image_minimum_gc_age: Option<String>,
    /// Maximum time an image may stay unused (Go duration; 0: no limit).
    #[serde(rename = "imageMaximumGCAge")]
    pub image_maximum_gc_age: Option<String>,
    /// Resources reserved for Kubernetes daemons.
    pub kube_reserved: Option<BTreeMap<String, String>>,
    /// Resources reserved for the OS.
    pub system_reserved: Option<BTreeMap<String, String>>,
    /// Node allocatable enforcement levels.
    pub enforce_node_allocatable: Option<Vec<String>>,
}

/// Top-level fields nodelet reads from the file; kept beside the struct above.
const IMPLEMENTED: &[&str] = &[
    "apiVersion",
    "kind",
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
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "maxPods",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "registerWithTaints",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "kubeReserved",
    "systemReserved",
    "enforceNodeAllocatable",
    "rotateCertificates",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
];

/// Every top-level field of KubeletConfiguration v1beta1
/// (staging/src/k8s.io/kubelet/config/v1beta1/types.go), used to tell "known but ignored" from
/// "unknown".
const KUBELET_FIELDS: &[&str] = &[
    "enableServer",
    "staticPodPath",
    "podLogsDir",
    "syncFrequency",
    "fileCheckFrequency",
    "httpCheckFrequency",
    "staticPodURL",
    "staticPodURLHeader",
    "address",
    "port",
    "readOnlyPort",
    "tlsCertFile",
    "tlsPrivateKeyFile",
    "tlsCipherSuites",
    "tlsMinVersion",
    "rotateCertificates",
    "serverTLSBootstrap",
    "authentication",
    "authorization",
    "registryPullQPS",
    "registryBurst",
    "imagePullCredentialsVerificationPolicy",
    "preloadedImagesVerificationAllowlist",
    "eventRecordQPS",
    "eventBurst",
    "enableDebuggingHandlers",
    "enableContentionProfiling",
    "healthzPort",
    "healthzBindAddress",
    "oomScoreAdj",
    "clusterDomain",
    "clusterDNS",
    "streamingConnectionIdleTimeout",
    "nodeStatusUpdateFrequency",
    "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds",
    "imageMinimumGCAge",
    "imageMaximumGCAge",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "volumeStatsAggPeriod",
    "kubeletCgroups",
    "systemCgroups",
    "cgroupRoot",
    "cgroupsPerQOS",
    "cgroupDriver",
    "cpuManagerPolicy",
    "singleProcessOOMKill",
    "cpuManagerPolicyOptions",
    "cpuManagerReconcilePeriod",
    "memoryManagerPolicy",
    "topologyManagerPolicy",
    "topologyManagerScope",
    "topologyManagerPolicyOptions",
    "qosReserved",
    "runtimeRequestTimeout",
    "hairpinMode",
    "maxPods",
    "podCIDR",
    "podPidsLimit",
    "resolvConf",
    "runOnce",
    "cpuCFSQuota",
    "cpuCFSQuotaPeriod",
    "nodeStatusMaxImages",
    "maxOpenFiles",
    "contentType",
    "kubeAPIQPS",
    "kubeAPIBurst",
    "serializeImagePulls",
    "maxParallelImagePulls",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod",
    "evictionMinimumReclaim",
    "mergeDefaultEvictionSettings",
    "podsPerCore",
    "enableControllerAttachDetach",
    "protectKernelDefaults",
    "makeIPTablesUtilChains",
    "iptablesMasqueradeBit",
    "iptablesDropBit",
    "featureGates",
    "failSwapOn",
    "memorySwap",
    "containerLogMaxSize",
    "containerLogMaxFiles",
    "containerLogMaxWorkers",
    "containerLogMonitorInterval",
    "configMapAndSecretChangeDetectionStrategy",
    "systemReserved",
    "kubeReserved",
    "reservedSystemCPUs",
    "showHiddenMetricsForVersion",
    "systemReservedCgroup",
    "kubeReservedCgroup",
    "enforceNodeAllocatable",
    "allowedUnsafeSysctls",
    "volumePluginDir",
    "providerID",
    "kernelMemcgNotification",
    "logging",
    "enableSystemLogHandler",
    "enableSystemLogQuery",
    "shutdownGracePeriod",
    "shutdownGracePeriodCriticalPods",
    "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff",
    "reservedMemory",
    "enableProfilingHandler",
    "enableDebugFlagsHandler",
    "seccompDefault",
    "memoryThrottlingFactor",
    "registerWithTaints",
    "registerNode",
    "tracing",
    "localStorageCapacityIsolation",
    "containerRuntimeEndpoint",
    "imageServiceEndpoint",
    "failCgroupV1",
    "userNamespaces",
];

/// A loaded file: the implemented fields plus what was skipped, for the caller to log once.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Implemented fields.
    pub config: KubeletConfigFile,
    /// Kubelet fields present in the file that nodelet does not act on yet.
    pub ignored: Vec<String>,
    /// Fields the KubeletConfiguration schema does not have.
    pub unknown: Vec<String>,
}

/// Reads and decodes a KubeletConfiguration file.
pub fn load(path: &Path) -> Result<Loaded, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Decodes KubeletConfiguration text; `path` is used in errors only.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigFileError> {
    let syntax = |reason: String| ConfigFileError::Syntax {
        path: path.to_owned(),
        reason,
    };
    let value: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(text).map_err(|e| syntax(e.to_string()))?;
    let map = value
        .as_mapping()
        .ok_or_else(|| syntax("the top level is not a mapping".into()))?;
    let mut keys: BTreeMap<String, &serde_yaml_ng::Value> = BTreeMap::new();
    for (k, v) in map {
        let k = k
            .as_str()
            .ok_or_else(|| syntax(format!("non-string key {k:?}")))?;
        keys.insert(k.to_string(), v);
    }
    check_str(path, &keys, "apiVersion", API_VERSION)?;
    check_str(path, &keys, "kind", "KubeletConfiguration")?;

    let de = serde_yaml_ng::Deserializer::from_str(text);
    let config: KubeletConfigFile =
        serde_path_to_error::deserialize(de).map_err(|e| ConfigFileError::Field {
            path: path.to_owned(),
            field: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;

    let mut loaded = Loaded {
        config,
        ..Default::default()
    };
    for k in keys.keys() {
        if IMPLEMENTED.contains(&k.as_str()) {
            continue;
        }
        if KUBELET_FIELDS.contains(&k.as_str()) {
            loaded.ignored.push(k.clone());
        } else {
            loaded.unknown.push(k.clone());
        }
    }
    Ok(loaded)
}

fn check_str(
    path: &Path,
    keys: &BTreeMap<String, &serde_yaml_ng::Value>,
    field: &'static str,
    want: &'static str,
) -> Result<(), ConfigFileError> {
    let found = keys.get(field).and_then(|v| v.as_str()).unwrap_or("");
    if found == want {
        Ok(())
    } else {
        Err(ConfigFileError::Kind {
            path: path.to_owned(),
            field,
            found: found.to_string(),
            want,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n";

    #[test]
    fn reads_implemented_fields_and_sorts_the_rest() {
        let text = format!(
            "{HEAD}staticPodPath: /etc/kubernetes/manifests\ncgroupDriver: cgroupfs\n\
             systemReservedCgroup: /sys\nnoSuchField: 1\n"
        );
        let l = parse(Path::new("k.yaml"), &text).expect("parses");
        assert_eq!(
            l.config.static_pod_path.as_deref(),
            Some(Path::new("/etc/kubernetes/manifests"))
        );
        assert_eq!(l.ignored, ["systemReservedCgroup"]);
        assert_eq!(l.unknown, ["noSuchField"]);
    }

    #[test]
    fn wrong_type_names_file_and_field() {
        let text = format!("{HEAD}cgroupsPerQOS: maybe\n");
        let err = parse(Path::new("/etc/k.yaml"), &text).expect_err("bad type");
        let msg = err.to_string();
        assert!(msg.contains("/etc/k.yaml"), "{msg}");
        assert!(msg.contains("cgroupsPerQOS"), "{msg}");
    }

    #[test]
    fn nested_field_path_is_named() {
        let text = format!("{HEAD}crashLoopBackOff:\n  maxContainerRestartPeriod: [1]\n");
        let err = parse(Path::new("k.yaml"), &text).expect_err("bad type");
        assert!(
            err.to_string()
                .contains("crashLoopBackOff.maxContainerRestartPeriod"),
            "{err}"
        );
    }

    #[test]
    fn webhook_cache_ttls_are_read_with_the_kubelets_field_names() {
        let text = format!(
            "{HEAD}authentication:\n  webhook:\n    enabled: true\n    cacheTTL: 1m\n\
             authorization:\n  mode: Webhook\n  webhook:\n    cacheAuthorizedTTL: 10s\n\
             \x20   cacheUnauthorizedTTL: 3s\n"
        );
        let c = parse(Path::new("k.yaml"), &text).expect("parses").config;
        let authn = c.authentication.and_then(|a| a.webhook).expect("webhook");
        assert_eq!(authn.enabled, Some(true));
        assert_eq!(authn.cache_ttl.as_deref(), Some("1m"));
        let authz = c.authorization.and_then(|a| a.webhook).expect("webhook");
        assert_eq!(authz.cache_authorized_ttl.as_deref(), Some("10s"));
        assert_eq!(authz.cache_unauthorized_ttl.as_deref(), Some("3s"));
    }

    #[test]
    fn wrong_kind_is_rejected() {
        let err = parse(
            Path::new("k.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {}\n",
        )
        .expect_err("not a kubelet config");
        assert!(err.to_string().contains("apiVersion"), "{err}");
    }
}
