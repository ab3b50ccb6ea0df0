//! The Summary document as the agent built it before `summary_json` (a `serde_json::Value`
//! tree), kept for tests only: the typed writer must say the same thing.

use super::stats::Rfc3339;
use crate::stats::summary::*;
use serde_json::{Value, json};
use std::time::SystemTime;

/// A time as metav1.Time marshals it: RFC 3339 in UTC, whole seconds.
fn rfc3339(t: Option<SystemTime>) -> Value {
    match t {
        Some(t) => {
            let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            Value::String(
                Rfc3339 {
                    secs: d.as_secs() as i64,
                    nanos: 0,
                }
                .to_string(),
            )
        }
        None => Value::Null,
    }
}

fn cpu_json(u: &Usage) -> Value {
    let mut v = json!({
        "time": rfc3339(u.timestamp),
        "usageCoreNanoSeconds": u.cpu_usage_ns,
    });
    if let Some(n) = u.cpu_usage_nano_cores {
        v["usageNanoCores"] = json!(n);
    }
    if let Some(p) = pressure(u).and_then(|p| p.cpu) {
        v["psi"] = psi_json(&p);
    }
    v
}

fn pressure(u: &Usage) -> Option<crate::stats::psi::Pressure> {
    u.details?.pressure
}

/// statsapi.PSIStats: averages in percent, the total as the kernel writes it (µs; the kubelet
/// passes cAdvisor's value through although the type's comment says nanoseconds).
fn psi_json(p: &crate::stats::psi::Psi) -> Value {
    let data = |d: &crate::stats::psi::PsiData| {
        json!({
            "total": d.total_us,
            "avg10": f64::from(d.avg10) / 100.0,
            "avg60": f64::from(d.avg60) / 100.0,
            "avg300": f64::from(d.avg300) / 100.0,
        })
    };
    json!({ "full": data(&p.full), "some": data(&p.some) })
}

/// The `io` stats (only PSI in statsapi.IOStats) of node, pods and containers, added after
/// the rest so the document's other builders stay as they are.
fn add_io_pressure(doc: &mut Value, s: &StatsSnapshot) {
    let io = |u: &Usage| {
        let p = pressure(u)?.io?;
        Some(json!({ "time": rfc3339(u.details_at.or(u.timestamp)), "psi": psi_json(&p) }))
    };
    if let Some(v) = io(&s.node.usage) {
        doc["node"]["io"] = v;
    }
    for (i, p) in s.pods.iter().enumerate() {
        if let Some(v) = p.usage.as_ref().and_then(io) {
            doc["pods"][i]["io"] = v;
        }
        for (j, c) in p.containers.iter().enumerate() {
            if let Some(v) = io(&c.usage) {
                doc["pods"][i]["containers"][j]["io"] = v;
            }
        }
    }
}

fn memory_json(u: &Usage, available: Option<u64>) -> Value {
    let mut v = json!({
        "time": rfc3339(u.timestamp),
        "usageBytes": u.memory_usage_bytes,
        "workingSetBytes": u.memory_working_set_bytes,
        "rssBytes": u.memory_rss_bytes,
        "pageFaults": u.page_faults,
        "majorPageFaults": u.major_page_faults,
    });
    if let Some(p) = pressure(u).and_then(|p| p.memory) {
        v["psi"] = psi_json(&p);
    }
    if let Some(a) = available.or_else(|| {
        u.memory_limit_bytes
            .map(|l| l.saturating_sub(u.memory_working_set_bytes))
    }) {
        v["availableBytes"] = json!(a);
    }
    v
}

fn fs_json(time: Option<SystemTime>, fs: &FsStats, inodes_used: Option<u64>) -> Value {
    json!({
        "time": rfc3339(time),
        "availableBytes": fs.available_bytes,
        "capacityBytes": fs.capacity_bytes,
        "usedBytes": fs.used_bytes,
        "inodesFree": fs.inodes_free,
        "inodes": fs.inodes,
        "inodesUsed": inodes_used.unwrap_or(fs.inodes.saturating_sub(fs.inodes_free)),
    })
}

/// The Summary's NetworkStats: every interface, and the default one (`eth0`, the kubelet's
/// network.DefaultInterfaceName) also at the top level.
fn network_json(u: &Usage) -> Option<Value> {
    let n = u.network.as_ref()?;
    let iface = |i: &crate::stats::network::Interface| {
        json!({
            "name": i.name,
            "rxBytes": i.rx_bytes,
            "rxErrors": i.rx_errors,
            "txBytes": i.tx_bytes,
            "txErrors": i.tx_errors,
        })
    };
    let mut v = json!({
        "time": rfc3339(u.details_at),
        "interfaces": n.iter().map(iface).collect::<Vec<_>>(),
    });
    if let Some(Value::Object(top)) = n.iter().find(|i| i.name == "eth0").map(iface)
        && let Value::Object(m) = &mut v
    {
        m.extend(top);
    }
    Some(v)
}

