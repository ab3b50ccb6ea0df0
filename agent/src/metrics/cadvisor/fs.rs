//! cAdvisor's filesystem and disk I/O families (cadvisor metrics/prometheus.go,
//! DiskUsageMetrics and DiskIOMetrics), from the filesystem task's measurements
//! ([`crate::stats::fs_usage`]); a scrape reads no file.
//!
//! - `container_fs_{usage,limit}_bytes`, `container_fs_inodes_{free,total}`: per running
//!   container, on the device holding its writable layer. Usage is the writable layer plus the
//!   container's logs, as cAdvisor's fs handler reports a container's total (the kubelet
//!   splits it back into Summary `rootfs` and `logs`). cAdvisor's containerd handler has no
//!   filesystem stats at all; CRI-O's and Docker's report these, with these labels.
//! - `container_fs_{reads,writes}{,_bytes}_total` and `container_blkio_device_usage_total`
//!   (device, major, minor, operation): per pod and container cgroup, from blkio / io.stat.

use super::{Encoder, Kind, Series};
use crate::stats::fs_usage::blkio::{DeviceIo, OPS};
use crate::stats::summary::{RuntimeFsUsage, StatsSnapshot};

type FsValue = fn(&RuntimeFsUsage, Option<&RuntimeFsUsage>) -> f64;

/// Writes the families; nothing when no series has the numbers.
pub(super) fn render(e: &mut Encoder, series: &[Series], s: &StatsSnapshot) {
    render_usage(e, s);
    render_io(e, series);
}

fn render_usage(e: &mut Encoder, s: &StatsSnapshot) {
    let fams: [(&str, &str, FsValue); 4] = [
        (
            "container_fs_inodes_free",
            "Number of available Inodes",
            |r, _| r.fs.inodes_free as f64,
        ),
        ("container_fs_inodes_total", "Number of Inodes", |r, _| {
            r.fs.inodes as f64
        }),
        (
            "container_fs_limit_bytes",
            "Number of bytes that can be consumed by the container on this filesystem.",
            |r, _| r.fs.capacity_bytes as f64,
        ),
        (
            "container_fs_usage_bytes",
            "Number of bytes that are consumed by the container on this filesystem.",
            |r, logs| (r.fs.used_bytes + logs.map_or(0, |l| l.fs.used_bytes)) as f64,
        ),
    ];
    let rows: Vec<_> = s
        .pods
        .iter()
        .flat_map(|p| p.containers.iter().map(move |c| (p, c)))
        .filter(|(_, c)| c.running)
        .filter_map(|(p, c)| Some((p, c, c.rootfs.as_ref()?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    for (name, help, f) in fams {
        e.family(name, help, Kind::Gauge);
        for (p, c, r) in &rows {
            let l = [
                ("container", c.name.as_str()),
                ("device", r.device.as_str()),
                ("id", c.cgroup.as_str()),
                ("image", c.image.as_str()),
                ("name", c.id.as_str()),
                ("namespace", p.namespace.as_str()),
                ("pod", p.name.as_str()),
            ];
            e.sample(&l, f(r, c.logs.as_ref()), r.time);
        }
    }
}

fn render_io(e: &mut Encoder, series: &[Series]) {
    if series.iter().all(|x| x.usage.io.is_none()) {
        return;
    }
    type Io = (&'static str, &'static str, fn(&DeviceIo) -> Option<u64>);
    let fams: [Io; 4] = [
        (
            "container_fs_reads_bytes_total",
            "Cumulative count of bytes read",
            |d| d.bytes[0],
        ),
        (
            "container_fs_reads_total",
            "Cumulative count of reads completed",
            |d| d.ios[0],
        ),
        (
            "container_fs_writes_bytes_total",
            "Cumulative count of bytes written",
            |d| d.bytes[1],
        ),
        (
            "container_fs_writes_total",
            "Cumulative count of writes completed",
            |d| d.ios[1],
        ),
    ];
    let mut scratch = String::new();
    for (name, help, f) in fams {
        e.family(name, help, Kind::Counter);
        for x in series {
            for d in x.usage.io.iter().flat_map(|io| io.iter()) {
                if let Some(v) = f(d) {
                    x.block_with(&[("device", &d.device)], &mut scratch);
                    e.sample_block(&scratch, v as f64, x.usage.io_at);
                }
            }
        }
    }
    e.family(
        "container_blkio_device_usage_total",
        "Blkio Device bytes usage",
        Kind::Counter,
    );
    for x in series {
        for d in x.usage.io.iter().flat_map(|io| io.iter()) {
            let (major, minor) = (d.major.to_string(), d.minor.to_string());
            for (op, v) in OPS.iter().zip(d.bytes) {
                let Some(v) = v else { continue };
                let extra = [
                    ("device", d.device.as_str()),
                    ("major", major.as_str()),
                    ("minor", minor.as_str()),
                    ("operation", op),
                ];
                x.block_with(&extra, &mut scratch);
                e.sample_block(&scratch, v as f64, x.usage.io_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use crate::metrics::expo::Format;
    use crate::stats::summary::tests::stub;

    #[test]
    fn filesystem_and_io_families_carry_cadvisor_labels() {
        let text = render(Format::Text, &stub(1));
        let c = "container=\"c\",device=\"/dev/vda\",id=\"/kubepods/besteffort/poduid-0/0000000000000000000000000000000000000000000000000000000000000000\",image=\"busybox:1.35\",name=\"0000000000000000000000000000000000000000000000000000000000000000\",namespace=\"default\",pod=\"p0\"";
        assert!(
            text.contains(&format!("container_fs_usage_bytes{{{c}}} 12288 ")),
            "rootfs + logs: {text}"
        );
        assert!(text.contains(&format!("container_fs_limit_bytes{{{c}}} 34359738368 ")));
        assert!(text.contains(&format!("container_fs_inodes_free{{{c}}} 1048576 ")));
        assert!(text.contains(&format!("container_fs_writes_bytes_total{{{c}}} 8192 ")));
        assert!(text.contains(&format!("container_fs_reads_total{{{c}}} 1 ")));
        assert!(text.contains("# TYPE container_blkio_device_usage_total counter"));
        assert!(text.contains(
            "container_blkio_device_usage_total{container=\"c\",device=\"/dev/vda\",id=\"/kubepods/besteffort/poduid-0/0000000000000000000000000000000000000000000000000000000000000000\",image=\"busybox:1.35\",major=\"254\",minor=\"0\",name=\"0000000000000000000000000000000000000000000000000000000000000000\",namespace=\"default\",operation=\"Write\",pod=\"p0\"} 8192 "
        ));
    }
}
