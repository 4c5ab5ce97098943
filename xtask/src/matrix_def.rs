//! The test matrix definition (ci/matrix.def): a small hand-parsed format, so the xtask needs no
//! parser crate. Axes, exclusions, host needs, Linux check levels, runners, pending features,
//! timeouts and CI host classes; `cells()` expands it into the list of cells.

use std::path::PathBuf;

pub fn path() -> PathBuf {
    crate::util::root().join("ci").join("matrix.def")
}

/// The axes in the order cell names use them.
pub const AXES: [&str; 6] = ["host", "paging", "build", "guest", "boot", "check"];

/// A conjunction of `axis=value[,value]` terms; empty matches everything (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub terms: Vec<(usize, Vec<String>)>,
}

impl Pattern {
    pub fn matches(&self, cell: &Cell) -> bool {
        self.terms
            .iter()
            .all(|(axis, vals)| vals.iter().any(|v| *v == cell.values[*axis]))
    }
    /// The pattern as written in the definition (`*` for the empty one).
    pub fn text(&self) -> String {
        if self.terms.is_empty() {
            return "*".into();
        }
        self.terms
            .iter()
            .map(|(a, v)| format!("{}={}", AXES[*a], v.join(",")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// One value per axis, in AXES order.
    pub values: Vec<String>,
}

impl Cell {
    pub fn get(&self, axis: &str) -> &str {
        let i = AXES.iter().position(|a| *a == axis).expect("known axis");
        &self.values[i]
    }
    /// "pvm/shadow/x86_64/amd64/tiny-direct/boot".
    pub fn id(&self) -> String {
        self.values.join("/")
    }
    /// A file-name-safe form of the id.
    pub fn file_stem(&self) -> String {
        self.values.join("-")
    }
}

#[derive(Debug, Default, Clone)]
pub struct Def {
    /// (axis name, values), in AXES order.
    pub axes: Vec<(String, Vec<String>)>,
    pub exclude: Vec<(Pattern, String)>,
    pub needs: Vec<(Pattern, Vec<String>)>,
    pub levels: Vec<(Pattern, String)>,
    pub runners: Vec<(Pattern, String)>,
    pub pending: Vec<(String, String)>,
    /// `RUNNER [PATTERN] = seconds` (or `*`): the first line whose runner and pattern match a
    /// cell gives its timeout.
    pub timeouts: Vec<(String, Option<Pattern>, u64)>,
    pub classes: Vec<(String, Pattern)>,
}

/// What the definition says about one cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub needs: Vec<String>,
    pub level: Option<String>,
    pub runner: Option<String>,
    pub pending: Option<String>,
    pub timeout_s: u64,
    pub class: Option<String>,
}

fn parse_pattern(s: &str, axes: &[(String, Vec<String>)], line: usize) -> Result<Pattern, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(Pattern { terms: vec![] });
    }
    let mut terms = Vec::new();
    for term in s.split_whitespace() {
        let (axis, vals) = term
            .split_once('=')
            .ok_or_else(|| format!("line {line}: '{term}' is not axis=value"))?;
        let ai = axes
            .iter()
            .position(|(a, _)| a == axis)
            .ok_or_else(|| format!("line {line}: unknown axis '{axis}'"))?;
        let vals: Vec<String> = vals.split(',').map(str::to_string).collect();
        for v in &vals {
            if !axes[ai].1.contains(v) {
                return Err(format!(
                    "line {line}: '{v}' is not a value of axis {axis} ({})",
                    axes[ai].1.join(" ")
                ));
            }
        }
        terms.push((ai, vals));
    }
    if terms.is_empty() {
        return Err(format!("line {line}: empty pattern"));
    }
    Ok(Pattern { terms })
}

