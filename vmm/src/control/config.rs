//! The VM configuration: TOML, one `[vm.NAME]` table per VM, in a file or a directory of
//! `*.toml` files (read in name order). Parsed with toml + serde; every error names the file,
//! the line and the key. A VM's table becomes the options of its `fugu run`, checked with the
//! same parsers (and finally clap) that check `fugu run`'s command line.
//!
//! ```toml
//! [vm.web]
//! kernel = "/srv/vms/web/vmlinuz"      # or bios = true / image = "debian-12-i386"
//! initrd = ["/srv/vms/web/initrd.img"]
//! cmdline = "console=ttyS0 root=/dev/vda"
//! memory = "512M"                       # or a number of MiB
//! cpus = 2
//! disks = ["/srv/vms/web/root.img"]     # as --disk: "PATH[,ro]"
//! nets = ["tap=tap-web"]                # as --net: "tap=NAME[,mac=MAC]"
//! autostart = true
//! owner = "alice"                       # a user who may start, stop and attach to it
//! owner_group = "webops"                # and/or the members of a group
//! ```
//! Relative paths are taken from the directory of the file that declares the VM.

use super::{name_error, valid_name};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// A VM as fugud runs it: the options of its `fugu run` and who may control it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    /// `fugu run` options (without `--serial`: fugud owns the console).
    pub args: Vec<String>,
    /// The directory the VM process runs in (relative paths in `args`).
    pub cwd: PathBuf,
    pub cpus: u32,
    pub memory: u64,
    pub autostart: bool,
    pub owner_uid: Option<u32>,
    pub owner_gid: Option<u32>,
    /// The owner as written ("alice", "@webops"), for status.
    pub owner: String,
    /// "FILE:LINE" of its declaration, or None for a VM started with options.
    pub source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    vm: BTreeMap<String, Spanned<VmToml>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Size {
    Mib(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Bios {
    On(bool),
    Path(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmToml {
    memory: Option<Spanned<Size>>,
    cpus: Option<Spanned<u32>>,
    kernel: Option<Spanned<String>>,
    #[serde(default)]
    initrd: Vec<String>,
    cmdline: Option<String>,
    bios: Option<Spanned<Bios>>,
    boot: Option<Spanned<String>>,
    net_rom: Option<String>,
    image: Option<Spanned<String>>,
    #[serde(default)]
    disks: Vec<Spanned<String>>,
    #[serde(default)]
    nets: Vec<Spanned<String>>,
    #[serde(default)]
    no_acpi: bool,
    #[serde(default)]
    nested: bool,
    host_compat: Option<Spanned<String>>,
    cpu_profile: Option<Spanned<String>>,
    cpu_features: Option<Spanned<String>>,
    seccomp: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    boot_timeout: Option<u64>,
    #[serde(default)]
    autostart: bool,
    owner: Option<Spanned<String>>,
    owner_group: Option<Spanned<String>>,
}

/// Why the configuration cannot be used. Every message names the file, and where the
/// problem is inside it, the line and the VM's table or key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file or directory (or a file in it) cannot be read.
    #[error("{}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not fugu's schema (an unknown key, a value of the wrong type); `line`
    /// where toml knows it.
    #[error("{file}{}: {message}", .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Toml {
        file: String,
        line: Option<usize>,
        message: String,
    },
    /// One key of a VM's table (`vm.NAME.KEY`).
    #[error("{file}:{line}: vm.{vm}.{key}: {problem}")]
    Key {
        file: String,
        line: usize,
        vm: String,
        key: &'static str,
        #[source]
        problem: Box<KeyError>,
    },
    /// A VM's table as a whole (`[vm.NAME]`).
    #[error("{file}:{line}: [vm.{vm}]: {problem}")]
    Vm {
        file: String,
        line: usize,
        vm: String,
        #[source]
        problem: VmTableError,
    },
    /// `at` and `first` are "FILE:LINE".
    #[error("{at}: VM {vm} is declared twice (first at {first})")]
    DeclaredTwice {
        at: String,
        vm: String,
        first: String,
    },
}

/// What is wrong with the value of one key of a VM's table.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Memory(#[from] crate::cli::SizeError),
    #[error("{0} vCPUs: give 1 to 255")]
    Cpus(u32),
    #[error("false: leave bios out instead, and give kernel or image")]
    BiosFalse,
    #[error("boot goes with bios")]
    BootWithoutBios,
    #[error("'{0}': use disk or net")]
    Boot(String),
    #[error(transparent)]
    Disk(#[from] crate::devices::virtio::setup::DiskOptionError),
    #[error(transparent)]
    Net(#[from] crate::devices::virtio::setup::NetOptionError),
    /// A value of one of `fugu run`'s enumerated options (`option` without the dashes).
    #[error("'{value}' is not one of the values of --{option}")]
    NotAValue { value: String, option: String },
    #[error(transparent)]
    CpuFeatures(#[from] crate::arch::x86::features::UnknownFeature),
    /// `user`, `group`, `owner` or `owner_group` cannot be resolved.
    #[error(transparent)]
    Id(#[from] crate::privileges::IdError),
    #[error("group needs user (who the VM runs as)")]
    GroupWithoutUser,
}

/// What is wrong with a VM's table as a whole.
#[derive(Debug, thiserror::Error)]
pub enum VmTableError {
    /// The VM's name (as given) is not one.
    #[error("{}", name_error(.0))]
    Name(String),
    #[error("give exactly one of kernel, bios and image")]
    Source,
    /// The options it becomes are not what `fugu run` accepts.
    #[error(transparent)]
    RunArgs(#[from] RunArgsError),
}

/// Why options are not what `fugu run` under fugud accepts.
#[derive(Debug, thiserror::Error)]
pub enum RunArgsError {
    #[error("--serial is not for VMs under fugud: fugud keeps the console (fugu console NAME)")]
    Serial,
    #[error("not the options of fugu run")]
    NotRun,
    /// clap's error; the message is its first line.
    #[error("{}", first_line(.0))]
    Invalid(#[source] clap::Error),
}

/// The first line of clap's error, without "error: ".
fn first_line(e: &clap::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid options")
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// The configuration: every VM declared, and notes (a missing configuration).
#[derive(Debug, Default)]
pub struct Config {
    pub vms: Vec<VmSpec>,
    pub notes: Vec<String>,
}

/// Read the configuration at `path` (a file, or a directory of `*.toml` files).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    // Absolute, so that the VMs' relative paths do not depend on fugud's directory.
    let path = &path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Config {
                vms: Vec::new(),
                notes: vec![format!(
                    "{} does not exist: no VMs are declared",
                    path.display()
                )],
            })
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.clone(),
                source,
            })
        }
    };
    let files = if meta.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
            .collect();
        v.sort();
        v
    } else {
        vec![path.to_path_buf()]
    };
    let mut config = Config::default();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
            path: f.clone(),
            source,
        })?;
        for vm in parse(&text, &f)? {
            if let Some(first) = seen.get(&vm.name) {
                return Err(ConfigError::DeclaredTwice {
                    at: vm.source.clone().unwrap_or_default(),
                    vm: vm.name,
                    first: first.clone(),
                });
            }
            seen.insert(vm.name.clone(), vm.source.clone().unwrap_or_default());
            config.vms.push(vm);
        }
    }
    Ok(config)
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Parse one file's text (`file` names it in errors; relative paths are taken from its
/// directory).
pub fn parse(text: &str, file: &Path) -> Result<Vec<VmSpec>, ConfigError> {
    let shown = file.display().to_string();
    let parsed: FileToml = toml::from_str(text).map_err(|e| ConfigError::Toml {
        file: shown.clone(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim().to_string(),
    })?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
    let dir = if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir().map_or(dir.clone(), |c| c.join(&dir))
    };
    let mut out = Vec::new();
    for (name, vm) in parsed.vm {
        let line = line_of(text, vm.span().start);
        let at =
            |span: std::ops::Range<usize>, key: &'static str, problem: KeyError| ConfigError::Key {
                file: shown.clone(),
                line: line_of(text, span.start),
                vm: name.clone(),
                key,
                problem: Box::new(problem),
            };
        let table = |problem: VmTableError| ConfigError::Vm {
            file: shown.clone(),
            line,
            vm: name.clone(),
            problem,
        };
        if !valid_name(&name) {
            return Err(table(VmTableError::Name(name.clone())));
        }
        let vm = vm.into_inner();
        let mut args: Vec<String> = Vec::new();
        let memory = match &vm.memory {
            None => 256 << 20,
            Some(m) => {
                let text = match m.get_ref() {
                    Size::Mib(n) => format!("{n}M"),
                    Size::Text(s) => s.clone(),
                };
                crate::cli::parse_memory(&text).map_err(|e| at(m.span(), "memory", e.into()))?
            }
        };
        push(&mut args, "--memory", &format!("{}K", memory >> 10));
        let cpus = match &vm.cpus {
            None => 1,
            Some(c) if (1..=255).contains(c.get_ref()) => *c.get_ref(),
            Some(c) => return Err(at(c.span(), "cpus", KeyError::Cpus(*c.get_ref()))),
        };
        push(&mut args, "--cpus", &cpus.to_string());
        let sources = [vm.kernel.is_some(), vm.bios.is_some(), vm.image.is_some()];
        if sources.iter().filter(|&&b| b).count() != 1 {
            return Err(table(VmTableError::Source));
        }
        if let Some(k) = &vm.kernel {
            push(&mut args, "--kernel", k.get_ref());
        }
        if let Some(i) = &vm.image {
            push(&mut args, "--image", i.get_ref());
        }
        if let Some(b) = &vm.bios {
            match b.get_ref() {
                Bios::On(true) => args.push("--bios".into()),
                Bios::On(false) => return Err(at(b.span(), "bios", KeyError::BiosFalse)),
                Bios::Path(p) => args.push(format!("--bios={p}")),
            }
        }
        if let Some(b) = &vm.boot {
            if vm.bios.is_none() {
                return Err(at(b.span(), "boot", KeyError::BootWithoutBios));
            }
            <crate::cli::BootArg as clap::ValueEnum>::from_str(b.get_ref(), false)
                .map_err(|_| at(b.span(), "boot", KeyError::Boot(b.get_ref().clone())))?;
            push(&mut args, "--boot", b.get_ref());
        }
        if let Some(r) = &vm.net_rom {
            push(&mut args, "--net-rom", r);
        }
        for i in &vm.initrd {
            push(&mut args, "--initrd", i);
        }
        if let Some(c) = &vm.cmdline {
            push(&mut args, "--cmdline", c);
        }
        for d in &vm.disks {
            crate::devices::virtio::setup::parse_disk(d.get_ref())
                .map_err(|e| at(d.span(), "disks", e.into()))?;
            push(&mut args, "--disk", d.get_ref());
        }
        for n in &vm.nets {
            crate::devices::virtio::setup::parse_net(n.get_ref())
                .map_err(|e| at(n.span(), "nets", e.into()))?;
            push(&mut args, "--net", n.get_ref());
        }
        if vm.no_acpi {
            args.push("--no-acpi".into());
        }
        if vm.nested {
            args.push("--nested".into());
        }
        for (key, value, check) in [
            (
                "host_compat",
                &vm.host_compat,
                (|s| <crate::cli::HostCompatArg as clap::ValueEnum>::from_str(s, false).is_ok())
                    as fn(&str) -> bool,
            ),
            ("cpu_profile", &vm.cpu_profile, |s| {
                <crate::cli::CpuProfileArg as clap::ValueEnum>::from_str(s, false).is_ok()
            }),
            ("seccomp", &vm.seccomp, |s| {
                <crate::cli::SeccompArg as clap::ValueEnum>::from_str(s, false).is_ok()
            }),
        ] {
            if let Some(v) = value {
                if !check(v.get_ref()) {
                    return Err(at(
                        v.span(),
                        key,
                        KeyError::NotAValue {
                            value: v.get_ref().clone(),
                            option: key.replace('_', "-"),
                        },
                    ));
                }
                push(
                    &mut args,
                    &format!("--{}", key.replace('_', "-")),
                    v.get_ref(),
                );
            }
        }
        if let Some(f) = &vm.cpu_features {
            crate::arch::x86::features::parse(f.get_ref())
                .map_err(|e| at(f.span(), "cpu_features", e.into()))?;
            push(&mut args, "--cpu-features", f.get_ref());
        }
        if let Some(u) = &vm.user {
            crate::privileges::resolve(
                u.get_ref(),
                vm.group.as_ref().map(|g| g.get_ref().as_str()),
            )
            .map_err(|e| at(u.span(), "user", e.into()))?;
            push(&mut args, "--user", u.get_ref());
            if let Some(g) = &vm.group {
                push(&mut args, "--group", g.get_ref());
            }
        } else if let Some(g) = &vm.group {
            return Err(at(g.span(), "group", KeyError::GroupWithoutUser));
        }
        if let Some(t) = vm.boot_timeout {
            push(&mut args, "--boot-timeout", &t.to_string());
        }
        let owner_uid = match &vm.owner {
            None => None,
            Some(o) => Some(
                crate::privileges::lookup_user(o.get_ref())
                    .map_err(|e| at(o.span(), "owner", e.into()))?
                    .map(|(uid, _)| uid)
                    .ok_or_else(|| {
                        let e = crate::privileges::IdError::NoSuchUser(o.get_ref().clone());
                        at(o.span(), "owner", e.into())
                    })?,
            ),
        };
        let owner_gid = match &vm.owner_group {
            None => None,
            Some(o) => Some(
                crate::privileges::lookup_group(o.get_ref())
                    .map_err(|e| at(o.span(), "owner_group", e.into()))?
                    .ok_or_else(|| {
                        let e = crate::privileges::IdError::NoSuchGroup(o.get_ref().clone());
                        at(o.span(), "owner_group", e.into())
                    })?,
            ),
        };
        let owner = [
            vm.owner.as_ref().map(|o| o.get_ref().clone()),
            vm.owner_group.as_ref().map(|g| format!("@{}", g.get_ref())),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        // The last word: the command line fugu run itself would accept.
        check_run_args(&args).map_err(|e| table(e.into()))?;
        out.push(VmSpec {
            name: name.clone(),
            args,
            cwd: dir.clone(),
            cpus,
            memory,
            autostart: vm.autostart,
            owner_uid,
            owner_gid,
            owner: if owner.is_empty() {
                "root".into()
            } else {
                owner
            },
            source: Some(format!("{shown}:{line}")),
        });
    }
    Ok(out)
}

