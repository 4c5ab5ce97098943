//! Process signals while a VM runs: SIGINT/SIGTERM/SIGHUP/SIGQUIT end it, SIGBUS from inside KVM_RUN is
//! recorded for the report, and the kick signal takes a vCPU thread out of KVM_RUN.
//!
//! A leaf module (libc and std only). Handlers only store to atomics: async-signal-safe.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};

static SIGNAL_RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_terminate(sig: libc::c_int) {
    SIGNAL_RECEIVED.store(sig, Ordering::SeqCst);
}
thread_local! {
    /// The `immediate_exit` byte of the vCPU this thread runs (null when none).
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick: a KVM_RUN in progress returns EINTR because of the signal itself; setting
/// `immediate_exit` makes one that the thread was just about to enter return at once too, so
/// a single kick is never lost (as Firecracker's kick does).
extern "C" fn on_kick(_sig: libc::c_int) {
    // A const-initialized thread-local without a destructor: no allocation or lazy init,
    // safe to read from a signal handler.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: arm_kick's caller keeps the byte valid until the guard clears it, and
            // the guard runs on this thread, so it cannot race this handler.
            unsafe { std::ptr::write_volatile(p, 1) };
        }
    });
}

/// While alive, the kick signal delivered to this thread sets `immediate_exit`. Not `Send`:
/// it must be dropped on the thread that armed it.
pub struct KickGuard(std::marker::PhantomData<*mut u8>);

impl Drop for KickGuard {
    fn drop(&mut self) {
        let _ = IMMEDIATE_EXIT.try_with(|p| p.set(std::ptr::null_mut()));
    }
}

/// Let the kick signal set `immediate_exit` (a vCPU's byte in its `kvm_run` page) while the
/// returned guard lives on this thread.
///
/// # Safety
/// `immediate_exit` must stay valid for writes until the guard is dropped, on this thread.
pub unsafe fn arm_kick(immediate_exit: *mut u8) -> KickGuard {
    let _ = IMMEDIATE_EXIT.try_with(|p| p.set(immediate_exit));
    KickGuard(std::marker::PhantomData)
}

/// The signal used to kick vCPU threads out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    libc::SIGUSR1
}

/// SIGBUS deliveries: KVM raises SIGBUS in a vCPU thread during KVM_RUN when it cannot back
/// a guest access (memory errors, or hosts such as kvm_pvm failing to switch to the guest's
/// user mode for a 32-bit VMM). Recorded so the VM ends with a report, not a dead process.
static SIGBUS_COUNT: AtomicI32 = AtomicI32::new(0);
static SIGBUS_CODE: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let code = unsafe { info.as_ref().map_or(0, |i| i.si_code) };
    SIGBUS_CODE.store(code, Ordering::SeqCst);
    // A SIGBUS from fugu's own code (not from inside KVM_RUN) would fault again on return:
    // the second time, fall back to the default action so the process still dies visibly.
    if SIGBUS_COUNT.fetch_add(1, Ordering::SeqCst) >= 8 {
        // SAFETY: resetting a disposition and re-raising are async-signal-safe.
        unsafe {
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            libc::raise(libc::SIGBUS);
        }
    }
}

/// A SIGBUS delivered to this process since the VM started, with its si_code.
pub fn sigbus_received() -> Option<i32> {
    (SIGBUS_COUNT.load(Ordering::SeqCst) > 0).then(|| SIGBUS_CODE.load(Ordering::SeqCst))
}

/// SIGINT, SIGTERM, SIGHUP or SIGQUIT received since [`install`], if any.
pub fn terminate_received() -> Option<i32> {
    match SIGNAL_RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Install the handlers and forget earlier SIGINT/SIGTERM deliveries.
pub fn install() {
    // SAFETY: installing an async-signal-safe SIGBUS handler (atomic stores) with SA_SIGINFO.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus
            as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
            as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
    // SAFETY: installing async-signal-safe handlers (an atomic store / nothing) with sigaction.
    unsafe {
        for (sig, h) in [
            (
                libc::SIGINT,
                on_terminate as extern "C" fn(libc::c_int) as usize,
            ),
            (
                libc::SIGTERM,
                on_terminate as extern "C" fn(libc::c_int) as usize,
            ),
            // A closed terminal (SIGHUP) and Ctrl-\ (SIGQUIT, which ISIG keeps on in raw
            // mode) would otherwise kill fugu with the terminal left raw (and a core dump).
            (
                libc::SIGHUP,
                on_terminate as extern "C" fn(libc::c_int) as usize,
            ),
            (
                libc::SIGQUIT,
                on_terminate as extern "C" fn(libc::c_int) as usize,
            ),
            (
                kick_signal(),
                on_kick as extern "C" fn(libc::c_int) as usize,
            ),
        ] {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = h;
            libc::sigemptyset(&mut sa.sa_mask);
            // No SA_RESTART: KVM_RUN must return EINTR so the vCPU loop sees the kick.
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    SIGNAL_RECEIVED.store(0, Ordering::SeqCst);
}
