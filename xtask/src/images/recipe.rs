//! Image recipes: images/*.image, a small INI-like format parsed here by hand.
//!
//! ```text
//! # comment
//! [image]
//! name = linux-amd64
//! [package busybox-static]
//! version = 1:1.35.0-4+deb12u1+b1
//! ```
//! Sections may carry one argument (`[package NAME]`); keys are unique within a section;
//! values run to the end of the line, trimmed.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Section {
    pub name: String,
    pub arg: Option<String>,
    pub entries: Vec<(String, String)>,
    /// Line number of the header (1-based).
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct Recipe {
    pub path: PathBuf,
    /// Path relative to the repository root, for messages and provenance.
    pub rel: String,
    pub text: String,
    pub sections: Vec<Section>,
}

/// A pinned Debian package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// Empty when not recorded yet.
    pub sha256: String,
    /// A metapackage whose dependency names the current package (kernel ABI bumps).
    pub track: Option<String>,
    /// The .deb's path in a Debian archive ("pool/main/l/linux/..."), as apt's index gave it
    /// when the pin was recorded: where a snapshot archive keeps the file.
    pub filename: Option<String>,
    /// The source package, for deriving the pool path when `filename` is not recorded.
    pub source: Option<String>,
}

pub fn parse(rel: &str, text: &str) -> Result<Vec<Section>, String> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[') {
            let h = h
                .strip_suffix(']')
                .ok_or_else(|| format!("{rel}:{n}: section header without ']'"))?;
            let mut parts = h.split_whitespace();
            let name = parts
                .next()
                .ok_or_else(|| format!("{rel}:{n}: empty section header"))?
                .to_string();
            let arg = parts.next().map(str::to_string);
            if parts.next().is_some() {
                return Err(format!(
                    "{rel}:{n}: a section header has a name and at most one argument"
                ));
            }
            if sections.iter().any(|s| s.name == name && s.arg == arg) {
                return Err(format!("{rel}:{n}: section [{h}] appears twice"));
            }
            sections.push(Section {
                name,
                arg,
                entries: Vec::new(),
                line: n,
            });
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("{rel}:{n}: expected 'key = value', '[section]' or '#'"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("{rel}:{n}: bad key '{k}'"));
        }
        let sec = sections
            .last_mut()
            .ok_or_else(|| format!("{rel}:{n}: '{k}' comes before any [section]"))?;
        if sec.entries.iter().any(|(kk, _)| kk == k) {
            return Err(format!("{rel}:{n}: '{k}' is set twice in [{}]", sec.name));
        }
        sec.entries.push((k.to_string(), v.to_string()));
    }
    Ok(sections)
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Recipe {
    pub fn load(root: &Path, path: &Path) -> Result<Recipe, String> {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{rel}: {e}"))?;
        let sections = parse(&rel, &text)?;
        let r = Recipe {
            path: path.to_path_buf(),
            rel,
            text,
            sections,
        };
        // Fail early on the keys every recipe needs.
        for k in [
            "name",
            "arch",
            "kind",
            "builder",
            "revision",
            "min_fugu_version",
        ] {
            r.need("image", k)?;
        }
        r.revision()?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if r.name() != stem {
            return Err(format!(
                "{}: name '{}' differs from the file name ('{stem}.image')",
                r.rel,
                r.name()
            ));
        }
        for p in r.pins()? {
            if p.version.is_empty() || p.arch.is_empty() {
                return Err(format!(
                    "{}: [package {}] needs version and arch",
                    r.rel, p.name
                ));
            }
        }
        Ok(r)
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| s.name == name && s.arg.is_none())
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.section(section).and_then(|s| s.get(key))
    }

    pub fn need(&self, section: &str, key: &str) -> Result<&str, String> {
        match self.get(section, key) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("{}: [{section}] needs '{key} = ...'", self.rel)),
        }
    }

    pub fn name(&self) -> &str {
        self.get("image", "name").unwrap_or("")
    }

    pub fn builder(&self) -> &str {
        self.get("image", "builder").unwrap_or("")
    }

    pub fn revision(&self) -> Result<u32, String> {
        self.need("image", "revision")?
            .parse()
            .map_err(|_| format!("{}: [image] revision must be a number", self.rel))
    }

    pub fn pins(&self) -> Result<Vec<Pin>, String> {
        let mut pins = Vec::new();
        for s in self.sections.iter().filter(|s| s.name == "package") {
            let name = s
                .arg
                .clone()
                .ok_or_else(|| format!("{}:{}: [package NAME] needs a name", self.rel, s.line))?;
            pins.push(Pin {
                name,
                version: s.get("version").unwrap_or("").to_string(),
                arch: s.get("arch").unwrap_or("").to_string(),
                sha256: s.get("sha256").unwrap_or("").to_string(),
                track: s.get("track").map(str::to_string),
                filename: s.get("filename").map(str::to_string),
                source: s.get("source").map(str::to_string),
            });
        }
        Ok(pins)
    }
}

