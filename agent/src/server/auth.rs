//! One authentication + authorization filter in front of every route of the secure port
//! (kubelet pkg/kubelet/server/auth.go and server.go InstallAuthFilter; cmd/kubelet/app/auth.go).
//!
//! Authentication, in the kubelet's order: a client certificate chaining to
//! `authentication.x509.clientCAFile` (user = CN, groups = O), else a bearer token checked by
//! TokenReview when `authentication.webhook.enabled` and `--kubeconfig` is given, else anonymous
//! when `authentication.anonymous.enabled`, else 401. A token the API server rejects, or cannot
//! be asked about, is 401 even with anonymous enabled (the kubelet's union fails on error).
//! Standalone (no kubeconfig) tokens are not looked at.
//!
//! Authorization: `AlwaysAllow`, or `Webhook`: a SubjectAccessReview per nodes/<subresource> the
//! path maps to, allowed on the first yes; a "no" is 403, an unreachable API server 500 (as the
//! kubelet: the authorizer could not decide). A standalone node has no API server to ask (the kubelet refuses to start then); nodelet allows
//! users authenticated by a client certificate (trusting a CA is the operator's grant), answers
//! 403 to anonymous ones, and says so once at start-up.

use super::error::ApiError;
use super::tls::{CertUser, ClientAuthenticator};
use super::webhook::{Reviewer, UserInfo};
use crate::options::AuthorizationMode;
use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;
use tracing::{debug, warn};

/// What the TLS layer learnt about the peer, attached to each request of the connection.
#[derive(Debug, Clone, Default)]
pub struct PeerCerts(pub Option<Arc<Vec<CertificateDer<'static>>>>);

/// The authn/authz settings of the secure port.
#[derive(Debug, Clone)]
pub struct AuthPolicy {
    /// Client certificate checker; `None` without a client CA.
    pub clients: Option<ClientAuthenticator>,
    /// Anonymous requests allowed.
    pub anonymous: bool,
    /// Bearer tokens checked by TokenReview (authentication.webhook.enabled); needs `reviewer`.
    pub token_webhook: bool,
    /// Authorization mode.
    pub mode: AuthorizationMode,
    /// The API server's reviews; `None` standalone (no --kubeconfig).
    pub reviewer: Option<Arc<Reviewer>>,
}

/// The authenticated requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    /// From a client certificate.
    Cert(CertUser),
    /// From a bearer token, as the TokenReview named it.
    Token(UserInfo),
    /// system:anonymous.
    Anonymous,
}

impl User {
    fn name(&self) -> &str {
        match self {
            Self::Cert(c) => &c.name,
            Self::Token(u) => &u.name,
            Self::Anonymous => super::webhook::ANONYMOUS,
        }
    }

    /// The identity a SubjectAccessReview is about, groups as the kubelet's authenticator chain
    /// leaves them.
    fn info(&self) -> UserInfo {
        match self {
            Self::Cert(c) => UserInfo {
                name: c.name.clone(),
                groups: c.groups.clone(),
                ..Default::default()
            }
            .authenticated(),
            Self::Token(u) => u.clone().authenticated(),
            Self::Anonymous => UserInfo::anonymous(),
        }
    }
}

/// The nodes/<subresource>s a path is authorized as, in the order asked (kubelet auth.go
/// GetRequestAttributes with KubeletFineGrainedAuthz, on by default since 1.33): the
/// fine-grained one, then `proxy`, which older RBAC roles grant.
pub fn subresources(path: &str) -> &'static [&'static str] {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if under("/pods") || under("/runningpods") {
        &["pods", "proxy"]
    } else if under("/healthz") {
        &["healthz", "proxy"]
    } else if under("/configz") {
        &["configz", "proxy"]
    } else if under("/statusz") {
        &["statusz", "proxy"]
    } else if under("/stats") {
        &["stats"]
    } else if under("/metrics") {
        &["metrics"]
    } else if under("/logs") {
        &["log"]
    } else if under("/checkpoint") {
        &["checkpoint"]
    } else {
        &["proxy"]
    }
}

/// The list as the kubelet's Forbidden message prints it (Go's `%v` of a slice, brackets aside).
fn shown(subs: &'static [&'static str]) -> &'static str {
    match subs {
        ["pods", "proxy"] => "pods proxy",
        ["healthz", "proxy"] => "healthz proxy",
        ["configz", "proxy"] => "configz proxy",
        ["statusz", "proxy"] => "statusz proxy",
        [one] => one,
        _ => "proxy",
    }
}

/// The Kubernetes verb of an HTTP method (kubelet auth.go): other methods, HEAD included, get
/// an empty verb, which no RBAC rule grants.
pub fn verb(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
}

