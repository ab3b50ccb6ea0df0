//! The images the upstream node conformance tests pull, built here: the Kubernetes image
//! registry cannot be reached from our machines, so each image the `[NodeConformance]` tests
//! of [`crate::k8s::RELEASE`] name in `test/utils/image/manifest.go` is made from what the Go
//! module proxy and Debian give, pushed to a loopback [`Registry`], and the e2e binary is
//! pointed there by a `KUBE_TEST_REPO_LIST` file ([`repo_list`]).
//!
//! What the images hold (upstream's Dockerfiles in `test/images/<name>/` for comparison):
//! - `agnhost` (2.66.1, and 2.55 as `AgnhostPrev`): the release's
//!   `k8s.io/kubernetes/test/images/agnhost` built `CGO_ENABLED=0` by [`crate::k8s`], on a
//!   busybox-static tree instead of alpine (no curl but a shim, no dig, iperf, coredns: tests that exec
//!   those fail here), `/agnhost-2`, porter's `localhost.crt/.key`, `/uploads`, the user
//!   `user-defined-in-image` (1000) in group `group-defined-in-image` (50000), and a
//!   `/bin/bash` that runs busybox's sh ([`BASH_SHIM`]), a `/bin/curl` on busybox's wget for
//!   the options the tests pass ([`CURL_SHIM`]).
//! - `busybox` (1.37.0-2): busybox-static (Debian's 1.35, not 1.37).
//! - `nonewprivs` (1.4): `test/images/nonewprivs` as setuid `/usr/local/bin/nnp`.
//! - `nonroot` (1.5): busybox with `User: 1234`.
//! - `glibc-dns-testing` (2.1.1): busybox-static, not a glibc base; the `[NodeConformance]`
//!   tests that use it ("Override hostname of Pod") run `hostname` and `hostname -f`, which
//!   busybox answers from `/etc/hosts` as glibc does without DNS.
//! - `pause` (3.10.2): pause.c, as the sandbox image is.
//!
//! Not built: [`NOT_BUILT`] (with the tests they block).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

use crate::images::{self, LayerBuilder, Spec};
use crate::k8s;
use crate::registry::Registry;

/// Upstream's agnhost (alpine) installs bash, and tests run `/bin/bash -c <script>` in it
/// (the restartable-init-container probe tests' SIGTERM traps); busybox has no bash applet,
/// and those scripts are POSIX sh.
const BASH_SHIM: &[u8] = b"#!/bin/sh\nexec /bin/sh \"$@\"\n";

/// Upstream's agnhost installs curl, and tests run it in the container: lifecycle hooks
/// (`curl http://<handler>:8080/echo?msg=poststart`) and the networking checks (`curl -g -q
/// -s [--max-time N] [--connect-timeout N] URL`). Busybox has wget; this maps those options
/// and refuses any other, so a test that needs more fails naming the option. `--max-time` is
/// busybox's `timeout`: Debian's static busybox 1.35 crashes on `wget -T`.
const CURL_SHIM: &[u8] = b"#!/bin/sh\n\
# curl on busybox wget, for the options the e2e tests pass (xtask/src/e2e_images.rs)\n\
t=\nurl=\n\
while [ $# -gt 0 ]; do\n\
  case \"$1\" in\n\
    -g|-q|-s) ;;\n\
    --max-time) t=\"timeout $2\"; shift ;;\n\
    --connect-timeout) shift ;;\n\
    -*) echo \"curl (a busybox wget shim): unsupported option $1\" >&2; exit 2 ;;\n\
    *) url=\"$1\" ;;\n\
  esac\n\
  shift\n\
done\n\
exec $t wget -q -O - \"$url\"\n";

