//! The Node object as the kubelet writes it (pkg/kubelet/nodestatus/setters.go and
//! kubelet_node_status.go: initialNode, setNodeStatus, updateNode, nodeStatusHasChanged,
//! tryRegisterWithAPIServer's reconcile). Plain functions over a Node and the [`Facts`]
//! gathered before: no I/O here, so every rule is unit-tested below.

use super::NodeConditionsInput;
use super::machine::{MachineInfo, binary_si};
use crate::kuberuntime::health::RuntimeHealth;
use crate::options::Taint;
use crate::options::eviction::EvictionOptions;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The `nodeInfo.kubeletVersion` nodelet reports: the Kubernetes release whose kubelet it
/// stands in for (the release `xtask` builds and the tests run against), with nodelet's own
/// version as semver build metadata. Build metadata is ignored when versions are compared,
/// so the control plane's version-skew logic sees v1.37.2; a `-nodelet` suffix would be a
/// pre-release that sorts *below* v1.37.2. Distributions do the same (k3s: `v1.30.2+k3s1`).
pub const KUBELET_VERSION: &str = concat!("v1.37.2+nodelet-", env!("CARGO_PKG_VERSION"));

/// How long a runtime health answer stays current (the kubelet's maxWaitForContainerRuntime:
/// after this without a fresh answer the runtime "is down").
pub const RUNTIME_ANSWER_TTL: Duration = Duration::from_secs(30);

/// GOOS: what `kubernetes.io/os` and `nodeInfo.operatingSystem` say.
pub const OS: &str = "linux";

/// GOARCH of this build: what `kubernetes.io/arch` and `nodeInfo.architecture` say.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "loongarch64" => "loong64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// Everything one status computation reads, gathered by the caller.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Now, for condition times.
    pub now: Timestamp,
    /// Machine facts.
    pub machine: &'a MachineInfo,
    /// Capacity of the root dir's filesystem; `None` if statvfs failed.
    pub ephemeral_storage: Option<u64>,
    /// Node addresses; `None` when they could not be determined (the old ones stay).
    pub addresses: Option<Vec<NodeAddress>>,
    /// `<runtime>://<version>` from CRI Version.
    pub container_runtime_version: String,
    /// The secure port (daemonEndpoints.kubeletEndpoint.Port).
    pub kubelet_port: u16,
    /// maxPods.
    pub max_pods: u32,
    /// Why the node is not ready (empty: ready), see [`ready_errors`].
    pub ready_errors: Vec<String>,
    /// Pressure flags (from the eviction manager).
    pub pressure: NodeConditionsInput,
    /// What allocatable lacks: kubeReserved, systemReserved, hard eviction thresholds.
    pub reservations: &'a EvictionOptions,
}

