//! Exposition: Prometheus text 0.0.4 and OpenMetrics 1.0 from one writer.
//!
//! Our own small encoder rather than prometheus-client's: the kubelet's names must come out
//! exactly (a counter named `kubelet_evictions` without `_total` in the text format, as
//! client_golang writes it), and metrics-server needs sample timestamps, which prometheus-client
//! cannot express. The OpenMetrics side follows client_golang's: a counter family drops `_total`
//! from its name and every counter sample carries it.

use std::fmt::Write as _;
use std::time::SystemTime;

/// Metric family type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// Which wire format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// Picks the format from an Accept header, as client_golang's negotiation does.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }

    /// The Content-Type of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain; version=0.0.4; charset=utf-8",
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A streaming encoder hands its text on in chunks of about this size (a line may take it a
/// little past): small enough to come from the allocator's free lists, where a whole
/// /metrics/cadvisor page (8 MB at 250 containers) would be fresh pages on every scrape.
pub const CHUNK: usize = 64 << 10;

/// Where a streaming encoder's chunks go.
pub type Sink = Box<dyn FnMut(String) + Send>;

/// Writes families and samples into a string buffer, or through a [`Sink`] in chunks.
pub struct Encoder {
    out: String,
    format: Format,
    family: String,
    kind: Kind,
    sink: Option<Sink>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("format", &self.format)
            .field("buffered", &self.out.len())
            .field("streaming", &self.sink.is_some())
            .finish()
    }
}

impl Encoder {
    /// A new encoder with room for `capacity` bytes.
    pub fn new(format: Format, capacity: usize) -> Self {
        Self {
            out: String::with_capacity(capacity),
            format,
            family: String::new(),
            kind: Kind::Gauge,
            sink: None,
        }
    }

    /// An encoder that passes its text to `sink` in chunks of about [`CHUNK`] bytes, whole
    /// lines each; [`Encoder::finish`] passes the rest and returns an empty string.
    pub fn streaming(format: Format, sink: Sink) -> Self {
        Self {
            out: String::with_capacity(CHUNK + 1024),
            format,
            family: String::new(),
            kind: Kind::Gauge,
            sink: Some(sink),
        }
    }

    /// Hands a full chunk to the sink, if streaming.
    fn flush_full(&mut self) {
        if self.out.len() < CHUNK {
            return;
        }
        if let Some(sink) = self.sink.as_mut() {
            let full = std::mem::replace(&mut self.out, String::with_capacity(CHUNK + 1024));
            sink(full);
        }
    }

    /// Starts a family: `name` is the name the kubelet exposes in the text format.
    pub fn family(&mut self, name: &str, help: &str, kind: Kind) {
        let fam = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        self.family.clear();
        self.family.push_str(fam);
        self.kind = kind;
        let ty = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {fam} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {fam} {ty}");
    }

    /// One sample of the current (counter or gauge) family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64, at: Option<SystemTime>) {
        let suffix = match (self.format, self.kind) {
            (Format::OpenMetrics, Kind::Counter) => "_total",
            _ => "",
        };
        self.line(suffix, labels, None, value, at);
    }

    /// One histogram series of the current family: cumulative `buckets` as (upper bound, count).
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        for (le, n) in buckets {
            let le = fmt_float(*le);
            self.line("_bucket", labels, Some(&le), *n as f64, None);
        }
        self.line("_bucket", labels, Some("+Inf"), count as f64, None);
        self.line("_sum", labels, None, sum, None);
        self.line("_count", labels, None, count as f64, None);
    }

    fn line(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: f64,
        at: Option<SystemTime>,
    ) {
        self.out.push_str(&self.family);
        self.out.push_str(suffix);
        if !labels.is_empty() || le.is_some() {
            self.out.push('{');
            let mut first = true;
            for (k, v) in labels.iter().copied().chain(le.map(|l| ("le", l))) {
                if !first {
                    self.out.push(',');
                }
                first = false;
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.tail(value, at);
    }

    /// One sample of the current (counter or gauge) family whose labels were rendered once
    /// with [`push_label`] (a series' labels repeat in every family: rendering them once
    /// keeps a large exposition cheap).
    pub fn sample_block(&mut self, block: &str, value: f64, at: Option<SystemTime>) {
        self.out.push_str(&self.family);
        if (self.format, self.kind) == (Format::OpenMetrics, Kind::Counter) {
            self.out.push_str("_total");
        }
        if !block.is_empty() {
            self.out.push('{');
            self.out.push_str(block);
            self.out.push('}');
        }
        self.tail(value, at);
    }

    /// The value, the timestamp and the line end.
    fn tail(&mut self, value: f64, at: Option<SystemTime>) {
        self.out.push(' ');
        push_float(&mut self.out, value);
        if let Some(t) = at {
            let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            let _ = match self.format {
                Format::Text => write!(self.out, " {}", d.as_millis()),
                Format::OpenMetrics => {
                    write!(self.out, " {}.{:03}", d.as_secs(), d.subsec_millis())
                }
            };
        }
        self.out.push('\n');
        self.flush_full();
    }

    /// The finished exposition; when streaming, the rest goes to the sink and this is empty.
    pub fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        match self.sink.as_mut() {
            Some(sink) => {
                if !self.out.is_empty() {
                    sink(std::mem::take(&mut self.out));
                }
                String::new()
            }
            None => self.out,
        }
    }
}

