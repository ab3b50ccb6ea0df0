//! The Summary API JSON (kubelet pkg/kubelet/apis/stats/v1alpha1) built from a
//! [`StatsSnapshot`] of the stats model (`crate::stats::summary`), and the RFC 3339 helpers
//! the log endpoints share. Handlers never walk cgroups.

pub use crate::stats::summary::*;
use serde_json::{Value, json};
use std::time::SystemTime;

/// A time as metav1.Time marshals it: RFC 3339 in UTC, whole seconds.
fn rfc3339(t: Option<SystemTime>) -> Value {
    match t {
        Some(t) => {
            let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            Value::String(format_rfc3339(d.as_secs() as i64, 0))
        }
        None => Value::Null,
    }
}

/// RFC 3339 UTC with nanoseconds trimmed, as Go's metav1.Time/time.RFC3339Nano.
pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if nanos == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        let frac = format!("{nanos:09}");
        format!(
            "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{}Z",
            frac.trim_end_matches('0')
        )
    }
}

/// Parses RFC 3339 (`2026-11-22T19:29:31.915Z`, offsets allowed) into a time.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = s.get(start..i)?;
        let mut frac = digits.get(..digits.len().min(9))?.to_string();
        while frac.len() < 9 {
            frac.push('0');
        }
        nanos = frac.parse().ok()?;
    }
    let offset = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let v =
                tz.get(1..3)?.parse::<i64>().ok()? * 3600 + tz.get(4..6)?.parse::<i64>().ok()? * 60;
            if tz.starts_with('-') { -v } else { v }
        }
        _ => return None,
    };
    // days_from_civil (Howard Hinnant).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::new(secs, nanos as u32))
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

    #[test]
    fn summary_has_the_kubelet_shape() {
        let v = summary("n1", &stub(2));
        assert_eq!(v["node"]["nodeName"], "n1");
        assert_eq!(v["node"]["rlimit"]["maxpid"], 4_194_304);
        assert_eq!(v["node"]["startTime"], "2027-01-15T08:00:00Z");
        let p = &v["pods"][1];
        assert_eq!(p["podRef"]["uid"], "uid-1");
        assert_eq!(p["containers"][0]["memory"]["workingSetBytes"], 8192);
        assert_eq!(p["containers"][0]["cpu"]["usageNanoCores"], 5000);
        assert_eq!(p["cpu"]["usageCoreNanoSeconds"], 1_000_001);
    }

    #[test]
    fn filesystem_stats_use_the_kubelet_field_names() {
        let v = summary("n1", &stub(1));
        let p = &v["pods"][0];
        let keys = |x: &Value| {
            let mut k: Vec<String> = x
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            k.sort();
            k
        };
        let fs_keys = [
            "availableBytes",
            "capacityBytes",
            "inodes",
            "inodesFree",
            "inodesUsed",
            "time",
            "usedBytes",
        ];
        for x in [
            &p["containers"][0]["rootfs"],
            &p["containers"][0]["logs"],
            &p["ephemeral-storage"],
        ] {
            assert_eq!(keys(x), fs_keys, "{x}");
        }
        let vol = &p["volume"][0];
        assert_eq!(vol["name"], "cache");
        assert_eq!(vol["usedBytes"], 1 << 20);
        assert!(vol.get("pvcRef").is_none(), "no PVC behind an emptyDir");
        assert_eq!(p["containers"][0]["rootfs"]["inodesUsed"], 3);
    }

    /// Every `time`/`startTime` in a document, with its JSON path.
    fn times(v: &Value, path: String, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if let (true, Some(s)) = (k == "time" || k == "startTime", x.as_str()) {
                        out.push((format!("{path}.{k}"), s.to_owned()));
                    }
                    times(x, format!("{path}.{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    times(x, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_time_is_whole_seconds_utc_and_usage_covers_the_working_set() {
        let mut s = stub(1);
        let frac = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_800_000_000, 123_456_789);
        s.node.usage.timestamp = Some(frac);
        s.pods[0].containers[0].start_time = Some(frac);
        s.node.system_containers.push(SystemContainer {
            name: "kubelet",
            start_time: Some(frac),
            usage: s.node.usage.clone(),
        });
        s.node.fs = Some(FsStats::default());
        let pod = s.pods[0].usage.as_mut().expect("pod usage");
        pod.details_at = Some(frac);
        pod.network = Some(
            vec![crate::stats::network::Interface {
                name: "eth0".into(),
                rx_bytes: 42,
                ..Default::default()
            }]
            .into(),
        );
        let u = RuntimeFsUsage {
            time: Some(frac),
            inodes_used: Some(3),
            ..Default::default()
        };
        s.node.runtime_fs = Some(RuntimeFs {
            image_fs: Some(u.clone()),
            container_fs: Some(u),
        });
        let v = summary("n1", &s);
        let mut all = Vec::new();
        times(&v, String::new(), &mut all);
        assert!(all.len() >= 12, "{all:?}");
        for (path, t) in &all {
            assert_eq!(t, "2027-01-15T08:00:00Z", "{path}");
        }
        assert_eq!(v["node"]["systemContainers"][0]["name"], "kubelet");
        let net = &v["pods"][0]["network"];
        assert_eq!(
            (&net["name"], &net["rxBytes"]),
            (&json!("eth0"), &json!(42))
        );
        assert_eq!(net["interfaces"][0]["rxBytes"], 42);
        assert_eq!(v["node"]["runtime"]["imageFs"]["inodesUsed"], 3);
        assert!(v["node"]["runtime"]["containerFs"].is_object());
        let m = &v["node"]["memory"];
        assert!(
            m["usageBytes"].as_u64() >= m["workingSetBytes"].as_u64(),
            "{m}"
        );
    }

    #[test]
    fn rfc3339_formats_fractions_as_go() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(951_782_400, 500_000_000),
            "2000-02-29T00:00:00.5Z"
        );
        let t = parse_rfc3339("2000-02-29T00:00:00.5Z").expect("parses");
        let d = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch");
        assert_eq!((d.as_secs(), d.subsec_nanos()), (951_782_400, 500_000_000));
        assert_eq!(
            parse_rfc3339("2000-02-29T01:00:00+01:00"),
            parse_rfc3339("2000-02-29T00:00:00Z")
        );
        assert_eq!(parse_rfc3339("2000-02-29 00:00:00Z"), None);
    }
}
