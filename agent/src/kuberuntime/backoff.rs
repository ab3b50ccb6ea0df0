//! Restart and image-pull back-off: a port of client-go util/flowcontrol/backoff.go as the
//! kubelet uses it (kuberuntime_manager.go doBackOff, images/image_manager.go).
//!
//! Delay starts at 10 s and doubles up to 5 min; an entry resets when the event it is asked
//! about comes more than twice the maximum (10 min) after its last update, i.e. a container that
//! ran for 10 minutes since its last restart starts over at 10 s.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// The kubelet's initial crash-loop back-off.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The kubelet's maximum container back-off (MaxContainerBackOff).
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: SystemTime,
}

/// Per-key exponential back-off.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

impl Backoff {
    /// A back-off with the given initial delay and cap (initial is capped too, as in the kubelet).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial: initial.min(max),
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, event: SystemTime, last_update: SystemTime) -> bool {
        since(event, last_update) > self.max * 2
    }

    /// The current delay for `key`, if it has one.
    pub fn get(&self, key: &str) -> Option<Duration> {
        self.entries.get(key).map(|e| e.backoff)
    }

    /// IsInBackOffSince: how much longer to wait after `event` (e.g. a container's finish time);
    /// `None` when not backing off.
    pub fn remaining_since(
        &self,
        key: &str,
        event: SystemTime,
        now: SystemTime,
    ) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(now, e.last_update) {
            return None;
        }
        let waited = since(now, event);
        (waited < e.backoff).then(|| e.backoff - waited)
    }

    /// IsInBackOffSinceUpdate: how much longer to wait counted from the last `next` call.
    pub fn remaining_since_update(&self, key: &str, now: SystemTime) -> Option<Duration> {
        let e = self.entries.get(key)?;
        let waited = since(now, e.last_update);
        (waited < e.backoff).then(|| e.backoff - waited)
    }

    /// Next: records an attempt at `now` for an event at `event`, doubling the delay (or
    /// starting over when the entry expired).
    pub fn next(&mut self, key: &str, event: SystemTime, now: SystemTime) {
        let fresh = match self.entries.get(key) {
            None => true,
            Some(e) => self.expired(event, e.last_update),
        };
        let backoff = if fresh {
            self.initial
        } else {
            self.entries
                .get(key)
                .map_or(self.initial, |e| (e.backoff * 2).min(self.max))
        };
        self.entries.insert(
            key.to_string(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Forgets `key` (e.g. after a successful pull).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    #[test]
    fn crash_loop_schedule_doubles_to_the_cap() {
        let mut b = Backoff::new(INITIAL, MAX);
        // First exit: no entry, restart at once, delay becomes 10 s.
        assert_eq!(b.remaining_since("c", t(0), t(0)), None);
        b.next("c", t(0), t(0));
        let mut now = 0;
        let mut seen = Vec::new();
        for _ in 0..7 {
            // The container crashes right after each restart.
            let finished = now + 1;
            let wait = b
                .remaining_since("c", t(finished), t(finished))
                .expect("backing off");
            seen.push(wait.as_secs());
            now = finished + wait.as_secs();
            assert_eq!(b.remaining_since("c", t(finished), t(now)), None);
            b.next("c", t(finished), t(now));
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn resets_after_ten_quiet_minutes() {
        let mut b = Backoff::new(INITIAL, MAX);
        b.next("c", t(0), t(0));
        b.next("c", t(5), t(15));
        assert_eq!(b.get("c"), Some(Duration::from_secs(20)));
        // The container then ran for more than 2 x 5 min before exiting.
        let exit = t(15 + 601);
        assert_eq!(b.remaining_since("c", exit, exit), None);
        b.next("c", exit, exit);
        assert_eq!(b.get("c"), Some(INITIAL));
    }

    #[test]
    fn cap_below_initial_lowers_initial() {
        let b = Backoff::new(INITIAL, Duration::from_secs(5));
        let mut b2 = b.clone();
        b2.next("k", t(0), t(0));
        assert_eq!(b2.get("k"), Some(Duration::from_secs(5)));
    }
}