/// The images the `[NodeConformance]` tests use that are not built here, and why, with the
/// tests that need them.
pub const NOT_BUILT: &[(&str, &str)] = &[
    (
        "e2e-test-images/nginx:1.27.0-2",
        "Debian's nginx is dynamically linked against glibc and a dozen libraries; no static \
         build in Debian or the module proxy. Blocks: [sig-node] Pods should have their \
         auto-restart back-off timer reset on image update [Slow] (skipped anyway: [Slow])",
    ),
    (
        "gcr.io/k8s-authenticated-test/agnhost:2.6 (privateRegistry)",
        "a private registry with pull credentials; the one test that pulls it is skipped",
    ),
];

/// The registry paths (repository root) e2e reads from `KUBE_TEST_REPO_LIST`, relative to the
/// loopback registry's host: every key of `RegistryList` but `invalidRegistry` (tests want it
/// to fail) and `privateRegistry` (needs credentials).
const REPO_KEYS: &[(&str, &str)] = &[
    ("promoterE2eRegistry", "e2e-test-images"),
    ("buildImageRegistry", "build-image"),
    ("gcEtcdRegistry", ""),
    ("gcRegistry", ""),
    ("sigStorageRegistry", "sig-storage"),
    ("dockerLibraryRegistry", "library"),
    ("cloudProviderGcpRegistry", "cloud-provider-gcp"),
];

/// One image to push: its layout and `repository:tag` under the registry.
#[derive(Debug, Clone)]
pub struct E2eImage {
    /// `<repo path>/<name>:<tag>`, e.g. `e2e-test-images/agnhost:2.66.1`.
    pub name_tag: String,
    /// The OCI layout dir.
    pub layout: PathBuf,
}

