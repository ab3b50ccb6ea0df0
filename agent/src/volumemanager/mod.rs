//! The volume manager for API-backed volumes (kubelet pkg/kubelet/volumemanager with the
//! configmap, secret, projected and downwardapi plugins of pkg/volume): before a pod's
//! containers are created, [`VolumeManager::prepare`] writes each such volume under
//! `<root>/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>` with the atomic writer, and runs
//! again on every sync so changed objects and expiring tokens reach running pods. The runtime
//! manager mounts what [`VolumeManager::host_path`] names and resolves env references from the
//! same cache ([`VolumeManager::env_object`]). emptyDir volumes are set up here too
//! ([`empty_dir`]: mode 0777, tmpfs for `medium: Memory`, fsGroup); hostPath stays with the
//! runtime manager.
//!
//! A volume that was never set up fails the sync (the kubelet's FailedMount: containers wait
//! in ContainerCreating); a refresh that fails for a volume already set up only warns, as the
//! kubelet keeps a mounted volume's last contents.

pub mod atomic_writer;
pub mod empty_dir;
pub mod objects;
pub mod ownership;
pub mod projection;
mod refs;
pub mod tmpfs;
mod watch;

use crate::pod::{DesiredPod, PodRef};
use atomic_writer::Payload;
use k8s_openapi::api::core::v1::{Pod, Volume};
use objects::{FetchError, Kind, ObjKey, Object, Objects, TokenKey};
use projection::{DEFAULT_MODE, NodeAllocatable, ProjectionError};
use refs::{env_refs, volume_refs};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tracing::{debug, warn};

/// Default lifetime of a projected service-account token (API defaulting: 1 h).
const DEFAULT_TOKEN_SECONDS: i64 = 3600;

/// The API-backed volume kinds, with their plugin directory names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// `configMap`.
    ConfigMap,
    /// `secret`.
    Secret,
    /// `projected`.
    Projected,
    /// `downwardAPI`.
    DownwardApi,
}

impl Plugin {
    /// The plugin of a volume, if it is one of ours.
    pub fn of(v: &Volume) -> Option<Self> {
        if v.config_map.is_some() {
            Some(Self::ConfigMap)
        } else if v.secret.is_some() {
            Some(Self::Secret)
        } else if v.projected.is_some() {
            Some(Self::Projected)
        } else if v.downward_api.is_some() {
            Some(Self::DownwardApi)
        } else {
            None
        }
    }

    /// The escaped plugin name the kubelet uses as a directory (`kubernetes.io~configmap`).
    pub fn dir(self) -> &'static str {
        match self {
            Self::ConfigMap => "kubernetes.io~configmap",
            Self::Secret => "kubernetes.io~secret",
            Self::Projected => "kubernetes.io~projected",
            Self::DownwardApi => "kubernetes.io~downward-api",
        }
    }

    /// Whether the kubelet backs the volume with memory (secret, projected, downwardAPI).
    pub fn memory(self) -> bool {
        !matches!(self, Self::ConfigMap)
    }

    const ALL: [Plugin; 4] = [
        Self::ConfigMap,
        Self::Secret,
        Self::Projected,
        Self::DownwardApi,
    ];
}

/// Why one source of a volume could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The object does not exist and the reference is not optional.
    #[error("{} {name:?} not found", kind.resource())]
    NotFound {
        /// ConfigMap or Secret.
        kind: Kind,
        /// Its name (in the pod's namespace).
        name: String,
    },
    /// The object or token could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The object could not be fetched during this prepare (the reason names it).
    #[error("{reason}")]
    Unavailable {
        /// The object.
        key: ObjKey,
        /// The fetch error's text.
        reason: String,
    },
    /// The object lacks what the volume asks for.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    /// A projected source nodelet does not provide.
    #[error("projected source {0} is not supported")]
    Unsupported(&'static str),
    /// Writing the files failed.
    #[error(transparent)]
    Write(#[from] atomic_writer::WriteError),
    /// An emptyDir could not be set up.
    #[error(transparent)]
    EmptyDir(#[from] empty_dir::SetUpError),
    /// The write task died.
    #[error("volume write task failed: {0}")]
    Task(String),
}

/// Why a pod's volumes could not be set up (the kubelet's FailedMount).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// One volume failed.
    #[error("MountVolume.SetUp failed for volume {volume:?} of pod {pod}: {source}")]
    SetUp {
        /// The pod.
        pod: PodRef,
        /// The volume's name.
        volume: String,
        /// Why.
        #[source]
        source: SourceError,
    },
    /// Several volumes failed.
    #[error("unable to mount volumes for pod {pod}: {}", errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several {
        /// The pod.
        pod: PodRef,
        /// Each volume's error.
        errors: Vec<VolumeError>,
    },
}

