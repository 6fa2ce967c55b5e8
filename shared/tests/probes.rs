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

fn fake_kind(kind: ProbeKind) -> FakeKind {
    match kind {
        ProbeKind::Smtp => FakeKind::Smtp,
        ProbeKind::Imap => FakeKind::Imap,
        ProbeKind::Pop3 => FakeKind::Pop3,
        ProbeKind::Http | ProbeKind::LbStatus => FakeKind::Http,
        ProbeKind::Mapi => FakeKind::Mapi,
        ProbeKind::Tcp => FakeKind::Echo,
    }
}

/// Good → ok (and politely ended); Refuse → refused; Hang → timeout.
async fn common_behaviours(kind: ProbeKind) {
    let cfg = kind_cfg(kind);
    let fake = FakeServer::start(fake_kind(kind), Behaviour::Good).await;
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
