//! The container's effective security context as the kubelet builds it
//! (kuberuntime/security_context.go and pkg/securitycontext): pod fields under container
//! fields, seccomp and AppArmor profiles, the default masked and read-only /proc paths, fsGroup
//! among the supplemental groups, and the runAsNonRoot check that refuses a container with
//! CreateContainerConfigError before anything runs.

use super::NodeContext;
use super::container::ConfigError;
use crate::pod::DesiredPod;
use k8s_openapi::api::core::v1::{AppArmorProfile, Container, SeccompProfile, SecurityContext};
use proto::runtime::v1 as cri;

/// The user an image runs as (CRI ImageStatus `uid`/`username`), for the runAsNonRoot check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageUser {
    /// Numeric user, when the image names one.
    pub uid: Option<i64>,
    /// User name, when the image names a non-numeric one.
    pub username: String,
}

impl ImageUser {
    /// getImageUser: the user of a CRI image record; an image (or a status) naming none runs
    /// as root, uid 0.
    pub fn of(image: Option<&cri::Image>) -> Self {
        let root = Self {
            uid: Some(0),
            username: String::new(),
        };
        let Some(image) = image else { return root };
        match (&image.uid, image.username.as_str()) {
            (Some(uid), _) => Self {
                uid: Some(uid.value),
                username: String::new(),
            },
            (None, "") => root,
            (None, name) => Self {
                uid: None,
                username: name.to_owned(),
            },
        }
    }
}

/// /proc paths masked unless procMount is Unmasked (moby's defaults, as the kubelet sends).
const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// /proc paths mounted read-only unless procMount is Unmasked.
const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The deprecated per-container AppArmor annotation static pods may still carry.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// DetermineEffectiveSecurityContext: the pod's fields, each overridden by the container's.
pub fn effective(p: &DesiredPod, c: &Container) -> SecurityContext {
    let pod_sc = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref());
    let mut sc = SecurityContext {
        run_as_user: pod_sc.and_then(|s| s.run_as_user),
        run_as_group: pod_sc.and_then(|s| s.run_as_group),
        run_as_non_root: pod_sc.and_then(|s| s.run_as_non_root),
        se_linux_options: pod_sc.and_then(|s| s.se_linux_options.clone()),
        ..Default::default()
    };
    let Some(csc) = c.security_context.as_ref() else {
        return sc;
    };
    macro_rules! over {
        ($($f:ident),*) => {$(if csc.$f.is_some() { sc.$f = csc.$f.clone(); })*};
    }
    over!(
        se_linux_options,
        capabilities,
        privileged,
        run_as_user,
        run_as_group,
        run_as_non_root,
        read_only_root_filesystem,
        allow_privilege_escalation,
        proc_mount
    );
    sc
}

/// Whether building the container's security context needs the image's user: only the
/// runAsNonRoot check without an explicit runAsUser does.
pub fn needs_image_user(p: &DesiredPod, c: &Container) -> bool {
    let sc = effective(p, c);
    sc.run_as_non_root == Some(true) && sc.run_as_user.is_none()
}

/// verifyRunAsNonRoot, with the kubelet's messages.
pub fn verify_run_as_non_root(
    p: &DesiredPod,
    c: &Container,
    image: &ImageUser,
) -> Result<(), ConfigError> {
    let sc = effective(p, c);
    if sc.run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod = format!(
        "{}_{}({})",
        p.pod_ref.name, p.pod_ref.namespace, p.pod_ref.uid
    );
    let refuse = |message: String| Err(ConfigError::Security { message });
    if let Some(uid) = sc.run_as_user {
        if uid == 0 {
            return refuse(format!(
                "container's runAsUser breaks non-root policy (pod: {pod:?}, container: {})",
                c.name
            ));
        }
        return Ok(());
    }
    match image.uid {
        None if !image.username.is_empty() => refuse(format!(
            "container has runAsNonRoot and image has non-numeric user ({}), cannot verify user is non-root (pod: {pod:?}, container: {})",
            image.username, c.name
        )),
        Some(0) => refuse(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod:?}, container: {})",
            c.name
        )),
        Some(uid) if !(1..=i64::from(i32::MAX)).contains(&uid) => refuse(format!(
            "container has runAsNonRoot and image has an invalid user id ({uid}). (Must be 1-({})): must be between 1 and {} (pod: {pod:?}, container: {})",
            i32::MAX,
            i32::MAX,
            c.name
        )),
        _ => Ok(()),
    }
}

