//! Periodic measurements that run while someone reads them: the cgroup details sweep and the
//! filesystem/block I/O pass feed only the Summary API and /metrics/cadvisor, so their tasks
//! keep their period while those are read (and for an idle time after the last read), then wait
//! for the next reader. cAdvisor keeps its housekeeping whether or not anybody asks, which is
//! most of an idle kubelet's CPU; eviction, status and /metrics/resource read the store instead.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How long a reader waits for a fresh pass before it takes what there is.
pub const READER_WAIT: Duration = Duration::from_secs(5);

/// How long passes go on after the last read: longer than Prometheus' default scrape interval
/// (1 min), so a scraper keeps them on schedule and always finds them fresh.
pub const IDLE_AFTER: Duration = Duration::from_secs(150);

/// The measuring task's side: when to run the next pass.
#[derive(Debug)]
pub struct Schedule {
    tick: Interval,
    /// `None` until the first read.
    last_read: Option<Instant>,
    idle_after: Duration,
    demand: Arc<Notify>,
}

/// The readers' side (cheap to clone): asks for passes.
#[derive(Debug, Clone)]
pub struct Demand {
    demand: Arc<Notify>,
}

/// A schedule of one pass every `every` while read within `idle_after`, and its demand
/// handle. Nothing runs before the first read: an agent nobody scrapes never pays for the
/// passes, and the first reader waits for one pass.
pub fn schedule(every: Duration, idle_after: Duration) -> (Schedule, Demand) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let demand = Arc::new(Notify::new());
    let s = Schedule {
        tick,
        last_read: None,
        idle_after,
        demand: demand.clone(),
    };
    (s, Demand { demand })
}

impl Schedule {
    /// Waits until the next pass is due: the next tick while read lately, otherwise the next
    /// read (then at once, and every period from there). `false` once `cancel` fires.
    pub async fn next(&mut self, cancel: &CancellationToken) -> bool {
        loop {
            let idle = self
                .last_read
                .is_none_or(|t| t.elapsed() >= self.idle_after);
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = self.demand.notified() => {
                    self.last_read = Some(Instant::now());
                    if idle {
                        self.tick.reset();
                        return true;
                    }
                }
                _ = self.tick.tick(), if !idle => return true,
            }
        }
    }
}

impl Demand {
    /// Records a read and, when `stale` says the latest pass in `rx` is too old (passes had
    /// stopped, or none was done yet), waits up to [`READER_WAIT`] for the next one.
    pub async fn read<T>(&self, rx: &watch::Receiver<T>, stale: impl FnOnce(&T) -> bool) {
        let mut rx = rx.clone();
        let stale = stale(&rx.borrow_and_update());
        self.demand.notify_one();
        if stale {
            let _ = tokio::time::timeout(READER_WAIT, rx.changed()).await;
        }
    }
}

/// Is a pass taken at `at` (none: never) older than `max_age`?
pub fn older_than(at: Option<std::time::SystemTime>, max_age: Duration) -> bool {
    at.and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age > max_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Passes follow the period while read, stop once idle, and a read wakes them at once.
    #[tokio::test(start_paused = true)]
    async fn passes_run_while_read_and_wake_on_a_read() {
        let cancel = CancellationToken::new();
        let (mut s, demand) = schedule(Duration::from_secs(10), Duration::from_secs(30));
        let (tx, rx) = watch::channel(0u32);
        let task = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                let mut passes = 0;
                while s.next(&cancel).await {
                    passes += 1;
                    tx.send_replace(passes);
                }
            }
        });
        // Nothing before the first read.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(*rx.borrow(), 0, "a pass nobody asked for");
        // A stale reader waits for the pass its read starts; then one per period until idle
        // (30 s after that read).
        demand.read(&rx, |_| true).await;
        assert_eq!(*rx.borrow(), 1);
        tokio::time::sleep(Duration::from_secs(65)).await;
        let on_schedule = *rx.borrow();
        assert!((4..=5).contains(&on_schedule), "{on_schedule} passes");
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(*rx.borrow(), on_schedule, "no pass while idle");
        // A read wakes them again.
        demand.read(&rx, |_| true).await;
        assert_eq!(*rx.borrow(), on_schedule + 1);
        cancel.cancel();
        let _ = task.await;
    }

    #[test]
    fn ages() {
        let now = std::time::SystemTime::now();
        assert!(older_than(None, Duration::from_secs(1)));
        assert!(!older_than(Some(now), Duration::from_secs(1)));
        assert!(older_than(
            Some(now - Duration::from_secs(30)),
            Duration::from_secs(20)
        ));
    }
}
