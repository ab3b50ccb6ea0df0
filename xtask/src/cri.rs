//! The few CRI calls the harness itself makes: readiness (Version) and teardown (remove every
//! pod sandbox). Tests talk CRI through `proto` directly.
//!
//! The harness API is blocking so it can run from `Drop` and from plain `#[test]`s as well as
//! from inside a tokio test; each call therefore runs on its own scoped thread with a private
//! current-thread runtime (a nested `block_on` on the caller's runtime would panic).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use proto::runtime::v1 as cri;

/// Per-call deadline; StopPodSandbox kills with SIGKILL at once, so this is only hit by a hung
/// runtime.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `f` to completion on a fresh current-thread runtime on a scoped thread.
pub(crate) fn block_on<T, F>(f: impl FnOnce() -> F + Send) -> Result<T>
where
    F: Future<Output = Result<T>>,
    T: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot build a tokio runtime")?;
            rt.block_on(f())
        })
        .join()
        .map_err(|_| anyhow!("CRI helper thread panicked"))?
    })
}

/// One CRI call with the kit's deadline; errors name the call.
pub(crate) async fn timed<T>(
    call: &'static str,
    fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(status)) => Err(anyhow::Error::new(status).context(format!("CRI {call}"))),
        Err(_) => Err(anyhow!("CRI {call} timed out after {CALL_TIMEOUT:?}")),
    }
}

/// CRI Version: `"<runtime name> <runtime version>"`.
pub fn version(socket: &Path) -> Result<String> {
    block_on(|| async {
        let client = proto::Client::connect(socket)
            .await
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        let v = timed(
            "Version",
            client.runtime().version(cri::VersionRequest {
                version: "v1".to_owned(),
            }),
        )
        .await?;
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    })
}

/// Tries at removing one sandbox, [`REMOVE_RETRY`] apart.
const REMOVE_ATTEMPTS: u32 = 20;
/// Pause between tries at removing a sandbox.
const REMOVE_RETRY: Duration = Duration::from_millis(500);

/// What [`remove_all_sandboxes`] removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// Sandboxes stopped and removed.
    pub sandboxes: usize,
    /// Their `linux.cgroup_parent`s (the pod-level cgroups), which RemovePodSandbox leaves.
    pub cgroup_parents: Vec<String>,
}

/// The sandbox's configured cgroup parent, from containerd's verbose PodSandboxStatus
/// (`info["info"]` is JSON with the CRI config under `config`).
fn cgroup_parent_of(info: &std::collections::HashMap<String, String>) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    let p = v.pointer("/config/linux/cgroup_parent")?.as_str()?;
    (!p.is_empty()).then(|| p.to_owned())
}

/// Stops and removes every pod sandbox (and with it its containers). A sandbox that vanished
/// meanwhile (NotFound) counts as removed.
pub fn remove_all_sandboxes(socket: &Path) -> Result<Removed> {
    block_on(|| async {
        let client = proto::Client::connect(socket)
            .await
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        let mut rt = client.runtime();
        let list = timed(
            "ListPodSandbox",
            rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
        )
        .await?;
        let mut errors = Vec::new();
        let mut removed = Removed::default();
        for sb in &list.items {
            let id = sb.id.clone();
            if let Ok(st) = timed(
                "PodSandboxStatus",
                rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: true,
                }),
            )
            .await
                && let Some(parent) = cgroup_parent_of(&st.info)
            {
                removed.cgroup_parents.push(parent);
            }
            // A container the agent was starting when it stopped is still in containerd's
            // "starting" state for a moment, and RemovePodSandbox refuses it until then: try
            // again for a while before calling it an error.
            let mut attempt = 0;
            let failed = loop {
                let stop = timed(
                    "StopPodSandbox",
                    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    }),
                )
                .await;
                let remove = timed(
                    "RemovePodSandbox",
                    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    }),
                )
                .await;
                let failed: Vec<String> = [stop.map(drop), remove.map(drop)]
                    .into_iter()
                    .filter_map(Result::err)
                    .filter(|e| {
                        e.downcast_ref::<tonic::Status>().map(tonic::Status::code)
                            != Some(tonic::Code::NotFound)
                    })
                    .map(|e| format!("sandbox {id}: {e:#}"))
                    .collect();
                attempt += 1;
                if failed.is_empty() || attempt >= REMOVE_ATTEMPTS {
                    break failed;
                }
                tokio::time::sleep(REMOVE_RETRY).await;
            };
            errors.extend(failed);
        }
        removed.sandboxes = list.items.len();
        if errors.is_empty() {
            Ok(removed)
        } else {
            Err(anyhow!(errors.join("; ")))
        }
    })
}