/// The token of an `Authorization: Bearer <token>` header (k8s.io/apiserver bearertoken.go).
/// Another scheme or an empty token counts as no token at all, as there.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl AuthPolicy {
    /// Who sent the request, or 401.
    pub async fn authenticate(
        &self,
        peer: &PeerCerts,
        headers: &HeaderMap,
    ) -> Result<User, ApiError> {
        let mut cert_failed = false;
        if let (Some(chain), Some(clients)) = (&peer.0, &self.clients) {
            match clients.authenticate(chain) {
                Some(u) => return Ok(User::Cert(u)),
                // A certificate that does not verify is a failed login, not an anonymous
                // request; a token may still succeed, as in the kubelet's union.
                None => cert_failed = true,
            }
        }
        if let (true, Some(reviewer)) = (self.token_webhook, &self.reviewer)
            && let Some(token) = bearer_token(headers)
        {
            return match reviewer.review_token(token).await {
                Ok(Some(user)) => Ok(User::Token(user)),
                Ok(None) => Err(ApiError::Unauthorized),
                Err(e) => {
                    if e.is_no_client() {
                        debug!(error = %e.chain(), "bearer token refused");
                    } else {
                        warn!(error = %e.chain(), "bearer token refused: TokenReview failed");
                    }
                    Err(ApiError::Unauthorized)
                }
            };
        }
        if !cert_failed && self.anonymous {
            Ok(User::Anonymous)
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// Whether `user` may do `verb` on the nodes subresources of `path`: 403 on a "no", 500
    /// when the authorizer could not decide.
    pub async fn authorize(
        &self,
        user: &User,
        verb: &'static str,
        path: &str,
    ) -> Result<(), ApiError> {
        let subs = subresources(path);
        let forbidden = || ApiError::Forbidden {
            user: user.name().to_string(),
            verb,
            subresource: shown(subs),
        };
        let reviewer = match (self.mode, &self.reviewer) {
            (AuthorizationMode::AlwaysAllow, _) => return Ok(()),
            (AuthorizationMode::Webhook, Some(r)) => r,
            (AuthorizationMode::Webhook, None) => {
                return match user {
                    User::Anonymous => Err(forbidden()),
                    User::Cert(_) | User::Token(_) => Ok(()),
                };
            }
        };
        let info = user.info();
        for sub in subs {
            match reviewer.review_access(&info, verb, sub).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    // As the kubelet: the authorizer failed, so 500, not a decision.
                    if e.is_no_client() {
                        debug!(error = %e.chain(), user = user.name(), "request refused");
                    } else {
                        warn!(error = %e.chain(), user = user.name(), verb, subresource = *sub, "request refused: SubjectAccessReview failed");
                    }
                    return Err(ApiError::AuthorizationError {
                        user: user.name().to_string(),
                        verb,
                        subresource: shown(subs),
                    });
                }
            }
        }
        Err(forbidden())
    }
}

