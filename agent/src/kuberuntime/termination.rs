//! Termination messages (kubelet kuberuntime_container.go getTerminationMessage,
//! readLastStringFromContainerLogs, convertToKubeContainerStatus).
//!
//! Each container instance gets an empty host file (mode 0666, so a non-root container can
//! write it) mounted at its `terminationMessagePath` (default `/dev/termination-log`). When the
//! container has exited, the last 4096 bytes of that file become the message of its
//! `state.terminated`; with `terminationMessagePolicy: FallbackToLogsOnError`, an empty file and
//! a non-zero exit code, the last 80 lines of its log (at most their last 2048 bytes) do.

use super::labels;
use proto::runtime::v1 as cri;
use std::io::SeekFrom;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Longest message read from the file (MaxContainerTerminationMessageLength).
pub const MAX_MESSAGE: usize = 4096;
/// Log lines the fallback reads (MaxContainerTerminationMessageLogLines).
pub const MAX_LOG_LINES: usize = 80;
/// Longest message taken from the log (MaxContainerTerminationMessageLogLength).
pub const MAX_LOG_BYTES: usize = 2048;
/// How much of the log's end is read to find its last lines: 80 lines of up to ~3 KiB each.
const LOG_WINDOW: u64 = 256 * 1024;

/// The last `max` bytes of the file at `path`.
async fn read_tail(path: &Path, max: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    let from = len.saturating_sub(max);
    f.seek(SeekFrom::Start(from)).await?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).await?;
    Ok((buf, from > 0))
}

/// The message an exited container's status carries besides the runtime's own: the
/// termination-message file or, per policy, the end of its log. `status` is the runtime's
/// ContainerStatus (annotations, mounts, log path).
pub async fn message(status: &cri::ContainerStatus) -> String {
    let a = &status.annotations;
    let policy = a
        .get(labels::TERMINATION_MESSAGE_POLICY)
        .map_or("File", String::as_str);
    // A container that could not even start has no logs.
    let fallback = policy == "FallbackToLogsOnError"
        && status.exit_code != 0
        && status.reason != "ContainerCannotRun";
    let path = a
        .get(labels::TERMINATION_MESSAGE_PATH)
        .map_or("", String::as_str);
    if !path.is_empty()
        && let Some(m) = status.mounts.iter().find(|m| m.container_path == path)
    {
        match read_tail(Path::new(&m.host_path), MAX_MESSAGE as u64).await {
            Ok((data, _)) => {
                if !data.is_empty() {
                    return String::from_utf8_lossy(&data).into_owned();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return format!("Error on reading termination log {}: {e}", m.host_path);
            }
        }
    }
    if !fallback || status.log_path.is_empty() {
        return String::new();
    }
    match read_tail(Path::new(&status.log_path), LOG_WINDOW).await {
        Ok((data, cut)) => last_log_lines(&data, cut),
        Err(e) => format!("Error on reading termination message from logs: {e}"),
    }
}

/// The content of the last [`MAX_LOG_LINES`] CRI log lines in `data` (`<time> <stream> <P|F>
/// <content>`; a full line ends with a newline, a partial one does not), at most its last
/// [`MAX_LOG_BYTES`]. `cut` says `data` starts inside a line, which is then dropped.
pub fn last_log_lines(data: &[u8], cut: bool) -> String {
    let mut lines: Vec<&[u8]> = data.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    if cut && !lines.is_empty() {
        lines.remove(0);
    }
    let start = lines.len().saturating_sub(MAX_LOG_LINES);
    let mut out = Vec::new();
    for line in &lines[start..] {
        let mut parts = line.splitn(4, |b| *b == b' ');
        let (Some(_time), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        out.extend_from_slice(parts.next().unwrap_or_default());
        if tag != b"P" {
            out.push(b'\n');
        }
    }
    let from = out.len().saturating_sub(MAX_LOG_BYTES);
    String::from_utf8_lossy(&out[from..]).into_owned()
}

/// The runtime's message and the termination message joined as the kubelet joins them.
pub fn join(runtime: &str, termination: &str) -> String {
    match (runtime.is_empty(), termination.is_empty()) {
        (_, true) => runtime.to_owned(),
        (true, false) => termination.to_owned(),
        (false, false) => format!("{runtime}: {termination}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fallback_takes_the_last_lines_content() {
        let mut log = String::new();
        for i in 0..100 {
            log.push_str(&format!("2026-12-06T00:00:00.000Z stderr F line {i}\n"));
        }
        log.push_str("2026-12-06T00:00:00.000Z stdout P part");
        log.push_str("\n2026-12-06T00:00:00.000Z stdout F ial\n");
        let m = last_log_lines(log.as_bytes(), false);
        assert!(m.starts_with("line 22\n"), "{m}");
        assert!(m.ends_with("line 99\npartial\n"), "{m}");
        assert_eq!(m.lines().count(), 79);
    }

    #[test]
    fn log_fallback_keeps_at_most_2048_bytes() {
        let long = "x".repeat(1500);
        let log = format!("t stdout F {long}\nt stdout F {long}\n");
        let m = last_log_lines(log.as_bytes(), false);
        assert_eq!(m.len(), MAX_LOG_BYTES);
        assert!(m.ends_with("x\n"));
    }

    #[test]
    fn a_cut_first_line_is_dropped() {
        let m = last_log_lines(b"ut F tail\nt stdout F whole\n", true);
        assert_eq!(m, "whole\n");
    }

    #[test]
    fn messages_join_with_a_colon() {
        assert_eq!(join("", "bye"), "bye");
        assert_eq!(join("OOM", ""), "OOM");
        assert_eq!(join("OOM", "bye"), "OOM: bye");
    }
}
