//! Kubernetes resource quantities ("100m", "64Mi", "1.5", "2e3") as plain integers
//! (apimachinery pkg/api/resource/quantity.go), enough for CPU millicores and memory bytes.

/// Largest CPU amount nodelet accepts, in millicores (a billion CPUs): the runtime manager's
/// CFS quota (millicores × the 100 000 µs period) and shares (× 1024) then stay within `i64`.
pub const MAX_MILLI_CPU: i64 = 1_000_000_000_000;
/// Largest value of any other resource nodelet accepts (4Pi): the OOM score adjustment
/// (1000 × the memory request) and the downward API's rounding then stay within `i64`.
pub const MAX_VALUE: i64 = 1 << 52;

/// Parses a quantity into its value scaled by `10^-scale_exp`... in practice: `milli = true`
/// gives thousandths (CPU millicores), `milli = false` gives units rounded up (bytes).
pub fn parse(s: &str, milli: bool) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let number: f64 = num.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let v = number * factor * if milli { 1000.0 } else { 1.0 };
    if !v.is_finite() || v < 0.0 || v > i64::MAX as f64 {
        return None;
    }
    // Quantities round up, never down (quantity.go: "will be rounded up").
    Some(v.ceil() as i64)
}

/// A byte count as resource.Quantity prints a BinarySI quantity (`2Mi`, `1Gi`, `1000`): the
/// node's capacities, the `hugepages-<size>` names, the limits eviction messages quote.
pub fn binary_si(bytes: u64) -> String {
    if bytes == 0 {
        return "0".into();
    }
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        if bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(parse("100m", true), Some(100));
        assert_eq!(parse("1", true), Some(1000));
        assert_eq!(parse("0.5", true), Some(500));
        assert_eq!(parse("2e0", true), Some(2000));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(parse("64Mi", false), Some(64 << 20));
        assert_eq!(parse("1G", false), Some(1_000_000_000));
        assert_eq!(parse("128974848", false), Some(128_974_848));
        assert_eq!(parse("1.5Ki", false), Some(1536));
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in ["", "Mi", "12Q", "-1", "1..2"] {
            assert_eq!(parse(bad, false), None, "{bad}");
        }
    }
}
