//! The per-core data path: with two workers every VIP has one `SO_REUSEPORT`
//! listening socket per worker, both workers accept, a removed VIP closes all of
//! them, and the admission limits hold exactly across workers (their counts are
//! shared atomics).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lb::LbOptions;
use shared::config::MailProtocol;
use shared::testing::{listening_sockets, Behaviour, FakeKind, FakeServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn two_workers() -> LbOptions {
    LbOptions {
        workers: 2,
        ..scripted(Arc::new(AtomicBool::new(true)))
    }
}

async fn echo_once(addr: SocketAddr, msg: &[u8]) {
    let mut s = tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    s.write_all(msg).await.expect("write");
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(got, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_has_its_socket_and_accepts_connections() {
    let echo = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    let cfg = vip("echo", MailProtocol::None, &[("e", echo.addr())]);
    let (lb, _e) = start(&[cfg], two_workers()).await;
    assert_eq!(lb.workers(), 2);
    let a = addr(&lb, "echo");
    assert_eq!(
        listening_sockets(a.port()),
        2,
        "one listening socket per worker"
    );
    // The kernel hashes each new connection (by its source port) to one socket:
    // 64 connections land on both with overwhelming probability (2^-63 otherwise).
    for i in 0..64u32 {
        echo_once(a, format!("hello {i}\n").as_bytes()).await;
    }
    let accepted = lb.accepted("echo").expect("vip");
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert_eq!(accepted.iter().sum::<u64>(), 64, "{accepted:?}");
    assert!(
        accepted.iter().all(|n| *n > 0),
        "both workers accept: {accepted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_removing_a_vip_closes_every_workers_socket() {
    let echo = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    let keep = vip("keep", MailProtocol::None, &[("e", echo.addr())]);
    let gone = vip("gone", MailProtocol::None, &[("e", echo.addr())]);
    let (lb, _e) = start(&[keep.clone(), gone], two_workers()).await;
    let (k, g) = (addr(&lb, "keep"), addr(&lb, "gone"));
    assert_eq!(listening_sockets(g.port()), 2);
    echo_once(g, b"before\n").await;
    lb.reload(&[keep]).await.expect("reload");
    eventually(WAIT, || listening_sockets(g.port()) == 0)
        .await
        .expect("every socket of the removed VIP closed");
    // A socket left open in the group would take about half of these.
    for _ in 0..50 {
        assert!(
            std::net::TcpStream::connect(g).is_err(),
            "connection refused on the removed VIP"
        );
    }
    assert_eq!(
        listening_sockets(k.port()),
        2,
        "the kept VIP keeps both sockets"
    );
    for i in 0..16u32 {
        echo_once(k, format!("after {i}\n").as_bytes()).await;
    }
}

/// Connects `n` clients at once and returns how many got the backend's greeting
/// (`220`) and how many the refusal (`421`), keeping every connection open until
/// all have answered.
async fn greet_all(a: SocketAddr, n: usize) -> (usize, usize, Vec<Client>) {
    let mut joins = Vec::new();
    for _ in 0..n {
        joins.push(tokio::spawn(async move {
            let mut c = Client::connect(a).await;
            let line = c.line().await;
            (line, c)
        }));
    }
    let (mut ok, mut refused, mut held) = (0, 0, Vec::new());
    for j in joins {
        let (line, c) = j.await.expect("join");
        if line.starts_with("220 ") {
            ok += 1;
        } else if line.starts_with("421 ") {
            refused += 1;
        } else {
            panic!("unexpected greeting {line:?}");
        }
        held.push(c);
    }
    (ok, refused, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_exactly_across_workers() {
    let mx = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mut cfg = vip("smtp", MailProtocol::Smtp, &[("mx1", mx.addr())]);
    cfg.max_connections = Some(5);
    let (lb, _e) = start(&[cfg], two_workers()).await;
    let a = addr(&lb, "smtp");
    for round in 0..3 {
        let (ok, refused, held) = greet_all(a, 40).await;
        assert_eq!((ok, refused), (5, 35), "round {round}: exactly the limit");
        assert_eq!(lb.active_connections(), 5);
        drop(held);
        eventually(WAIT, || lb.active_connections() == 0)
            .await
            .expect("every slot given back");
    }
    let accepted = lb.accepted("smtp").expect("vip");
    assert!(
        accepted.iter().all(|n| *n > 0),
        "both workers took part: {accepted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_source_limit_holds_exactly_across_workers() {
    let mx = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mut cfg = vip("smtp", MailProtocol::Smtp, &[("mx1", mx.addr())]);
    cfg.max_connections_per_source = Some(3);
    let (lb, _e) = start(&[cfg], two_workers()).await;
    let a = addr(&lb, "smtp");
    let (ok, refused, held) = greet_all(a, 30).await;
    assert_eq!((ok, refused), (3, 27), "exactly the per-source limit");
    assert_eq!(lb.active_connections(), 3);
    drop(held);
    eventually(WAIT, || lb.active_connections() == 0)
        .await
        .expect("every slot given back");
    let (ok, _, _held) = greet_all(a, 6).await;
    assert_eq!(ok, 3, "room again, still exactly the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_listeners_open_on_every_worker() {
    let echo = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    let cfg = vip("echo", MailProtocol::None, &[("e", echo.addr())]);
    let (lb, _e) = start(
        &[cfg],
        LbOptions {
            hold_accept: true,
            ..two_workers()
        },
    )
    .await;
    let a = addr(&lb, "echo");
    // Queued in the backlogs while held, then served once open.
    let mut waiting = Vec::new();
    for i in 0..16u32 {
        waiting.push(tokio::spawn(async move {
            echo_once(a, format!("queued {i}\n").as_bytes()).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(lb.accepted("echo").expect("vip").iter().sum::<u64>(), 0);
    lb.open();
    for w in waiting {
        w.await.expect("served after open");
    }
    lb.stop_accepting();
    eventually(WAIT, || listening_sockets(a.port()) == 0)
        .await
        .expect("stop_accepting closes every worker's socket");
}
