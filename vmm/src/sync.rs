//! Locking that survives a panicked holder. A leaf module: std only.

use std::sync::{Mutex, MutexGuard};

/// Lock a device even if a previous holder panicked: device state is plain data, and one
/// vCPU thread's failure must not take the others down with a poisoned lock.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
