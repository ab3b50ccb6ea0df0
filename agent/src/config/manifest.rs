//! One static pod manifest: decode (YAML or JSON), validate, default, name and UID it the
//! kubelet's way (pkg/kubelet/config/common.go: tryDecodeSinglePod, applyDefaults).

use crate::pod::{DesiredPod, PodRef, PodSource, quantity};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Toleration, Volume};
use md5::{Digest, Md5};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

mod lifecycle;
mod probes;

/// Annotation carrying the pod's config hash (kubetypes.ConfigHashAnnotationKey).
pub const CONFIG_HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
/// Annotation naming the config source (kubetypes.ConfigSourceAnnotationKey).
pub const CONFIG_SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// Why a manifest was not accepted; always names the file, and the field where one is at fault.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Reading failed.
    #[error("static pod manifest {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than we read.
    #[error("static pod manifest {path}: {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Not decodable as a Pod; `field` is the path serde was at.
    #[error("static pod manifest {path}: field {field}: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Where decoding failed, e.g. `spec.containers[0].ports[0].containerPort`.
        field: String,
        /// The decoder's message (with line and column for YAML).
        reason: String,
    },
    /// Decoded, but not a valid pod.
    #[error("static pod manifest {path}: invalid pod: {}", errors.join("; "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Field errors in the API server's wording, e.g. `spec.containers[0].image: Required value`.
        errors: Vec<String>,
    },
}

/// Largest manifest read, as the kubelet's http source caps a manifest (http.go maxConfigLength).
pub const MAX_MANIFEST_BYTES: u64 = 10 << 20;

/// A decoded manifest and what the decoder passed over.
#[derive(Debug)]
pub struct Decoded {
    /// The pod.
    pub pod: DesiredPod,
    /// Warnings worth an operator's eye (e.g. ignored extra YAML documents).
    pub warnings: Vec<String>,
}

/// Reads, decodes, validates and defaults the manifest at `path` for node `node_name`.
pub fn load(path: &Path, node_name: &str) -> Result<Decoded, ManifestError> {
    let meta = std::fs::metadata(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            limit: MAX_MANIFEST_BYTES,
        });
    }
    let data = std::fs::read(path).map_err(|source| ManifestError::Read {
        path: path.to_owned(),
        source,
    })?;
    decode(path, &data, node_name)
}

/// Decodes manifest bytes; `path` names the source in errors, the UID and annotations.
pub fn decode(path: &Path, data: &[u8], node_name: &str) -> Result<Decoded, ManifestError> {
    let (pod, extra_documents) = decode_pod(path, data)?;
    let errors = validate(&pod);
    if !errors.is_empty() {
        return Err(ManifestError::Invalid {
            path: path.to_owned(),
            errors,
        });
    }
    let mut warnings = Vec::new();
    if extra_documents > 0 {
        warnings.push(format!(
            "static pod manifest {}: only the first YAML document is used, as by the kubelet; \
             {extra_documents} more ignored (use one file per pod)",
            path.display()
        ));
    }
    let pod = apply_defaults(pod, path, node_name);
    let errors = validate_defaulted(&pod);
    if !errors.is_empty() {
        return Err(ManifestError::Invalid {
            path: path.to_owned(),
            errors,
        });
    }
    Ok(Decoded { pod, warnings })
}

/// Decodes the pod and counts further YAML documents, which the kubelet ignores
/// (utilyaml.ToJSON decodes only the first document).
fn decode_pod(path: &Path, data: &[u8]) -> Result<(Pod, usize), ManifestError> {
    // serde_path_to_error reports a syntax error before the first key with an empty path; the
    // document root is ".", as for the other whole-document errors here.
    let err = |field: String, reason: String| ManifestError::Decode {
        path: path.to_owned(),
        field: if field.is_empty() { ".".into() } else { field },
        reason,
    };
    let text = std::str::from_utf8(data).map_err(|e| err(".".into(), e.to_string()))?;
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(err(".".into(), "the file is empty".into()));
    }
    // JSON first when it looks like JSON: YAML forbids tabs that JSON allows.
    let pod: (Pod, usize) = if trimmed.starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(text);
        let pod = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| err(e.path().to_string(), e.inner().to_string()))?;
        de.end()
            .map_err(|e| err(".".into(), format!("trailing data after the pod: {e}")))?;
        (pod, 0)
    } else {
        let mut docs = serde_yaml_ng::Deserializer::from_str(text);
        let first = docs
            .next()
            .ok_or_else(|| err(".".into(), "no YAML document".into()))?;
        let pod = serde_path_to_error::deserialize(first)
            .map_err(|e| err(e.path().to_string(), e.inner().to_string()))?;
        // A malformed document is handed out again on every `next()` (dtolnay/serde-yaml#193),
        // so count up to and including the first one that does not parse, never past it.
        let mut extra = 0;
        for doc in docs {
            extra += 1;
            if serde::de::IgnoredAny::deserialize(doc).is_err() {
                break;
            }
        }
        (pod, extra)
    };
    Ok(pod)
}

