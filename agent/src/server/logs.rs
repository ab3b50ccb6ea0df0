//! `/containerLogs/{namespace}/{pod}/{container}` (kubelet server.go getContainerLogs and
//! pkg/kubelet/kuberuntime/logs): reads the CRI log files of a pod on this node, strips the CRI
//! prefix, joins partial (`P`) lines, and applies kubectl's options.
//!
//! Files are only ever opened under `<podLogsDir>/<ns>_<name>_<uid>/<container>/`, with every
//! name checked first, so a request can name nothing outside the pod's own log directory.

use super::error::ApiError;
use super::names;
use super::stats::parse_rfc3339;
use axum::body::Body;
use axum::body::Bytes;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// kubectl logs' query parameters (k8s.io/api PodLogOptions).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogQuery {
    follow: Option<String>,
    tail_lines: Option<String>,
    since_seconds: Option<String>,
    since_time: Option<String>,
    timestamps: Option<String>,
    previous: Option<String>,
    limit_bytes: Option<String>,
}

/// Parsed options.
#[derive(Debug, Default, Clone)]
pub struct LogOptions {
    /// Keep streaming.
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<SystemTime>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
    /// The previous instance's log.
    pub previous: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

fn go_bool(name: &str, v: &Option<String>) -> Result<bool, ApiError> {
    match v.as_deref() {
        None | Some("") => Ok(false),
        Some(s) => crate::options::flags::parse_go_bool(s)
            .map_err(|_| ApiError::BadRequest(format!("{name}: invalid boolean {s:?}"))),
    }
}

fn positive(name: &str, v: &Option<String>) -> Result<Option<u64>, ApiError> {
    match v.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n as u64)),
            _ => Err(ApiError::BadRequest(format!(
                "{name}: must be a non-negative integer"
            ))),
        },
    }
}

impl LogQuery {
    /// Validates the query as the API server would.
    pub fn parse(&self) -> Result<LogOptions, ApiError> {
        let since_secs = positive("sinceSeconds", &self.since_seconds)?;
        let since = match (since_secs, self.since_time.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ApiError::BadRequest(
                    "at most one of sinceTime or sinceSeconds may be specified".into(),
                ));
            }
            (Some(s), None) => Some(SystemTime::now() - Duration::from_secs(s)),
            (None, Some(t)) => Some(
                parse_rfc3339(t)
                    .ok_or_else(|| ApiError::BadRequest("sinceTime: not RFC 3339".into()))?,
            ),
            (None, None) => None,
        };
        Ok(LogOptions {
            follow: go_bool("follow", &self.follow)?,
            tail_lines: positive("tailLines", &self.tail_lines)?.map(|n| n as usize),
            since,
            timestamps: go_bool("timestamps", &self.timestamps)?,
            previous: go_bool("previous", &self.previous)?,
            limit_bytes: match positive("limitBytes", &self.limit_bytes)? {
                Some(0) => {
                    return Err(ApiError::BadRequest(
                        "limitBytes: must be greater than 0".into(),
                    ));
                }
                x => x,
            },
        })
    }
}

/// Decodes CRI log lines into output, joining partial lines.
#[derive(Debug, Default)]
pub struct CriDecoder {
    partial: Vec<u8>,
    partial_ts: Option<String>,
}

impl CriDecoder {
    /// Feeds one complete file line (without '\n'); returns an output line when one is complete.
    pub fn line(&mut self, raw: &[u8], opts: &LogOptions) -> Option<Vec<u8>> {
        let mut parts = raw.splitn(4, |b| *b == b' ');
        let ts = std::str::from_utf8(parts.next()?).ok()?;
        let _stream = parts.next()?;
        let tag = parts.next()?;
        let content = parts.next().unwrap_or_default();
        if self.partial_ts.is_none() {
            self.partial_ts = Some(ts.to_string());
        }
        self.partial.extend_from_slice(content);
        if tag == b"P" {
            return None;
        }
        let first_ts = self.partial_ts.take().unwrap_or_default();
        let mut msg = std::mem::take(&mut self.partial);
        if let Some(since) = opts.since
            && parse_rfc3339(&first_ts).is_some_and(|t| t < since)
        {
            return None;
        }
        msg.push(b'\n');
        if opts.timestamps {
            let mut out = Vec::with_capacity(first_ts.len() + 1 + msg.len());
            out.extend_from_slice(first_ts.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&msg);
            Some(out)
        } else {
            Some(msg)
        }
    }
}

