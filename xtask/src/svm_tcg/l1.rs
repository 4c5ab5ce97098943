//! The svm-tcg L1s: Debian's amd64 kernel, or its 32-bit 686-pae kernel for the i386 host
//! (downloaded with apt, unpacked under target/, never installed on this host), a small
//! initramfs that mounts this host's root filesystem over virtio-9p and hands over to a script
//! there, and the QEMU command line that boots it.
//!
//! The i386 L1 runs the same share: the host's i386 loader and libraries (/lib/ld-linux.so.2,
//! /lib32, from libc6-i386) run the i686 fugu and xtask builds, but the host's own programs are
//! amd64, which a 32-bit kernel cannot execute. So its shell and tools are i386 busybox
//! (busybox-static:i386 through the private apt state of images/debs.rs), first on PATH.

use crate::util::{self, capture, step};
use std::path::{Path, PathBuf};
use std::process::Command;

/// vCPUs of the L1 (it boots one cell at a time: `JOBS_IN_L1`). The host has 2 cores; TCG runs
/// one thread per vCPU.
pub const CPUS: usize = 2;
/// Memory of the amd64 L1: two Linux L2s of 256 MiB plus the L1's page cache.
const MEMORY_MIB: u32 = 4096;
/// Memory of the i386 L1 (PAE: all of it usable, most as highmem).
const MEMORY_MIB_I386: u32 = 3072;
/// Prefix of the L1's own console lines.
pub const MARK: &str = "fugu-l1:";
/// The inner script's heartbeat: a line every [`BEAT_SECS`] while the L1's userspace lives, so
/// the outer run tells a dead L1 from a cell that is still booting (never shown as progress).
pub const BEAT: &str = "fugu-l1-beat:";
pub const BEAT_SECS: u64 = 15;
/// What the inner script's last line says (with the run's exit status) before it powers the
/// L1 off: an L1 that ends without it was reset.
pub const RUN_END: &str = "test-matrix exit";
/// Where the i386 L1 puts its busybox and applet links (a tmpfs in the overlay root).
const I386_BIN: &str = "/run/fugu-l1/bin";

/// The L1's architecture: which Debian kernel it boots and which programs run inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// linux-image-amd64; the host's own amd64 programs run inside.
    Amd64,
    /// linux-image-686-pae (32-bit, PAE); i386 busybox and the i686 builds run inside.
    I386,
}

impl Arch {
    /// The matrix host axis value of this L1.
    pub fn host(self) -> &'static str {
        match self {
            Arch::Amd64 => super::HOST,
            Arch::I386 => super::HOST_I386,
        }
    }
    /// The L1 of a host axis value, if it is one.
    pub fn of_host(host: &str) -> Option<Arch> {
        [Arch::Amd64, Arch::I386]
            .into_iter()
            .find(|a| a.host() == host)
    }
    /// Debian's architecture name.
    pub fn deb(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::I386 => "i386",
        }
    }
    /// The metapackage whose dependency names the current kernel ABI package.
    fn kernel_meta(self) -> &'static str {
        match self {
            Arch::Amd64 => "linux-image-amd64",
            Arch::I386 => "linux-image-686-pae",
        }
    }
    fn memory_mib(self) -> u32 {
        match self {
            Arch::Amd64 => MEMORY_MIB,
            Arch::I386 => MEMORY_MIB_I386,
        }
    }
    /// An apt command for this architecture's packages (a private state for i386).
    fn apt(self, program: &str) -> Result<Command, String> {
        crate::images::debs::apt_command(program, self.deb())
    }
}
/// What the initramfs loads to reach the host's files; dependencies come from the kernel.
const SHARE_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];
/// 9p mount tags.
const ROOT_TAG: &str = "fugu-root";
const SHARE_TAG: &str = "fugu-out";

