//! One authentication + authorization filter in front of every route of the secure port
//! (kubelet pkg/kubelet/server/auth.go and server.go InstallAuthFilter).
//!
//! Authentication: a client certificate chaining to `authentication.x509.clientCAFile` (user =
//! CN, groups = O), else anonymous when `authentication.anonymous.enabled`, else 401. Bearer
//! tokens need TokenReview, i.e. an API server; standalone they are not accepted.
//!
//! Authorization: `AlwaysAllow`, or `Webhook`. A standalone node has no API server to send a
//! SubjectAccessReview to (the kubelet refuses to start in that case). nodelet instead allows
//! users authenticated by a client certificate (trusting a CA is the operator's grant) and
//! answers 403 to anonymous ones, and says so once at start-up.

use super::error::ApiError;
use super::tls::{CertUser, ClientAuthenticator};
use crate::options::AuthorizationMode;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

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
    /// Authorization mode.
    pub mode: AuthorizationMode,
}

/// The authenticated requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    /// From a client certificate.
    Cert(CertUser),
    /// system:anonymous.
    Anonymous,
}

impl User {
    fn name(&self) -> &str {
        match self {
            Self::Cert(c) => &c.name,
            Self::Anonymous => "system:anonymous",
        }
    }
}

/// The nodes/<subresource> a path is authorized as (kubelet auth.go GetRequestAttributes, with
/// the fine-grained subresources of KEP-2862).
pub fn subresource(path: &str) -> &'static str {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/healthz") {
        "healthz"
    } else if under("/pods") {
        "pods"
    } else if under("/configz") {
        "configz"
    } else {
        "proxy"
    }
}

/// The Kubernetes verb of an HTTP method (kubelet auth.go).
pub fn verb(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "get",
    }
}

impl AuthPolicy {
    /// Who sent the request, or 401.
    pub fn authenticate(&self, peer: &PeerCerts) -> Result<User, ApiError> {
        if let (Some(chain), Some(clients)) = (&peer.0, &self.clients) {
            // A certificate that does not verify is a failed login, not an anonymous request.
            return clients
                .authenticate(chain)
                .map(User::Cert)
                .ok_or(ApiError::Unauthorized);
        }
        if self.anonymous {
            Ok(User::Anonymous)
        } else {
            Err(ApiError::Unauthorized)
        }
    }

    /// Whether `user` may do `verb` on nodes/`sub`.
    pub fn authorize(
        &self,
        user: &User,
        verb: &'static str,
        sub: &'static str,
    ) -> Result<(), ApiError> {
        match (self.mode, user) {
            (AuthorizationMode::AlwaysAllow, _) | (AuthorizationMode::Webhook, User::Cert(_)) => {
                Ok(())
            }
            (AuthorizationMode::Webhook, User::Anonymous) => Err(ApiError::Forbidden {
                user: user.name().to_string(),
                verb,
                subresource: sub,
            }),
        }
    }
}

/// The filter: authenticate, authorize, then run the route.
pub async fn filter(
    axum::extract::State(policy): axum::extract::State<Arc<AuthPolicy>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = req
        .extensions()
        .get::<PeerCerts>()
        .cloned()
        .unwrap_or_default();
    let user = policy.authenticate(&peer)?;
    let sub = subresource(req.uri().path());
    let v = verb(req.method());
    if let Err(e) = policy.authorize(&user, v, sub) {
        tracing::debug!(
            user = user.name(),
            verb = v,
            subresource = sub,
            path = req.uri().path(),
            "forbidden"
        );
        return Err(e);
    }
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_kubelets_subresources() {
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/stats"), "stats");
        assert_eq!(subresource("/statsx"), "proxy");
        assert_eq!(subresource("/metrics/cadvisor"), "metrics");
        assert_eq!(subresource("/logs/"), "log");
        assert_eq!(subresource("/containerLogs/a/b/c"), "proxy");
        assert_eq!(subresource("/exec/a/b/c"), "proxy");
        assert_eq!(subresource("/healthz"), "healthz");
    }

    #[test]
    fn no_credentials_is_401_unless_anonymous_and_webhook_forbids_anonymous() {
        let mut p = AuthPolicy {
            clients: None,
            anonymous: false,
            mode: AuthorizationMode::AlwaysAllow,
        };
        assert!(matches!(
            p.authenticate(&PeerCerts(None)),
            Err(ApiError::Unauthorized)
        ));
        p.anonymous = true;
        let u = p.authenticate(&PeerCerts(None)).expect("anonymous");
        assert!(p.authorize(&u, "get", "pods").is_ok());
        p.mode = AuthorizationMode::Webhook;
        assert!(matches!(
            p.authorize(&u, "get", "pods"),
            Err(ApiError::Forbidden { .. })
        ));
    }
}
