//! The CertificateSigningRequest exchange (client-go util/certificate/csr): a new ECDSA P-256
//! key, a PKCS#10 request for CN=system:node:<node>, O=system:nodes, a CSR object for the
//! kubelet client signer, and a watch until it is approved and the certificate is issued.

use super::CertError;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use kube::api::{Api, ObjectMeta, PostParams};
use std::path::Path;
use std::time::Duration;
use tracing::info;

/// The signer of kubelet client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Usages of an ECDSA client key (the kubelet adds "key encipherment" only for RSA keys,
/// which nodelet does not make).
pub const USAGES: [&str; 2] = ["digital signature", "client auth"];
/// API calls other than the watch give up after this (an unreachable server fails fast).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An issued certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The CSR's name.
    pub csr: String,
    /// The certificate chain the signer issued.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// A client from a kubeconfig already read from `path`.
pub async fn client_from(
    path: &Path,
    kc: kube::config::Kubeconfig,
) -> Result<kube::Client, CertError> {
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|source| CertError::Kubeconfig {
            path: path.to_owned(),
            source,
        })?;
    config.connect_timeout = Some(CALL_TIMEOUT);
    kube::Client::try_from(config).map_err(|source| CertError::Client {
        path: path.to_owned(),
        source,
    })
}

/// A new key and the PEM PKCS#10 request for `node`.
pub fn key_and_request(node: &str) -> Result<(rcgen::KeyPair, String), CertError> {
    let err = |source| CertError::Key {
        node: node.to_owned(),
        source,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    params.distinguished_name = dn;
    let pem = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(err)?;
    Ok((key, pem))
}

/// The CSR object for `request_pem`, named by the API server from `prefix`.
pub fn object(prefix: &str, request_pem: &str) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some(prefix.to_owned()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: SIGNER.to_owned(),
            usages: Some(USAGES.iter().map(|u| (*u).to_owned()).collect()),
            ..Default::default()
        },
        status: None,
    }
}

/// `Some(Ok(cert))` once issued, `Some(Err(..))` once denied or failed, `None` while pending.
fn outcome(csr: &CertificateSigningRequest, name: &str) -> Option<Result<String, CertError>> {
    let status = csr.status.as_ref()?;
    for c in status.conditions.iter().flatten() {
        if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
            return Some(Err(CertError::CsrRefused {
                name: name.to_owned(),
                condition: c.type_.clone(),
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
            }));
        }
    }
    let cert = status.certificate.as_ref().filter(|c| !c.0.is_empty())?;
    Some(
        String::from_utf8(cert.0.clone()).map_err(|_| CertError::Certificate {
            what: format!("CertificateSigningRequest {name}"),
            reason: "the issued certificate is not PEM text",
        }),
    )
}

/// Creates a CSR for `node` with `client`'s credentials and waits up to `wait` for the
/// certificate (client-go `RequestCertificate` + `WaitForCertificate`).
pub async fn request(
    client: &kube::Client,
    node: &str,
    prefix: &str,
    wait: Duration,
) -> Result<Issued, CertError> {
    let (key, request_pem) = key_and_request(node)?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let created = tokio::time::timeout(
        CALL_TIMEOUT,
        api.create(&PostParams::default(), &object(prefix, &request_pem)),
    )
    .await
    .unwrap_or_else(|_| {
        Err(kube::Error::Service(
            format!("no answer within {CALL_TIMEOUT:?}").into(),
        ))
    })
    .map_err(|source| CertError::CreateCsr {
        node: node.to_owned(),
        source,
    })?;
    let name = created.metadata.name.clone().unwrap_or_default();
    info!(csr = %name, signer = SIGNER, "certificate signing request created; waiting for approval");
    let done = |c: Option<&CertificateSigningRequest>| c.and_then(|c| outcome(c, "")).is_some();
    let csr =
        match tokio::time::timeout(wait, kube::runtime::wait::await_condition(api, &name, done))
            .await
        {
            Err(_) => {
                return Err(CertError::CsrTimeout { name, after: wait });
            }
            Ok(Err(source)) => return Err(CertError::WaitCsr { name, source }),
            Ok(Ok(csr)) => csr,
        };
    let cert_pem = csr
        .as_ref()
        .and_then(|c| outcome(c, &name))
        .unwrap_or_else(|| {
            Err(CertError::Certificate {
                what: format!("CertificateSigningRequest {name}"),
                reason: "the CSR was deleted before a certificate was issued",
            })
        })?;
    super::store::validity(&cert_pem, &format!("CertificateSigningRequest {name}"))?;
    Ok(Issued {
        csr: name,
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn the_request_names_the_node_and_uses_an_ecdsa_p256_key() {
        let (key, pem) = key_and_request("node-a").expect("request");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(key.serialize_pem().contains("PRIVATE KEY"));
        let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .expect("pem")
            .1
            .contents;
        let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
            .expect("parses");
        let subject = req.certification_request_info.subject.to_string();
        assert!(subject.contains("CN=system:node:node-a"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        let alg = &req
            .certification_request_info
            .subject_pki
            .algorithm
            .algorithm;
        assert_eq!(alg.to_id_string(), "1.2.840.10045.2.1", "id-ecPublicKey");
        let obj = object("node-csr-", &pem);
        assert_eq!(obj.spec.signer_name, SIGNER);
        assert_eq!(
            obj.spec.usages.as_deref(),
            Some(&["digital signature".to_owned(), "client auth".to_owned()][..])
        );
        assert_eq!(obj.metadata.generate_name.as_deref(), Some("node-csr-"));
    }

    #[test]
    fn pending_issued_and_denied_csrs_are_told_apart() {
        use k8s_openapi::api::certificates::v1::{
            CertificateSigningRequestCondition as Cond, CertificateSigningRequestStatus as St,
        };
        let mut csr = object("csr-", "x");
        assert!(outcome(&csr, "csr-a").is_none(), "no status: pending");
        let approved = Cond {
            type_: "Approved".into(),
            status: "True".into(),
            ..Default::default()
        };
        csr.status = Some(St {
            conditions: Some(vec![approved.clone()]),
            certificate: None,
        });
        assert!(
            outcome(&csr, "csr-a").is_none(),
            "approved, not issued: pending"
        );
        csr.status = Some(St {
            conditions: Some(vec![approved]),
            certificate: Some(ByteString(b"PEM".to_vec())),
        });
        assert_eq!(
            outcome(&csr, "csr-a").expect("done").expect("issued"),
            "PEM"
        );
        csr.status = Some(St {
            conditions: Some(vec![Cond {
                type_: "Denied".into(),
                status: "True".into(),
                reason: Some("NotMine".into()),
                message: Some("no".into()),
                ..Default::default()
            }]),
            certificate: None,
        });
        let e = outcome(&csr, "csr-a").expect("done").expect_err("denied");
        assert_eq!(
            e.to_string(),
            "CertificateSigningRequest csr-a is Denied: NotMine: no"
        );
    }
}