/// An unpacked Debian kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// e.g. linux-image-6.1.0-57-amd64
    pub package: String,
    /// e.g. 6.1.192-3
    pub version: String,
    /// `uname -r`, e.g. 6.1.0-57-amd64
    pub release: String,
    /// Where the package is unpacked.
    pub root: PathBuf,
    pub arch: Arch,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }
    pub fn modules(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// The current Debian kernel of `arch`, unpacked under `dir` (cached per package version).
/// With no answer from apt, the newest kernel unpacked before is used, with a warning.
pub fn kernel(dir: &Path, arch: Arch) -> Result<Kernel, String> {
    match current_package(arch) {
        Ok((package, version)) => {
            let root = dir.join(format!("{package}_{version}"));
            if !root.join(".complete").is_file() {
                unpack(&package, &version, &root, arch)?;
            }
            load(&root, package, version, arch)
        }
        Err(why) => {
            let cached = newest_cached(dir).ok_or_else(|| {
                format!(
                    "{why}; and no kernel was unpacked before in {}",
                    dir.display()
                )
            })?;
            step(format!(
                "warning: {why}; using the kernel unpacked before ({})",
                cached.display()
            ));
            let name = cached
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (package, version) = name.split_once('_').unwrap_or((&name, ""));
            load(&cached, package.to_string(), version.to_string(), arch)
        }
    }
}

fn newest_cached(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(".complete").is_file())
        .filter_map(|p| Some((p.join(".complete").metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

fn load(root: &Path, package: String, version: String, arch: Arch) -> Result<Kernel, String> {
    let modules = root.join("lib/modules");
    let release = std::fs::read_dir(&modules)
        .map_err(|e| format!("{}: {e}", modules.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .ok_or_else(|| format!("{}: no kernel release inside", modules.display()))?;
    let k = Kernel {
        package,
        version,
        release,
        root: root.to_path_buf(),
        arch,
    };
    if !k.vmlinuz().is_file() {
        return Err(format!("{}: missing", k.vmlinuz().display()));
    }
    Ok(k)
}

/// (package, version) of the kernel apt would install now for the kernel metapackage.
fn current_package(arch: Arch) -> Result<(String, String), String> {
    let meta = arch.kernel_meta();
    let ask = || -> Option<(String, String)> {
        let (ok, out) = capture(arch.apt("apt-cache").ok()?.args(["depends", meta])).ok()?;
        let package = ok.then(|| abi_package(&out)).flatten()?;
        let (ok, out) = capture(arch.apt("apt-cache").ok()?.args(["policy", &package])).ok()?;
        let version = ok.then(|| candidate(&out)).flatten()?;
        Some((package, version))
    };
    if let Some(r) = ask() {
        return Ok(r);
    }
    if util::is_root() {
        step(format!(
            "apt-get update (apt knows no current {} kernel)",
            arch.deb()
        ));
        let _ = capture(Command::new("apt-get").args(["update", "-q"]));
        if let Some(r) = ask() {
            return Ok(r);
        }
    }
    Err(format!(
        "apt has no candidate for {meta} (the L1 kernel){}",
        if util::is_root() {
            ""
        } else {
            "; as root, apt-get update"
        }
    ))
}

/// The linux-image-* package a metapackage's `apt-cache depends` output names.
fn abi_package(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let dep = l.trim().strip_prefix("Depends:")?.trim();
        let dep = dep.split(':').next().unwrap_or(dep);
        dep.starts_with("linux-image-").then(|| dep.to_string())
    })
}

/// The Candidate: of `apt-cache policy`.
fn candidate(policy: &str) -> Option<String> {
    policy
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Candidate:")
                .map(|v| v.trim().to_string())
        })
        .filter(|v| v != "(none)")
}

/// `apt-get download SPEC` (apt's state for `arch`) into `partial` and unpack it there;
/// returns the unpacked tree (`partial/tree`). On failure `partial` is removed.
fn download_unpacked(
    arch: Arch,
    spec: &str,
    partial: &Path,
    progress: &str,
) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(partial);
    let dl = partial.join(".deb");
    std::fs::create_dir_all(&dl).map_err(|e| format!("{}: {e}", dl.display()))?;
    step(progress);
    let failed = |msg: String| {
        let _ = std::fs::remove_dir_all(partial);
        Err(msg)
    };
    let (ok, out) = capture(
        arch.apt("apt-get")?
            .current_dir(&dl)
            .args(["download", "-q", spec]),
    )
    .map_err(|e| e.msg)?;
    let deb = std::fs::read_dir(&dl)
        .ok()
        .and_then(|mut d| d.find_map(|e| e.ok().map(|e| e.path())))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"));
    let Some(deb) = deb.filter(|_| ok) else {
        return failed(format!(
            "apt-get download {spec} failed:\n{}",
            util::tail(&out, 5)
        ));
    };
    let tree = partial.join("tree");
    let (ok, out) =
        capture(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree)).map_err(|e| e.msg)?;
    if !ok {
        return failed(format!(
            "dpkg-deb -x {} failed:\n{}",
            deb.display(),
            util::tail(&out, 5)
        ));
    }
    Ok(tree)
}