/// Field errors in the API server's wording: `<field path>: <kind>[: <value>][: <why>]`
/// (apimachinery pkg/util/validation/field/errors.go).
#[derive(Default)]
struct Errs(Vec<String>);

impl Errs {
    fn required(&mut self, at: impl fmt::Display) {
        self.0.push(format!("{at}: Required value"));
    }

    fn invalid(&mut self, at: impl fmt::Display, value: impl fmt::Debug, why: &str) {
        self.0
            .push(format!("{at}: Invalid value: {value:?}: {why}"));
    }

    fn unsupported(&mut self, at: impl fmt::Display, value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        self.0.push(format!(
            "{at}: Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ));
    }

    fn duplicate(&mut self, at: impl fmt::Display, value: impl fmt::Debug) {
        self.0.push(format!("{at}: Duplicate value: {value:?}"));
    }

    fn forbidden(&mut self, at: impl fmt::Display, why: &str) {
        self.0.push(format!("{at}: Forbidden: {why}"));
    }

    fn not_found(&mut self, at: impl fmt::Display, value: impl fmt::Debug) {
        self.0.push(format!("{at}: Not found: {value:?}"));
    }
}

/// What the containers of one pod must not repeat between them.
#[derive(Default)]
struct PodWide<'a> {
    /// Container names (init and regular share one namespace).
    names: HashSet<String>,
    /// `protocol/hostIP/hostPort` of every host port (validation.go AccumulateUniqueHostPorts).
    host_ports: HashSet<String>,
    /// Declared volume names.
    volumes: HashSet<&'a str>,
    /// `spec.hostNetwork`.
    host_network: bool,
}

/// Volume sources a static pod may use (kuberuntime/container.rs `mounts`): downwardAPI needs no
/// API object (volumemanager writes it from the pod itself); configMap, secret and projected do.
const SUPPORTED_VOLUMES: &[&str] = &["emptyDir", "hostPath", "downwardAPI"];
/// Fields a downwardAPI volume file may read (validation.go validVolumeDownwardAPIFieldPathExpressions).
const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.labels",
    "metadata.annotations",
    "metadata.uid",
];
/// `hostPath.type` values (core/v1 HostPathType).
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "DirectoryOrCreate",
    "Directory",
    "FileOrCreate",
    "File",
    "Socket",
    "CharDevice",
    "BlockDevice",
];
/// Downward API fields an env var may read, as the API server allows them and as
/// kuberuntime/container.rs resolves them (validation.go validEnvDownwardAPIFieldPathExpressions).
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];
/// Container resources an env var may read; the API server's ephemeral-storage and hugepages
/// are not resolved by nodelet yet.
const ENV_RESOURCE_FIELDS: &[&str] = &[
    "limits.cpu",
    "limits.memory",
    "requests.cpu",
    "requests.memory",
];
/// Most nameservers in `dnsConfig` (validation.go MaxDNSNameservers).
const MAX_DNS_NAMESERVERS: usize = 3;
/// Most search domains in `dnsConfig` (validation.go MaxDNSSearchPaths).
const MAX_DNS_SEARCHES: usize = 32;
/// Largest user or group ID (validation IsValidUserID/IsValidGroupID).
const MAX_ID: i64 = 2_147_483_647;
/// Longest file name on Linux (NAME_MAX): the pod log directory `<ns>_<name>_<uid>` is one.
const NAME_MAX: usize = 255;
/// Longest manifest-provided UID; real UIDs are 36-character UUIDs.
const MAX_UID_LEN: usize = 128;

/// A subset of the API server's ValidatePodCreate, worded like it (field path: message), plus
/// what nodelet cannot run (unsupported volume kinds, configmap and secret references), so that a
/// manifest is refused here, naming the field, rather than failing on every sync later.
pub fn validate(pod: &Pod) -> Vec<String> {
    let mut errs = Errs::default();
    validate_metadata(pod, &mut errs);
    let Some(spec) = pod.spec.as_ref() else {
        errs.required("spec");
        return errs.0;
    };
    if spec.containers.is_empty() {
        errs.required("spec.containers");
    }
    if let Some(p) = spec.restart_policy.as_deref()
        && !["Always", "OnFailure", "Never"].contains(&p)
    {
        errs.unsupported("spec.restartPolicy", p, &["Always", "OnFailure", "Never"]);
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.invalid("spec.terminationGracePeriodSeconds", g, "must be >= 0");
    }
    if let Some(d) = spec.active_deadline_seconds
        && d < 1
    {
        errs.invalid("spec.activeDeadlineSeconds", d, "must be >= 1");
    }
    if let Some(h) = spec.hostname.as_deref()
        && !is_dns_label(h)
    {
        errs.invalid("spec.hostname", h, "a lowercase RFC 1123 label");
    }
    if let Some(h) = spec.subdomain.as_deref()
        && !h.is_empty()
        && !is_dns_label(h)
    {
        errs.invalid("spec.subdomain", h, "a lowercase RFC 1123 label");
    }
    validate_dns(spec, &mut errs);
    validate_pod_security(spec, &mut errs);
    let mut wide = PodWide {
        host_network: spec.host_network.unwrap_or(false),
        ..Default::default()
    };
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        validate_volume(v, &format!("spec.volumes[{i}]"), &mut wide, &mut errs);
    }
    let groups = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (prefix, containers) in groups {
        for (i, c) in containers.iter().enumerate() {
            let at = format!("{prefix}[{i}]");
            validate_container(c, &at, &mut wide, &mut errs);
        }
    }
    errs.0
}

