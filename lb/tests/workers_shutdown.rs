//! The lb's shutdown ends its data-path worker threads (its own test binary: the
//! threads of this process are counted, so no other lb may run beside it).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::*;
use lb::LbOptions;
use shared::config::MailProtocol;
use shared::testing::{Behaviour, FakeKind, FakeServer};

/// Threads of this process named like the lb's workers.
fn worker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("tasks")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("portico-w"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_workers_and_ends_their_threads() {
    let mx = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let cfg = vip("smtp", MailProtocol::Smtp, &[("mx1", mx.addr())]);
    let options = LbOptions {
        workers: 3,
        ..scripted(Arc::new(AtomicBool::new(true)))
    };
    let (lb, _e) = start(&[cfg], options).await;
    assert_eq!(worker_threads(), 3);
    let a = addr(&lb, "smtp");
    let mut held = Client::connect(a).await;
    assert!(held.line().await.starts_with("220 "));
    lb.stop_accepting();
    lb.shutdown().await;
    assert!(lb.tasks().is_empty(), "every worker's task ended");
    assert_eq!(worker_threads(), 0, "worker threads ended");
    assert_eq!(held.line().await, "", "the open session was cut");
}
