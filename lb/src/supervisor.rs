//! Who owns the lb's background tasks: one [`TaskTracker`] and one root
//! [`CancellationToken`] per [`crate::Lb`]. Listeners, health checkers, readmission
//! timers, L4 and L7 connection tasks (upgrades included) and the drivers of pooled
//! backend connections are spawned here, so shutdown can cancel them all and then
//! wait for them, bounded, instead of dropping `JoinHandle`s and hoping.

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

    /// Spawns `fut` as an owned task that is dropped at the root token's cancellation
    /// if it has not ended by then: for client connections, which run to their end
    /// while the lb drains and are cut only once [`crate::Lb::shutdown`] says the
    /// drain is over (dropping the future closes its sockets).
    pub fn spawn_until_shutdown<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = fut => {}
            }
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_cuts_connection_tasks_and_waits_for_them() {
        let tasks = Tasks::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
        // A connection that would otherwise run forever; its sender is dropped only
        // when the task's future is dropped.
        tasks.spawn_until_shutdown(async move {
            let _alive = tx;
            std::future::pending::<()>().await;
        });
        assert_eq!(tasks.len(), 1);
        assert!(tasks.shutdown(Duration::from_secs(1)).await);
        assert!(tasks.is_empty());
        assert_eq!(rx.recv().await, None, "the connection's state was dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_connection_task_leaves_the_tracker() {
        let tasks = Tasks::new();
        tasks.spawn_until_shutdown(async {});
        tokio::time::timeout(Duration::from_secs(1), async {
            while !tasks.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the task ended on its own");
        assert!(!tasks.token().is_cancelled());
    }
}