fn validate_metadata(pod: &Pod, errs: &mut Errs) {
    match pod.metadata.name.as_deref() {
        None | Some("") => errs
            .0
            .push("metadata.name: Required value: name or generateName is required".into()),
        Some(n) if !is_dns_subdomain(n) => errs.invalid(
            "metadata.name",
            n,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
        ),
        _ => {}
    }
    if let Some(ns) = pod.metadata.namespace.as_deref()
        && !ns.is_empty()
        && !is_dns_label(ns)
    {
        errs.invalid("metadata.namespace", ns, "a lowercase RFC 1123 label");
    }
    // The UID names the pod's directory under <root-dir>/pods, its log directory and its cgroup,
    // and those are removed recursively when the pod goes: "/", "." or ".." must never get there.
    if let Some(uid) = pod.metadata.uid.as_deref()
        && !uid.is_empty()
        && (uid.len() > MAX_UID_LEN
            || !uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        errs.invalid(
            "metadata.uid",
            uid,
            "must be at most 128 characters of letters, digits, '-' and '_' (it names directories and cgroups)",
        );
    }
}

fn validate_dns(spec: &PodSpec, errs: &mut Errs) {
    const POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    let policy = spec.dns_policy.as_deref();
    if let Some(p) = policy
        && !POLICIES.contains(&p)
    {
        errs.unsupported("spec.dnsPolicy", p, POLICIES);
    }
    let Some(cfg) = spec.dns_config.as_ref() else {
        if policy == Some("None") {
            errs.0.push(
                "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
                    .into(),
            );
        }
        return;
    };
    let servers = cfg.nameservers.as_deref().unwrap_or(&[]);
    if servers.len() > MAX_DNS_NAMESERVERS {
        errs.invalid(
            "spec.dnsConfig.nameservers",
            servers,
            "must not have more than 3 nameservers",
        );
    }
    for (i, s) in servers.iter().enumerate() {
        if s.parse::<IpAddr>().is_err() {
            errs.invalid(
                format!("spec.dnsConfig.nameservers[{i}]"),
                s,
                "must be a valid IP address",
            );
        }
    }
    if policy == Some("None") && servers.is_empty() {
        errs.0.push(
            "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"
                .into(),
        );
    }
    let searches = cfg.searches.as_deref().unwrap_or(&[]);
    if searches.len() > MAX_DNS_SEARCHES {
        errs.invalid(
            "spec.dnsConfig.searches",
            searches.len(),
            "must not have more than 32 search paths",
        );
    }
    for (i, s) in searches.iter().enumerate() {
        let name = s.strip_suffix('.').unwrap_or(s);
        if !is_dns_subdomain(name) {
            errs.invalid(
                format!("spec.dnsConfig.searches[{i}]"),
                s,
                "a lowercase RFC 1123 subdomain",
            );
        }
    }
    for (i, o) in cfg.options.iter().flatten().enumerate() {
        if o.name.as_deref().is_none_or(str::is_empty) {
            errs.required(format!("spec.dnsConfig.options[{i}].name"));
        }
    }
}

fn validate_pod_security(spec: &PodSpec, errs: &mut Errs) {
    let Some(sc) = spec.security_context.as_ref() else {
        return;
    };
    let at = "spec.securityContext";
    for (field, id) in [
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
        ("fsGroup", sc.fs_group),
    ] {
        check_id(format!("{at}.{field}"), id, errs);
    }
    for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
        check_id(format!("{at}.supplementalGroups[{i}]"), Some(*g), errs);
    }
    let mut seen = HashSet::new();
    for (i, s) in sc.sysctls.iter().flatten().enumerate() {
        let name_at = format!("{at}.sysctls[{i}].name");
        if s.name.is_empty() {
            errs.required(name_at);
        } else if !is_sysctl_name(&s.name) {
            errs.invalid(
                name_at,
                &s.name,
                "must have at most 253 characters and consist of lowercase alphanumeric segments separated by '.' or '/'",
            );
        } else if !seen.insert(s.name.as_str()) {
            errs.duplicate(name_at, &s.name);
        }
    }
}

