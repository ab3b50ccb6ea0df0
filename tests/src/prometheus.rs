//! A real Prometheus (Debian's `prometheus` 2.42) scraping an agent's secure port as
//! kube-prometheus scrapes the kubelet: https with a client certificate, every endpoint under
//! job `kubelet` with a `metrics_path` label (kube-prometheus's ServiceMonitor relabels
//! `__metrics_path__` into it), and a test CA whose client certificate the agent trusts.

use crate::pki::Pki;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The endpoints kube-prometheus's kubelet ServiceMonitor scrapes, plus /metrics/resource
/// (metrics-server's).
pub const KUBELET_PATHS: &[&str] = &[
    "/metrics",
    "/metrics/cadvisor",
    "/metrics/probes",
    "/metrics/resource",
];

/// A running Prometheus; dropping it kills the process and removes its data.
pub struct Prometheus {
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `agent_port` every second over mTLS with `pki`'s client
    /// certificate, one job per path of [`KUBELET_PATHS`] relabelled to job `kubelet`, with
    /// `rule_files` loaded.
    pub fn start(pki: &Pki, agent_port: u16, rule_files: &[&Path]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("nodelet-prom-").tempdir()?;
        let port = crate::free_port()?;
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 2s\n",
        );
        cfg.push_str("rule_files:\n");
        for f in rule_files {
            cfg.push_str(&format!("- {}\n", f.display()));
        }
        cfg.push_str("scrape_configs:\n");
        for path in KUBELET_PATHS {
            // As kube-prometheus: honor_labels (cAdvisor's own container/pod labels), no
            // exposition timestamps for cAdvisor, insecure_skip_verify for the self-signed
            // serving certificate.
            let name = format!("kubelet{}", path.replace('/', "-"));
            cfg.push_str(&format!(
                "- job_name: {name}\n  scheme: https\n  metrics_path: {path}\n  honor_labels: true\n  \
                 honor_timestamps: {}\n  tls_config:\n    insecure_skip_verify: true\n    \
                 cert_file: {}\n    key_file: {}\n  static_configs:\n  - targets: ['127.0.0.1:{agent_port}']\n  \
                 relabel_configs:\n  - source_labels: [__metrics_path__]\n    target_label: metrics_path\n  \
                 - target_label: job\n    replacement: kubelet\n",
                *path != "/metrics/cadvisor",
                pki.path("client.crt").display(),
                pki.path("client.key").display(),
            ));
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, &cfg)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start prometheus")?;
        let p = Prometheus { port, child, dir };
        crate::wait_for("prometheus ready", Duration::from_secs(30), || {
            Ok(p.api("/-/ready", &[]).is_ok().then_some(()))
        })
        .with_context(|| p.log())?;
        Ok(p)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn api(&self, path: &str, form: &[(&str, &str)]) -> Result<String> {
        let mut c = Command::new("curl");
        c.args(["-sf", "--max-time", "20"]);
        for (k, v) in form {
            c.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = c
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()?;
        if !out.status.success() {
            bail!("prometheus {path}: {:?}", out.status);
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `/api/v1/<what>` decoded, its `data` field.
    pub fn get(&self, what: &str, form: &[(&str, &str)]) -> Result<Value> {
        let v: Value = serde_json::from_str(&self.api(&format!("/api/v1/{what}"), form)?)?;
        if v["status"] != "success" {
            bail!("prometheus {what} {form:?}: {v}");
        }
        Ok(v["data"].clone())
    }

    /// An instant query's result vector (empty when nothing matched).
    pub fn query(&self, promql: &str) -> Result<Vec<Value>> {
        let d = self.get("query", &[("query", promql)])?;
        Ok(d["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