/// The filter: authenticate, authorize, then run the route.
pub async fn filter(
    axum::extract::State(policy): axum::extract::State<Arc<AuthPolicy>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<PeerCerts>()
        .cloned()
        .unwrap_or_default();
    let user = policy.authenticate(&peer, req.headers()).await?;
    if matches!(user, User::Token(_)) {
        // As bearertoken.go: an accepted token goes no further (e.g. to the runtime's
        // streaming server behind /exec).
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    let v = verb(req.method());
    if let Err(e) = policy.authorize(&user, v, req.uri().path()).await {
        debug!(
            user = user.name(),
            verb = v,
            path = req.uri().path(),
            "forbidden"
        );
        return Err(e);
    }
    Ok(next.run(req).await)
}

/// Start-up warnings for settings that open the node to anyone who can reach it: the
/// unauthenticated read-only port on a non-loopback address, and anonymous requests authorized
/// by AlwaysAllow (exec into any container). Both are the kubelet's defaults without --config
/// (its legacy flag defaults), which nodelet keeps; the KubeletConfiguration v1beta1 defaults
/// (readOnlyPort 0, anonymous off, Webhook) avoid both.
pub fn exposure_warnings(s: &crate::options::ServerOptions) -> Vec<String> {
    let mut out = Vec::new();
    if s.read_only_port != 0 && !s.address.is_loopback() {
        out.push(format!(
            "the read-only port serves /pods, /stats and /metrics without authentication on {}:{}, open to other hosts; set readOnlyPort: 0 (--read-only-port=0) or bind --address to 127.0.0.1",
            s.address, s.read_only_port
        ));
    }
    if s.anonymous_auth && s.authorization_mode == AuthorizationMode::AlwaysAllow {
        out.push(format!(
            "anonymous requests are enabled and authorized by AlwaysAllow: anyone who reaches {}:{} can read pods and logs and exec into containers; set authentication.anonymous.enabled: false (--anonymous-auth=false) or authorization.mode: Webhook",
            s.address, s.port
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, Method};

    fn policy(mode: AuthorizationMode, anonymous: bool) -> AuthPolicy {
        AuthPolicy {
            clients: None,
            anonymous,
            token_webhook: true,
            mode,
            reviewer: None,
        }
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("header"),
        );
        h
    }

    #[test]
    fn paths_map_to_the_kubelets_subresources() {
        assert_eq!(subresources("/stats/summary"), ["stats"]);
        assert_eq!(subresources("/stats"), ["stats"]);
        assert_eq!(subresources("/statsx"), ["proxy"]);
        assert_eq!(subresources("/metrics/cadvisor"), ["metrics"]);
        assert_eq!(subresources("/metrics/resource"), ["metrics"]);
        assert_eq!(subresources("/logs/"), ["log"]);
        assert_eq!(subresources("/containerLogs/a/b/c"), ["proxy"]);
        assert_eq!(subresources("/exec/a/b/c"), ["proxy"]);
        assert_eq!(subresources("/run/a/b/c"), ["proxy"]);
        assert_eq!(subresources("/portForward/a/b"), ["proxy"]);
        assert_eq!(subresources("/pods"), ["pods", "proxy"]);
        assert_eq!(subresources("/runningpods/"), ["pods", "proxy"]);
        assert_eq!(subresources("/healthz"), ["healthz", "proxy"]);
        assert_eq!(subresources("/configz"), ["configz", "proxy"]);
    }

    #[test]
    fn forbidden_lists_the_subresources_as_the_kubelet_prints_them() {
        assert_eq!(shown(subresources("/pods")), "pods proxy");
        assert_eq!(shown(subresources("/stats/summary")), "stats");
        let e = ApiError::Forbidden {
            user: "u".into(),
            verb: "get",
            subresource: shown(subresources("/pods")),
        };
        assert_eq!(
            e.to_string(),
            "Forbidden (user=u, verb=get, resource=nodes, subresource(s)=[pods proxy])"
        );
    }

    #[test]
    fn methods_map_to_the_kubelets_verbs() {
        assert_eq!(verb(&Method::GET), "get");
        assert_eq!(verb(&Method::POST), "create");
        assert_eq!(verb(&Method::PUT), "update");
        assert_eq!(verb(&Method::PATCH), "patch");
        assert_eq!(verb(&Method::DELETE), "delete");
        assert_eq!(verb(&Method::HEAD), "");
        assert_eq!(verb(&Method::OPTIONS), "");
    }

    #[test]
    fn access_reviews_carry_the_kubelets_attributes_for_each_path_and_method() {
        let user = User::Cert(CertUser {
            name: "alice".into(),
            groups: vec!["ops".into()],
        })
        .info();
        let cases: &[(Method, &str, &str, &[&str])] = &[
            (Method::GET, "/stats/summary", "get", &["stats"]),
            (Method::GET, "/metrics/cadvisor", "get", &["metrics"]),
            (Method::GET, "/logs/messages", "get", &["log"]),
            (Method::GET, "/pods", "get", &["pods", "proxy"]),
            (Method::GET, "/containerLogs/ns/p/c", "get", &["proxy"]),
            (Method::POST, "/exec/ns/p/c", "create", &["proxy"]),
            (Method::POST, "/run/ns/p/c", "create", &["proxy"]),
            (Method::PUT, "/portForward/ns/p", "update", &["proxy"]),
            (Method::PATCH, "/configz", "patch", &["configz", "proxy"]),
            (Method::DELETE, "/stats/x", "delete", &["stats"]),
        ];
        for (method, path, want_verb, want_subs) in cases {
            assert_eq!(verb(method), *want_verb, "{method} {path}");
            assert_eq!(subresources(path), *want_subs, "{method} {path}");
            for sub in subresources(path) {
                let spec =
                    super::super::webhook::access_review_spec(&user, verb(method), sub, "node-a");
                assert_eq!(spec.user.as_deref(), Some("alice"));
                assert_eq!(
                    spec.groups.as_deref(),
                    Some(&["ops".to_string(), "system:authenticated".to_string()][..])
                );
                let ra = spec.resource_attributes.expect("resource attributes");
                assert_eq!(
                    (
                        ra.verb.as_deref(),
                        ra.group.as_deref(),
                        ra.version.as_deref(),
                        ra.resource.as_deref(),
                        ra.subresource.as_deref(),
                        ra.name.as_deref(),
                        ra.namespace.as_deref(),
                    ),
                    (
                        Some(*want_verb),
                        None,
                        Some("v1"),
                        Some("nodes"),
                        Some(*sub),
                        Some("node-a"),
                        None
                    ),
                    "{method} {path}"
                );
            }
        }
    }

    #[test]
    fn open_read_only_port_and_anonymous_always_allow_are_warned_about() {
        let legacy = crate::options::Options::from_args(["nodelet".to_string()])
            .expect("default options")
            .server;
        let w = exposure_warnings(&legacy);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("0.0.0.0:10255"), "{w:?}");
        assert!(w[1].contains("anonymous"), "{w:?}");
        let mut s = legacy.clone();
        s.address = "127.0.0.1".parse().expect("ip");
        assert_eq!(exposure_warnings(&s).len(), 1);
        s.anonymous_auth = false;
        assert!(exposure_warnings(&s).is_empty());
        s.anonymous_auth = true;
        s.authorization_mode = AuthorizationMode::Webhook;
        assert!(exposure_warnings(&s).is_empty());
        s.address = "0.0.0.0".parse().expect("ip");
        s.read_only_port = 0;
        assert!(exposure_warnings(&s).is_empty());
    }

    #[test]
    fn bearer_tokens_are_read_as_bearertoken_go_reads_them() {
        assert_eq!(bearer_token(&HeaderMap::new()), None);
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("  Bearer abc  ")), Some("abc"));
        assert_eq!(bearer_token(&headers("Bearer abc def")), Some("abc"));
        assert_eq!(bearer_token(&headers("Bearer  abc")), None);
        assert_eq!(bearer_token(&headers("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
    }

    #[test]
    fn certificate_and_anonymous_users_carry_the_kubelets_groups() {
        let cert = User::Cert(CertUser {
            name: "alice".into(),
            groups: vec!["ops".into()],
        });
        assert_eq!(cert.info().groups, ["ops", "system:authenticated"]);
        let anon = User::Anonymous.info();
        assert_eq!(
            (anon.name.as_str(), anon.groups),
            (
                "system:anonymous",
                vec!["system:unauthenticated".to_string()]
            )
        );
    }

    #[tokio::test]
    async fn no_credentials_is_401_unless_anonymous_and_standalone_webhook_forbids_anonymous() {
        let mut p = policy(AuthorizationMode::AlwaysAllow, false);
        assert!(matches!(
            p.authenticate(&PeerCerts(None), &HeaderMap::new()).await,
            Err(ApiError::Unauthorized)
        ));
        p.anonymous = true;
        let u = p
            .authenticate(&PeerCerts(None), &HeaderMap::new())
            .await
            .expect("anonymous");
        assert!(p.authorize(&u, "get", "/pods").await.is_ok());
        p.mode = AuthorizationMode::Webhook;
        let err = p
            .authorize(&u, "get", "/pods")
            .await
            .expect_err("forbidden");
        assert_eq!(
            err.to_string(),
            "Forbidden (user=system:anonymous, verb=get, resource=nodes, subresource(s)=[pods proxy])"
        );
        let cert = User::Cert(CertUser {
            name: "alice".into(),
            groups: vec![],
        });
        assert!(p.authorize(&cert, "get", "/pods").await.is_ok());
    }

    #[tokio::test]
    async fn standalone_ignores_bearer_tokens() {
        let p = policy(AuthorizationMode::AlwaysAllow, true);
        let u = p
            .authenticate(&PeerCerts(None), &headers("Bearer whatever"))
            .await
            .expect("anonymous, token not looked at");
        assert_eq!(u, User::Anonymous);
    }

    #[tokio::test]
    async fn with_a_kubeconfig_that_does_not_load_tokens_are_401_and_webhook_authz_is_500() {
        let reviewer = Arc::new(Reviewer::new(
            "/nonexistent/kubeconfig".into(),
            "node-a".into(),
            super::super::webhook::CacheTtls {
                token: std::time::Duration::from_secs(120),
                allowed: std::time::Duration::from_secs(300),
                denied: std::time::Duration::from_secs(30),
            },
        ));
        let mut p = policy(AuthorizationMode::Webhook, true);
        p.reviewer = Some(reviewer);
        assert!(matches!(
            p.authenticate(&PeerCerts(None), &headers("Bearer t")).await,
            Err(ApiError::Unauthorized)
        ));
        assert_eq!(
            p.authenticate(&PeerCerts(None), &headers("Bearer  t"))
                .await
                .expect("an empty token is no token"),
            User::Anonymous
        );
        let cert = User::Cert(CertUser {
            name: "alice".into(),
            groups: vec![],
        });
        let err = p
            .authorize(&cert, "get", "/stats/summary")
            .await
            .expect_err("fail closed");
        assert_eq!(
            err.to_string(),
            "Authorization error (user=alice, verb=get, resource=nodes, subresource(s)=[stats])"
        );
        assert_eq!(err.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        p.mode = AuthorizationMode::AlwaysAllow;
        assert!(p.authorize(&cert, "get", "/stats/summary").await.is_ok());
    }
}
