//! ConfigMaps, Secrets and service-account tokens for this node's pods, fetched from the API
//! server with the node's own credentials, so the node authorizer lets through only what a pod
//! bound here references: one namespaced GET per object, never a list.
//!
//! Strategy: the kubelet's default, `configMapAndSecretChangeDetectionStrategy: Watch`: every
//! object a registered pod references is watched ([`super::watch`]) and the cache holds what
//! the watch last said. Until a watch has answered (and outside a tokio runtime, in unit
//! tests) the TTL cache stands in (the kubelet's Cache strategy,
//! pkg/kubelet/util/manager/cache_based_manager.go): one GET when a pod is seen for the first
//! time or with a new resourceVersion (RegisterPod) or when the entry is older than
//! [`OBJECT_TTL`]. Entries and watches no registered pod references are dropped. Tokens follow pkg/kubelet/token/token_manager.go: reused until
//! 80% of their lifetime or 24 h have passed, then requested again; an old token is kept
//! while a refresh fails and it has not expired.

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How long a fetched object is used before it is fetched again (the kubelet's default
/// node TTL for the Cache strategy).
pub const OBJECT_TTL: Duration = Duration::from_secs(60);
/// Ceiling of one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A token is never used longer than this without a refresh (token_manager.go maxTTL).
const TOKEN_MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Which API object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Secret.
    Secret,
}

impl Kind {
    /// The resource name as the kubelet's managers spell it in NotFound errors.
    pub fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }
}

/// An object's identity in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjKey {
    /// Kind.
    pub kind: Kind,
    /// Namespace (the pod's).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{}",
            self.kind.resource(),
            self.namespace,
            self.name
        )
    }
}

/// A fetched object.
#[derive(Debug, Clone)]
pub enum Object {
    /// A ConfigMap.
    ConfigMap(Arc<ConfigMap>),
    /// A Secret.
    Secret(Arc<Secret>),
}

/// The last answer for an object: the object, `None` for NotFound, or the fetch error's text.
pub type Answer = Result<Option<Object>, String>;

/// Why an object or token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Standalone mode: there is no API server to ask.
    #[error("couldn't get {what}, no kubeClient defined")]
    NoClient {
        /// `configMap ns/x`, `secret ns/x` or `token for serviceaccount ns/x`.
        what: String,
    },
    /// The API call failed.
    #[error("get {key}: {source}")]
    Api {
        /// The object.
        key: ObjKey,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The API call did not answer in time.
    #[error("get {key}: no answer within {CALL_TIMEOUT:?}")]
    Timeout {
        /// The object.
        key: ObjKey,
    },
    /// TokenRequest failed.
    #[error("failed to fetch token for serviceaccount {namespace}/{name}: {reason}")]
    Token {
        /// Namespace.
        namespace: String,
        /// ServiceAccount name.
        name: String,
        /// Why.
        reason: String,
    },
}

struct Entry {
    at: Instant,
    answer: Answer,
    /// Written by the object's watch: current without a TTL.
    watched: bool,
}

/// What identifies one token (token_manager.go keyFunc).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// Namespace.
    pub namespace: String,
    /// ServiceAccount.
    pub service_account: String,
    /// Audience, empty for the API server's.
    pub audience: String,
    /// Requested lifetime.
    pub expiration_seconds: i64,
    /// Bound pod name.
    pub pod_name: String,
    /// Bound pod UID.
    pub pod_uid: String,
}

#[derive(Clone)]
struct Token {
    token: String,
    expires: SystemTime,
    /// This token's refresh instant, jittered once so pods do not refresh in lockstep.
    refresh_at: SystemTime,
}

#[derive(Default)]
struct State {
    objects: HashMap<ObjKey, Entry>,
    /// Pod UID -> (resourceVersion seen, objects it references).
    pods: HashMap<String, (Option<String>, HashSet<ObjKey>)>,
    tokens: HashMap<TokenKey, Token>,
    /// The running watch of each referenced object.
    watches: HashMap<ObjKey, tokio::task::AbortHandle>,
}

/// The shared cache; cheap to clone. Its lock is never held across an API call.
#[derive(Clone)]
pub struct Objects {
    client: Option<kube::Client>,
    ttl: Duration,
    state: Arc<Mutex<State>>,
}

impl Objects {
    /// A cache over `client`; `None` in standalone mode.
    pub fn new(client: Option<kube::Client>) -> Self {
        Self {
            client,
            ttl: OBJECT_TTL,
            state: Arc::default(),
        }
    }

    /// The same cache with another entry lifetime (the kubelet takes it from the Node's
    /// `node.alpha.kubernetes.io/ttl` annotation).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether there is an API server at all.
    pub fn has_client(&self) -> bool {
        self.client.is_some()
    }