fn check_id(at: String, id: Option<i64>, errs: &mut Errs) {
    if let Some(id) = id
        && !(0..=MAX_ID).contains(&id)
    {
        errs.invalid(at, id, "must be between 0 and 2147483647, inclusive");
    }
}

fn validate_volume<'a>(v: &'a Volume, at: &str, wide: &mut PodWide<'a>, errs: &mut Errs) {
    if v.name.is_empty() {
        errs.required(format!("{at}.name"));
    } else if !is_dns_label(&v.name) {
        // The name is a directory under the pod's volumes directory.
        errs.invalid(format!("{at}.name"), &v.name, "a lowercase RFC 1123 label");
    } else if !wide.volumes.insert(v.name.as_str()) {
        errs.duplicate(format!("{at}.name"), &v.name);
    }
    // The source is whichever field besides `name` is set; the JSON form lists exactly those.
    let kinds: Vec<String> = match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    };
    let kinds: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "name")
        .collect();
    match kinds.as_slice() {
        [] => errs
            .0
            .push(format!("{at}: Required value: must specify a volume type")),
        [kind] if !SUPPORTED_VOLUMES.contains(kind) => {
            errs.unsupported(format!("{at}.{kind}"), kind, SUPPORTED_VOLUMES)
        }
        [_] => {}
        [_, second, ..] => errs.forbidden(
            format!("{at}.{second}"),
            "may not specify more than 1 volume type",
        ),
    }
    for (i, f) in v
        .downward_api
        .iter()
        .flat_map(|d| d.items.iter().flatten())
        .enumerate()
    {
        let at = format!("{at}.downwardAPI.items[{i}]");
        if f.path.is_empty() {
            errs.required(format!("{at}.path"));
        } else if f.path.starts_with('/') || has_backstep(&f.path) || f.path.starts_with("..") {
            errs.invalid(
                format!("{at}.path"),
                &f.path,
                "must be a relative path without '..' that does not start with '..'",
            );
        }
        match (f.field_ref.as_ref(), f.resource_field_ref.as_ref()) {
            (Some(r), None) => {
                let base = r.field_path.split("['").next().unwrap_or_default();
                if !VOLUME_FIELD_PATHS.contains(&base)
                    || (base != r.field_path.as_str()
                        && !matches!(base, "metadata.labels" | "metadata.annotations"))
                {
                    errs.unsupported(
                        format!("{at}.fieldRef.fieldPath"),
                        &r.field_path,
                        VOLUME_FIELD_PATHS,
                    );
                }
            }
            (None, Some(r)) if r.container_name.as_deref().unwrap_or_default().is_empty() => {
                errs.required(format!("{at}.resourceFieldRef.containerName"));
            }
            (None, Some(_)) => {}
            _ => errs.0.push(format!(
                "{at}: Invalid value: \"\": fieldRef and resourceFieldRef can not be specified simultaneously, and one of them is required"
            )),
        }
    }
    if let Some(hp) = v.host_path.as_ref() {
        if hp.path.is_empty() {
            errs.required(format!("{at}.hostPath.path"));
        } else if has_backstep(&hp.path) {
            errs.invalid(
                format!("{at}.hostPath.path"),
                &hp.path,
                "must not contain '..'",
            );
        }
        if let Some(t) = hp.type_.as_deref()
            && !HOST_PATH_TYPES.contains(&t)
        {
            errs.unsupported(format!("{at}.hostPath.type"), t, HOST_PATH_TYPES);
        }
    }
}

fn validate_container(c: &Container, at: &str, wide: &mut PodWide<'_>, errs: &mut Errs) {
    if c.name.is_empty() {
        errs.required(format!("{at}.name"));
    } else if !is_dns_label(&c.name) {
        errs.invalid(format!("{at}.name"), &c.name, "a lowercase RFC 1123 label");
    } else if !wide.names.insert(c.name.clone()) {
        errs.duplicate(format!("{at}.name"), &c.name);
    }
    match c.image.as_deref() {
        None => errs.required(format!("{at}.image")),
        Some(i) if i.trim().is_empty() => errs.required(format!("{at}.image")),
        Some(i) if i.trim() != i => errs.invalid(
            format!("{at}.image"),
            i,
            "must not have leading or trailing whitespace",
        ),
        Some(_) => {}
    }
    if let Some(p) = c.image_pull_policy.as_deref()
        && !["Always", "IfNotPresent", "Never"].contains(&p)
    {
        errs.unsupported(
            format!("{at}.imagePullPolicy"),
            p,
            &["Always", "IfNotPresent", "Never"],
        );
    }
    if let Some(p) = c.termination_message_policy.as_deref()
        && !["File", "FallbackToLogsOnError"].contains(&p)
    {
        errs.unsupported(
            format!("{at}.terminationMessagePolicy"),
            p,
            &["File", "FallbackToLogsOnError"],
        );
    }
    let init = at.starts_with("spec.initContainers");
    lifecycle::validate(c, at, init, errs);
    validate_resources(c, at, errs);
    validate_env(c, at, errs);
    validate_ports(c, at, wide, errs);
    validate_mounts(c, at, wide, errs);
    let sidecar = c.restart_policy.as_deref() == Some("Always");
    probes::validate(c, at, init && !sidecar, errs);
    if let Some(sc) = c.security_context.as_ref() {
        check_id(
            format!("{at}.securityContext.runAsUser"),
            sc.run_as_user,
            errs,
        );
        check_id(
            format!("{at}.securityContext.runAsGroup"),
            sc.run_as_group,
            errs,
        );
        if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
            errs.invalid(
                format!("{at}.securityContext"),
                "privileged",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            );
        }
    }
}

