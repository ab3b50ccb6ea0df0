//! The runtime's health as the kubelet's runtimeState tracks it (kubelet.go updateRuntimeUp):
//! a CRI `Status` call every few seconds, published in a `watch`, so /healthz and (next) the
//! node's Ready condition read the latest answer without calling the runtime themselves or
//! waiting on one another.

use super::Cri;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the runtime is asked (the kubelet checks every 5 s).
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The last answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHealth {
    /// When the runtime was asked.
    pub checked_at: Instant,
    /// `Ok` when it answered and reported RuntimeReady; the reason otherwise.
    pub runtime: Result<(), String>,
    /// `Ok` when it reported NetworkReady (or did not say); the reason otherwise.
    pub network: Result<(), String>,
}

/// Starts the checker; the receiver holds `None` until the first answer.
pub fn start(
    cri: Cri,
    tasks: &mut tokio::task::JoinSet<()>,
    cancel: CancellationToken,
) -> watch::Receiver<Option<RuntimeHealth>> {
    let (tx, rx) = watch::channel::<Option<RuntimeHealth>>(None);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let h = check(&cri).await;
            let was = tx.borrow().as_ref().map(|o| o.runtime.is_ok());
            match (&h.runtime, was) {
                (Err(e), Some(true) | None) => warn!(reason = %e, "container runtime not ready"),
                (Ok(()), Some(false)) => info!("container runtime ready again"),
                _ => {}
            }
            tx.send_replace(Some(h));
        }
    });
    rx
}

async fn check(cri: &Cri) -> RuntimeHealth {
    let checked_at = Instant::now();
    match cri.status().await {
        Ok(s) => {
            let cond = |name: &str| {
                s.status
                    .as_ref()
                    .and_then(|st| st.conditions.iter().find(|c| c.r#type == name))
                    .map_or(Ok(()), |c| {
                        if c.status {
                            Ok(())
                        } else {
                            Err(format!("{name}=false: {} {}", c.reason, c.message)
                                .trim_end()
                                .to_owned())
                        }
                    })
            };
            RuntimeHealth {
                checked_at,
                runtime: cond("RuntimeReady"),
                network: cond("NetworkReady"),
            }
        }
        Err(e) => {
            let why = format!("container runtime unreachable: {e}");
            RuntimeHealth {
                checked_at,
                runtime: Err(why.clone()),
                network: Err(why),
            }
        }
    }
}
