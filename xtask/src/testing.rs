//! Skip-or-fail helpers for tests that need root, containerd or the agent binary.
//!
//! A test skips (printing why) when a prerequisite is missing, unless `NODELET_REQUIRE_ALL=1`
//! (set by CI and `cargo xtask test` callers who want it), where the same condition fails.

use anyhow::{Result, bail};

use crate::containerd::{self, Env, EnvOpts};

/// Why containerd-backed tests cannot run here, if they cannot: not root, or tools missing.
pub fn containerd_unavailable() -> Option<String> {
    // SAFETY: geteuid(2) cannot fail and has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("containerd tests need root".to_owned());
    }
    containerd::check_tools().err()
}

/// Records a skip: prints `reason` and returns `Ok(())`, or fails under `NODELET_REQUIRE_ALL=1`.
pub fn skip(reason: &str) -> Result<()> {
    if crate::require_all() {
        bail!("{} is set but: {reason}", crate::REQUIRE_ALL_VAR);
    }
    eprintln!("SKIPPED: {reason}");
    Ok(())
}

/// [`skip`] for tests that do not return a `Result` (kernel and load tests): panics with the
/// reason under `NODELET_REQUIRE_ALL=1`, prints it otherwise. The one home of that rule.
pub fn skip_or_fail(reason: &str) {
    if let Err(e) = skip(reason) {
        panic!("{e}");
    }
}

/// Starts an [`Env`], or returns `Ok(None)` after printing why it cannot (see [`skip`]).
///
/// A start that fails on a machine that has everything is an error, not a skip.
pub fn start_env_or_skip(opts: EnvOpts) -> Result<Option<Env>> {
    if let Some(reason) = containerd_unavailable() {
        skip(&reason)?;
        return Ok(None);
    }
    Env::start(opts).map(Some)
}

/// `Ok(Some(path))` when the agent binary exists, else a [`skip`].
pub fn nodelet_bin_or_skip() -> Result<Option<std::path::PathBuf>> {
    let bin = crate::nodelet_bin();
    if bin.is_file() {
        return Ok(Some(bin));
    }
    skip(&format!(
        "{} not found (run `cargo xtask test`, or set {})",
        bin.display(),
        crate::BIN_VAR
    ))?;
    Ok(None)
}

/// GET `path` on an agent's plain HTTP port (the read-only port) on 127.0.0.1; the body of a
/// 200 answer.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    use anyhow::Context;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    // HTTP/1.0: the body ends when the connection closes, never chunked.
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header")?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// The static pod `name` of node `node` (its mirror name `name-node`) in the agent's /pods
/// on read-only port `port`, if listed.
pub fn listed_static_pod(port: u16, name: &str, node: &str) -> Result<Option<serde_json::Value>> {
    let v: serde_json::Value = serde_json::from_str(&http_get(port, "/pods")?)?;
    let full = format!("{name}-{node}");
    Ok(v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["metadata"]["name"] == full.as_str())
        .cloned())
}