fn validate_resources(c: &Container, at: &str, errs: &mut Errs) {
    let Some(r) = c.resources.as_ref() else {
        return;
    };
    let mut parsed: [BTreeMap<&str, i64>; 2] = Default::default();
    for (slot, (kind, map)) in [("limits", &r.limits), ("requests", &r.requests)]
        .into_iter()
        .enumerate()
    {
        for (res, q) in map.iter().flatten() {
            let field = format!("{at}.resources.{kind}[{res}]");
            let cpu = res == "cpu";
            match quantity::parse(&q.0, cpu) {
                None => errs.invalid(field, &q.0, "must be a valid quantity"),
                Some(v) if cpu && v > quantity::MAX_MILLI_CPU => errs.invalid(
                    field,
                    &q.0,
                    "must be at most 1G CPUs (nodelet's CPU arithmetic limit)",
                ),
                Some(v) if !cpu && v > quantity::MAX_VALUE => errs.invalid(
                    field,
                    &q.0,
                    "must be at most 4Pi (nodelet's arithmetic limit)",
                ),
                Some(v) => {
                    parsed[slot].insert(res.as_str(), v);
                }
            }
        }
    }
    let [limits, requests] = &parsed;
    for (res, req) in requests {
        if let Some(lim) = limits.get(res)
            && req > lim
        {
            let limit_text = r
                .limits
                .as_ref()
                .and_then(|m| m.get(*res))
                .map_or("", |q| q.0.as_str());
            errs.invalid(
                format!("{at}.resources.requests[{res}]"),
                r.requests
                    .as_ref()
                    .and_then(|m| m.get(*res))
                    .map_or("", |q| q.0.as_str()),
                &format!("must be less than or equal to {res} limit of {limit_text}"),
            );
        }
    }
}

fn validate_env(c: &Container, at: &str, errs: &mut Errs) {
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.forbidden(
            format!("{at}.envFrom"),
            "static pods may not reference configmaps or secrets",
        );
    }
    for (i, var) in c.env.iter().flatten().enumerate() {
        let at = format!("{at}.env[{i}]");
        if var.name.is_empty() {
            errs.required(format!("{at}.name"));
        } else if !var
            .name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
        {
            errs.invalid(
                format!("{at}.name"),
                &var.name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
        let Some(from) = var.value_from.as_ref() else {
            continue;
        };
        if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.invalid(
                format!("{at}.valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            );
        }
        let set = [
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.file_key_ref.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => errs.0.push(format!(
                "{at}.valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
            )),
            1 => {}
            _ => errs.0.push(format!(
                "{at}.valueFrom: Invalid value: \"\": may not have more than one field specified at a time"
            )),
        }
        if let Some(f) = from.field_ref.as_ref() {
            let fat = format!("{at}.valueFrom.fieldRef");
            if let Some(v) = f.api_version.as_deref()
                && !v.is_empty()
                && v != "v1"
            {
                errs.unsupported(format!("{fat}.apiVersion"), v, &["v1"]);
            }
            if f.field_path.is_empty() {
                errs.required(format!("{fat}.fieldPath"));
            } else if !env_field_path_ok(&f.field_path) {
                let mut supported = ENV_FIELD_PATHS.to_vec();
                supported.extend(["metadata.labels['<KEY>']", "metadata.annotations['<KEY>']"]);
                errs.unsupported(format!("{fat}.fieldPath"), &f.field_path, &supported);
            }
        }
        if let Some(r) = from.resource_field_ref.as_ref() {
            let rat = format!("{at}.valueFrom.resourceFieldRef");
            if r.resource.is_empty() {
                errs.required(format!("{rat}.resource"));
            } else if !ENV_RESOURCE_FIELDS.contains(&r.resource.as_str()) {
                errs.unsupported(format!("{rat}.resource"), &r.resource, ENV_RESOURCE_FIELDS);
            }
            if let Some(name) = r.container_name.as_deref()
                && !name.is_empty()
                && name != c.name
            {
                errs.forbidden(
                    format!("{rat}.containerName"),
                    "nodelet resolves resourceFieldRef against the container's own resources only",
                );
            }
            if let Some(d) = r.divisor.as_ref() {
                let cpu = r.resource.contains("cpu");
                if !divisor_ok(&d.0, cpu) {
                    errs.invalid(
                        format!("{rat}.divisor"),
                        &d.0,
                        if cpu {
                            "only divisor's values 1m and 1 are supported with the cpu resource"
                        } else {
                            "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the memory resource"
                        },
                    );
                }
            }
        }
        if from.config_map_key_ref.is_some() || from.secret_key_ref.is_some() {
            errs.forbidden(
                format!("{at}.valueFrom"),
                "static pods may not reference configmaps or secrets",
            );
        }
        if from.file_key_ref.is_some() {
            errs.forbidden(
                format!("{at}.valueFrom.fileKeyRef"),
                "not supported by nodelet yet",
            );
        }
    }
}

/// `metadata.labels['key']` and `metadata.annotations['key']` besides the plain fields.
fn env_field_path_ok(path: &str) -> bool {
    if ENV_FIELD_PATHS.contains(&path) {
        return true;
    }
    ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix("']"))
                .is_some_and(|key| !key.is_empty())
        })
}

