//! Links `nodelet` as a fixed-address executable, as the Go kubelet's release binaries are
//! (Go's default build mode on linux/amd64). A position-independent executable has every
//! pointer in its read-only data relocated at start-up, which copies those pages (0.4 MiB)
//! into private memory and reads 0.6 MiB of relocation records; fixed-address, they stay
//! shared pages of the file. Shared libraries, heap and stacks are still placed at random.
//! `NODELET_PIE=1` at build time keeps the position-independent default.

fn main() {
    println!("cargo:rerun-if-env-changed=NODELET_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let pie = std::env::var("NODELET_PIE").is_ok_and(|v| v == "1");
    if linux && !pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
