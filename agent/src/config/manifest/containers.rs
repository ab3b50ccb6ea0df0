//! Containers of a static pod manifest: resources, env, ports, validated as the API server
//! words them.

use super::*;

/// One container (regular or init) at field path `at`.
pub(super) fn validate_container(c: &Container, at: &str, wide: &mut PodWide<'_>, errs: &mut Errs) {
    if c.name.is_empty() {
        errs.required(format!("{at}.name"));
    } else if !is_dns_label(&c.name) {
        errs.invalid(format!("{at}.name"), &c.name, "a lowercase RFC 1123 label");
    } else if !wide.names.insert(c.name.clone()) {
        errs.duplicate(format!("{at}.name"), &c.name);
    }
    match c.image.as_deref() {
        None => errs.required(format!("{at}.image")),
        Some(i) if i.trim().is_empty() => errs.required(format!("{at}.image")),
        Some(i) if i.trim() != i => errs.invalid(
            format!("{at}.image"),
            i,
            "must not have leading or trailing whitespace",
        ),
        Some(_) => {}
    }
    if let Some(p) = c.image_pull_policy.as_deref()
        && !["Always", "IfNotPresent", "Never"].contains(&p)
    {
        errs.unsupported(
            format!("{at}.imagePullPolicy"),
            p,
            &["Always", "IfNotPresent", "Never"],
        );
    }
    if let Some(p) = c.termination_message_policy.as_deref()
        && !["File", "FallbackToLogsOnError"].contains(&p)
    {
        errs.unsupported(
            format!("{at}.terminationMessagePolicy"),
            p,
            &["File", "FallbackToLogsOnError"],
        );
    }
    let init = at.starts_with("spec.initContainers");
    lifecycle::validate(c, at, init, errs);
    validate_resources(c, at, errs);
    validate_env(c, at, errs);
    validate_ports(c, at, wide, errs);
    validate_mounts(c, at, wide, errs);
    let sidecar = c.restart_policy.as_deref() == Some("Always");
    probes::validate(c, at, init && !sidecar, errs);
    if let Some(sc) = c.security_context.as_ref() {
        check_id(
            format!("{at}.securityContext.runAsUser"),
            sc.run_as_user,
            errs,
        );
        check_id(
            format!("{at}.securityContext.runAsGroup"),
            sc.run_as_group,
            errs,
        );
        if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
            errs.invalid(
                format!("{at}.securityContext"),
                "privileged",
                "cannot set `allowPrivilegeEscalation` to false and `privileged` to true",
            );
        }
    }
}

/// Requests and limits: known resources, valid quantities, requests within limits.
pub(super) fn validate_resources(c: &Container, at: &str, errs: &mut Errs) {
    let Some(r) = c.resources.as_ref() else {
        return;
    };
    let mut parsed: [BTreeMap<&str, i64>; 2] = Default::default();
    for (slot, (kind, map)) in [("limits", &r.limits), ("requests", &r.requests)]
        .into_iter()
        .enumerate()
    {
        for (res, q) in map.iter().flatten() {
            let field = format!("{at}.resources.{kind}[{res}]");
            let cpu = res == "cpu";
            match quantity::parse(&q.0, cpu) {
                None => errs.invalid(field, &q.0, "must be a valid quantity"),
                Some(v) if cpu && v > quantity::MAX_MILLI_CPU => errs.invalid(
                    field,
                    &q.0,
                    "must be at most 1G CPUs (nodelet's CPU arithmetic limit)",
                ),
                Some(v) if !cpu && v > quantity::MAX_VALUE => errs.invalid(
                    field,
                    &q.0,
                    "must be at most 4Pi (nodelet's arithmetic limit)",
                ),
                Some(v) => {
                    parsed[slot].insert(res.as_str(), v);
                }
            }
        }
    }
    let [limits, requests] = &parsed;
    for (res, req) in requests {
        if let Some(lim) = limits.get(res)
            && req > lim
        {
            let limit_text = r
                .limits
                .as_ref()
                .and_then(|m| m.get(*res))
                .map_or("", |q| q.0.as_str());
            errs.invalid(
                format!("{at}.resources.requests[{res}]"),
                r.requests
                    .as_ref()
                    .and_then(|m| m.get(*res))
                    .map_or("", |q| q.0.as_str()),
                &format!("must be less than or equal to {res} limit of {limit_text}"),
            );
        }
    }
}

