//! localStorageEviction (pkg/kubelet/eviction/eviction_manager.go): on every filesystem pass,
//! whatever the node's thresholds, a pod is evicted at once when an emptyDir holds more than
//! its `sizeLimit`, when the pod's ephemeral storage (writable layers, logs, local volumes)
//! exceeds the pod's ephemeral-storage limit, or when a container's writable layer and logs
//! exceed its own limit; checked in that order, with the kubelet's messages. Only pods with
//! such a limit are measured.

use super::disk::{self, Dirs, PodDisk};
use crate::pod::quantity::binary_si;
use crate::pod::{DesiredPod, quantity};
use k8s_openapi::api::core::v1::Container;
use std::collections::HashMap;

/// A limit as written (for the message) and in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// Volume or container name (empty for the pod).
    pub name: String,
    /// The quantity as the spec writes it.
    pub text: String,
    /// Bytes.
    pub bytes: i64,
}

/// A pod's local storage limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// emptyDir volumes with a positive `sizeLimit`.
    pub empty_dirs: Vec<Limit>,
    /// PodLimits' ephemeral-storage.
    pub pod: Option<Limit>,
    /// Containers and sidecars with a non-zero ephemeral-storage limit.
    pub containers: Vec<Limit>,
}

fn storage_limit(c: &Container) -> Option<(String, i64)> {
    let q = c
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("ephemeral-storage")?;
    Some((q.0.clone(), quantity::parse(&q.0, false)?))
}

/// The pod's limits; `None` when it has none (nothing to measure).
pub fn limits(p: &DesiredPod) -> Option<Limits> {
    let spec = p.pod.spec.as_ref()?;
    let mut l = Limits::default();
    for v in spec.volumes.iter().flatten() {
        let Some(q) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) else {
            continue;
        };
        if let Some(bytes) = quantity::parse(&q.0, false).filter(|b| *b > 0) {
            l.empty_dirs.push(Limit {
                name: v.name.clone(),
                text: q.0.clone(),
                bytes,
            });
        }
    }
    let sidecar = |c: &&Container| c.restart_policy.as_deref() == Some("Always");
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten().filter(sidecar))
    {
        if let Some((text, bytes)) = storage_limit(c).filter(|(_, b)| *b != 0) {
            l.containers.push(Limit {
                name: c.name.clone(),
                text,
                bytes,
            });
        }
    }
    l.pod = pod_limit(p);
    (!l.empty_dirs.is_empty() || l.pod.is_some() || !l.containers.is_empty()).then_some(l)
}

/// PodLimits for ephemeral-storage: pod-level `resources.limits`, else the sum of the
/// containers' (and sidecars') limits, raised to any init container's; present when any
/// container sets one.
fn pod_limit(p: &DesiredPod) -> Option<Limit> {
    let spec = p.pod.spec.as_ref()?;
    if let Some(q) = spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("ephemeral-storage"))
    {
        return Some(Limit {
            name: String::new(),
            text: q.0.clone(),
            bytes: quantity::parse(&q.0, false)?,
        });
    }
    let mut found = false;
    let mut sum = 0i64;
    for c in &spec.containers {
        if let Some((_, b)) = storage_limit(c) {
            found = true;
            sum = sum.saturating_add(b);
        }
    }
    let (mut sidecars, mut init_max) = (0i64, 0i64);
    for c in spec.init_containers.iter().flatten() {
        let Some((_, b)) = storage_limit(c) else {
            continue;
        };
        found = true;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.saturating_add(b);
            init_max = init_max.max(sidecars);
        } else {
            init_max = init_max.max(sidecars.saturating_add(b));
        }
    }
    let bytes = sum.saturating_add(sidecars).max(init_max);
    found.then(|| Limit {
        name: String::new(),
        // Limits and usage are never negative; a negative sum would print as a plain number.
        text: u64::try_from(bytes).map_or_else(|_| bytes.to_string(), binary_si),
        bytes,
    })
}

/// What one pod uses: `disk` from [`disk::measure`], `volumes` each limited emptyDir's bytes.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Writable layers, logs and disk emptyDirs.
    pub disk: PodDisk,
    /// Per limited emptyDir.
    pub volumes: HashMap<String, i64>,
}

/// The `kubelet_evictions` signal labels of the three checks.
pub const EMPTY_DIR_SIGNAL: &str = "emptydirfs.limit";
/// Pod ephemeral-storage limit.
pub const POD_SIGNAL: &str = "ephemeralpodfs.limit";
/// Container ephemeral-storage limit.
pub const CONTAINER_SIGNAL: &str = "ephemeralcontainerfs.limit";