impl CriDecoder {
    /// The content of partial lines not yet completed, without a newline: a container whose
    /// output does not end in one leaves its last line tagged `P` (containerd), and the
    /// kubelet prints it as it is.
    pub fn flush(&mut self, opts: &LogOptions) -> Option<Vec<u8>> {
        let ts = self.partial_ts.take()?;
        let msg = std::mem::take(&mut self.partial);
        if msg.is_empty()
            || opts
                .since
                .is_some_and(|since| parse_rfc3339(&ts).is_some_and(|t| t < since))
        {
            return None;
        }
        if opts.timestamps {
            Some([ts.as_bytes(), b" ", &msg].concat())
        } else {
            Some(msg)
        }
    }
}

/// Which attempt's log file a request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The newest file: the instance that runs or ran last.
    Newest,
    /// The file before the newest: `previous` while the newest belongs to a current instance.
    BeforeNewest,
}

/// The status of `container` among the pod's regular, init and ephemeral containers: all
/// three are exec'd, attached to and logged.
pub fn any_container_status<'a>(
    pod: &'a Pod,
    container: &str,
) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| crate::status::all_container_statuses(s).find(|c| c.name == container))
}

/// The attempt `previous` (or not) names for `container` of `pod`, as the kubelet's
/// validateContainerLogStatus picks a container ID, by attempt instead (files are named by
/// attempt): `previous` is the last terminated instance, which is the newest file while the
/// container waits to be restarted (CrashLoopBackOff) and the one before it once a new
/// instance exists. Without a terminated instance `previous` is a 400, as there.
pub fn attempt(pod: &Pod, container: &str, previous: bool) -> Result<Attempt, ApiError> {
    if !previous {
        return Ok(Attempt::Newest);
    }
    let Some(st) = any_container_status(pod, container) else {
        // No status yet: the files alone decide.
        return Ok(Attempt::BeforeNewest);
    };
    if st
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .is_none()
    {
        return Err(no_previous(container, pod_name(pod)));
    }
    let current_exists = st.state.as_ref().is_some_and(|s| s.waiting.is_none());
    Ok(if current_exists {
        Attempt::BeforeNewest
    } else {
        Attempt::Newest
    })
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

fn no_previous(container: &str, pod: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "previous terminated container {container:?} in pod {pod:?} not found"
    ))
}

/// The log file of a container: the newest attempt, or the one before (see [`attempt`]).
pub fn log_file(
    pod_logs_dir: &Path,
    ns: &str,
    pod: &str,
    uid: &str,
    container: &str,
    which: Attempt,
) -> Result<PathBuf, ApiError> {
    for n in [ns, pod, container] {
        names::check(n)?;
    }
    if !uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ApiError::NotFound(format!("pod {ns}/{pod} has no logs")));
    }
    let dir = pod_logs_dir
        .join(format!("{ns}_{pod}_{uid}"))
        .join(container);
    let mut attempts: Vec<u64> = std::fs::read_dir(&dir)
        .map_err(|_| {
            ApiError::NotFound(format!(
                "container {container:?} in pod {pod:?} has no logs"
            ))
        })?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    attempts.sort_unstable();
    let pick = match which {
        Attempt::BeforeNewest => attempts.iter().rev().nth(1),
        Attempt::Newest => attempts.last(),
    };
    match pick {
        Some(n) => Ok(dir.join(format!("{n}.log"))),
        None if which == Attempt::BeforeNewest => Err(no_previous(container, pod)),
        None => Err(ApiError::NotFound(format!(
            "container {container:?} in pod {pod:?} has no logs"
        ))),
    }
}