/// Download PACKAGE=VERSION, unpack it into `root` and index its modules (a .deb ships no
/// modules.dep: depmod writes it at install time). Nothing is left half-done: the tree is
/// built beside `root` and renamed into place.
fn unpack(package: &str, version: &str, root: &Path, arch: Arch) -> Result<(), String> {
    let partial = root.with_extension("partial");
    let tree = download_unpacked(
        arch,
        &format!("{package}={version}"),
        &partial,
        &format!("svm-tcg: apt-get download {package}={version} (the L1 kernel)"),
    )?;
    let probe = load(&tree, package.into(), version.into(), arch).inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&partial);
    })?;
    let (ok, out) = capture(
        Command::new("depmod")
            .arg("-b")
            .arg(&tree)
            .arg(&probe.release),
    )
    .map_err(|e| e.msg)?;
    if !ok {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(format!("depmod failed:\n{}", util::tail(&out, 5)));
    }
    install_tree(&tree, root, &partial, &format!("{package} {version}"))
}

/// Move an unpacked `tree` to `root` (replacing what was there), drop `partial`, and mark
/// `root` complete with `stamp`: a cached tree without the mark is never used.
fn install_tree(tree: &Path, root: &Path, partial: &Path, stamp: &str) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(root);
    std::fs::rename(tree, root).map_err(|e| format!("{}: {e}", root.display()))?;
    let _ = std::fs::remove_dir_all(partial);
    std::fs::write(root.join(".complete"), format!("{stamp}\n"))
        .map_err(|e| format!("{}: {e}", root.display()))
}

/// The static busybox of the L1: the host's own for amd64; for i386, busybox-static:i386
/// downloaded through apt's private i386 state and unpacked under `dir` (cached per version).
pub fn busybox(arch: Arch, dir: &Path) -> Result<PathBuf, String> {
    if arch == Arch::Amd64 {
        return Ok(PathBuf::from("/bin/busybox"));
    }
    let version = {
        let (ok, out) = capture(arch.apt("apt-cache")?.args(["policy", "busybox-static"]))
            .map_err(|e| e.msg)?;
        ok.then(|| candidate(&out)).flatten()
    };
    let unpacked = |v: &str| dir.join(format!("busybox-static_{v}"));
    let found = match &version {
        Some(v) if unpacked(v).join(".complete").is_file() => Some(unpacked(v)),
        Some(_) => None,
        None => newest_cached(dir),
    };
    if let Some(d) = found {
        return Ok(d.join("bin/busybox"));
    }
    let Some(v) = version else {
        return Err(format!(
            "apt has no candidate for busybox-static:i386 (private i386 state) and none was \
             unpacked before in {}",
            dir.display()
        ));
    };
    let root = unpacked(&v);
    let partial = root.with_extension("partial");
    let tree = download_unpacked(
        arch,
        &format!("busybox-static={v}"),
        &partial,
        &format!("svm-tcg-i386: apt-get download busybox-static:i386={v} (the L1's shell)"),
    )?;
    if !tree.join("bin/busybox").is_file() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(format!("busybox-static:i386={v} has no bin/busybox"));
    }
    install_tree(&tree, &root, &partial, &format!("busybox-static {v}"))?;
    Ok(root.join("bin/busybox"))
}

