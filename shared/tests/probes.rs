//! Every probe kind against the in-process fakes: passes against a good server, fails
//! with the right operator-facing reason against each bad behaviour.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::config::{ProbeConfig, ProbeKind};
use shared::health::run_once;
use shared::probe::{build, Probe};
use shared::testing::tls::TestPki;
use shared::testing::{Behaviour, FakeKind, FakeOptions, FakeServer};

const TIMEOUT: Duration = Duration::from_secs(5);
const SHORT: Duration = Duration::from_millis(300);

fn probe(cfg: &ProbeConfig, addr: SocketAddr) -> Arc<dyn Probe> {
    build(cfg, addr).expect("probe builds")
}

/// Runs one probe with the health checker's timeout wrapper; returns the reason or "ok".
async fn verdict(cfg: &ProbeConfig, addr: SocketAddr, timeout: Duration) -> String {
    let p = probe(cfg, addr);
    match run_once(p.as_ref(), timeout).await.0 {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    }
}

fn kind_cfg(kind: ProbeKind) -> ProbeConfig {
    ProbeConfig::new(kind)
}

/// Good → ok (and politely ended); Refuse → refused; Hang → timeout.
async fn common_behaviours(kind: ProbeKind) {
    let cfg = kind_cfg(kind);
    let fake = FakeServer::start(FakeKind::for_probe(kind), Behaviour::Good).await;
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        "ok",
        "{kind:?} good"
    );
    if kind != ProbeKind::Tcp {
        assert!(
            fake.wait_until(TIMEOUT, |f| f.sessions_completed() == 1)
                .await,
            "{kind:?}: the fake saw a polite goodbye"
        );
    }
    fake.set_behaviour(Behaviour::Refuse);
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        "connection refused",
        "{kind:?} refuse"
    );
    if kind != ProbeKind::Tcp {
        fake.set_behaviour(Behaviour::Hang);
        assert_eq!(
            verdict(&cfg, fake.addr(), SHORT).await,
            "timeout after 300ms",
            "{kind:?} hang"
        );
    }
    fake.set_behaviour(Behaviour::Good);
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        "ok",
        "{kind:?} back"
    );
}

#[tokio::test]
async fn tcp_probe() {
    common_behaviours(ProbeKind::Tcp).await;
    let fake = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    fake.stop();
    assert_eq!(
        verdict(&kind_cfg(ProbeKind::Tcp), fake.addr(), TIMEOUT).await,
        "connection refused"
    );
}

/// A plain tcp check is half-open: the backend's kernel answers the SYN, the
/// prober resets before sending the handshake's last ACK, so nothing ever reaches
/// the listener's accept queue (on loopback the whole exchange has happened by the
/// time the check returns). A check that completed the handshake left one queued
/// connection per check, for the application to accept, log and close.
#[tokio::test]
async fn a_tcp_check_never_reaches_the_application() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let cfg = kind_cfg(ProbeKind::Tcp);
    for round in 0..20 {
        assert_eq!(verdict(&cfg, addr, TIMEOUT).await, "ok", "check {round}");
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("check {round} left a connection to accept: {other:?}"),
        }
    }
    // The listener itself is fine: a real client still gets through.
    let _client = std::net::TcpStream::connect(addr).expect("client connects");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "client never queued"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

#[tokio::test]
async fn smtp_probe() {
    common_behaviours(ProbeKind::Smtp).await;
    let cfg = kind_cfg(ProbeKind::Smtp);
    let fake = FakeServer::start(FakeKind::Smtp, Behaviour::BadGreeting).await;
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        r#"greeting "554 5.3.2 busy""#
    );
    assert!(
        fake.wait_until(TIMEOUT, |f| f.sessions_completed() == 1)
            .await,
        "QUIT is sent even after a 554 greeting"
    );
    fake.set_behaviour(Behaviour::DieMidSession);
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        "connection closed during EHLO"
    );
}

#[tokio::test]
async fn smtp_starttls_and_implicit_tls() {
    let pki = TestPki::new(&["localhost", "127.0.0.1"]);
    let fake = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().starttls(pki.server_config()),
    )
    .await;
    let mut cfg = kind_cfg(ProbeKind::Smtp);
    cfg.starttls = true;
    cfg.ca = Some(pki.ca_path());
    assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok");
    assert!(
        fake.wait_until(TIMEOUT, |f| f.sessions_completed() == 1)
            .await
    );

    // No STARTTLS offered.
    let plain = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    assert_eq!(
        verdict(&cfg, plain.addr(), TIMEOUT).await,
        "STARTTLS not offered"
    );

    // Implicit TLS (SMTPS).
    let smtps = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().implicit_tls(pki.server_config()),
    )
    .await;
    let mut cfg = kind_cfg(ProbeKind::Smtp);
    cfg.tls = true;
    cfg.ca = Some(pki.ca_path());
    assert_eq!(verdict(&cfg, smtps.addr(), TIMEOUT).await, "ok");
}

