//! The Summary API's data model re-exported for handlers, and the RFC 3339 helpers the stats
//! and log endpoints share. The document itself is written by `summary_json`, straight from a
//! [`StatsSnapshot`] of the stats model (`crate::stats::summary`). Handlers never walk cgroups.

pub use crate::stats::summary::*;
use std::time::SystemTime;

/// Date and time of day in UTC of a Unix time: (year, month, day, hour, minute, second).
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
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
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A time as RFC 3339 UTC with its nanoseconds trimmed, as Go's time.RFC3339Nano writes it
/// (metav1.Time: nanoseconds 0, so whole seconds). Displayed straight into the output.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339 {
    /// Seconds since the Unix epoch.
    pub secs: i64,
    /// Nanoseconds past `secs`.
    pub nanos: u32,
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m, d, h, mi, s) = civil(self.secs);
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}")?;
        if self.nanos != 0 {
            let mut frac = self.nanos;
            let mut digits = 9;
            while frac.is_multiple_of(10) {
                frac /= 10;
                digits -= 1;
            }
            write!(f, ".{frac:0digits$}")?;
        }
        f.write_str("Z")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::summary::tests::stub;
    use serde_json::{Value, json};

    /// The document as a client reads it.
    fn summary(node: &str, s: &StatsSnapshot) -> Value {
        let bytes = super::super::summary_json::summary_json(node, s).expect("serialises");
        serde_json::from_slice(&bytes).expect("valid JSON")
    }

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
        assert_eq!(
            Rfc3339 { secs: 0, nanos: 0 }.to_string(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            Rfc3339 {
                secs: 951_782_400,
                nanos: 500_000_000
            }
            .to_string(),
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
        let t = Rfc3339 {
            secs: 1_800_000_000,
            nanos: 120_000_001,
        };
        assert_eq!(t.to_string(), "2027-01-15T08:00:00.120000001Z");
        let t = Rfc3339 {
            nanos: 120_000_000,
            ..t
        };
        assert_eq!(t.to_string(), "2027-01-15T08:00:00.12Z");
    }
}
