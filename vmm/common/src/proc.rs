//! The one way the xtask and the end-to-end tests wait for a child process: spawn (optionally
//! in its own process group), wait with a deadline and an interrupt flag, kill the whole
//! group, and read the end of a log. The matrix, the benchmarks and the tests all use it, so a
//! timeout means the same thing everywhere.

use std::io;
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How a wait ended.
#[derive(Debug)]
pub enum Waited {
    Exited(ExitStatus),
    /// The deadline passed; the process (group) was killed.
    TimedOut,
    /// The interrupt flag was raised; the process (group) was killed.
    Interrupted,
}

/// A running child that is killed (with its group, when it has one) when dropped, so that no
/// error path leaves a VM behind.
pub struct Proc {
    child: Child,
    group: bool,
    reaped: bool,
}

impl Proc {
    /// Start `cmd`. With `group`, the child leads a new process group, so that a wrapper's
    /// children (`ip netns exec fugu ...`) are killed with it.
    pub fn spawn(cmd: &mut Command, group: bool) -> io::Result<Proc> {
        use std::os::unix::process::CommandExt;
        if group {
            cmd.process_group(0);
        }
        Ok(Proc {
            child: cmd.spawn()?,
            group,
            reaped: false,
        })
    }

    /// Its stderr, when the command piped it (to be read on another thread).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Its stdout, when the command piped it.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has ended (without waiting).
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let s = self.child.try_wait()?;
        self.reaped |= s.is_some();
        Ok(s)
    }

    /// Wait for it to end, at most `limit`, checking every `poll` and stopping early when
    /// `interrupt` is raised. A timeout or an interrupt kills it.
    pub fn wait(
        &mut self,
        limit: Duration,
        poll: Duration,
        interrupt: Option<&AtomicBool>,
    ) -> io::Result<Waited> {
        let start = Instant::now();
        loop {
            match self.try_wait() {
                Ok(Some(s)) => return Ok(Waited::Exited(s)),
                Ok(None) => {}
                Err(e) => {
                    self.kill();
                    return Err(e);
                }
            }
            if interrupt.is_some_and(|i| i.load(Ordering::SeqCst)) {
                self.kill();
                return Ok(Waited::Interrupted);
            }
            if start.elapsed() >= limit {
                self.kill();
                return Ok(Waited::TimedOut);
            }
            std::thread::sleep(poll);
        }
    }

    /// Kill it (its whole group when it has one) and reap it.
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        if self.group {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: kill(2) on the process group this Proc created; no memory is shared.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of a file (lossy UTF-8), or "" when it cannot be read.
pub fn tail_file(path: &Path, n: usize) -> String {
    std::fs::read(path)
        .map(|b| tail(&String::from_utf8_lossy(&b), n))
        .unwrap_or_default()
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The name of a signal that ends a crashed process, for reports.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGSYS => "SIGSYS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("fugu-proc-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mark = dir.join("grandchild-lived");
        // The shell's own child would outlive a plain kill of the shell.
        let script = format!("(sleep 2; touch {}) & wait", mark.display());
        let mut p = Proc::spawn(Command::new("/bin/sh").args(["-c", &script]), true).unwrap();
        let w = p
            .wait(Duration::from_millis(200), Duration::from_millis(10), None)
            .unwrap();
        assert!(matches!(w, Waited::TimedOut), "{w:?}");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!mark.exists(), "the grandchild survived the group kill");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn exit_and_interrupt() {
        let mut p = Proc::spawn(Command::new("/bin/sh").args(["-c", "exit 7"]), false).unwrap();
        let w = p
            .wait(Duration::from_secs(30), Duration::from_millis(5), None)
            .unwrap();
        assert!(
            matches!(w, Waited::Exited(s) if s.code() == Some(7)),
            "{w:?}"
        );
        let stop = AtomicBool::new(true);
        let mut p = Proc::spawn(Command::new("sleep").arg("30"), true).unwrap();
        let w = p
            .wait(
                Duration::from_secs(30),
                Duration::from_millis(5),
                Some(&stop),
            )
            .unwrap();
        assert!(matches!(w, Waited::Interrupted), "{w:?}");
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
    }
}