/// The divisors the API server allows (validation.go validateContainerResourceDivisor).
fn divisor_ok(q: &str, cpu: bool) -> bool {
    let Some(v) = quantity::parse(q, cpu) else {
        return false;
    };
    if cpu {
        return v == 1 || v == 1000;
    }
    let decimal = (0..=6).map(|e| 1000i64.pow(e));
    let binary = (1..=6).map(|e| 1i64 << (10 * e));
    decimal.chain(binary).any(|d| d == v)
}

fn validate_ports(c: &Container, at: &str, wide: &mut PodWide<'_>, errs: &mut Errs) {
    let mut names = HashSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let at = format!("{at}.ports[{i}]");
        if let Some(n) = p.name.as_deref() {
            if !is_port_name(n) {
                errs.invalid(
                    format!("{at}.name"),
                    n,
                    "must be at most 15 characters of lowercase letters, digits and '-', with at least one letter",
                );
            } else if !names.insert(n) {
                errs.duplicate(format!("{at}.name"), n);
            }
        }
        if !(1..=65535).contains(&p.container_port) {
            errs.invalid(
                format!("{at}.containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            );
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            errs.unsupported(format!("{at}.protocol"), protocol, &["SCTP", "TCP", "UDP"]);
        }
        let host_ip = p.host_ip.as_deref().unwrap_or("");
        if !host_ip.is_empty() && host_ip.parse::<IpAddr>().is_err() {
            errs.invalid(
                format!("{at}.hostIP"),
                host_ip,
                "must be a valid IP address",
            );
        }
        let host_port = p.host_port.unwrap_or(0);
        if host_port == 0 {
            continue;
        }
        if !(1..=65535).contains(&host_port) {
            errs.invalid(
                format!("{at}.hostPort"),
                host_port,
                "must be between 1 and 65535, inclusive",
            );
        } else if wide.host_network && host_port != p.container_port {
            errs.invalid(
                format!("{at}.hostPort"),
                host_port,
                "must match `containerPort` when `hostNetwork` is true",
            );
        } else if !wide
            .host_ports
            .insert(format!("{protocol}/{host_ip}/{host_port}"))
        {
            errs.duplicate(format!("{at}.hostPort"), format!("{host_port}/{protocol}"));
        }
    }
}

fn validate_mounts(c: &Container, at: &str, wide: &PodWide<'_>, errs: &mut Errs) {
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    let mut paths = HashSet::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        let at = format!("{at}.volumeMounts[{j}]");
        if m.name.is_empty() {
            errs.required(format!("{at}.name"));
        } else if !wide.volumes.contains(m.name.as_str()) {
            errs.not_found(format!("{at}.name"), &m.name);
        }
        if m.mount_path.is_empty() {
            errs.required(format!("{at}.mountPath"));
        } else if !paths.insert(m.mount_path.as_str()) {
            errs.invalid(format!("{at}.mountPath"), &m.mount_path, "must be unique");
        }
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            // The host side is <volume>/<subPath>: an absolute subPath would replace the volume.
            if sub.starts_with('/') {
                errs.invalid(format!("{at}.subPath"), sub, "must be a relative path");
            } else if has_backstep(sub) {
                errs.invalid(format!("{at}.subPath"), sub, "must not contain '..'");
            }
        }
        if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
            errs.forbidden(format!("{at}.subPathExpr"), "not supported by nodelet yet");
        }
        match m.mount_propagation.as_deref() {
            None | Some("None") | Some("HostToContainer") => {}
            Some("Bidirectional") if !privileged => errs.forbidden(
                format!("{at}.mountPropagation"),
                "Bidirectional mount propagation is available only to privileged containers",
            ),
            Some("Bidirectional") => {}
            Some(other) => errs.unsupported(
                format!("{at}.mountPropagation"),
                other,
                &["Bidirectional", "HostToContainer", "None"],
            ),
        }
    }
}

