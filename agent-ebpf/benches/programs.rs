//! Per-event cost of the telemetry programs on the running kernel (not a test: prints a table).
//!
//! `cargo bench -p agent-ebpf --bench programs` (root, kernel BTF). Loads the embedded object,
//! turns on the kernel's BPF run-time statistics (as `kernel.bpf_stats_enabled=1` does, for as
//! long as the returned fd lives) and reads each program's `run_time_ns / run_cnt` across
//! three phases: near idle, a thread ping-pong over pipes (context-switch heavy), and page
//! churn (memcg events). The goal for `on_sched_switch` is <= 150 ns/event warm.
use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    time::{Duration, Instant},
};

use agent_common::{MAX_AGENT_TGIDS, globals, programs::ATTACH};
use aya::{Btf, Ebpf, EbpfLoader, programs::BtfTracePoint, sys::Stats};

fn stats(ebpf: &Ebpf) -> Vec<(&'static str, u64, Duration)> {
    ATTACH
        .iter()
        .map(|(name, _)| {
            let info = ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .map(|i| (i.run_count(), i.run_time()))
                .unwrap_or_default();
            (*name, info.0, info.1)
        })
        .collect()
}

fn phase(ebpf: &Ebpf, label: &str, secs: f64, work: impl FnOnce(Duration)) {
    let before = stats(ebpf);
    let t0 = Instant::now();
    work(Duration::from_secs_f64(secs));
    let wall = t0.elapsed().as_secs_f64();
    let after = stats(ebpf);
    for ((name, c0, r0), (_, c1, r1)) in before.iter().zip(after) {
        let n = c1 - c0;
        if n == 0 {
            continue;
        }
        let ns = (r1 - *r0).as_nanos() as f64;
        println!(
            "| {label:<14} | {name:<26} | {n:>10} | {:>10.0} | {:>8.1} | {:>7.3} |",
            n as f64 / wall,
            ns / n as f64,
            100.0 * ns / 1e9 / wall
        );
    }
}

fn ping_pong(d: Duration) {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let peer = std::thread::spawn(move || {
        let mut buf = [0u8; 1];
        while b.read_exact(&mut buf).is_ok() {
            if buf[0] == 0 || b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let end = Instant::now() + d;
    let mut buf = [1u8; 1];
    while Instant::now() < end {
        for _ in 0..256 {
            a.write_all(&[1]).expect("write");
            a.read_exact(&mut buf).expect("read");
        }
    }
    let _ = a.write_all(&[0]);
    let _ = peer.join();
}

fn page_churn(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        // 16 MiB touched page by page, then freed: anon charge/uncharge events.
        let mut v = vec![0u8; 16 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        std::hint::black_box(&v);
    }
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let btf = match Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: no kernel BTF: {e}");
            return;
        }
    };
    let none = [0u32; MAX_AGENT_TGIDS]; // account this process's threads too
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global(globals::AGENT_TGIDS, &none, true)
        .load(agent_ebpf::TELEMETRY_OBJ)
        .expect("load object");
    for (name, tp) in ATTACH {
        let p: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .expect("program")
            .try_into()
            .expect("tp_btf");
        p.load(tp, &btf).expect("load program");
        p.attach().expect("attach");
    }
    let _stats = aya::sys::enable_stats(Stats::RunTime).expect("enable BPF stats");
    println!(
        "| phase          | program                    |     events |   events/s | ns/event |  CPU %  |"
    );
    println!(
        "|----------------|----------------------------|-----------:|-----------:|---------:|--------:|"
    );
    phase(&ebpf, "near idle", 3.0, std::thread::sleep);
    phase(&ebpf, "ping-pong", 3.0, ping_pong);
    phase(&ebpf, "page churn", 3.0, page_churn);
}
