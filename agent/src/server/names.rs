//! Name checks for path parameters: a namespace, pod or container name must be a DNS-1123
//! subdomain, so `..`, `/` and NUL (also when URL-encoded) never reach a file path.

use super::error::ApiError;

/// Accepts a DNS-1123 subdomain (lowercase alphanumerics, '-' and '.', at most 253 bytes, no
/// empty or dot-only labels).
pub fn check(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("invalid name {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn traversal_and_separators_are_rejected() {
        for bad in ["..", ".", "../etc", "a/b", "a\0", "", "A", "-a", "a..b"] {
            assert!(super::check(bad).is_err(), "{bad:?}");
        }
        for good in ["default", "kube-system", "web-0.e2e-node", "c"] {
            assert!(super::check(good).is_ok(), "{good:?}");
        }
    }
}