/// The signal and eviction message of the first limit exceeded, if any (emptyDir, pod,
/// container, as the kubelet checks them). With a dedicated imagefs a container's writable
/// layer does not count against its limit.
pub fn exceeded(l: &Limits, u: &Usage, dedicated_image_fs: bool) -> Option<(&'static str, String)> {
    for v in &l.empty_dirs {
        if u.volumes.get(&v.name).is_some_and(|used| *used > v.bytes) {
            return Some((
                EMPTY_DIR_SIGNAL,
                format!(
                    "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                    v.name, v.text
                ),
            ));
        }
    }
    if let Some(pl) = &l.pod {
        let all = disk::Measure {
            root: true,
            logs: true,
            volumes: true,
        };
        if u.disk.usage(all, false) > pl.bytes {
            return Some((
                POD_SIGNAL,
                format!(
                    "Pod ephemeral local storage usage exceeds the total limit of containers {}. ",
                    pl.text
                ),
            ));
        }
    }
    for cd in &u.disk.containers {
        let Some(cl) = l.containers.iter().find(|c| c.name == cd.name) else {
            continue;
        };
        let used = cd.logs.bytes + if dedicated_image_fs { 0 } else { cd.root.bytes };
        if used > cl.bytes {
            return Some((
                CONTAINER_SIGNAL,
                format!(
                    "Container {} exceeded its local ephemeral storage limit {:?}. ",
                    cd.name, cl.text
                ),
            ));
        }
    }
    None
}

/// Measures `p` for its limits `l`: the CRI and log walk only when a pod or container limit
/// needs them, each limited emptyDir by walking it.
pub async fn measure(
    cri: &crate::kuberuntime::Cri,
    dirs: &Dirs,
    p: &DesiredPod,
    l: &Limits,
) -> Usage {
    let mut u = Usage::default();
    if l.pod.is_some() || !l.containers.is_empty() {
        u.disk = disk::measure(cri, dirs, &[p])
            .await
            .remove(&p.pod_ref.uid)
            .unwrap_or_default();
    }
    let names: Vec<String> = l.empty_dirs.iter().map(|v| v.name.clone()).collect();
    let base = dirs
        .root_dir
        .join("pods")
        .join(&p.pod_ref.uid)
        .join("volumes/kubernetes.io~empty-dir");
    if let Ok(v) = tokio::task::spawn_blocking(move || {
        names
            .into_iter()
            .map(|n| {
                let used = disk::walk(&base.join(&n)).bytes;
                (n, used)
            })
            .collect::<HashMap<_, _>>()
    })
    .await
    {
        u.volumes = v;
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::disk::{ContainerDisk, Use};
    use crate::pod::{PodRef, PodSource};
    use k8s_openapi::api::core::v1::{
        EmptyDirVolumeSource, Pod, PodSpec, ResourceRequirements, Volume,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn container(name: &str, limit: Option<&str>, restart: Option<&str>) -> Container {
        Container {
            name: name.into(),
            restart_policy: restart.map(Into::into),
            resources: limit.map(|l| ResourceRequirements {
                limits: Some(BTreeMap::from([(
                    "ephemeral-storage".to_string(),
                    Quantity(l.into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>, inits: Vec<Container>, size: Option<&str>) -> DesiredPod {
        DesiredPod {
            pod_ref: PodRef {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            pod: Pod {
                spec: Some(PodSpec {
                    containers,
                    init_containers: Some(inits),
                    volumes: Some(vec![Volume {
                        name: "scratch".into(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: size.map(|s| Quantity(s.into())),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            source: PodSource::Api,
        }
    }

    fn usage(root: i64, logs: i64, volume: i64) -> Usage {
        Usage {
            disk: PodDisk {
                containers: vec![ContainerDisk {
                    name: "c".into(),
                    root: Use {
                        bytes: root,
                        inodes: 0,
                    },
                    logs: Use {
                        bytes: logs,
                        inodes: 0,
                    },
                }],
                volumes: Use {
                    bytes: volume,
                    inodes: 0,
                },
            },
            volumes: HashMap::from([("scratch".to_string(), volume)]),
        }
    }

    #[test]
    fn nothing_limited_is_not_measured() {
        assert_eq!(
            limits(&pod(vec![container("c", None, None)], vec![], None)),
            None
        );
    }

    #[test]
    fn empty_dir_first_then_pod_then_container() {
        let p = pod(vec![container("c", Some("1Mi"), None)], vec![], Some("2Mi"));
        let l = limits(&p).expect("limited");
        assert_eq!(l.pod.as_ref().map(|p| p.text.as_str()), Some("1Mi"));
        assert_eq!(
            exceeded(&l, &usage(0, 0, 3 << 20), false)
                .map(|e| e.1)
                .as_deref(),
            Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"2Mi\". ")
        );
        assert_eq!(
            exceeded(&l, &usage(0, 0, 2 << 20), false)
                .map(|e| e.1)
                .as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. ")
        );
        let only_container = Limits {
            pod: None,
            ..l.clone()
        };
        assert_eq!(
            exceeded(&only_container, &usage(1 << 20, 1, 0), false)
                .map(|e| e.1)
                .as_deref(),
            Some("Container c exceeded its local ephemeral storage limit \"1Mi\". ")
        );
        assert_eq!(
            exceeded(&only_container, &usage(1 << 20, 1, 0), true),
            None,
            "a dedicated imagefs leaves the writable layer out"
        );
        assert_eq!(exceeded(&l, &usage(1, 1, 1), false), None);
    }

    #[test]
    fn pod_limit_sums_containers_and_sidecars() {
        let p = pod(
            vec![
                container("a", Some("1Gi"), None),
                container("b", None, None),
            ],
            vec![
                container("side", Some("512Mi"), Some("Always")),
                container("init", Some("1Gi"), None),
            ],
            None,
        );
        let l = limits(&p).expect("limited");
        assert_eq!(l.pod.map(|p| p.text), Some("1536Mi".to_string()));
        assert_eq!(
            l.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "side"]
        );
    }
}