/// Why an env reference could not be resolved from the cache (text as the kubelet's).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LookupError {
    /// Standalone mode.
    #[error("couldn't get {what} {namespace}/{name}, no kubeClient defined")]
    NoClient {
        /// `configMap` or `secret`, as the kubelet writes it.
        what: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The last fetch failed.
    #[error("{0}")]
    Fetch(String),
    /// `prepare` did not run for this pod (a bug, reported rather than guessed around).
    #[error("{0} was not fetched before the container was configured")]
    NotFetched(String),
}

/// Sets up configMap, secret, projected and downwardAPI volumes and serves env lookups; cheap
/// to clone (the cache is shared).
#[derive(Debug, Clone)]
pub struct VolumeManager {
    objects: Objects,
    root_dir: PathBuf,
    node: NodeAllocatable,
}

impl VolumeManager {
    /// A manager writing under `root_dir`; `client` is the node's API client (`None` in
    /// standalone mode, where every API-backed volume and env reference fails).
    pub fn new(client: Option<kube::Client>, root_dir: PathBuf) -> Self {
        Self {
            objects: Objects::new(client),
            root_dir,
            node: NodeAllocatable::default(),
        }
    }

    /// Node CPU (millicores) and memory (bytes), the default limits the downward API shows.
    pub fn with_node_allocatable(mut self, cpu_milli: i64, memory: i64) -> Self {
        self.node = NodeAllocatable { cpu_milli, memory };
        self
    }

