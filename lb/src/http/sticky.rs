//! Cookie stickiness: a webmail session stays on the node holding it.
//!
//! The cookie carries the backend's stable key (a hash of its name, hex), not its
//! name or address, so nothing about the pool's layout leaks to browsers. A sticky
//! client keeps its node while that node is *able* to serve it: up (or not yet
//! probed), not in `maint`, not passively ejected. `drain` does not end stickiness —
//! that is the point of draining: existing sessions finish while no new ones arrive.
//! Anything else sends the client through normal selection and re-pins it.

use crate::backend::{AdminState, Backend, Health, Lease};
use crate::pool::Pool;

/// The cookie value naming `backend`.
pub fn cookie_value(backend: &Backend) -> String {
    format!("{:016x}", backend.key())
}

/// Whether an existing sticky session may stay on `backend` (drained nodes may).
pub fn keeps_sessions(backend: &Backend) -> bool {
    backend.health() != Health::Down
        && backend.admin() != AdminState::Maint
        && !backend.is_ejected()
}

/// A lease on the backend named by cookie `value`, unless it is in `exclude`
/// (already tried for this request) or can no longer keep sessions.
pub fn find(pool: &Pool, value: &str, exclude: &[usize]) -> Option<Lease> {
    pool.backends()
        .iter()
        .enumerate()
        .find(|(i, b)| !exclude.contains(i) && cookie_value(b) == value)
        .filter(|(_, b)| keeps_sessions(b))
        .map(|(i, b)| b.acquire(i))
}
