//! Node-side admission (kubelet pkg/kubelet/lifecycle/predicate.go, the eviction manager's
//! Admit): a pod new to the node is checked against what is already admitted before a worker
//! starts it; a refused pod ends Failed with the kubelet's reason and message and never runs.
//!
//! Checks, in the kubelet's order: the pod's `kubernetes.io/os` label and `spec.os` against the
//! node's OS (`PodOSSelectorNodeLabelDoesNotMatch`, `PodOSNotSupported`), node affinity and
//! nodeSelector against the node's labels (`NodeAffinity`), NoExecute taints not tolerated (`TaintToleration`), then resources:
//! pods against maxPods (`OutOfpods`), CPU and memory requests against the node's capacity
//! (`OutOfcpu`, `OutOfmemory`), then node pressure (`Evicted`, from the eviction manager), then
//! the pod's sysctls against the safe ones and allowedUnsafeSysctls (`SysctlForbidden`,
//! pkg/kubelet/sysctl).

use crate::pod::{ContainerResources, KillRequest};
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod, Toleration};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A pressure probe: `Some((reason, message))` when pressure refuses this pod.
pub type PressureCheck = Arc<dyn Fn(&Pod) -> Option<(String, String)> + Send + Sync>;

/// What admission checks against.
#[derive(Clone)]
pub struct NodeFacts {
    /// The node's labels (the kubelet's defaults plus `--node-labels`).
    pub labels: BTreeMap<String, String>,
    /// The node's taints as registered (key, value, effect).
    pub taints: Vec<(String, String, String)>,
    /// CPU, millicores.
    pub cpu_milli: i64,
    /// Memory, bytes.
    pub memory_bytes: i64,
    /// maxPods.
    pub max_pods: usize,
    /// Node pressure (the eviction manager's Admit), when it runs.
    pub pressure: Option<PressureCheck>,
    /// allowedUnsafeSysctls: names or `prefix*` patterns allowed beside the safe sysctls.
    pub allowed_unsafe_sysctls: Vec<String>,
}

impl std::fmt::Debug for NodeFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeFacts")
            .field("labels", &self.labels)
            .field("taints", &self.taints)
            .field("cpu_milli", &self.cpu_milli)
            .field("memory_bytes", &self.memory_bytes)
            .field("max_pods", &self.max_pods)
            .field("allowed_unsafe_sysctls", &self.allowed_unsafe_sysctls)
            .finish_non_exhaustive()
    }
}

/// CPU (millicores) and memory (bytes) requests of a pod: the larger of the containers' sum
/// and the largest init container (resource helper PodRequests).
pub fn pod_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = pod.spec.as_ref() else {
        return (0, 0);
    };
    let req = |c| {
        let r = ContainerResources::of(c);
        (r.cpu_request.unwrap_or(0), r.memory_request.unwrap_or(0))
    };
    let (mut cpu, mut mem) = spec
        .containers
        .iter()
        .map(req)
        .fold((0, 0), |(a, b), (c, m)| (a + c, b + m));
    for (c, m) in spec.init_containers.iter().flatten().map(req) {
        cpu = cpu.max(c);
        mem = mem.max(m);
    }
    (cpu, mem)
}

