//! Loads the embedded object on the running kernel and attaches every program, as the agent
//! does. Needs root and kernel BTF; skipped with a reason otherwise, failed instead under
//! `NODELET_REQUIRE_ALL=1`.
use agent_common::{maps, programs};
use aya::{Btf, EbpfLoader, programs::BtfTracePoint};

/// Kernel BTF if the test can run here; `None` after printing why not.
fn kernel_btf() -> Option<Btf> {
    // SAFETY: geteuid has no preconditions.
    let btf = if unsafe { libc::geteuid() } != 0 {
        Err("not root".to_owned())
    } else {
        Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}"))
    };
    match btf {
        Ok(btf) => Some(btf),
        Err(reason) => {
            xtask::testing::skip_or_fail(&format!("the load test cannot run: {reason}"));
            None
        }
    }
}

#[test]
fn every_program_loads_and_attaches() {
    let Some(btf) = kernel_btf() else { return };
    let started = std::time::Instant::now();
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .load(agent_ebpf::TELEMETRY_OBJ)
        .expect("load object");
    for (name, tp) in programs::ATTACH {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name} missing"))
            .try_into()
            .unwrap_or_else(|e| panic!("program {name}: {e}"));
        prog.load(tp, &btf)
            .unwrap_or_else(|e| panic!("load {name}: {e:?}"));
        prog.attach()
            .unwrap_or_else(|e| panic!("attach {name}: {e}"));
    }
    eprintln!(
        "load + attach of {} programs: {:?}",
        programs::ATTACH.len(),
        started.elapsed()
    );
    for m in [
        maps::EVENTS,
        maps::CPU_ACCT,
        maps::CPU_SLOTS,
        maps::MEM_ACCT,
        maps::MEM_MARKS,
        maps::NODE_MEM,
        maps::COUNTERS,
    ] {
        assert!(ebpf.map(m).is_some(), "map {m} missing");
    }
}