    /// How long fetched objects are reused ([`objects::OBJECT_TTL`] unless set).
    // Only tests set it until the Node's node.alpha.kubernetes.io/ttl annotation is read.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn with_object_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.objects = self.objects.with_ttl(ttl);
        self
    }

    fn pod_volumes_dir(&self, pod_uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(pod_uid).join("volumes")
    }

    /// Where the volume's files are on the host, for the volumes this manager provides.
    pub fn host_path(&self, pod_uid: &str, volume: &Volume) -> Option<PathBuf> {
        Plugin::of(volume).map(|p| {
            self.pod_volumes_dir(pod_uid)
                .join(p.dir())
                .join(&volume.name)
        })
    }

    /// Writes every API-backed volume of the pod and refreshes the objects its containers' env
    /// references. Harmless to run on every sync: unchanged contents are not rewritten.
    pub async fn prepare(&self, p: &DesiredPod) -> Result<(), VolumeError> {
        let ns = p.pod_ref.namespace.as_str();
        let spec = p.pod.spec.as_ref();
        let volumes: Vec<&Volume> = spec
            .and_then(|s| s.volumes.as_ref())
            .into_iter()
            .flatten()
            .filter(|v| Plugin::of(v).is_some())
            .collect();
        let env_keys = env_refs(p);
        let mut keys: HashSet<ObjKey> = env_keys.clone();
        for v in &volumes {
            keys.extend(volume_refs(ns, v));
        }
        let fresh = self.objects.register(
            &p.pod_ref.uid,
            p.pod.metadata.resource_version.as_deref(),
            keys.clone(),
        );
        // Each object once per prepare, whoever references it.
        let mut fetched: HashMap<ObjKey, Result<Option<Object>, String>> = HashMap::new();
        if self.objects.has_client() {
            for k in keys {
                let r = self.objects.get(&k, fresh).await;
                if let Err(e) = &r
                    && env_keys.contains(&k)
                {
                    debug!(pod = %p.pod_ref, object = %k, error = %e, "env object unavailable; the container config will say so");
                }
                fetched.insert(k, r.map_err(|e| e.to_string()));
            }
        }
        let fs_group = spec
            .and_then(|s| s.security_context.as_ref())
            .and_then(|sc| sc.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        let mut errors = self.set_up_empty_dirs(p).await;
        for v in volumes {
            let Some(dir) = self.host_path(&p.pod_ref.uid, v) else {
                continue;
            };
            let result = match self.payload(p, v, &fetched, fs_group.is_some()).await {
                Ok(payload) => write(dir.clone(), payload, fs_group, plugin_of(v).memory()).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(true) => {
                    debug!(pod = %p.pod_ref, volume = %v.name, "volume contents written")
                }
                Ok(false) => {}
                Err(source) if is_set_up(&dir) => {
                    // The kubelet keeps a mounted volume's last contents when a remount fails.
                    warn!(pod = %p.pod_ref, volume = %v.name, reason = "FailedMount", error = %source, "MountVolume.SetUp failed to refresh the volume; it keeps its last contents");
                }
                Err(source) => errors.push(VolumeError::SetUp {
                    pod: p.pod_ref.clone(),
                    volume: v.name.clone(),
                    source,
                }),
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(VolumeError::Several {
                pod: p.pod_ref.clone(),
                errors,
            }),
        }
    }

    /// The cached object an env reference names, as `prepare` last fetched it: `Ok(None)`
    /// when it does not exist.
    pub fn env_object(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Object>, LookupError> {
        if !self.objects.has_client() {
            return Err(LookupError::NoClient {
                what: match kind {
                    Kind::ConfigMap => "configMap",
                    Kind::Secret => "secret",
                },
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        let key = ObjKey {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        };
        match self.objects.cached(&key) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(LookupError::Fetch(e)),
            None => Err(LookupError::NotFetched(key.to_string())),
        }
    }

    /// Sets up the pod's emptyDir volumes (a no-op for those already set up).
    async fn set_up_empty_dirs(&self, p: &DesiredPod) -> Vec<VolumeError> {
        let has_empty_dir = p
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|vs| vs.iter().any(|v| v.empty_dir.is_some()));
        if !has_empty_dir {
            return Vec::new();
        }
        let (root, pod, pod_ref, node_memory) = (
            self.root_dir.clone(),
            p.pod.clone(),
            p.pod_ref.clone(),
            self.node.memory,
        );
        let done = tokio::task::spawn_blocking(move || {
            let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
            volumes
                .into_iter()
                .flatten()
                .filter(|v| v.empty_dir.is_some())
                .filter_map(|v| {
                    empty_dir::set_up(&root, &pod, &pod_ref.uid, v, node_memory)
                        .err()
                        .map(|e| VolumeError::SetUp {
                            pod: pod_ref.clone(),
                            volume: v.name.clone(),
                            source: e.into(),
                        })
                })
                .collect()
        })
        .await;
        done.unwrap_or_else(|e| {
            vec![VolumeError::SetUp {
                pod: p.pod_ref.clone(),
                volume: String::new(),
                source: SourceError::Task(e.to_string()),
            }]
        })
    }

    /// Forgets the pod's objects and tokens and removes its volume directories (emptyDir
    /// tmpfs unmounted first); for the pod workers once the pod is terminated (the rest of the pod directory is theirs).
    pub async fn cleanup(&self, pod_uid: &str) {
        self.objects.unregister(pod_uid);
        let dir = self.pod_volumes_dir(pod_uid);
        let (root, uid) = (self.root_dir.clone(), pod_uid.to_owned());
        let removed = tokio::task::spawn_blocking(move || {
            empty_dir::tear_down_all(&root, &uid);
            for plugin in Plugin::ALL {
                let d = dir.join(plugin.dir());
                if plugin.memory()
                    && let Ok(entries) = std::fs::read_dir(&d)
                {
                    for vol in entries.flatten().map(|e| e.path()) {
                        if let Err(e) = tmpfs::unmount(&vol) {
                            warn!(dir = %vol.display(), error = %e, "cannot unmount volume tmpfs");
                        }
                    }
                }
                if let Err(e) = std::fs::remove_dir_all(&d)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!(dir = %d.display(), error = %e, "cannot remove volume directory");
                }
            }
        })
        .await;
        if let Err(e) = removed {
            warn!(pod_uid, error = %e, "volume cleanup task failed");
        }
    }

    /// The files a volume should hold now.
    async fn payload(
        &self,
        p: &DesiredPod,
        v: &Volume,
        fetched: &HashMap<ObjKey, Result<Option<Object>, String>>,
        has_fs_group: bool,
    ) -> Result<Payload, SourceError> {
        let ns = &p.pod_ref.namespace;
        let object =
            |kind: Kind, name: &str, optional: bool| -> Result<Option<Object>, SourceError> {
                let key = ObjKey {
                    kind,
                    namespace: ns.clone(),
                    name: name.to_owned(),
                };
                let found = match fetched.get(&key) {
                    Some(Ok(o)) => o.clone(),
                    Some(Err(reason)) => {
                        return Err(SourceError::Unavailable {
                            key,
                            reason: reason.clone(),
                        });
                    }
                    None if !self.objects.has_client() => {
                        return Err(SourceError::Fetch(FetchError::NoClient {
                            what: key.to_string(),
                        }));
                    }
                    None => None,
                };
                match found {
                    None if !optional => Err(SourceError::NotFound {
                        kind,
                        name: name.to_owned(),
                    }),
                    other => Ok(other),
                }
            };
        if let Some(s) = v.config_map.as_ref() {
            let optional = s.optional.unwrap_or(false);
            let o = object(Kind::ConfigMap, &s.name, optional)?;
            return Ok(projection::config_map_payload(
                s.items.as_ref(),
                as_config_map(&o),
                s.default_mode.unwrap_or(DEFAULT_MODE),
                optional,
            )?);
        }
        if let Some(s) = v.secret.as_ref() {
            let optional = s.optional.unwrap_or(false);
            let name = s.secret_name.clone().unwrap_or_default();
            let o = object(Kind::Secret, &name, optional)?;
            return Ok(projection::secret_payload(
                s.items.as_ref(),
                as_secret(&o),
                s.default_mode.unwrap_or(DEFAULT_MODE),
                optional,
            )?);
        }
        if let Some(s) = v.downward_api.as_ref() {
            return Ok(projection::downward_api_payload(
                s.items.as_deref().unwrap_or_default(),
                &pod_with_identity(p),
                s.default_mode.unwrap_or(DEFAULT_MODE),
                self.node,
            )?);
        }
        let Some(proj) = v.projected.as_ref() else {
            return Ok(Payload::new());
        };
        let default_mode = proj.default_mode.unwrap_or(DEFAULT_MODE);
        let mut out = Payload::new();
        for src in proj.sources.iter().flatten() {
            if let Some(s) = src.config_map.as_ref() {
                let optional = s.optional.unwrap_or(false);
                let o = object(Kind::ConfigMap, &s.name, optional)?;
                out.extend(projection::config_map_payload(
                    s.items.as_ref(),
                    as_config_map(&o),
                    default_mode,
                    optional,
                )?);
            } else if let Some(s) = src.secret.as_ref() {
                let optional = s.optional.unwrap_or(false);
                let o = object(Kind::Secret, &s.name, optional)?;
                out.extend(projection::secret_payload(
                    s.items.as_ref(),
                    as_secret(&o),
                    default_mode,
                    optional,
                )?);
            } else if let Some(s) = src.downward_api.as_ref() {
                out.extend(projection::downward_api_payload(
                    s.items.as_deref().unwrap_or_default(),
                    &pod_with_identity(p),
                    default_mode,
                    self.node,
                )?);
            } else if let Some(t) = src.service_account_token.as_ref() {
                let sa = p
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into());
                let token = self
                    .objects
                    .token(&TokenKey {
                        namespace: ns.clone(),
                        service_account: sa,
                        audience: t.audience.clone().unwrap_or_default(),
                        expiration_seconds: t.expiration_seconds.unwrap_or(DEFAULT_TOKEN_SECONDS),
                        pod_name: p.pod_ref.name.clone(),
                        pod_uid: p.pod_ref.uid.clone(),
                    })
                    .await?;
                // With an fsGroup the token is 0600 and the group bit is added afterwards
                // (projected.go collectData, then SetVolumeOwnership).
                let mode = if has_fs_group {
                    0o600
                } else {
                    default_mode as u32 & 0o7777
                };
                out.insert(
                    t.path.clone(),
                    atomic_writer::FileProjection {
                        data: token.into_bytes(),
                        mode,
                    },
                );
            } else if src.cluster_trust_bundle.is_some() {
                return Err(SourceError::Unsupported("clusterTrustBundle"));
            } else if src.pod_certificate.is_some() {
                return Err(SourceError::Unsupported("podCertificate"));
            }
        }
        Ok(out)
    }
}

fn as_config_map(o: &Option<Object>) -> Option<&k8s_openapi::api::core::v1::ConfigMap> {
    match o {
        Some(Object::ConfigMap(c)) => Some(c),
        _ => None,
    }
}

fn as_secret(o: &Option<Object>) -> Option<&k8s_openapi::api::core::v1::Secret> {
    match o {
        Some(Object::Secret(s)) => Some(s),
        _ => None,
    }
}

/// The pod with name, namespace and uid as the config source resolved them.
fn pod_with_identity(p: &DesiredPod) -> Pod {
    let mut pod = p.pod.clone();
    pod.metadata.name = Some(p.pod_ref.name.clone());
    pod.metadata.namespace = Some(p.pod_ref.namespace.clone());
    pod.metadata.uid = Some(p.pod_ref.uid.clone());
    pod
}

fn plugin_of(v: &Volume) -> Plugin {
    Plugin::of(v).unwrap_or(Plugin::ConfigMap)
}

/// Whether the volume was written before (its `..data` link exists).
fn is_set_up(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join("..data")).is_ok()
}

async fn write(
    dir: PathBuf,
    payload: Payload,
    fs_group: Option<u32>,
    memory: bool,
) -> Result<bool, SourceError> {
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir).map_err(|source| atomic_writer::WriteError::Io {
            op: "creating directory",
            path: dir.clone(),
            source,
        })?;
        if memory {
            tmpfs::ensure_mounted(&dir).map_err(|source| atomic_writer::WriteError::Io {
                op: "mounting tmpfs on",
                path: dir.clone(),
                source,
            })?;
        }
        atomic_writer::write(&dir, &payload, fs_group)
    })
    .await
    .map_err(|e| SourceError::Task(e.to_string()))?
    .map_err(SourceError::Write)
}

#[cfg(test)]
mod cluster_tests;