/// Everything already in the file, decoded and cut to tailLines/limitBytes; plus the offset
/// read up to (the start of an incomplete last line).
pub async fn read_existing(
    path: &Path,
    opts: &LogOptions,
) -> Result<(Vec<u8>, u64, CriDecoder), ApiError> {
    let data = tokio::fs::read(path).await.map_err(|source| ApiError::Io {
        what: format!("log file {}", path.display()),
        source,
    })?;
    let complete = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut dec = CriDecoder::default();
    let mut lines: Vec<Vec<u8>> = data[..complete]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| dec.line(l, opts))
        .collect();
    lines.extend(dec.flush(opts));
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = lines.concat();
    if let Some(limit) = opts.limit_bytes {
        out.truncate(limit.min(usize::MAX as u64) as usize);
    }
    Ok((out, complete as u64, dec))
}

/// How long the end of a log body waits after its last data, so that the end arrives in a
/// separate read on the other side. The apiserver relays `/containerLogs` to a websocket client
/// (kubectl logs, the e2e "logs over websockets" test) through a reader that drops the data of a
/// read that also returns EOF: with a Content-Length body, or a chunked one whose last chunk and
/// terminator share a packet, the whole log is lost.
const EOF_GAP: Duration = Duration::from_millis(50);

/// The chunk size of a non-follow log body.
const CHUNK: usize = 32 * 1024;

/// A whole (non-follow) log as a chunked body: each chunk is flushed on its own and the end
/// comes `EOF_GAP` after the last one (see `EOF_GAP`).
pub fn whole(data: Vec<u8>) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        let data = Bytes::from(data);
        let mut at = 0;
        while at < data.len() {
            let end = (at + CHUNK).min(data.len());
            if tx.send(Ok(data.slice(at..end))).await.is_err() {
                return;
            }
            at = end;
            // Let hyper write and flush this chunk before the next one (or the end) is ready.
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(EOF_GAP).await;
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// A streaming body for follow=true: the existing content, then new lines as they are written,
/// until the client goes away, limitBytes is reached, or `still_running` says the container
/// stopped and the file has been drained.
pub fn follow(
    path: PathBuf,
    first: Vec<u8>,
    offset: u64,
    dec: CriDecoder,
    opts: LogOptions,
    still_running: impl Fn() -> bool + Send + 'static,
) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        follow_into(&tx, path, first, offset, dec, opts, still_running).await;
        // The end apart from the last data (see `EOF_GAP`).
        if !tx.is_closed() {
            tokio::time::sleep(EOF_GAP).await;
        }
    });
    Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// `follow`'s sender: returns when the stream is done (the caller then ends it).
