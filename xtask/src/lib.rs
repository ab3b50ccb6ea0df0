//! Developer tasks and the e2e harness of nodelet: one source of truth for the `cargo xtask`
//! binary and the `tests/` crate (package `nodelet-tests`).
//!
//! Where to start: [`testing::start_env_or_skip`] gives a test a private containerd
//! ([`containerd::Env`]) with the local busybox and pause images imported
//! ([`images::BUSYBOX_IMAGE`], [`images::PAUSE_IMAGE`]); [`registry::Registry`] serves images
//! over loopback; [`packages::ensure`] installs what a fresh machine lacks; [`nodelet_bin`]
//! and [`images_dir`] find what `cargo xtask test` built; [`run::Session`] is `cargo xtask run`. [`cluster::Cluster`] runs a real
//! Kubernetes control plane on loopback, built from the Go module proxy by [`k8s`].
//!
//! The API is blocking (it runs CRI calls on its own short-lived runtime thread), so it works
//! from plain `#[test]`s, from `#[tokio::test]`s and from `Drop`. An e2e test:
//!
//! ```no_run
//! use xtask::{EnvOpts, testing};
//!
//! fn static_pod_runs() -> anyhow::Result<()> {
//!     let Some(bin) = testing::nodelet_bin_or_skip()? else { return Ok(()) };
//!     // A cgroup parent of its own: stop() removes it with everything the pods left.
//!     let parent = format!("/nodelet-e2e-{}", std::process::id());
//!     let opts = EnvOpts { cgroup_parent: Some(parent.clone()), ..EnvOpts::default() };
//!     let Some(env) = testing::start_env_or_skip(opts)? else { return Ok(()) };
//!     let manifests = env.dir().join("manifests");
//!     std::fs::create_dir_all(&manifests)?;
//!     std::fs::write(manifests.join("hello.yaml"), "# a Pod with image: busybox:1.35")?;
//!     let mut agent = std::process::Command::new(bin)
//!         .arg("--container-runtime-endpoint")
//!         .arg(env.endpoint())
//!         .arg("--pod-manifest-path")
//!         .arg(&manifests)
//!         .spawn()?;
//!     // … watch the pod through CRI: proto::Client::connect(env.socket()) …
//!     // Stop the agent first, or it may recreate pods while the Env removes them.
//!     agent.kill()?;
//!     agent.wait()?;
//!     env.stop()?; // errors name every teardown step that failed
//!     Ok(())
//! }
//! ```

use std::path::{Path, PathBuf};

pub mod api_start;
pub mod cluster;
pub mod conformance;
pub mod containerd;
mod cri;
pub mod e2e_images;
pub mod images;
pub mod k8s;
pub mod kubelet;
pub mod metrics_server;
pub mod packages;
pub mod process;
pub mod race;
pub mod registry;
pub mod run;
pub mod testing;

pub use containerd::{Env, EnvOpts};
pub use images::{Image, Images};
pub use registry::Registry;

/// Env var: set to 1 to turn every "skipped: missing X" into a failure.
pub const REQUIRE_ALL_VAR: &str = "NODELET_REQUIRE_ALL";
/// Env var: absolute path of the nodelet binary under test.
pub const BIN_VAR: &str = "NODELET_BIN";
/// Env var: directory of the built images.
pub const IMAGES_DIR_VAR: &str = "NODELET_IMAGES_DIR";

/// The cargo workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_owned()
}

/// cargo's target dir: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Where images are built: `$NODELET_IMAGES_DIR` or `<target>/nodelet-images`.
pub fn images_dir() -> PathBuf {
    std::env::var_os(IMAGES_DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("nodelet-images"))
}

/// The agent binary under test: `$NODELET_BIN` or `<target>/debug/nodelet`.
pub fn nodelet_bin() -> PathBuf {
    std::env::var_os(BIN_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/nodelet"))
}

/// Whether `NODELET_REQUIRE_ALL=1`: missing prerequisites fail instead of skipping.
pub fn require_all() -> bool {
    std::env::var(REQUIRE_ALL_VAR).is_ok_and(|v| v == "1")
}

/// The address this host sends from towards the default route: what nodelet (as the kubelet)
/// reports as the InternalIP when the node name does not resolve, and so where the API server
/// calls it. No packet is sent.
pub fn host_ip() -> anyhow::Result<std::net::IpAddr> {
    use anyhow::Context;
    use std::net::{Ipv4Addr, UdpSocket};
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect((Ipv4Addr::new(203, 0, 113, 1), 9))
        .context("no default route")?;
    Ok(s.local_addr()?.ip())
}
