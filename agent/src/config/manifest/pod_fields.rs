//! Pod-wide fields of a static pod manifest: metadata, DNS and the pod security context,
//! validated as the API server words them (pkg/apis/core/validation).

use super::*;

/// Name, namespace, labels and annotations.
pub(super) fn validate_metadata(pod: &Pod, errs: &mut Errs) {
    match pod.metadata.name.as_deref() {
        None | Some("") => errs
            .0
            .push("metadata.name: Required value: name or generateName is required".into()),
        Some(n) if !is_dns_subdomain(n) => errs.invalid(
            "metadata.name",
            n,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
        ),
        _ => {}
    }
    if let Some(ns) = pod.metadata.namespace.as_deref()
        && !ns.is_empty()
        && !is_dns_label(ns)
    {
        errs.invalid("metadata.namespace", ns, "a lowercase RFC 1123 label");
    }
    // The UID names the pod's directory under <root-dir>/pods, its log directory and its cgroup,
    // and those are removed recursively when the pod goes: "/", "." or ".." must never get there.
    if let Some(uid) = pod.metadata.uid.as_deref()
        && !uid.is_empty()
        && (uid.len() > MAX_UID_LEN
            || !uid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        errs.invalid(
            "metadata.uid",
            uid,
            "must be at most 128 characters of letters, digits, '-' and '_' (it names directories and cgroups)",
        );
    }
}

/// `spec.hostnameOverride` as the API server checks it (ValidateHostnameOverride).
pub(super) fn validate_hostname_override(spec: &PodSpec, errs: &mut Errs) {
    let Some(h) = spec.hostname_override.as_deref() else {
        return;
    };
    if spec.set_hostname_as_fqdn == Some(true) {
        errs.forbidden(
            "spec.hostnameOverride",
            "may not be specified when setHostnameAsFQDN is true",
        );
    }
    if spec.host_network == Some(true) {
        errs.forbidden(
            "spec.hostnameOverride",
            "may not be specified when hostNetwork is true",
        );
    }
    if h.len() > 64 {
        errs.invalid(
            "spec.hostnameOverride",
            h,
            "must have at most 64 characters",
        );
    }
    if !is_dns_subdomain(h) {
        errs.invalid("spec.hostnameOverride", h, "a lowercase RFC 1123 subdomain");
    }
}

/// dnsPolicy and dnsConfig (nameservers, searches, options).
pub(super) fn validate_dns(spec: &PodSpec, errs: &mut Errs) {
    const POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    let policy = spec.dns_policy.as_deref();
    if let Some(p) = policy
        && !POLICIES.contains(&p)
    {
        errs.unsupported("spec.dnsPolicy", p, POLICIES);
    }
    let Some(cfg) = spec.dns_config.as_ref() else {
        if policy == Some("None") {
            errs.0.push(
                "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
                    .into(),
            );
        }
        return;
    };
    let servers = cfg.nameservers.as_deref().unwrap_or(&[]);
    if servers.len() > MAX_DNS_NAMESERVERS {
        errs.invalid(
            "spec.dnsConfig.nameservers",
            servers,
            "must not have more than 3 nameservers",
        );
    }
    for (i, s) in servers.iter().enumerate() {
        if s.parse::<IpAddr>().is_err() {
            errs.invalid(
                format!("spec.dnsConfig.nameservers[{i}]"),
                s,
                "must be a valid IP address",
            );
        }
    }
    if policy == Some("None") && servers.is_empty() {
        errs.0.push(
            "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"
                .into(),
        );
    }
    let searches = cfg.searches.as_deref().unwrap_or(&[]);
    if searches.len() > MAX_DNS_SEARCHES {
        errs.invalid(
            "spec.dnsConfig.searches",
            searches.len(),
            "must not have more than 32 search paths",
        );
    }
    for (i, s) in searches.iter().enumerate() {
        let name = s.strip_suffix('.').unwrap_or(s);
        if !is_dns_subdomain(name) {
            errs.invalid(
                format!("spec.dnsConfig.searches[{i}]"),
                s,
                "a lowercase RFC 1123 subdomain",
            );
        }
    }
    for (i, o) in cfg.options.iter().flatten().enumerate() {
        if o.name.as_deref().is_none_or(str::is_empty) {
            errs.required(format!("spec.dnsConfig.options[{i}].name"));
        }
    }
}

/// The pod securityContext: user, group and supplemental group ids, sysctls.
pub(super) fn validate_pod_security(spec: &PodSpec, errs: &mut Errs) {
    let Some(sc) = spec.security_context.as_ref() else {
        return;
    };
    let at = "spec.securityContext";
    for (field, id) in [
        ("runAsUser", sc.run_as_user),
        ("runAsGroup", sc.run_as_group),
        ("fsGroup", sc.fs_group),
    ] {
        check_id(format!("{at}.{field}"), id, errs);
    }
    for (i, g) in sc.supplemental_groups.iter().flatten().enumerate() {
        check_id(format!("{at}.supplementalGroups[{i}]"), Some(*g), errs);
    }
    let mut seen = HashSet::new();
    for (i, s) in sc.sysctls.iter().flatten().enumerate() {
        let name_at = format!("{at}.sysctls[{i}].name");
        if s.name.is_empty() {
            errs.required(name_at);
        } else if !is_sysctl_name(&s.name) {
            errs.invalid(
                name_at,
                &s.name,
                "must have at most 253 characters and consist of lowercase alphanumeric segments separated by '.' or '/'",
            );
        } else if !seen.insert(s.name.as_str()) {
            errs.duplicate(name_at, &s.name);
        }
    }
}

/// A user or group id in the allowed range.
pub(super) fn check_id(at: String, id: Option<i64>, errs: &mut Errs) {
    if let Some(id) = id
        && !(0..=MAX_ID).contains(&id)
    {
        errs.invalid(at, id, "must be between 0 and 2147483647, inclusive");
    }
}
