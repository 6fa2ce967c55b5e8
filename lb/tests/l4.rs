//! End-to-end tests of the L4 proxy through real loopback sockets: retries past a
//! dead backend, refusals in protocol, half-close, PROXY v2, per-source limits.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use shared::config::{MailProtocol, ProxyVersion};
use shared::testing::{Behaviour, FakeKind, FakeOptions, FakeServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Sends `msg` through the VIP to an echo backend and checks it comes back.
async fn echo_once(addr: std::net::SocketAddr, msg: &[u8]) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(msg).await.map_err(|e| e.to_string())?;
    let mut got = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    if got != msg {
        return Err(format!("echo mismatch: {got:?}"));
    }
    Ok(())
}

async fn two_hundred_through(ejection: bool) {
    let good = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    let dead = FakeServer::start(FakeKind::Echo, Behaviour::Refuse).await;
    let mut cfg = vip(
        "echo",
        MailProtocol::None,
        &[("good", good.addr()), ("dead", dead.addr())],
    );
    if !ejection {
        cfg.ejection.consecutive_failures = 0;
    }
    // Probes say both are fine: the dead one is "not yet detected".
    let (lb, _events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let addr = addr(&lb, "echo");
    let sem = Arc::new(tokio::sync::Semaphore::new(20));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            echo_once(addr, format!("hello {i}\n").as_bytes()).await
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("join") {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        good.connections() >= 200,
        "every session landed on the live backend"
    );
    let dead = lb.backend("echo", "dead").expect("backend");
    if ejection {
        assert_eq!(dead.state_str(), "ejected", "connect failures ejected it");
    } else {
        assert!(
            !dead.is_ejected() && dead.in_rotation(),
            "only retries hid it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_an_undetected_dead_backend() {
    two_hundred_through(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_eject_the_dead_backend() {
    two_hundred_through(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_down_refuses_in_protocol() {
    let dead = FakeServer::start(FakeKind::Smtp, Behaviour::Refuse).await;
    let b = [("mx1", dead.addr())];
    let vips = [
        vip("smtp", MailProtocol::Smtp, &b),
        vip("imap", MailProtocol::Imap, &b),
        vip("pop3", MailProtocol::Pop3, &b),
        vip("raw", MailProtocol::None, &b),
    ];
    let vips = vips.map(|mut v| {
        v.probe.timing = timing(300, 100, 1, 1);
        v
    });
    let (lb, _events) = start(&vips, scripted(Arc::new(AtomicBool::new(false)))).await;
    eventually(WAIT, || {
        lb.status()
            .iter()
            .all(|v| v.healthy == 0 && !v.up && v.backends[0].state == "down")
    })
    .await
    .expect("marked down");
    for (name, want) in [
        (
            "smtp",
            "421 4.3.2 Service not available, try again later\r\n",
        ),
        ("imap", "* BYE Service not available, try again later\r\n"),
        ("pop3", "-ERR Service not available, try again later\r\n"),
    ] {
        let mut c = Client::connect(addr(&lb, name)).await;
        assert_eq!(c.line().await, want, "{name}");
        assert_eq!(c.line().await, "", "{name}: closed after the refusal");
    }
    let mut c = Client::connect(addr(&lb, "raw")).await;
    assert_eq!(c.line().await, "", "opaque TCP is just closed");

    // Also when probes still say up but every connect fails (retries exhausted).
    let flag = Arc::new(AtomicBool::new(true));
    let (lb2, _e) = start(&[vip("smtp", MailProtocol::Smtp, &b)], scripted(flag)).await;
    let mut c = Client::connect(addr(&lb2, "smtp")).await;
    assert!(c.line().await.starts_with("421 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_is_forwarded_and_the_other_direction_keeps_flowing() {
    let echo = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    let (lb, _e) = start(
        &[vip("echo", MailProtocol::None, &[("e", echo.addr())])],
        scripted(Arc::new(AtomicBool::new(true))),
    )
    .await;
    let mut s = TcpStream::connect(addr(&lb, "echo"))
        .await
        .expect("connect");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&payload).await.expect("write");
    s.shutdown().await.expect("half-close");
    // The echo backend only closes after it sees our FIN, and keeps sending until then.
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut got))
        .await
        .expect("backend's FIN forwarded back in time")
        .expect("read");
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "bytes intact");
    assert!(
        echo.wait_until(WAIT, |f| f.sessions_completed() >= 1).await,
        "backend saw EOF"
    );
    eventually(WAIT, || lb.active_connections() == 0)
        .await
        .expect("connection released");
}

/// An SMTP fake that drops connections without a PROXY header, and a VIP in front of
/// it that sends one (v2).
async fn smtp_expecting_proxy_v2() -> (FakeServer, shared::config::VipConfig) {
    let mx = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().expect_proxy(),
    )
    .await;
    let mut cfg = vip("smtp", MailProtocol::Smtp, &[("mx1", mx.addr())]);
    cfg.proxy_protocol = Some(ProxyVersion::V2);
    (mx, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_header_carries_the_real_client() {
    let (mx, cfg) = smtp_expecting_proxy_v2().await;
    let (lb, _e) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let vip_addr = addr(&lb, "smtp");
    let mut c = Client::connect(vip_addr).await;
    let me = c.reader.get_ref().local_addr().expect("local");
    assert!(
        c.line().await.starts_with("220 "),
        "backend accepted the header"
    );
    let h = mx.last_proxy_header().expect("header received");
    assert_eq!(h.version, shared::proxy_protocol::Version::V2);
    assert_eq!(
        h.addrs,
        Some((me, vip_addr)),
        "source is the client, destination the VIP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_proxy_passes_the_upstream_client_on_and_closes_headerless_connections() {
    // Portico behind another balancer: the header it receives names the client, and
    // the header it sends to the backend must carry that client, not the balancer.
    let (mx, mut cfg) = smtp_expecting_proxy_v2().await;
    cfg.accept_proxy = true;
    let (lb, _e) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let vip_addr = addr(&lb, "smtp");
    let client: std::net::SocketAddr = "192.0.2.7:40001".parse().expect("addr");
    let public: std::net::SocketAddr = "198.51.100.1:25".parse().expect("addr");

    let mut c = Client::connect(vip_addr).await;
    let header = String::from_utf8(shared::proxy_protocol::v1(client, public)).expect("ascii");
    c.send(&header).await;
    assert!(
        c.line().await.starts_with("220 "),
        "proxied after the header"
    );
    let h = mx.last_proxy_header().expect("header received");
    assert_eq!(
        h.addrs,
        Some((client, public)),
        "the upstream's client goes on"
    );

    // No header: closed (a reset, as the client's bytes stay unread) without a reply.
    let mut bare = TcpStream::connect(vip_addr).await.expect("connect");
    bare.write_all(b"EHLO me\r\n").await.expect("write");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(WAIT, bare.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a connection without a header is closed unanswered: {read:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_source_is_enforced() {
    let mx = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mut cfg = vip("smtp", MailProtocol::Smtp, &[("mx1", mx.addr())]);
    cfg.max_connections_per_source = Some(2);
    let (lb, _e) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let a = addr(&lb, "smtp");
    let mut first = Client::connect(a).await;
    let mut second = Client::connect(a).await;
    assert!(first.line().await.starts_with("220 "));
    assert!(second.line().await.starts_with("220 "));
    let mut third = Client::connect(a).await;
    assert!(
        third.line().await.starts_with("421 "),
        "third from one source refused in kind"
    );
    drop(first);
    eventually(WAIT, || lb.active_connections() == 1)
        .await
        .expect("slot released");
    let mut again = Client::connect(a).await;
    assert!(
        again.line().await.starts_with("220 "),
        "room again after one closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_vip_is_enforced() {
    let mx = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mut cfg = vip("smtp", MailProtocol::Smtp, &[("mx1", mx.addr())]);
    cfg.max_connections = Some(1);
    let (lb, _e) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let a = addr(&lb, "smtp");
    let mut first = Client::connect(a).await;
    assert!(first.line().await.starts_with("220 "));
    let mut second = Client::connect(a).await;
    assert!(second.line().await.starts_with("421 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_idle_timeout() {
    let echo = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    let mut cfg = vip("echo", MailProtocol::None, &[("e", echo.addr())]);
    cfg.idle_timeout = Duration::from_millis(300);
    let (lb, _e) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let mut s = TcpStream::connect(addr(&lb, "echo"))
        .await
        .expect("connect");
    s.write_all(b"x").await.expect("write");
    let mut buf = [0u8; 8];
    let n = s.read(&mut buf).await.expect("echo");
    assert_eq!(&buf[..n], b"x");
    let start = tokio::time::Instant::now();
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed by the idle timeout");
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "not before the timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_vips_are_served_by_the_l7_proxy_through_the_same_pool() {
    let web = FakeServer::start_with(
        FakeKind::Http,
        Behaviour::Good,
        FakeOptions::new().banner("web1"),
    )
    .await;
    let mut cfg = vip("web", MailProtocol::None, &[("web1", web.addr())]);
    cfg.mode = shared::config::VipMode::Http;
    cfg.max_connections_per_source = Some(1);
    let (lb, _e) = start(&[cfg.clone()], scripted(Arc::new(AtomicBool::new(true)))).await;
    let a = addr(&lb, "web");
    let get = || async move {
        let mut s = TcpStream::connect(a).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut resp = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut resp))
            .await
            .expect("in time")
            .expect("read");
        String::from_utf8_lossy(&resp).into_owned()
    };
    let resp = get().await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("web1"), "{resp}");
    // Admission goes through the lb's limits: a second connection from the same source
    // while one is open is refused.
    let _held = TcpStream::connect(a).await.expect("connect");
    eventually(WAIT, || lb.active_connections() == 1)
        .await
        .expect("counted");
    let refused = get().await;
    assert!(!refused.starts_with("HTTP/1.1 200"), "{refused}");
    drop(_held);
    eventually(WAIT, || lb.active_connections() == 0)
        .await
        .expect("released");
    // A reload keeps the listener and swaps the pool under the L7 proxy.
    let web2 = FakeServer::start_with(
        FakeKind::Http,
        Behaviour::Good,
        FakeOptions::new().banner("web2"),
    )
    .await;
    let mut cfg2 = cfg.clone();
    cfg2.backends[0].name = "web2".into();
    cfg2.backends[0].address = web2.addr();
    lb.reload(&[cfg2]).await.expect("reload");
    assert_eq!(addr(&lb, "web"), a);
    let resp = get().await;
    assert!(resp.contains("web2"), "{resp}");
}

/// A dying node's listener still accepts for a moment and then closes without a
/// greeting; for server-speaks-first protocols that is retried on another backend, so
/// clients never see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_before_its_greeting_is_retried_elsewhere() {
    let good = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().banner("good"),
    )
    .await;
    let dying = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dying_addr = dying.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = dying.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    let mut cfg = vip(
        "smtp",
        MailProtocol::Smtp,
        &[("good", good.addr()), ("dying", dying_addr)],
    );
    cfg.ejection.consecutive_failures = 0;
    let (lb, _events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let addr = addr(&lb, "smtp");
    for i in 0..20 {
        let mut c = Client::connect(addr).await;
        let greeting = c.line().await;
        assert!(
            greeting.starts_with("220 good"),
            "session {i}: {greeting:?}"
        );
        c.send("QUIT\r\n").await;
    }
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 5,
        "round robin did try the dying backend"
    );
}

/// One SMTP session through the VIP, bounded: the whole greeting, `QUIT`, `221`.
/// Returns the greeting's last line, or why the session failed or hung.
async fn smtp_session(addr: std::net::SocketAddr, bound: Duration) -> Result<String, String> {
    use tokio::io::AsyncBufReadExt;
    let session = async {
        let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut r = tokio::io::BufReader::new(s);
        let mut greeting = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
                return Err(format!("closed after {greeting:?}"));
            }
            let last = line.as_bytes().get(3) != Some(&b'-');
            greeting = line;
            if last {
                break;
            }
        }
        if !greeting.starts_with("220 ") {
            return Err(format!("greeting {greeting:?}"));
        }
        r.get_mut()
            .write_all(b"QUIT\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut bye = String::new();
        r.read_line(&mut bye).await.map_err(|e| e.to_string())?;
        if !bye.starts_with("221") {
            return Err(format!("QUIT answered {bye:?}"));
        }
        Ok(greeting)
    };
    tokio::time::timeout(bound, session)
        .await
        .unwrap_or_else(|_| Err("hung".to_string()))
}

/// Runs `n` bounded SMTP sessions, 20 at a time; returns every failure.
async fn smtp_sessions(addr: std::net::SocketAddr, n: u32) -> Vec<String> {
    let sem = Arc::new(tokio::sync::Semaphore::new(20));
    let mut tasks = Vec::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            smtp_session(addr, Duration::from_secs(3))
                .await
                .map_err(|e| format!("session {i}: {e}"))
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.expect("join") {
            failures.push(e);
        }
    }
    failures
}

/// A backend whose process is stopped still completes TCP handshakes (the kernel
/// does), so only its missing greeting shows it is gone: the lb reads the greeting as
/// part of connecting and passes over a silent backend within `greeting_timeout`, so
/// none of 300 sessions hangs, even before probes or ejection notice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_backend_costs_no_session() {
    let good = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().banner("good"),
    )
    .await;
    let silent = FakeServer::start(FakeKind::Smtp, Behaviour::Hang).await;
    let mut cfg = vip(
        "smtp",
        MailProtocol::Smtp,
        &[("good", good.addr()), ("silent", silent.addr())],
    );
    cfg.greeting_timeout = Duration::from_millis(300);
    // Retries alone must hide it; ejection is checked separately below.
    cfg.ejection.consecutive_failures = 0;
    let (lb, _events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let addr = addr(&lb, "smtp");
    let failures = smtp_sessions(addr, 300).await;
    assert!(
        failures.is_empty(),
        "{} of 300 failed or hung: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        silent.connections() >= 20,
        "round robin did send attempts to the silent backend ({})",
        silent.connections()
    );
    assert_eq!(good.sessions_completed(), 300);
}

/// Greeting failures count for passive ejection like refused connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_backend_is_ejected() {
    let good = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let silent = FakeServer::start(FakeKind::Smtp, Behaviour::Hang).await;
    let mut cfg = vip(
        "smtp",
        MailProtocol::Smtp,
        &[("good", good.addr()), ("silent", silent.addr())],
    );
    cfg.greeting_timeout = Duration::from_millis(200);
    cfg.ejection.consecutive_failures = 2;
    let (lb, _events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let failures = smtp_sessions(addr(&lb, "smtp"), 20).await;
    assert!(failures.is_empty(), "{failures:?}");
    let silent = lb.backend("smtp", "silent").expect("backend");
    assert_eq!(silent.state_str(), "ejected");
}

/// A backend that greets with a refusal (`421` busy, multi-line or not, or a `554`)
/// gets no clients: each attempt on it moves on to the next backend, and with no
/// good backend at all the client gets the lb's own refusal, never the backend's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_greeting_with_a_refusal_gets_no_clients() {
    let good = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().banner("good"),
    )
    .await;
    let refusing = FakeServer::start(FakeKind::Smtp, Behaviour::BadGreeting).await;
    let busy = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = busy.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = s.write_all(b"421-mx3 busy\r\n421 try later\r\n").await;
                let mut sink = [0u8; 64];
                let _ = tokio::time::timeout(WAIT, s.read(&mut sink)).await;
            });
        }
    });
    let backends = [
        ("good", good.addr()),
        ("refusing", refusing.addr()),
        ("busy", busy_addr),
    ];
    let mut cfg = vip("smtp", MailProtocol::Smtp, &backends);
    cfg.ejection.consecutive_failures = 0;
    let mut only_bad = vip("bad", MailProtocol::Smtp, &backends[1..]);
    only_bad.ejection.consecutive_failures = 0;
    let (lb, _events) = start(&[cfg, only_bad], scripted(Arc::new(AtomicBool::new(true)))).await;
    let failures = smtp_sessions(addr(&lb, "smtp"), 60).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert!(
        refusing.connections() >= 10 && accepted.load(std::sync::atomic::Ordering::SeqCst) >= 10
    );
    assert_eq!(good.sessions_completed(), 60);
    let mut c = Client::connect(addr(&lb, "bad")).await;
    let line = c.line().await;
    assert!(
        line.starts_with("421 4.3.2 Service not available"),
        "{line:?}"
    );
}