    /// Records the objects a pod references; returns whether they must be fetched afresh (a
    /// new pod, or a new version of it), as the kubelet's RegisterPod.
    pub fn register(&self, uid: &str, version: Option<&str>, keys: HashSet<ObjKey>) -> bool {
        let mut st = self.lock();
        // Static pods have no resourceVersion: fetched afresh only when first seen.
        let fresh = match st.pods.get(uid) {
            None => true,
            Some((seen, _)) => version.is_some() && seen.as_deref() != version,
        };
        if let Some(client) = &self.client {
            for k in &keys {
                if !st.watches.contains_key(k)
                    && let Some(h) = super::watch::start(client.clone(), k.clone(), self.store())
                {
                    st.watches.insert(k.clone(), h);
                }
            }
        }
        st.pods
            .insert(uid.to_owned(), (version.map(str::to_owned), keys));
        fresh
    }

    /// What a watch calls with each answer: the entry, while the object is still watched.
    /// Holds the state weakly, so a watch never keeps a dropped cache alive.
    fn store(&self) -> super::watch::Store {
        let state = Arc::downgrade(&self.state);
        Arc::new(move |key: &ObjKey, answer: Answer| {
            let Some(state) = state.upgrade() else {
                return;
            };
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            if st.watches.contains_key(key) {
                st.objects.insert(
                    key.clone(),
                    Entry {
                        at: Instant::now(),
                        answer,
                        watched: true,
                    },
                );
            }
        })
    }

    /// Forgets a pod: its tokens and the objects no other pod references.
    pub fn unregister(&self, uid: &str) {
        let mut st = self.lock();
        st.pods.remove(uid);
        let used: HashSet<ObjKey> = st.pods.values().flat_map(|(_, k)| k.clone()).collect();
        st.objects.retain(|k, _| used.contains(k));
        st.watches.retain(|k, h| {
            let keep = used.contains(k);
            if !keep {
                h.abort();
            }
            keep
        });
        st.tokens.retain(|k, _| k.pod_uid != uid);
    }

    /// The cached answer for `key`, without asking the API server.
    pub fn cached(&self, key: &ObjKey) -> Option<Answer> {
        self.lock().objects.get(key).map(|e| e.answer.clone())
    }

    /// The object: what its watch last said; else from the cache when younger than the TTL
    /// and `!fresh`, else from the API server. A failed refresh falls back to the last good
    /// answer (the API server may be down; the pod keeps what it had), and is an error only
    /// without one.
    pub async fn get(&self, key: &ObjKey, fresh: bool) -> Result<Option<Object>, FetchError> {
        if let Some(e) = self.lock().objects.get(key)
            && e.watched
            && let Ok(v) = &e.answer
        {
            return Ok(v.clone());
        }
        if !fresh
            && let Some(e) = self.lock().objects.get(key)
            && e.at.elapsed() < self.ttl
            && let Ok(v) = &e.answer
        {
            return Ok(v.clone());
        }
        let Some(client) = self.client.clone() else {
            return Err(FetchError::NoClient {
                what: match key.kind {
                    Kind::ConfigMap => format!("configMap {}/{}", key.namespace, key.name),
                    Kind::Secret => format!("secret {}/{}", key.namespace, key.name),
                },
            });
        };
        let fetched = fetch(client, key).await;
        let mut st = self.lock();
        match fetched {
            Ok(v) => {
                // A watch that answered meanwhile knows better than this GET.
                if !st.objects.get(key).is_some_and(|e| e.watched) {
                    st.objects.insert(
                        key.clone(),
                        Entry {
                            at: Instant::now(),
                            answer: Ok(v.clone()),
                            watched: false,
                        },
                    );
                }
                Ok(v)
            }
            Err(e) => {
                let stale = st.objects.get(key).and_then(|e| e.answer.clone().ok());
                if let Some(v) = stale {
                    tracing::warn!(object = %key, error = %e, "refresh failed; using the last fetched version");
                    return Ok(v);
                }
                st.objects.insert(
                    key.clone(),
                    Entry {
                        at: Instant::now(),
                        answer: Err(e.to_string()),
                        watched: false,
                    },
                );
                Err(e)
            }
        }
    }

    /// A token for the pod's service account (TokenRequest bound to the pod), reused until
    /// its refresh time.
    pub async fn token(&self, key: &TokenKey) -> Result<String, FetchError> {
        let now = SystemTime::now();
        let cached = self.lock().tokens.get(key).cloned();
        if let Some(t) = cached.as_ref()
            && now < t.refresh_at
        {
            return Ok(t.token.clone());
        }
        let err = |reason: String| FetchError::Token {
            namespace: key.namespace.clone(),
            name: key.service_account.clone(),
            reason,
        };
        let Some(client) = self.client.clone() else {
            return Err(FetchError::NoClient {
                what: format!(
                    "token for serviceaccount {}/{}",
                    key.namespace, key.service_account
                ),
            });
        };
        match request_token(client, key).await {
            Ok(t) => {
                self.lock().tokens.insert(key.clone(), t.clone());
                Ok(t.token)
            }
            Err(reason) => match cached {
                Some(t) if now < t.expires => {
                    tracing::warn!(namespace = %key.namespace, service_account = %key.service_account, pod = %key.pod_name, error = %reason, "couldn't update token; the current one is still valid");
                    Ok(t.token)
                }
                Some(_) => Err(err(format!("token expired and refresh failed: {reason}"))),
                None => Err(err(reason)),
            },
        }
    }
}

