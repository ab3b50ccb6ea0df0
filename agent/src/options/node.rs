//! Node registration settings: `--node-labels` and `--register-with-taints` /
//! `registerWithTaints`, parsed and checked as the kubelet does before it starts
//! (cmd/kubelet/app/options ValidateKubeletFlags, pkg/util/taints ParseTaints,
//! k8s.io/kubelet/pkg/apis well_known_labels.go). A node whose labels or taints the API server
//! would refuse never starts: the error names the flag or field and the bad entry.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A taint the node registers with (core/v1 Taint without `timeAdded`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// Taint key (a qualified name).
    pub key: String,
    /// Taint value (a label value; may be empty).
    #[serde(default)]
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
    /// Must be absent: the kubelet refuses `timeAdded` in registerWithTaints.
    #[serde(default)]
    pub time_added: Option<String>,
}

/// Labels the kubelet sets itself, which `--node-labels` may also set (kubeletLabels).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// Label namespaces a node may set on itself (kubeletLabelNamespaces); the NodeRestriction
/// admission plugin refuses other `kubernetes.io` / `k8s.io` labels from a node.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The taint effects the API accepts.
const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Parses `--node-labels` (`k=v,k2=v2`, pflag's ConfigurationMap) and checks every label as
/// the kubelet does. `Err((entry, reason))` names the offending entry.
pub fn parse_node_labels(s: &str) -> Result<BTreeMap<String, String>, (String, String)> {
    let mut out = BTreeMap::new();
    for entry in s.split(',') {
        if entry.trim().is_empty() {
            continue;
        }
        let (k, v) = match entry.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => (entry.trim(), ""),
        };
        if let Err(why) = qualified_name(k) {
            return Err((entry.to_owned(), format!("label key: {why}")));
        }
        if let Err(why) = label_value(v) {
            return Err((entry.to_owned(), format!("label value: {why}")));
        }
        if is_kubernetes_label(k) && !is_kubelet_label(k) {
            return Err((
                entry.to_owned(),
                format!(
                    "labels in the 'kubernetes.io' and 'k8s.io' namespaces must begin with an \
                     allowed prefix ({}) or be in the allowed set ({})",
                    KUBELET_LABEL_NAMESPACES.join(", "),
                    KUBELET_LABELS.join(", ")
                ),
            ));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Parses `--register-with-taints` (`key=value:Effect,key2:Effect`) as ParseTaints: every
/// taint needs an effect, no two share key and effect.
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, (String, String)> {
    let mut out: Vec<Taint> = Vec::new();
    for spec in s.split(',').filter(|e| !e.is_empty()) {
        let bad = |why: String| (spec.to_owned(), why);
        let (kv, effect) = match spec.split(':').collect::<Vec<_>>()[..] {
            [kv, effect] => (kv, effect),
            [_] => return Err(bad("a taint needs an effect (key=value:Effect)".into())),
            _ => return Err(bad("not key=value:Effect".into())),
        };
        let (key, value) = match kv.split('=').collect::<Vec<_>>()[..] {
            [k] => (k, ""),
            [k, v] => (k, v),
            _ => return Err(bad("not key=value:Effect".into())),
        };
        let t = Taint {
            key: key.to_owned(),
            value: value.to_owned(),
            effect: effect.to_owned(),
            time_added: None,
        };
        check_taint(&t).map_err(bad)?;
        if out.iter().any(|o| o.key == t.key && o.effect == t.effect) {
            return Err(bad("duplicated taints with the same key and effect".into()));
        }
        out.push(t);
    }
    Ok(out)
}

/// Checks one taint as the kubelet's config validation (CheckTaintValidation; no timeAdded).
pub fn check_taint(t: &Taint) -> Result<(), String> {
    qualified_name(&t.key).map_err(|why| format!("taint key: {why}"))?;
    label_value(&t.value).map_err(|why| format!("taint value: {why}"))?;
    if !EFFECTS.contains(&t.effect.as_str()) {
        return Err(format!(
            "taint effect {:?} is not one of {}",
            t.effect,
            EFFECTS.join(", ")
        ));
    }
    if t.time_added.is_some() {
        return Err("timeAdded must not be set".into());
    }
    Ok(())
}

fn namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn is_kubernetes_label(key: &str) -> bool {
    let ns = namespace(key);
    ns == "kubernetes.io"
        || ns.ends_with(".kubernetes.io")
        || ns == "k8s.io"
        || ns.ends_with(".k8s.io")
}

fn is_kubelet_label(key: &str) -> bool {
    let ns = namespace(key);
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|a| ns == *a || ns.ends_with(&format!(".{a}")))
}

/// apimachinery's qualifiedNameFmt: alphanumerics, '-', '_', '.', starting and ending
/// alphanumeric.
fn name_part(s: &str, max: usize) -> Result<(), String> {
    let ok_edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > max {
        return Err(format!("must be no more than {max} characters"));
    }
    if !ok_edge(s.chars().next())
        || !ok_edge(s.chars().last())
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{s:?} must consist of alphanumeric characters, '-', '_' or '.', and must start and \
             end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// IsQualifiedName: `[prefix/]name`, prefix a DNS-1123 subdomain.
fn qualified_name(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => return Err(format!("{s:?} has more than one '/'")),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if p.len() > 253 || !p.split('.').all(label_ok) {
            return Err(format!("prefix {p:?} is not a DNS subdomain"));
        }
    }
    name_part(name, 63)
}

/// IsValidLabelValue: empty, or a name part of at most 63 characters.
fn label_value(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Ok(());
    }
    name_part(s, 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_parse_as_pflag_configuration_maps() {
        let l = parse_node_labels("a=1, example.com/role=edge,node.kubernetes.io/pool=x,flag")
            .expect("valid");
        assert_eq!(l.get("a").map(String::as_str), Some("1"));
        assert_eq!(l.get("example.com/role").map(String::as_str), Some("edge"));
        assert_eq!(
            l.get("node.kubernetes.io/pool").map(String::as_str),
            Some("x")
        );
        assert_eq!(l.get("flag").map(String::as_str), Some(""));
        assert!(parse_node_labels("").expect("empty").is_empty());
    }

    #[test]
    fn node_restriction_refused_labels_are_rejected_before_start() {
        let (entry, why) =
            parse_node_labels("ok=1,node-role.kubernetes.io/master=").expect_err("refused");
        assert_eq!(entry, "node-role.kubernetes.io/master=");
        assert!(why.contains("allowed prefix"), "{why}");
        assert!(parse_node_labels("kubernetes.io/hostname=h").is_ok());
        assert!(parse_node_labels("x.kubelet.kubernetes.io/a=b").is_ok());
        assert!(parse_node_labels("k8s.io/anything=b").is_err());
    }

    #[test]
    fn malformed_labels_name_the_entry() {
        assert!(parse_node_labels("-bad=1").is_err());
        assert!(parse_node_labels("a/b/c=1").is_err());
        assert!(parse_node_labels("Upper.Case/x=1").is_err());
        let (entry, why) = parse_node_labels("k=has space").expect_err("bad value");
        assert_eq!(entry, "k=has space");
        assert!(why.contains("label value"), "{why}");
        assert!(parse_node_labels(&format!("k={}", "v".repeat(64))).is_err());
    }

    #[test]
    fn taints_parse_as_parse_taints() {
        let t = parse_taints("dedicated=gpu:NoSchedule,example.com/drain:NoExecute").expect("ok");
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].key.as_str(), t[0].value.as_str(), t[0].effect.as_str()),
            ("dedicated", "gpu", "NoSchedule")
        );
        assert_eq!(
            (t[1].key.as_str(), t[1].value.as_str(), t[1].effect.as_str()),
            ("example.com/drain", "", "NoExecute")
        );
        assert!(parse_taints("").expect("empty").is_empty());
    }

    #[test]
    fn bad_taints_are_rejected_with_the_entry() {
        for bad in [
            "noeffect",
            "k=v:Sometimes",
            "a=b=c:NoSchedule",
            "k:NoSchedule:x",
            "k=bad value:NoSchedule",
        ] {
            let (entry, _) = parse_taints(bad).expect_err(bad);
            assert_eq!(entry, bad);
        }
        let (_, why) = parse_taints("k=1:NoSchedule,k=2:NoSchedule").expect_err("duplicate");
        assert!(why.contains("duplicated"), "{why}");
        assert!(parse_taints("k=1:NoSchedule,k=2:NoExecute").is_ok());
    }
}