#[tokio::test]
async fn send_proxy_passes_where_plain_probes_are_dropped() {
    let fake = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().expect_proxy(),
    )
    .await;
    let mut cfg = kind_cfg(ProbeKind::Smtp);
    assert_eq!(
        verdict(&cfg, fake.addr(), SHORT).await,
        "timeout after 300ms",
        "a plain probe gets no greeting"
    );
    cfg.send_proxy = true;
    assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok");
    let header = fake.last_proxy_header().expect("header recorded");
    assert!(header.is_local(), "{header:?}");
}

/// The refusal in kind and the mid-session death, per protocol.
async fn bad_behaviours(kind: ProbeKind, bad_greeting: &str, died: &str) {
    let cfg = kind_cfg(kind);
    let fake = FakeServer::start(FakeKind::for_probe(kind), Behaviour::BadGreeting).await;
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        bad_greeting,
        "{kind:?}"
    );
    fake.set_behaviour(Behaviour::DieMidSession);
    assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, died, "{kind:?}");
}

#[tokio::test]
async fn imap_probe() {
    common_behaviours(ProbeKind::Imap).await;
    bad_behaviours(
        ProbeKind::Imap,
        r#"greeting "* BYE busy""#,
        "connection closed during CAPABILITY",
    )
    .await;
}

#[tokio::test]
async fn pop3_probe() {
    common_behaviours(ProbeKind::Pop3).await;
    bad_behaviours(
        ProbeKind::Pop3,
        r#"greeting "-ERR busy""#,
        "connection closed during QUIT",
    )
    .await;
}

#[tokio::test]
async fn http_probe() {
    common_behaviours(ProbeKind::Http).await;
    bad_behaviours(
        ProbeKind::Http,
        "http status 503",
        "connection closed during HTTP exchange",
    )
    .await;

    let fake = FakeServer::start_with(
        FakeKind::Http,
        Behaviour::Good,
        FakeOptions::new().banner("web1 healthy"),
    )
    .await;
    let mut cfg = kind_cfg(ProbeKind::Http);
    cfg.path = "/health".into();
    cfg.host = Some("webmail.example.test".into());
    cfg.expect_body = Some("healthy".into());
    assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok");
    let req = fake.last_request().expect("request seen");
    assert_eq!(req.method, http::Method::GET);
    assert_eq!(req.uri.path(), "/health");
    assert_eq!(req.headers["host"], "webmail.example.test");
    assert_eq!(req.headers["user-agent"], "portico-probe");
    assert_eq!(req.headers["connection"], "close");

    cfg.expect_body = Some("sick".into());
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        r#"body does not contain "sick""#
    );
    cfg.expect_body = None;
    fake.set_options(FakeOptions::new().http_status(204));
    assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "http status 204");
    cfg.expect_status = vec![200, 204];
    assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok");
}

#[tokio::test]
async fn https_probe() {
    let pki = TestPki::new(&["webmail.example.test"]);
    let fake = FakeServer::start_with(
        FakeKind::Http,
        Behaviour::Good,
        FakeOptions::new().implicit_tls(pki.server_config()),
    )
    .await;
    let mut cfg = kind_cfg(ProbeKind::Http);
    cfg.tls = true;
    cfg.ca = Some(pki.ca_path());
    cfg.host = Some("webmail.example.test".into());
    assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok");
    // The name checked is the SNI, not the Host header, when both are set.
    cfg.sni = Some("other.example.test".into());
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        r#"tls: certificate not valid for "other.example.test""#
    );
}

