//! The eviction math, one behaviour per test (cases follow helpers_test.go).

use super::*;
use crate::pod::PodRef;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::time::Duration;

fn pod(name: &str, request: Option<&str>, limit: Option<&str>, priority: i32) -> DesiredPod {
    let q =
        |v: Option<&str>| v.map(|v| BTreeMap::from([("memory".to_string(), Quantity(v.into()))]));
    let mut p = Pod {
        spec: Some(PodSpec {
            priority: Some(priority),
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: q(request),
                    limits: q(limit),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    p.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/config.source".to_string(),
        "api".to_string(),
    )]));
    DesiredPod {
        pod_ref: PodRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: name.into(),
        },
        pod: p,
        source: crate::pod::PodSource::Api,
    }
}

fn usage(ws: i64) -> Option<PodUsage> {
    Some(PodUsage {
        memory_working_set: ws,
        processes: 0,
        containers: vec![("c".into(), ws)],
    })
}

const MI: i64 = 1 << 20;

fn hard(signal: Signal, value: ThresholdValue) -> Threshold {
    Threshold {
        signal,
        value,
        grace_period: Duration::ZERO,
        min_reclaim: None,
    }
}

fn q(value: i64) -> ThresholdValue {
    ThresholdValue::Quantity {
        value,
        binary: true,
    }
}

fn obs(signal: Signal, available: i64, capacity: i64) -> Observations {
    BTreeMap::from([(
        signal,
        Observation {
            available,
            capacity,
            time: SystemTime::UNIX_EPOCH,
        },
    )])
}

#[test]
fn memory_ranking_puts_usage_above_requests_first_then_priority_then_excess() {
    let be = pod("best-effort", None, None, 0);
    let guaranteed = pod("guaranteed", Some("200Mi"), Some("200Mi"), 0);
    let burst_low = pod("burstable-low-prio", Some("100Mi"), None, -10);
    let burst_big = pod("burstable-big", Some("100Mi"), None, 0);
    let unknown = pod("no-stats", None, None, -100);
    let mut c = vec![
        Candidate {
            pod: &guaranteed,
            usage: usage(150 * MI),
        },
        Candidate {
            pod: &unknown,
            usage: None,
        },
        Candidate {
            pod: &be,
            usage: usage(50 * MI),
        },
        Candidate {
            pod: &burst_big,
            usage: usage(400 * MI),
        },
        Candidate {
            pod: &burst_low,
            usage: usage(120 * MI),
        },
    ];
    rank_memory_pressure(&mut c);
    let order: Vec<_> = c.iter().map(|c| c.pod.pod_ref.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "no-stats",           // nothing measured: first, as the kubelet's cmpBool
            "burstable-low-prio", // over its request, lowest priority
            "burstable-big",      // over by 300Mi
            "best-effort",        // over by 50Mi
            "guaranteed",         // under its request
        ]
    );
}

#[test]
fn pid_ranking_is_priority_then_process_count() {
    let a = pod("a", None, None, 0);
    let b = pod("b", None, None, 0);
    let hi = pod("hi", None, None, 1000);
    let n = |p: i64| {
        Some(PodUsage {
            processes: p,
            ..Default::default()
        })
    };
    let mut c = vec![
        Candidate {
            pod: &hi,
            usage: n(500),
        },
        Candidate {
            pod: &a,
            usage: n(3),
        },
        Candidate {
            pod: &b,
            usage: n(30),
        },
    ];
    rank_pid_pressure(&mut c);
    let order: Vec<_> = c.iter().map(|c| c.pod.pod_ref.name.as_str()).collect();
    assert_eq!(order, ["b", "a", "hi"]);
}

#[test]
fn a_threshold_is_met_below_its_quantity_or_percentage_and_min_reclaim_extends_it() {
    let t = hard(Signal::MemoryAvailable, q(100 * MI));
    assert_eq!(
        thresholds_met(
            &[t],
            &obs(Signal::MemoryAvailable, 99 * MI, 1000 * MI),
            false
        ),
        [t]
    );
    assert!(
        thresholds_met(
            &[t],
            &obs(Signal::MemoryAvailable, 100 * MI, 1000 * MI),
            false
        )
        .is_empty()
    );
    let p = hard(Signal::NodeFsAvailable, ThresholdValue::Percentage(0.1));
    assert_eq!(
        thresholds_met(&[p], &obs(Signal::NodeFsAvailable, 99, 1000), false),
        [p]
    );
    assert!(thresholds_met(&[p], &obs(Signal::NodeFsAvailable, 101, 1000), false).is_empty());
    let mut r = t;
    r.min_reclaim = Some(q(50 * MI));
    let o = obs(Signal::MemoryAvailable, 120 * MI, 1000 * MI);
    assert!(thresholds_met(&[r], &o, false).is_empty());
    assert_eq!(
        thresholds_met(&[r], &o, true),
        [r],
        "not yet 150Mi available"
    );
    assert!(
        thresholds_met(&[t], &Observations::new(), false).is_empty(),
        "no observation, not met"
    );
}

#[test]
fn soft_thresholds_wait_for_their_grace_period_from_first_observation() {
    let now = Instant::now();
    let mut soft = hard(Signal::MemoryAvailable, q(MI));
    soft.grace_period = Duration::from_secs(30);
    let first = first_observed_at(&[soft], &[], now);
    assert!(met_grace_period(&first, now).is_empty());
    let later = now + Duration::from_secs(31);
    let again = first_observed_at(&[soft], &first, later);
    assert_eq!(again[0].1, now, "the first observation is kept");
    assert_eq!(met_grace_period(&again, later), [soft]);
    // Once the threshold is no longer met its clock is gone: it starts over.
    assert!(first_observed_at(&[], &again, later).is_empty());
}