/// A system container. On v1 a process sits in a different cgroup per hierarchy (the agent may
/// have its own memory cgroup but share the root CPU one); what its cgroup path does not hold
/// is left out, as cAdvisor leaves it out for a container without that controller.
fn system_container_json(c: &SystemContainer) -> Value {
    let mut v = json!({
        "name": c.name,
        "startTime": rfc3339(c.start_time),
    });
    let d = c.usage.details;
    if c.usage.cpu_usage_ns > 0 || d.and_then(|d| d.cpu).is_some_and(|x| x.usage_ns.is_some()) {
        v["cpu"] = cpu_json(&c.usage);
    }
    if c.usage.memory_usage_bytes > 0 || d.is_some_and(|d| d.memory.is_some()) {
        v["memory"] = memory_json(&c.usage, None);
    }
    v
}

/// The Summary API document (`/stats/summary`).
pub fn summary(node_name: &str, s: &StatsSnapshot) -> Value {
    let n = &s.node;
    let mut node = json!({
        "nodeName": node_name,
        "startTime": rfc3339(n.start_time),
        "cpu": cpu_json(&n.usage),
        "memory": memory_json(&n.usage, n.memory_available_bytes),
        "systemContainers": n.system_containers.iter().map(system_container_json).collect::<Vec<_>>(),
    });
    if n.max_pid.is_some() || n.cur_proc.is_some() {
        node["rlimit"] = json!({
            "time": rfc3339(n.usage.timestamp),
            "maxpid": n.max_pid,
            "curproc": n.cur_proc,
        });
    }
    if let Some(fs) = &n.fs {
        node["fs"] = fs_json(n.usage.timestamp, fs, None);
    }
    if let Some(net) = network_json(&n.usage) {
        node["network"] = net;
    }
    if let Some(rt) = &n.runtime_fs {
        let mut runtime = json!({});
        for (key, u) in [("imageFs", &rt.image_fs), ("containerFs", &rt.container_fs)] {
            if let Some(u) = u {
                runtime[key] = fs_json(u.time, &u.fs, u.inodes_used);
            }
        }
        node["runtime"] = runtime;
    }
    let pods: Vec<Value> = s
        .pods
        .iter()
        .map(|p| {
            let containers: Vec<Value> = p
                .containers
                .iter()
                .map(|c| {
                    let mut v = json!({
                        "name": c.name,
                        "startTime": rfc3339(c.start_time),
                        "cpu": cpu_json(&c.usage),
                        "memory": memory_json(&c.usage, None),
                    });
                    for (key, u) in [("rootfs", &c.rootfs), ("logs", &c.logs)] {
                        if let Some(u) = u {
                            v[key] = fs_json(u.time, &u.fs, u.inodes_used);
                        }
                    }
                    v
                })
                .collect();
            let mut pod = json!({
                "podRef": { "name": p.name, "namespace": p.namespace, "uid": p.uid },
                "startTime": rfc3339(p.start_time),
                "containers": containers,
            });
            if !p.volumes.is_empty() {
                // VolumeStats: FsStats inline plus `name`; no `pvcRef` (no PVC-backed volumes).
                let vols: Vec<Value> = p
                    .volumes
                    .iter()
                    .map(|v| {
                        let mut j = fs_json(v.fs.time, &v.fs.fs, v.fs.inodes_used);
                        j["name"] = json!(v.name);
                        j
                    })
                    .collect();
                pod["volume"] = json!(vols);
            }
            if let Some(e) = &p.ephemeral_storage {
                pod["ephemeral-storage"] = fs_json(e.time, &e.fs, e.inodes_used);
            }
            if let Some(u) = &p.usage {
                pod["cpu"] = cpu_json(u);
                pod["memory"] = memory_json(u, None);
                if let Some(net) = network_json(u) {
                    pod["network"] = net;
                }
            }
            pod
        })
        .collect();
    let mut doc = json!({ "node": node, "pods": pods });
    add_io_pressure(&mut doc, s);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::tests::stub;
    use std::time::Duration;

    /// Every number as f64: Go (and the new writer) writes a whole PSI average as `0`, the
    /// tree wrote `0.0`; the value is the same.
    fn normalise(v: &mut Value) {
        match v {
            Value::Number(n) => {
                if let Some(f) = n.as_f64() {
                    *v = json!(f);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(normalise),
            Value::Object(m) => m.values_mut().for_each(normalise),
            _ => {}
        }
    }

    /// The new bytes and the old tree, both normalised.
    fn both(s: &StatsSnapshot) -> (Value, Value, Vec<u8>) {
        let bytes = crate::server::summary_json::summary_json("n1", s).expect("serialises");
        let mut new: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        let mut old = summary("n1", s);
        normalise(&mut new);
        normalise(&mut old);
        (new, old, bytes)
    }

    /// A snapshot with every optional part present somewhere and absent elsewhere.
    fn fixture() -> StatsSnapshot {
        let mut s = stub(3);
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_800_000_123, 999_999_999);
        let mut node = s.node.usage.clone();
        node.network = s.pods[0].usage.as_ref().and_then(|u| u.network.clone());
        node.timestamp = Some(t);
        s.node.usage = node.clone();
        s.node.memory_available_bytes = Some(1 << 30);
        s.node.fs = Some(FsStats {
            available_bytes: 1,
            capacity_bytes: 2,
            used_bytes: 1,
            inodes_free: 5,
            inodes: 9,
        });
        s.node.system_containers = vec![
            SystemContainer {
                name: "kubelet",
                start_time: Some(t),
                usage: node.clone(),
            },
            SystemContainer {
                name: "pods",
                start_time: None,
                usage: Usage::default(),
            },
        ];
        s.node.runtime_fs = Some(RuntimeFs {
            image_fs: s.pods[0].containers[0].rootfs.clone(),
            container_fs: None,
        });
        // A pod without a cgroup reading, a container without filesystem stats or PSI, a
        // pod whose only interface is not eth0, fractional PSI averages.
        s.pods[1].usage = None;
        s.pods[1].volumes.clear();
        s.pods[1].ephemeral_storage = None;
        let c = &mut s.pods[2].containers[0];
        c.rootfs = None;
        c.logs = None;
        c.start_time = None;
        c.usage.details = None;
        c.usage.cpu_usage_nano_cores = None;
        c.usage.memory_limit_bytes = None;
        if let Some(u) = s.pods[2].usage.as_mut() {
            u.network = Some(
                vec![crate::stats::network::Interface {
                    name: "net1".into(),
                    rx_bytes: 7,
                    ..Default::default()
                }]
                .into(),
            );
            if let Some(p) = u.details.as_mut().and_then(|d| d.pressure.as_mut()) {
                p.io = None;
                if let Some(c) = p.cpu.as_mut() {
                    c.some.avg10 = 1;
                    c.some.avg60 = 2995;
                }
            }
        }
        s
    }

    #[test]
    fn the_typed_writer_says_what_the_value_tree_said() {
        let (new, old, _) = both(&fixture());
        assert_eq!(new, old);
        let (new, old, _) = both(&stub(2));
        // The one difference, on purpose: the kubelet omits an empty systemContainers
        // (`omitempty`); the tree wrote `[]`.
        let mut old = old;
        if let Some(n) = old["node"].as_object_mut() {
            assert_eq!(n.remove("systemContainers"), Some(json!([])));
        }
        assert_eq!(new, old);
    }

    #[test]
    fn the_typed_writer_follows_the_go_field_order_and_number_format() {
        let (_, _, bytes) = both(&fixture());
        let text = String::from_utf8(bytes).expect("UTF-8");
        assert!(
            text.starts_with(
                r#"{"node":{"nodeName":"n1","systemContainers":[{"name":"kubelet","startTime":"2027-01-15T08:02:03Z","cpu":{"time":"2027-01-15T08:02:03Z","usageNanoCores":5000,"usageCoreNanoSeconds":1000000,"psi":{"full":{"total":23456,"avg10":0,"avg60":0,"avg300":0},"some":{"total":123456,"avg10":1.5,"avg60":0.75,"avg300":0.1}}}"#
            ),
            "{}",
            &text[..400]
        );
        assert!(
            text.contains(r#"{"name":"pods","startTime":null}"#),
            "{text}"
        );
        assert!(text.contains(r#""avg10":0.01,"avg60":29.95"#), "{text}");
        assert!(
            text.contains(r#""usedBytes":1048576,"inodesFree":1048576,"inodes":2097152,"inodesUsed":3,"name":"cache"}"#),
            "{text}"
        );
        assert!(text.ends_with("}]}"), "{}", &text[text.len() - 200..]);
    }
}
