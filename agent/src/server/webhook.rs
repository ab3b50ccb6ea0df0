//! Delegated authentication and authorization of the secure port: TokenReview and
//! SubjectAccessReview sent to the API server of `--kubeconfig`, each answer cached as the
//! kubelet caches it (k8s.io/apiserver authenticatorfactory/delegating.go,
//! authentication/token/cache, plugin/pkg/authorizer/webhook).
//!
//! [`Reviewer`] is built once at start-up; its kube client is loaded on first use (loading is
//! async in kube, the server's start is not) and the start-up code triggers that use at once, so a
//! bad kubeconfig is reported when the agent starts. Without a client every review fails, and
//! the caller fails closed. Used only by `server::auth`.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Upper bound of one review call: a hung API server must not hold requests forever.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries per cache. The kubelet's SAR cache is an 8192-entry LRU; a bound matters most for
/// tokens, where every caller-chosen token would otherwise add an entry.
const CACHE_ENTRIES: usize = 4096;
/// Group every authenticated user gets (k8s.io/apiserver user.AllAuthenticated).
pub const ALL_AUTHENTICATED: &str = "system:authenticated";
/// Group of the anonymous user (user.AllUnauthenticated).
pub const ALL_UNAUTHENTICATED: &str = "system:unauthenticated";
/// Name of the anonymous user (user.Anonymous).
pub const ANONYMOUS: &str = "system:anonymous";

/// Failures of a review; the caller turns each into 401 (tokens) or 500 (authorization).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path} for the authentication/authorization webhook")]
    Kubeconfig {
        /// The --kubeconfig file.
        path: PathBuf,
        /// What kube said.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The API client could not be built from the kubeconfig (TLS material, URL).
    #[error("API client from kubeconfig {path} for the authentication/authorization webhook")]
    Client {
        /// The --kubeconfig file.
        path: PathBuf,
        /// What kube said.
        #[source]
        source: kube::Error,
    },
    /// No client: loading the kubeconfig failed earlier (logged then).
    #[error("no API client (kubeconfig {path} could not be loaded)")]
    NoClient {
        /// The --kubeconfig file.
        path: PathBuf,
    },
    /// The API server could not be asked.
    #[error("{review} request to the API server")]
    Request {
        /// TokenReview or SubjectAccessReview.
        review: &'static str,
        /// What kube said.
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error("{review} request to the API server timed out after {after:?}")]
    Timeout {
        /// TokenReview or SubjectAccessReview.
        review: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The review came back with an error in its status.
    #[error("{review} status error: {message}")]
    Status {
        /// TokenReview or SubjectAccessReview.
        review: &'static str,
        /// status.error (or evaluationError) as the API server wrote it.
        message: String,
    },
}

impl WebhookError {
    /// The message with its causes, for one log line.
    pub fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }

    /// Whether this is the already-reported "no client" case, not worth a warning per request.
    pub fn is_no_client(&self) -> bool {
        matches!(self, Self::NoClient { .. })
    }
}

/// Cache lifetimes (authentication.webhook.cacheTTL, authorization.webhook.cacheAuthorizedTTL
/// and cacheUnauthorizedTTL); zero disables that cache, as in the kubelet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheTtls {
    /// TokenReview answers, authenticated or not.
    pub token: Duration,
    /// SubjectAccessReview answers that allowed.
    pub allowed: Duration,
    /// SubjectAccessReview answers that did not allow.
    pub denied: Duration,
}

/// An authenticated identity as reviews carry it (k8s.io/apiserver user.Info).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// UID, if the authenticator gave one.
    pub uid: Option<String>,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The user with `system:authenticated` added, as the kubelet's authenticator chain does for
    /// every non-anonymous user (group.AuthenticatedGroupAdder).
    pub fn authenticated(mut self) -> Self {
        if !self
            .groups
            .iter()
            .any(|g| g == ALL_AUTHENTICATED || g == ALL_UNAUTHENTICATED)
        {
            self.groups.push(ALL_AUTHENTICATED.to_string());
        }
        self
    }

    /// system:anonymous in system:unauthenticated.
    pub fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_string(),
            groups: vec![ALL_UNAUTHENTICATED.to_string()],
            ..Default::default()
        }
    }
}