/// Checks that only hold once defaults are applied (the kubelet validates after defaulting, in
/// config/common.go tryDecodeSinglePod): the name with its node suffix, and the pod's log
/// directory name `<namespace>_<name>_<uid>`, which must fit in one file name.
fn validate_defaulted(p: &DesiredPod) -> Vec<String> {
    let mut errs = Errs::default();
    let r = &p.pod_ref;
    if !is_dns_subdomain(&r.name) {
        errs.invalid(
            "metadata.name",
            &r.name,
            "with the \"-<node name>\" suffix, must be a lowercase RFC 1123 subdomain of at most 253 characters",
        );
    }
    let dir_len = r.namespace.len() + r.name.len() + r.uid.len() + 2;
    if dir_len > NAME_MAX {
        errs.invalid(
            "metadata.name",
            &r.name,
            &format!(
                "the pod log directory name <namespace>_<name>_<uid> would be {dir_len} bytes, over the 255-byte file name limit"
            ),
        );
    }
    errs.0
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// IANA service name (validation IsValidPortName).
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Sysctl names (validation.go IsValidSysctlName): segments of `[a-z0-9]([-_a-z0-9]*[a-z0-9])?`
/// separated by '.' or '/'.
fn is_sysctl_name(s: &str) -> bool {
    s.len() <= 253
        && s.split(['.', '/']).all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
                && !seg.starts_with(['-', '_'])
                && !seg.ends_with(['-', '_'])
        })
}

/// Whether a path has a `..` element (validation.go validatePathNoBacksteps).
fn has_backstep(p: &str) -> bool {
    p.split('/').any(|part| part == "..")
}

