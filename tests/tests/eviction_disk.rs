//! Disk pressure (issue 12) on real containerd and a real filesystem: a 300 MiB ext4 image,
//! loop-mounted, holds both containerd's root (imagefs) and the agent's root dir (nodefs), so
//! the two share one filesystem as on a default node. A hard `nodefs.available` threshold sits
//! 100 MiB below what the fresh filesystem has free; a pod writes 150 MiB into an emptyDir.
//! Before any pod is evicted, node-level reclaim removes the dead container of a finished pod
//! and an unused image imported for the purpose; that is not enough, so the writer is evicted
//! (phase Failed, reason Evicted, the kubelet's message) while a pod within its
//! ephemeral-storage request keeps running. The sandbox image survives the image GC.
//!
//! `NODELET_EVICT_STATIC_PODS=1` as in `eviction.rs`: standalone, every pod is static.

use anyhow::{Context, Result, bail};
use nodelet_tests::{Node, NodeOpts, have};
use nodelet_tests::{listed_pod, read_only_get};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
const MI: i64 = 1 << 20;
const FS_MI: u64 = 300;
/// How far below the fresh filesystem's free space the threshold sits.
const MARGIN_MI: i64 = 100;
/// What the writer puts in its emptyDir.
const WRITE_MI: i64 = 150;
const EXTRA_IMAGE: &str = "docker.io/library/unused-extra:gc";

