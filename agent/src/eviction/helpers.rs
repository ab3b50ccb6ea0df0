//! The eviction math as plain functions over a snapshot (pkg/kubelet/eviction/helpers.go):
//! thresholds met, grace periods, node conditions with their transition period, the memory
//! and pid rankings, and the kubelet's eviction message. No I/O, no clock: callers pass `now`.

use crate::options::eviction::{Signal, Threshold, ThresholdValue};
use crate::pod::{ContainerResources, DesiredPod};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Instant, SystemTime};

/// The kubelet's status reason for an evicted pod (eviction.Reason).
pub const REASON: &str = "Evicted";
/// Priority at and above which a pod is critical (scheduling.SystemCriticalPriority).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// Grace period of a hard eviction (immediateEvictionGracePeriodSeconds).
pub const IMMEDIATE_GRACE_PERIOD_SECONDS: i64 = 1;

/// A node condition the eviction manager drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Condition {
    /// MemoryPressure.
    Memory,
    /// DiskPressure.
    Disk,
    /// PIDPressure.
    Pid,
}

impl Condition {
    /// The API name (`MemoryPressure`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Memory => "MemoryPressure",
            Condition::Disk => "DiskPressure",
            Condition::Pid => "PIDPressure",
        }
    }

    /// The condition a signal's threshold sets (signalToNodeCondition).
    pub fn of(signal: Signal) -> Condition {
        match signal {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => Condition::Memory,
            Signal::PidAvailable => Condition::Pid,
            _ => Condition::Disk,
        }
    }
}

/// The resource a signal starves (signalToResource), as the message names it.
pub fn resource_of(signal: Signal) -> &'static str {
    match signal {
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => "memory",
        Signal::NodeFsAvailable | Signal::ImageFsAvailable | Signal::ContainerFsAvailable => {
            "ephemeral-storage"
        }
        Signal::NodeFsInodesFree | Signal::ImageFsInodesFree | Signal::ContainerFsInodesFree => {
            "inodes"
        }
        Signal::PidAvailable => "pids",
    }
}

/// One observed signal (signalObservation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// What is left (bytes, inodes, pids).
    pub available: i64,
    /// The whole (available plus used).
    pub capacity: i64,
    /// When the numbers were read.
    pub time: SystemTime,
}

/// Everything observed in one pass.
pub type Observations = BTreeMap<Signal, Observation>;

/// thresholdsMet: the thresholds whose signal is below them (plus the minimum reclaim when
/// `enforce_min_reclaim`, which keeps a met threshold met until enough is reclaimed).
pub fn thresholds_met(
    thresholds: &[Threshold],
    obs: &Observations,
    enforce_min_reclaim: bool,
) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| {
            let Some(o) = obs.get(&t.signal) else {
                return false;
            };
            let mut q = t.value.quantity(o.capacity);
            if enforce_min_reclaim && let Some(r) = t.min_reclaim {
                q = q.saturating_add(r.quantity(o.capacity));
            }
            q > o.available
        })
        .copied()
        .collect()
}

/// mergeThresholds.
pub fn merge(mut a: Vec<Threshold>, b: Vec<Threshold>) -> Vec<Threshold> {
    for t in b {
        if !a.contains(&t) {
            a.push(t);
        }
    }
    a
}

/// thresholdsFirstObservedAt: keeps the first time of thresholds still met, `now` for new ones.
pub fn first_observed_at(
    met: &[Threshold],
    last: &[(Threshold, Instant)],
    now: Instant,
) -> Vec<(Threshold, Instant)> {
    met.iter()
        .map(|t| {
            let at = last.iter().find(|(l, _)| l == t).map_or(now, |(_, at)| *at);
            (*t, at)
        })
        .collect()
}

/// thresholdsMetGracePeriod: those met for at least their grace period.
pub fn met_grace_period(observed_at: &[(Threshold, Instant)], now: Instant) -> Vec<Threshold> {
    observed_at
        .iter()
        .filter(|(t, at)| now.duration_since(*at) >= t.grace_period)
        .map(|(t, _)| *t)
        .collect()
}

/// nodeConditionsLastObservedAt: `now` for conditions observed now, the old time for others.
pub fn conditions_last_observed_at(
    met: &[Threshold],
    last: &BTreeMap<Condition, Instant>,
    now: Instant,
) -> BTreeMap<Condition, Instant> {
    let mut out = last.clone();
    for t in met {
        out.insert(Condition::of(t.signal), now);
    }
    out
}

/// nodeConditionsObservedSince: a condition holds while it was seen within the period.
pub fn conditions_observed_since(
    observed_at: &BTreeMap<Condition, Instant>,
    period: std::time::Duration,
    now: Instant,
) -> BTreeSet<Condition> {
    observed_at
        .iter()
        .filter(|(_, at)| now.duration_since(**at) < period)
        .map(|(c, _)| *c)
        .collect()
}

/// byEvictionPriority: memory thresholds first, then the rest in their order.
pub fn by_eviction_priority(mut t: Vec<Threshold>) -> Vec<Threshold> {
    t.sort_by_key(|t| !t.signal.is_memory());
    t
}

/// A pod the manager may evict, with what it uses now.
#[derive(Debug, Clone)]
pub struct Candidate<'a> {
    /// The desired pod.
    pub pod: &'a DesiredPod,
    /// Its usage; `None` when nothing of it could be measured (ranked last, as the kubelet).
    pub usage: Option<PodUsage>,
}

/// One pod's measured use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// Pod cgroup working set, bytes.
    pub memory_working_set: i64,
    /// Tasks in the pod cgroup.
    pub processes: i64,
    /// Per container: name and working set, bytes.
    pub containers: Vec<(String, i64)>,
}