/// The kubelet's applyDefaults for file sources (pkg/kubelet/config/common.go):
/// UID = md5 over the decoded pod, then "host:<node>", then "file:<path>", unless the manifest
/// sets one; name gets "-<node>"; namespace defaults to "default"; spec.nodeName is the node;
/// the config hash and source annotations are set.
///
/// The kubelet hashes Go's in-memory object (hash.DeepHashObject); we hash the canonical JSON of
/// the decoded object. Same property (formatting and comments do not change the UID, any
/// content change does); the hex values differ from a Go kubelet's.
pub fn apply_defaults(mut pod: Pod, path: &Path, node_name: &str) -> DesiredPod {
    let uid = match pod.metadata.uid.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        None => {
            let mut h = Md5::new();
            h.update(serde_json::to_vec(&pod).unwrap_or_default());
            h.update(format!("host:{node_name}"));
            h.update(format!("file:{}", path.display()));
            hex::encode(h.finalize())
        }
    };
    let name = format!(
        "{}-{}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        node_name.to_lowercase()
    );
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    pod.metadata.uid = Some(uid.clone());
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = Some(namespace.clone());
    let ann = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
    ann.insert(CONFIG_HASH_ANNOTATION.into(), uid.clone());
    ann.insert(CONFIG_SOURCE_ANNOTATION.into(), "file".into());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node_name.to_string());
        // Static pods tolerate every NoExecute taint (common.go applyDefaults, isFile).
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        let all = Toleration {
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        };
        if !tolerations.contains(&all) {
            tolerations.push(all);
        }
    }
    DesiredPod {
        pod_ref: PodRef {
            namespace,
            name,
            uid,
        },
        pod,
        source: PodSource::File(path.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox:1.35\n";

    #[test]
    fn names_and_uids_the_kubelet_way() {
        let p = decode(Path::new("/m/web.yaml"), GOOD.as_bytes(), "Node1")
            .expect("valid")
            .pod;
        assert_eq!(p.pod_ref.name, "web-node1");
        assert_eq!(p.pod_ref.namespace, "default");
        assert_eq!(p.pod_ref.uid.len(), 32);
        assert_eq!(
            p.pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CONFIG_HASH_ANNOTATION)),
            Some(&p.pod_ref.uid)
        );
        assert_eq!(
            p.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("Node1")
        );
    }

    #[test]
    fn uid_is_stable_across_formatting_and_changes_with_content() {
        let a = decode(Path::new("/m/web.yaml"), GOOD.as_bytes(), "n")
            .expect("valid")
            .pod;
        let reformatted = format!("# a comment\n{GOOD}\n");
        let b = decode(Path::new("/m/web.yaml"), reformatted.as_bytes(), "n")
            .expect("valid")
            .pod;
        assert_eq!(a.pod_ref.uid, b.pod_ref.uid);
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},"spec":{"containers":[{"name":"c","image":"busybox:1.35"}]}}"#;
        let c = decode(Path::new("/m/web.yaml"), json.as_bytes(), "n")
            .expect("valid json")
            .pod;
        assert_eq!(
            a.pod_ref.uid, c.pod_ref.uid,
            "JSON and YAML of one pod agree"
        );
        let edited = GOOD.replace("1.35", "1.36");
        let d = decode(Path::new("/m/web.yaml"), edited.as_bytes(), "n")
            .expect("valid")
            .pod;
        assert_ne!(a.pod_ref.uid, d.pod_ref.uid);
        let other_file = decode(Path::new("/m/web2.yaml"), GOOD.as_bytes(), "n")
            .expect("valid")
            .pod;
        assert_ne!(a.pod_ref.uid, other_file.pod_ref.uid);
        let other_node = decode(Path::new("/m/web.yaml"), GOOD.as_bytes(), "m")
            .expect("valid")
            .pod;
        assert_ne!(a.pod_ref.uid, other_node.pod_ref.uid);
    }

    #[test]
    fn missing_image_names_the_field() {
        let bad = GOOD.replace("    image: busybox:1.35\n", "");
        let err = decode(Path::new("/m/bad.yaml"), bad.as_bytes(), "n").expect_err("invalid");
        let msg = err.to_string();
        assert!(msg.contains("/m/bad.yaml"), "{msg}");
        assert!(
            msg.contains("spec.containers[0].image: Required value"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_the_field_path() {
        let bad = GOOD.replace(
            "    image: busybox:1.35\n",
            "    image: busybox\n    ports:\n    - containerPort: eighty\n",
        );
        let err = decode(Path::new("/m/bad.yaml"), bad.as_bytes(), "n").expect_err("invalid");
        let msg = err.to_string();
        assert!(
            msg.contains("spec.containers[0].ports[0].containerPort"),
            "{msg}"
        );
    }

    #[test]
    fn broken_yaml_and_empty_files_are_errors() {
        for data in ["spec: [unclosed", "", "   \n"] {
            let err = decode(Path::new("/m/x.yaml"), data.as_bytes(), "n");
            assert!(err.is_err(), "{data:?}");
        }
    }

    #[test]
    fn second_document_is_ignored_with_a_warning() {
        let two = format!("{GOOD}---\n{}", GOOD.replace("web", "other"));
        let d = decode(Path::new("/m/two.yaml"), two.as_bytes(), "n").expect("first doc");
        assert_eq!(d.pod.pod_ref.name, "web-n");
        assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("/m/two.yaml"));
    }

    #[test]
    fn duplicate_container_names_and_bad_policy() {
        let bad = "metadata: {name: p}\nspec:\n  restartPolicy: Sometimes\n  containers:\n  - {name: a, image: x}\n  - {name: a, image: x}\n";
        let err = decode(Path::new("/m/p.yaml"), bad.as_bytes(), "n").expect_err("invalid");
        let msg = err.to_string();
        assert!(
            msg.contains("spec.restartPolicy: Unsupported value"),
            "{msg}"
        );
        assert!(
            msg.contains("spec.containers[1].name: Duplicate value"),
            "{msg}"
        );
    }

    #[test]
    fn static_pods_may_use_downward_api_volumes_but_no_api_objects() {
        let ok = "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: x, volumeMounts: [{name: info, mountPath: /info}]}\n  volumes:\n  - name: info\n    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}, {path: l, fieldRef: {fieldPath: \"metadata.labels['x']\"}}, {path: m, resourceFieldRef: {containerName: a, resource: limits.memory}}]}\n";
        decode(Path::new("/m/p.yaml"), ok.as_bytes(), "n").expect("downwardAPI is allowed");
        let bad = "metadata: {name: p}\nspec:\n  containers:\n  - {name: a, image: x}\n  volumes:\n  - name: info\n    downwardAPI: {items: [{path: ../x, fieldRef: {fieldPath: spec.nodeName}}, {path: y, resourceFieldRef: {resource: limits.cpu}}]}\n  - name: cm\n    configMap: {name: c}\n";
        let msg = decode(Path::new("/m/p.yaml"), bad.as_bytes(), "n")
            .expect_err("invalid")
            .to_string();
        for want in [
            "spec.volumes[0].downwardAPI.items[0].path: Invalid value",
            "spec.volumes[0].downwardAPI.items[0].fieldRef.fieldPath: Unsupported value",
            "spec.volumes[0].downwardAPI.items[1].resourceFieldRef.containerName: Required value",
            "spec.volumes[1].configMap: Unsupported value",
        ] {
            assert!(msg.contains(want), "{want} in {msg}");
        }
    }
}