/// Admits `pod` beside the already admitted `others`, or says why not.
pub fn admit(pod: &Pod, uid: &str, others: &[&Pod], node: &NodeFacts) -> Result<(), KillRequest> {
    let refuse = |reason: &str, message: String| KillRequest {
        uid: uid.to_owned(),
        grace_period_seconds: None,
        reason: reason.to_owned(),
        message,
    };
    if let Some((reason, message)) = os_mismatch(pod) {
        return Err(refuse(reason, format!("Pod was rejected: {message}")));
    }
    if !matches_node(pod, &node.labels) {
        return Err(refuse(
            "NodeAffinity",
            "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into(),
        ));
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    if let Some((k, v, _)) = node
        .taints
        .iter()
        .filter(|(_, _, e)| e == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    {
        return Err(refuse(
            "TaintToleration",
            format!(
                "Pod was rejected: Predicate TaintToleration failed: node(s) had untolerated taint {{{k}: {v}}}"
            ),
        ));
    }
    if others.len() + 1 > node.max_pods {
        return Err(refuse(
            "OutOfpods",
            format!(
                "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {}",
                others.len(),
                node.max_pods
            ),
        ));
    }
    let (cpu, mem) = pod_requests(pod);
    let (used_cpu, used_mem) = others
        .iter()
        .map(|p| pod_requests(p))
        .fold((0, 0), |(a, b), (c, m)| (a + c, b + m));
    for (name, reason, want, used, cap) in [
        ("cpu", "OutOfcpu", cpu, used_cpu, node.cpu_milli),
        ("memory", "OutOfmemory", mem, used_mem, node.memory_bytes),
    ] {
        if want > 0 && used + want > cap {
            return Err(refuse(
                reason,
                format!(
                    "Pod was rejected: Node didn't have enough resource: {name}, requested: {want}, used: {used}, capacity: {cap}"
                ),
            ));
        }
    }
    if let Some((reason, message)) = node.pressure.as_ref().and_then(|p| p(pod)) {
        return Err(refuse(&reason, message));
    }
    if let Err(why) = sysctls_allowed(pod, &node.allowed_unsafe_sysctls) {
        return Err(refuse(
            "SysctlForbidden",
            format!("forbidden sysctl: {why}"),
        ));
    }
    Ok(())
}

/// The kubelet's safe sysctls (pkg/kubelet/sysctl/safe_sysctls.go; all namespaced on the
/// kernels this agent runs on).
const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

/// The namespace a sysctl lives in (component-helpers NamespacedBy), if known.
fn sysctl_namespace(name: &str) -> Option<&'static str> {
    if name == "kernel.sem"
        || name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name.starts_with("fs.mqueue.")
    {
        Some("IPC")
    } else if name.starts_with("net.") {
        Some("Net")
    } else {
        None
    }
}

/// NormalizeName: a name whose first separator is a slash has its dots and slashes swapped.
fn normalize_sysctl(name: &str) -> String {
    match (name.find('/'), name.find('.')) {
        (Some(slash), dot) if dot.is_none_or(|d| slash < d) => name
            .chars()
            .map(|c| match c {
                '.' => '/',
                '/' => '.',
                c => c,
            })
            .collect(),
        _ => name.to_owned(),
    }
}

/// The patternAllowlist's Admit: every sysctl of the pod is safe or allowed, and not of a
/// namespace the pod shares with the host.
fn sysctls_allowed(pod: &Pod, allowed: &[String]) -> Result<(), String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let sysctls = spec
        .security_context
        .as_ref()
        .and_then(|s| s.sysctls.as_deref())
        .unwrap_or_default();
    for s in sysctls {
        let name = normalize_sysctl(&s.name);
        let listed = SAFE_SYSCTLS.contains(&name.as_str())
            || allowed.iter().any(|a| match a.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => *a == name,
            });
        if !listed {
            return Err(format!("{name:?} not allowlisted"));
        }
        let host = match sysctl_namespace(&name) {
            Some("IPC") => spec.host_ipc == Some(true),
            Some("Net") => spec.host_network == Some(true),
            _ => false,
        };
        if host {
            let ns = sysctl_namespace(&name).unwrap_or_default();
            return Err(format!("{name:?} not allowed with host {ns} enabled"));
        }
    }
    Ok(())
}

/// ToleratesTaint (k8s.io/api/core/v1 toleration.go).
fn tolerates(t: &Toleration, (key, value, effect): &(String, String, String)) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != effect)
    {
        return false;
    }
    let tkey = t.key.as_deref().unwrap_or_default();
    if !tkey.is_empty() && tkey != key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => !tkey.is_empty() && t.value.as_deref().unwrap_or_default() == value,
        _ => false,
    }
}

/// nodeSelector and required node affinity (component-helpers nodeaffinity).
fn matches_node(pod: &Pod, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    if let Some(sel) = &spec.node_selector
        && sel.iter().any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    let Some(terms) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    // Terms are ORed; a term with no expressions matches nothing.
    terms.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or_default();
        let fields = t.match_fields.as_deref().unwrap_or_default();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs.iter().all(|r| requirement(r, labels.get(&r.key)))
            && fields.iter().all(|r| {
                r.key == "metadata.name" && requirement(r, labels.get("kubernetes.io/hostname"))
            })
    })
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (
            value.and_then(|v| num(v)),
            values.first().and_then(|v| num(v)),
        ) {
            (Some(have), Some(bound)) => {
                if r.operator == "Gt" {
                    have > bound
                } else {
                    have < bound
                }
            }
            _ => false,
        },
        _ => false,
    }
}

