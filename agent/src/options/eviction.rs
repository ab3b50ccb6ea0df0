//! Eviction and reservation settings: `evictionHard`, `evictionSoft`, `evictionSoftGracePeriod`,
//! `evictionMinimumReclaim`, `evictionPressureTransitionPeriod`, `evictionMaxPodGracePeriod`,
//! `mergeDefaultEvictionSettings`, `kubeReserved`, `systemReserved`, `enforceNodeAllocatable`
//! and their `--eviction-*` / `--*-reserved` flags, parsed as the kubelet does
//! (pkg/kubelet/eviction/helpers.go ParseThresholdConfig, cmd/kubelet/app/server.go
//! parseResourceList and the EvictionHard defaulting in loadConfigFile). Every error names the
//! flag, or the file and field, and the entry at fault.

use super::kubeletconfig::KubeletConfigFile;
use super::{Flags, OptionsError, duration};
use std::collections::BTreeMap;
use std::time::Duration;

/// Quantities as `pod::quantity::parse` reads them. Options sit in the lowest layer beside
/// `pod` and may not import it (agent/tests/layers.rs); this is the same grammar, kept small.
mod quantity {
    /// A quantity as an integer (`milli`: thousandths), rounded up; `None` if malformed or
    /// negative.
    pub fn parse(s: &str, milli: bool) -> Option<i64> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
            .unwrap_or(s.len());
        let (num, suffix) = s.split_at(split);
        let number: f64 = num.parse().ok()?;
        let binary = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
        let decimal = ["k", "M", "G", "T", "P", "E"];
        let factor = match (
            binary.iter().position(|b| *b == suffix),
            decimal.iter().position(|d| *d == suffix),
        ) {
            (Some(i), _) => 1024f64.powi(i as i32 + 1),
            (_, Some(i)) => 1000f64.powi(i as i32 + 1),
            _ if suffix.is_empty() => 1.0,
            _ if suffix == "m" => 1e-3,
            _ if suffix.starts_with(['e', 'E']) => 10f64.powi(suffix[1..].parse().ok()?),
            _ => return None,
        };
        let v = number * factor * if milli { 1000.0 } else { 1.0 };
        (v.is_finite() && v >= 0.0 && v <= i64::MAX as f64).then(|| v.ceil() as i64)
    }
}

/// The kubelet's DefaultEvictionHard on Linux (pkg/kubelet/eviction/defaults_linux.go).
pub const DEFAULT_EVICTION_HARD: &[(&str, &str)] = &[
    ("memory.available", "100Mi"),
    ("nodefs.available", "10%"),
    ("nodefs.inodesFree", "5%"),
    ("imagefs.available", "15%"),
    ("imagefs.inodesFree", "5%"),
];

/// An eviction signal (pkg/kubelet/eviction/api/types.go).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// `memory.available`: capacity minus the node's working set.
    MemoryAvailable,
    /// `allocatableMemory.available`: the pods cgroup's limit minus its working set.
    AllocatableMemoryAvailable,
    /// `nodefs.available`: free bytes on the kubelet's filesystem.
    NodeFsAvailable,
    /// `nodefs.inodesFree`.
    NodeFsInodesFree,
    /// `imagefs.available`: free bytes on the runtime's image filesystem.
    ImageFsAvailable,
    /// `imagefs.inodesFree`.
    ImageFsInodesFree,
    /// `containerfs.available` (the kubelet derives it from nodefs or imagefs).
    ContainerFsAvailable,
    /// `containerfs.inodesFree`.
    ContainerFsInodesFree,
    /// `pid.available`: the task limit minus running processes.
    PidAvailable,
}

impl Signal {
    /// Every signal, in the kubelet's names.
    pub const ALL: [Signal; 9] = [
        Signal::MemoryAvailable,
        Signal::AllocatableMemoryAvailable,
        Signal::NodeFsAvailable,
        Signal::NodeFsInodesFree,
        Signal::ImageFsAvailable,
        Signal::ImageFsInodesFree,
        Signal::ContainerFsAvailable,
        Signal::ContainerFsInodesFree,
        Signal::PidAvailable,
    ];

