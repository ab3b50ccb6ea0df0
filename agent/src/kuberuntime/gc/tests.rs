use super::*;

fn c(id: &str, uid: &str, name: &str, created: i64, running: bool) -> GcContainer {
    GcContainer {
        id: id.into(),
        sandbox_id: format!("sb-{uid}"),
        pod_uid: uid.into(),
        name: name.into(),
        created_ns: created,
        running,
    }
}

fn active(_: &str) -> PodGcState {
    PodGcState::Active
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn the_default_policy_keeps_the_newest_dead_instance_of_each_container() {
    let all = [
        c("a1", "p", "a", 1, false),
        c("a2", "p", "a", 2, false),
        c("a3", "p", "a", 3, false),
        c("a4", "p", "a", 4, true),
        c("b1", "p", "b", 1, false),
    ];
    let out = containers_to_remove(&all, &ContainerGcPolicy::default(), 10, &active, false);
    assert_eq!(sorted(out), ["a1", "a2"], "a3 kept, running a4 untouched");
}

#[test]
fn containers_younger_than_the_minimum_age_are_kept() {
    let p = ContainerGcPolicy {
        min_age: Duration::from_nanos(5),
        ..Default::default()
    };
    let all = [
        c("a1", "p", "a", 1, false),
        c("a2", "p", "a", 2, false),
        c("a8", "p", "a", 8, false),
    ];
    // a8 is too young to count: a2 is the newest evictable one, kept.
    assert_eq!(containers_to_remove(&all, &p, 10, &active, false), ["a1"]);
}

#[test]
fn deleted_pods_lose_every_dead_container_and_terminated_ones_under_pressure() {
    let state = |uid: &str| match uid {
        "gone" => PodGcState::Deleted,
        "done" => PodGcState::Terminated,
        _ => PodGcState::Active,
    };
    let all = [
        c("g1", "gone", "a", 1, false),
        c("d1", "done", "a", 1, false),
        c("x1", "live", "a", 1, false),
    ];
    let p = ContainerGcPolicy::default();
    assert_eq!(containers_to_remove(&all, &p, 10, &state, false), ["g1"]);
    assert_eq!(
        sorted(containers_to_remove(&all, &p, 10, &state, true)),
        ["d1", "g1"],
        "DeleteAllUnusedContainers takes the terminated pod's too"
    );
}

#[test]
fn the_node_cap_removes_the_oldest_first() {
    let p = ContainerGcPolicy {
        max_per_pod_container: -1,
        max_containers: 2,
        ..Default::default()
    };
    let all = [
        c("a1", "p", "a", 1, false),
        c("a5", "p", "a", 5, false),
        c("b2", "q", "b", 2, false),
        c("b6", "q", "b", 6, false),
    ];
    // Two units, two allowed: one per unit first, then nothing more to cut.
    assert_eq!(
        sorted(containers_to_remove(&all, &p, 10, &active, false)),
        ["a1", "b2"]
    );
    let p1 = ContainerGcPolicy {
        max_containers: 1,
        ..p
    };
    assert_eq!(
        sorted(containers_to_remove(&all, &p1, 10, &active, false)),
        ["a1", "a5", "b2"],
        "the newest one stays"
    );
}

#[test]
fn sandboxes_keep_the_newest_of_live_pods_and_never_active_ones() {
    let s = |id: &str, uid: &str, created, active| GcSandbox {
        id: id.into(),
        pod_uid: uid.into(),
        created_ns: created,
        active,
    };
    let all = [
        s("p1", "p", 1, false),
        s("p2", "p", 2, false),
        s("g1", "gone", 1, false),
        s("g2", "gone", 2, true),
    ];
    let state = |uid: &str| {
        if uid == "gone" {
            PodGcState::Deleted
        } else {
            PodGcState::Active
        }
    };
    assert_eq!(
        sorted(sandboxes_to_remove(&all, &state, false)),
        ["g1", "p1"]
    );
}

fn rec(detected: u64, used: u64, size: u64, pinned: bool) -> ImageRecord {
    let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
    ImageRecord {
        first_detected: t(detected),
        last_used: t(used),
        size,
        pinned,
    }
}

#[test]
fn images_in_use_and_pinned_are_never_candidates_and_lru_goes_first() {
    let records = HashMap::from([
        ("used".to_string(), rec(0, 900, 10, false)),
        ("pause".to_string(), rec(0, 0, 10, true)),
        ("old".to_string(), rec(5, 100, 10, false)),
        ("older".to_string(), rec(1, 50, 10, false)),
        ("never-a".to_string(), rec(2, 0, 10, false)),
        ("never-b".to_string(), rec(1, 0, 10, false)),
    ]);
    let in_use = HashSet::from(["used".to_string()]);
    let order: Vec<String> = images_in_eviction_order(&records, &in_use)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(order, ["never-b", "never-a", "older", "old"]);
}

#[test]
fn free_space_skips_young_images_and_stops_once_enough_is_freed() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let order = vec![
        ("young".to_string(), rec(990, 0, 100, false)),
        ("a".to_string(), rec(0, 0, 30, false)),
        ("b".to_string(), rec(0, 10, 30, false)),
        ("c".to_string(), rec(0, 20, 30, false)),
    ];
    let min_age = Duration::from_secs(120);
    let plan = plan_free_space(&order, 50, now, min_age);
    assert_eq!(plan, [("a".to_string(), 30), ("b".to_string(), 30)]);
    let all = plan_free_space(&order, u64::MAX, now, min_age);
    assert_eq!(all.len(), 3, "the young image stays even when freeing all");
}

#[test]
fn image_gc_triggers_at_the_high_threshold_and_frees_to_the_low_one() {
    // 100 bytes, 20 free: 80% used, below 85.
    assert_eq!(amount_to_free(100, 20, 85, 80), None);
    // 10 free: 90% used: free down to 80% used, 20 free, 10 more bytes.
    assert_eq!(amount_to_free(100, 10, 85, 80), Some(10));
    assert_eq!(amount_to_free(0, 0, 85, 80), None);
    assert_eq!(
        amount_to_free(100, 15, 85, 80),
        Some(5),
        "85% is at the threshold"
    );
}
