//! Local OCI images: busybox and pause, built from what Debian ships, nothing downloaded.
//!
//! Each image is written twice: as an OCI image layout directory (`<name>.oci/`, for
//! `skopeo copy oci:DIR …` into the loopback [`crate::registry`]) and as that layout packed into
//! one tar (`<name>.tar`) that `ctr images import` accepts; its index carries the
//! `io.containerd.image.name` annotation, so the import needs no registry. Layers are
//! uncompressed tars with zeroed times and owners, so the digests only change when an input
//! (the busybox binary, its applet list, pause.c) does; a stamp file with a hash of the inputs
//! lets a second `build` return at once. Concurrent builders serialise on a lock file.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::process::run;

/// Full name of the busybox image in containerd (manifests say `image: busybox:1.35`).
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:1.35";
/// The busybox image as a pod manifest names it.
pub const BUSYBOX_SHORT: &str = "busybox:1.35";
/// Full name of the pause (sandbox) image; containerd's `sandbox_image`.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// Where Debian's busybox-static puts the binary.
const BUSYBOX_BIN: &str = "/bin/busybox";
/// Bumped whenever the image contents written here change, to invalidate stamps.
pub(crate) const GENERATOR: &str = "nodelet-xtask-images-v1";
const PAUSE_C: &str = include_str!("pause.c");
pub(crate) const PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// One built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Full reference as containerd stores it, e.g. `docker.io/library/busybox:1.35`.
    pub name: String,
    /// Tag inside the OCI layout (`org.opencontainers.image.ref.name`), e.g. `1.35`.
    pub tag: String,
    /// The packed layout, for `ctr images import`.
    pub archive: PathBuf,
    /// The OCI image layout directory, for `skopeo copy oci:DIR:TAG` / [`crate::registry`].
    pub layout: PathBuf,
    /// `sha256:…` of the image manifest.
    pub manifest_digest: String,
}

/// Both images of the harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Directory holding the archives and layouts.
    pub dir: PathBuf,
    /// busybox 1.35 from Debian's busybox-static.
    pub busybox: Image,
    /// The pause image; the sandbox image of every [`crate::containerd::Env`].
    pub pause: Image,
}