    /// The kubelet's name (`memory.available`, ...), also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::ContainerFsAvailable => "containerfs.available",
            Signal::ContainerFsInodesFree => "containerfs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// Parses a kubelet signal name.
    pub fn parse(s: &str) -> Option<Signal> {
        Signal::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the signal measures memory.
    pub fn is_memory(self) -> bool {
        matches!(
            self,
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable
        )
    }
}

/// A threshold's value: an absolute quantity or a share of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    /// An absolute amount (bytes, inodes or pids); `binary` when written with a binary suffix
    /// (or none on a byte signal), which decides how messages print it, as Go's Quantity.
    Quantity {
        /// The amount.
        value: i64,
        /// Printed in binary (Ki, Mi) rather than decimal (k, M) units.
        binary: bool,
    },
    /// A fraction of capacity in (0, 1], kept as the kubelet's float32.
    Percentage(f32),
}

impl ThresholdValue {
    /// The amount this value stands for against `capacity` (evictionapi.GetThresholdQuantity).
    pub fn quantity(self, capacity: i64) -> i64 {
        match self {
            ThresholdValue::Quantity { value, .. } => value,
            ThresholdValue::Percentage(p) => (capacity as f64 * f64::from(p)) as i64,
        }
    }
}

/// One eviction threshold (evictionapi.Threshold); the operator is always LessThan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// What is measured.
    pub signal: Signal,
    /// Below what it is met.
    pub value: ThresholdValue,
    /// Zero for a hard threshold; how long a soft one must hold before pods are evicted.
    pub grace_period: Duration,
    /// How much beyond the threshold to reclaim once it is met.
    pub min_reclaim: Option<ThresholdValue>,
}

impl Threshold {
    /// A hard threshold acts at once (isHardEvictionThreshold).
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }
}

/// Resources set aside from allocatable (`kubeReserved`, `systemReserved`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    /// CPU, millicores.
    pub cpu_milli: i64,
    /// Memory, bytes.
    pub memory: i64,
    /// Local ephemeral storage, bytes.
    pub ephemeral_storage: i64,
    /// Process ids.
    pub pid: i64,
}

/// The resolved eviction and allocatable settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionOptions {
    /// Hard then soft thresholds, with minimum reclaims set.
    pub thresholds: Vec<Threshold>,
    /// How long a pressure condition stays after its threshold stops being met (default 5m).
    pub pressure_transition_period: Duration,
    /// Grace period cap for soft evictions, seconds (default 0).
    pub max_pod_grace_period_seconds: i64,
    /// `kubeReserved`.
    pub kube_reserved: Reserved,
    /// `systemReserved`.
    pub system_reserved: Reserved,
    /// `enforceNodeAllocatable` (default `[pods]`).
    pub enforce_node_allocatable: Vec<String>,
}

impl EvictionOptions {
    /// Whether the pods cgroup is limited to allocatable (`pods` in enforceNodeAllocatable).
    pub fn enforce_pods(&self) -> bool {
        self.enforce_node_allocatable.iter().any(|k| k == "pods")
    }

    #[allow(dead_code)]
    /// The hard memory.available threshold in bytes against `capacity` (subtracted from
    /// allocatable, as the kubelet's GetNodeAllocatableReservation does).
    pub fn hard_memory_threshold(&self, capacity: i64) -> i64 {
        self.thresholds
            .iter()
            .filter(|t| t.signal == Signal::MemoryAvailable && t.is_hard())
            .map(|t| t.value.quantity(capacity))
            .max()
            .unwrap_or(0)
    }
}

/// Where one map came from: a flag (its values, in order) or a file field.
struct MapSource {
    /// "flag" or the file label.
    source_name: String,
    /// `--eviction-hard` or `evictionHard`.
    name: &'static str,
    /// Entries as (key, value, text for errors).
    entries: Vec<(String, String, String)>,
}