/// Env names and sources, envFrom.
pub(super) fn validate_env(c: &Container, at: &str, errs: &mut Errs) {
    if c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.forbidden(
            format!("{at}.envFrom"),
            "static pods may not reference configmaps or secrets",
        );
    }
    for (i, var) in c.env.iter().flatten().enumerate() {
        let at = format!("{at}.env[{i}]");
        if var.name.is_empty() {
            errs.required(format!("{at}.name"));
        } else if !var
            .name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
        {
            errs.invalid(
                format!("{at}.name"),
                &var.name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            );
        }
        let Some(from) = var.value_from.as_ref() else {
            continue;
        };
        if var.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.invalid(
                format!("{at}.valueFrom"),
                "",
                "may not be specified when `value` is not empty",
            );
        }
        let set = [
            from.field_ref.is_some(),
            from.resource_field_ref.is_some(),
            from.config_map_key_ref.is_some(),
            from.secret_key_ref.is_some(),
            from.file_key_ref.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            0 => errs.0.push(format!(
                "{at}.valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`"
            )),
            1 => {}
            _ => errs.0.push(format!(
                "{at}.valueFrom: Invalid value: \"\": may not have more than one field specified at a time"
            )),
        }
        if let Some(f) = from.field_ref.as_ref() {
            let fat = format!("{at}.valueFrom.fieldRef");
            if let Some(v) = f.api_version.as_deref()
                && !v.is_empty()
                && v != "v1"
            {
                errs.unsupported(format!("{fat}.apiVersion"), v, &["v1"]);
            }
            if f.field_path.is_empty() {
                errs.required(format!("{fat}.fieldPath"));
            } else if !env_field_path_ok(&f.field_path) {
                let mut supported = ENV_FIELD_PATHS.to_vec();
                supported.extend(["metadata.labels['<KEY>']", "metadata.annotations['<KEY>']"]);
                errs.unsupported(format!("{fat}.fieldPath"), &f.field_path, &supported);
            }
        }
        if let Some(r) = from.resource_field_ref.as_ref() {
            let rat = format!("{at}.valueFrom.resourceFieldRef");
            if r.resource.is_empty() {
                errs.required(format!("{rat}.resource"));
            } else if !ENV_RESOURCE_FIELDS.contains(&r.resource.as_str()) {
                errs.unsupported(format!("{rat}.resource"), &r.resource, ENV_RESOURCE_FIELDS);
            }
            if let Some(name) = r.container_name.as_deref()
                && !name.is_empty()
                && name != c.name
            {
                errs.forbidden(
                    format!("{rat}.containerName"),
                    "nodelet resolves resourceFieldRef against the container's own resources only",
                );
            }
            if let Some(d) = r.divisor.as_ref() {
                let cpu = r.resource.contains("cpu");
                if !divisor_ok(&d.0, cpu) {
                    errs.invalid(
                        format!("{rat}.divisor"),
                        &d.0,
                        if cpu {
                            "only divisor's values 1m and 1 are supported with the cpu resource"
                        } else {
                            "only divisor's values 1, 1k, 1M, 1G, 1T, 1P, 1E, 1Ki, 1Mi, 1Gi, 1Ti, 1Pi, 1Ei are supported with the memory resource"
                        },
                    );
                }
            }
        }
        if from.config_map_key_ref.is_some() || from.secret_key_ref.is_some() {
            errs.forbidden(
                format!("{at}.valueFrom"),
                "static pods may not reference configmaps or secrets",
            );
        }
        if from.file_key_ref.is_some() {
            errs.forbidden(
                format!("{at}.valueFrom.fileKeyRef"),
                "not supported by nodelet yet",
            );
        }
    }
}

/// `metadata.labels['key']` and `metadata.annotations['key']` besides the plain fields.
pub(super) fn env_field_path_ok(path: &str) -> bool {
    if ENV_FIELD_PATHS.contains(&path) {
        return true;
    }
    ["metadata.labels['", "metadata.annotations['"]
        .iter()
        .any(|prefix| {
            path.strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix("']"))
                .is_some_and(|key| !key.is_empty())
        })
}

/// The divisors the API server allows (validation.go validateContainerResourceDivisor).
pub(super) fn divisor_ok(q: &str, cpu: bool) -> bool {
    let Some(v) = quantity::parse(q, cpu) else {
        return false;
    };
    if cpu {
        return v == 1 || v == 1000;
    }
    let decimal = (0..=6).map(|e| 1000i64.pow(e));
    let binary = (1..=6).map(|e| 1i64 << (10 * e));
    decimal.chain(binary).any(|d| d == v)
}

/// Container ports: numbers, host ports and IPs, protocols, names.
pub(super) fn validate_ports(c: &Container, at: &str, wide: &mut PodWide<'_>, errs: &mut Errs) {
    let mut names = HashSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let at = format!("{at}.ports[{i}]");
        if let Some(n) = p.name.as_deref() {
            if !is_port_name(n) {
                errs.invalid(
                    format!("{at}.name"),
                    n,
                    "must be at most 15 characters of lowercase letters, digits and '-', with at least one letter",
                );
            } else if !names.insert(n) {
                errs.duplicate(format!("{at}.name"), n);
            }
        }
        if !(1..=65535).contains(&p.container_port) {
            errs.invalid(
                format!("{at}.containerPort"),
                p.container_port,
                "must be between 1 and 65535, inclusive",
            );
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            errs.unsupported(format!("{at}.protocol"), protocol, &["SCTP", "TCP", "UDP"]);
        }
        let host_ip = p.host_ip.as_deref().unwrap_or("");
        if !host_ip.is_empty() && host_ip.parse::<IpAddr>().is_err() {
            errs.invalid(
                format!("{at}.hostIP"),
                host_ip,
                "must be a valid IP address",
            );
        }
        let host_port = p.host_port.unwrap_or(0);
        if host_port == 0 {
            continue;
        }
        if !(1..=65535).contains(&host_port) {
            errs.invalid(
                format!("{at}.hostPort"),
                host_port,
                "must be between 1 and 65535, inclusive",
            );
        } else if wide.host_network && host_port != p.container_port {
            errs.invalid(
                format!("{at}.hostPort"),
                host_port,
                "must match `containerPort` when `hostNetwork` is true",
            );
        } else if !wide
            .host_ports
            .insert(format!("{protocol}/{host_ip}/{host_port}"))
        {
            errs.duplicate(format!("{at}.hostPort"), format!("{host_port}/{protocol}"));
        }
    }
}