/// The labels the kubelet puts on its node (initialNode): hostname, os, arch and their beta
/// twins; `--node-labels` are added over them.
pub fn default_labels(node_name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", node_name),
        ("kubernetes.io/os", OS),
        ("kubernetes.io/arch", go_arch()),
        ("beta.kubernetes.io/os", OS),
        ("beta.kubernetes.io/arch", go_arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The Node to register (initialNode): labels, taints, and a full status.
pub fn initial_node(
    node_name: &str,
    extra_labels: &BTreeMap<String, String>,
    taints: &[Taint],
    facts: &Facts<'_>,
) -> Node {
    let mut labels = default_labels(node_name);
    // --node-labels win over the defaults, as in the kubelet (which logs the overwrite).
    labels.extend(extra_labels.clone());
    let taints: Vec<_> = taints
        .iter()
        .map(|t| k8s_openapi::api::core::v1::Taint {
            key: t.key.clone(),
            value: Some(t.value.clone()).filter(|v| !v.is_empty()),
            effect: t.effect.clone(),
            time_added: None,
        })
        .collect();
    let mut node = Node {
        metadata: ObjectMeta {
            name: Some(node_name.to_owned()),
            labels: Some(labels),
            // Volumes are attached by the attach/detach controller, the kubelet's default
            // (enableControllerAttachDetach).
            annotations: Some(BTreeMap::from([(
                "volumes.kubernetes.io/controller-managed-attach-detach".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(taints).filter(|t| !t.is_empty()),
            ..Default::default()
        }),
        status: None,
    };
    set_node_status(&mut node, facts);
    node
}

fn seconds(t: Timestamp) -> Time {
    // API times have whole seconds; truncating here keeps comparisons with what the API
    // server returns exact.
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// Fills the status as the kubelet's setters do, in their order: addresses, machine info
/// (capacity, allocatable, ids), versions, daemon endpoints, OS/arch, then the pressure
/// conditions and Ready last.
pub fn set_node_status(node: &mut Node, f: &Facts<'_>) {
    let status = node.status.get_or_insert_with(NodeStatus::default);
    if let Some(addrs) = &f.addresses {
        status.addresses = Some(addrs.clone());
    }
    set_machine_info(status, f);
    let info = status.node_info.get_or_insert_with(NodeSystemInfo::default);
    info.kernel_version = f.machine.kernel_version.clone();
    info.os_image = f.machine.os_image.clone();
    info.container_runtime_version = f.container_runtime_version.clone();
    info.kubelet_version = KUBELET_VERSION.to_owned();
    // DisableNodeKubeProxyVersion is locked on since 1.36: the field is cleared.
    info.kube_proxy_version = String::new();
    info.operating_system = OS.to_owned();
    info.architecture = go_arch().to_owned();
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(f.kubelet_port),
        }),
    });
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let now = seconds(f.now);
    set_pressure(
        conditions,
        "MemoryPressure",
        f.pressure.memory_pressure,
        [
            (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        ],
        &now,
    );
    set_pressure(
        conditions,
        "DiskPressure",
        f.pressure.disk_pressure,
        [
            ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ],
        &now,
    );
    set_pressure(
        conditions,
        "PIDPressure",
        f.pressure.pid_pressure,
        [
            (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        ],
        &now,
    );
    let mut errors = f.ready_errors.clone();
    let capacity = status.capacity.as_ref();
    let missing: Vec<&str> = ["cpu", "memory", "pods", "ephemeral-storage"]
        .into_iter()
        .filter(|r| !capacity.is_some_and(|c| c.contains_key(*r)))
        .collect();
    if !missing.is_empty() {
        errors.push(format!(
            "missing node capacity for resources: {}",
            missing.join(", ")
        ));
    }
    set_ready(
        status.conditions.get_or_insert_with(Vec::new),
        &errors,
        &now,
    );
}

/// Capacity, allocatable and the machine ids (MachineInfo setter). Capacity keys this agent
/// does not own (extended resources advertised by others) are kept; huge page sizes the host
/// no longer has are removed.
fn set_machine_info(status: &mut NodeStatus, f: &Facts<'_>) {
    let m = f.machine;
    let capacity = status.capacity.get_or_insert_with(BTreeMap::new);
    let q = |s: String| Quantity(s);
    capacity.insert("cpu".into(), q(m.cpus.to_string()));
    match m.memory_bytes {
        Some(b) => capacity.insert("memory".into(), q(binary_si(b))),
        // As the kubelet without machine info: zero rather than a stale value.
        None => capacity.insert("memory".into(), q("0".into())),
    };
    capacity.insert("pods".into(), q(f.max_pods.to_string()));
    match f.ephemeral_storage {
        Some(b) => {
            capacity.insert("ephemeral-storage".into(), q(binary_si(b)));
        }
        None => {
            capacity.remove("ephemeral-storage");
        }
    }
    capacity.retain(|k, _| !k.starts_with("hugepages-"));
    for (size, bytes) in &m.hugepages {
        capacity.insert(
            format!("hugepages-{}", binary_si(*size)),
            q(binary_si(*bytes)),
        );
    }
    // Allocatable = capacity less kubeReserved, systemReserved and the hard eviction
    // thresholds (GetNodeAllocatableReservation); huge pages also come out of memory.
    let to_i64 = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
    let cap = crate::cm::node::Amounts {
        cpu_milli: to_i64(m.cpus).saturating_mul(1000),
        memory: m.memory_bytes.map_or(0, to_i64),
        ephemeral_storage: f.ephemeral_storage.map_or(0, to_i64),
        pid: 0,
    };
    let r = crate::cm::node::reservation(f.reservations, cap);
    let mut allocatable = capacity.clone();
    let huge: i64 = m.hugepages.iter().map(|(_, b)| to_i64(*b)).sum();
    if let Some(mem) = m.memory_bytes.map(to_i64) {
        let left = u64::try_from((mem - huge - r.memory).max(0)).unwrap_or(0);
        allocatable.insert("memory".into(), q(binary_si(left)));
    }
    if r.cpu_milli > 0 {
        let left = (cap.cpu_milli - r.cpu_milli).max(0);
        let text = if left % 1000 == 0 {
            (left / 1000).to_string()
        } else {
            format!("{left}m")
        };
        allocatable.insert("cpu".into(), q(text));
    }
    if let Some(storage) = f.ephemeral_storage.map(to_i64)
        && r.ephemeral_storage > 0
    {
        let left = u64::try_from((storage - r.ephemeral_storage).max(0)).unwrap_or(0);
        allocatable.insert("ephemeral-storage".into(), q(left.to_string()));
    }
    status.allocatable = Some(allocatable);
    let info = status.node_info.get_or_insert_with(NodeSystemInfo::default);
    info.machine_id = m.machine_id.clone();
    info.system_uuid = m.system_uuid.clone();
    info.boot_id = m.boot_id.clone();
}

/// One of the pressure conditions (MemoryPressureCondition and its twins): the heartbeat
/// always moves; status, reason, message and transition time change only on a flip.
fn set_pressure(
    conds: &mut Vec<NodeCondition>,
    type_: &str,
    pressure: bool,
    [(reason_t, msg_t), (reason_f, msg_f)]: [(&str, &str); 2],
    now: &Time,
) {
    let idx = match conds.iter().position(|c| c.type_ == type_) {
        Some(i) => i,
        None => {
            conds.push(NodeCondition {
                type_: type_.to_owned(),
                status: "Unknown".into(),
                ..Default::default()
            });
            conds.len() - 1
        }
    };
    let c = &mut conds[idx];
    c.last_heartbeat_time = Some(now.clone());
    let (want, reason, msg) = if pressure {
        ("True", reason_t, msg_t)
    } else {
        ("False", reason_f, msg_f)
    };
    if c.status != want {
        c.status = want.into();
        c.reason = Some(reason.into());
        c.message = Some(msg.into());
        c.last_transition_time = Some(now.clone());
    }
}

/// The Ready condition (ReadyCondition): KubeletReady, or KubeletNotReady with every reason
/// joined as Go's error aggregate prints them. Appended last when new: it must stay the last
/// condition (kubernetes#16961).
fn set_ready(conds: &mut Vec<NodeCondition>, errors: &[String], now: &Time) {
    let (status, reason, message) = match errors {
        [] => (
            "True",
            "KubeletReady",
            "kubelet is posting ready status".to_owned(),
        ),
        [one] => ("False", "KubeletNotReady", one.clone()),
        many => ("False", "KubeletNotReady", format!("[{}]", many.join(", "))),
    };
    let mut new = NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    };
    match conds.iter_mut().find(|c| c.type_ == "Ready") {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conds.push(new),
    }
}

/// Why the node is not ready, from the runtime and PLEG health (runtimeState.runtimeErrors and
/// networkErrors, with the PLEG health check), in the kubelet's words.
pub fn ready_errors(
    runtime: Option<&RuntimeHealth>,
    pleg_last_relist: Option<Instant>,
    now: Instant,
) -> Vec<String> {
    let mut errs = Vec::new();
    match runtime {
        None => errs.push("container runtime status check may not have completed yet".into()),
        Some(h) => {
            if now.saturating_duration_since(h.checked_at) > RUNTIME_ANSWER_TTL {
                errs.push("container runtime is down".into());
            }
            if let Err(e) = &h.runtime {
                errs.push(format!("container runtime not ready: {e}"));
            }
            // An unreachable runtime fails both checks with one message: say it once.
            if let Err(e) = &h.network
                && h.runtime.as_ref().err() != Some(e)
            {
                errs.push(format!("container runtime network not ready: {e}"));
            }
        }
    }
    match pleg_last_relist {
        None => errs.push("PLEG is not healthy: pleg has yet to be successful".into()),
        Some(t) if !crate::pleg::is_healthy(Some(t)) => errs.push(format!(
            "PLEG is not healthy: pleg was last seen active {:?} ago; threshold is {:?}",
            now.saturating_duration_since(t),
            crate::pleg::RELIST_THRESHOLD
        )),
        Some(_) => {}
    }
    errs
}

/// Sets `kubernetes.io/os` and `kubernetes.io/arch` if missing or wrong (updateNode's
/// "required labels"); true if it changed something.
pub fn ensure_os_arch_labels(node: &mut Node) -> bool {
    let labels = node.metadata.labels.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [("kubernetes.io/os", OS), ("kubernetes.io/arch", go_arch())] {
        if labels.get(k).map(String::as_str) != Some(v) {
            labels.insert(k.to_owned(), v.to_owned());
            changed = true;
        }
    }
    changed
}

/// The label keys the kubelet keeps in line with its initial node on every start
/// (updateDefaultLabels); `--node-labels` are set only at creation.
const RECONCILED_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "beta.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "node.kubernetes.io/windows-build",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Brings an already registered node in line with the initial one, as the kubelet's
/// tryRegisterWithAPIServer does after AlreadyExists: the controller-managed attach/detach
/// annotation, the default labels, and capacity/allocatable (missing maps, huge page sizes).
/// Taints and `--node-labels` are left alone: the node's owner may have changed them, and a
/// node may not change its own taints (NodeRestriction). True if `existing` changed.
pub fn reconcile_existing(initial: &Node, existing: &mut Node) -> bool {
    let mut changed = false;
    const CMAD: &str = "volumes.kubernetes.io/controller-managed-attach-detach";
    let want = initial
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CMAD));
    let annotations = existing
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    if annotations.get(CMAD) != want {
        match want {
            Some(v) => annotations.insert(CMAD.to_owned(), v.clone()),
            None => annotations.remove(CMAD),
        };
        changed = true;
    }
    let empty = BTreeMap::new();
    let init_labels = initial.metadata.labels.as_ref().unwrap_or(&empty);
    let labels = existing.metadata.labels.get_or_insert_with(BTreeMap::new);
    for key in RECONCILED_LABELS {
        let Some(v) = init_labels.get(*key) else {
            continue;
        };
        if labels.get(*key) != Some(v) {
            changed = true;
            if v.is_empty() {
                labels.remove(*key);
            } else {
                labels.insert((*key).to_owned(), v.clone());
            }
        }
    }
    let init_status = initial.status.clone().unwrap_or_default();
    let status = existing.status.get_or_insert_with(NodeStatus::default);
    if status.capacity.is_none() && init_status.capacity.is_some() {
        status.capacity = init_status.capacity.clone();
        changed = true;
    }
    if status.allocatable.is_none() && init_status.allocatable.is_some() {
        status.allocatable = init_status.allocatable.clone();
        changed = true;
    }
    let (init_cap, init_alloc) = (
        init_status.capacity.unwrap_or_default(),
        init_status.allocatable.unwrap_or_default(),
    );
    let capacity = status.capacity.get_or_insert_with(BTreeMap::new);
    let allocatable = status.allocatable.get_or_insert_with(BTreeMap::new);
    for (k, v) in init_cap.iter().filter(|(k, _)| k.starts_with("hugepages-")) {
        if !same_quantity(capacity.get(k), Some(v)) {
            capacity.insert(k.clone(), v.clone());
            changed = true;
        }
        if !same_quantity(allocatable.get(k), init_alloc.get(k)) {
            if let Some(a) = init_alloc.get(k) {
                allocatable.insert(k.clone(), a.clone());
            }
            changed = true;
        }
    }
    let gone: Vec<String> = capacity
        .keys()
        .filter(|k| k.starts_with("hugepages-") && !init_cap.contains_key(*k))
        .cloned()
        .collect();
    for k in gone {
        capacity.remove(&k);
        allocatable.remove(&k);
        changed = true;
    }
    changed
}

fn quantity_value(q: &Quantity) -> Option<i64> {
    crate::pod::quantity::parse(&q.0, true)
}

fn same_quantity(a: Option<&Quantity>, b: Option<&Quantity>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.0 == b.0 || quantity_value(a).is_some_and(|v| Some(v) == quantity_value(b))
        }
        _ => false,
    }
}

