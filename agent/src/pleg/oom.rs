//! OOM kills that end a container, in the runtime cache before the runtime reports them.
//!
//! When the kernel OOM-kills a container's main process (the init of its PID namespace, which
//! the eBPF record flags), the container is over: the kill ends every process of the
//! namespace. The runtime learns of the exit only when its shim reaps the process and the
//! next relist reads it, 10 ms on a quiet machine and over a second on a loaded one
//! (`cargo xtask bench eviction`). The overlay reports the container terminated from the
//! kernel's record at once (exit code 137, reason `OOMKilled`, finishedAt the record's time),
//! so the status and the restart policy move without waiting.
//!
//! The runtime's own report, when it comes, is read in full (the overlaid container is never
//! taken as already inspected) and cross-checked: what was reported (reason, finishedAt) stays
//! as reported, so the two never disagree in the status; a runtime that still runs the
//! container [`CONFIRM_WAIT`] after the kill wins, with a warning. A kill of any other process
//! is only an event: the container may well survive it.

use super::cache::CachedPod;
use crate::events::OomKill;
use crate::kuberuntime::state::{ContainerState, ContainerView, PodRuntimeState};
use crate::pod::PodRef;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, info, warn};

/// How long the runtime may go on reporting the container running after the kill.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(10);
/// Exit code of a process killed by SIGKILL, as runtimes report it.
pub const OOM_EXIT_CODE: i32 = 137;
/// The reason runtimes and the kubelet give an OOM-killed container.
pub const OOM_REASON: &str = "OOMKilled";
/// Entries kept at most (containers GC has not removed yet); the oldest go first.
const MAX_ENTRIES: usize = 4096;

/// One container the kernel killed.
#[derive(Debug, Clone)]
struct Entry {
    pod_uid: String,
    finished_at: SystemTime,
    noted: Instant,
    /// The runtime has reported the container exited.
    confirmed: bool,
}

/// The kills whose containers the cache reports terminated; owned by PLEG.
#[derive(Debug, Default)]
pub struct OomOverlay {
    entries: HashMap<String, Entry>,
}

impl OomOverlay {
    /// Takes note of a kill. Returns the pod to tell of a terminated container when the kill
    /// ends a container that `pods` still has running; `None` for any other kill.
    pub fn note(&mut self, kill: &OomKill, pods: &HashMap<String, CachedPod>) -> Option<PodRef> {
        if kill.ends_container != Some(true) {
            debug!(pod = ?kill.pod, container = ?kill.container, ends = ?kill.ends_container,
                "OOM kill not known to end its container: the runtime's report decides");
            return None;
        }
        let (pod, id) = (kill.pod.as_ref()?, kill.container_id.as_ref()?);
        let cached = pods.get(&pod.uid)?;
        let view = cached.state.containers.iter().find(|c| &c.id == id)?;
        if view.state == ContainerState::Exited || self.entries.contains_key(id) {
            // The runtime (or an earlier record) was first: nothing to add.
            return None;
        }
        if self.entries.len() >= MAX_ENTRIES
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.noted)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(
            id.clone(),
            Entry {
                pod_uid: pod.uid.clone(),
                finished_at: kill.killed_at(),
                noted: Instant::now(),
                confirmed: false,
            },
        );
        info!(pod = %pod, container = ?kill.container, id = %id,
            "OOM kill of the container's main process: reporting it terminated ({OOM_REASON})");
        Some(cached.pod.clone())
    }

    /// The pod's state with the containers still waiting for the runtime's word left out, so
    /// an inspection asks the runtime about them instead of reusing the overlay's report.
    pub fn for_inspection(&self, uid: &str, prev: &Arc<PodRuntimeState>) -> Arc<PodRuntimeState> {
        let waiting: HashSet<&str> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.confirmed && e.pod_uid == uid)
            .map(|(id, _)| id.as_str())
            .collect();
        if waiting.is_empty() {
            return prev.clone();
        }
        let mut s = PodRuntimeState::clone(prev);
        s.containers.retain(|c| !waiting.contains(c.id.as_str()));
        Arc::new(s)
    }

    /// Applies every kill to `pods` (after a relist, or at once after [`Self::note`]), and
    /// forgets the containers the runtime no longer has. Returns the pods whose overlay the
    /// runtime outlasted: they must be inspected again, the cache still holds the overlay.
    pub fn apply(&mut self, pods: &mut HashMap<String, CachedPod>) -> Vec<String> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let mut present: HashSet<String> = HashSet::new();
        let mut expired: Vec<String> = Vec::new();
        for (uid, cached) in pods.iter_mut() {
            let ids: Vec<&String> = self
                .entries
                .iter()
                .filter(|(_, e)| &e.pod_uid == uid)
                .map(|(id, _)| id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let state = Arc::make_mut(&mut cached.state);
            for c in state.containers.iter_mut() {
                let Some(e) = self.entries.get_mut(&c.id) else {
                    continue;
                };
                present.insert(c.id.clone());
                if !patch(c, e, &cached.pod) {
                    expired.push(c.id.clone());
                }
            }
        }
        let mut reinspect = Vec::new();
        for id in expired {
            if let Some(e) = self.entries.remove(&id) {
                reinspect.push(e.pod_uid);
            }
        }
        self.entries.retain(|id, _| present.contains(id));
        reinspect
    }
}