/// Builds (or reuses, when inputs are unchanged) both images under `out_dir`.
pub fn build(out_dir: &Path) -> Result<Images> {
    fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create images dir {}", out_dir.display()))?;
    let lock_path = out_dir.join(".lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let busybox = build_busybox(out_dir)?;
    let pause = build_pause(out_dir)?;
    Ok(Images {
        dir: out_dir.to_owned(),
        busybox,
        pause,
    })
}

/// What one image is made of, before it is written.
pub(crate) struct Spec {
    /// File stem of the archive, layout and stamp in the output dir.
    pub(crate) stem: String,
    /// Full reference as containerd stores it.
    pub(crate) name: String,
    /// Tag inside the OCI layout.
    pub(crate) tag: String,
    /// The single layer (an uncompressed tar).
    pub(crate) layer: Vec<u8>,
    /// The image config (see [`image_config`]).
    pub(crate) config: serde_json::Value,
}

/// Debian's busybox-static binary and its `--list` output.
pub(crate) fn busybox_inputs() -> Result<(Vec<u8>, String)> {
    let bin = fs::read(BUSYBOX_BIN)
        .with_context(|| format!("cannot read {BUSYBOX_BIN} (apt-get install busybox-static)"))?;
    let list = run(Command::new(BUSYBOX_BIN).arg("--list"))?;
    Ok((bin, list))
}

fn build_busybox(out: &Path) -> Result<Image> {
    let (bin, list) = busybox_inputs()?;
    let applets = applets(&list);
    let key = hash_hex(&[GENERATOR.as_bytes(), &bin, list.as_bytes()]);
    if let Some(img) = cached(out, "busybox", BUSYBOX_IMAGE, "1.35", &key) {
        return Ok(img);
    }
    let layer = busybox_layer(&bin, &applets)?;
    let config = image_config(json!({ "Env": [PATH_ENV], "Cmd": ["sh"] }), &layer);
    write_image(
        out,
        &key,
        Spec {
            stem: "busybox".to_owned(),
            name: BUSYBOX_IMAGE.to_owned(),
            tag: "1.35".to_owned(),
            layer,
            config,
        },
    )
}

fn build_pause(out: &Path) -> Result<Image> {
    let key = hash_hex(&[GENERATOR.as_bytes(), PAUSE_C.as_bytes()]);
    if let Some(img) = cached(out, "pause", PAUSE_IMAGE, "3.10", &key) {
        return Ok(img);
    }
    let bin = pause_binary(out)?;
    let mut b = LayerBuilder::new();
    b.file("pause", 0o755, &bin)?;
    let layer = b.finish()?;
    let config = image_config(
        json!({ "Env": [PATH_ENV], "Entrypoint": ["/pause"] }),
        &layer,
    );
    write_image(
        out,
        &key,
        Spec {
            stem: "pause".to_owned(),
            name: PAUSE_IMAGE.to_owned(),
            tag: "3.10".to_owned(),
            layer,
            config,
        },
    )
}

/// pause.c compiled statically (in a temp dir under `out`).
pub(crate) fn pause_binary(out: &Path) -> Result<Vec<u8>> {
    let work = tempfile::tempdir_in(out).context("cannot create a build dir for pause")?;
    let src = work.path().join("pause.c");
    let bin_path = work.path().join("pause");
    fs::write(&src, PAUSE_C).with_context(|| format!("cannot write {}", src.display()))?;
    run(Command::new("gcc")
        .args(["-static", "-O2", "-s", "-o"])
        .arg(&bin_path)
        .arg(&src))
    .context("cannot compile pause.c (apt-get install gcc libc6-dev)")?;
    fs::read(&bin_path).with_context(|| format!("cannot read {}", bin_path.display()))
}

/// Applet names from `busybox --list`, without busybox itself and without anything that could
/// escape /bin.
pub(crate) fn applets(list: &str) -> Vec<String> {
    let mut v: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/') && *a != "." && *a != "..")
        .map(str::to_owned)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn busybox_layer(bin: &[u8], applets: &[String]) -> Result<Vec<u8>> {
    let mut b = LayerBuilder::new();
    busybox_files(&mut b, bin, applets, "", "")?;
    b.finish()
}

/// The busybox tree: `/bin` with the binary and one symlink per applet, `/etc/passwd` and
/// `/etc/group` (with `extra_passwd` and `extra_group` lines appended), `/home`, `/root`, `/tmp`,
/// `/var`.
pub(crate) fn busybox_files(
    b: &mut LayerBuilder,
    bin: &[u8],
    applets: &[String],
    extra_passwd: &str,
    extra_group: &str,
) -> Result<()> {
    b.dir("bin", 0o755)?;
    b.file("bin/busybox", 0o755, bin)?;
    for a in applets {
        b.symlink(&format!("bin/{a}"), "busybox")?;
    }
    b.dir("etc", 0o755)?;
    let group = format!("root:x:0:\nnobody:x:65534:\n{extra_group}");
    b.file("etc/group", 0o644, group.as_bytes())?;
    let passwd = format!(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n{extra_passwd}"
    );
    b.file("etc/passwd", 0o644, passwd.as_bytes())?;
    b.dir("home", 0o755)?;
    b.dir("root", 0o700)?;
    b.dir("tmp", 0o1777)?;
    b.dir("var", 0o755)
}

/// Deterministic tar writer: owner 0:0, mtime 0.
pub(crate) struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    /// An empty layer.
    pub(crate) fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    }

    /// Adds directory `path`.
    pub(crate) fn dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.tar
            .append_data(&mut h, format!("{path}/"), io::empty())
            .with_context(|| format!("cannot add {path}/ to layer"))
    }

    /// Adds regular file `path`.
    pub(crate) fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .with_context(|| format!("cannot add {path} to layer"))
    }

    /// Adds symlink `path` -> `target`.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .with_context(|| format!("cannot add symlink {path} to layer"))
    }

    /// The finished tar.
    pub(crate) fn finish(self) -> Result<Vec<u8>> {
        self.tar.into_inner().context("cannot finish layer tar")
    }
}

/// An OCI image config for this machine with `config` and the one `layer`.
pub(crate) fn image_config(config: serde_json::Value, layer: &[u8]) -> serde_json::Value {
    json!({
        "architecture": oci_arch(),
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [sha256_digest(layer)] },
        "history": [{ "created_by": GENERATOR }],
    })
}

/// GOARCH spelling of this machine's architecture, as OCI configs and containerd expect it.
fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub(crate) fn hash_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

fn paths(out: &Path, stem: &str) -> (PathBuf, PathBuf, PathBuf) {
    (
        out.join(format!("{stem}.tar")),
        out.join(format!("{stem}.oci")),
        out.join(format!("{stem}.stamp")),
    )
}

/// The stamp holds `key` and the manifest digest; outputs are reused when the key matches.
pub(crate) fn cached(out: &Path, stem: &str, name: &str, tag: &str, key: &str) -> Option<Image> {
    let (archive, layout, stamp) = paths(out, stem);
    let text = fs::read_to_string(&stamp).ok()?;
    let (k, digest) = text.trim().split_once(' ')?;
    if k != key || !archive.is_file() || !layout.join("index.json").is_file() {
        return None;
    }
    Some(Image {
        name: name.to_owned(),
        tag: tag.to_owned(),
        archive,
        layout,
        manifest_digest: digest.to_owned(),
    })
}

