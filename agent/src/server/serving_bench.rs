//! Serving cost of the stats endpoints at 100 and 250 containers, printed as a table (issue 5
//! goal: < 10 ms at 250): time and heap allocations per request. Not a timing assert: run with
//! `cargo test --release -p agent -- --ignored --nocapture serving_cost`.
//! With NODELET_DUMP_METRICS=<dir>, the rendered expositions are written there (for promtool).

use crate::metrics::{self, expo::Format};
use crate::server::summary_json::summary_json;
use crate::stats::summary::tests::stub;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Counts the test binary's heap allocations (a relaxed add each: noise for other tests).
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// Per request: (ms, allocations, bytes allocated).
fn measure(iters: u32, mut f: impl FnMut()) -> (f64, f64, f64) {
    let (a0, b0) = (ALLOCS.load(Relaxed), ALLOC_BYTES.load(Relaxed));
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let ms = start.elapsed().as_secs_f64() * 1e3 / f64::from(iters);
    let per = |now: u64, then: u64| (now - then) as f64 / f64::from(iters);
    (
        ms,
        per(ALLOCS.load(Relaxed), a0),
        per(ALLOC_BYTES.load(Relaxed), b0),
    )
}

#[test]
#[ignore = "benchmark; run explicitly"]
fn serving_cost() {
    // The baseline beside each number: issue 13's goal, and the same endpoint with the
    // smaller family set before it (README, 2026-11: 1.08 ms and 3.50 ms at 250).
    println!(
        "| endpoint | containers | ms per request | goal ms | allocations | KiB allocated | bytes out | KiB out |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in [100, 250] {
        let s = stub(n);
        let mut bytes = 0;
        let row = |name: &str, (ms, allocs, alloc_bytes): (f64, f64, f64), bytes: usize| {
            println!(
                "| {name} | {n} | {ms:.3} | 10 | {allocs:.0} | {:.0} | {bytes} | {:.0} |",
                alloc_bytes / 1024.0,
                bytes as f64 / 1024.0
            );
        };
        let m = measure(50, || {
            let t = metrics::cadvisor::render(Format::Text, &s);
            bytes = t.len();
        });
        row("/metrics/cadvisor", m, bytes);
        let m = measure(50, || {
            let t = metrics::resource::render(Format::Text, &s);
            bytes = t.len();
        });
        row("/metrics/resource", m, bytes);
        let m = measure(50, || {
            let v = summary_json("node", &s).unwrap_or_default();
            bytes = v.len();
        });
        row("/stats/summary", m, bytes);
        // The baseline: the serde_json::Value tree it replaced (README, 2026-12-06: 12.66 ms).
        let m = measure(50, || {
            let v = serde_json::to_vec(&crate::server::summary_tree::summary("node", &s))
                .unwrap_or_default();
            bytes = v.len();
        });
        row("/stats/summary, Value tree (before)", m, bytes);
        if let Some(dir) = std::env::var_os("NODELET_DUMP_METRICS") {
            let dir = std::path::PathBuf::from(dir);
            for (name, f) in [
                (
                    "cadvisor",
                    metrics::cadvisor::render as fn(Format, &_) -> String,
                ),
                ("resource", metrics::resource::render),
            ] {
                for (fmt, ext) in [(Format::Text, "txt"), (Format::OpenMetrics, "om")] {
                    let _ = std::fs::write(dir.join(format!("{name}-{n}.{ext}")), f(fmt, &s));
                }
            }
        }
    }
}
