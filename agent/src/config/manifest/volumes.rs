//! Volumes and volume mounts of a static pod manifest, validated as the API server words them.

use super::*;

/// One volume: its name (unique in the pod) and exactly one supported source.
pub(super) fn validate_volume<'a>(
    v: &'a Volume,
    at: &str,
    wide: &mut PodWide<'a>,
    errs: &mut Errs,
) {
    if v.name.is_empty() {
        errs.required(format!("{at}.name"));
    } else if !is_dns_label(&v.name) {
        // The name is a directory under the pod's volumes directory.
        errs.invalid(format!("{at}.name"), &v.name, "a lowercase RFC 1123 label");
    } else if !wide.volumes.insert(v.name.as_str()) {
        errs.duplicate(format!("{at}.name"), &v.name);
    }
    // The source is whichever field besides `name` is set; the JSON form lists exactly those.
    let kinds: Vec<String> = match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    };
    let kinds: Vec<&str> = kinds
        .iter()
        .map(String::as_str)
        .filter(|k| *k != "name")
        .collect();
    match kinds.as_slice() {
        [] => errs
            .0
            .push(format!("{at}: Required value: must specify a volume type")),
        [kind] if !SUPPORTED_VOLUMES.contains(kind) => {
            errs.unsupported(format!("{at}.{kind}"), kind, SUPPORTED_VOLUMES)
        }
        [_] => {}
        [_, second, ..] => errs.forbidden(
            format!("{at}.{second}"),
            "may not specify more than 1 volume type",
        ),
    }
    for (i, f) in v
        .downward_api
        .iter()
        .flat_map(|d| d.items.iter().flatten())
        .enumerate()
    {
        let at = format!("{at}.downwardAPI.items[{i}]");
        if f.path.is_empty() {
            errs.required(format!("{at}.path"));
        } else if f.path.starts_with('/') || has_backstep(&f.path) || f.path.starts_with("..") {
            errs.invalid(
                format!("{at}.path"),
                &f.path,
                "must be a relative path without '..' that does not start with '..'",
            );
        }
        match (f.field_ref.as_ref(), f.resource_field_ref.as_ref()) {
            (Some(r), None) => {
                let base = r.field_path.split("['").next().unwrap_or_default();
                if !VOLUME_FIELD_PATHS.contains(&base)
                    || (base != r.field_path.as_str()
                        && !matches!(base, "metadata.labels" | "metadata.annotations"))
                {
                    errs.unsupported(
                        format!("{at}.fieldRef.fieldPath"),
                        &r.field_path,
                        VOLUME_FIELD_PATHS,
                    );
                }
            }
            (None, Some(r)) if r.container_name.as_deref().unwrap_or_default().is_empty() => {
                errs.required(format!("{at}.resourceFieldRef.containerName"));
            }
            (None, Some(_)) => {}
            _ => errs.0.push(format!(
                "{at}: Invalid value: \"\": fieldRef and resourceFieldRef can not be specified simultaneously, and one of them is required"
            )),
        }
    }
    if let Some(hp) = v.host_path.as_ref() {
        if hp.path.is_empty() {
            errs.required(format!("{at}.hostPath.path"));
        } else if has_backstep(&hp.path) {
            errs.invalid(
                format!("{at}.hostPath.path"),
                &hp.path,
                "must not contain '..'",
            );
        }
        if let Some(t) = hp.type_.as_deref()
            && !HOST_PATH_TYPES.contains(&t)
        {
            errs.unsupported(format!("{at}.hostPath.type"), t, HOST_PATH_TYPES);
        }
    }
}

/// volumeMounts: known volumes, absolute unique paths, subPath without backsteps.
pub(super) fn validate_mounts(c: &Container, at: &str, wide: &PodWide<'_>, errs: &mut Errs) {
    let privileged = c
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
    let mut paths = HashSet::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        let at = format!("{at}.volumeMounts[{j}]");
        if m.name.is_empty() {
            errs.required(format!("{at}.name"));
        } else if !wide.volumes.contains(m.name.as_str()) {
            errs.not_found(format!("{at}.name"), &m.name);
        }
        if m.mount_path.is_empty() {
            errs.required(format!("{at}.mountPath"));
        } else if !paths.insert(m.mount_path.as_str()) {
            errs.invalid(format!("{at}.mountPath"), &m.mount_path, "must be unique");
        }
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            // The host side is <volume>/<subPath>: an absolute subPath would replace the volume.
            if sub.starts_with('/') {
                errs.invalid(format!("{at}.subPath"), sub, "must be a relative path");
            } else if has_backstep(sub) {
                errs.invalid(format!("{at}.subPath"), sub, "must not contain '..'");
            }
        }
        if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
            errs.forbidden(format!("{at}.subPathExpr"), "not supported by nodelet yet");
        }
        match m.mount_propagation.as_deref() {
            None | Some("None") | Some("HostToContainer") => {}
            Some("Bidirectional") if !privileged => errs.forbidden(
                format!("{at}.mountPropagation"),
                "Bidirectional mount propagation is available only to privileged containers",
            ),
            Some("Bidirectional") => {}
            Some(other) => errs.unsupported(
                format!("{at}.mountPropagation"),
                other,
                &["Bidirectional", "HostToContainer", "None"],
            ),
        }
    }
}