/// Writes `spec` as `<stem>.oci/`, `<stem>.tar` and the stamp holding `key`.
pub(crate) fn write_image(out: &Path, key: &str, spec: Spec) -> Result<Image> {
    let (archive, layout, stamp) = paths(out, &spec.stem);
    let _ = fs::remove_file(&stamp);
    let tmp = out.join(format!("{}.oci.tmp", spec.stem));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    let blobs = tmp.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("cannot create {}", blobs.display()))?;

    let layer = write_blob(&blobs, &spec.layer)?;
    let config_bytes = serde_json::to_vec(&spec.config).context("cannot encode image config")?;
    let config = write_blob(&blobs, &config_bytes)?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config.0, "size": config.1 },
        "layers": [{ "mediaType": LAYER_MEDIA_TYPE, "digest": layer.0, "size": layer.1 }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).context("cannot encode manifest")?;
    let manifest = write_blob(&blobs, &manifest_bytes)?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest.0,
            "size": manifest.1,
            "annotations": {
                "io.containerd.image.name": spec.name,
                "org.opencontainers.image.ref.name": spec.tag,
            },
        }],
    });
    write_file(
        &tmp.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    write_file(
        &tmp.join("index.json"),
        &serde_json::to_vec(&index).context("cannot encode index")?,
    )?;

    let tmp_archive = out.join(format!("{}.tar.tmp", spec.stem));
    pack_layout(&tmp, &tmp_archive)?;
    if layout.exists() {
        fs::remove_dir_all(&layout)
            .with_context(|| format!("cannot remove {}", layout.display()))?;
    }
    fs::rename(&tmp, &layout).with_context(|| format!("cannot create {}", layout.display()))?;
    fs::rename(&tmp_archive, &archive)
        .with_context(|| format!("cannot create {}", archive.display()))?;
    write_file(&stamp, format!("{key} {}\n", manifest.0).as_bytes())?;
    Ok(Image {
        name: spec.name.clone(),
        tag: spec.tag.clone(),
        archive,
        layout,
        manifest_digest: manifest.0,
    })
}

/// Writes a content-addressed blob; returns (digest, size).
fn write_blob(blobs: &Path, data: &[u8]) -> Result<(String, u64)> {
    let digest = sha256_digest(data);
    let hex = digest.trim_start_matches("sha256:");
    write_file(&blobs.join(hex), data)?;
    Ok((digest, data.len() as u64))
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Packs an OCI layout directory into a tar with `index.json` at its root.
fn pack_layout(layout: &Path, archive: &Path) -> Result<()> {
    let f =
        File::create(archive).with_context(|| format!("cannot create {}", archive.display()))?;
    let mut tar = tar::Builder::new(io::BufWriter::new(f));
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    let mut names = vec![PathBuf::from("oci-layout"), PathBuf::from("index.json")];
    let mut blobs: Vec<PathBuf> = fs::read_dir(layout.join("blobs/sha256"))
        .with_context(|| format!("cannot list blobs of {}", layout.display()))?
        .map(|e| e.map(|e| Path::new("blobs/sha256").join(e.file_name())))
        .collect::<io::Result<_>>()
        .context("cannot list blobs")?;
    blobs.sort();
    tar.append_dir("blobs", layout.join("blobs"))
        .and_then(|()| tar.append_dir("blobs/sha256", layout.join("blobs/sha256")))
        .context("cannot add blob dirs to archive")?;
    names.extend(blobs);
    for n in names {
        tar.append_path_with_name(layout.join(&n), &n)
            .with_context(|| format!("cannot add {} to {}", n.display(), archive.display()))?;
    }
    let mut w = tar
        .into_inner()
        .with_context(|| format!("cannot finish {}", archive.display()))?;
    w.flush()
        .with_context(|| format!("cannot write {}", archive.display()))?;
    if fs::metadata(archive).map(|m| m.len()).unwrap_or(0) == 0 {
        bail!("{} is empty", archive.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applet_list_drops_busybox_and_paths() {
        let got = applets("sh\nbusybox\nls\n../etc\n\nls\n");
        assert_eq!(got, vec!["ls".to_owned(), "sh".to_owned()]);
    }

    #[test]
    fn layers_are_deterministic() -> Result<()> {
        let a = busybox_layer(b"binary", &["sh".to_owned()])?;
        let b = busybox_layer(b"binary", &["sh".to_owned()])?;
        assert_eq!(sha256_digest(&a), sha256_digest(&b));
        let mut ar = tar::Archive::new(&a[..]);
        let names: Vec<String> = ar
            .entries()?
            .map(|e| Ok(e?.path()?.to_string_lossy().into_owned()))
            .collect::<Result<_>>()?;
        assert!(names.contains(&"bin/sh".to_owned()), "{names:?}");
        assert!(names.contains(&"etc/passwd".to_owned()), "{names:?}");
        Ok(())
    }
}
