//! The module map's data flow, enforced: a module of `agent/src` may use only modules of a
//! lower layer (../shared/STYLE.md section 3: sources -> desired -> act; runtime, kernel ->
//! bus -> managers; readers on top). A new module must be given a layer here; an import
//! against the flow fails with the file and line that made it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Module -> layer. Lower layers know nothing of higher ones.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: flags and config, pod identity and spec helpers, counters.
    ("options", 0),
    ("pod", 0),
    ("instrument", 0),
    ("errors", 0),
    ("wait", 0),
    // TLS bootstrapping and the rotating API clients every API user builds on.
    ("certificate", 0),
    // The HTTP GET into pods that probes and lifecycle hooks share.
    ("httpget", 0),
    // The process's own heap housekeeping.
    ("heap_trim", 0),
    // Node facts and the bus and desired-pod sources.
    ("cm", 1),
    ("events", 1),
    ("config", 1),
    // API-backed volumes and env objects (configMap, secret, projected, downwardAPI).
    ("volumemanager", 1),
    // Services for the containers' service environment variables (cluster mode).
    ("services", 1),
    // Kubernetes Events: a handle every emitter above holds, one writer task.
    ("recorder", 1),
    // The runtime: the only CRI caller.
    ("kuberuntime", 2),
    // PLEG: the runtime cache and pod events.
    ("pleg", 3),
    ("prober", 3),
    // The stats model (its mapper reads the runtime cache) and the status manager.
    ("stats", 4),
    ("status", 4),
    ("admission", 4),
    // eBPF writes the stats store; the pod workers act.
    ("ebpf", 5),
    ("pod_workers", 5),
    // Mirror pods: the static pods' API copies (cluster mode), from the desired set.
    ("mirror", 5),
    // Node status reads runtime and PLEG health (cluster mode).
    ("nodestatus", 5),
    // Eviction reads stats and status and hands the pod workers a kill function (main wires it).
    ("eviction", 5),
    // Readers.
    ("metrics", 6),
    ("server", 7),
];

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_one_above_it_in_the_data_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files.sort();
    // Test code may reach across layers (property tests drive later stages); only what ships
    // is held to the flow: files declared as `#[cfg(test)] mod x;` and everything after a
    // file's first `#[cfg(test)]` are skipped.
    let mut test_only = std::collections::BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable source");
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for w in lines.windows(2) {
            if w[0] == "#[cfg(test)]"
                && let Some(name) = w[1]
                    .strip_prefix("mod ")
                    .or_else(|| w[1].strip_prefix("pub(crate) mod "))
                    .and_then(|r| r.strip_suffix(';'))
            {
                let dir = f.parent().expect("a file has a parent");
                let base = if f
                    .file_name()
                    .is_some_and(|n| n == "mod.rs" || n == "main.rs")
                {
                    dir.to_owned()
                } else {
                    dir.join(f.file_stem().expect("a stem"))
                };
                test_only.insert(base.join(format!("{name}.rs")));
            }
        }
    }
    let mut bad = Vec::new();
    let mut unknown = Vec::new();
    for f in files.iter().filter(|f| !test_only.contains(*f)) {
        let rel = f.strip_prefix(&src).expect("under src");
        let module = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs"))
            .expect("a path");
        if module == "main" {
            continue;
        }
        let Some(&own) = layer.get(module) else {
            unknown.push(rel.display().to_string());
            continue;
        };
        let text = std::fs::read_to_string(f).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            if line.trim() == "#[cfg(test)]" {
                break;
            }
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let used: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used == module || used.is_empty() {
                    continue;
                }
                match layer.get(used.as_str()) {
                    Some(&l) if l < own => {}
                    Some(&l) => bad.push(format!(
                        "{}:{}: {module} (layer {own}) uses {used} (layer {l})",
                        rel.display(),
                        n + 1
                    )),
                    None => bad.push(format!(
                        "{}:{}: {module} uses {used}, which has no layer",
                        rel.display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "modules without a layer in tests/layers.rs: {unknown:?}"
    );
    assert!(
        bad.is_empty(),
        "imports against the data flow:\n{}",
        bad.join("\n")
    );
}
