//! One VM process under fugud: `fugu run` (this same binary) started with its console on
//! pipes, in its own session, with SIGTERM as its parent-death signal; a pipe on fd 3 on which
//! it says "ready" once its VM is set up (so a start reports setup errors, not a VM that ends
//! a moment later); and a pidfd, so that a signal never reaches a recycled pid.
//!
//! The child side ([`announce_ready`]) is called by `fugu run` itself.

use super::config::VmSpec;
use std::fs::File;
use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// The environment variable naming the ready pipe's descriptor in the VM process.
pub const READY_FD_ENV: &str = "FUGU_READY_FD";
/// The environment variable with the pid of the fugud that started the VM process.
pub const DAEMON_PID_ENV: &str = "FUGU_DAEMON_PID";
/// The environment variable naming the VM (also how fugud recognizes leftovers in /proc).
pub const VM_NAME_ENV: &str = "FUGU_VM_NAME";
const READY_FD: RawFd = 3;

/// Why `fugu run` could not tell fugud its VM is ready.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error("fugud, which started this VM, is gone")]
    DaemonGone,
    #[error("cannot tell fugud the VM is ready: {0}")]
    Write(#[source] std::io::Error),
}

/// Called by `fugu run` once its VM is set up (privileges dropped), before the guest runs:
/// under fugud, arm the parent-death signal again (a change of user clears it), make sure
/// fugud still lives, and say "ready" on the pipe. Not under fugud: nothing.
pub fn announce_ready() -> Result<(), ReadyError> {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return Ok(());
    };
    // SAFETY: PR_SET_PDEATHSIG with a valid signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    let daemon: Option<i32> = std::env::var(DAEMON_PID_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    // SAFETY: getppid cannot fail.
    if daemon.is_some_and(|d| d != unsafe { libc::getppid() }) {
        return Err(ReadyError::DaemonGone);
    }
    // SAFETY: fugud passed this descriptor for this purpose; it is owned here from now on
    // (kept for report_end, closed when the process exits).
    let mut f = unsafe { File::from_raw_fd(fd) };
    use std::io::Write;
    f.write_all(b"ready\n").map_err(ReadyError::Write)?;
    *crate::sync::lock(&PIPE) = Some(f);
    Ok(())
}

/// The pipe to fugud, once the VM is ready (under fugud only).
static PIPE: std::sync::Mutex<Option<File>> = std::sync::Mutex::new(None);

/// Called by `fugu run` when its VM has ended: tell fugud how, in fugu's words (the line it
/// also prints), so that fugud's record of the end does not depend on reading stderr.
pub fn report_end(words: &str) {
    use std::io::Write;
    if let Some(f) = crate::sync::lock(&PIPE).as_mut() {
        let _ = writeln!(f, "end: {}", words.replace('\n', " "));
    }
}

/// A started VM process.
pub struct VmProcess {
    pub child: Child,
    pub pid: i32,
    pub handle: Handle,
    /// The read end of the ready pipe.
    pub ready: File,
}