/// Parse the definition's text; errors name the line.
pub fn parse(text: &str) -> Result<Def, String> {
    let mut def = Def::default();
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        let (left, right) = line
            .split_once(" = ")
            .map(|(l, r)| (l.trim(), r.trim()))
            .ok_or_else(|| format!("line {n}: expected 'left = right'"))?;
        if right.is_empty() {
            return Err(format!("line {n}: nothing after '='"));
        }
        match section.as_str() {
            "axes" => {
                if !AXES.contains(&left) {
                    return Err(format!(
                        "line {n}: unknown axis '{left}' (axes: {})",
                        AXES.join(" ")
                    ));
                }
                if def.axes.iter().any(|(a, _)| a == left) {
                    return Err(format!("line {n}: axis '{left}' given twice"));
                }
                def.axes.push((
                    left.to_string(),
                    right.split_whitespace().map(str::to_string).collect(),
                ));
            }
            _ if def.axes.len() != AXES.len() => {
                return Err(format!(
                    "line {n}: [axes] must list {} before other sections",
                    AXES.join(" ")
                ));
            }
            "exclude" => def
                .exclude
                .push((parse_pattern(left, &def.axes, n)?, right.to_string())),
            "needs" => def.needs.push((
                parse_pattern(left, &def.axes, n)?,
                right.split_whitespace().map(str::to_string).collect(),
            )),
            "levels" => def
                .levels
                .push((parse_pattern(left, &def.axes, n)?, right.to_string())),
            "runners" => def
                .runners
                .push((parse_pattern(left, &def.axes, n)?, right.to_string())),
            "pending" => def.pending.push((left.to_string(), right.to_string())),
            "timeouts" => def.timeouts.push((
                left.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                match left.trim().split_once(char::is_whitespace) {
                    Some((_, pattern)) => Some(parse_pattern(pattern, &def.axes, n)?),
                    None => None,
                },
                right
                    .parse()
                    .map_err(|_| format!("line {n}: '{right}' is not a number of seconds"))?,
            )),
            "classes" => def
                .classes
                .push((left.to_string(), parse_pattern(right, &def.axes, n)?)),
            other => return Err(format!("line {n}: unknown section [{other}]")),
        }
    }
    // The axes in AXES order, whatever order the file lists them in.
    let mut axes = Vec::new();
    for a in AXES {
        let (_, v) = def
            .axes
            .iter()
            .find(|(x, _)| x == a)
            .ok_or_else(|| format!("[axes] lacks '{a}'"))?;
        axes.push((a.to_string(), v.clone()));
    }
    if axes != def.axes {
        return Err(format!("[axes] must be in the order {}", AXES.join(" ")));
    }
    Ok(def)
}

pub fn load() -> Result<Def, String> {
    let p = path();
    let text =
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", p.display()))
}

impl Def {
    /// Every combination of the axes, excluded ones included, in axis order.
    fn product(&self) -> Vec<Cell> {
        let mut out = vec![Cell { values: vec![] }];
        for (_, vals) in &self.axes {
            let mut next = Vec::new();
            for c in &out {
                for v in vals {
                    let mut values = c.values.clone();
                    values.push(v.clone());
                    next.push(Cell { values });
                }
            }
            out = next;
        }
        out
    }

    /// Why a combination is excluded, if it is.
    pub fn excluded(&self, cell: &Cell) -> Option<&str> {
        self.exclude
            .iter()
            .find(|(p, _)| p.matches(cell))
            .map(|(_, why)| why.as_str())
    }

    /// The matrix's cells.
    pub fn cells(&self) -> Vec<Cell> {
        self.product()
            .into_iter()
            .filter(|c| self.excluded(c).is_none())
            .collect()
    }

    /// Every excluded combination with its reason.
    pub fn excluded_cells(&self) -> Vec<(Cell, String)> {
        self.product()
            .into_iter()
            .filter_map(|c| self.excluded(&c).map(|w| (c.clone(), w.to_string())))
            .collect()
    }