/// The L1's initramfs: busybox (from `busybox`), the 9p and overlay modules, and an /init that
/// mounts this host's root read-only (under a memory overlay) and the results share
/// read-write at their host paths, then runs `inner`.
pub fn initramfs(
    k: &Kernel,
    share: &Path,
    inner: &Path,
    busybox: &Path,
) -> Result<Vec<u8>, String> {
    use crate::images::cpio::{Archive, Entry};
    let busybox = std::fs::read(busybox).map_err(|e| {
        format!(
            "{}: {e} (apt-get install busybox-static)",
            busybox.display()
        )
    })?;
    if has_interpreter(&busybox) {
        return Err("busybox is dynamically linked; the L1's initramfs needs \
                    busybox-static (apt-get install busybox-static)"
            .into());
    }
    let wanted: Vec<String> = SHARE_MODULES.iter().map(|m| m.to_string()).collect();
    let mods = crate::images::kernel_modules(&k.modules(), &wanted)?;
    let mut a = Archive::new();
    a.add(
        "bin/busybox",
        Entry::File {
            data: busybox,
            exec: true,
        },
    );
    for d in ["proc", "sys", "dev", "newroot"] {
        a.add(d, Entry::Dir);
    }
    a.add("dev/console", Entry::CharDev(5, 1));
    let names: Vec<String> = mods.iter().map(|(n, _)| n.clone()).collect();
    for (name, data) in mods {
        a.add(&format!("mod/{name}.ko"), Entry::File { data, exec: false });
    }
    let init = init_script(&names, k, share, inner);
    a.add(
        "init",
        Entry::File {
            data: init.into_bytes(),
            exec: true,
        },
    );
    Ok(a.to_bytes(0))
}

/// Whether an ELF file (64- or 32-bit) asks for a program interpreter (is dynamically linked).
fn has_interpreter(elf: &[u8]) -> bool {
    if elf.get(..5) == Some(b"\x7fELF\x01") {
        let u16_at = |o: usize| {
            elf.get(o..o + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        };
        let u32_at = |o: usize| {
            elf.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        };
        let (Some(phoff), Some(size), Some(n)) = (u32_at(0x1c), u16_at(0x2a), u16_at(0x2c)) else {
            return false;
        };
        return (0..n).any(|i| {
            let at = phoff.saturating_add(i * size);
            at.checked_add(4).and_then(|end| elf.get(at..end)) == Some(&3u32.to_le_bytes()[..])
        });
    }
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(size), Some(n)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return false;
    };
    (0..n).any(|i| {
        let at = phoff.saturating_add(i * size);
        at.checked_add(4).and_then(|end| elf.get(at..end)) == Some(&3u32.to_le_bytes()[..])
    })
}

/// Quote for /bin/sh.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The initramfs /init.
fn init_script(modules: &[String], k: &Kernel, share: &Path, inner: &Path) -> String {
    let share = share.display().to_string();
    let kmods = k.modules().display().to_string();
    let nine = "trans=virtio,version=9p2000.L,msize=524288";
    format!(
        r#"#!/bin/busybox sh
# The {host} L1's first stage (written by xtask/src/svm_tcg/l1.rs).
B=/bin/busybox
fail() {{ echo "{MARK} $*"; echo o > /proc/sysrq-trigger; $B sleep 10; }}
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
for m in {mods}; do $B insmod /mod/$m.ko || fail "insmod $m failed"; done
$B mkdir -p /host /rw
$B mount -t 9p -o ro,cache=loose,{nine} {ROOT_TAG} /host || fail "cannot mount the host's root over 9p"
# Writes land in the L1's memory: the host's files stay untouched, and /lib/modules can get
# the L1 kernel's modules even where the host has no such directory.
$B mount -t tmpfs -o mode=755 rw /rw && $B mkdir /rw/upper /rw/work || fail "tmpfs for the overlay"
$B mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || fail "cannot mount the overlay root"
# A fresh /run (no stale pid files or namespace names from the host); /tmp stays the overlay's,
# since the repository itself may live under /tmp.
$B mount -t tmpfs -o mode=755 tmpfs /newroot/run || fail "tmpfs on /run"
$B mount -t 9p -o {nine} {SHARE_TAG} /newroot{share_q} || fail "cannot mount the results share"
$B mkdir -p /newroot/lib/modules/{release} || fail "cannot make /lib/modules/{release}"
$B mount --bind /host{kmods_q} /newroot/lib/modules/{release} || fail "cannot bind the kernel's modules"
$B mount --move /dev /newroot/dev
$B mount --move /sys /newroot/sys
$B mount --move /proc /newroot/proc
{shell_setup}exec $B switch_root /newroot {shell} {inner_q}
"#,
        host = k.arch.host(),
        mods = modules.join(" "),
        share_q = sh(&share),
        kmods_q = sh(&kmods),
        release = k.release,
        inner_q = sh(&inner.display().to_string()),
        shell_setup = match k.arch {
            Arch::Amd64 => String::new(),
            Arch::I386 => format!(
                "# The host's programs are amd64: a 32-bit kernel runs this busybox instead.\n\
                 $B mkdir -p /newroot{I386_BIN} && $B cp /bin/busybox /newroot{I386_BIN}/busybox \
                 || fail \"cannot put the i386 busybox in {I386_BIN}\"\n"
            ),
        },
        shell = match k.arch {
            Arch::Amd64 => "/bin/sh".to_string(),
            Arch::I386 => format!("{I386_BIN}/busybox sh"),
        },
    )
}