/// The OS checks that preemption cannot help (rejectPodAdmissionBasedOnOSSelector and
/// ...OnOSField): the node's OS is the one this agent was built for, whatever its label says
/// (the kubelet replaces a missing or different label with it before comparing).
fn os_mismatch(pod: &Pod) -> Option<(&'static str, &'static str)> {
    const OS_LABEL: &str = "kubernetes.io/os";
    let os = std::env::consts::OS;
    if let Some(wanted) = pod.metadata.labels.as_ref().and_then(|l| l.get(OS_LABEL))
        && wanted != os
    {
        return Some((
            "PodOSSelectorNodeLabelDoesNotMatch",
            "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label",
        ));
    }
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.os.as_ref())
        .is_some_and(|o| o.name != os)
    {
        return Some((
            "PodOSNotSupported",
            "Failed to admit pod as the OS field doesn't match node OS",
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_for_another_os_is_refused() {
        let n = node();
        let refused = |p: Pod| admit(&p, "u", &[], &n).map_err(|k| (k.reason, k.message));
        assert!(refused(with("  os: {name: linux}\n", "100m")).is_ok());
        assert_eq!(
            refused(with("  os: {name: windows}\n", "100m")),
            Err((
                "PodOSNotSupported".into(),
                "Pod was rejected: Failed to admit pod as the OS field doesn't match node OS"
                    .into()
            ))
        );
        let mut labelled = with("", "100m");
        labelled.metadata.labels =
            Some([("kubernetes.io/os".to_owned(), "windows".to_owned())].into());
        assert_eq!(
            refused(labelled).map_err(|(r, _)| r),
            Err("PodOSSelectorNodeLabelDoesNotMatch".into())
        );
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("pod yaml")
    }

    fn node() -> NodeFacts {
        NodeFacts {
            labels: [("kubernetes.io/hostname", "n1"), ("zone", "a")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            taints: vec![("dedicated".into(), "db".into(), "NoExecute".into())],
            cpu_milli: 2000,
            memory_bytes: 1 << 30,
            max_pods: 2,
            pressure: None,
            allowed_unsafe_sysctls: vec!["kernel.msg*".into(), "net.core.somaxconn".into()],
        }
    }

    #[test]
    fn sysctls_are_safe_or_allowed_and_not_of_a_shared_host_namespace() {
        let n = node();
        let sysctl = |extra: &str, name: &str| {
            let p = with(
                &format!("{extra}  securityContext: {{sysctls: [{{name: {name}, value: '1'}}]}}\n"),
                "100m",
            );
            admit(&p, "u", &[], &n).map_err(|k| (k.reason, k.message))
        };
        assert!(sysctl("", "kernel.shm_rmid_forced").is_ok());
        assert!(sysctl("", "net/ipv4/tcp_syncookies").is_ok());
        assert!(sysctl("", "kernel.msgmax").is_ok());
        assert!(sysctl("", "net.core.somaxconn").is_ok());
        assert_eq!(
            sysctl("", "kernel.sem"),
            Err((
                "SysctlForbidden".into(),
                r#"forbidden sysctl: "kernel.sem" not allowlisted"#.into()
            ))
        );
        assert_eq!(
            sysctl("  hostNetwork: true\n", "net.core.somaxconn").map_err(|e| e.1),
            Err(
                r#"forbidden sysctl: "net.core.somaxconn" not allowed with host Net enabled"#
                    .into()
            )
        );
        assert_eq!(
            normalize_sysctl("net/ipv4/conf/eth0.100/x"),
            "net.ipv4.conf.eth0/100.x"
        );
    }

    const TOLERATE: &str = "  tolerations: [{key: dedicated, operator: Exists}]\n";

    fn with(extra: &str, cpu: &str) -> Pod {
        pod(&format!(
            "metadata: {{name: p}}\nspec:\n{TOLERATE}{extra}  containers:\n  - name: c\n    image: i\n    resources: {{requests: {{cpu: {cpu}}}}}\n"
        ))
    }

    #[test]
    fn selectors_affinity_and_taints_refuse_with_the_kubelets_reasons() {
        let n = node();
        assert!(admit(&with("", "100m"), "u", &[], &n).is_ok());
        let sel = with("  nodeSelector: {zone: b}\n", "100m");
        assert_eq!(
            admit(&sel, "u", &[], &n).map_err(|k| k.reason),
            Err("NodeAffinity".into())
        );
        let aff = with(
            "  affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: NotIn, values: [a]}]}, {matchExpressions: [{key: zone, operator: In, values: [a, c]}]}]}}}\n",
            "100m",
        );
        assert!(admit(&aff, "u", &[], &n).is_ok(), "the second term matches");
        let untolerated =
            pod("metadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: i}\n");
        let refused = admit(&untolerated, "u", &[], &n).expect_err("taint");
        assert_eq!(refused.reason, "TaintToleration");
        assert!(
            refused.message.contains("{dedicated: db}"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn resources_and_pod_count_are_summed_over_the_admitted_pods() {
        let n = node();
        let big = with("", "1500m");
        let refused = admit(&with("", "600m"), "u", &[&big], &n).expect_err("cpu");
        assert_eq!(refused.reason, "OutOfcpu");
        assert_eq!(
            refused.message,
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 600, used: 1500, capacity: 2000"
        );
        let small = with("", "10m");
        assert_eq!(
            admit(&small, "u", &[&small, &small], &n).map_err(|k| k.reason),
            Err("OutOfpods".into())
        );
    }
}
