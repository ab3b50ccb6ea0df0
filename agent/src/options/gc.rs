//! Garbage-collection settings: the image GC policy (`imageGCHighThresholdPercent`,
//! `imageGCLowThresholdPercent`, `imageMinimumGCAge`, `imageMaximumGCAge`; flags
//! `--image-gc-high-threshold`, `--image-gc-low-threshold`, `--minimum-image-ttl-duration`) and
//! the container GC policy (deprecated flags `--minimum-container-ttl-duration`,
//! `--maximum-dead-containers-per-container`, `--maximum-dead-containers`), with the kubelet's
//! defaults (pkg/kubelet/apis/config/v1beta1/defaults.go, cmd/kubelet/app/options/options.go)
//! and checks (pkg/kubelet/apis/config/validation/validation.go). Errors name the flag or field.

use super::kubeletconfig::KubeletConfigFile;
use super::{Flags, OptionsError, duration_option};
use std::time::Duration;

/// The image GC policy (images.ImageGCPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Disk usage percent at or above which image GC runs (default 85; 100 disables it).
    pub high_threshold_percent: i32,
    /// Usage percent image GC frees down to (default 80).
    pub low_threshold_percent: i32,
    /// An image younger than this (since first seen) is never removed (default 2m).
    pub min_age: Duration,
    /// An image unused for longer than this is removed (0: never; default 0).
    pub max_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        Self {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
            max_age: Duration::ZERO,
        }
    }
}

impl ImageGcPolicy {
    /// The kubelet stubs its periodic image GC when high is 100 and there is no max age.
    pub fn periodic_enabled(&self) -> bool {
        self.high_threshold_percent < 100 || !self.max_age.is_zero()
    }
}

/// The container GC policy (kubecontainer.GCPolicy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerGcPolicy {
    /// A dead container younger than this (since created) is kept (default 0).
    pub min_age: Duration,
    /// Dead instances kept per (pod, container name); negative: no limit (default 1).
    pub max_per_pod_container: i32,
    /// Dead containers kept on the node; negative: no limit (default -1).
    pub max_containers: i32,
}

impl Default for ContainerGcPolicy {
    fn default() -> Self {
        Self {
            min_age: Duration::ZERO,
            max_per_pod_container: 1,
            max_containers: -1,
        }
    }
}

/// Both policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Unused images.
    pub image: ImageGcPolicy,
    /// Dead containers.
    pub container: ContainerGcPolicy,
}

fn percent(
    flag: Option<i32>,
    field: Option<i32>,
    (flag_name, field_name): (&'static str, &'static str),
    default: i32,
    file_label: &str,
) -> Result<(i32, String, &'static str), OptionsError> {
    let (v, source_name, name) = match (flag, field) {
        (Some(v), _) => (v, "flag".to_string(), flag_name),
        (None, Some(v)) => (v, file_label.to_string(), field_name),
        (None, None) => (default, "default".to_string(), field_name),
    };
    if !(0..=100).contains(&v) {
        return Err(OptionsError::Invalid {
            source_name,
            name,
            value: v.to_string(),
            reason: "must be between 0 and 100, inclusive",
        });
    }
    Ok((v, source_name, name))
}