/// The SubjectAccessReview spec the kubelet sends for `verb` on nodes/`subresource` of `node`
/// (kubelet server/auth.go GetRequestAttributes; webhook.go Authorize): core group (omitted),
/// version v1, no namespace.
pub fn access_review_spec(
    user: &UserInfo,
    verb: &str,
    subresource: &str,
    node: &str,
) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: Some(user.name.clone()),
        uid: user.uid.clone(),
        groups: Some(user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        resource_attributes: Some(ResourceAttributes {
            // Go's omitempty: an unmapped method's empty verb is absent, not "".
            verb: (!verb.is_empty()).then(|| verb.to_string()),
            version: Some("v1".into()),
            resource: Some("nodes".into()),
            subresource: Some(subresource.to_string()),
            name: Some(node.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A salted SHA-256 of a bearer token: the cache key, so that no token is kept in memory (the
/// kubelet keys its token cache with an HMAC under a random key for the same reason).
pub fn token_key(salt: &[u8; 16], token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(token.as_bytes());
    h.finalize().into()
}

/// 16 random bytes from the standard library's per-process random SipHash keys, which it seeds
/// from the OS; enough for a salt, and no new dependency.
fn random_salt() -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let v = std::collections::hash_map::RandomState::new().hash_one(i);
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// Answers kept until their own deadline, at most [`CACHE_ENTRIES`] of them. The clock is
/// passed in so that tests can move it.
#[derive(Debug)]
struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V)>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    fn new(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            cap,
        }
    }

    fn get(&mut self, key: &K, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some((until, v)) if now < *until => Some(v.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        if ttl.is_zero() || self.cap == 0 {
            return;
        }
        if self.entries.len() >= self.cap && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (until, _)| now < *until);
            if self.entries.len() >= self.cap {
                // Still full of live answers: drop the one that would expire first.
                if let Some(k) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(k, _)| k.clone())
                {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, (now + ttl, value));
    }
}

/// What a TokenReview said: the user, or "not authenticated" (cached either way).
pub type TokenAnswer = Option<UserInfo>;

/// Sends TokenReviews and SubjectAccessReviews for one node, with the kubelet's caches.
pub struct Reviewer {
    kubeconfig: PathBuf,
    node_name: String,
    ttls: CacheTtls,
    client: tokio::sync::OnceCell<Option<kube::Client>>,
    salt: [u8; 16],
    tokens: Mutex<TtlCache<[u8; 32], TokenAnswer>>,
    decisions: Mutex<TtlCache<String, bool>>,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer")
            .field("kubeconfig", &self.kubeconfig)
            .field("node_name", &self.node_name)
            .field("ttls", &self.ttls)
            .finish_non_exhaustive()
    }
}

impl Reviewer {
    /// A reviewer for `node_name` talking to the API server of `kubeconfig` (not read yet).
    pub fn new(kubeconfig: PathBuf, node_name: String, ttls: CacheTtls) -> Self {
        Self {
            kubeconfig,
            node_name,
            ttls,
            client: tokio::sync::OnceCell::new(),
            salt: random_salt(),
            tokens: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
            decisions: Mutex::new(TtlCache::new(CACHE_ENTRIES)),
        }
    }

    /// The --kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Loads the kube client if not done yet; `Err` (once, on the load that failed) names the
    /// file. Later calls after a failure return `Ok(false)`.
    pub async fn load(&self) -> Result<bool, WebhookError> {
        let mut failure = None;
        let slot = &mut failure;
        let client = self
            .client
            .get_or_init(|| async move {
                match build_client(&self.kubeconfig).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        *slot = Some(e);
                        None
                    }
                }
            })
            .await;
        match failure {
            Some(e) => Err(e),
            None => Ok(client.is_some()),
        }
    }

    async fn client(&self) -> Result<kube::Client, WebhookError> {
        if let Err(e) = self.load().await {
            // Whoever triggers the load reports its failure, once; normally the start-up task.
            tracing::error!(error = %e.chain(), "authentication/authorization webhook disabled; requests needing it are refused");
        }
        self.client
            .get()
            .and_then(Option::clone)
            .ok_or_else(|| WebhookError::NoClient {
                path: self.kubeconfig.clone(),
            })
    }

    /// Who `token` belongs to according to a TokenReview; `Ok(None)` when the API server says it
    /// is not authenticated. Answers are cached for `ttls.token`; errors are not.
    pub async fn review_token(&self, token: &str) -> Result<TokenAnswer, WebhookError> {
        let key = token_key(&self.salt, token);
        if let Some(hit) = lock(&self.tokens).get(&key, Instant::now()) {
            return Ok(hit);
        }
        let client = self.client().await?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let api = kube::Api::<TokenReview>::all(client);
        let answer = call("TokenReview", api.create(&PostParams::default(), &review)).await?;
        let status = answer.status.unwrap_or_default();
        let result = if status.authenticated == Some(true) {
            let u = status.user.unwrap_or_default();
            Some(UserInfo {
                name: u.username.unwrap_or_default(),
                uid: u.uid.filter(|s| !s.is_empty()),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            })
        } else if let Some(message) = status.error.filter(|e| !e.is_empty()) {
            // An error in the status is an error, not a "no" (webhook.go), and is not cached.
            return Err(WebhookError::Status {
                review: "TokenReview",
                message,
            });
        } else {
            None
        };
        lock(&self.tokens).insert(key, result.clone(), self.ttls.token, Instant::now());
        Ok(result)
    }

    /// Whether `user` may `verb` nodes/`subresource` of this node, by SubjectAccessReview.
    /// Allowed answers are cached for `ttls.allowed`, others for `ttls.denied`; errors are not.
    pub async fn review_access(
        &self,
        user: &UserInfo,
        verb: &str,
        subresource: &str,
    ) -> Result<bool, WebhookError> {
        let spec = access_review_spec(user, verb, subresource, &self.node_name);
        // The kubelet's cache key is the JSON of the spec: same user, groups and attributes.
        // Should it ever fail to serialise, ask every time rather than share a key.
        let key = serde_json::to_string(&spec).ok();
        if let Some(hit) = key
            .as_ref()
            .and_then(|k| lock(&self.decisions).get(k, Instant::now()))
        {
            return Ok(hit);
        }
        let client = self.client().await?;
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        let api = kube::Api::<SubjectAccessReview>::all(client);
        let answer = call(
            "SubjectAccessReview",
            api.create(&PostParams::default(), &review),
        )
        .await?;
        let status = answer.status.unwrap_or_default();
        let allowed = status.allowed;
        if allowed && status.denied == Some(true) {
            // webhook.go: a broken answer is an error, and not cached.
            return Err(WebhookError::Status {
                review: "SubjectAccessReview",
                message: "both allowed and denied".into(),
            });
        }
        let ttl = if allowed {
            self.ttls.allowed
        } else {
            self.ttls.denied
        };
        if let Some(key) = key {
            lock(&self.decisions).insert(key, allowed, ttl, Instant::now());
        }
        Ok(allowed)
    }
}