/// Reports one container as the kill left it; false when the runtime has outlasted
/// [`CONFIRM_WAIT`] and the entry should go.
fn patch(c: &mut ContainerView, e: &mut Entry, pod: &PodRef) -> bool {
    match c.state {
        ContainerState::Exited => {
            if !e.confirmed && c.reason != OOM_REASON && !c.reason.is_empty() {
                debug!(pod = %pod, id = %c.id, runtime = %c.reason,
                    "runtime gave another reason for an OOM-killed container; keeping {OOM_REASON}");
            }
            if !e.confirmed && c.exit_code != OOM_EXIT_CODE {
                warn!(pod = %pod, id = %c.id, exit_code = c.exit_code,
                    "runtime reports another exit code for an OOM-killed container");
            }
            e.confirmed = true;
            // What was reported stays: the record's time and reason.
            c.finished_at = Some(e.finished_at);
            c.reason = OOM_REASON.to_string();
            true
        }
        _ if e.noted.elapsed() > CONFIRM_WAIT => {
            warn!(pod = %pod, id = %c.id,
                "runtime still runs the container {CONFIRM_WAIT:?} after the kernel OOM-killed its main process; reporting the runtime's state");
            false
        }
        _ => {
            c.state = ContainerState::Exited;
            c.exit_code = OOM_EXIT_CODE;
            c.reason = OOM_REASON.to_string();
            c.message.clear();
            c.finished_at = Some(e.finished_at);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kuberuntime::state::SandboxView;

    fn pod() -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        }
    }

    fn view(id: &str, state: ContainerState) -> ContainerView {
        crate::kuberuntime::test_support::container_view(id, "c", state, "sb")
    }

    fn pods(state: ContainerState) -> HashMap<String, CachedPod> {
        let s = PodRuntimeState {
            sandboxes: vec![SandboxView {
                id: "sb".into(),
                attempt: 0,
                ready: true,
                created_at: 1,
            }],
            containers: vec![view("c1", state)],
            pod_ip: String::new(),
        };
        [(
            "u".to_string(),
            CachedPod {
                pod: pod(),
                state: Arc::new(s),
            },
        )]
        .into()
    }

    fn kill(ends: Option<bool>) -> OomKill {
        OomKill {
            pod: Some(pod()),
            container: Some("c".into()),
            container_id: Some("c1".into()),
            cgroup: None,
            tgid: Some(7),
            comm: None,
            kernel_ts_ns: None,
            seen_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            ends_container: ends,
        }
    }

    #[test]
    fn a_kill_of_the_main_process_terminates_the_container_until_the_runtime_confirms() {
        let mut o = OomOverlay::default();
        let mut p = pods(ContainerState::Running);
        assert_eq!(o.note(&kill(Some(true)), &p), Some(pod()));
        assert_eq!(o.note(&kill(Some(true)), &p), None, "noted once");
        o.apply(&mut p);
        let c = &p["u"].state.containers[0];
        assert_eq!(c.state, ContainerState::Exited);
        assert_eq!((c.exit_code, c.reason.as_str()), (137, "OOMKilled"));
        assert_eq!(c.finished_at, Some(kill(None).seen_at));
        // An inspection asks the runtime again about it.
        assert!(o.for_inspection("u", &p["u"].state).containers.is_empty());

        // The runtime still says running (a relist before the shim reaped it): still exited.
        let mut again = pods(ContainerState::Running);
        o.apply(&mut again);
        assert_eq!(again["u"].state.containers[0].state, ContainerState::Exited);

        // The runtime's report: its exit code, the reported reason and time.
        let mut confirmed = pods(ContainerState::Exited);
        {
            let c =
                &mut Arc::make_mut(&mut confirmed.get_mut("u").expect("pod u").state).containers[0];
            c.exit_code = 137;
            c.reason = "Error".into();
            c.finished_at = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(101));
        }
        o.apply(&mut confirmed);
        let c = &confirmed["u"].state.containers[0];
        assert_eq!((c.exit_code, c.reason.as_str()), (137, "OOMKilled"));
        assert_eq!(c.finished_at, Some(kill(None).seen_at));
        assert_eq!(
            o.for_inspection("u", &confirmed["u"].state)
                .containers
                .len(),
            1
        );

        // Gone from the runtime: forgotten.
        o.apply(&mut HashMap::new());
        assert!(o.entries.is_empty());
    }

    #[test]
    fn other_kills_and_known_exits_change_nothing() {
        let mut o = OomOverlay::default();
        let p = pods(ContainerState::Running);
        assert_eq!(o.note(&kill(Some(false)), &p), None, "a child process");
        assert_eq!(o.note(&kill(None), &p), None, "no eBPF record");
        let exited = pods(ContainerState::Exited);
        assert_eq!(
            o.note(&kill(Some(true)), &exited),
            None,
            "runtime was first"
        );
        assert!(o.entries.is_empty());
    }

    #[test]
    fn a_runtime_that_outlasts_the_wait_wins() {
        let mut o = OomOverlay::default();
        let mut p = pods(ContainerState::Running);
        o.note(&kill(Some(true)), &p);
        for e in o.entries.values_mut() {
            e.noted = Instant::now() - CONFIRM_WAIT - Duration::from_secs(1);
        }
        assert_eq!(o.apply(&mut p), ["u"]);
        assert_eq!(p["u"].state.containers[0].state, ContainerState::Running);
        assert!(o.entries.is_empty());
    }
}
