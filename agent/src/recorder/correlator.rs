//! The event correlator of client-go's broadcaster (k8s.io/client-go/tools/record,
//! events_cache.go), as plain state and functions: no clock of its own, so every rule is
//! unit-tested with made-up times.
//!
//! Each event passes three steps, in client-go's order:
//! 1. aggregation: more than [`AGGREGATE_MAX_EVENTS`] distinct messages with the same source,
//!    object, type and reason within [`AGGREGATE_INTERVAL`] become one event whose message is
//!    prefixed `(combined from similar events): `;
//! 2. dedup: an event seen before (same source, object with field path, type, reason and
//!    message) is not created again; its first occurrence is patched with `count + 1`, the new
//!    `lastTimestamp` and the message;
//! 3. spam filter: a token bucket per source + object ([`SPAM_BURST`] events, refilled one per
//!    [`SPAM_REFILL`]) drops what exceeds it, so an always-failing pod cannot flood the server.
//!
//! All three remember at most [`LRU_ENTRIES`] keys each (client-go's maxLruCacheEntries).

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

/// Keys each cache keeps (maxLruCacheEntries).
pub const LRU_ENTRIES: usize = 4096;
/// Distinct messages for one reason before they are combined (defaultAggregateMaxEvents).
pub const AGGREGATE_MAX_EVENTS: usize = 10;
/// Window of the aggregation count (defaultAggregateIntervalInSeconds).
pub const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);
/// Events a source may send about one object at once (defaultSpamBurst).
pub const SPAM_BURST: f64 = 25.0;
/// One more event per object after the burst, every this long (defaultSpamQPS = 1/300).
pub const SPAM_REFILL: Duration = Duration::from_secs(300);
/// Prefix of a combined event's message (EventAggregatorByReasonMessageFunc).
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// What to do with an event after correlation.
#[derive(Debug, Clone, PartialEq)]
pub enum Correlated {
    /// Over the spam budget: not sent.
    Skip,
    /// A first occurrence: create it.
    Create {
        /// The event to create.
        event: Box<Event>,
        /// The dedup key, for [`Correlator::update_state`].
        key: String,
    },
    /// A repeat: patch the first occurrence (`event.metadata.name`); if it is gone, create
    /// `event` instead.
    Patch {
        /// The full event (name of the first occurrence, count already raised).
        event: Box<Event>,
        /// The strategic-merge patch: count, lastTimestamp, message.
        patch: serde_json::Value,
        /// The dedup key, for [`Correlator::update_state`].
        key: String,
    },
}

/// A small least-recently-used map. Eviction scans for the oldest entry: that happens only
/// once the map is full, and a scan of 4096 entries is a few microseconds, cheaper than the
/// bookkeeping of a linked list for the event rates a node has.
#[derive(Debug)]
struct Lru<V> {
    map: HashMap<String, (V, u64)>,
    tick: u64,
}

impl<V> Lru<V> {
    fn new() -> Self {
        Self {
            map: HashMap::new(),
            tick: 0,
        }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(key).map(|(v, t)| {
            *t = tick;
            v
        })
    }

    fn insert(&mut self, key: String, v: V) {
        self.tick += 1;
        self.map.insert(key, (v, self.tick));
        if self.map.len() > LRU_ENTRIES
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&oldest);
        }
    }
}

/// Token bucket of one source + object.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: SystemTime,
}

/// Distinct messages seen for one aggregate key.
#[derive(Debug, Default)]
struct Aggregate {
    messages: HashSet<String>,
    last: Option<SystemTime>,
}

/// The first occurrence of an event, as last written (eventLog).
#[derive(Debug, Clone)]
struct Seen {
    count: i32,
    first: Option<Time>,
    name: String,
    resource_version: Option<String>,
}

/// Aggregator, dedup logger and spam filter; owned by the recorder's writer task.
#[derive(Debug)]
pub struct Correlator {
    spam: Lru<Bucket>,
    aggregates: Lru<Aggregate>,
    seen: Lru<Seen>,
}

impl Default for Correlator {
    fn default() -> Self {
        Self::new()
    }
}

fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("")
}

/// getSpamKey: source and object, without the field path, type, reason or message.
fn spam_key(e: &Event) -> String {
    let (src, o) = (e.source.clone().unwrap_or_default(), &e.involved_object);
    [
        s(&src.component),
        s(&src.host),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.api_version),
    ]
    .join("")
}

