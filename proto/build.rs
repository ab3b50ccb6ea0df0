//! Generates the CRI `runtime.v1` messages and gRPC clients from `proto/runtime/v1/api.proto`,
//! and the `grpc.health.v1` client the agent's grpc probes call.
//!
//! Why a build script: the Rust types must follow the `.proto` exactly (field numbers are the
//! wire contract with containerd/CRI-O), so they are generated rather than written by hand,
//! and generated on every build rather than committed so the two cannot drift apart.
//!
//! What it needs: nothing on the machine. `protox` parses the `.proto` in pure Rust (no
//! `protoc`), `tonic-prost-build` turns the descriptors into prost messages and tonic clients
//! in `OUT_DIR`. Only clients are generated: nodelet calls a runtime, it never serves CRI.

use std::path::Path;

/// Every `.proto` compiled, relative to the include root: listed, not globbed, so adding a
/// file is a visible change (as containerd's rust-extensions client crate does).
const PROTOS: &[&str] = &["runtime/v1/api.proto", "grpc/health/v1/health.proto"];
const INCLUDE: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(INCLUDE).join(proto).display()
        );
    }

    let fds = protox::compile(PROTOS, [INCLUDE])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        // Credentials must not reach logs via `{:?}`: lib.rs implements a redacting Debug
        // (upstream marks these fields `debug_redact`).
        .skip_debug(["runtime.v1.AuthConfig"])
        .compile_fds(fds)?;
    Ok(())
}
