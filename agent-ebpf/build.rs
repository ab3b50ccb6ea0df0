//! Builds nodelet's eBPF object from the C sources in `src/bpf/`.
//!
//! Why it exists: the programs are C with CO-RE relocations (Rust eBPF needs nightly and
//! emits no CO-RE relocations, see shared/NOTES.md), so cargo cannot compile them itself.
//! This script runs, for each `src/bpf/*.bpf.c`, `clang -g -O2 -target bpf -mcpu=v3`, links
//! the objects into one with `bpftool gen object` (maps shared between files are `__weak`
//! there and fold into one), and leaves `telemetry.bpf.o` in `OUT_DIR` for `lib.rs` to embed.
//!
//! What it needs: `clang` (14+), the libbpf headers (`libbpf-dev`: `<bpf/bpf_helpers.h>`),
//! `bpftool`, and kernel BTF for `vmlinux.h`: generated here with
//! `bpftool btf dump file /sys/kernel/btf/vmlinux format c` rather than committed (2.8 MB that
//! would go stale and says nothing a reviewer needs). CO-RE makes the object independent of
//! the kernel the header came from: field offsets and enum values are relocated at load time.
//! Overrides: `CLANG`, `BPFTOOL`, `NODELET_VMLINUX_H` (a ready header, for machines whose
//! kernel has no BTF), `NODELET_BTF` (another BTF file to dump).
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    if let Err(e) = run() {
        // A build script reports by panicking; the message says what to install.
        panic!("agent-ebpf build: {e}");
    }
}

fn run() -> Result<(), String> {
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let src = Path::new("src/bpf");
    println!("cargo:rerun-if-changed={}", src.display());
    for var in ["CLANG", "BPFTOOL", "NODELET_VMLINUX_H", "NODELET_BTF"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let bpftool = env::var("BPFTOOL").unwrap_or_else(|_| "bpftool".into());

    let vmlinux = out.join("vmlinux.h");
    if let Ok(header) = env::var("NODELET_VMLINUX_H") {
        fs::copy(&header, &vmlinux).map_err(|e| format!("copy {header}: {e}"))?;
    } else {
        let btf = env::var("NODELET_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
        let dump = run_cmd(
            Command::new(&bpftool).args(["btf", "dump", "file", &btf, "format", "c"]),
            "bpftool btf dump (install bpftool; or set NODELET_VMLINUX_H)",
        )?;
        write_if_changed(&vmlinux, &dump)?;
    }

    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => return Err(format!("no BPF target arch mapping for {other}")),
        Err(e) => return Err(format!("CARGO_CFG_TARGET_ARCH: {e}")),
    };

    let mut sources: Vec<PathBuf> = fs::read_dir(src)
        .map_err(|e| format!("read {}: {e}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    let mut objects = Vec::new();
    for source in &sources {
        let stem = source
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".c"))
            .ok_or_else(|| format!("bad source name {}", source.display()))?;
        let obj = out.join(format!("{stem}.o"));
        run_cmd(
            Command::new(&clang)
                .args([
                    "-g", "-O2", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
                ])
                .arg(format!("-D__TARGET_ARCH_{arch}"))
                .arg("-I")
                .arg(&out)
                .arg("-I")
                .arg(src)
                .arg("-c")
                .arg(source)
                .arg("-o")
                .arg(&obj),
            "clang -target bpf (install clang and libbpf-dev)",
        )?;
        objects.push(obj);
    }
    let linked = out.join("telemetry.bpf.o");
    run_cmd(
        Command::new(&bpftool)
            .args(["gen", "object"])
            .arg(&linked)
            .args(&objects),
        "bpftool gen object",
    )?;
    Ok(())
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<Vec<u8>, String> {
    let output = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output.stdout)
}

/// Keeps the header's mtime when nothing changed, so clang's inputs look unchanged too.
fn write_if_changed(path: &Path, data: &[u8]) -> Result<(), String> {
    if fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    fs::write(path, data).map_err(|e| format!("write {}: {e}", path.display()))
}
