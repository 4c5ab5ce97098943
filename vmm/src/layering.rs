//! The import rules of docs/ARCHITECTURE.md ("Invariants"), checked on the source text: what
//! each top-level module of this crate names with `crate::` in its non-test code (everything
//! before a file's inline test module, comments left out).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that depend on std, libc and each other only, so that anything may use them.
const LEAVES: &[&str] = &[
    "bits",
    "exit_status",
    "outcome",
    "seccomp",
    "signals",
    "sync",
    "trace",
];

/// The only files whose code may depend on the host's architecture or pointer width: the
/// backend seam, and one message.
const ARCH_SPLIT: &[&str] = &[
    "backend.rs",
    "hypervisor/mod.rs",
    "hypervisor/kvm_abi.rs",
    "memory/mod.rs",
    "devices/virtio/queue.rs",
    "boot/linux.rs",
    "machine/vcpu.rs",
    // System call numbers and the audit architecture of the seccomp filters differ per host.
    "seccomp.rs",
];

struct Source {
    /// Path below src/, with '/'.
    path: String,
    /// The non-test code without comments.
    code: String,
}

fn sources() -> Vec<Source> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<Source>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read src/")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, root, out);
                continue;
            }
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            // This checker names what it looks for (`target_arch`, ...): not code to check.
            if !rel.ends_with(".rs")
                || matches!(name.as_str(), "tests.rs" | "testutil.rs")
                || rel == "layering.rs"
            {
                continue;
            }
            let text = std::fs::read_to_string(&p).expect("read a source file");
            let code = non_test(&text)
                .lines()
                .map(|l| l.split("//").next().unwrap_or_default())
                .collect::<Vec<_>>()
                .join("\n");
            out.push(Source { path: rel, code });
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out
}

/// A file's code before its inline test module (`#[cfg(test)] mod NAME {`, last by
/// convention). A `#[cfg(test)]` on one item (a test-only method, a `mod testutil;`) does not
/// end the non-test code: what follows it is still checked.
fn non_test(text: &str) -> &str {
    for (i, attr) in text.match_indices("#[cfg(test)]") {
        let next = text[i + attr.len()..].trim_start();
        let line = next.lines().next().unwrap_or_default().trim_end();
        let item = ["pub(crate) ", "pub "]
            .iter()
            .find_map(|v| line.strip_prefix(v))
            .unwrap_or(line);
        if item.starts_with("mod ") && line.ends_with('{') {
            return &text[..i];
        }
    }
    text
}

/// The top-level module a file belongs to (None for the crate roots and binaries).
fn module(path: &str) -> Option<&str> {
    if matches!(path, "lib.rs" | "main.rs" | "layering.rs") || path.starts_with("bin/") {
        return None;
    }
    let first = path.split('/').next()?;
    Some(first.strip_suffix(".rs").unwrap_or(first))
}

/// Top-level module -> the top-level modules its code names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in sources() {
        let Some(m) = module(&s.path) else { continue };
        let deps = g.entry(m.to_string()).or_default();
        for (i, _) in s.code.match_indices("crate::") {
            let rest = &s.code[i + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `use crate::{a, b::c}`: every first segment in the group.
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .map(|p| p.trim().split("::").next().unwrap_or_default())
                    .collect(),
                None => vec![rest
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default()],
            };
            for n in names.into_iter().filter(|n| !n.is_empty() && *n != m) {
                deps.insert(n.to_string());
            }
        }
    }
    g
}

#[test]
fn leaf_modules_import_only_leaf_modules() {
    for (m, deps) in graph() {
        if LEAVES.contains(&m.as_str()) {
            let bad: Vec<_> = deps
                .iter()
                .filter(|d| !LEAVES.contains(&d.as_str()))
                .collect();
            assert!(bad.is_empty(), "leaf module {m} imports {bad:?}");
        }
    }
}

#[test]
fn devices_never_see_the_machine() {
    let g = graph();
    // seccomp imports nothing of the crate: a device worker thread enters its filter first.
    let allowed = ["bits", "hypervisor", "memory", "seccomp", "sync"];
    let bad: Vec<_> = g["devices"]
        .iter()
        .filter(|d| !allowed.contains(&d.as_str()))
        .collect();
    assert!(
        bad.is_empty(),
        "devices import {bad:?}: give them a callback instead"
    );
    // The hypervisor and memory layers sit below everything but the backend choice.
    for low in ["hypervisor", "memory"] {
        let bad: Vec<_> = g[low]
            .iter()
            .filter(|d| !["hypervisor", "memory", "sync"].contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "{low} imports {bad:?}");
    }
}

#[test]
fn no_import_cycles_between_modules() {
    let g = graph();
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit<'a>(
        m: &'a str,
        g: &'a BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = stack.iter().position(|s| *s == m) {
            panic!("import cycle: {} -> {m}", stack[at..].join(" -> "));
        }
        stack.push(m);
        for d in g.get(m).into_iter().flatten() {
            visit(d, g, stack, done);
        }
        stack.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_32_64_bit_split_lives_in_the_seam() {
    for s in sources() {
        if s.code.contains("target_arch") || s.code.contains("target_pointer_width") {
            assert!(
                ARCH_SPLIT.contains(&s.path.as_str()),
                "{} depends on the host architecture; keep that in the backend seam \
                 (docs/ARCHITECTURE.md, Invariants)",
                s.path
            );
        }
    }
}

#[test]
fn the_entry_points_are_the_top() {
    // `app` (what the `fugu` binary runs) and `fuzzing` (the fuzz targets' view) use the
    // crate; nothing in it uses them.
    for (m, deps) in graph() {
        for top in ["app", "fuzzing"] {
            assert!(!deps.contains(top), "{m} imports {top}, an entry point");
        }
    }
}

#[test]
fn the_checker_sees_imports() {
    let g = graph();
    assert!(g["machine"].contains("devices") && g["machine"].contains("outcome"));
    assert!(g["outcome"].contains("sync"));
}

#[test]
fn the_control_plane_runs_vms_as_processes() {
    // fugud starts `fugu run` processes; it never builds a Machine in its own process, so a
    // VM that crashes cannot take the daemon down.
    let g = graph();
    for never in ["machine", "hypervisor", "memory", "backend"] {
        assert!(
            !g["control"].contains(never),
            "control imports {never}: VMs run in their own processes"
        );
    }
}
