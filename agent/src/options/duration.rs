//! Go `time.Duration` strings ("20s", "2m", "1h30m", "500ms"), as kubelet flags and
//! KubeletConfiguration fields (`metav1.Duration`) write them.

use std::time::Duration;

/// Parses a Go duration string; returns `None` when it is not one.
pub fn parse(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += value * scale;
    }
    // Go's time.Duration is an int64 of nanoseconds: ParseDuration refuses anything longer
    // (about 292 years), and so do we. Longer values overflowed `Instant + ttl` and `d * 2`
    // in the managers that use them.
    Duration::try_from_secs_f64(total)
        .ok()
        .filter(|d| d.as_nanos() <= MAX_NANOS)
}

/// Longest Go duration, in nanoseconds (math.MaxInt64).
const MAX_NANOS: u128 = i64::MAX as u128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("20s"), Some(Duration::from_secs(20)));
        assert_eq!(parse("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(
            parse("2562047h"),
            Some(Duration::from_secs(2_562_047 * 3600))
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "20",
            "s",
            "-1s",
            "1x",
            "1s2",
            "2562048h",
            "9999999999999999999s",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
