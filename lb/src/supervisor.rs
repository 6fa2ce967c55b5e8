//! Who owns the lb's background tasks: one [`TaskTracker`] and one root
//! [`CancellationToken`] per [`crate::Lb`]. Listeners, health checkers, readmission
//! timers, L4 and L7 connection tasks (upgrades included) and the drivers of pooled
//! backend connections are spawned here, so shutdown can cancel them all and then
//! wait for them, bounded, instead of dropping `JoinHandle`s and hoping.
//!
//! With more than one usable CPU the lb also owns its data-path workers
//! ([`Tasks::with_workers`]): N OS threads, each running a single-threaded tokio
//! runtime. Accept loops are spawned onto them ([`Tasks::spawn_on_worker`]); whatever
//! a task spawns through [`Tasks`] runs on the runtime it is spawned from, so a
//! connection's task, its timers, its backend sockets and its pooled backend
//! connections stay on the worker whose listener accepted it (no work stealing, no
//! cross-core wake-ups on the request path). The tracker is shared by every runtime:
//! [`Tasks::shutdown`] waits for the workers' tasks like the main runtime's, then
//! ends the worker threads.

use std::cell::Cell;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

thread_local! {
    /// The index of the data-path worker this thread is (set once, when the worker
    /// thread starts); `None` on every other thread.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The data-path worker the calling thread is, if it is one: per-worker state (the
/// L7 backend connection pools) is indexed by it.
pub(crate) fn current_worker() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// How long [`Tasks::shutdown`] waits for a worker thread to end once its runtime
/// was told to stop (its tasks are over by then: this only covers the runtime's own
/// teardown).
const WORKER_EXIT: Duration = Duration::from_secs(2);

/// The data-path worker threads of one lb: their runtimes' handles and the token
/// that ends them.
#[derive(Debug, Default)]
struct Workers {
    handles: Vec<Handle>,
    /// Cancelled to end every worker's runtime (after the tracker drained, or when
    /// the lb is dropped).
    stop: CancellationToken,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` worker threads, each with a current-thread runtime, and returns
    /// once each runtime is built (an error if one could not be).
    fn start(n: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::channel();
            let stopped = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("portico-w{i}"))
                .spawn(move || {
                    WORKER.with(|w| w.set(Some(i)));
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(stopped.cancelled());
                    // Tasks still there were cut by the lb's shutdown (or the lb was
                    // dropped): drop them, and do not wait on blocking work forever.
                    rt.shutdown_timeout(Duration::from_millis(500));
                });
            let thread = match thread {
                Ok(t) => t,
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            };
            let handle = rx.recv().map_err(|_| {
                std::io::Error::other(format!("worker {i} ended before its runtime started"))
            });
            match handle.and_then(|r| r) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    stop.cancel();
                    return Err(e);
                }
            }
            threads.push(thread);
        }
        Ok(Workers {
            handles,
            stop,
            threads: Mutex::new(threads),
        })
    }

    /// Ends every worker thread and waits for them, up to `limit`; true when all
    /// ended.
    async fn stop(&self, limit: Duration) -> bool {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let all = crate::sync::lock(&self.threads)
                .iter()
                .all(std::thread::JoinHandle::is_finished);
            if all {
                for t in crate::sync::lock(&self.threads).drain(..) {
                    let _ = t.join();
                }
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A cheap handle (clone it freely) to the lb's task owner.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
    workers: Arc<Workers>,
}

impl Tasks {
    /// A fresh owner with its own root token, spawning on the runtime it is
    /// called from (no data-path workers).
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// A fresh owner with `n` data-path workers when `n > 1` (with `n <= 1`, the
    /// same as [`Tasks::new`]: no thread is started).
    pub fn with_workers(n: usize) -> std::io::Result<Tasks> {
        if n <= 1 {
            return Ok(Tasks::new());
        }
        Ok(Tasks {
            workers: Arc::new(Workers::start(n)?),
            ..Tasks::default()
        })
    }

    /// How many data paths there are: the workers, or 1 (the caller's runtime)
    /// without workers. Per-worker state is sized by it.
    pub fn workers(&self) -> usize {
        self.workers.handles.len().max(1)
    }

    /// Spawns `fut` as an owned task on worker `worker` (modulo the count), or on
    /// the caller's runtime without workers.
    pub fn spawn_on_worker<F>(&self, worker: usize, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.workers.handles.get(worker % self.workers()) {
            Some(handle) => {
                self.tracker.spawn_on(fut, handle);
            }
            None => {
                self.tracker.spawn(fut);
            }
        }
    }

    /// Ends the worker threads without waiting (the lb was dropped without a
    /// shutdown); their remaining tasks are dropped.
    pub fn stop_workers(&self) {
        self.workers.stop.cancel();
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
        self.tracker.spawn(until_shutdown(fut, self.cancel.clone()));
    }

    /// A token cancelled with the root (and cancellable on its own).
    pub fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// The root token: cancelled once, at shutdown (or when the lb is dropped).
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Cancels the root token and waits up to `limit` for every owned task to end
    /// (on the main runtime and on every worker); true when they all did.
    /// Then ends the data-path worker threads (bounded by [`WORKER_EXIT`]).
    pub async fn shutdown(&self, limit: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        let drained = tokio::time::timeout(limit, self.tracker.wait())
            .await
            .is_ok();
        let ended = self.workers.stop(WORKER_EXIT).await;
        if !ended {
            tracing::warn!("lb worker threads still running after {WORKER_EXIT:?}");
        }
        drained && ended
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

pin_project_lite::pin_project! {
    /// `fut`, ended early when the root token is cancelled. A plain struct rather
    /// than an `async` block around `select!`: the block keeps the captured future
    /// and the copy `select!` pins as two slots, so every L4 connection's task held
    /// its relay twice (1 KiB more per idle connection, measured with
    /// `bench/idle.sh`).
    struct UntilShutdown<F> {
        #[pin]
        cancelled: tokio_util::sync::WaitForCancellationFutureOwned,
        #[pin]
        fut: F,
    }
}

fn until_shutdown<F: Future<Output = ()>>(fut: F, cancel: CancellationToken) -> UntilShutdown<F> {
    UntilShutdown {
        cancelled: cancel.cancelled_owned(),
        fut,
    }
}

impl<F: Future<Output = ()>> Future for UntilShutdown<F> {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.project();
        if this.cancelled.poll(cx).is_ready() {
            return std::task::Poll::Ready(());
        }
        this.fut.poll(cx)
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

    /// The wrapper costs a few words over the future it wraps, not a second copy of
    /// it (an `async` block around `select!` doubled it).
    #[test]
    fn the_shutdown_wrapper_does_not_copy_its_future() {
        let big = async {
            let buf = [1u8; 1024];
            tokio::task::yield_now().await;
            std::hint::black_box(buf);
        };
        let inner = std::mem::size_of_val(&big);
        let wrapped = std::mem::size_of_val(&until_shutdown(big, CancellationToken::new()));
        assert!(inner >= 1024, "{inner}");
        assert!(wrapped <= inner + 128, "{inner} bytes wrapped in {wrapped}");
    }
}
