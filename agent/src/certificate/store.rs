//! The certificate files in `--cert-dir` (client-go util/certificate `FileStore`) and the
//! kubeconfig written after bootstrapping (kubelet `writeKubeconfigFromBootstrapping`).
//!
//! Each issued certificate goes, with its key, into `kubelet-client-<UTC time>.pem` (0600);
//! `kubelet-client-current.pem` is a symlink to the newest, replaced by a rename so that a
//! reader sees the old pair or the new one, never half of either.

use super::CertError;
use base64::Engine;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The symlink every client reads (the kubelet's name).
const CURRENT: &str = "kubelet-client-current.pem";

/// `<dir>/kubelet-client-current.pem`.
pub fn current_path(dir: &Path) -> PathBuf {
    dir.join(CURRENT)
}

/// notBefore and notAfter of the first certificate in `pem`; `what` names where it came from.
pub fn validity(pem: &str, what: &str) -> Result<(SystemTime, SystemTime), CertError> {
    let bad = |reason| CertError::Certificate {
        what: what.to_owned(),
        reason,
    };
    let block = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .find(|p| p.label == "CERTIFICATE")
        .ok_or_else(|| bad("no PEM CERTIFICATE block"))?;
    let cert = block
        .parse_x509()
        .map_err(|_| bad("not a valid X.509 certificate"))?;
    let v = cert.validity();
    let at = |t: i64| {
        u64::try_from(t)
            .map(|s| UNIX_EPOCH + Duration::from_secs(s))
            .map_err(|_| bad("validity before 1970"))
    };
    Ok((at(v.not_before.timestamp())?, at(v.not_after.timestamp())?))
}

/// The client certificate PEM of the current context's user, and whether a key is there.
fn client_cert_of(kc: &kube::config::Kubeconfig) -> Result<(String, bool), String> {
    let ctx_name = kc.current_context.clone().ok_or("no current-context")?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.clone())
        .ok_or("the current context is missing")?;
    let user = ctx.user.ok_or("the current context names no user")?;
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)
        .and_then(|a| a.auth_info.clone())
        .ok_or("the current context's user is missing")?;
    let has_key = auth.client_key_data.is_some()
        || auth
            .client_key
            .as_deref()
            .is_some_and(|k| Path::new(k).is_file());
    let pem = match (&auth.client_certificate_data, &auth.client_certificate) {
        (Some(data), _) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|_| "client-certificate-data is not base64")?;
            String::from_utf8(raw).map_err(|_| "client-certificate-data is not PEM")?
        }
        (None, Some(file)) => {
            std::fs::read_to_string(file).map_err(|e| format!("client-certificate {file}: {e}"))?
        }
        (None, None) => return Err("no client certificate".into()),
    };
    Ok((pem, has_key))
}

/// `Ok` when the kubeconfig at `path` has a client certificate and key, and the certificate is
/// valid now (kubelet `isClientConfigStillValid`); else why not, for the log.
pub fn kubeconfig_cert_valid(path: &Path) -> Result<(), String> {
    if !path.exists() {
        return Err("the file does not exist".into());
    }
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
    let (pem, has_key) = client_cert_of(&kc)?;
    if !has_key {
        return Err("no client key".into());
    }
    let (nb, na) = validity(&pem, &path.display().to_string()).map_err(|e| e.to_string())?;
    let now = SystemTime::now();
    if now < nb {
        return Err("the client certificate is not valid yet".into());
    }
    if now >= na {
        return Err("the client certificate has expired".into());
    }
    Ok(())
}

/// The client certificate files the kubeconfig at `path` names (resolved to absolute paths);
/// empty when it carries the credentials inline or uses none.
pub fn client_files(path: &Path) -> Vec<PathBuf> {
    let Ok(kc) = kube::config::Kubeconfig::read_from(path) else {
        return Vec::new();
    };
    let Some(user) = kc.current_context.as_ref().and_then(|n| {
        kc.contexts
            .iter()
            .find(|c| &c.name == n)
            .and_then(|c| c.context.as_ref())
            .and_then(|c| c.user.clone())
    }) else {
        return Vec::new();
    };
    kc.auth_infos
        .iter()
        .filter(|a| a.name == user)
        .filter_map(|a| a.auth_info.as_ref())
        .flat_map(|a| [a.client_certificate.clone(), a.client_key.clone()])
        .flatten()
        .map(PathBuf::from)
        .collect()
}