#[tokio::test]
async fn mapi_probe() {
    common_behaviours(ProbeKind::Mapi).await;
    bad_behaviours(
        ProbeKind::Mapi,
        "mapi X-ResponseCode 9",
        "connection closed during HTTP exchange",
    )
    .await;
    let fake = FakeServer::start(FakeKind::Mapi, Behaviour::Good).await;
    assert_eq!(
        verdict(&kind_cfg(ProbeKind::Mapi), fake.addr(), TIMEOUT).await,
        "ok"
    );
    let req = fake.last_request().expect("request seen");
    assert_eq!(req.method, http::Method::POST);
    assert_eq!(req.uri.path(), "/mapi/emsmdb/");
    assert_eq!(req.headers["x-requesttype"], "PING");
    assert_eq!(req.headers["content-type"], "application/mapi-http");
    assert_eq!(req.headers["content-length"], "0");
    let info = req.headers["x-clientinfo"].to_str().unwrap();
    assert!(info.starts_with('{') && info.ends_with("}:1"), "{info}");
    assert!(req.headers["x-requestid"].to_str().unwrap().ends_with(":1"));
    fake.set_options(FakeOptions::new().http_status(401));
    assert_eq!(
        verdict(&kind_cfg(ProbeKind::Mapi), fake.addr(), TIMEOUT).await,
        "http status 401"
    );
}

#[tokio::test]
async fn lb_status_probe() {
    let doc = r#"{"vips":[{"name":"smtp","up":true,"healthy":1,"total":1,"backends":[]},{"name":"imap","up":false,"healthy":0,"total":1,"backends":[]}],"sites":[]}"#;
    let fake = FakeServer::start_with(
        FakeKind::Http,
        Behaviour::Good,
        FakeOptions::new().banner(doc),
    )
    .await;
    let mut cfg = kind_cfg(ProbeKind::LbStatus);
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        "lb status: down: imap"
    );
    cfg.vips = vec!["smtp".into()];
    assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok");
    assert_eq!(fake.last_request().unwrap().uri.path(), "/status");
    cfg.vips = vec!["smtp".into(), "pop3".into()];
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        "lb status: missing: pop3"
    );
    fake.set_options(FakeOptions::new().banner("not json"));
    assert!(verdict(&cfg, fake.addr(), TIMEOUT)
        .await
        .starts_with("protocol: status json:"));
    fake.set_behaviour(Behaviour::Refuse);
    assert_eq!(
        verdict(&cfg, fake.addr(), TIMEOUT).await,
        "connection refused"
    );
}

/// STARTTLS and implicit TLS fakes of `kind` presenting `server` certs.
async fn tls_fakes(kind: FakeKind, server: &TestPki) -> (FakeServer, FakeServer) {
    let starttls = FakeServer::start_with(
        kind,
        Behaviour::Good,
        FakeOptions::new().starttls(server.server_config()),
    )
    .await;
    let implicit = FakeServer::start_with(
        kind,
        Behaviour::Good,
        FakeOptions::new().implicit_tls(server.server_config()),
    )
    .await;
    (starttls, implicit)
}

fn tls_cfg(kind: ProbeKind, starttls: bool, ca: Option<&TestPki>) -> ProbeConfig {
    let mut cfg = kind_cfg(kind);
    cfg.starttls = starttls;
    cfg.tls = !starttls;
    cfg.ca = ca.map(TestPki::ca_path);
    cfg.sni = Some("mail.example.test".into());
    cfg
}

#[tokio::test]
async fn tls_verification_for_smtp_imap_pop3() {
    let good = TestPki::new(&["mail.example.test"]);
    let expired = TestPki::expired(&["mail.example.test"]);
    for kind in [ProbeKind::Smtp, ProbeKind::Imap, ProbeKind::Pop3] {
        let (st, imp) = tls_fakes(FakeKind::for_probe(kind), &good).await;
        for (starttls, fake) in [(true, &st), (false, &imp)] {
            let what = format!("{kind:?} starttls={starttls}");
            let cfg = tls_cfg(kind, starttls, Some(&good));
            assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok", "{what}");
            // A CA that did not sign the server's certificate.
            let cfg = tls_cfg(kind, starttls, Some(&expired));
            assert_eq!(
                verdict(&cfg, fake.addr(), TIMEOUT).await,
                "tls: unknown certificate issuer",
                "{what}"
            );
            // System roots do not know the test CA either.
            let cfg = tls_cfg(kind, starttls, None);
            assert_eq!(
                verdict(&cfg, fake.addr(), TIMEOUT).await,
                "tls: unknown certificate issuer",
                "{what}"
            );
            // Labs: no verification.
            let mut cfg = tls_cfg(kind, starttls, None);
            cfg.tls_verify = false;
            assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok", "{what}");
        }
        assert!(
            st.wait_until(TIMEOUT, |f| f.sessions_completed() == 2)
                .await,
            "{kind:?}: QUIT/LOGOUT over TLS after STARTTLS"
        );

        let (st, imp) = tls_fakes(FakeKind::for_probe(kind), &expired).await;
        for (starttls, fake) in [(true, &st), (false, &imp)] {
            let cfg = tls_cfg(kind, starttls, Some(&expired));
            assert_eq!(
                verdict(&cfg, fake.addr(), TIMEOUT).await,
                "tls: certificate expired",
                "{kind:?} starttls={starttls}"
            );
        }
    }
}

