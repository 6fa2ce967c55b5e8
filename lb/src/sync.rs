//! The one way the lb takes a std lock.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, going on with the data of a holder that panicked: every lb lock guards
/// plain values that stay consistent between statements, so a poisoned lock is no
/// reason to take the process down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