    pub fn plan(&self, cell: &Cell) -> Plan {
        let mut needs: Vec<String> = Vec::new();
        for (p, ns) in &self.needs {
            if p.matches(cell) {
                for n in ns {
                    if !needs.contains(n) {
                        needs.push(n.clone());
                    }
                }
            }
        }
        let first = |v: &[(Pattern, String)]| {
            v.iter()
                .find(|(p, _)| p.matches(cell))
                .map(|(_, s)| s.clone())
        };
        let runner = first(&self.runners);
        let pending = runner.as_ref().and_then(|r| {
            self.pending
                .iter()
                .find(|(n, _)| n == r)
                .map(|(_, s)| s.clone())
        });
        let timeout = |name: &str| {
            self.timeouts
                .iter()
                .find(|(n, p, _)| n == name && p.as_ref().is_none_or(|p| p.matches(cell)))
                .map(|(_, _, s)| *s)
        };
        let timeout_s = runner
            .as_deref()
            .and_then(timeout)
            .or_else(|| timeout("*"))
            .unwrap_or(60);
        Plan {
            needs,
            level: first(&self.levels),
            runner,
            pending,
            timeout_s,
            class: self.class_of(cell).map(str::to_string),
        }
    }

    /// The CI host class whose hosts run this cell.
    pub fn class_of(&self, cell: &Cell) -> Option<&str> {
        self.classes
            .iter()
            .find(|(_, p)| p.matches(cell))
            .map(|(n, _)| n.as_str())
    }

    /// Every runner name the definition uses, in first-use order.
    #[cfg(test)]
    pub fn runner_names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for (_, r) in &self.runners {
            if !v.contains(r) {
                v.push(r.clone());
            }
        }
        v
    }
}

/// A user's cell selection: `axis=v1,v2` terms, `class=NAME`, or a glob (`*`) / substring on
/// the cell id. A cell is selected when it matches every filter.
pub fn filter_matches(def: &Def, filter: &str, cell: &Cell) -> bool {
    if let Some((k, v)) = filter.split_once('=') {
        let vals: Vec<&str> = v.split(',').collect();
        if k == "class" {
            return def.class_of(cell).is_some_and(|c| vals.contains(&c));
        }
        if let Some(i) = AXES.iter().position(|a| *a == k) {
            return vals.contains(&cell.values[i].as_str());
        }
        return false;
    }
    let id = cell.id();
    if filter.contains('*') {
        glob(filter, &id)
    } else {
        id.contains(filter)
    }
}

