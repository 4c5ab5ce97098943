//! How a VM ends: the [`Outcome`] and the [`Stop`] handle that records the first one.
//!
//! A leaf module (std, [`crate::sync`] and [`crate::exit_status`] only), so that everything that can end a VM (vCPU
//! threads, the console, timers) depends on it and not on the machine. Devices do not use it
//! either: they get a callback (`devices::ResetHook`, the debug-exit closure) that the machine
//! wires to a [`Stop`]. "Outcome", not "exit": a KVM exit is a vCPU trap to the host
//! (`hypervisor::VcpuExit`).

use crate::exit_status::ExitStatus;
use crate::sync::lock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote `v` to the debug-exit port.
    DebugExit(u32),
    /// The guest powered off (ACPI / KVM system event).
    Poweroff,
    /// The guest asked for a reset (i8042, triple fault handled as reset is not done here).
    Reset,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault { cpu: u32 },
    /// A vCPU halted with interrupts off: nothing can wake it.
    Halted { cpu: u32 },
    /// Something the VMM could not handle; the message has the details.
    Crash(String),
    /// fugu received SIGINT, SIGTERM, SIGHUP or SIGQUIT.
    Signal(i32),
    /// The guest was still running after `--boot-timeout` seconds.
    Timeout(u64),
}

impl Outcome {
    /// The process exit status for this outcome.
    pub fn status(&self) -> ExitStatus {
        match self {
            Outcome::DebugExit(v) => ExitStatus::DebugExit(*v),
            Outcome::Poweroff | Outcome::Reset => ExitStatus::Success,
            Outcome::TripleFault { .. } | Outcome::Halted { .. } | Outcome::Crash(_) => {
                ExitStatus::GuestCrash
            }
            Outcome::Signal(_) => ExitStatus::Interrupted,
            Outcome::Timeout(_) => ExitStatus::NoBoot,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Outcome::DebugExit(v) => format!("guest wrote {v:#x} to the debug-exit port"),
            Outcome::Poweroff => "guest powered off".into(),
            Outcome::Reset => "guest requested a reset".into(),
            Outcome::TripleFault { cpu } => {
                format!("vCPU {cpu} triple-faulted (KVM shutdown exit)")
            }
            Outcome::Halted { cpu } => format!("vCPU {cpu} halted and cannot be woken"),
            Outcome::Crash(m) => m.clone(),
            Outcome::Signal(s) => format!("interrupted by signal {s}"),
            Outcome::Timeout(s) => {
                format!("the guest was still running after --boot-timeout {s} s")
            }
        }
    }
}

/// Asks the VM to stop. The first requested outcome wins; everyone waiting is woken.
#[derive(Clone, Default)]
pub struct Stop {
    inner: Arc<(Mutex<Option<Outcome>>, Condvar)>,
    flag: Arc<AtomicBool>,
}

impl Stop {
    pub fn request(&self, e: Outcome) {
        let mut g = lock(&self.inner.0);
        if g.is_none() {
            *g = Some(e);
        }
        self.flag.store(true, Ordering::SeqCst);
        self.inner.1.notify_all();
    }
    /// Cheap enough for the vCPU loop: one atomic load.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    #[cfg(test)]
    pub fn get(&self) -> Option<Outcome> {
        lock(&self.inner.0).clone()
    }
    /// The outcome, once one is requested or `timeout` has passed.
    pub fn wait(&self, timeout: Duration) -> Option<Outcome> {
        let g = lock(&self.inner.0);
        let (g, _) = self
            .inner
            .1
            .wait_timeout_while(g, timeout, |e| e.is_none())
            .unwrap_or_else(|p| p.into_inner());
        g.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_outcome_wins() {
        let s = Stop::default();
        assert!(!s.requested());
        assert_eq!(s.wait(Duration::from_millis(1)), None);
        s.request(Outcome::Reset);
        s.request(Outcome::Poweroff);
        assert!(s.requested());
        assert_eq!(s.get(), Some(Outcome::Reset));
        assert_eq!(s.wait(Duration::from_secs(1)), Some(Outcome::Reset));
    }
}