/// The second stage, run from this host's root inside the L1: load kvm_amd with NPT, run the
/// inner test-matrix (`xtask` with `args`), power off.
pub fn inner_script(k: &Kernel, xtask: &Path, args: &[String]) -> String {
    let cmd: Vec<String> = std::iter::once(xtask.display().to_string())
        .chain(args.iter().cloned())
        .map(|a| sh(&a))
        .collect();
    let (path, setup) = match k.arch {
        Arch::Amd64 => (String::new(), String::new()),
        Arch::I386 => (
            format!("{I386_BIN}:"),
            format!(
                "# i386 busybox's applets first: the host's amd64 programs cannot run here.\n\
                 {I386_BIN}/busybox --install -s {I386_BIN}\n\
                 # The fugu builds are where this host's xtask put them.\n\
                 export FUGU_BUILD_HOST={}\n",
                crate::targets::Target::host().short()
            ),
        ),
    };
    format!(
        r#"#!/bin/sh
# The {host} L1's second stage (written by xtask/src/svm_tcg/l1.rs), run from the host's root.
{setup}export PATH={path}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp TERM=dumb
mark() {{ echo "{MARK} $*"; }}
off() {{ sync; echo o > /proc/sysrq-trigger; sleep 10; }}
mark "up after $(cut -d' ' -f1 /proc/uptime) s: kernel {release}, $(grep -c ^processor /proc/cpuinfo) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
modprobe tun || mark "modprobe tun failed"
modprobe kvm_amd npt=1 || {{ mark "modprobe kvm_amd failed"; off; }}
mark "kvm_amd npt=$(cat /sys/module/kvm_amd/parameters/npt) nested=$(cat /sys/module/kvm_amd/parameters/nested) nrips=$(cat /sys/module/kvm_amd/parameters/nrips)"
ip link set lo up
( while sleep {beat_secs}; do echo "{BEAT} $(cut -d' ' -f1 /proc/uptime)"; done ) &
( {cmd} ; mark "{RUN_END} $?" ) 2>&1 | cat
off
"#,
        beat_secs = BEAT_SECS,
        host = k.arch.host(),
        release = k.release,
        cmd = cmd.join(" "),
    )
}