/// Check a filter's syntax against the definition (unknown axis or value is a usage error).
pub fn check_filter(def: &Def, filter: &str) -> Result<(), String> {
    if let Some((k, v)) = filter.split_once('=') {
        if k == "class" {
            for c in v.split(',') {
                if !def.classes.iter().any(|(n, _)| n == c) {
                    return Err(format!(
                        "unknown host class '{c}' (classes: {})",
                        def.classes
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                }
            }
            return Ok(());
        }
        parse_pattern(filter, &def.axes, 0)
            .map(|_| ())
            .map_err(|e| e.trim_start_matches("line 0: ").to_string())?;
    }
    Ok(())
}

/// Shell-style glob with `*` only.
pub fn glob(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = "\
[axes]
host = vmx pvm
paging = tdp shadow
build = x86_64
guest = amd64
boot = tiny-direct bios-disk
check = boot virtio-disk
[exclude]
host=pvm paging=tdp = no tdp on pvm
boot=bios-disk check=boot = checked through the disk
[needs]
* = kvm
host=vmx = vmx
boot=bios-disk = seabios kvm
[runners]
boot=tiny-direct check=boot = tiny
* = other
[pending]
other = needs issue #5 = really
[timeouts]
* = 30
tiny host=pvm = 7
tiny = 5
[classes]
emulated = host=pvm paging=shadow
";

    #[test]
    fn expands_cells_minus_exclusions() {
        let d = parse(MINI).unwrap();
        let cells = d.cells();
        // 3 host/paging combos x 2 boot x 2 check = 12, minus bios-disk/boot (3); 16 in all.
        assert_eq!(cells.len(), 9);
        assert_eq!(d.excluded_cells().len(), 16 - 9);
        assert!(cells
            .iter()
            .all(|c| !(c.get("host") == "pvm" && c.get("paging") == "tdp")));
        assert_eq!(cells[0].id(), "vmx/tdp/x86_64/amd64/tiny-direct/boot");
        assert_eq!(
            cells[0].file_stem(),
            "vmx-tdp-x86_64-amd64-tiny-direct-boot"
        );
    }

    #[test]
    fn plans_collect_needs_runner_pending_timeout_class() {
        let d = parse(MINI).unwrap();
        let cell = |id: &str| {
            d.cells()
                .into_iter()
                .find(|c| c.id() == id)
                .unwrap_or_else(|| panic!("{id}"))
        };
        let p = d.plan(&cell("vmx/shadow/x86_64/amd64/bios-disk/virtio-disk"));
        assert_eq!(p.needs, vec!["kvm", "vmx", "seabios"]);
        assert_eq!(p.runner.as_deref(), Some("other"));
        // Only the first " = " splits: the reason keeps its own '='.
        assert_eq!(p.pending.as_deref(), Some("needs issue #5 = really"));
        assert_eq!(p.timeout_s, 30);
        assert_eq!(p.class, None);
        let p = d.plan(&cell("pvm/shadow/x86_64/amd64/tiny-direct/boot"));
        assert_eq!(p.needs, vec!["kvm"]);
        assert_eq!(
            (p.runner.as_deref(), p.pending, p.timeout_s),
            (Some("tiny"), None, 7),
            "the first timeout line whose runner and pattern match"
        );
        assert_eq!(p.class.as_deref(), Some("emulated"));
        let p = d.plan(&cell("vmx/tdp/x86_64/amd64/tiny-direct/boot"));
        assert_eq!(p.timeout_s, 5);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse("[axes]\nhost = a\n[needs]\n* = kvm\n").unwrap_err();
        assert!(e.contains("line 4"), "{e}");
        let mut bad = MINI.replace("host=vmx = vmx", "host=arm = vmx");
        let e = parse(&bad).unwrap_err();
        assert!(e.contains("'arm' is not a value of axis host"), "{e}");
        bad = MINI.replace("tiny = 5", "tiny = soon");
        assert!(parse(&bad).unwrap_err().contains("not a number"));
        bad = MINI.replace("[pending]", "[pendng]");
        assert!(parse(&bad).unwrap_err().contains("unknown section"));
        assert!(parse(&MINI.replace("* = kvm", "* =")).is_err());
    }

    #[test]
    fn filters_and_globs() {
        let d = parse(MINI).unwrap();
        let c = &d.cells()[0];
        assert!(filter_matches(&d, "host=vmx,pvm", c));
        assert!(!filter_matches(&d, "host=pvm", c));
        assert!(filter_matches(&d, "vmx/*/boot", c));
        assert!(filter_matches(&d, "tiny", c));
        assert!(!filter_matches(&d, "class=emulated", c));
        assert!(check_filter(&d, "class=nope").is_err());
        assert!(check_filter(&d, "host=arm").is_err());
        assert!(check_filter(&d, "colour=red").is_err());
        assert!(check_filter(&d, "anything").is_ok());
        assert!(glob("a*c*e", "abcde") && !glob("a*c*e", "abcd") && glob("*", ""));
    }

    #[test]
    fn the_repo_definition_parses_and_names_every_class() {
        let d = load().unwrap();
        let cells = d.cells();
        assert!(!cells.is_empty());
        for c in &cells {
            let p = d.plan(c);
            assert!(p.runner.is_some(), "{} has no runner", c.id());
            assert!(p.class.is_some(), "{} belongs to no host class", c.id());
        }
        let names: Vec<&str> = d.classes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "intel-ept",
                "intel-shadow",
                "amd-npt",
                "amd-shadow",
                "svm-tcg-npt",
                "svm-tcg-shadow",
                "svm-tcg-i386-npt",
                "svm-tcg-i386-shadow",
                "emulated"
            ]
        );
    }
}