/// Resolves both policies from flags and the file (flags win).
pub(super) fn resolve(
    flags: &Flags,
    file: &KubeletConfigFile,
    file_label: &str,
) -> Result<GcOptions, OptionsError> {
    let d = ImageGcPolicy::default();
    let (high, high_source, high_name) = percent(
        flags.image_gc_high_threshold,
        file.image_gc_high_threshold_percent,
        ("--image-gc-high-threshold", "imageGCHighThresholdPercent"),
        d.high_threshold_percent,
        file_label,
    )?;
    let (low, low_source, low_name) = percent(
        flags.image_gc_low_threshold,
        file.image_gc_low_threshold_percent,
        ("--image-gc-low-threshold", "imageGCLowThresholdPercent"),
        d.low_threshold_percent,
        file_label,
    )?;
    if low >= high {
        // Name the value the user set: a default low is wrong only because of their high.
        return Err(if low_source == "default" {
            OptionsError::Invalid {
                source_name: high_source,
                name: high_name,
                value: high.to_string(),
                reason: "must be greater than imageGCLowThresholdPercent (--image-gc-low-threshold, default 80)",
            }
        } else {
            OptionsError::Invalid {
                source_name: low_source,
                name: low_name,
                value: low.to_string(),
                reason: "must be less than imageGCHighThresholdPercent (--image-gc-high-threshold)",
            }
        });
    }
    // The file's zero imageMinimumGCAge means unset: the kubelet's defaulting gives 2m.
    let file_min_age = file
        .image_minimum_gc_age
        .clone()
        .filter(|v| super::duration::parse(v) != Some(Duration::ZERO));
    let min_age = duration_option(
        &flags.minimum_image_ttl_duration,
        &file_min_age,
        ("--minimum-image-ttl-duration", "imageMinimumGCAge"),
        d.min_age,
        file_label,
    )?;
    let max_age = duration_option(
        &None,
        &file.image_maximum_gc_age,
        ("imageMaximumGCAge", "imageMaximumGCAge"),
        Duration::ZERO,
        file_label,
    )?;
    if !max_age.is_zero() && max_age <= min_age {
        return Err(OptionsError::Invalid {
            source_name: file_label.to_string(),
            name: "imageMaximumGCAge",
            value: file.image_maximum_gc_age.clone().unwrap_or_default(),
            reason: "must be greater than imageMinimumGCAge",
        });
    }
    let c = ContainerGcPolicy::default();
    let container = ContainerGcPolicy {
        min_age: duration_option(
            &flags.minimum_container_ttl_duration,
            &None,
            (
                "--minimum-container-ttl-duration",
                "--minimum-container-ttl-duration",
            ),
            c.min_age,
            file_label,
        )?,
        max_per_pod_container: flags
            .maximum_dead_containers_per_container
            .unwrap_or(c.max_per_pod_container),
        max_containers: flags.maximum_dead_containers.unwrap_or(c.max_containers),
    };
    Ok(GcOptions {
        image: ImageGcPolicy {
            high_threshold_percent: high,
            low_threshold_percent: low,
            min_age,
            max_age,
        },
        container,
    })
}

#[cfg(test)]
mod tests {
    use crate::options::Options;

    fn gc(args: &str) -> Result<super::GcOptions, String> {
        let argv = std::iter::once("nodelet".to_string())
            .chain(args.split_whitespace().map(str::to_string));
        Options::from_args(argv)
            .map(|o| o.gc)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_kubelets() {
        let g = gc("").expect("defaults");
        assert_eq!(g.image.high_threshold_percent, 85);
        assert_eq!(g.image.low_threshold_percent, 80);
        assert_eq!(g.image.min_age.as_secs(), 120);
        assert!(g.image.max_age.is_zero());
        assert_eq!(g.container.max_per_pod_container, 1);
        assert_eq!(g.container.max_containers, -1);
        assert!(g.container.min_age.is_zero());
    }

    #[test]
    fn flags_set_the_policies() {
        let g = gc("--image-gc-high-threshold=60 --image-gc-low-threshold=50 \
                    --minimum-image-ttl-duration=1s --maximum-dead-containers-per-container=2 \
                    --maximum-dead-containers=10 --minimum-container-ttl-duration=5s")
        .expect("flags");
        assert_eq!(
            (
                g.image.high_threshold_percent,
                g.image.low_threshold_percent
            ),
            (60, 50)
        );
        assert_eq!(g.image.min_age.as_secs(), 1);
        assert_eq!(g.container.max_per_pod_container, 2);
        assert_eq!(g.container.max_containers, 10);
        assert_eq!(g.container.min_age.as_secs(), 5);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let e = gc("--image-gc-high-threshold=101").expect_err("out of range");
        assert!(e.contains("--image-gc-high-threshold"), "{e}");
        let e = gc("--image-gc-high-threshold=70 --image-gc-low-threshold=70").expect_err("low");
        assert!(e.contains("--image-gc-low-threshold"), "{e}");
        let e = gc("--minimum-image-ttl-duration=soon").expect_err("duration");
        assert!(e.contains("--minimum-image-ttl-duration"), "{e}");
    }

    #[test]
    fn bad_file_fields_name_the_file_and_field() {
        let dir = std::env::temp_dir().join(format!("nodelet-gc-opts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("config.yaml");
        std::fs::write(
            &f,
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             imageMinimumGCAge: 10m\nimageMaximumGCAge: 5m\n",
        )
        .expect("write");
        let e = gc(&format!("--config={}", f.display())).expect_err("max <= min");
        assert!(
            e.contains("imageMaximumGCAge") && e.contains("config.yaml"),
            "{e}"
        );
        std::fs::write(
            &f,
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             imageGCLowThresholdPercent: 90\n",
        )
        .expect("write");
        let e = gc(&format!("--config={}", f.display())).expect_err("low >= high");
        assert!(e.contains("imageGCLowThresholdPercent"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
