//! Repository checks that `cargo test -p xtask` runs: the invariants of docs/ARCHITECTURE.md
//! that a test can check, and that the map names every module of the xtask and fugu-common.

#[cfg(test)]
mod tests {
    use crate::util::root;
    use std::path::{Path, PathBuf};

    fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                rs_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    fn files_of(dirs: &[&str]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for d in dirs {
            rs_files(&root().join(d), &mut v);
        }
        v.into_iter()
            .map(|p| {
                let rel = p.strip_prefix(root()).unwrap().display().to_string();
                (rel, std::fs::read_to_string(&p).unwrap())
            })
            .collect()
    }

    /// The `[dependencies]` names of a Cargo.toml.
    fn dependencies(manifest: &str) -> Vec<String> {
        let text = std::fs::read_to_string(root().join(manifest)).unwrap();
        let mut in_deps = false;
        let mut v = Vec::new();
        for l in text.lines() {
            let l = l.trim();
            if l.starts_with('[') {
                in_deps = l == "[dependencies]";
            } else if in_deps && !l.is_empty() && !l.starts_with('#') {
                v.push(l.split([' ', '=']).next().unwrap_or("").to_string());
            }
        }
        v
    }

    #[test]
    fn fugu_common_depends_on_nothing_of_the_workspace() {
        assert_eq!(
            dependencies("vmm/common/Cargo.toml"),
            ["libc", "serde", "sha2", "thiserror"]
        );
        for m in ["xtask/Cargo.toml", "tests/Cargo.toml"] {
            let d = dependencies(m);
            assert!(!d.iter().any(|n| n == "fugu"), "{m} depends on fugu: {d:?}");
        }
    }

    #[test]
    fn no_hand_declared_c_and_no_path_includes() {
        // Built so that this file does not match itself.
        let extern_c = ["extern ", "\"C\" {"].concat();
        let link_name = ["#[link", "_name"].concat();
        let path_attr = ["#[pa", "th ="].concat();
        for (rel, text) in files_of(&["xtask/src", "vmm/common/src", "tests"]) {
            for bad in [&extern_c, &link_name, &path_attr] {
                assert!(
                    !text.contains(bad.as_str()),
                    "{rel} has {bad}: use libc / fugu-common"
                );
            }
        }
    }

    #[test]
    fn fugu_common_builds_the_same_for_both_targets() {
        for (rel, text) in files_of(&["vmm/common/src"]) {
            assert!(
                !text.contains("target_arch"),
                "{rel}: no 32/64-bit split in fugu-common"
            );
        }
    }

    #[test]
    fn the_architecture_map_names_every_module() {
        let map = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
        let mut missing = Vec::new();
        for (rel, _) in files_of(&["xtask/src", "vmm/common/src"]) {
            // As the map writes it: xtask paths from src/, fugu-common's from common/.
            let shown = rel
                .strip_prefix("xtask/")
                .or_else(|| rel.strip_prefix("vmm/"))
                .unwrap_or(&rel);
            let (dir, file) = shown.rsplit_once('/').unwrap_or(("", shown));
            let short = format!("{}/{file}", dir.rsplit('/').next().unwrap_or(dir));
            let named = map.contains(&format!("`{shown}`"))
                || map.contains(&format!("`{dir}/*.rs`"))
                || map.contains(&format!("`{short}`"))
                || map.contains(&format!("`{file}`"));
            if !named {
                missing.push(shown.to_string());
            }
        }
        assert!(
            missing.is_empty(),
            "not on docs/ARCHITECTURE.md: {missing:?}"
        );
    }
}
