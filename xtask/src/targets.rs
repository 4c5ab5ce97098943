//! The host architectures fugu is built for, and the names users may call them.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    X86_64,
    I686,
}

pub const ALL: [Target; 2] = [Target::X86_64, Target::I686];

impl Target {
    pub fn triple(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64-unknown-linux-gnu",
            Target::I686 => "i686-unknown-linux-gnu",
        }
    }
    /// The short name used in messages, matrix cells and artifact names.
    pub fn short(self) -> &'static str {
        match self {
            Target::X86_64 => "x86_64",
            Target::I686 => "i686",
        }
    }
    /// Debian's architecture name.
    pub fn debarch(self) -> &'static str {
        match self {
            Target::X86_64 => "amd64",
            Target::I686 => "i386",
        }
    }
    /// The host whose build layout target/ follows: where the fugu builds are (this xtask's
    /// own target, or FUGU_BUILD_HOST, which the svm-tcg-i386 L1 sets to the outer host's: its
    /// i686 xtask reads the builds that the x86_64 xtask made).
    pub fn build_host() -> Target {
        Self::build_host_from(std::env::var("FUGU_BUILD_HOST").ok().as_deref())
    }
    pub fn build_host_from(var: Option<&str>) -> Target {
        ALL.into_iter()
            .find(|t| Some(t.short()) == var)
            .unwrap_or_else(Target::host)
    }
    /// The target this xtask runs on.
    pub fn host() -> Target {
        if cfg!(target_arch = "x86") {
            Target::I686
        } else {
            Target::X86_64
        }
    }
}

pub const SUPPORTED: &str = "i686 (also i386, x86, i686-unknown-linux-gnu), x86_64 (also amd64, x86_64-unknown-linux-gnu), all";

/// Parse one user-given target name; `all` expands to every target.
pub fn parse(name: &str) -> Result<Vec<Target>, String> {
    Ok(match name {
        "i686" | "i386" | "x86" | "i686-unknown-linux-gnu" => vec![Target::I686],
        "x86_64" | "amd64" | "x86-64" | "x86_64-unknown-linux-gnu" => vec![Target::X86_64],
        "all" => ALL.to_vec(),
        other => return Err(format!("unknown target '{other}'; supported: {SUPPORTED}")),
    })
}

/// The targets named by `--target` values (each may be comma-separated), deduplicated and
/// sorted; the host when none is given.
pub fn from_values(values: &[String]) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for v in values {
        for part in v.split(',') {
            for t in parse(part)? {
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
        }
    }
    if targets.is_empty() {
        targets.push(Target::host());
    }
    targets.sort();
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn aliases_and_all() {
        for n in ["i686", "i386", "x86", "i686-unknown-linux-gnu"] {
            assert_eq!(parse(n).unwrap(), vec![Target::I686]);
        }
        for n in ["x86_64", "amd64", "x86_64-unknown-linux-gnu"] {
            assert_eq!(parse(n).unwrap(), vec![Target::X86_64]);
        }
        assert_eq!(parse("all").unwrap(), ALL.to_vec());
        let e = parse("arm64").unwrap_err();
        assert!(e.contains("supported") && e.contains("i686") && e.contains("x86_64"));
    }

    #[test]
    fn repeated_and_comma_separated_targets_dedupe() {
        let t = from_values(&s(&["i386", "amd64,x86"])).unwrap();
        assert_eq!(t, vec![Target::X86_64, Target::I686]);
        assert!(from_values(&s(&["arm"])).is_err());
        assert_eq!(from_values(&[]).unwrap(), vec![Target::host()]);
        assert_eq!(Target::build_host_from(Some("i686")), Target::I686);
        assert_eq!(Target::build_host_from(Some("x86_64")), Target::X86_64);
        assert_eq!(Target::build_host_from(Some("arm")), Target::host());
        assert_eq!(Target::build_host_from(None), Target::host());
    }
}