fn push(args: &mut Vec<String>, k: &str, v: &str) {
    args.push(k.to_string());
    args.push(v.to_string());
}

/// Check `fugu run` options as `fugu run` would parse them; returns its vCPUs and memory.
/// `--serial` is refused: fugud owns the console.
pub fn check_run_args(args: &[String]) -> Result<(u32, u64), RunArgsError> {
    use clap::Parser;
    if args
        .iter()
        .any(|a| a == "--serial" || a.starts_with("--serial="))
    {
        return Err(RunArgsError::Serial);
    }
    let argv = ["fugu", "run"]
        .into_iter()
        .map(String::from)
        .chain(args.iter().cloned());
    match crate::cli::Cli::try_parse_from(argv) {
        Ok(crate::cli::Cli {
            command: crate::cli::Command::Run(r),
        }) => Ok((r.cpus, r.memory)),
        Ok(_) => Err(RunArgsError::NotRun),
        Err(e) => Err(RunArgsError::Invalid(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<VmSpec>, String> {
        parse(text, Path::new("/etc/fugu/fugu.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_vm_becomes_the_options_of_fugu_run() {
        let v = p(r#"
# a comment
[vm.web]
kernel = "vmlinuz"
memory = 64
cpus = 2
disks = ["root.img", "data.img,ro"]
cmdline = "console=ttyS0"
autostart = true
owner = "root"

[vm.fw]
bios = true
boot = "disk"
disks = ["/srv/d.img"]
memory = "1G"
"#)
        .unwrap();
        assert_eq!(v.len(), 2);
        let fw = &v[0];
        assert_eq!(fw.name, "fw");
        assert_eq!(fw.memory, 1 << 30);
        assert!(fw.args.contains(&"--bios".to_string()));
        assert_eq!(fw.owner, "root");
        let web = &v[1];
        assert_eq!(web.source.as_deref(), Some("/etc/fugu/fugu.toml:3"));
        assert_eq!((web.cpus, web.memory, web.autostart), (2, 64 << 20, true));
        assert_eq!(web.owner_uid, Some(0));
        assert_eq!(web.cwd, Path::new("/etc/fugu"));
        assert_eq!(
            web.args,
            [
                "--memory",
                "65536K",
                "--cpus",
                "2",
                "--kernel",
                "vmlinuz",
                "--cmdline",
                "console=ttyS0",
                "--disk",
                "root.img",
                "--disk",
                "data.img,ro"
            ]
        );
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        for (text, want) in [
            ("[vm.a]\nkernel = \"k\"\nmemroy = 5\n", "fugu.toml:3"),
            (
                "[vm.a]\nkernel = \"k\"\nmemory = \"12Q\"\n",
                "fugu.toml:3: vm.a.memory: unknown size suffix",
            ),
            (
                "[vm.a]\nkernel = \"k\"\ncpus = 0\n",
                "fugu.toml:3: vm.a.cpus: 0 vCPUs",
            ),
            ("[vm.a]\nkernel = \"k\"\ncpus = \"two\"\n", "fugu.toml:3"),
            (
                "[vm.a]\nkernel = \"k\"\n\ndisks = [\"d.img,rw=1\"]\n",
                "fugu.toml:4: vm.a.disks",
            ),
            (
                "[vm.a]\nkernel = \"k\"\nnets = [\"tap=a/b\"]\n",
                "fugu.toml:3: vm.a.nets",
            ),
            (
                "[vm.a]\nkernel = \"k\"\nowner = \"no-such-user-here\"\n",
                "fugu.toml:3: vm.a.owner: no such user",
            ),
            (
                "[vm.a]\nkernel = \"k\"\nseccomp = \"maybe\"\n",
                "fugu.toml:3: vm.a.seccomp",
            ),
            (
                "[vm.a]\ncpus = 1\n",
                "fugu.toml:1: [vm.a]: give exactly one of kernel",
            ),
            (
                "[vm.a]\nkernel = \"k\"\nbios = true\n",
                "fugu.toml:1: [vm.a]: give exactly one",
            ),
            (
                "\n[vm.\"a/b\"]\nkernel = \"k\"\n",
                "fugu.toml:2: [vm.a/b]: 'a/b' is not a VM name",
            ),
            (
                "[vm.a]\nkernel = \"k\"\nboot = \"disk\"\n",
                "fugu.toml:3: vm.a.boot: boot goes with bios",
            ),
            ("[vm.a\n", "fugu.toml:1"),
            ("[daemon]\nx = 1\n", "fugu.toml:1"),
        ] {
            let e = p(text).unwrap_err();
            assert!(e.starts_with("/etc/fugu/fugu.toml"), "{text:?}: {e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn directories_are_read_in_order_and_a_name_twice_is_an_error() {
        let dir = std::env::temp_dir().join(format!("fugu-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.toml"), "[vm.b]\nkernel = \"/k\"\n").unwrap();
        std::fs::write(dir.join("a.toml"), "[vm.a]\nkernel = \"/k\"\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "not toml").unwrap();
        let c = load(&dir).unwrap();
        let names: Vec<_> = c.vms.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        std::fs::write(dir.join("c.toml"), "\n[vm.a]\nkernel = \"/k\"\n").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(
            e.contains("c.toml:2: VM a is declared twice (first at"),
            "{e}"
        );
        assert!(load(&dir.join("missing")).unwrap().vms.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn run_options_are_checked_as_fugu_run_checks_them() {
        assert_eq!(
            check_run_args(&["--kernel".into(), "k".into(), "--cpus".into(), "3".into()]).unwrap(),
            (3, 256 << 20)
        );
        assert!(
            check_run_args(&["--kernel".into(), "k".into(), "--serial".into(), "x".into()])
                .unwrap_err()
                .to_string()
                .contains("fugud keeps the console")
        );
        assert!(
            check_run_args(&["--memory".into(), "0".into(), "--kernel".into(), "k".into()])
                .unwrap_err()
                .to_string()
                .contains("too little")
        );
        assert!(check_run_args(&["--bogus".into()]).is_err());
    }
}