/// The pod's memory request (resource helper PodRequests: the sum over containers, or the
/// largest init container if that is more).
pub fn memory_request(pod: &DesiredPod) -> i64 {
    let Some(spec) = pod.pod.spec.as_ref() else {
        return 0;
    };
    let sum: i64 = spec
        .containers
        .iter()
        .map(|c| ContainerResources::of(c).memory_request.unwrap_or(0))
        .sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ContainerResources::of(c).memory_request.unwrap_or(0))
        .max()
        .unwrap_or(0);
    sum.max(init)
}

/// corev1helpers.PodPriority: spec.priority, 0 when unset.
pub fn priority(pod: &DesiredPod) -> i32 {
    pod.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether the pod comes from a source other than the API server (kubelettypes.IsStaticPod).
pub fn is_static(pod: &DesiredPod) -> bool {
    let ann = pod.pod.metadata.annotations.as_ref();
    ann.and_then(|a| a.get("kubernetes.io/config.source"))
        .is_some_and(|s| s != "api")
}

/// kubelettypes.IsCriticalPod: static, mirror, or of system-critical priority. With
/// `static_evictable` (nodelet's opt-in for API-less nodes), static pods count by priority only.
pub fn is_critical(pod: &DesiredPod, static_evictable: bool) -> bool {
    let mirror = pod
        .pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    (is_static(pod) && !static_evictable) || mirror || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

fn cmp_missing(a: &Candidate<'_>, b: &Candidate<'_>) -> Option<Ordering> {
    match (&a.usage, &b.usage) {
        (Some(_), Some(_)) => None,
        // cmpBool(!p1Found, !p2Found) puts true first: the kubelet evicts a pod without
        // stats before one with ("prioritize evicting the pod for which no stats were found").
        (None, Some(_)) => Some(Ordering::Less),
        (Some(_), None) => Some(Ordering::Greater),
        (None, None) => Some(Ordering::Equal),
    }
}

/// rankMemoryPressure: pods using more than they request first, then lower priority, then
/// larger usage above request.
pub fn rank_memory_pressure(pods: &mut [Candidate<'_>]) {
    pods.sort_by(|a, b| {
        if let Some(o) = cmp_missing(a, b) {
            return o;
        }
        let over = |c: &Candidate<'_>| {
            c.usage.as_ref().map_or(0, |u| u.memory_working_set) - memory_request(c.pod)
        };
        let (oa, ob) = (over(a), over(b));
        // exceedMemoryRequests: true sorts first.
        (ob > 0)
            .cmp(&(oa > 0))
            .then_with(|| priority(a.pod).cmp(&priority(b.pod)))
            .then_with(|| ob.cmp(&oa))
    });
}

/// rankPIDPressure: lower priority first, then more processes.
pub fn rank_pid_pressure(pods: &mut [Candidate<'_>]) {
    pods.sort_by(|a, b| {
        priority(a.pod).cmp(&priority(b.pod)).then_with(|| {
            let n = |c: &Candidate<'_>| c.usage.as_ref().map_or(0, |u| u.processes);
            n(b).cmp(&n(a))
        })
    });
}

/// Go's resource.Quantity String() of a BinarySI quantity: the largest power of 1024 that
/// divides it exactly, plain decimal below 1024.
pub fn format_binary(v: i64) -> String {
    if v > -1024 && v < 1024 {
        return format_decimal(v);
    }
    let (mut n, mut e) = (v, 0);
    while n % 1024 == 0 && e < 6 {
        n /= 1024;
        e += 1;
    }
    format!("{n}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][e])
}

/// Go's resource.Quantity String() of a DecimalSI quantity (exponent a multiple of 3).
pub fn format_decimal(v: i64) -> String {
    if v == 0 {
        return "0".into();
    }
    let (mut n, mut e) = (v, 0);
    while n % 1000 == 0 && e < 6 {
        n /= 1000;
        e += 1;
    }
    format!("{n}{}", ["", "k", "M", "G", "T", "P", "E"][e])
}

/// How a threshold's quantity prints (GetThresholdQuantity: BinarySI for percentages).
fn format_threshold(v: ThresholdValue, capacity: i64) -> String {
    match v {
        ThresholdValue::Quantity {
            value,
            binary: false,
        } => format_decimal(value),
        other => format_binary(other.quantity(capacity)),
    }
}

/// evictionMessage: the starved resource, the threshold and what was available, and every
/// container using more of it than it requests.
pub fn eviction_message(
    resource: &str,
    pod: &DesiredPod,
    usage: Option<&PodUsage>,
    thresholds: &[Threshold],
    obs: &Observations,
) -> String {
    let mut m = format!("The node was low on resource: {resource}. ");
    let met = thresholds
        .iter()
        .find(|t| resource_of(t.signal) == resource)
        .and_then(|t| Some((t, obs.get(&t.signal)?)));
    if let Some((t, o)) = met {
        let available = if resource == "inodes" || resource == "pids" {
            format_decimal(o.available)
        } else {
            format_binary(o.available)
        };
        m += &format!(
            "Threshold quantity: {}, available: {available}. ",
            format_threshold(t.value, o.capacity)
        );
    }
    let (Some(usage), "memory") = (usage, resource) else {
        return m;
    };
    let Some(spec) = pod.pod.spec.as_ref() else {
        return m;
    };
    for (name, ws) in &usage.containers {
        let Some(c) = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| &c.name == name)
        else {
            continue;
        };
        let request = ContainerResources::of(c).memory_request.unwrap_or(0);
        if *ws > request {
            let written = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("memory"))
                .map_or_else(|| format_decimal(request), |q| q.0.clone());
            m += &format!(
                "Container {name} was using {}, request is {written}, has larger consumption of {resource}. ",
                format_binary(*ws)
            );
        }
    }
    m
}

#[cfg(test)]
mod tests;