/// The reviews' client; follows a rotated client certificate (`certificate::reloading_client`).
async fn build_client(path: &Path) -> Result<kube::Client, WebhookError> {
    let p = path.to_owned();
    crate::certificate::reloading_client(path, move || build_once(p.clone())).await
}

async fn build_once(path: PathBuf) -> Result<kube::Client, WebhookError> {
    let path = path.as_path();
    let kc =
        kube::config::Kubeconfig::read_from(path).map_err(|source| WebhookError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|source| WebhookError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    config.connect_timeout = Some(REVIEW_TIMEOUT);
    config.read_timeout = Some(REVIEW_TIMEOUT);
    kube::Client::try_from(config).map_err(|source| WebhookError::Client {
        path: path.to_owned(),
        source,
    })
}

async fn call<T>(
    review: &'static str,
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, WebhookError> {
    match tokio::time::timeout(REVIEW_TIMEOUT, f).await {
        Ok(r) => r.map_err(|source| WebhookError::Request { review, source }),
        Err(_) => Err(WebhookError::Timeout {
            review,
            after: REVIEW_TIMEOUT,
        }),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a cache lock leaves at worst a stale answer; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserInfo {
        UserInfo {
            name: "alice".into(),
            groups: vec!["dev".into()],
            ..Default::default()
        }
        .authenticated()
    }

    #[test]
    fn access_review_spec_is_the_kubelets_node_attributes() {
        let spec = access_review_spec(&user(), "get", "stats", "node-a");
        let json = serde_json::to_value(&spec).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "user": "alice",
                "groups": ["dev", "system:authenticated"],
                "resourceAttributes": {
                    "verb": "get",
                    "version": "v1",
                    "resource": "nodes",
                    "subresource": "stats",
                    "name": "node-a",
                },
            })
        );
    }

    #[test]
    fn authenticated_group_is_added_once_and_not_to_anonymous() {
        let u = user().authenticated();
        assert_eq!(u.groups, ["dev", ALL_AUTHENTICATED]);
        let a = UserInfo::anonymous().authenticated();
        assert_eq!(a.groups, [ALL_UNAUTHENTICATED]);
        assert_eq!(a.name, ANONYMOUS);
    }

    #[test]
    fn token_keys_are_salted_hashes_that_do_not_contain_the_token() {
        let salt = [7u8; 16];
        let k = token_key(&salt, "secret-token");
        assert_eq!(k, token_key(&salt, "secret-token"));
        assert_ne!(k, token_key(&salt, "secret-tokeN"));
        assert_ne!(k, token_key(&[8u8; 16], "secret-token"));
        assert!(!k.windows(6).any(|w| w == b"secret"));
        assert_ne!(random_salt(), [0u8; 16]);
    }

    #[test]
    fn cache_answers_until_the_ttl_then_forgets() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(8);
        c.insert("k", true, Duration::from_secs(30), t0);
        assert_eq!(c.get(&"k", t0 + Duration::from_secs(29)), Some(true));
        assert_eq!(c.get(&"k", t0 + Duration::from_secs(30)), None);
        assert!(c.entries.is_empty(), "an expired entry is dropped on read");
    }

    #[test]
    fn allowed_and_denied_answers_keep_their_own_ttls() {
        let ttls = CacheTtls {
            token: Duration::from_secs(120),
            allowed: Duration::from_secs(300),
            denied: Duration::from_secs(30),
        };
        let t0 = Instant::now();
        let mut c = TtlCache::new(8);
        c.insert("allowed", true, ttls.allowed, t0);
        c.insert("denied", false, ttls.denied, t0);
        let later = t0 + Duration::from_secs(31);
        assert_eq!(c.get(&"denied", later), None);
        assert_eq!(c.get(&"allowed", later), Some(true));
        assert_eq!(c.get(&"allowed", t0 + Duration::from_secs(301)), None);
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(8);
        c.insert("k", 1, Duration::ZERO, t0);
        assert_eq!(c.get(&"k", t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_soonest_to_expire() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(2);
        c.insert("old", 1, Duration::from_secs(1), t0);
        c.insert("long", 2, Duration::from_secs(100), t0);
        let t1 = t0 + Duration::from_secs(5);
        c.insert("new", 3, Duration::from_secs(50), t1);
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.get(&"long", t1), Some(2));
        c.insert("newer", 4, Duration::from_secs(50), t1);
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.get(&"new", t1), None, "the soonest to expire went");
        assert_eq!(c.get(&"long", t1), Some(2));
        assert_eq!(c.get(&"newer", t1), Some(4));
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_an_error_naming_the_file_and_reviews_fail_closed() {
        let path = PathBuf::from("/nonexistent/nodelet-kubeconfig");
        let r = Reviewer::new(
            path.clone(),
            "node-a".into(),
            CacheTtls {
                token: Duration::from_secs(120),
                allowed: Duration::from_secs(300),
                denied: Duration::from_secs(30),
            },
        );
        let err = r.load().await.expect_err("no such file");
        assert!(
            err.chain().contains("/nonexistent/nodelet-kubeconfig"),
            "{}",
            err.chain()
        );
        assert!(matches!(r.load().await, Ok(false)));
        let e = r.review_token("t").await.expect_err("no client");
        assert!(e.is_no_client());
        let e = r
            .review_access(&user(), "get", "proxy")
            .await
            .expect_err("no client");
        assert!(e.is_no_client());
    }
}
