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

mod containers;
mod lifecycle;
mod names;
mod pod_fields;
mod probes;
mod volumes;

use containers::*;
use names::*;
use pod_fields::*;
use volumes::*;

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

    fn required_because(&mut self, at: impl fmt::Display, why: &str) {
        self.0.push(format!("{at}: Required value: {why}"));
    }

    fn too_many(&mut self, at: impl fmt::Display, n: usize, max: usize) {
        self.0.push(format!(
            "{at}: Too many: {n}: must have at most {max} items"
        ));
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
    validate_hostname_override(spec, &mut errs);
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
mod tests;