/// With PROXY headers to the backends the header still goes first, then the greeting
/// is read; the client sees the backend's greeting once, unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_greeting_follows_the_proxy_header_and_reaches_the_client_once() {
    let (fake, cfg) = smtp_expecting_proxy_v2().await;
    let (lb, _events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let greeting = smtp_session(addr(&lb, "smtp"), WAIT)
        .await
        .expect("session");
    assert!(greeting.starts_with("220 "), "{greeting:?}");
    assert!(fake.last_proxy_header().is_some());
}

/// IMAP and POP3 greet in one line: `* BYE` and `-ERR` (or silence) pass the client
/// on to a backend that greets with `* OK` / `+OK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_and_pop3_clients_only_see_good_greetings() {
    for (kind, protocol, good_prefix) in [
        (FakeKind::Imap, MailProtocol::Imap, "* OK"),
        (FakeKind::Pop3, MailProtocol::Pop3, "+OK"),
    ] {
        let refusing = FakeServer::start(kind, Behaviour::BadGreeting).await;
        let silent = FakeServer::start(kind, Behaviour::Hang).await;
        let good = FakeServer::start(kind, Behaviour::Good).await;
        let mut cfg = vip(
            "mail",
            protocol,
            &[
                ("refusing", refusing.addr()),
                ("silent", silent.addr()),
                ("good", good.addr()),
            ],
        );
        cfg.greeting_timeout = Duration::from_millis(200);
        cfg.ejection.consecutive_failures = 0;
        let (lb, _events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
        for i in 0..9 {
            let mut c = Client::connect(addr(&lb, "mail")).await;
            let line = c.line().await;
            assert!(
                line.starts_with(good_prefix),
                "{protocol:?} session {i}: {line:?}"
            );
        }
        assert!(refusing.connections() >= 3 && silent.connections() >= 3);
    }
}

