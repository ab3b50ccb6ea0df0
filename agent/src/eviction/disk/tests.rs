//! Disk ranking and the signal tables, one behaviour per test (cases follow helpers_test.go's
//! TestOrderedByExceedsRequestDisk, TestOrderedByPriorityDisk, TestOrderedbyDisk).

use super::*;
use crate::pod::PodRef;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use std::collections::BTreeMap;

fn pod(name: &str, request: Option<&str>, priority: i32) -> DesiredPod {
    let requests =
        request.map(|v| BTreeMap::from([("ephemeral-storage".to_string(), Quantity(v.into()))]));
    DesiredPod {
        pod_ref: PodRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: name.into(),
        },
        pod: Pod {
            spec: Some(PodSpec {
                priority: Some(priority),
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        },
        source: crate::pod::PodSource::Api,
    }
}

fn disk(root: i64, logs: i64, volumes: i64) -> PodDisk {
    PodDisk {
        containers: vec![ContainerDisk {
            name: "c".into(),
            root: Use {
                bytes: root,
                inodes: 1,
            },
            logs: Use {
                bytes: logs,
                inodes: 1,
            },
        }],
        volumes: Use {
            bytes: volumes,
            inodes: if volumes > 0 { 10 } else { 0 },
        },
    }
}

const MI: i64 = 1 << 20;
const ALL: Measure = Measure {
    root: true,
    logs: true,
    volumes: true,
};

fn rank(pods: &[DesiredPod], usage: &[(&str, PodDisk)], m: Measure, inodes: bool) -> Vec<String> {
    let usage: HashMap<String, PodDisk> = usage
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut c: Vec<Candidate<'_>> = pods
        .iter()
        .map(|p| Candidate {
            pod: p,
            usage: None,
        })
        .collect();
    rank_disk_pressure(&mut c, &usage, m, inodes);
    c.iter().map(|c| c.pod.pod_ref.name.clone()).collect()
}

#[test]
fn pods_over_their_request_go_before_bigger_pods_within_it() {
    let pods = [
        pod("within", Some("500Mi"), 0),
        pod("over", Some("10Mi"), 0),
    ];
    let usage = [
        ("within", disk(100 * MI, 0, 300 * MI)),
        ("over", disk(10 * MI, 0, 20 * MI)),
    ];
    assert_eq!(rank(&pods, &usage, ALL, false), ["over", "within"]);
}

#[test]
fn then_lower_priority_then_more_use_above_the_request() {
    let pods = [
        pod("high", None, 100),
        pod("low-small", None, 0),
        pod("low-big", None, 0),
    ];
    let usage = [
        ("high", disk(0, 0, 500 * MI)),
        ("low-small", disk(0, MI, MI)),
        ("low-big", disk(0, 0, 50 * MI)),
    ];
    assert_eq!(
        rank(&pods, &usage, ALL, false),
        ["low-big", "low-small", "high"]
    );
}

#[test]
fn a_pod_without_stats_goes_first() {
    let pods = [pod("measured", None, 0), pod("unknown", None, 0)];
    let usage = [("measured", disk(0, 0, 500 * MI))];
    assert_eq!(rank(&pods, &usage, ALL, false), ["unknown", "measured"]);
}

#[test]
fn the_measure_decides_what_counts() {
    let pods = [pod("layer", None, 0), pod("volume", None, 0)];
    let usage = [
        ("layer", disk(90 * MI, 0, 0)),
        ("volume", disk(0, 0, 50 * MI)),
    ];
    assert_eq!(rank(&pods, &usage, ALL, false), ["layer", "volume"]);
    let nodefs_with_imagefs = measure_for(Signal::NodeFsAvailable, true).expect("disk signal");
    assert_eq!(
        rank(&pods, &usage, nodefs_with_imagefs, false),
        ["volume", "layer"],
        "with a dedicated imagefs, nodefs ranks by logs and volumes only"
    );
    assert_eq!(
        rank(&pods, &usage, ALL, true),
        ["volume", "layer"],
        "inodes: 12 against 2"
    );
}

#[test]
fn signal_tables_follow_the_kubelets_for_shared_and_dedicated_imagefs() {
    assert_eq!(measure_for(Signal::MemoryAvailable, false), None);
    assert_eq!(measure_for(Signal::NodeFsAvailable, false), Some(ALL));
    assert_eq!(measure_for(Signal::ImageFsInodesFree, false), Some(ALL));
    let image = measure_for(Signal::ImageFsAvailable, true).expect("disk signal");
    assert!(image.root && !image.logs && !image.volumes);
    assert_eq!(reclaim_for(Signal::NodeFsAvailable, false), (true, true));
    assert_eq!(reclaim_for(Signal::NodeFsAvailable, true), (false, false));
    assert_eq!(reclaim_for(Signal::ImageFsAvailable, true), (true, true));
    assert_eq!(reclaim_for(Signal::PidAvailable, false), (false, false));
}

#[test]
fn the_message_names_containers_over_their_request() {
    let p = pod("p", Some("1Mi"), 0);
    let m = container_message(&p, Some(&disk(MI, MI, 100 * MI)));
    assert_eq!(
        m,
        "Container c was using 2Mi, request is 1Mi, has larger consumption of ephemeral-storage. "
    );
    assert_eq!(container_message(&p, Some(&disk(0, MI, 0))), "");
}