/// The current context's cluster entry of `kc` (server, CA), to copy into the new kubeconfig.
pub fn current_cluster(kc: &kube::config::Kubeconfig) -> Option<serde_json::Value> {
    let ctx = kc.current_context.as_ref()?;
    let cluster = kc
        .contexts
        .iter()
        .find(|c| &c.name == ctx)?
        .context
        .as_ref()?
        .cluster
        .clone();
    let c = kc.clusters.iter().find(|c| c.name == cluster)?;
    serde_json::to_value(c.cluster.as_ref()?).ok()
}

/// Writes `contents` to `path` through a temporary file and a rename, mode 0600.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(contents).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Writes the pair as `kubelet-client-<time>.pem` in `dir` and points the current symlink at
/// it; returns the new file.
pub fn write_pair(dir: &Path, cert_pem: &str, key_pem: &str) -> Result<PathBuf, CertError> {
    let name = format!("kubelet-client-{}.pem", timestamp(SystemTime::now()));
    let file = dir.join(&name);
    let mut contents = cert_pem.trim_end().to_owned();
    contents.push('\n');
    contents.push_str(key_pem.trim_end());
    contents.push('\n');
    write_atomic(&file, contents.as_bytes())?;
    // A relative target keeps the directory movable; rename replaces the old link atomically.
    let current = current_path(dir);
    let tmp = dir.join(format!("{CURRENT}.tmp-{}", std::process::id()));
    let err = |source| CertError::Write {
        path: current.clone(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&name, &tmp).map_err(err)?;
    std::fs::rename(&tmp, &current).map_err(err)?;
    Ok(file)
}

/// Writes the kubeconfig at `path`: `cluster` (from the bootstrap kubeconfig) and the client
/// pair in `pem` (certificate and key in one file, as the kubelet writes it).
pub fn write_kubeconfig(
    path: &Path,
    cluster: &serde_json::Value,
    pem: &Path,
) -> Result<(), CertError> {
    let pem = pem.display().to_string();
    let kc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "default-cluster", "cluster": cluster }],
        "contexts": [{ "name": "default-context", "context": {
            "cluster": "default-cluster", "namespace": "default", "user": "default-auth" } }],
        "current-context": "default-context",
        "users": [{ "name": "default-auth", "user": {
            "client-certificate": pem, "client-key": pem } }],
    });
    let text = serde_yaml_ng::to_string(&kc).map_err(|source| CertError::Serialize {
        path: path.to_owned(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}

/// `t` as the kubelet's file-name time, `2006-01-02-15-04-05` in UTC (times before 1970 as
/// 1970's first second).
pub fn timestamp(t: SystemTime) -> String {
    use k8s_openapi::jiff::Timestamp;
    Timestamp::try_from(t.max(UNIX_EPOCH))
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%d-%H-%M-%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_times_are_the_kubelets_format() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01-00-00-00");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56 UTC
        assert_eq!(timestamp(t), "2024-02-29-12-34-56");
    }

    fn self_signed(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = p.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn pairs_and_kubeconfig_are_written_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("pki");
        let (cert, key) = self_signed("system:node:n");
        let file = write_pair(&certs, &cert, &key).expect("written");
        let mode = std::fs::metadata(&file).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let current = current_path(&certs);
        assert_eq!(
            std::fs::canonicalize(&current).expect("link"),
            std::fs::canonicalize(&file).expect("file")
        );
        let kubeconfig = dir.path().join("kubelet.conf");
        let cluster = serde_json::json!({ "server": "https://127.0.0.1:6443" });
        write_kubeconfig(&kubeconfig, &cluster, &current).expect("kubeconfig");
        assert_eq!(kubeconfig_cert_valid(&kubeconfig), Ok(()));
        assert_eq!(
            client_files(&kubeconfig),
            [current.clone(), current.clone()]
        );
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).expect("reads");
        assert_eq!(
            current_cluster(&kc).expect("cluster")["server"],
            "https://127.0.0.1:6443"
        );
        let missing = dir.path().join("nope.conf");
        assert!(kubeconfig_cert_valid(&missing).is_err());
    }

    #[test]
    fn a_file_without_a_certificate_is_named_in_the_error() {
        let e = validity("junk", "/x/y.pem").expect_err("no cert");
        assert!(e.to_string().contains("/x/y.pem"), "{e}");
    }
}