/// Rewrite the pin of `old_name` in recipe text: its section header (when the package name
/// changed, e.g. a new kernel ABI), version, sha256 and filename (written after sha256 when
/// known); comments and layout stay.
pub fn rewrite_pin(text: &str, old_name: &str, new: &Pin) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut in_pin = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_pin = t == format!("[package {old_name}]");
            if in_pin {
                out.push_str(&format!("[package {}]\n", new.name));
                continue;
            }
        } else if in_pin {
            if let Some((k, _)) = t.split_once('=') {
                match k.trim() {
                    "version" => {
                        out.push_str(&format!("version = {}\n", new.version));
                        continue;
                    }
                    "sha256" => {
                        out.push_str(&format!("sha256 = {}\n", new.sha256));
                        if let Some(f) = &new.filename {
                            out.push_str(&format!("filename = {f}\n"));
                        }
                        continue;
                    }
                    // Written with sha256 above: the old one belongs to the old version.
                    "filename" => continue,
                    _ => {}
                }
            }
        } else if old_name != new.name {
            // Other sections may name the package (e.g. [kernel] package = ...).
            if let Some((k, v)) = t.split_once('=') {
                if v.trim() == old_name {
                    out.push_str(&format!("{} = {}\n", k.trim(), new.name));
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "# c\n[image]\nname = x\n\n[kernel]\npackage = linux-image-1-cloud\n[package linux-image-1-cloud]\nversion = 1.0-1\narch = amd64\nsha256 =\ntrack = linux-image-cloud\n";

    #[test]
    fn parses_sections_and_arguments() {
        let s = parse("r", R).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].get("name"), Some("x"));
        assert_eq!(s[2].arg.as_deref(), Some("linux-image-1-cloud"));
        assert_eq!(s[2].get("sha256"), Some(""));
    }

    #[test]
    fn rejects_malformed_recipes() {
        assert!(parse("r", "name = x\n").unwrap_err().contains("before any"));
        assert!(parse("r", "[a]\nk = 1\nk = 2\n")
            .unwrap_err()
            .contains("twice"));
        assert!(parse("r", "[a\n").is_err());
        assert!(parse("r", "[a]\njunk\n").is_err());
        assert!(parse("r", "[a]\n[a]\n").is_err());
    }

    #[test]
    fn rewrites_a_pin_in_place() {
        let new = Pin {
            name: "linux-image-2-cloud".into(),
            version: "2.0-1".into(),
            arch: "amd64".into(),
            sha256: "ab".repeat(32),
            track: None,
            filename: Some("pool/main/l/linux-signed-amd64/x.deb".into()),
            source: None,
        };
        let out = rewrite_pin(R, "linux-image-1-cloud", &new);
        let s = parse("r", &out).unwrap();
        assert_eq!(s[1].get("package"), Some("linux-image-2-cloud"));
        assert_eq!(s[2].arg.as_deref(), Some("linux-image-2-cloud"));
        assert_eq!(s[2].get("version"), Some("2.0-1"));
        assert_eq!(s[2].get("sha256"), Some(&*"ab".repeat(32)));
        assert_eq!(s[2].get("track"), Some("linux-image-cloud"));
        assert_eq!(
            s[2].get("filename"),
            Some("pool/main/l/linux-signed-amd64/x.deb")
        );
        assert!(out.starts_with("# c\n"));
        // A second update replaces the filename instead of adding another one.
        let again = rewrite_pin(&out, "linux-image-2-cloud", &new);
        assert!(parse("r", &again).is_ok());
        assert_eq!(again, out);
    }
}