#[test]
fn a_condition_holds_for_the_transition_period_after_its_threshold_clears() {
    let t0 = Instant::now();
    let period = Duration::from_secs(5);
    let t = hard(Signal::AllocatableMemoryAvailable, q(MI));
    let seen = conditions_last_observed_at(&[t], &BTreeMap::new(), t0);
    assert_eq!(
        conditions_observed_since(&seen, period, t0),
        BTreeSet::from([Condition::Memory])
    );
    let seen = conditions_last_observed_at(&[], &seen, t0 + Duration::from_secs(4));
    assert!(
        conditions_observed_since(&seen, period, t0 + Duration::from_secs(4))
            .contains(&Condition::Memory)
    );
    assert!(conditions_observed_since(&seen, period, t0 + Duration::from_secs(5)).is_empty());
    assert_eq!(Condition::of(Signal::ImageFsInodesFree), Condition::Disk);
    assert_eq!(Condition::of(Signal::PidAvailable).as_str(), "PIDPressure");
}

#[test]
fn memory_thresholds_are_reclaimed_first() {
    let fs = hard(Signal::NodeFsAvailable, q(1));
    let pid = hard(Signal::PidAvailable, q(1));
    let mem = hard(Signal::AllocatableMemoryAvailable, q(1));
    let order: Vec<_> = by_eviction_priority(vec![fs, pid, mem])
        .iter()
        .map(|t| t.signal)
        .collect();
    assert_eq!(
        order,
        [
            Signal::AllocatableMemoryAvailable,
            Signal::NodeFsAvailable,
            Signal::PidAvailable
        ]
    );
}

#[test]
fn quantities_print_as_gos_canonical_form() {
    assert_eq!(format_binary(100 * MI), "100Mi");
    assert_eq!(format_binary(4096 * 3), "12Ki");
    assert_eq!(format_binary(123_456_789), "123456789");
    assert_eq!(format_binary(1000), "1k", "below 1024 Go prints DecimalSI");
    assert_eq!(format_binary(0), "0");
    assert_eq!(format_decimal(5000), "5k");
    assert_eq!(format_decimal(1500), "1500");
    assert_eq!(format_decimal(2_000_000_000), "2G");
}

#[test]
fn the_message_names_threshold_available_and_the_greedy_container() {
    let p = pod("be", None, None, 0);
    let t = hard(Signal::MemoryAvailable, q(100 * MI));
    let o = obs(Signal::MemoryAvailable, 80 * MI, 1000 * MI);
    let m = eviction_message("memory", &p, usage(300 * MI).as_ref(), &[t], &o);
    assert_eq!(
        m,
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 80Mi. \
         Container c was using 300Mi, request is 0, has larger consumption of memory. "
    );
    let g = pod("g", Some("512Mi"), Some("512Mi"), 0);
    let m = eviction_message("memory", &g, usage(300 * MI).as_ref(), &[t], &o);
    assert!(!m.contains("Container"), "under its request: {m}");
    let b = pod("b", Some("100M"), None, 0);
    let m = eviction_message("memory", &b, usage(300 * MI).as_ref(), &[t], &o);
    assert!(
        m.contains("request is 100M,"),
        "the request as written: {m}"
    );
    let pct = hard(Signal::PidAvailable, ThresholdValue::Percentage(0.1));
    let m = eviction_message(
        "pids",
        &p,
        None,
        &[pct],
        &obs(Signal::PidAvailable, 3000, 32768),
    );
    assert_eq!(
        m,
        "The node was low on resource: pids. Threshold quantity: 3276, available: 3k. "
    );
}

#[test]
fn static_and_mirror_and_system_critical_pods_are_critical() {
    let mut p = pod("p", None, None, 0);
    assert!(!is_critical(&p, false));
    p.pod
        .metadata
        .annotations
        .as_mut()
        .map(|a| a.insert("kubernetes.io/config.source".into(), "file".into()));
    assert!(is_static(&p));
    assert!(
        is_critical(&p, false),
        "the kubelet never evicts static pods"
    );
    assert!(
        !is_critical(&p, true),
        "unless nodelet is told to on an API-less node"
    );
    let hi = pod("hi", None, None, SYSTEM_CRITICAL_PRIORITY);
    assert!(is_critical(&hi, true));
    let mut m = pod("m", None, None, 0);
    m.pod
        .metadata
        .annotations
        .as_mut()
        .map(|a| a.insert("kubernetes.io/config.mirror".into(), "x".into()));
    assert!(is_critical(&m, true));
}

#[test]
fn pod_memory_request_sums_containers_or_takes_the_largest_init_container() {
    let mut p = pod("p", Some("100Mi"), None, 0);
    assert_eq!(memory_request(&p), 100 * MI);
    let spec = p.pod.spec.as_mut().expect("spec");
    let mut init = spec.containers[0].clone();
    init.name = "init".into();
    init.resources.as_mut().expect("res").requests = Some(BTreeMap::from([(
        "memory".to_string(),
        Quantity("300Mi".into()),
    )]));
    spec.init_containers = Some(vec![init]);
    assert_eq!(memory_request(&p), 300 * MI);
}