/// getEventKey: source, object with field path, type, reason and message.
fn event_key(e: &Event) -> String {
    let (src, o) = (e.source.clone().unwrap_or_default(), &e.involved_object);
    [
        s(&src.component),
        s(&src.host),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.field_path),
        s(&o.uid),
        s(&o.api_version),
        s(&e.type_),
        s(&e.reason),
        s(&e.message),
    ]
    .join("")
}

/// EventAggregatorByReasonFunc: (aggregate key, local key = the message).
fn aggregate_key(e: &Event) -> String {
    let (src, o) = (e.source.clone().unwrap_or_default(), &e.involved_object);
    [
        s(&src.component),
        s(&src.host),
        s(&o.kind),
        s(&o.namespace),
        s(&o.name),
        s(&o.uid),
        s(&o.api_version),
        s(&e.type_),
        s(&e.reason),
        s(&e.reporting_component),
        s(&e.reporting_instance),
    ]
    .join("")
}

/// `<object>.<unix nanos in hex>` (GenerateEventName); a name that would be too long for a
/// DNS subdomain is cut, where client-go would use a random UUID.
pub fn event_name(object: &str, at: SystemTime) -> String {
    let nanos = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let suffix = format!(".{nanos:x}");
    let keep = 253usize.saturating_sub(suffix.len()).min(object.len());
    let mut cut = keep;
    while !object.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", object[..cut].trim_end_matches(['.', '-']))
}

/// `at` as an API timestamp (seconds, as metav1.Time serialises).
pub fn time(at: SystemTime) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::try_from(at).ok().map(Time)
}

impl Correlator {
    /// Empty caches.
    pub fn new() -> Self {
        Self {
            spam: Lru::new(),
            aggregates: Lru::new(),
            seen: Lru::new(),
        }
    }

    /// EventCorrelate: aggregate, dedup, then the spam filter, with `now` as the clock.
    pub fn correlate(&mut self, event: Event, now: SystemTime) -> Correlated {
        let (event, key) = self.aggregate(event, now);
        let (event, patch) = self.observe(event, &key);
        if self.over_budget(&event, now) {
            return Correlated::Skip;
        }
        let event = Box::new(event);
        match patch {
            Some(patch) => Correlated::Patch { event, patch, key },
            None => Correlated::Create { event, key },
        }
    }

    /// UpdateState: remembers what the server returned (name, count, resourceVersion) for the
    /// next repeat of `key`.
    pub fn update_state(&mut self, key: String, written: &Event) {
        self.seen.insert(
            key,
            Seen {
                count: written.count.unwrap_or(1),
                first: written.first_timestamp.clone(),
                name: written.metadata.name.clone().unwrap_or_default(),
                resource_version: written.metadata.resource_version.clone(),
            },
        );
    }