async fn fetch(client: kube::Client, key: &ObjKey) -> Result<Option<Object>, FetchError> {
    let call = async {
        match key.kind {
            Kind::ConfigMap => kube::Api::<ConfigMap>::namespaced(client, &key.namespace)
                .get_opt(&key.name)
                .await
                .map(|o| o.map(|o| Object::ConfigMap(Arc::new(o)))),
            Kind::Secret => kube::Api::<Secret>::namespaced(client, &key.namespace)
                .get_opt(&key.name)
                .await
                .map(|o| o.map(|o| Object::Secret(Arc::new(o)))),
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(r) => r.map_err(|source| FetchError::Api {
            key: key.clone(),
            source,
        }),
        Err(_) => Err(FetchError::Timeout { key: key.clone() }),
    }
}

async fn request_token(client: kube::Client, key: &TokenKey) -> Result<Token, String> {
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: (!key.audience.is_empty()).then(|| vec![key.audience.clone()]),
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(key.pod_name.clone()),
                uid: Some(key.pod_uid.clone()),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let api = kube::Api::<ServiceAccount>::namespaced(client, &key.namespace);
    let pp = kube::api::PostParams::default();
    let call = api.create_token_request(&key.service_account, &pp, &tr);
    let answer = match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no answer within {CALL_TIMEOUT:?}")),
    };
    let status = answer
        .status
        .ok_or_else(|| "the API server returned no token".to_string())?;
    let (Some(token), Some(expires)) = (status.token, status.expiration_timestamp) else {
        return Err("the API server returned no token or no expiration".to_string());
    };
    let expires = SystemTime::from(expires.0);
    // The granted lifetime is what the answer's spec says (the server may shorten it).
    let secs = answer
        .spec
        .and_then(|s| s.expiration_seconds)
        .unwrap_or(key.expiration_seconds)
        .max(1) as u64;
    let issued = expires
        .checked_sub(Duration::from_secs(secs))
        .unwrap_or_else(SystemTime::now);
    let token = Token {
        token,
        expires,
        refresh_at: refresh_at(issued, expires, secs, jitter()),
    };
    Ok(token)
}

/// token_manager.go requiresRefresh: at 80% of the lifetime or 24 h after issue, whichever
/// comes first, less up to 10 s of jitter.
fn refresh_at(issued: SystemTime, expires: SystemTime, secs: u64, jitter: Duration) -> SystemTime {
    let by_age = issued + TOKEN_MAX_TTL;
    let by_ttl = expires
        .checked_sub(Duration::from_secs(secs * 20 / 100))
        .unwrap_or(issued);
    by_age.min(by_ttl).checked_sub(jitter).unwrap_or(issued)
}

/// Up to 10 s, so pods do not refresh their tokens in lockstep.
fn jitter() -> Duration {
    Duration::from_secs(10).mul_f64(crate::wait::unit_random())
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Objects")
            .field("client", &self.client.is_some())
            .field("objects", &st.objects.len())
            .field("pods", &st.pods.len())
            .field("tokens", &st.tokens.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_refresh_at_eighty_percent_or_a_day() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = 3600;
        assert_eq!(
            refresh_at(t0, t0 + Duration::from_secs(hour), hour, Duration::ZERO),
            t0 + Duration::from_secs(hour * 8 / 10)
        );
        let year = 365 * 24 * hour;
        assert_eq!(
            refresh_at(t0, t0 + Duration::from_secs(year), year, Duration::ZERO),
            t0 + TOKEN_MAX_TTL,
            "long-lived tokens are refreshed daily"
        );
        assert_eq!(
            refresh_at(
                t0,
                t0 + Duration::from_secs(hour),
                hour,
                Duration::from_secs(5)
            ),
            t0 + Duration::from_secs(hour * 8 / 10 - 5)
        );
    }

    #[test]
    fn registering_decides_freshness_and_unregistering_drops_unused_objects() {
        let o = Objects::new(None);
        let key = |n: &str| ObjKey {
            kind: Kind::ConfigMap,
            namespace: "ns".into(),
            name: n.into(),
        };
        assert!(o.register("u1", Some("1"), HashSet::from([key("a")])));
        assert!(!o.register("u1", Some("1"), HashSet::from([key("a")])));
        assert!(o.register("u1", Some("2"), HashSet::from([key("a")])));
        assert!(o.register("static", None, HashSet::new()));
        assert!(!o.register("static", None, HashSet::new()));
        for n in ["a", "b"] {
            o.lock().objects.insert(
                key(n),
                Entry {
                    at: Instant::now(),
                    answer: Ok(None),
                    watched: false,
                },
            );
        }
        o.register("u2", Some("1"), HashSet::from([key("b")]));
        o.unregister("u1");
        assert!(o.cached(&key("a")).is_none());
        assert!(o.cached(&key("b")).is_some());
    }
}