/// The greeting's first line must come within `greeting_timeout`, not the whole of a
/// multi-line greeting: Postfix's postscreen sends `220-` and pauses before the last
/// line, and that backend is alive and welcoming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_multi_line_greeting_that_began_well_is_awaited() {
    let pausing = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let pausing_addr = pausing.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = pausing.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"220-postscreen pause\r\n").await;
                // The pause is the behaviour under test: longer than greeting_timeout.
                tokio::time::sleep(Duration::from_millis(600)).await;
                let _ = s.write_all(b"220 mx ESMTP\r\n").await;
                let mut line = [0u8; 64];
                if matches!(s.read(&mut line).await, Ok(n) if n > 0) {
                    let _ = s.write_all(b"221 bye\r\n").await;
                }
            });
        }
    });
    let mut cfg = vip("smtp", MailProtocol::Smtp, &[("pausing", pausing_addr)]);
    cfg.greeting_timeout = Duration::from_millis(200);
    let (lb, _events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let greeting = smtp_session(addr(&lb, "smtp"), WAIT)
        .await
        .expect("session");
    assert_eq!(greeting, "220 mx ESMTP\r\n");
    let pausing = lb.backend("smtp", "pausing").expect("backend");
    assert!(!pausing.is_ejected() && pausing.in_rotation());
}