/// Builds every image (cached by inputs in `out`); builds agnhost and nonewprivs of `release`
/// through [`crate::k8s::build`] first.
pub fn build(out: &Path, release: &str) -> Result<Vec<E2eImage>> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let lock_path = out.join(".lock");
    let lock = fs::File::create(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let bins = k8s::build(release, &["test/images/agnhost", "test/images/nonewprivs"])?;
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let agnhost = read(&bins[0])?;
    let nnp = read(&bins[1])?;
    let src = k8s::module_source(release)?;
    let porter = src.join("test/images/agnhost/porter");
    let crt = read(&porter.join("localhost.crt"))?;
    let key = read(&porter.join("localhost.key"))?;
    let (busybox, list) = images::busybox_inputs()?;
    let applets = images::applets(&list);
    let pause = images::pause_binary(out)?;
    let base = |b: &mut LayerBuilder, passwd: &str, group: &str| {
        images::busybox_files(b, &busybox, &applets, passwd, group)
    };
    let env = json!([images::PATH_ENV]);
    let mut made = Vec::new();

    let mut one = |stem: &str,
                   name_tag: &str,
                   inputs: &[&[u8]],
                   layer: &dyn Fn() -> Result<Vec<u8>>,
                   config: serde_json::Value|
     -> Result<()> {
        let (name, tag) = name_tag.rsplit_once(':').context("name:tag")?;
        let mut parts: Vec<&[u8]> = vec![images::GENERATOR.as_bytes(), name_tag.as_bytes()];
        parts.extend_from_slice(inputs);
        let cfg = config.to_string();
        parts.push(cfg.as_bytes());
        let key = images::hash_hex(&parts);
        let full = format!("nodelet.local/{name}:{tag}");
        let img = match images::cached(out, stem, &full, tag, &key) {
            Some(i) => i,
            None => {
                let layer = layer()?;
                let config = images::image_config(config, &layer);
                images::write_image(
                    out,
                    &key,
                    Spec {
                        stem: stem.to_owned(),
                        name: full.clone(),
                        tag: tag.to_owned(),
                        layer,
                        config,
                    },
                )?
            }
        };
        made.push(E2eImage {
            name_tag: name_tag.to_owned(),
            layout: img.layout,
        });
        Ok(())
    };

    let agnhost_layer = || {
        let mut b = LayerBuilder::new();
        base(
            &mut b,
            "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n",
            "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n",
        )?;
        b.file("agnhost", 0o755, &agnhost)?;
        b.file("bin/bash", 0o755, BASH_SHIM)?;
        b.file("bin/curl", 0o755, CURL_SHIM)?;
        b.symlink("agnhost-2", "agnhost")?;
        b.file("localhost.crt", 0o644, &crt)?;
        b.file("localhost.key", 0o600, &key)?;
        b.dir("uploads", 0o755)?;
        b.dir("home/user-defined-in-image", 0o755)?;
        b.finish()
    };
    let agnhost_cfg = json!({ "Env": env, "Entrypoint": ["/agnhost"], "Cmd": ["pause"] });
    let agnhost_inputs: [&[u8]; 6] = [&agnhost, &busybox, &crt, &key, BASH_SHIM, CURL_SHIM];
    for tag in ["2.66.1", "2.55"] {
        one(
            &format!("e2e-agnhost-{tag}"),
            &format!("e2e-test-images/agnhost:{tag}"),
            &agnhost_inputs,
            &agnhost_layer,
            agnhost_cfg.clone(),
        )?;
    }
    let plain = || {
        let mut b = LayerBuilder::new();
        base(&mut b, "", "")?;
        b.finish()
    };
    one(
        "e2e-busybox",
        "e2e-test-images/busybox:1.37.0-2",
        &[&busybox],
        &plain,
        json!({ "Env": env, "Cmd": ["sh"] }),
    )?;
    one(
        "e2e-glibc-dns-testing",
        "e2e-test-images/glibc-dns-testing:2.1.1",
        &[&busybox],
        &plain,
        json!({ "Env": env, "Cmd": ["sh"] }),
    )?;
    one(
        "e2e-nonroot",
        "e2e-test-images/nonroot:1.5",
        &[&busybox],
        &plain,
        json!({ "Env": env, "Cmd": ["sh"], "User": "1234" }),
    )?;
    let nnp_layer = || {
        let mut b = LayerBuilder::new();
        base(&mut b, "", "")?;
        b.dir("usr", 0o755)?;
        b.dir("usr/local", 0o755)?;
        b.dir("usr/local/bin", 0o755)?;
        b.file("usr/local/bin/nnp", 0o4755, &nnp)?;
        b.finish()
    };
    one(
        "e2e-nonewprivs",
        "e2e-test-images/nonewprivs:1.4",
        &[&busybox, &nnp],
        &nnp_layer,
        json!({ "Env": env, "Cmd": ["nnp"] }),
    )?;
    let pause_layer = || {
        let mut b = LayerBuilder::new();
        b.file("pause", 0o755, &pause)?;
        b.finish()
    };
    one(
        "e2e-pause",
        "pause:3.10.2",
        &[&pause],
        &pause_layer,
        json!({ "Env": env, "Entrypoint": ["/pause"] }),
    )?;
    Ok(made)
}

/// Pushes `images` to `registry`.
pub fn push(registry: &Registry, images: &[E2eImage]) -> Result<()> {
    for i in images {
        registry.push(&i.layout, &i.name_tag)?;
    }
    Ok(())
}

/// The `KUBE_TEST_REPO_LIST` YAML pointing every remappable registry at `host`.
pub fn repo_list(host: &str) -> String {
    let mut s = String::from("# Written by cargo xtask conformance (xtask/src/e2e_images.rs).\n");
    for (key, path) in REPO_KEYS {
        let repo = if path.is_empty() {
            host.to_owned()
        } else {
            format!("{host}/{path}")
        };
        s.push_str(&format!("{key}: {repo}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_list_remaps_the_e2e_registries_only() {
        let y = repo_list("127.0.0.1:5000");
        assert!(y.contains("\npromoterE2eRegistry: 127.0.0.1:5000/e2e-test-images\n"));
        assert!(y.contains("\ngcRegistry: 127.0.0.1:5000\n"));
        assert!(!y.contains("invalidRegistry"));
        assert!(!y.contains("privateRegistry"));
    }
}