/// A path as a QEMU option value (commas doubled).
fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// The QEMU command line of the L1.
pub fn qemu_args(k: &Kernel, initrd: &Path, share: &Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-nographic",
        "-nic",
        "none",
        "-no-reboot",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend([
        "-m".into(),
        k.arch.memory_mib().to_string(),
        "-smp".into(),
        CPUS.to_string(),
        "-kernel".into(),
        k.vmlinuz().display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        format!(
            // A soft lockup of the L1 (TCG stuck in an L2's VMRUN) is a panic, so a stuck L1
            // dies at once with a reason instead of after the outer run's silence limit.
            "console=ttyS0 panic=-1 softlockup_panic=1 quiet loglevel=4 fugu.l1={}",
            k.arch.host()
        ),
        "-virtfs".into(),
        format!(
            "local,path=/,mount_tag={ROOT_TAG},security_model=none,readonly=on,multidevs=remap"
        ),
        "-virtfs".into(),
        format!(
            "local,path={},mount_tag={SHARE_TAG},security_model=none,multidevs=remap",
            qemu_path(share)
        ),
    ]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> Kernel {
        Kernel {
            package: "linux-image-6.1.0-57-amd64".into(),
            version: "6.1.192-3".into(),
            release: "6.1.0-57-amd64".into(),
            root: PathBuf::from("/t/kernel/linux-image-6.1.0-57-amd64_6.1.192-3"),
            arch: Arch::Amd64,
        }
    }

    fn k386() -> Kernel {
        Kernel {
            package: "linux-image-6.1.0-57-686-pae".into(),
            version: "6.1.192-3".into(),
            release: "6.1.0-57-686-pae".into(),
            root: PathBuf::from("/t/kernel/linux-image-6.1.0-57-686-pae_6.1.192-3"),
            arch: Arch::I386,
        }
    }

    #[test]
    fn the_abi_package_and_candidate_come_from_apt_output() {
        let dep = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            abi_package(dep).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(abi_package("x\n  Recommends: foo\n"), None);
        let pol = "linux-image-6.1.0-57-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-3\n";
        assert_eq!(candidate(pol).as_deref(), Some("6.1.192-3"));
        assert_eq!(candidate("  Candidate: (none)\n"), None);
    }

    #[test]
    fn init_loads_modules_in_order_and_mounts_at_host_paths() {
        let mods = vec!["virtio".to_string(), "virtio_pci".into(), "9p".into()];
        let s = init_script(
            &mods,
            &k(),
            Path::new("/r/share"),
            Path::new("/r/share/inner.sh"),
        );
        assert!(s.contains("for m in virtio virtio_pci 9p; do"));
        assert!(s.contains(&format!(
            "ro,cache=loose,trans=virtio,version=9p2000.L,msize=524288 {ROOT_TAG} /host"
        )));
        assert!(s.contains("lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot"));
        assert!(s.contains(&format!("{SHARE_TAG} /newroot'/r/share'")));
        assert!(s.contains("/host'/t/kernel/linux-image-6.1.0-57-amd64_6.1.192-3/lib/modules/6.1.0-57-amd64' /newroot/lib/modules/6.1.0-57-amd64"));
        assert!(s.ends_with("switch_root /newroot /bin/sh '/r/share/inner.sh'\n"));
    }

    #[test]
    fn inner_script_quotes_the_command_and_always_powers_off() {
        let s = inner_script(
            &k(),
            Path::new("/w/target/debug/xtask"),
            &["test-matrix".into(), "--filter".into(), "it's".into()],
        );
        assert!(s.contains("( '/w/target/debug/xtask' 'test-matrix' '--filter' 'it'\\''s' ;"));
        assert!(s.contains("modprobe kvm_amd npt=1"));
        assert!(s.trim_end().ends_with("off"));
        let beat = s.find(BEAT).expect("a heartbeat");
        let run = s.find("'test-matrix'").unwrap();
        assert!(beat < run, "the heartbeat starts before the inner run");
        assert!(s.contains(&format!("while sleep {BEAT_SECS}; do")));
    }

    #[test]
    fn a_dynamically_linked_busybox_is_told_apart() {
        let mut elf = vec![0u8; 0x100];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20] = 0x40; // program headers at 0x40
        elf[0x36] = 0x38; // 56 bytes each
        elf[0x38] = 2; // two of them
        elf[0x40] = 1; // PT_LOAD
        assert!(!has_interpreter(&elf));
        elf[0x40 + 0x38] = 3; // PT_INTERP
        assert!(has_interpreter(&elf));
        assert!(!has_interpreter(b"\x7fELF\x02"));
        assert!(!has_interpreter(b"#!/bin/sh"));
    }

    #[test]
    fn qemu_gets_tcg_svm_and_both_shares() {
        let a = qemu_args(&k(), Path::new("/t/initrd"), Path::new("/t/a,b"));
        let j = a.join(" ");
        assert!(j.contains("-accel tcg -cpu max"));
        assert!(j.contains("path=/,mount_tag=fugu-root,security_model=none,readonly=on"));
        assert!(j.contains("path=/t/a,,b,mount_tag=fugu-out"));
        assert!(a.contains(
            &"/t/kernel/linux-image-6.1.0-57-amd64_6.1.192-3/boot/vmlinuz-6.1.0-57-amd64"
                .to_string()
        ));
    }

    #[test]
    fn arches_map_to_hosts_and_kernels() {
        assert_eq!(Arch::of_host("svm-tcg"), Some(Arch::Amd64));
        assert_eq!(Arch::of_host("svm-tcg-i386"), Some(Arch::I386));
        assert_eq!(Arch::of_host("svm"), None);
        assert_eq!(Arch::I386.kernel_meta(), "linux-image-686-pae");
        assert_eq!(Arch::I386.deb(), "i386");
        let dep = "linux-image-686-pae\n  Depends: linux-image-6.1.0-57-686-pae:i386\n";
        assert_eq!(
            abi_package(dep).as_deref(),
            Some("linux-image-6.1.0-57-686-pae")
        );
    }

    #[test]
    fn the_i386_init_hands_over_to_i386_busybox() {
        let s = init_script(
            &["9p".to_string()],
            &k386(),
            Path::new("/r/share"),
            Path::new("/r/share/inner.sh"),
        );
        assert!(s.contains("The svm-tcg-i386 L1's first stage"));
        assert!(s.contains(&format!("$B cp /bin/busybox /newroot{I386_BIN}/busybox")));
        assert!(s.ends_with(&format!(
            "switch_root /newroot {I386_BIN}/busybox sh '/r/share/inner.sh'\n"
        )));
        // The amd64 L1 uses the host's own shell.
        let a = init_script(&[], &k(), Path::new("/s"), Path::new("/s/i"));
        assert!(!a.contains(I386_BIN));
    }

    #[test]
    fn the_i386_inner_script_puts_busybox_first_and_names_the_build_host() {
        let s = inner_script(
            &k386(),
            Path::new("/w/target/i686/i686-unknown-linux-gnu/debug/xtask"),
            &["test-matrix".into()],
        );
        assert!(s.contains(&format!("{I386_BIN}/busybox --install -s {I386_BIN}")));
        assert!(s.contains(&format!("export PATH={I386_BIN}:/usr/local/sbin")));
        assert!(s.contains(&format!(
            "export FUGU_BUILD_HOST={}",
            crate::targets::Target::host().short()
        )));
        assert!(s.contains("modprobe kvm_amd npt=1"));
        let a = inner_script(&k(), Path::new("/x"), &[]);
        assert!(!a.contains("FUGU_BUILD_HOST") && !a.contains(I386_BIN));
    }

    #[test]
    fn qemu_boots_the_i386_kernel_with_its_memory_and_label() {
        let j = qemu_args(&k386(), Path::new("/t/i"), Path::new("/t/s")).join(" ");
        assert!(j.contains("-m 3072 "));
        assert!(j.contains("fugu.l1=svm-tcg-i386"));
        assert!(j.contains("/boot/vmlinuz-6.1.0-57-686-pae"));
        assert!(j.contains("-accel tcg -cpu max"));
    }

    #[test]
    fn a_dynamically_linked_elf32_is_told_apart() {
        let mut elf = vec![0u8; 0x100];
        elf[..5].copy_from_slice(b"\x7fELF\x01");
        elf[0x1c] = 0x34; // program headers at 0x34
        elf[0x2a] = 0x20; // 32 bytes each
        elf[0x2c] = 2;
        elf[0x34] = 1; // PT_LOAD
        assert!(!has_interpreter(&elf));
        elf[0x34 + 0x20] = 3; // PT_INTERP
        assert!(has_interpreter(&elf));
        assert!(!has_interpreter(b"\x7fELF\x01"));
    }
}