/// A status reduced to what a change is: condition heartbeats dropped, conditions in type
/// order, quantities by value (the API server may print `8Gi` where we wrote `8192Mi`).
fn comparable(s: &NodeStatus) -> Option<Value> {
    let mut s = s.clone();
    if let Some(c) = s.conditions.as_mut() {
        for x in c.iter_mut() {
            x.last_heartbeat_time = None;
        }
        c.sort_by(|a, b| a.type_.cmp(&b.type_));
    }
    for map in [s.capacity.as_mut(), s.allocatable.as_mut()]
        .into_iter()
        .flatten()
    {
        for q in map.values_mut() {
            if let Some(v) = quantity_value(q) {
                q.0 = format!("{v}m");
            }
        }
    }
    serde_json::to_value(s).ok()
}

/// Whether a status differs from the last one ignoring heartbeat times
/// (nodeStatusHasChanged).
pub fn status_changed(old: Option<&NodeStatus>, new: Option<&NodeStatus>) -> bool {
    match (old, new) {
        (None, None) => false,
        (Some(a), Some(b)) => comparable(a) != comparable(b),
        _ => true,
    }
}

/// The strategic merge patch from `base` (as the API server last returned it) to `node`, for
/// the status subresource. It carries every status field this agent owns; conditions merge by
/// type (conditions other components set stay), addresses are replaced as a whole (merging
/// by type would fold two InternalIPs into one), a huge page size the host lost is removed
/// with `null`; changed labels (only ones the kubelet reconciles) ride along, which the
/// status subresource of nodes accepts.
pub fn status_patch(base: &Node, node: &Node) -> Value {
    let empty = NodeStatus::default();
    let old = base.status.as_ref().unwrap_or(&empty);
    let new = node.status.as_ref().unwrap_or(&empty);
    let mut status = serde_json::Map::new();
    if let Some(c) = &new.conditions {
        status.insert("conditions".into(), json!(c));
    }
    if let Some(a) = &new.addresses {
        let mut list = vec![json!({"$patch": "replace"})];
        list.extend(a.iter().map(|x| json!(x)));
        status.insert("addresses".into(), Value::Array(list));
    }
    for (field, newm, oldm) in [
        ("capacity", &new.capacity, &old.capacity),
        ("allocatable", &new.allocatable, &old.allocatable),
    ] {
        let mut m = serde_json::Map::new();
        for (k, v) in newm.iter().flatten() {
            m.insert(k.clone(), json!(v));
        }
        for k in oldm.iter().flatten().map(|(k, _)| k) {
            if !newm.as_ref().is_some_and(|n| n.contains_key(k)) {
                m.insert(k.clone(), Value::Null);
            }
        }
        if !m.is_empty() {
            status.insert(field.into(), Value::Object(m));
        }
    }
    if let Some(i) = &new.node_info {
        status.insert("nodeInfo".into(), json!(i));
    }
    if let Some(d) = &new.daemon_endpoints {
        status.insert("daemonEndpoints".into(), json!(d));
    }
    let mut patch = serde_json::Map::new();
    patch.insert("status".into(), Value::Object(status));
    let mut meta = serde_json::Map::new();
    for (field, newm, oldm) in [
        ("labels", &node.metadata.labels, &base.metadata.labels),
        (
            "annotations",
            &node.metadata.annotations,
            &base.metadata.annotations,
        ),
    ] {
        let mut m = serde_json::Map::new();
        for (k, v) in newm.iter().flatten() {
            if oldm.as_ref().and_then(|o| o.get(k)) != Some(v) {
                m.insert(k.clone(), json!(v));
            }
        }
        for k in oldm.iter().flatten().map(|(k, _)| k) {
            if !newm.as_ref().is_some_and(|n| n.contains_key(k)) {
                m.insert(k.clone(), Value::Null);
            }
        }
        if !m.is_empty() {
            meta.insert(field.into(), Value::Object(m));
        }
    }
    if !meta.is_empty() {
        patch.insert("metadata".into(), Value::Object(meta));
    }
    Value::Object(patch)
}