/// The loop mount; unmounted (lazily, so a straggling process cannot keep it) on every path.
/// `mount -o loop` sets autoclear, so the loop device is freed with the last reference.
struct LoopFs {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopFs {
    fn create() -> Result<Self> {
        // On the real disk, not a tmpfs /tmp: the image must not count against memory.
        let dir = tempfile::Builder::new()
            .prefix("nodelet-diskfs-")
            .tempdir_in("/var/tmp")?;
        let img = dir.path().join("fs.img");
        let f = std::fs::File::create(&img)?;
        f.set_len(FS_MI << 20)?;
        drop(f);
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount)?;
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mount))?;
        Ok(Self { mount, _dir: dir })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn sh(c: &mut Command) -> Result<String> {
    let out = c.output().with_context(|| format!("{c:?}"))?;
    if !out.status.success() {
        bail!("{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_bytes(p: &Path) -> Result<i64> {
    let out = sh(Command::new("df").args(["-B1", "--output=avail"]).arg(p))?;
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .context("df output")
}

/// An image nobody uses, with a 4 MiB layer of its own (umoci builds the OCI layout).
fn import_extra_image(node: &Node, work: &Path) -> Result<()> {
    let layout = work.join("extra-layout");
    let blob = work.join("blob");
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&blob, data)?;
    sh(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    sh(Command::new("umoci")
        .args(["new", "--image"])
        .arg(format!("{}:gc", layout.display())))?;
    sh(Command::new("umoci")
        .args(["insert", "--rootless", "--image"])
        .arg(format!("{}:gc", layout.display()))
        .arg(&blob)
        .arg("/blob"))?;
    let archive = work.join("extra.tar");
    sh(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."))?;
    sh(node
        .env
        .ctr()
        .args([
            "images",
            "import",
            "--snapshotter",
            "overlayfs",
            "--base-name",
            "docker.io/library/unused-extra",
        ])
        .arg(&archive))?;
    Ok(())
}

fn images(node: &Node) -> Result<String> {
    sh(node.env.ctr().args(["images", "ls", "-q"]))
}

#[test]
fn dead_containers_and_unused_images_go_before_a_pod_writing_to_an_empty_dir() -> Result<()> {
    for tool in ["mkfs.ext4", "mount", "umount", "umoci", "tar"] {
        if !have(tool) {
            return nodelet_tests::skip(&format!("{tool} is not installed"));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return nodelet_tests::skip("no /dev/loop-control: loop devices unavailable");
    }
    let fs = LoopFs::create()?;
    let free = free_bytes(&fs.mount)?;
    let threshold_mi = free / MI - MARGIN_MI;
    let Some((mut node, ro)) = Node::start_with_read_only_port(NodeOpts {
        extra_config: format!(
            "evictionHard:\n  memory.available: 100Mi\n  nodefs.available: {threshold_mi}Mi\n\
             evictionPressureTransitionPeriod: 5s\nimageMinimumGCAge: 1s\n"
        ),
        env: vec![("NODELET_EVICT_STATIC_PODS".into(), "1".into())],
        base_dir: Some(fs.mount.clone()),
        ..Default::default()
    })?
    else {
        return Ok(());
    };
    println!(
        "{FS_MI} MiB filesystem, {} MiB free at start, nodefs.available threshold {threshold_mi} MiB",
        free / MI
    );
    // A finished pod: its dead container stays (MaxPerPodContainer 1) until pressure.
    node.write_manifest(
        "done.yaml",
        &nodelet_tests::host_pod("done", "Never", "true"),
    )?;
    node.wait("the finished pod to succeed", T, || {
        Ok(listed_pod(ro, "done")?.filter(|p| p["status"]["phase"] == "Succeeded"))
    })?;
    anyhow::ensure!(
        !node.pod_containers("done")?.is_empty(),
        "the finished pod's dead container is kept before pressure"
    );
    let work = tempfile::tempdir()?;
    import_extra_image(&node, work.path())?;
    anyhow::ensure!(images(&node)?.contains(EXTRA_IMAGE), "{}", images(&node)?);
    // The image manager detects images at start and every 5 minutes; a restart makes it see
    // the new one now, so imageMinimumGCAge (1s here) has passed once pressure comes.
    node.stop_agent(libc::SIGTERM)?;
    node.start_agent(&[])?;
    node.write_manifest(
        "keeper.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: keeper\nspec:\n  hostNetwork: true\n  \
         terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: busybox:1.35\n    \
         command: [\"sleep\", \"3600\"]\n    resources:\n      requests:\n        \
         ephemeral-storage: 50Mi\n",
    )?;
    node.wait("the keeper to run", T, || {
        Ok(listed_pod(ro, "keeper")?.filter(|p| p["status"]["phase"] == "Running"))
    })?;
    node.write_manifest(
        "writer.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: writer\nspec:\n  hostNetwork: true\n  \
             restartPolicy: Never\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    \
             image: busybox:1.35\n    command: [\"sh\", \"-c\", \"dd if=/dev/zero of=/data/f bs=1M count={WRITE_MI}; sync; sleep 3600\"]\n    \
             volumeMounts:\n    - {{name: data, mountPath: /data}}\n  volumes:\n  - {{name: data, emptyDir: {{}}}}\n"
        ),
    )?;
    let pod = node.wait("the writer to be evicted", T, || {
        Ok(listed_pod(ro, "writer")?.filter(|p| p["status"]["phase"] == "Failed"))
    })?;
    let status = &pod["status"];
    assert_eq!(status["reason"], "Evicted", "{pod:#}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "The node was low on resource: ephemeral-storage. Threshold quantity: {threshold_mi}Mi, available: "
        )),
        "{message}"
    );
    let log = node.agent_log();
    let at = |needle: &str| log.find(needle);
    let reclaimed = at("deleted all unused containers").context("no container reclaim logged")?;
    let images_done = at("image GC: removing image").context("no image removal logged")?;
    let evicted = at("evicting pod").context("no eviction logged")?;
    assert!(
        reclaimed < evicted && images_done < evicted,
        "node-level reclaim comes first"
    );
    assert!(
        node.pod_containers("done")?.is_empty(),
        "the finished pod's dead container was removed"
    );
    let left = images(&node)?;
    assert!(
        !left.contains(EXTRA_IMAGE),
        "the unused image was removed:\n{left}"
    );
    let pause = &node.env.images().pause.name;
    assert!(
        left.contains(pause.as_str()),
        "the sandbox image stays:\n{left}"
    );
    assert!(left.contains("busybox"), "the image in use stays:\n{left}");
    let keeper = listed_pod(ro, "keeper")?.context("the keeper vanished")?;
    assert_eq!(keeper["status"]["phase"], "Running", "{keeper:#}");
    assert!(
        log.lines().any(|l| l.contains("node condition changed")
            && l.contains("DiskPressure")
            && l.contains("status=\"True\"")),
        "DiskPressure was set"
    );
    let metrics = read_only_get(ro, "/metrics")?;
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("evictions{") || l.contains("image_garbage_collected"))
        .collect();
    println!("{}", lines.join("\n"));
    assert!(
        lines.contains(&"kubelet_evictions{eviction_signal=\"nodefs.available\"} 1"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("kubelet_image_garbage_collected_total{reason=\"space\"}")),
        "{lines:?}"
    );
    // A finished pod never runs again once GC took its containers (the PLEG event of their
    // removal once made its worker start it anew).
    anyhow::ensure!(
        node.pod_containers("done")?.is_empty() && node.pod_sandboxes("done")?.is_empty(),
        "the finished pod was started again after GC"
    );
    let done = listed_pod(ro, "done")?.context("the finished pod vanished")?;
    assert_eq!(done["status"]["phase"], "Succeeded", "{done:#}");
    drop(node);
    drop(fs);
    Ok(())
}
