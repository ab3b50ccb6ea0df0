use super::*;
use std::io::Write;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nodelet-fsuse-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn write(path: &Path, bytes: usize) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(&vec![1u8; bytes]).expect("write");
    f.sync_all().expect("sync");
}

#[test]
fn a_walk_finds_logs_and_volumes_per_pod_and_sums_only_local_ephemeral_ones() {
    let d = scratch("pods");
    let s = Settings {
        root_dir: d.join("root"),
        pod_logs_dir: d.join("logs"),
    };
    let uid = "0b3c2d1e-aaaa-bbbb-cccc-000000000001";
    let logs = s.pod_logs_dir.join(format!("ns_web_{uid}"));
    write(&logs.join("app/0.log"), 100 * 1024);
    write(&logs.join("sidecar/0.log"), 10 * 1024);
    let vols = s.root_dir.join("pods").join(uid).join("volumes");
    write(&vols.join("kubernetes.io~empty-dir/scratch/data"), 1 << 20);
    write(&vols.join("kubernetes.io~secret/token/t"), 4096);
    // Not a pod log dir: ignored.
    write(&s.pod_logs_dir.join("stray.log"), 10);
    let mut counters = FsCounters::default();
    let pods = walk_pods(&s, &mut counters);
    assert_eq!(pods.len(), 1, "{:?}", pods.keys());
    let p = &pods[uid];
    assert!(p.container_logs["app"].fs.used_bytes >= 100 * 1024);
    assert_eq!(p.container_logs["app"].inodes_used, Some(1));
    assert_eq!(p.logs.as_ref().map(|l| l.inodes_used), Some(Some(0)));
    let names: Vec<&str> = p.volumes.iter().map(|v| v.stats.name.as_str()).collect();
    assert_eq!(names, ["scratch", "token"]);
    assert!(p.volumes[0].local_ephemeral && !p.volumes[1].local_ephemeral);
    assert!(
        p.volumes[0].stats.fs.fs.capacity_bytes > 0,
        "statvfs of the volume"
    );
    assert_eq!(counters.walks, 1);

    let mut snap = FsSnapshot {
        pods,
        ..FsSnapshot::default()
    };
    snap.rootfs.insert(
        "c1".into(),
        Rootfs {
            pod_uid: uid.into(),
            fs: RuntimeFsUsage {
                fs: crate::stats::summary::FsStats {
                    used_bytes: 5000,
                    ..Default::default()
                },
                inodes_used: Some(3),
                ..Default::default()
            },
        },
    );
    let reader = FsUsageReader::fixed(snap);
    let u = reader.pod_disk_usage(uid).expect("known pod");
    assert_eq!(reader.pods_disk_usage().get(uid), Some(&u));
    assert_eq!(u.rootfs_bytes, 5000);
    assert!(u.volumes_bytes >= 1 << 20 && u.volumes_bytes < (1 << 20) + 64 * 1024);
    assert!(u.logs_bytes >= 110 * 1024);
    assert_eq!(u.bytes, u.rootfs_bytes + u.logs_bytes + u.volumes_bytes);
    // rootfs 3 + two log files + emptyDir (dir + file); the secret is not counted.
    assert_eq!(u.inodes, 3 + 2 + 2);
    std::fs::remove_dir_all(&d).expect("cleanup");
}

#[test]
fn writable_layers_come_from_list_container_stats_with_the_pod_uid_label() {
    let stats = vec![cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: "abc".into(),
            metadata: Some(cri::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            labels: [("io.kubernetes.pod.uid".to_string(), "u1".to_string())].into(),
            ..Default::default()
        }),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: 1_800_000_000_000_000_000,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: "/".into(),
            }),
            used_bytes: Some(cri::UInt64Value { value: 8192 }),
            inodes_used: Some(cri::UInt64Value { value: 2 }),
        }),
        ..Default::default()
    }];
    let r = rootfs_from(&stats);
    let c = &r["abc"];
    assert_eq!(c.pod_uid, "u1");
    assert_eq!(c.fs.fs.used_bytes, 8192);
    assert_eq!(c.fs.inodes_used, Some(2));
    assert!(c.fs.fs.capacity_bytes > 0);
    assert!(!c.fs.device.is_empty(), "/ is on some device");
}

