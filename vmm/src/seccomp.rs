//! seccomp filters per thread kind (`fugu run --seccomp=off|log|kill`).
//!
//! Once the VM is set up (and privileges are dropped), the main thread installs the union of
//! every kind's system calls for the whole process (TSYNC: the device threads that already
//! run get it too, with no_new_privs). Each vCPU, device worker and console thread then
//! stacks its own, smaller list when it starts; the kernel applies the strictest answer.
//! A call outside the list ends the process with SIGSYS (`kill`), after a line on stderr that
//! names the call and the thread kind (the filter traps, fugu's SIGSYS handler reports, and a
//! second trap inside the blocked handler makes the kernel kill with SIGSYS); or it is allowed
//! and logged by the kernel (`log`, for finding what a new code path needs).
//!
//! The lists are libc's SYS_* numbers of the host. On x86_64 hosts rust-vmm's seccompiler
//! compiles and installs them; on i686 hosts (where seccompiler does not build) fugu's own
//! classic-BPF program does the same: check the audit architecture, then compare the call
//! number against the list. A test runs both programs through a BPF interpreter and
//! compares every answer.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

/// What a call outside the list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Log,
    Kill,
}

/// The kinds of fugu threads, each with its own list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The main thread (and, through TSYNC, threads started before the filter).
    Main,
    /// A vCPU thread: KVM_RUN and the device models it dispatches to.
    Vcpu,
    /// A virtio device worker: queue processing on files and taps.
    Worker,
    /// The console thread: stdin to the UART.
    Console,
}

impl Kind {
    fn name(self) -> &'static [u8] {
        match self {
            Kind::Main => b"main",
            Kind::Vcpu => b"vCPU",
            Kind::Worker => b"device worker",
            Kind::Console => b"console",
        }
    }
}

/// The mode threads apply when they start (set with the main thread's filter).
static MODE: AtomicU8 = AtomicU8::new(0);

thread_local! {
    /// This thread's kind, for the SIGSYS report (const, no destructor: signal-safe).
    static THIS_KIND: Cell<Kind> = const { Cell::new(Kind::Main) };
}

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_TRAP: u32 = 0x0003_0000;
const RET_LOG: u32 = 0x7ffc_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const SET_MODE_FILTER: libc::c_ulong = 1;
const FLAG_TSYNC: libc::c_ulong = 1;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "x86")]
const AUDIT_ARCH: u32 = 0x4000_0003;
#[cfg(target_arch = "x86_64")]
const ARCH_NAME: &[u8] = b"x86_64";
#[cfg(target_arch = "x86")]
const ARCH_NAME: &[u8] = b"i386";

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x15;
#[cfg(target_arch = "x86_64")]
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Calls every kind makes: memory, locks, signals, time, thread exit, stderr.
fn common() -> Vec<libc::c_long> {
    let mut v = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_close,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_mremap,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_sigaltstack,
        libc::SYS_sched_yield,
        libc::SYS_nanosleep,
        libc::SYS_clock_nanosleep,
        libc::SYS_clock_gettime,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_getrandom,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_tgkill,
        libc::SYS_restart_syscall,
        libc::SYS_fcntl,
        libc::SYS_ioctl,
        libc::SYS_sched_getaffinity,
    ];
    #[cfg(target_arch = "x86")]
    v.extend([
        libc::SYS_mmap2,
        libc::SYS_fcntl64,
        // The 64-bit time calls of i386 (not in every libc release): clock_gettime64,
        // clock_nanosleep_time64, ppoll_time64, futex_time64.
        403,
        407,
        414,
        422,
        libc::SYS_sigreturn,
        libc::SYS_set_thread_area,
    ]);
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_mmap]);
    v
}

