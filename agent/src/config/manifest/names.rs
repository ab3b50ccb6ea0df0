//! The API server's name checks (apimachinery validation: DNS labels and subdomains, port
//! and sysctl names, path backsteps).

/// An RFC 1123 label: lowercase alphanumerics and '-', at most 63 characters.
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// IANA service name (validation IsValidPortName).
pub(super) fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

/// Sysctl names (validation.go IsValidSysctlName): segments of `[a-z0-9]([-_a-z0-9]*[a-z0-9])?`
/// separated by '.' or '/'.
pub(super) fn is_sysctl_name(s: &str) -> bool {
    s.len() <= 253
        && s.split(['.', '/']).all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
                && !seg.starts_with(['-', '_'])
                && !seg.ends_with(['-', '_'])
        })
}

/// Whether a path has a `..` element (validation.go validatePathNoBacksteps).
pub(super) fn has_backstep(p: &str) -> bool {
    p.split('/').any(|part| part == "..")
}