/// Start `vmm run <spec.args> --serial stdio` with the console on pipes; a VM whose options
/// name no user runs as `run_as` when given (fugu drops to it once the VM is set up).
pub fn spawn(
    vmm: &std::path::Path,
    spec: &VmSpec,
    run_as: Option<crate::privileges::Ids>,
) -> std::io::Result<VmProcess> {
    let mut fds: [RawFd; 2] = [-1, -1];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let wr_raw = wr.as_raw_fd();
    // SAFETY: getpid cannot fail.
    let daemon = unsafe { libc::getpid() };
    let mut cmd = Command::new(vmm);
    cmd.arg0("fugu")
        .arg("run")
        .args(&spec.args)
        .args(run_as_args(&spec.args, run_as))
        .args(["--serial", "stdio"])
        .current_dir(&spec.cwd)
        .env(READY_FD_ENV, READY_FD.to_string())
        .env(DAEMON_PID_ENV, daemon.to_string())
        .env(VM_NAME_ENV, &spec.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec (setsid, prctl, getppid,
    // dup2, fcntl), on descriptors the child owns.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            if libc::getppid() != daemon {
                return Err(std::io::Error::other("fugud is gone"));
            }
            if wr_raw == READY_FD {
                if libc::fcntl(READY_FD, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(wr_raw, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(wr);
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    Ok(VmProcess {
        handle: Handle::new(pid),
        pid,
        child,
        ready: File::from(rd),
    })
}

/// `--user UID --group GID` for a VM whose options name no user, when fugud has one for it.
fn run_as_args(args: &[String], run_as: Option<crate::privileges::Ids>) -> Vec<String> {
    match run_as {
        Some(ids)
            if !args
                .iter()
                .any(|a| a == "--user" || a.starts_with("--user=")) =>
        {
            vec![
                "--user".into(),
                ids.uid.to_string(),
                "--group".into(),
                ids.gid.to_string(),
            ]
        }
        _ => Vec::new(),
    }
}

/// Wait for "ready" on the pipe: true once the VM is set up, false when the process ended
/// first.
pub fn wait_ready(pipe: &mut impl BufRead) -> bool {
    let mut line = String::new();
    pipe.read_line(&mut line).is_ok() && line == "ready\n"
}

/// After the process ended: what it said about the end ("end: ..." on the pipe), if anything.
pub fn end_words(pipe: &mut impl BufRead) -> Option<String> {
    let mut rest = String::new();
    let _ = pipe.read_to_string(&mut rest);
    rest.lines()
        .find_map(|l| l.strip_prefix("end: "))
        .map(str::to_string)
}

/// Signals to a VM process, through a pidfd where the kernel has them (5.3+).
pub struct Handle {
    pid: i32,
    pidfd: Option<OwnedFd>,
}

impl Handle {
    fn new(pid: i32) -> Handle {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = RawFd::try_from(fd)
            .ok()
            .filter(|&fd| fd >= 0)
            // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
        Handle { pid, pidfd }
    }

    pub fn signal(&self, sig: libc::c_int) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal on our own pidfd with a null siginfo, or kill on a child
        // that has not been reaped (its pid cannot be reused before fugud waits for it).
        let r = unsafe {
            match &self.pidfd {
                Some(fd) => libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                ),
                None => libc::c_long::from(libc::kill(self.pid, sig)),
            }
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat), to recognize it later.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and ')': the fields follow its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` is a VM fugud started (its environment names a VM).
pub fn is_fugu_vm(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
        env.split(|&b| b == 0)
            .any(|kv| kv.starts_with(format!("{VM_NAME_ENV}=").as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_vm_naming_no_user_runs_as_fugud_s_vm_user() {
        let ids = Some(crate::privileges::Ids { uid: 999, gid: 998 });
        let own: Vec<String> = ["--kernel", "k"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            super::run_as_args(&own, ids),
            ["--user", "999", "--group", "998"]
        );
        assert!(super::run_as_args(&own, None).is_empty());
        for named in [["--user", "alice"], ["--user=alice", "--kernel"]] {
            let args: Vec<String> = named.iter().map(|s| s.to_string()).collect();
            assert!(super::run_as_args(&args, ids).is_empty(), "{args:?}");
        }
    }

    #[test]
    fn the_pipe_says_ready_then_how_the_vm_ended() {
        let mut p = std::io::Cursor::new(b"ready\nend: guest powered off\n".to_vec());
        assert!(super::wait_ready(&mut p));
        assert_eq!(
            super::end_words(&mut p).as_deref(),
            Some("guest powered off")
        );
        let mut p = std::io::Cursor::new(Vec::new());
        assert!(!super::wait_ready(&mut p));
        assert_eq!(super::end_words(&mut p), None);
    }

    #[test]
    fn start_time_reads_proc() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(super::start_time(me).is_some());
        assert!(super::start_time(-5).is_none());
        assert!(!super::is_fugu_vm(me));
    }
}