/// The system calls of `kind`.
pub fn allowed(kind: Kind) -> Vec<libc::c_long> {
    let mut v = common();
    // Starting threads: vCPU threads (main), device workers (a vCPU activates a device).
    let spawn = [
        libc::SYS_clone,
        libc::SYS_clone3,
        libc::SYS_set_robust_list,
        libc::SYS_rseq,
        libc::SYS_prctl,
        libc::SYS_seccomp,
    ];
    // Device I/O: disks and taps, eventfds, KVM's irqfd/ioeventfd registration.
    let io = [
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_preadv,
        libc::SYS_pwritev,
        libc::SYS_readv,
        libc::SYS_fsync,
        libc::SYS_fdatasync,
        libc::SYS_fallocate,
        libc::SYS_eventfd2,
        libc::SYS_dup,
        libc::SYS_lseek,
    ];
    match kind {
        Kind::Main => {
            v.extend(spawn);
            v.extend(io);
            // Privilege drop after the filter: none. Terminal, exit and reporting:
            v.extend([
                libc::SYS_flock,
                libc::SYS_rt_sigaction,
                libc::SYS_sched_getparam,
                libc::SYS_getuid,
                libc::SYS_geteuid,
            ]);
        }
        Kind::Vcpu => {
            v.extend(spawn);
            v.extend(io);
            // The SIGBUS handler's last resort: the default action, raised again.
            v.push(libc::SYS_rt_sigaction);
        }
        Kind::Worker => v.extend(io),
        Kind::Console => {}
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The BPF program for `kind`: architecture check, then the list.
pub fn program(kind: Kind, mode: Mode) -> Vec<libc::sock_filter> {
    let other = match mode {
        Mode::Log => RET_LOG,
        _ => RET_TRAP,
    };
    let mut p = vec![
        stmt(BPF_LD_W_ABS, 4),
        jump(BPF_JEQ_K, AUDIT_ARCH, 1, 0),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, 0),
    ];
    // x32 calls share the x86_64 audit architecture; fugu makes none.
    #[cfg(target_arch = "x86_64")]
    p.extend([
        jump(BPF_JGE_K, 0x4000_0000, 0, 1),
        stmt(BPF_RET_K, RET_KILL_PROCESS),
    ]);
    for nr in allowed(kind) {
        // System call numbers are small non-negative constants of the lists above.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let nr = nr as u32;
        p.push(jump(BPF_JEQ_K, nr, 0, 1));
        p.push(stmt(BPF_RET_K, RET_ALLOW));
    }
    p.push(stmt(BPF_RET_K, other));
    p
}

/// Why a filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot install the SIGSYS handler: {0}")]
    SigsysHandler(#[source] std::io::Error),
    /// The main thread's filter for the whole process.
    #[error("cannot install the seccomp filter: {0} (--seccomp=off runs without one)")]
    Process(#[source] std::io::Error),
    /// A later thread's own filter.
    #[error("cannot install the seccomp filter of a {kind:?} thread: {source}")]
    Thread {
        kind: Kind,
        #[source]
        source: FilterError,
    },
}

/// Why one thread's filter could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[cfg(target_arch = "x86_64")]
    #[error(transparent)]
    Build(#[from] seccompiler::BackendError),
    #[cfg(target_arch = "x86_64")]
    #[error(transparent)]
    Apply(#[from] seccompiler::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Install the filter of `kind` in this thread (with `tsync`: in every thread).
#[cfg(target_arch = "x86_64")]
fn install(kind: Kind, mode: Mode, tsync: bool) -> Result<(), FilterError> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let rules = allowed(kind)
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let other = match mode {
        Mode::Log => SeccompAction::Log,
        _ => SeccompAction::Trap,
    };
    let filter = SeccompFilter::new(rules, other, SeccompAction::Allow, TargetArch::x86_64)?;
    let prog: BpfProgram = filter.try_into()?;
    if tsync {
        seccompiler::apply_filter_all_threads(&prog)?;
    } else {
        seccompiler::apply_filter(&prog)?;
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn install(kind: Kind, mode: Mode, tsync: bool) -> Result<(), FilterError> {
    Ok(install_program(
        &program(kind, mode),
        if tsync { FLAG_TSYNC } else { 0 },
    )?)
}

fn install_program(p: &[libc::sock_filter], flags: libc::c_ulong) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(p.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seccomp program longer than 65535 instructions",
            )
        })?,
        filter: p.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments; seccomp reads `prog` and the `p.len()` filter
    // instructions it points at, both alive for the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = libc::syscall(
            libc::SYS_seccomp,
            SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        );
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The main thread's filter for the whole process (see the module documentation); later
/// threads add theirs with [`enter`].
pub fn install_process(mode: Mode) -> Result<(), SeccompError> {
    if mode == Mode::Off {
        return Ok(());
    }
    if mode == Mode::Kill {
        install_sigsys_report()?;
    }
    keep_malloc_within_the_lists();
    install_program(&program(Kind::Main, mode), FLAG_TSYNC).map_err(SeccompError::Process)?;
    MODE.store(if mode == Mode::Log { 1 } else { 2 }, Ordering::SeqCst);
    Ok(())
}

/// glibc's free(), when a thread's own malloc arena (not the main one) ends with a large free
/// top, shrinks that heap, and the first shrink in the process reads
/// /proc/sys/vm/overcommit_memory: an openat no thread may make under the filter. It happened
/// at exit, when the main thread dropped a qcow2 cache the device worker had allocated (in
/// its arena), under load only, and in a worker freeing its own buffers it could happen at
/// run time. A trim threshold above anything fugu frees keeps glibc from shrinking heaps at
/// all (and fixes the mmap threshold at its 128 KiB default, so large buffers still go back
/// to the system with munmap).
fn keep_malloc_within_the_lists() {
    // SAFETY: mallopt only sets a malloc tunable.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// A new thread of `kind` narrows the process filter to its own list (nothing when the
/// process has none).
pub fn enter(kind: Kind) -> Result<(), SeccompError> {
    let mode = match MODE.load(Ordering::SeqCst) {
        1 => Mode::Log,
        2 => Mode::Kill,
        _ => return Ok(()),
    };
    THIS_KIND.with(|k| k.set(kind));
    install(kind, mode, false).map_err(|source| SeccompError::Thread { kind, source })
}

/// Where a SIGSYS siginfo keeps the trapped call's number: after the three ints of the
/// header, the union (pointer-aligned) starts with `_call_addr`, then `_syscall`.
const SI_SYSCALL_OFFSET: usize =
    12usize.next_multiple_of(std::mem::align_of::<usize>()) + std::mem::size_of::<usize>();

/// Append `n` in decimal to `buf` at `*len` (no allocation: called from a signal handler).
fn push_decimal(buf: &mut [u8], len: &mut usize, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        // A single decimal digit.
        #[allow(clippy::cast_possible_truncation)]
        let d = (n % 10) as u8;
        digits[i] = b'0' + d;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    push(buf, len, &digits[i..]);
}

fn push(buf: &mut [u8], len: &mut usize, s: &[u8]) {
    let n = s.len().min(buf.len() - *len);
    buf[*len..*len + n].copy_from_slice(&s[..n]);
    *len += n;
}

/// The line a trapped call prints: its number, this host's architecture and the thread kind.
fn sigsys_report(nr: u32, kind: Kind, buf: &mut [u8]) -> usize {
    let mut len = 0;
    push(
        buf,
        &mut len,
        b"fugu: the seccomp filter stopped system call ",
    );
    push_decimal(buf, &mut len, nr);
    push(buf, &mut len, b" (");
    push(buf, &mut len, ARCH_NAME);
    push(buf, &mut len, b") in a ");
    push(buf, &mut len, kind.name());
    push(
        buf,
        &mut len,
        b" thread: a fugu bug, please report it; --seccomp=log runs without stopping it\n",
    );
    len
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid SIGSYS siginfo with SA_SIGINFO; `_syscall` is an int
    // at SI_SYSCALL_OFFSET inside it.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let kind = THIS_KIND.try_with(Cell::get).unwrap_or(Kind::Main);
    let mut buf = [0u8; 200];
    let len = sigsys_report(u32::try_from(nr).unwrap_or(u32::MAX), kind, &mut buf);
    // SAFETY: write(2) of a stack buffer, then a call every filter refuses: SIGSYS is blocked
    // inside this handler, so the kernel resets it to the default action and the process
    // dies with SIGSYS (and a core, where enabled) as without the report.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::syscall(libc::SYS_getppid);
        libc::_exit(128 + libc::SIGSYS);
    }
}

/// The SIGSYS handler that reports a trapped call (installed before the filter).
fn install_sigsys_report() -> Result<(), SeccompError> {
    // SAFETY: installing a handler that only writes to stderr and makes raw system calls.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_SIGINFO;
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(SeccompError::SigsysHandler(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind's list is part of the main thread's (a thread's filter stacks on it).
    #[test]
    fn every_kind_is_within_the_main_list() {
        let main = allowed(Kind::Main);
        for k in [Kind::Vcpu, Kind::Worker, Kind::Console] {
            for nr in allowed(k) {
                assert!(main.contains(&nr), "{k:?}: {nr}");
            }
        }
        assert!(!main.contains(&libc::SYS_execve));
        assert!(!main.contains(&libc::SYS_openat));
        assert!(!main.contains(&libc::SYS_socket));
        // The SIGSYS report's way to die: a call no thread may make.
        assert!(!main.contains(&libc::SYS_getppid));
        assert!(program(Kind::Main, Mode::Kill).len() < 200);
    }

    /// What a classic-BPF seccomp program answers for (arch, nr): the instructions both
    /// fugu and seccompiler emit.
    #[cfg(target_arch = "x86_64")]
    fn run(p: &[(u16, u8, u8, u32)], arch: u32, nr: u32) -> u32 {
        let data = |off: u32| match off {
            0 => nr,
            4 => arch,
            o => panic!("load of seccomp_data offset {o}"),
        };
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let (code, jt, jf, k) = p[pc];
            pc += 1;
            let cond = |c: bool| if c { jt as usize } else { jf as usize };
            match code {
                0x20 => a = data(k),
                0x54 => a &= k,
                0x05 => pc += k as usize,
                0x15 => pc += cond(a == k),
                0x25 => pc += cond(a > k),
                0x35 => pc += cond(a >= k),
                0x45 => pc += cond(a & k != 0),
                0x06 => return k,
                c => panic!("BPF instruction {c:#x}"),
            }
        }
    }

    /// fugu's own program (i686 hosts) answers every call number, architecture and mode as
    /// seccompiler's (x86_64 hosts) does, for every thread kind.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_in_house_program_agrees_with_seccompiler() {
        use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
        for kind in [Kind::Main, Kind::Vcpu, Kind::Worker, Kind::Console] {
            for (mode, other) in [
                (Mode::Kill, SeccompAction::Trap),
                (Mode::Log, SeccompAction::Log),
            ] {
                let ours: Vec<_> = program(kind, mode)
                    .iter()
                    .map(|i| (i.code, i.jt, i.jf, i.k))
                    .collect();
                let rules = allowed(kind)
                    .into_iter()
                    .map(|nr| (nr, Vec::new()))
                    .collect();
                let f = SeccompFilter::new(rules, other, SeccompAction::Allow, TargetArch::x86_64)
                    .unwrap();
                let theirs: Vec<_> = BpfProgram::try_from(f)
                    .unwrap()
                    .iter()
                    .map(|i| (i.code, i.jt, i.jf, i.k))
                    .collect();
                for arch in [AUDIT_ARCH, 0x4000_0003] {
                    for nr in 0..600 {
                        assert_eq!(
                            run(&ours, arch, nr),
                            run(&theirs, arch, nr),
                            "{kind:?} {mode:?} arch {arch:#x} nr {nr}"
                        );
                    }
                }
                assert_eq!(
                    run(&ours, AUDIT_ARCH, u32::try_from(libc::SYS_read).unwrap()),
                    RET_ALLOW
                );
                // x32 calls: seccompiler leaves them to the default action; fugu's program
                // kills them in every mode.
                assert_eq!(run(&ours, AUDIT_ARCH, 0x4000_0000), RET_KILL_PROCESS);
            }
        }
    }

    /// A forbidden call kills the process with SIGSYS after a report on stderr (in a child,
    /// so that the test process lives): the child installs the report and the console
    /// filter, then calls getppid.
    #[test]
    fn a_forbidden_call_is_reported_and_kills_with_sigsys() {
        let p = program(Kind::Console, Mode::Kill);
        let mut fds = [0; 2];
        // SAFETY: pipe(2) into a two-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes raw system calls and exits; the parent waits for it.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::dup2(fds[1], 2);
                if install_sigsys_report().is_err() || install_program(&p, 0).is_err() {
                    libc::_exit(3);
                }
                libc::syscall(libc::SYS_getppid);
                libc::_exit(0);
            }
            libc::close(fds[1]);
            let mut status = 0;
            assert_eq!(libc::waitpid(pid, &mut status, 0), pid);
            assert!(libc::WIFSIGNALED(status), "{status:#x}");
            assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
            let mut out = [0u8; 300];
            let n = libc::read(fds[0], out.as_mut_ptr().cast(), out.len());
            libc::close(fds[0]);
            let text = String::from_utf8_lossy(&out[..usize::try_from(n).unwrap()]).into_owned();
            let want = format!(
                "system call {} ({}) in a main thread",
                libc::SYS_getppid,
                String::from_utf8_lossy(ARCH_NAME)
            );
            assert!(text.contains(&want), "{text:?}");
        }
    }

    #[test]
    fn the_report_fits_its_buffer() {
        let mut buf = [0u8; 200];
        let n = sigsys_report(u32::MAX, Kind::Worker, &mut buf);
        let s = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(s.ends_with("stopping it\n"), "{s}");
        assert!(s.contains("4294967295 ("), "{s}");
    }
}
