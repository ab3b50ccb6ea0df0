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