    /// EventAggregate: the event or its combined form, and the key it is counted under.
    fn aggregate(&mut self, event: Event, now: SystemTime) -> (Event, String) {
        let akey = aggregate_key(&event);
        let message = event.message.clone().unwrap_or_default();
        let mut rec = self.aggregates.get_mut(&akey).map(std::mem::take);
        let fresh = rec.as_ref().is_none_or(|r| {
            r.last.is_none_or(|last| {
                now.duration_since(last).unwrap_or_default() > AGGREGATE_INTERVAL
            })
        });
        if fresh {
            rec = Some(Aggregate::default());
        }
        let mut rec = rec.unwrap_or_default();
        rec.messages.insert(message.clone());
        rec.last = Some(now);
        if rec.messages.len() < AGGREGATE_MAX_EVENTS {
            self.aggregates.insert(akey, rec);
            return (event.clone(), event_key(&event));
        }
        // Keep the set at its maximum, as client-go's PopAny.
        if let Some(any) = rec.messages.iter().next().cloned() {
            rec.messages.remove(&any);
        }
        self.aggregates.insert(akey.clone(), rec);
        let combined = Event {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(event_name(s(&event.involved_object.name), now)),
                namespace: event.metadata.namespace.clone(),
                ..Default::default()
            },
            count: Some(1),
            first_timestamp: time(now),
            last_timestamp: time(now),
            message: Some(format!("{COMBINED_PREFIX}{message}")),
            involved_object: event.involved_object,
            type_: event.type_,
            reason: event.reason,
            source: event.source,
            reporting_component: event.reporting_component,
            reporting_instance: event.reporting_instance,
            ..Default::default()
        };
        (combined, akey)
    }

    /// eventObserve: a repeat takes the first occurrence's name and first timestamp, one more
    /// count, and a patch of what changes.
    fn observe(&mut self, mut event: Event, key: &str) -> (Event, Option<serde_json::Value>) {
        let patch = match self.seen.get_mut(key).filter(|s| s.count > 0) {
            Some(prev) => {
                event.metadata.name = Some(prev.name.clone());
                event.metadata.resource_version = prev.resource_version.clone();
                event.first_timestamp = prev.first.clone();
                event.count = Some(prev.count + 1);
                Some(serde_json::json!({
                    "count": event.count,
                    "lastTimestamp": event.last_timestamp,
                    "message": event.message,
                }))
            }
            None => None,
        };
        self.seen.insert(
            key.to_owned(),
            Seen {
                count: event.count.unwrap_or(1),
                first: event.first_timestamp.clone(),
                name: event.metadata.name.clone().unwrap_or_default(),
                resource_version: event.metadata.resource_version.clone(),
            },
        );
        (event, patch)
    }

    /// EventSourceObjectSpamFilter: true when the source + object has no token left.
    fn over_budget(&mut self, event: &Event, now: SystemTime) -> bool {
        let key = spam_key(event);
        let mut b = self.spam.get_mut(&key).copied().unwrap_or(Bucket {
            tokens: SPAM_BURST,
            at: now,
        });
        let elapsed = now.duration_since(b.at).unwrap_or_default();
        b.tokens = (b.tokens + elapsed.as_secs_f64() / SPAM_REFILL.as_secs_f64()).min(SPAM_BURST);
        b.at = now;
        let over = b.tokens < 1.0;
        if !over {
            b.tokens -= 1.0;
        }
        self.spam.insert(key, b);
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EventSource, ObjectReference};

    fn ev(object: &str, reason: &str, message: &str, at: SystemTime) -> Event {
        Event {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(event_name(object, at)),
                namespace: Some("default".into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some(object.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{object}")),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message.into()),
            type_: Some("Normal".into()),
            count: Some(1),
            first_timestamp: time(at),
            last_timestamp: time(at),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some("n1".into()),
            }),
            ..Default::default()
        }
    }

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    /// Plays the server: the created event comes back with a resourceVersion.
    fn written(c: &mut Correlator, r: &Correlated) {
        if let Correlated::Create { event, key } | Correlated::Patch { event, key, .. } = r {
            let mut e = (**event).clone();
            e.metadata.resource_version = Some("7".into());
            c.update_state(key.clone(), &e);
        }
    }

    #[test]
    fn a_repeated_event_patches_the_first_one_with_a_higher_count() {
        let mut c = Correlator::new();
        let first = c.correlate(ev("p", "BackOff", "Back-off restarting", t(0)), t(0));
        let Correlated::Create { event, .. } = &first else {
            panic!("first occurrence must be created: {first:?}")
        };
        let name = event.metadata.name.clone();
        written(&mut c, &first);
        for n in 2..=4 {
            let r = c.correlate(ev("p", "BackOff", "Back-off restarting", t(n)), t(n));
            let Correlated::Patch { event, patch, .. } = &r else {
                panic!("repeat {n} must be a patch: {r:?}")
            };
            assert_eq!(event.metadata.name, name, "the first occurrence is patched");
            assert_eq!(event.count, Some(n as i32));
            assert_eq!(event.first_timestamp, time(t(0)));
            assert_eq!(event.metadata.resource_version.as_deref(), Some("7"));
            assert_eq!(patch["count"], n);
            assert_eq!(patch["message"], "Back-off restarting");
            assert!(patch["lastTimestamp"].is_string());
            written(&mut c, &r);
        }
    }

    #[test]
    fn other_messages_objects_and_field_paths_are_separate_events() {
        let mut c = Correlator::new();
        let a = ev("p", "Pulled", "image a", t(0));
        let mut b = a.clone();
        b.involved_object.field_path = Some("spec.containers{b}".into());
        for e in [
            a.clone(),
            ev("p", "Pulled", "image b", t(0)),
            ev("q", "Pulled", "image a", t(0)),
            b,
        ] {
            let r = c.correlate(e, t(0));
            assert!(matches!(r, Correlated::Create { .. }), "{r:?}");
        }
    }

    #[test]
    fn ten_distinct_messages_for_one_reason_are_combined() {
        let mut c = Correlator::new();
        for i in 0..9 {
            let r = c.correlate(ev("p", "Failed", &format!("error {i}"), t(i)), t(i));
            assert!(matches!(r, Correlated::Create { .. }), "message {i}: {r:?}");
        }
        let r = c.correlate(ev("p", "Failed", "error 9", t(9)), t(9));
        let Correlated::Create { event, .. } = &r else {
            panic!("the 10th distinct message is a combined event: {r:?}")
        };
        assert_eq!(
            event.message.as_deref(),
            Some("(combined from similar events): error 9")
        );
        written(&mut c, &r);
        // More distinct messages count on the combined event instead of making new ones.
        let r = c.correlate(ev("p", "Failed", "error 10", t(10)), t(10));
        let Correlated::Patch { event, patch, .. } = &r else {
            panic!("later messages patch the combined event: {r:?}")
        };
        assert_eq!(event.count, Some(2));
        assert_eq!(patch["message"], "(combined from similar events): error 10");
        // Another reason is not affected.
        let r = c.correlate(ev("p", "Pulled", "x", t(10)), t(10));
        assert!(matches!(r, Correlated::Create { .. }));
    }

    #[test]
    fn aggregation_restarts_after_ten_quiet_minutes() {
        let mut c = Correlator::new();
        for i in 0..9 {
            c.correlate(ev("p", "Failed", &format!("error {i}"), t(0)), t(0));
        }
        let later = t(601);
        let r = c.correlate(ev("p", "Failed", "error 9", later), later);
        let Correlated::Create { event, .. } = r else {
            panic!("a fresh window does not combine")
        };
        assert_eq!(event.message.as_deref(), Some("error 9"));
    }

    #[test]
    fn spam_filter_allows_a_burst_of_25_per_object_then_one_per_five_minutes() {
        let mut c = Correlator::new();
        let sent = |c: &mut Correlator, obj: &str, i: u64, at: SystemTime| {
            // Distinct reasons so aggregation and dedup do not change the count.
            !matches!(
                c.correlate(ev(obj, &format!("R{i}"), "m", at), at),
                Correlated::Skip
            )
        };
        let passed = (0..40).filter(|i| sent(&mut c, "p", *i, t(0))).count();
        assert_eq!(passed, 25);
        assert!(
            sent(&mut c, "q", 100, t(0)),
            "another object has its own budget"
        );
        assert!(
            !sent(&mut c, "p", 101, t(299)),
            "not refilled before 5 minutes"
        );
        assert!(
            sent(&mut c, "p", 102, t(300 + 299)),
            "one token after 5 minutes"
        );
        assert!(!sent(&mut c, "p", 103, t(300 + 299)));
    }

    #[test]
    fn repeats_are_filtered_too_once_the_budget_is_spent() {
        let mut c = Correlator::new();
        let mut kept = 0;
        for i in 0..30 {
            let r = c.correlate(ev("p", "BackOff", "same", t(i)), t(i));
            if !matches!(r, Correlated::Skip) {
                kept += 1;
                written(&mut c, &r);
            }
        }
        assert_eq!(kept, 25);
    }

    #[test]
    fn event_names_are_object_dot_hex_nanos() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(0x1234_abcd);
        assert_eq!(event_name("web", at), "web.1234abcd");
        let long = "a".repeat(300);
        assert!(event_name(&long, at).len() <= 253);
    }

    #[test]
    fn the_cache_forgets_the_least_recently_used_key() {
        let mut l = Lru::new();
        for i in 0..LRU_ENTRIES {
            l.insert(format!("k{i}"), i);
        }
        assert!(l.get_mut("k0").is_some());
        l.insert("new".into(), 0);
        assert!(l.get_mut("k0").is_some(), "recently used stays");
        assert!(l.get_mut("k1").is_none(), "oldest goes");
        assert_eq!(l.map.len(), LRU_ENTRIES);
    }
}
