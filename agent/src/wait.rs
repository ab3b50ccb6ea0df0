//! Jitter for retries and periods (apimachinery's `wait.Jitter`), so nodes and pods do not
//! call in lockstep. One source of randomness for the agent: std's per-process random hash
//! keys mixed with the clock, as no rand crate is needed for a few draws a second.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// A random number in [0, 1).
pub fn unit_random() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// `d` stretched by up to `factor` of itself (wait.Jitter).
pub fn jitter(d: Duration, factor: f64) -> Duration {
    d + d.mul_f64(factor * unit_random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_factor() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(10), 0.04);
            assert!(
                j >= Duration::from_secs(10) && j < Duration::from_millis(10_400),
                "{j:?}"
            );
            let r = unit_random();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
