//! Payloads: which files a configMap, secret or downwardAPI source projects, with which modes
//! (kubelet pkg/volume/configmap MakePayload, pkg/volume/secret MakePayload,
//! pkg/volume/downwardapi CollectData, pkg/fieldpath, pkg/api/v1/resource). Pure functions of
//! the objects and the pod; the env of containers uses the same field and resource rules.

use super::atomic_writer::{FileProjection, Payload};
use crate::pod::ContainerResources;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, Pod, ResourceFieldSelector, Secret,
};
use std::collections::BTreeMap;

/// The mode files get when neither the volume nor the item says (0644, API defaulting).
pub const DEFAULT_MODE: i32 = 0o644;

/// Why a source's payload could not be made; the text is the kubelet's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// An item names a key the configMap lacks (and the source is not optional).
    #[error("configmap references non-existent config key: {0}")]
    ConfigMapKey(String),
    /// An item names a key the secret lacks (and the source is not optional).
    #[error("secret references non-existent secret key: {0}")]
    SecretKey(String),
    /// A downward API field path this node cannot resolve.
    #[error("{0}")]
    Field(String),
}

/// Node CPU (millicores) and memory (bytes): the limits a container without its own gets in the
/// downward API (kubelet defaultPodLimitsForDownwardAPI uses node allocatable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAllocatable {
    /// Millicores.
    pub cpu_milli: i64,
    /// Bytes.
    pub memory: i64,
}

fn mode(item: Option<i32>, default: i32) -> u32 {
    item.unwrap_or(default) as u32 & 0o7777
}

