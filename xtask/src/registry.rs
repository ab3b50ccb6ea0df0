//! A loopback OCI registry: Debian's `docker-registry` (distribution v2) on `127.0.0.1:<free
//! port>`, filesystem storage in a temp dir, images pushed with `skopeo`.
//!
//! Tests use it for PullImage, imagePullPolicy and pull-failure paths; give its
//! [`Registry::host`] to [`crate::containerd::EnvOpts::insecure_registries`] (or
//! [`crate::containerd::Env::allow_insecure_registry`]) so containerd speaks plain HTTP to it.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::images::Image;
use crate::process::{self, Daemon, run};

/// A running registry; stopped and its storage deleted on drop.
#[derive(Debug)]
pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    daemon: Option<Daemon>,
}

/// The registry's config: storage in `storage`, HTTP on `127.0.0.1:port`, no background jobs.
fn render_config(storage: &Path, port: u16) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n\
         health:\n  storagedriver:\n    enabled: false\n",
        storage = serde_json::Value::String(storage.to_string_lossy().into_owned()),
    )
}

impl Registry {
    /// Starts a registry with its temp dir in the system temp dir.
    pub fn start() -> Result<Registry> {
        Self::start_in(&std::env::temp_dir())
    }

    /// Starts a registry with its temp dir under `base`.
    pub fn start_in(base: &Path) -> Result<Registry> {
        if !process::have_program("docker-registry") {
            bail!("docker-registry is not installed (run `cargo xtask setup`)");
        }
        let dir = tempfile::Builder::new()
            .prefix("nodelet-registry-")
            .tempdir_in(base)
            .with_context(|| format!("cannot create a temp dir in {}", base.display()))?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage)
            .with_context(|| format!("cannot create {}", storage.display()))?;
        // The free port can be taken between probe and bind: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            let cfg = dir.path().join("config.yml");
            fs::write(&cfg, render_config(&storage, port))
                .with_context(|| format!("cannot write {}", cfg.display()))?;
            let log = dir.path().join("registry.log");
            let mut cmd = Command::new("docker-registry");
            cmd.arg("serve").arg(&cfg);
            let daemon = Daemon::spawn("docker-registry", cmd, &log)?;
            match wait_ready(&daemon, port, &log) {
                Ok(()) => {
                    return Ok(Registry {
                        dir,
                        port,
                        daemon: Some(daemon),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("the loop ran at least once"))
    }

    /// `127.0.0.1:PORT`: the prefix of image references in this registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's temp dir (config, storage, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// Copies the single image of the OCI layout `layout` to `<host>/<name_tag>` and returns that
    /// full reference (what a pod's `image:` names).
    pub fn push(&self, layout: &Path, name_tag: &str) -> Result<String> {
        if !name_tag.contains(':') || name_tag.starts_with('/') {
            bail!("expected name:tag, got {name_tag:?}");
        }
        let reference = format!("{}/{name_tag}", self.host());
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{reference}")))
        .with_context(|| format!("cannot push {} to {reference}", layout.display()))?;
        Ok(reference)
    }

    /// [`Registry::push`] of a built image.
    pub fn push_image(&self, image: &Image, name_tag: &str) -> Result<String> {
        self.push(&image.layout, name_tag)
    }

    /// Stops the registry and deletes its storage.
    pub fn stop(mut self) -> Result<()> {
        if let Some(d) = self.daemon.take() {
            d.stop(Duration::from_secs(5))?;
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take()
            && let Err(e) = d.stop(Duration::from_secs(5))
        {
            eprintln!("xtask: {e:#}");
        }
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr().context("no local address")?.port())
}

/// Polls `GET /v2/` until it answers 200.
fn wait_ready(daemon: &Daemon, port: u16, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(exit) = daemon.exited() {
            bail!(
                "docker-registry exited ({exit}); {} ends with:\n{}",
                log.display(),
                process::log_tail(log, 20)
            );
        }
        if let Ok(true) = probe(&addr) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "docker-registry on {addr} not ready after 10 s; {} ends with:\n{}",
                log.display(),
                process::log_tail(log, 20)
            );
        }
        thread::sleep(Duration::from_millis(25));
    }
}

fn probe(addr: &SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    Ok(head.starts_with("HTTP/1.") && head.contains(" 200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_loopback_only() {
        let c = render_config(Path::new("/tmp/r/storage"), 5123);
        assert!(c.contains("addr: 127.0.0.1:5123"), "{c}");
        assert!(c.contains(r#"rootdirectory: "/tmp/r/storage""#), "{c}");
    }
}
