//! Loads the embedded object on the running kernel and attaches every program, as the agent
//! does. Needs root and kernel BTF; skipped otherwise unless `NODELET_REQUIRE_ALL=1`.
use agent_common::{maps, programs};
use aya::{Btf, EbpfLoader, programs::BtfTracePoint};

fn skip(reason: &str) -> bool {
    if std::env::var("NODELET_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required test cannot run: {reason}");
    }
    eprintln!("skipped: {reason}");
    true
}

#[test]
fn every_program_loads_and_attaches() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 && skip("not root") {
        return;
    }
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(e) => {
            if skip(&format!("no kernel BTF: {e}")) {
                return;
            }
            unreachable!()
        }
    };
    let started = std::time::Instant::now();
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(agent_ebpf::TELEMETRY_OBJ)
        .expect("load object");
    let attach = [
        (programs::SCHED_SWITCH, "sched_switch"),
        (programs::MEMCG_LRUVEC, "mod_memcg_lruvec_state"),
        (programs::MEMCG_STATE, "mod_memcg_state"),
        (programs::MEMCG_EVENTS, "count_memcg_events"),
        (programs::OOM_MARK_VICTIM, "mark_victim"),
        (programs::CGROUP_MKDIR, "cgroup_mkdir"),
        (programs::CGROUP_RMDIR, "cgroup_rmdir"),
    ];
    for (name, tp) in attach {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name} missing"))
            .try_into()
            .unwrap_or_else(|e| panic!("program {name}: {e}"));
        prog.load(tp, &btf)
            .unwrap_or_else(|e| panic!("load {name}: {e:?}"));
        prog.attach().unwrap_or_else(|e| panic!("attach {name}: {e}"));
    }
    eprintln!("load + attach: {:?}", started.elapsed());
    for m in [maps::EVENTS, maps::CPU_ACCT, maps::CPU_SLOTS, maps::MEM_ACCT, maps::MEM_MARKS, maps::NODE_MEM, maps::COUNTERS] {
        assert!(ebpf.map(m).is_some(), "map {m} missing");
    }
}