/// The node's Ready condition: (status, reason, message), for logs and change triggers.
pub fn ready_of(node: &Node) -> Option<(&str, &str, &str)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            (
                c.status.as_str(),
                c.reason.as_deref().unwrap_or(""),
                c.message.as_deref().unwrap_or(""),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::eviction::Reserved;

    /// No reservation, no eviction threshold: allocatable is capacity less huge pages.
    static NO_RESERVATIONS: EvictionOptions = EvictionOptions {
        thresholds: Vec::new(),
        pressure_transition_period: Duration::ZERO,
        max_pod_grace_period_seconds: 0,
        kube_reserved: Reserved {
            cpu_milli: 0,
            memory: 0,
            ephemeral_storage: 0,
            pid: 0,
        },
        system_reserved: Reserved {
            cpu_milli: 0,
            memory: 0,
            ephemeral_storage: 0,
            pid: 0,
        },
        enforce_node_allocatable: Vec::new(),
    };

    fn machine() -> MachineInfo {
        MachineInfo {
            cpus: 2,
            memory_bytes: Some(8_141_716 * 1024),
            hugepages: vec![(2 << 20, 0), (1 << 30, 0)],
            machine_id: "m".into(),
            system_uuid: String::new(),
            boot_id: "b".into(),
            kernel_version: "6.18.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        }
    }

    fn facts<'a>(m: &'a MachineInfo, at: i64, errs: &[&str]) -> Facts<'a> {
        Facts {
            now: Timestamp::from_second(at).expect("valid"),
            machine: m,
            ephemeral_storage: Some(20 << 30),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: "192.0.2.2".into(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: "n1".into(),
                },
            ]),
            container_runtime_version: "containerd://1.6.20".into(),
            kubelet_port: 10250,
            max_pods: 110,
            ready_errors: errs.iter().map(|s| (*s).to_owned()).collect(),
            pressure: NodeConditionsInput::default(),
            reservations: &NO_RESERVATIONS,
        }
    }

    fn cond<'a>(n: &'a Node, t: &str) -> &'a NodeCondition {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == t))
            .expect("condition present")
    }

    #[test]
    fn the_initial_node_has_the_kubelets_labels_taints_and_status() {
        let m = machine();
        let extra = BTreeMap::from([("example.com/role".to_owned(), "edge".to_owned())]);
        let taints = [Taint {
            key: "dedicated".into(),
            value: "x".into(),
            effect: "NoSchedule".into(),
            time_added: None,
        }];
        let n = initial_node("n1", &extra, &taints, &facts(&m, 1000, &[]));
        let labels = n.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["beta.kubernetes.io/arch"], go_arch());
        assert_eq!(labels["example.com/role"], "edge");
        let t = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .expect("taints");
        assert_eq!(
            (t[0].key.as_str(), t[0].effect.as_str()),
            ("dedicated", "NoSchedule")
        );
        let s = n.status.as_ref().expect("status");
        let cap = s.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "8141716Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["ephemeral-storage"].0, "20Gi");
        assert_eq!(cap["hugepages-2Mi"].0, "0");
        assert_eq!(cap["hugepages-1Gi"].0, "0");
        let alloc = s.allocatable.as_ref().expect("allocatable");
        assert_eq!(alloc["memory"].0, "8141716Ki");
        let info = s.node_info.as_ref().expect("nodeInfo");
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert!(info.kubelet_version.starts_with("v1.37.2+nodelet-"));
        assert_eq!(info.operating_system, "linux");
        let types: Vec<&str> = s
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(cond(&n, "Ready").reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            cond(&n, "MemoryPressure").reason.as_deref(),
            Some("KubeletHasSufficientMemory")
        );
        assert_eq!(cond(&n, "DiskPressure").status, "False");
        assert_eq!(
            cond(&n, "PIDPressure").reason.as_deref(),
            Some("KubeletHasSufficientPID")
        );
    }

    #[test]
    fn huge_pages_come_out_of_allocatable_memory() {
        let mut m = machine();
        m.hugepages = vec![(2 << 20, 512 << 20)];
        let n = initial_node("n1", &BTreeMap::new(), &[], &facts(&m, 1, &[]));
        let s = n.status.expect("status");
        assert_eq!(s.capacity.expect("cap")["hugepages-2Mi"].0, "512Mi");
        let mem = s.allocatable.expect("alloc")["memory"].0.clone();
        assert_eq!(mem, binary_si(8_141_716 * 1024 - (512 << 20)));
    }

    #[test]
    fn allocatable_lacks_reserved_and_hard_eviction_thresholds() {
        let m = machine();
        let o = crate::options::Options::from_args(
            [
                "nodelet",
                "--kube-reserved=cpu=500m,memory=1Gi",
                "--system-reserved=memory=512Mi,ephemeral-storage=1Gi",
                "--eviction-hard=memory.available<100Mi,nodefs.available<10%",
            ]
            .map(String::from),
        )
        .expect("valid flags");
        let mut f = facts(&m, 1, &[]);
        f.reservations = &o.eviction;
        let n = initial_node("n1", &BTreeMap::new(), &[], &f);
        let a = n.status.expect("status").allocatable.expect("alloc");
        assert_eq!(a["cpu"].0, "1500m");
        assert_eq!(
            a["memory"].0,
            binary_si(8_141_716 * 1024 - (1 << 30) - (512 << 20) - (100 << 20))
        );
        // 10 % is the kubelet's float32 0.1, a hair above a tenth: 32 bytes more are reserved.
        let tenth = ((20u64 << 30) as f64 * f64::from(0.1f32)) as u64;
        assert_eq!(tenth, (20u64 << 30) / 10 + 32);
        let storage: u64 = (20 << 30) - (1 << 30) - tenth;
        assert_eq!(a["ephemeral-storage"].0, storage.to_string());
    }

    #[test]
    fn not_ready_names_every_reason_and_keeps_transition_times() {
        let m = machine();
        let mut n = initial_node("n1", &BTreeMap::new(), &[], &facts(&m, 100, &[]));
        let t0 = cond(&n, "Ready").last_transition_time.clone();
        // Same status later: heartbeat moves, transition stays, nothing "changed".
        let before = n.clone();
        set_node_status(&mut n, &facts(&m, 200, &[]));
        assert_eq!(cond(&n, "Ready").last_transition_time, t0);
        assert_ne!(cond(&n, "Ready").last_heartbeat_time, t0);
        assert!(!status_changed(before.status.as_ref(), n.status.as_ref()));
        // Two reasons: Go's aggregate format, a new transition time.
        set_node_status(&mut n, &facts(&m, 300, &["a", "b"]));
        let r = cond(&n, "Ready");
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref(), r.message.as_deref()),
            ("False", Some("KubeletNotReady"), Some("[a, b]"))
        );
        assert_ne!(r.last_transition_time, t0);
        assert!(status_changed(before.status.as_ref(), n.status.as_ref()));
        set_node_status(&mut n, &facts(&m, 400, &["only"]));
        assert_eq!(cond(&n, "Ready").message.as_deref(), Some("only"));
    }

    #[test]
    fn missing_capacity_makes_the_node_not_ready() {
        let m = machine();
        let mut f = facts(&m, 1, &[]);
        f.ephemeral_storage = None;
        let n = initial_node("n1", &BTreeMap::new(), &[], &f);
        let r = cond(&n, "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(
            r.message.as_deref(),
            Some("missing node capacity for resources: ephemeral-storage")
        );
    }

    #[test]
    fn pressure_flips_set_the_kubelets_reasons() {
        let m = machine();
        let mut n = initial_node("n1", &BTreeMap::new(), &[], &facts(&m, 1, &[]));
        let mut f = facts(&m, 50, &[]);
        f.pressure.disk_pressure = true;
        set_node_status(&mut n, &f);
        let d = cond(&n, "DiskPressure");
        assert_eq!(
            (d.status.as_str(), d.reason.as_deref()),
            ("True", Some("KubeletHasDiskPressure"))
        );
        assert_eq!(d.last_transition_time, Some(seconds(f.now)));
        assert_eq!(cond(&n, "MemoryPressure").status, "False");
    }

    #[test]
    fn other_components_conditions_and_extended_resources_are_kept() {
        let m = machine();
        let mut n = initial_node("n1", &BTreeMap::new(), &[], &facts(&m, 1, &[]));
        let s = n.status.as_mut().expect("status");
        s.conditions.get_or_insert_with(Vec::new).insert(
            0,
            NodeCondition {
                type_: "NetworkUnavailable".into(),
                status: "False".into(),
                ..Default::default()
            },
        );
        s.capacity
            .get_or_insert_with(BTreeMap::new)
            .insert("example.com/dongle".into(), Quantity("4".into()));
        set_node_status(&mut n, &facts(&m, 2, &[]));
        let s = n.status.as_ref().expect("status");
        assert_eq!(
            s.conditions.as_ref().expect("c")[0].type_,
            "NetworkUnavailable"
        );
        assert_eq!(s.capacity.as_ref().expect("c")["example.com/dongle"].0, "4");
        assert_eq!(
            s.allocatable.as_ref().expect("a")["example.com/dongle"].0,
            "4"
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        let m = machine();
        let a = initial_node("n1", &BTreeMap::new(), &[], &facts(&m, 1, &[]));
        let mut b = a.clone();
        if let Some(c) = b.status.as_mut().and_then(|s| s.capacity.as_mut()) {
            c.insert("ephemeral-storage".into(), Quantity("20480Mi".into()));
        }
        assert!(!status_changed(a.status.as_ref(), b.status.as_ref()));
        if let Some(c) = b.status.as_mut().and_then(|s| s.capacity.as_mut()) {
            c.insert("pods".into(), Quantity("111".into()));
        }
        assert!(status_changed(a.status.as_ref(), b.status.as_ref()));
    }

    #[test]
    fn ready_errors_speak_the_kubelets_words() {
        let now = Instant::now();
        let none = ready_errors(None, None, now);
        assert_eq!(
            none,
            [
                "container runtime status check may not have completed yet",
                "PLEG is not healthy: pleg has yet to be successful"
            ]
        );
        let ok = RuntimeHealth {
            checked_at: now,
            runtime: Ok(()),
            network: Ok(()),
        };
        assert!(ready_errors(Some(&ok), Some(now), now).is_empty());
        let down = RuntimeHealth {
            checked_at: now,
            runtime: Err("container runtime unreachable: x".into()),
            network: Err("container runtime unreachable: x".into()),
        };
        assert_eq!(
            ready_errors(Some(&down), Some(now), now),
            ["container runtime not ready: container runtime unreachable: x"]
        );
        let net = RuntimeHealth {
            network: Err("NetworkReady=false: NetworkPluginNotReady cni".into()),
            ..ok.clone()
        };
        assert_eq!(
            ready_errors(Some(&net), Some(now), now),
            ["container runtime network not ready: NetworkReady=false: NetworkPluginNotReady cni"]
        );
        let later = now + RUNTIME_ANSWER_TTL + Duration::from_secs(1);
        let stale = ready_errors(Some(&ok), Some(later), later);
        assert_eq!(stale, ["container runtime is down"]);
        // pleg::is_healthy judges against the real clock: a relist from before the threshold.
        let Some(old_relist) =
            now.checked_sub(crate::pleg::RELIST_THRESHOLD + Duration::from_secs(1))
        else {
            eprintln!("this machine booted under 3 minutes ago; the stale-PLEG case is skipped");
            return;
        };
        let e = ready_errors(Some(&ok), Some(old_relist), now);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("PLEG is not healthy: pleg was last seen active"),
            "{e:?}"
        );
    }

    #[test]
    fn reconcile_fixes_default_labels_and_huge_pages_but_not_taints_or_extra_labels() {
        let m = machine();
        let init = initial_node("n1", &BTreeMap::new(), &[], &facts(&m, 1, &[]));
        let mut existing = init.clone();
        assert!(!reconcile_existing(&init, &mut existing));
        let labels = existing.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert("kubernetes.io/arch".into(), "wrong".into());
        labels.insert("team".into(), "kept".into());
        if let Some(c) = existing.status.as_mut().and_then(|s| s.capacity.as_mut()) {
            c.remove("hugepages-1Gi");
            c.insert("hugepages-64Ki".into(), Quantity("0".into()));
        }
        existing.spec = Some(NodeSpec {
            taints: Some(vec![k8s_openapi::api::core::v1::Taint {
                key: "admin".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let base = existing.clone();
        assert!(reconcile_existing(&init, &mut existing));
        let labels = existing.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels["kubernetes.io/arch"], go_arch());
        assert_eq!(labels["team"], "kept");
        let cap = existing
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .expect("cap");
        assert!(cap.contains_key("hugepages-1Gi"));
        assert!(!cap.contains_key("hugepages-64Ki"));
        assert_eq!(existing.spec, base.spec);
        let p = status_patch(&base, &existing);
        assert_eq!(p["metadata"]["labels"]["kubernetes.io/arch"], go_arch());
        assert!(p["metadata"]["labels"].get("team").is_none());
        assert_eq!(p["status"]["capacity"]["hugepages-64Ki"], Value::Null);
        assert!(p.get("spec").is_none());
    }

    #[test]
    fn the_patch_replaces_addresses_and_merges_conditions() {
        let m = machine();
        let base = initial_node("n1", &BTreeMap::new(), &[], &facts(&m, 1, &[]));
        let mut n = base.clone();
        set_node_status(&mut n, &facts(&m, 2, &["x"]));
        let p = status_patch(&base, &n);
        assert_eq!(p["status"]["addresses"][0], json!({"$patch": "replace"}));
        assert_eq!(p["status"]["addresses"][1]["type"], "InternalIP");
        let conds = p["status"]["conditions"].as_array().expect("conditions");
        assert_eq!(conds.len(), 4);
        assert_eq!(conds[3]["type"], "Ready");
        assert_eq!(conds[3]["status"], "False");
        assert_eq!(p["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert_eq!(
            p["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert!(p.get("metadata").is_none());
    }

    #[test]
    fn missing_os_and_arch_labels_are_restored() {
        let m = machine();
        let mut n = initial_node("n1", &BTreeMap::new(), &[], &facts(&m, 1, &[]));
        assert!(!ensure_os_arch_labels(&mut n));
        n.metadata
            .labels
            .as_mut()
            .map(|l| l.remove("kubernetes.io/os"));
        assert!(ensure_os_arch_labels(&mut n));
        assert_eq!(
            n.metadata.labels.as_ref().expect("labels")["kubernetes.io/os"],
            "linux"
        );
    }
}