/// Files of a key/value source: every key with `default_mode`, or only the listed items at
/// their paths; a listed key that is missing is an error unless `optional`.
fn key_payload(
    items: Option<&Vec<KeyToPath>>,
    data: &BTreeMap<String, Vec<u8>>,
    default_mode: i32,
    optional: bool,
    missing: impl Fn(String) -> ProjectionError,
) -> Result<Payload, ProjectionError> {
    let mut out = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode(None, default_mode),
                    },
                );
            }
        }
        Some(items) => {
            for ktp in items {
                let Some(v) = data.get(&ktp.key) else {
                    if optional {
                        continue;
                    }
                    return Err(missing(ktp.key.clone()));
                };
                out.insert(
                    ktp.path.clone(),
                    FileProjection {
                        data: v.clone(),
                        mode: mode(ktp.mode, default_mode),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// A configMap's data and binaryData as bytes; `None` (an optional object that does not exist)
/// is empty.
pub fn config_map_data(cm: Option<&ConfigMap>) -> BTreeMap<String, Vec<u8>> {
    let mut data = BTreeMap::new();
    if let Some(cm) = cm {
        for (k, v) in cm.data.iter().flatten() {
            data.insert(k.clone(), v.clone().into_bytes());
        }
        for (k, v) in cm.binary_data.iter().flatten() {
            data.insert(k.clone(), v.0.clone());
        }
    }
    data
}

/// A secret's data (stringData is folded into data by the API server).
pub fn secret_data(s: Option<&Secret>) -> BTreeMap<String, Vec<u8>> {
    s.and_then(|s| s.data.as_ref())
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

/// configmap.MakePayload.
pub fn config_map_payload(
    items: Option<&Vec<KeyToPath>>,
    cm: Option<&ConfigMap>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, ProjectionError> {
    key_payload(
        items,
        &config_map_data(cm),
        default_mode,
        optional,
        ProjectionError::ConfigMapKey,
    )
}

/// secret.MakePayload.
pub fn secret_payload(
    items: Option<&Vec<KeyToPath>>,
    s: Option<&Secret>,
    default_mode: i32,
    optional: bool,
) -> Result<Payload, ProjectionError> {
    key_payload(
        items,
        &secret_data(s),
        default_mode,
        optional,
        ProjectionError::SecretKey,
    )
}

/// downwardapi.CollectData: each item's field or resource value at its path.
pub fn downward_api_payload(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    default_mode: i32,
    node: NodeAllocatable,
) -> Result<Payload, ProjectionError> {
    let mut out = Payload::new();
    let mut errs = Vec::new();
    for f in items {
        let value = if let Some(fr) = f.field_ref.as_ref() {
            pod_field(pod, &fr.field_path)
        } else if let Some(rr) = f.resource_field_ref.as_ref() {
            let name = rr.container_name.as_deref().unwrap_or_default();
            pod.spec
                .as_ref()
                .and_then(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                        .find(|c| c.name == name)
                })
                .ok_or_else(|| format!("container {name} not found"))
                .and_then(|c| resource_value(c, rr, node))
        } else {
            Ok(String::new())
        };
        match value {
            Ok(v) => {
                out.insert(
                    f.path.clone(),
                    FileProjection {
                        data: v.into_bytes(),
                        mode: mode(f.mode, default_mode),
                    },
                );
            }
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(ProjectionError::Field(errs.join(", ")))
    }
}

/// fieldpath.ExtractFieldPathAsString: the metadata fields the downward API volume offers.
pub fn pod_field(pod: &Pod, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    if let Some((base, key)) = path
        .strip_suffix("']")
        .and_then(|s| s.split_once("['"))
        .filter(|(b, _)| !b.is_empty())
    {
        let map = match base {
            "metadata.annotations" => &m.annotations,
            "metadata.labels" => &m.labels,
            _ => return Err(format!("fieldPath {path:?} does not support subscript")),
        };
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    Ok(match path {
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        _ => return Err(format!("unsupported fieldPath: {path}")),
    })
}

/// fieldpath.FormatMap: sorted `key="value"` lines, values quoted as Go's strconv.Quote.
pub fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// strconv.Quote for the ASCII range; other characters pass through as Go leaves printable
/// runes (non-printable non-ASCII runes, which Go would escape, are rare in labels).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A container's resource value for the downward API, divided by the divisor and rounded up;
/// limits default to the node's allocatable (ExtractContainerResourceValue after
/// defaultPodLimitsForDownwardAPI).
pub fn resource_value(
    c: &Container,
    r: &ResourceFieldSelector,
    node: NodeAllocatable,
) -> Result<String, String> {
    let cpu = r.resource.ends_with(".cpu");
    let divisor = r
        .divisor
        .as_ref()
        .and_then(|d| crate::pod::quantity::parse(&d.0, cpu))
        .filter(|d| *d > 0)
        .unwrap_or(if cpu { 1000 } else { 1 });
    let res = ContainerResources::of(c);
    let value = match r.resource.as_str() {
        "limits.cpu" => res.cpu_limit.unwrap_or(node.cpu_milli),
        "requests.cpu" => res.cpu_request.unwrap_or(0),
        "limits.memory" => res.memory_limit.unwrap_or(node.memory),
        "requests.memory" => res.memory_request.unwrap_or(0),
        other => return Err(format!("unsupported container resource : {other}")),
    };
    Ok(((value + divisor - 1) / divisor).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::ObjectFieldSelector;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cm() -> ConfigMap {
        ConfigMap {
            data: Some(BTreeMap::from([
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ])),
            binary_data: Some(BTreeMap::from([(
                "bin".to_string(),
                ByteString(vec![0, 1, 2]),
            )])),
            ..Default::default()
        }
    }

    fn ktp(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath {
            key: key.into(),
            path: path.into(),
            mode,
            ..Default::default()
        }
    }

    #[test]
    fn without_items_every_key_is_a_file_with_the_default_mode() {
        let p = config_map_payload(None, Some(&cm()), 0o640, false).expect("payload");
        assert_eq!(
            p.keys().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "bin"]
        );
        assert!(p.values().all(|f| f.mode == 0o640));
        assert_eq!(p["bin"].data, [0, 1, 2]);
    }

    #[test]
    fn items_choose_keys_paths_and_modes() {
        let items = vec![ktp("a", "dir/x", Some(0o400)), ktp("b", "y", None)];
        let p =
            config_map_payload(Some(&items), Some(&cm()), DEFAULT_MODE, false).expect("payload");
        assert_eq!(p.len(), 2);
        assert_eq!(p["dir/x"].data, b"1");
        assert_eq!(p["dir/x"].mode, 0o400);
        assert_eq!(p["y"].mode, 0o644);
    }

    #[test]
    fn a_missing_item_key_fails_unless_optional() {
        let items = vec![ktp("a", "x", None), ktp("nope", "y", None)];
        assert_eq!(
            config_map_payload(Some(&items), Some(&cm()), DEFAULT_MODE, false),
            Err(ProjectionError::ConfigMapKey("nope".into()))
        );
        let p =
            config_map_payload(Some(&items), Some(&cm()), DEFAULT_MODE, true).expect("optional");
        assert_eq!(p.keys().collect::<Vec<_>>(), ["x"]);
        // An optional object that does not exist projects nothing.
        assert!(
            config_map_payload(Some(&items), None, DEFAULT_MODE, true)
                .expect("absent optional")
                .is_empty()
        );
        let s = Secret {
            data: Some(BTreeMap::from([(
                "k".to_string(),
                ByteString(b"v".to_vec()),
            )])),
            ..Default::default()
        };
        assert_eq!(
            secret_payload(Some(&vec![ktp("x", "x", None)]), Some(&s), 0o600, false)
                .expect_err("missing secret key")
                .to_string(),
            "secret references non-existent secret key: x"
        );
        let p = secret_payload(None, Some(&s), 0o600, false).expect("secret");
        assert_eq!(p["k"].data, b"v");
        assert_eq!(p["k"].mode, 0o600);
    }

    #[test]
    fn downward_api_fields_and_resources() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([
                    ("b".to_string(), "two \"q\"".to_string()),
                    ("a".to_string(), "1".to_string()),
                ])),
                ..Default::default()
            },
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "memory".to_string(),
                            Quantity("64Mi".into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let field = |path: &str, at: &str| DownwardAPIVolumeFile {
            path: at.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let res = |r: &str, div: Option<&str>, at: &str| DownwardAPIVolumeFile {
            path: at.into(),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("c".into()),
                resource: r.into(),
                divisor: div.map(|d| Quantity(d.into())),
            }),
            mode: Some(0o400),
            ..Default::default()
        };
        let node = NodeAllocatable {
            cpu_milli: 2000,
            memory: 1 << 30,
        };
        let p = downward_api_payload(
            &[
                field("metadata.name", "name"),
                field("metadata.labels", "labels"),
                field("metadata.labels['a']", "la"),
                field("metadata.uid", "uid"),
                res("requests.memory", Some("1Mi"), "mem"),
                res("limits.cpu", None, "cpu"),
            ],
            &pod,
            DEFAULT_MODE,
            node,
        )
        .expect("payload");
        let s = |k: &str| String::from_utf8(p[k].data.clone()).expect("utf8");
        assert_eq!(s("name"), "p");
        assert_eq!(s("labels"), "a=\"1\"\nb=\"two \\\"q\\\"\"");
        assert_eq!(s("la"), "1");
        assert_eq!(s("uid"), "u-1");
        assert_eq!(s("mem"), "64");
        assert_eq!(s("cpu"), "2", "limits default to node allocatable");
        assert_eq!(p["mem"].mode, 0o400);
        assert_eq!(p["name"].mode, 0o644);
        let err = downward_api_payload(&[field("spec.nodeName", "n")], &pod, DEFAULT_MODE, node)
            .expect_err("volumes offer metadata only");
        assert_eq!(err.to_string(), "unsupported fieldPath: spec.nodeName");
    }
}