#[tokio::test]
async fn starttls_not_offered() {
    for kind in [ProbeKind::Smtp, ProbeKind::Imap, ProbeKind::Pop3] {
        let fake = FakeServer::start(FakeKind::for_probe(kind), Behaviour::Good).await;
        let mut cfg = tls_cfg(kind, true, None);
        cfg.tls_verify = false;
        assert_eq!(
            verdict(&cfg, fake.addr(), TIMEOUT).await,
            "STARTTLS not offered",
            "{kind:?}"
        );
        assert!(
            fake.wait_until(TIMEOUT, |f| f.sessions_completed() == 1)
                .await,
            "{kind:?}: still says goodbye"
        );
    }
}

#[tokio::test]
async fn send_proxy_for_every_kind() {
    for kind in [
        ProbeKind::Tcp,
        ProbeKind::Smtp,
        ProbeKind::Imap,
        ProbeKind::Pop3,
        ProbeKind::Http,
        ProbeKind::Mapi,
    ] {
        let fake = FakeServer::start_with(
            FakeKind::for_probe(kind),
            Behaviour::Good,
            FakeOptions::new().expect_proxy(),
        )
        .await;
        let mut cfg = kind_cfg(kind);
        cfg.send_proxy = true;
        assert_eq!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok", "{kind:?}");
        assert!(
            fake.wait_until(TIMEOUT, |f| f.last_proxy_header().is_some())
                .await,
            "{kind:?}"
        );
        assert!(fake.last_proxy_header().unwrap().is_local());
        if matches!(kind, ProbeKind::Http | ProbeKind::Mapi) {
            // HTTP clients speak first: the fake drops them at once.
            cfg.send_proxy = false;
            assert_ne!(verdict(&cfg, fake.addr(), TIMEOUT).await, "ok", "{kind:?}");
        }
    }
}

#[tokio::test]
async fn build_rejects_bad_configs() {
    let addr: SocketAddr = "127.0.0.1:25".parse().unwrap();
    let mut cfg = kind_cfg(ProbeKind::Smtp);
    cfg.tls = true;
    cfg.starttls = true;
    assert!(build(&cfg, addr).is_err());
    let mut cfg = kind_cfg(ProbeKind::Http);
    cfg.starttls = true;
    assert!(build(&cfg, addr).is_err());
    let mut cfg = kind_cfg(ProbeKind::Smtp);
    cfg.tls = true;
    cfg.ca = Some("/nonexistent/ca.pem".into());
    let err = build(&cfg, addr).err().expect("bad CA path fails at build");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    let mut cfg = kind_cfg(ProbeKind::Http);
    cfg.path = "no-slash".into();
    assert!(build(&cfg, addr).is_err());
}

#[tokio::test]
async fn killed_backend_cuts_sessions_and_refuses() {
    let fake = FakeServer::start(FakeKind::Echo, Behaviour::Good).await;
    let mut client = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    client.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    client.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    assert_eq!(fake.active_sessions(), 1);
    fake.stop();
    let n = tokio::time::timeout(TIMEOUT, client.read(&mut buf))
        .await
        .expect("session cut");
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(tokio::net::TcpStream::connect(fake.addr()).await.is_err());
    assert!(fake.wait_until(TIMEOUT, |f| f.active_sessions() == 0).await);
    fake.set_behaviour(Behaviour::Good);
    assert!(tokio::net::TcpStream::connect(fake.addr()).await.is_ok());
}

#[tokio::test]
async fn smtp_fake_accepts_a_real_session() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let fake = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().banner("mx7"),
    )
    .await;
    let stream = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert_eq!(line, "220 mx7 ESMTP\r\n");
    w.write_all(b"HELO client\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
        .await
        .unwrap();
    for want in ["250 mx7", "250 2.1.0", "250 2.1.5", "354"] {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        assert!(line.starts_with(want), "{line:?} vs {want}");
    }
    w.write_all(b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("250 2.0.0 Ok: queued"), "{line}");
    line.clear();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("221"), "{line}");
    assert_eq!(fake.messages(), 1);
    assert_eq!(fake.sessions_completed(), 1);
}