/// `k="v",...` with values escaped (the tests' reference for blocks built label by label).
#[cfg(test)]
pub fn label_block(labels: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum());
    for (k, v) in labels {
        push_label(&mut out, k, v);
    }
    out
}

/// Appends `k="v"` (value escaped) to a label block, after a comma unless it is the first.
pub fn push_label(out: &mut String, k: &str, v: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(k);
    out.push_str("=\"");
    escape_label_into(out, v);
    out.push('"');
}

fn push_float(out: &mut String, v: f64) {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else {
        out.push_str(&fmt_float(v));
    }
}

fn fmt_float(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_into(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_kubelet_name_in_text_and_gain_total_in_openmetrics() {
        let mut e = Encoder::new(Format::Text, 0);
        e.family("kubelet_evictions", "Evictions.", Kind::Counter);
        e.sample(&[("eviction_signal", "memory.available")], 2.0, None);
        let t = e.finish();
        assert!(t.contains("# TYPE kubelet_evictions counter\n"), "{t}");
        assert!(t.contains("kubelet_evictions{eviction_signal=\"memory.available\"} 2\n"));
        let mut e = Encoder::new(Format::OpenMetrics, 0);
        e.family("container_cpu_usage_seconds_total", "CPU.", Kind::Counter);
        e.sample(
            &[],
            1.5,
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500)),
        );
        let t = e.finish();
        assert!(
            t.contains("# TYPE container_cpu_usage_seconds counter\n"),
            "{t}"
        );
        assert!(
            t.contains("container_cpu_usage_seconds_total 1.5 1.500\n"),
            "{t}"
        );
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Encoder::new(Format::Text, 0);
        e.family("g", "a\nb", Kind::Gauge);
        e.sample(&[("l", "q\"\\\n")], 0.25, None);
        assert_eq!(
            e.finish(),
            "# HELP g a\\nb\n# TYPE g gauge\ng{l=\"q\\\"\\\\\\n\"} 0.25\n"
        );
    }

    #[test]
    fn a_streaming_encoder_writes_the_same_text_in_chunks_of_whole_lines() {
        let write = |e: &mut Encoder| {
            e.family("g", "G.", Kind::Gauge);
            for i in 0..20_000 {
                e.sample(&[("i", &i.to_string())], f64::from(i), None);
            }
        };
        let mut whole = Encoder::new(Format::OpenMetrics, 0);
        write(&mut whole);
        let whole = whole.finish();
        let chunks = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let into = chunks.clone();
        let mut e = Encoder::streaming(
            Format::OpenMetrics,
            Box::new(move |c| into.lock().expect("lock").push(c)),
        );
        write(&mut e);
        assert_eq!(e.finish(), "");
        let chunks = chunks.lock().expect("lock");
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        assert!(
            chunks
                .iter()
                .all(|c| c.ends_with('\n') && c.len() < CHUNK + 200)
        );
        assert_eq!(chunks.concat(), whole);
    }

    #[test]
    fn histograms_end_with_inf_sum_and_count() {
        let mut e = Encoder::new(Format::Text, 0);
        e.family("h", "H.", Kind::Histogram);
        e.histogram(&[("op", "x")], &[(0.5, 1), (1.0, 2)], 1.2, 3);
        let t = e.finish();
        assert!(t.contains("h_bucket{op=\"x\",le=\"0.5\"} 1\n"), "{t}");
        assert!(t.contains(
            "h_bucket{op=\"x\",le=\"+Inf\"} 3\nh_sum{op=\"x\"} 1.2\nh_count{op=\"x\"} 3\n"
        ));
    }
}