/// fieldSeccompProfile: RuntimeDefault, Localhost under `<root-dir>/seccomp`, else Unconfined
/// (RuntimeDefault when nothing is named and seccompDefault is on).
fn seccomp(
    ctx: &NodeContext,
    profile: Option<&SeccompProfile>,
) -> Result<cri::SecurityProfile, String> {
    use cri::security_profile::ProfileType;
    let of = |t: ProfileType| cri::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: String::new(),
    };
    let Some(profile) = profile else {
        return Ok(of(if ctx.seccomp_default {
            ProfileType::RuntimeDefault
        } else {
            ProfileType::Unconfined
        }));
    };
    match profile.type_.as_str() {
        "RuntimeDefault" => Ok(of(ProfileType::RuntimeDefault)),
        "Localhost" => match profile.localhost_profile.as_deref() {
            Some(path) if !path.is_empty() => Ok(cri::SecurityProfile {
                profile_type: ProfileType::Localhost as i32,
                localhost_ref: ctx
                    .root_dir
                    .join("seccomp")
                    .join(path)
                    .to_string_lossy()
                    .into_owned(),
            }),
            _ => Err("localhostProfile must be set if seccompProfile type is Localhost.".into()),
        },
        _ => Ok(of(ProfileType::Unconfined)),
    }
}

/// apparmor.GetProfile: the container's field, the deprecated annotation, then the pod's.
fn apparmor_profile(p: &DesiredPod, c: &Container) -> Option<AppArmorProfile> {
    if let Some(a) = c
        .security_context
        .as_ref()
        .and_then(|s| s.app_armor_profile.clone())
    {
        return Some(a);
    }
    let annotation = p
        .pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(&format!("{APPARMOR_ANNOTATION_PREFIX}{}", c.name)));
    if let Some(v) = annotation {
        let of = |t: &str, local: Option<String>| AppArmorProfile {
            type_: t.into(),
            localhost_profile: local,
        };
        return match v.as_str() {
            "runtime/default" => Some(of("RuntimeDefault", None)),
            "unconfined" => Some(of("Unconfined", None)),
            v => v
                .strip_prefix("localhost/")
                .map(|name| of("Localhost", Some(name.into()))),
        };
    }
    p.pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.app_armor_profile.clone())
}

/// getAppArmorProfile: the CRI profile, if any is named.
fn apparmor(p: &DesiredPod, c: &Container) -> Result<Option<cri::SecurityProfile>, String> {
    use cri::security_profile::ProfileType;
    let Some(profile) = apparmor_profile(p, c) else {
        return Ok(None);
    };
    let of = |t: ProfileType, r: &str| cri::SecurityProfile {
        profile_type: t as i32,
        localhost_ref: r.into(),
    };
    match profile.type_.as_str() {
        "RuntimeDefault" => Ok(Some(of(ProfileType::RuntimeDefault, ""))),
        "Unconfined" => Ok(Some(of(ProfileType::Unconfined, ""))),
        "Localhost" => match profile.localhost_profile.as_deref() {
            Some(name) => Ok(Some(of(ProfileType::Localhost, name))),
            None => Err("missing localhost apparmor profile name".into()),
        },
        t => Err(format!("unknown apparmor profile type: {t:?}")),
    }
}

/// determineEffectiveSecurityContext: the CRI security context of container `c`.
pub fn security_context(
    ctx: &NodeContext,
    p: &DesiredPod,
    c: &Container,
) -> Result<cri::LinuxContainerSecurityContext, ConfigError> {
    let refuse = |message: String| ConfigError::Security { message };
    let pod_sc = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone())
        .unwrap_or_default();
    let sc = effective(p, c);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let unmasked = sc.proc_mount.as_deref() == Some("Unmasked");
    let paths = |defaults: &[&str]| {
        if unmasked {
            Vec::new()
        } else {
            defaults.iter().map(|s| (*s).to_owned()).collect()
        }
    };
    let seccomp_profile = c
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or(pod_sc.seccomp_profile.as_ref());
    let apparmor = apparmor(p, c).map_err(refuse)?;
    let supplemental_groups_policy = match pod_sc.supplemental_groups_policy.as_deref() {
        None | Some("Merge") => cri::SupplementalGroupsPolicy::Merge,
        Some("Strict") => cri::SupplementalGroupsPolicy::Strict,
        Some(other) => {
            return Err(refuse(format!(
                "unsupported supplementalGroupsPolicy: {other}"
            )));
        }
    };
    // fsGroup first, then supplementalGroups, as the kubelet appends them.
    let supplemental_groups = pod_sc
        .fs_group
        .into_iter()
        .chain(pod_sc.supplemental_groups.unwrap_or_default())
        .collect();
    Ok(cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            ..Default::default()
        }),
        privileged: sc.privileged.unwrap_or(false),
        namespace_options: Some(super::sandbox::namespace_options(p)),
        selinux_options: sc.se_linux_options.map(|o| cri::SeLinuxOption {
            user: o.user.unwrap_or_default(),
            role: o.role.unwrap_or_default(),
            r#type: o.type_.unwrap_or_default(),
            level: o.level.unwrap_or_default(),
        }),
        run_as_user: sc.run_as_user.map(|value| cri::Int64Value { value }),
        run_as_group: sc.run_as_group.map(|value| cri::Int64Value { value }),
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups,
        no_new_privs: sc.allow_privilege_escalation == Some(false),
        masked_paths: paths(DEFAULT_MASKED_PATHS),
        readonly_paths: paths(DEFAULT_READONLY_PATHS),
        seccomp: Some(seccomp(ctx, seccomp_profile).map_err(refuse)?),
        apparmor,
        supplemental_groups_policy: supplemental_groups_policy as i32,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
