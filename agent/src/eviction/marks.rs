//! Memory marks: how far above its usage each container's mark is placed, and what the manager
//! remembers of a mark it set (its mark pass is `Manager::arm_marks`).

/// Smallest step between a container's usage and its mark while the threshold is further:
/// below this the marks would fire on every few pages.
const MIN_MARK_STEP: u64 = 4 << 20;
/// A container's mark above its usage once the threshold is crossed already (no slack): the
/// pressure is known, so the passes a growing container triggers are spaced by this.
const PRESSURE_MARK_STEP: u64 = 1 << 20;

/// A memory mark set on a container's cgroup.
#[derive(Clone, Copy, Debug)]
pub(super) struct Armed {
    /// Where it was set, bytes.
    pub(super) high: u64,
    /// The last mark pass that saw the container.
    pub(super) pass: u64,
}

/// How far above its usage each of `containers` gets its mark, given the node's `slack`
/// (bytes left before the nearest memory threshold): a share of the slack, at least
/// [`MIN_MARK_STEP`] so marks do not fire every few pages, but never beyond the slack itself,
/// however small (the kernel rounds it up to its granule, 64 KiB). Otherwise a container that
/// grows in steps could fire a mark just short of the threshold, be re-armed further up, cross
/// the threshold and stop short of the new mark until its next step (`cargo xtask bench
/// eviction`: crossing -> decision p99 99 ms at a 4 MiB floor, 62 ms at a 1 MiB floor with a
/// 1 MiB granule). Under pressure already (no slack): [`PRESSURE_MARK_STEP`].
pub(super) fn mark_distance(slack: i64, containers: usize) -> u64 {
    let Ok(slack @ 1..) = u64::try_from(slack) else {
        return PRESSURE_MARK_STEP;
    };
    let share = (slack / containers.max(1) as u64).max(MIN_MARK_STEP);
    share.min(slack)
}

#[cfg(test)]
mod tests {
    use super::mark_distance;

    #[test]
    fn marks_never_go_beyond_the_threshold() {
        const MIB: i64 = 1 << 20;
        // Plenty of slack: a share of it.
        assert_eq!(mark_distance(400 * MIB, 10), 40 << 20);
        // Small shares are raised to the minimum step ...
        assert_eq!(mark_distance(20 * MIB, 10), 4 << 20);
        // ... but not past the threshold itself, however near it is.
        assert_eq!(mark_distance(3 * MIB, 10), 3 << 20);
        assert_eq!(mark_distance(100 << 10, 10), 100 << 10);
        assert_eq!(mark_distance(1, 3), 1);
        // Under pressure already (no slack): a fixed step.
        assert_eq!(mark_distance(-5 * MIB, 10), 1 << 20);
        assert_eq!(mark_distance(0, 0), 1 << 20);
    }
}