/// On the real kernel: a cgroup in the blkio (v1) or io (v2) hierarchy, direct I/O from a
/// process in it, read back through [`read_io`]. v1 kernels of the 6.x line count throttle
/// statistics only where a limit is set, so the test sets a limit far above any disk.
#[test]
fn block_io_of_a_real_cgroup_is_read_back_per_device() {
    let Ok(layout) = CgroupLayout::detect() else {
        eprintln!("skipped: no cgroup layout");
        return;
    };
    let Some(m) = layout
        .controller("blkio")
        .or_else(|| layout.controller("io"))
    else {
        eprintln!("skipped: neither blkio (v1) nor io (v2) is mounted");
        return;
    };
    let name = format!("/nodelet-blkio-test-{}", std::process::id());
    let dir = cgroup_dir(&m.mount, &name);
    if std::fs::create_dir(&dir).is_err() {
        eprintln!("skipped: cannot create {} (not root?)", dir.display());
        return;
    }
    let file = scratch("blkio").join("f");
    let dev = std::fs::metadata(file.parent().expect("parent"))
        .map(|m| m.dev())
        .unwrap_or(0);
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let limit = if m.v2 {
        ("io.max", format!("{major}:{minor} wbps=100000000000"))
    } else {
        (
            "blkio.throttle.write_bps_device",
            format!("{major}:{minor} 100000000000"),
        )
    };
    let _ = std::fs::write(dir.join(limit.0), limit.1);
    let script = format!(
        "echo $$ > {}/cgroup.procs && dd if=/dev/zero of={} bs=1M count=4 oflag=direct 2>/dev/null",
        dir.display(),
        file.display()
    );
    let ran = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status();
    let io = read_io(&layout, std::slice::from_ref(&name), &mut HashMap::new());
    let _ = std::fs::remove_dir(&dir);
    let _ = std::fs::remove_dir_all(file.parent().expect("parent"));
    if !ran.is_ok_and(|s| s.success()) || major == 0 {
        eprintln!("skipped: direct I/O not possible on this filesystem");
        return;
    }
    let devs = io.get(&name).expect("the cgroup's files were read");
    let d = devs
        .iter()
        .find(|d| d.major == major && d.minor == minor)
        .expect("the written device is listed");
    assert!(d.bytes[1].unwrap_or(0) >= 4 << 20, "{d:?}");
    assert!(d.ios[1].unwrap_or(0) >= 1, "{d:?}");
    assert!(d.device.starts_with("/dev/"), "{d:?}");
}

/// Cost figures for the README (printed, never asserted): one walk of a volume holding 1000
/// small files, and one read of a cgroup's block I/O files.
#[test]
fn walk_and_blkio_costs() {
    let d = scratch("cost");
    for i in 0..1000 {
        write(&d.join(format!("many/f{i}")), 2);
    }
    let rounds = 20;
    let t = Instant::now();
    for _ in 0..rounds {
        let u = walk::walk(&d, walk::MAX_ENTRIES).expect("walk");
        assert_eq!(u.inodes, 1002);
    }
    let walk_us = t.elapsed().as_micros() / rounds;
    std::fs::remove_dir_all(&d).expect("cleanup");
    let mut io_us = None;
    if let Ok(layout) = CgroupLayout::detect() {
        let cgroups = vec!["/".to_string(); 200];
        let mut names = HashMap::new();
        let t = Instant::now();
        let io = read_io(&layout, &cgroups, &mut names);
        io_us = (!io.is_empty()).then(|| t.elapsed().as_micros() as f64 / 200.0);
    }
    println!("| what | cost |\n|---|---|");
    println!("| walk of 1000 files + 2 dirs (warm cache) | {walk_us} us |");
    println!("| block I/O read, per cgroup | {io_us:?} us |");
}
