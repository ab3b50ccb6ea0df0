//! One static pod manifest: decode (YAML or JSON), validate, default, name and UID it the
//! kubelet's way (pkg/kubelet/config/common.go: tryDecodeSinglePod, applyDefaults).

use crate::pod::{DesiredPod, PodRef, quantity};
use k8s_openapi::api::core::v1::{Container, Pod, Toleration};
use md5::{Digest, Md5};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

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
    Ok(Decoded {
        pod: apply_defaults(pod, path, node_name),
        warnings,
    })
}

/// Decodes the pod and counts further YAML documents, which the kubelet ignores
/// (utilyaml.ToJSON decodes only the first document).
fn decode_pod(path: &Path, data: &[u8]) -> Result<(Pod, usize), ManifestError> {
    let err = |field: String, reason: String| ManifestError::Decode {
        path: path.to_owned(),
        field,
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
        (pod, docs.count())
    };
    Ok(pod)
}

/// A subset of the API server's ValidatePodCreate, worded like it (field path: message).
pub fn validate(pod: &Pod) -> Vec<String> {
    let mut errs = Vec::new();
    match pod.metadata.name.as_deref() {
        None | Some("") => errs.push("metadata.name: Required value: name or generateName is required".into()),
        Some(n) if !is_dns_subdomain(n) => errs.push(format!(
            "metadata.name: Invalid value: {n:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
        )),
        _ => {}
    }
    if let Some(ns) = pod.metadata.namespace.as_deref()
        && !ns.is_empty()
        && !is_dns_label(ns)
    {
        errs.push(format!(
            "metadata.namespace: Invalid value: {ns:?}: a lowercase RFC 1123 label"
        ));
    }
    let Some(spec) = pod.spec.as_ref() else {
        errs.push("spec: Required value".into());
        return errs;
    };
    if spec.containers.is_empty() {
        errs.push("spec.containers: Required value".into());
    }
    if let Some(p) = spec.restart_policy.as_deref()
        && !["Always", "OnFailure", "Never"].contains(&p)
    {
        errs.push(format!(
            "spec.restartPolicy: Unsupported value: {p:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
        ));
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        errs.push(format!(
            "spec.terminationGracePeriodSeconds: Invalid value: {g}: must be >= 0"
        ));
    }
    let volumes: HashSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    let mut names = HashSet::new();
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
            validate_container(c, &at, &volumes, &mut names, &mut errs);
        }
    }
    errs
}

fn validate_container(
    c: &Container,
    at: &str,
    volumes: &HashSet<&str>,
    names: &mut HashSet<String>,
    errs: &mut Vec<String>,
) {
    if c.name.is_empty() {
        errs.push(format!("{at}.name: Required value"));
    } else if !is_dns_label(&c.name) {
        errs.push(format!(
            "{at}.name: Invalid value: {:?}: a lowercase RFC 1123 label",
            c.name
        ));
    } else if !names.insert(c.name.clone()) {
        errs.push(format!("{at}.name: Duplicate value: {:?}", c.name));
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        errs.push(format!("{at}.image: Required value"));
    }
    if let Some(p) = c.image_pull_policy.as_deref()
        && !["Always", "IfNotPresent", "Never"].contains(&p)
    {
        errs.push(format!(
            "{at}.imagePullPolicy: Unsupported value: {p:?}: supported values: \"Always\", \"IfNotPresent\", \"Never\""
        ));
    }
    if let Some(r) = c.resources.as_ref() {
        for (kind, map) in [("limits", &r.limits), ("requests", &r.requests)] {
            for (res, q) in map.iter().flatten() {
                if quantity::parse(&q.0, res == "cpu").is_none() {
                    errs.push(format!(
                        "{at}.resources.{kind}[{res}]: Invalid value: {:?}: must be a valid quantity",
                        q.0
                    ));
                }
            }
        }
    }
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            errs.push(format!(
                "{at}.volumeMounts[{j}].name: Not found: {:?}",
                m.name
            ));
        }
    }
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
        source: path.to_owned(),
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
}