impl MapSource {
    fn err(&self, entry: &str, reason: impl Into<String>) -> OptionsError {
        OptionsError::InvalidEntry {
            source_name: self.source_name.clone(),
            name: self.name,
            entry: entry.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Splits pflag map values (`k<v,k2<v2` or `k=v,...`; repeated flags accumulate).
fn flag_map(values: &[String], sep: char, name: &'static str) -> Result<MapSource, OptionsError> {
    let mut entries = Vec::new();
    for v in values {
        for s in v.split(',').filter(|s| !s.is_empty()) {
            let Some((k, val)) = s.split_once(sep) else {
                return Err(OptionsError::InvalidEntry {
                    source_name: "flag".into(),
                    name,
                    entry: s.to_owned(),
                    reason: format!("malformed pair, expect string{sep}string"),
                });
            };
            entries.push((k.trim().to_owned(), val.trim().to_owned(), s.to_owned()));
        }
    }
    Ok(MapSource {
        source_name: "flag".into(),
        name,
        entries,
    })
}

fn file_map(m: &BTreeMap<String, String>, file_label: &str, name: &'static str) -> MapSource {
    MapSource {
        source_name: file_label.to_owned(),
        name,
        entries: m
            .iter()
            .map(|(k, v)| (k.clone(), v.clone(), format!("{k}: {v}")))
            .collect(),
    }
}

/// The map from the flag if given, else the file field, else `None`.
fn pick(
    flag: &[String],
    sep: char,
    (flag_name, field): (&'static str, &'static str),
    file: Option<&BTreeMap<String, String>>,
    file_label: &str,
) -> Result<Option<MapSource>, OptionsError> {
    if !flag.is_empty() {
        return flag_map(flag, sep, flag_name).map(Some);
    }
    Ok(file.map(|m| file_map(m, file_label, field)))
}

fn signal_of(src: &MapSource, key: &str, text: &str) -> Result<Signal, OptionsError> {
    Signal::parse(key).ok_or_else(|| src.err(text, format!("unsupported eviction signal {key}")))
}

/// A byte-like quantity: binary when it has a binary suffix or none (Go keeps the format of
/// what was written; plain numbers are DecimalSI, but print the same).
fn parse_quantity(v: &str) -> Option<ThresholdValue> {
    let value = quantity::parse(v, false)?;
    let binary = v.trim_end().ends_with('i');
    Some(ThresholdValue::Quantity { value, binary })
}

fn parse_percentage(v: &str) -> Option<f32> {
    v.strip_suffix('%')?
        .trim()
        .parse::<f32>()
        .ok()
        .map(|p| p / 100.0)
}

/// parseThresholdStatements: a threshold per entry; `0%` and `100%` are ignored.
fn thresholds(src: &MapSource) -> Result<Vec<Threshold>, OptionsError> {
    let mut out = Vec::new();
    for (key, v, text) in &src.entries {
        let signal = signal_of(src, key, text)?;
        let value = if v.ends_with('%') {
            if v == "0%" || v == "100%" {
                continue;
            }
            let p = parse_percentage(v).ok_or_else(|| src.err(text, "not a percentage"))?;
            if p < 0.0 {
                return Err(src.err(
                    text,
                    format!("eviction percentage threshold {key} must be >= 0%"),
                ));
            }
            if p > 1.0 {
                return Err(src.err(
                    text,
                    format!("eviction percentage threshold {key} must be <= 100%"),
                ));
            }
            ThresholdValue::Percentage(p)
        } else {
            if v.trim_start().starts_with('-') {
                return Err(src.err(text, format!("eviction threshold {key} must be positive")));
            }
            match parse_quantity(v) {
                Some(ThresholdValue::Quantity { value: 0, .. }) => {
                    return Err(src.err(text, format!("eviction threshold {key} must be positive")));
                }
                Some(q) => q,
                None => {
                    return Err(
                        src.err(text, "not a quantity such as 100Mi or 1G, nor a percentage")
                    );
                }
            }
        };
        out.push(Threshold {
            signal,
            value,
            grace_period: Duration::ZERO,
            min_reclaim: None,
        });
    }
    out.sort_by_key(|t| t.signal);
    Ok(out)
}

/// Reads `kubeReserved` / `systemReserved` (parseResourceList).
fn reserved(src: Option<MapSource>) -> Result<Reserved, OptionsError> {
    let mut r = Reserved::default();
    let Some(src) = src else { return Ok(r) };
    for (key, v, text) in &src.entries {
        if v.trim_start().starts_with('-') {
            return Err(src.err(
                text,
                format!("resource quantity for {key:?} cannot be negative"),
            ));
        }
        let milli = key == "cpu";
        let q = quantity::parse(v, milli).ok_or_else(|| {
            src.err(
                text,
                format!("failed to parse quantity {v:?} for {key:?} resource"),
            )
        })?;
        match key.as_str() {
            "cpu" => r.cpu_milli = q,
            "memory" => r.memory = q,
            "ephemeral-storage" => r.ephemeral_storage = q,
            "pid" => r.pid = q,
            _ => return Err(src.err(text, format!("cannot reserve {key:?} resource"))),
        }
    }
    Ok(r)
}

/// Resolves the eviction settings from flags and the file (flags win, as with every setting).
pub(super) fn resolve(
    flags: &Flags,
    file: &KubeletConfigFile,
    file_label: &str,
) -> Result<EvictionOptions, OptionsError> {
    // evictionHard: the flag's map replaces everything; a file without the field gets the
    // defaults, a file with it gets them merged only with mergeDefaultEvictionSettings.
    let hard_src = match pick(
        &flags.eviction_hard,
        '<',
        ("--eviction-hard", "evictionHard"),
        file.eviction_hard.as_ref(),
        file_label,
    )? {
        Some(s) => {
            let mut s = s;
            if flags.eviction_hard.is_empty() && file.merge_default_eviction_settings == Some(true)
            {
                for (k, v) in DEFAULT_EVICTION_HARD {
                    if !s.entries.iter().any(|(key, ..)| key == k) {
                        s.entries
                            .push(((*k).into(), (*v).into(), format!("{k}: {v}")));
                    }
                }
            }
            s
        }
        None => MapSource {
            source_name: "default".into(),
            name: "evictionHard",
            entries: DEFAULT_EVICTION_HARD
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into(), format!("{k}<{v}")))
                .collect(),
        },
    };
    let mut all = thresholds(&hard_src)?;
    let soft_src = pick(
        &flags.eviction_soft,
        '<',
        ("--eviction-soft", "evictionSoft"),
        file.eviction_soft.as_ref(),
        file_label,
    )?;
    let grace_src = pick(
        &flags.eviction_soft_grace_period,
        '=',
        ("--eviction-soft-grace-period", "evictionSoftGracePeriod"),
        file.eviction_soft_grace_period.as_ref(),
        file_label,
    )?;
    let mut graces = BTreeMap::new();
    if let Some(src) = &grace_src {
        for (key, v, text) in &src.entries {
            let signal = signal_of(src, key, text)?;
            if v.trim_start().starts_with('-') {
                return Err(src.err(
                    text,
                    "invalid eviction grace period: must be a positive value",
                ));
            }
            let d = duration::parse(v)
                .ok_or_else(|| src.err(text, "not a duration such as 30s or 1m30s"))?;
            graces.insert(signal, d);
        }
    }
    if let Some(src) = &soft_src {
        for mut t in thresholds(src)? {
            let Some(g) = graces.get(&t.signal) else {
                let (key, _, text) = src
                    .entries
                    .iter()
                    .find(|(k, ..)| k == t.signal.as_str())
                    .cloned()
                    .unwrap_or_default();
                return Err(src.err(
                    &text,
                    format!("grace period must be specified for the soft eviction threshold {key}"),
                ));
            };
            t.grace_period = *g;
            all.push(t);
        }
    }
    let reclaim_src = pick(
        &flags.eviction_minimum_reclaim,
        '=',
        ("--eviction-minimum-reclaim", "evictionMinimumReclaim"),
        file.eviction_minimum_reclaim.as_ref(),
        file_label,
    )?;
    if let Some(src) = &reclaim_src {
        for (key, v, text) in &src.entries {
            let signal = signal_of(src, key, text)?;
            let value = if v.ends_with('%') {
                match parse_percentage(v) {
                    Some(p) if p > 0.0 => ThresholdValue::Percentage(p),
                    _ => {
                        return Err(src.err(
                            text,
                            format!("eviction percentage minimum reclaim {key} must be positive"),
                        ));
                    }
                }
            } else if v.trim_start().starts_with('-') {
                return Err(src.err(
                    text,
                    format!("negative eviction minimum reclaim specified for {key}"),
                ));
            } else {
                parse_quantity(v).ok_or_else(|| {
                    src.err(text, "not a quantity such as 500Mi, nor a percentage")
                })?
            };
            for t in all.iter_mut().filter(|t| t.signal == signal) {
                t.min_reclaim = Some(value);
            }
        }
    }

    let transition_flag = flags.eviction_pressure_transition_period.clone();
    // v1beta1 defaulting: a zero period in the file means "unset".
    let transition_field = file
        .eviction_pressure_transition_period
        .clone()
        .filter(|v| duration::parse(v) != Some(Duration::ZERO));
    let pressure_transition_period = super::duration_option(
        &transition_flag,
        &transition_field,
        (
            "--eviction-pressure-transition-period",
            "evictionPressureTransitionPeriod",
        ),
        Duration::from_secs(300),
        file_label,
    )?;
    let max_pod_grace_period_seconds = i64::from(
        flags
            .eviction_max_pod_grace_period
            .or(file.eviction_max_pod_grace_period)
            .unwrap_or(0),
    );
    let kube_reserved = reserved(pick(
        &flags.kube_reserved,
        '=',
        ("--kube-reserved", "kubeReserved"),
        file.kube_reserved.as_ref(),
        file_label,
    )?)?;
    let system_reserved = reserved(pick(
        &flags.system_reserved,
        '=',
        ("--system-reserved", "systemReserved"),
        file.system_reserved.as_ref(),
        file_label,
    )?)?;
    let (enforce, from_flag) = match (
        &flags.enforce_node_allocatable,
        &file.enforce_node_allocatable,
    ) {
        (Some(s), _) => (
            s.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>(),
            true,
        ),
        (None, Some(v)) => (v.clone(), false),
        (None, None) => (vec!["pods".to_owned()], false),
    };
    for key in &enforce {
        let known = [
            "pods",
            "none",
            "system-reserved",
            "system-reserved-compressible",
            "kube-reserved",
            "kube-reserved-compressible",
        ];
        if !known.contains(&key.as_str()) || (key == "none" && enforce.len() > 1) {
            return Err(OptionsError::InvalidEntry {
                source_name: if from_flag { "flag".into() } else { file_label.to_owned() },
                name: if from_flag { "--enforce-node-allocatable" } else { "enforceNodeAllocatable" },
                entry: key.clone(),
                reason: "must be one of pods, system-reserved, kube-reserved (or their -compressible forms), or none alone".into(),
            });
        }
    }
    Ok(EvictionOptions {
        thresholds: all,
        pressure_transition_period,
        max_pod_grace_period_seconds,
        kube_reserved,
        system_reserved,
        enforce_node_allocatable: enforce.into_iter().filter(|k| k != "none").collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use std::path::Path;

    fn opts(argv: &str) -> Result<EvictionOptions, String> {
        let argv = std::iter::once("nodelet")
            .chain(argv.split_whitespace())
            .map(String::from);
        Options::from_args(argv)
            .map(|o| o.eviction)
            .map_err(|e| e.to_string())
    }

    fn file(body: &str) -> Result<EvictionOptions, String> {
        let text = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n{body}"
        );
        let loaded = super::super::kubeletconfig::parse(Path::new("/etc/k.yaml"), &text)
            .map_err(|e| e.to_string())?;
        resolve(
            &Flags::default(),
            &loaded.config,
            "kubelet config file /etc/k.yaml field",
        )
        .map_err(|e| e.to_string())
    }

    fn find(o: &EvictionOptions, s: Signal) -> Vec<Threshold> {
        o.thresholds
            .iter()
            .filter(|t| t.signal == s)
            .copied()
            .collect()
    }

    #[test]
    fn defaults_are_the_kubelets_linux_hard_thresholds() {
        let o = opts("").expect("defaults");
        let mem = find(&o, Signal::MemoryAvailable);
        assert_eq!(
            mem[0].value,
            ThresholdValue::Quantity {
                value: 100 << 20,
                binary: true
            }
        );
        assert!(mem[0].is_hard());
        assert_eq!(
            find(&o, Signal::NodeFsAvailable)[0].value,
            ThresholdValue::Percentage(0.10)
        );
        assert_eq!(
            find(&o, Signal::ImageFsAvailable)[0].value,
            ThresholdValue::Percentage(0.15)
        );
        assert_eq!(find(&o, Signal::NodeFsInodesFree).len(), 1);
        assert_eq!(find(&o, Signal::ImageFsInodesFree).len(), 1);
        assert_eq!(o.thresholds.len(), 5);
        assert_eq!(o.pressure_transition_period, Duration::from_secs(300));
        assert_eq!(o.max_pod_grace_period_seconds, 0);
        assert!(o.enforce_pods());
        assert_eq!(o.hard_memory_threshold(1 << 30), 100 << 20);
    }

    #[test]
    fn the_flag_replaces_the_defaults_and_repeats_add_up() {
        let o = opts("--eviction-hard=memory.available<1Gi --eviction-hard pid.available<10%")
            .expect("parses");
        assert_eq!(o.thresholds.len(), 2, "{o:?}");
        assert_eq!(
            find(&o, Signal::PidAvailable)[0].value,
            ThresholdValue::Percentage(0.1)
        );
    }

    #[test]
    fn soft_thresholds_need_their_grace_period() {
        let err = opts("--eviction-soft=memory.available<1Gi").expect_err("no grace period");
        assert!(err.contains("--eviction-soft"), "{err}");
        assert!(
            err.contains(
                "grace period must be specified for the soft eviction threshold memory.available"
            ),
            "{err}"
        );
        let o = opts(
            "--eviction-soft=memory.available<1Gi --eviction-soft-grace-period=memory.available=1m30s \
             --eviction-minimum-reclaim=memory.available=500Mi --eviction-max-pod-grace-period=20 \
             --eviction-pressure-transition-period=30s",
        )
        .expect("parses");
        let soft: Vec<_> = find(&o, Signal::MemoryAvailable)
            .into_iter()
            .filter(|t| !t.is_hard())
            .collect();
        assert_eq!(soft[0].grace_period, Duration::from_secs(90));
        assert!(
            find(&o, Signal::MemoryAvailable)
                .iter()
                .all(|t| t.min_reclaim
                    == Some(ThresholdValue::Quantity {
                        value: 500 << 20,
                        binary: true
                    })),
            "minimum reclaim applies to hard and soft"
        );
        assert_eq!(o.max_pod_grace_period_seconds, 20);
        assert_eq!(o.pressure_transition_period, Duration::from_secs(30));
    }

    #[test]
    fn bad_entries_name_the_flag_and_the_entry() {
        for (argv, want) in [
            ("--eviction-hard=memory.available=1Gi", "malformed pair"),
            (
                "--eviction-hard=memory.free<1Gi",
                "unsupported eviction signal memory.free",
            ),
            ("--eviction-hard=memory.available<0", "must be positive"),
            ("--eviction-hard=memory.available<-1Gi", "must be positive"),
            ("--eviction-hard=nodefs.available<120%", "must be <= 100%"),
            ("--eviction-hard=nodefs.available<lots", "not a quantity"),
            ("--kube-reserved=gpu=1", "cannot reserve \"gpu\" resource"),
            ("--system-reserved=memory=-1Gi", "cannot be negative"),
            ("--enforce-node-allocatable=pods,none", "none alone"),
            (
                "--eviction-minimum-reclaim=memory.available=0%",
                "must be positive",
            ),
        ] {
            let err = opts(argv).expect_err(argv);
            let flag = argv.split('=').next().unwrap_or_default();
            assert!(err.contains(&format!("flag {flag}")), "{argv}: {err}");
            assert!(err.contains(want), "{argv}: {err}");
        }
    }

    #[test]
    fn the_file_field_replaces_the_defaults_unless_merging_is_asked() {
        let o = file("evictionHard:\n  memory.available: 500Mi\n").expect("parses");
        assert_eq!(o.thresholds.len(), 1);
        let o =
            file("evictionHard:\n  memory.available: 500Mi\nmergeDefaultEvictionSettings: true\n")
                .expect("parses");
        assert_eq!(o.thresholds.len(), 5);
        assert_eq!(o.hard_memory_threshold(1 << 30), 500 << 20);
        let o = file(
            "evictionHard:\n  memory.available: \"0%\"\nkubeReserved:\n  memory: 1Gi\n  cpu: 500m\n\
             systemReserved:\n  pid: \"1000\"\n  ephemeral-storage: 1G\nenforceNodeAllocatable: []\n\
             evictionPressureTransitionPeriod: 0s\n",
        )
        .expect("parses");
        assert!(o.thresholds.is_empty(), "0% is ignored");
        assert_eq!(o.kube_reserved.memory, 1 << 30);
        assert_eq!(o.kube_reserved.cpu_milli, 500);
        assert_eq!(o.system_reserved.pid, 1000);
        assert_eq!(o.system_reserved.ephemeral_storage, 1_000_000_000);
        assert!(!o.enforce_pods());
        assert_eq!(
            o.pressure_transition_period,
            Duration::from_secs(300),
            "0 means unset"
        );
    }

    #[test]
    fn bad_file_entries_name_the_file_and_field() {
        let err = file("evictionSoft:\n  memory.available: 1Gi\n").expect_err("no grace");
        assert!(err.contains("/etc/k.yaml field evictionSoft"), "{err}");
        let err = file("evictionSoftGracePeriod:\n  memory.available: soon\n").expect_err("bad");
        assert!(err.contains("evictionSoftGracePeriod"), "{err}");
        assert!(err.contains("memory.available: soon"), "{err}");
    }

    #[test]
    fn the_local_quantity_parser_agrees_with_the_pods() {
        for v in [
            "100Mi", "1G", "1.5Ki", "500m", "2e3", "7", "-1", "1Q", "", "Mi", "3Ei",
        ] {
            for milli in [false, true] {
                assert_eq!(
                    quantity::parse(v, milli),
                    crate::pod::quantity::parse(v, milli),
                    "{v} milli={milli}"
                );
            }
        }
    }

    #[test]
    fn percentages_scale_as_the_kubelets_float32() {
        let v = ThresholdValue::Percentage(0.1);
        // float32(0.1) widened: 0.100000001490116..., truncated to an integer.
        assert_eq!(v.quantity(1_000_000_000), 100_000_001);
        assert_eq!(
            ThresholdValue::Quantity {
                value: 5,
                binary: false
            }
            .quantity(10),
            5
        );
    }
}
