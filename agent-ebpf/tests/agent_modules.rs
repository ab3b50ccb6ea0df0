//! Builds and runs the unit and kernel tests of `agent/src/ebpf` and `agent/src/stats` from
//! here while the agent binary does not declare those modules yet (issue 4 lands them first).
//! The same files compile inside the agent; drop this harness once `main.rs` has
//! `mod ebpf; mod stats;` (their tests then run under `cargo test -p agent`).
#![allow(dead_code, unused_imports)]

#[path = "../../agent/src/ebpf/mod.rs"]
mod ebpf;
#[path = "../../agent/src/stats/mod.rs"]
mod stats;