/// A reload in two halves: a prepared plan changes nothing that serves (its new
/// listener is bound but not announced); dropping it abandons the reload and frees
/// the reload lock; committing it puts the new VIP in service.
#[tokio::test]
async fn prepared_reload_changes_nothing_until_committed() {
    let mx1 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let a = vip("a", MailProtocol::Smtp, &[("mx1", mx1.addr())]);
    let mut b = vip("b", MailProtocol::Smtp, &[("mx1", mx1.addr())]);
    // Its own port: a reload matches listeners by configured address.
    b.listen = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let (lb, _events) = start(
        std::slice::from_ref(&a),
        scripted(Arc::new(AtomicBool::new(true))),
    )
    .await;

    let plan = lb.prepare(&[a.clone(), b.clone()]).await.expect("prepare");
    assert!(lb.local_addr("b").is_none(), "not serving before commit");
    drop(plan);
    assert!(
        lb.local_addr("b").is_none(),
        "an abandoned plan changes nothing"
    );

    let plan = tokio::time::timeout(WAIT, lb.prepare(&[a, b]))
        .await
        .expect("the dropped plan released the reload lock")
        .expect("prepare");
    lb.commit(plan);
    let addr = lb.local_addr("b").expect("b serves after commit");
    let mut c = Client::connect(addr).await;
    assert!(c.line().await.starts_with("220"));
}

/// L4 connections belong to the lb's supervisor like L7 ones: they outlive
/// `stop_accepting` (the drain), and `shutdown` (the end of the drain) cuts them and
/// returns only once their tasks have ended and their leases are back.
#[tokio::test]
async fn shutdown_cuts_l4_connections_after_the_drain_and_waits_for_them() {
    let echo = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    let cfg = vip("echo", MailProtocol::None, &[("e1", echo.addr())]);
    let (lb, _events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let addr = addr(&lb, "echo");
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"one\n").await.expect("write");
    let mut got = [0u8; 4];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("echo");

    lb.stop_accepting();
    s.write_all(b"two\n").await.expect("write while draining");
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("the established connection still relays while draining");
    assert_eq!(lb.active_connections(), 1);

    lb.shutdown().await;
    assert!(lb.tasks().is_empty(), "{} tasks left", lb.tasks().len());
    assert_eq!(
        lb.active_connections(),
        0,
        "the connection's admission was given back"
    );
    let pool = lb.pool("echo").expect("pool");
    assert_eq!(pool.active(), 0, "lease released");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed, not relaying");
}
