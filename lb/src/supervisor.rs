//! Who owns the lb's background tasks: one [`TaskTracker`] and one root
//! [`CancellationToken`] per [`crate::Lb`]. Listeners, health checkers, readmission
//! timers and L7 connection tasks (upgrades included) are spawned here, so shutdown
//! can cancel them all and then wait for them, bounded, instead of dropping
//! `JoinHandle`s and hoping.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cheap handle (clone it freely) to the lb's task owner.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// A fresh owner with its own root token.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Spawns `fut` as a task owned here; [`Tasks::shutdown`] waits for it.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// A token cancelled with the root (and cancellable on its own).
    pub fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// The root token: cancelled once, at shutdown (or when the lb is dropped).
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Cancels the root token and waits up to `limit` for every owned task to end;
    /// true when they all did.
    pub async fn shutdown(&self, limit: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Tasks still running (for tests of the shutdown).
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// True when no owned task runs.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}