async fn follow_into(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    path: PathBuf,
    first: Vec<u8>,
    offset: u64,
    mut dec: CriDecoder,
    opts: LogOptions,
    still_running: impl Fn() -> bool,
) {
    {
        let mut sent = first.len() as u64;
        if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        if opts.limit_bytes.is_some_and(|l| sent >= l) {
            return;
        }
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return;
        };
        if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
            return;
        }
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut idle_checks = 0u32;
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if n == 0 {
                if tx.is_closed() {
                    return;
                }
                idle_checks += 1;
                // Every ~second without new data, see whether the container is still there.
                if idle_checks.is_multiple_of(5) && !still_running() {
                    if let Some(o) = dec.flush(&opts) {
                        let _ = tx.send(Ok(Bytes::from(o))).await;
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            idle_checks = 0;
            pending.extend_from_slice(&buf[..n]);
            let Some(end) = pending.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let rest = pending.split_off(end + 1);
            let mut out = Vec::new();
            for l in pending.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                if let Some(o) = dec.line(l, &opts) {
                    out.extend_from_slice(&o);
                }
            }
            pending = rest;
            if let Some(limit) = opts.limit_bytes {
                out.truncate(limit.saturating_sub(sent).min(usize::MAX as u64) as usize);
            }
            sent += out.len() as u64;
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
            if opts.limit_bytes.is_some_and(|l| sent >= l) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_lines_are_joined_and_prefixes_stripped() {
        let o = LogOptions::default();
        let mut d = CriDecoder::default();
        assert_eq!(d.line(b"2026-11-22T19:29:31.915Z stdout P hel", &o), None);
        assert_eq!(
            d.line(b"2026-11-22T19:29:31.916Z stdout F lo", &o)
                .as_deref(),
            Some(&b"hello\n"[..])
        );
        let t = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            d.line(b"2026-11-22T19:29:32Z stderr F x y", &t).as_deref(),
            Some(&b"2026-11-22T19:29:32Z x y\n"[..])
        );
    }

    #[test]
    fn a_last_line_without_newline_is_printed_as_it_is() {
        let o = LogOptions::default();
        let mut d = CriDecoder::default();
        assert_eq!(d.line(b"2026-11-22T19:29:31.915Z stdout P abc", &o), None);
        assert_eq!(d.flush(&o).as_deref(), Some(&b"abc"[..]));
        assert_eq!(d.flush(&o), None);
    }

    #[test]
    fn since_drops_older_lines() {
        let o = LogOptions {
            since: parse_rfc3339("2026-11-22T19:29:32Z"),
            ..Default::default()
        };
        let mut d = CriDecoder::default();
        assert_eq!(d.line(b"2026-11-22T19:29:31.9Z stdout F old", &o), None);
        assert!(d.line(b"2026-11-22T19:29:32.1Z stdout F new", &o).is_some());
    }

    #[tokio::test]
    async fn tail_and_limit_apply_and_traversal_names_are_refused() {
        let dir = tempfile_dir();
        let cdir = dir.join("ns_p_u1/c");
        std::fs::create_dir_all(&cdir).expect("mkdir");
        std::fs::write(cdir.join("0.log"), "2026-01-01T00:00:00Z stdout F a\n2026-01-01T00:00:01Z stdout F b\n2026-01-01T00:00:02Z stdout F c\n").expect("write");
        let f = log_file(&dir, "ns", "p", "u1", "c", Attempt::Newest).expect("found");
        let o = LogOptions {
            tail_lines: Some(2),
            limit_bytes: Some(3),
            ..Default::default()
        };
        let (out, _, _) = read_existing(&f, &o).await.expect("read");
        assert_eq!(out, b"b\nc");
        assert!(log_file(&dir, "ns", "p", "u1", "..", Attempt::Newest).is_err());
        assert!(log_file(&dir, "..", "p", "u1", "c", Attempt::Newest).is_err());
        assert!(log_file(&dir, "ns", "p", "../u1", "c", Attempt::Newest).is_err());
        assert!(matches!(
            log_file(&dir, "ns", "p", "u1", "c", Attempt::BeforeNewest),
            Err(ApiError::BadRequest(_))
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn previous_is_the_last_terminated_instance() {
        let pod = |state: serde_json::Value, last: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "status": {"containerStatuses": [{
                    "name": "c", "ready": false, "restartCount": 1, "image": "i", "imageID": "",
                    "state": state, "lastState": last,
                }]},
            }))
            .expect("a pod")
        };
        let term = serde_json::json!({"terminated": {"exitCode": 1, "containerID": "x://1"}});
        let waiting = serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}});
        let running = serde_json::json!({"running": {}});
        // In back-off the newest file is the terminated instance's.
        let p = pod(waiting, term.clone());
        assert_eq!(attempt(&p, "c", true).ok(), Some(Attempt::Newest));
        assert_eq!(attempt(&p, "c", false).ok(), Some(Attempt::Newest));
        // Restarted: the one before the running instance.
        let p = pod(running.clone(), term);
        assert_eq!(attempt(&p, "c", true).ok(), Some(Attempt::BeforeNewest));
        // Never terminated: no previous, as the kubelet says.
        let p = pod(running, serde_json::json!({}));
        assert!(matches!(
            attempt(&p, "c", true),
            Err(ApiError::BadRequest(_))
        ));
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "nodelet-logs-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
