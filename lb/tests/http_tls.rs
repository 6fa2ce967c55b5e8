//! HTTPS VIPs: SNI chooses among several certificates (exact and wildcard names, the
//! first pair as default); HTTP/2 and HTTP/1.1 are negotiated by ALPN and both work;
//! `reload_certs` serves renewed certificates to new handshakes while an established
//! connection keeps working; a broken file on reload keeps the old certificates.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod http_support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_support::*;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use shared::testing::tls::TestPki;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

async fn tls_connect(addr: SocketAddr, sni: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let config = shared::tls::client_config(false, None, alpn).expect("client config");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = shared::tls::server_name(sni).expect("name");
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake")
}

fn leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().expect("certs")[0]
        .clone()
        .into_owned()
}

fn https_cfg(backend: SocketAddr, pairs: &[(&Path, &Path)]) -> shared::config::VipConfig {
    let certs = pairs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.display(),
                k.display()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    vip_config(
        "https",
        &[("web1", backend)],
        &format!("tls = {{ certs = [{certs}] }}"),
    )
}

#[tokio::test]
async fn sni_picks_the_matching_certificate() {
    let b = text_backend("ok").await;
    let mail = TestPki::new(&["mail.example.test"]);
    let owa = TestPki::new(&["*.owa.example.test", "owa.example.test"]);
    let cfg = https_cfg(
        b.addr,
        &[
            (&mail.cert_path(), &mail.key_path()),
            (&owa.cert_path(), &owa.key_path()),
        ],
    );
    let p = start(&cfg).await;
    for (sni, want) in [
        ("mail.example.test", &mail.cert),
        ("MAIL.example.test", &mail.cert),
        ("eu.owa.example.test", &owa.cert),
        ("owa.example.test", &owa.cert),
        ("deep.eu.owa.example.test", &mail.cert), // wildcard covers one label: default
        ("unknown.test", &mail.cert),
        ("127.0.0.1", &mail.cert), // IP literal: no SNI sent, default pair
    ] {
        let s = tls_connect(p.addr, sni, &[b"http/1.1"]).await;
        assert_eq!(&leaf(&s), want, "certificate for SNI {sni}");
    }
    // Real verification against the wildcard's CA works end to end.
    let verify =
        shared::tls::client_config(true, Some(&owa.ca_path()), &[b"http/1.1"]).expect("cfg");
    let tcp = TcpStream::connect(p.addr).await.expect("connect");
    let s = tokio_rustls::TlsConnector::from(verify)
        .connect(
            shared::tls::server_name("x.owa.example.test").expect("n"),
            tcp,
        )
        .await
        .expect("verified handshake");
    let mut c = hyper_h1(s).await;
    let resp = c
        .send_request(
            Request::get("/")
                .header("host", "x.owa.example.test")
                .body(body(""))
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(collect(resp).await.text(), "ok");
}

async fn hyper_h1(
    s: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<lb::http::Body> {
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("h1 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

#[tokio::test]
async fn http2_and_http11_both_work_over_tls() {
    let b = header_echo_backend().await;
    let pki = TestPki::new(&["webmail.example.test"]);
    let cfg = https_cfg(b.addr, &[(&pki.cert_path(), &pki.key_path())]);
    let p = start(&cfg).await;

    // HTTP/2 via ALPN h2, several concurrent streams on one connection.
    let s = tls_connect(p.addr, "webmail.example.test", &[b"h2", b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let c = h2_conn(s).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("https://webmail.example.test/mapi/{i}"))
                .body(body(""))
                .expect("req");
            let resp = c.send_request(req).await.expect("h2 response");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            collect(resp).await
        }));
    }
    for t in tasks {
        let got = t.await.expect("join");
        assert_eq!(got.status, 200);
        let text = got.text();
        assert!(text.contains("x-forwarded-proto: https"), "{text}");
        assert!(text.contains("host: webmail.example.test"), "{text}");
    }

    // HTTP/1.1 via ALPN http/1.1.
    let s = tls_connect(p.addr, "webmail.example.test", &[b"http/1.1"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut c = hyper_h1(s).await;
    let resp = c
        .send_request(
            Request::get("/owa/")
                .header("host", "webmail.example.test")
                .body(body(""))
                .expect("req"),
        )
        .await
        .expect("h1 response");
    assert_eq!(resp.version(), http::Version::HTTP_11);
    let got = collect(resp).await;
    assert!(got.text().contains("x-forwarded-proto: https"));
}

#[tokio::test]
async fn reloaded_certificate_seen_by_new_connections_old_one_keeps_working() {
    let b = text_backend("ok").await;
    let old = TestPki::new(&["webmail.example.test"]);
    let new = TestPki::new(&["webmail.example.test"]);
    // The VIP reads its own copy so the test can replace the files in place.
    let dir = old.dir().join("served");
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &old.cert_pem).expect("write");
    std::fs::write(&key, &old.key_pem).expect("write");
    let cfg = https_cfg(b.addr, &[(&cert, &key)]);
    let p = start(&cfg).await;

    let s1 = tls_connect(p.addr, "webmail.example.test", &[b"http/1.1"]).await;
    assert_eq!(leaf(&s1), old.cert);
    let mut c1 = hyper_h1(s1).await;
    let req = || {
        Request::get("/")
            .header("host", "webmail.example.test")
            .body(body(""))
            .expect("req")
    };
    assert_eq!(
        collect(c1.send_request(req()).await.expect("resp"))
            .await
            .text(),
        "ok"
    );

    std::fs::write(&cert, &new.cert_pem).expect("write");
    std::fs::write(&key, &new.key_pem).expect("write");
    p.lb.reload_certs(&cfg.name).expect("reload");

    let s2 = tls_connect(p.addr, "webmail.example.test", &[b"http/1.1"]).await;
    assert_eq!(
        leaf(&s2),
        new.cert,
        "a new handshake sees the new certificate"
    );
    let mut c2 = hyper_h1(s2).await;
    assert_eq!(
        collect(c2.send_request(req()).await.expect("resp"))
            .await
            .text(),
        "ok"
    );
    // The connection opened before the reload still works.
    assert_eq!(
        collect(c1.send_request(req()).await.expect("resp"))
            .await
            .text(),
        "ok"
    );

    // A broken key on reload is refused and the current certificate stays.
    std::fs::write(&key, "not a key").expect("write");
    assert!(p.lb.reload_certs(&cfg.name).is_err());
    let s3 = tls_connect(p.addr, "webmail.example.test", &[b"http/1.1"]).await;
    assert_eq!(leaf(&s3), new.cert);
}

#[tokio::test]
async fn stalled_tls_handshake_is_cut_after_header_timeout() {
    let b = text_backend("ok").await;
    let pki = TestPki::new(&["webmail.example.test"]);
    let mut cfg = https_cfg(b.addr, &[(&pki.cert_path(), &pki.key_path())]);
    cfg.http.header_timeout = Duration::from_millis(300);
    let p = start(&cfg).await;
    let (_, closed) = raw(p.addr, b"\x16\x03\x01", Duration::from_secs(3)).await;
    assert!(closed, "a half-sent ClientHello is dropped");
}

#[tokio::test]
async fn h2_client_that_never_sends_its_preface_is_cut() {
    // TLS completes with ALPN h2, then silence: hyper's HTTP/1 header timer does not
    // apply, so the proxy's own first-request bound must close it.
    let b = text_backend("ok").await;
    let pki = TestPki::new(&["webmail.example.test"]);
    let mut cfg = https_cfg(b.addr, &[(&pki.cert_path(), &pki.key_path())]);
    cfg.http.header_timeout = Duration::from_millis(300);
    let p = start(&cfg).await;
    let mut s = tls_connect(p.addr, "webmail.example.test", &[b"h2"]).await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            // The server's SETTINGS may arrive before the close.
            Ok(Ok(n)) if n > 0 => continue,
            Ok(_) => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "a silent h2 client is dropped");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// Clients resume their TLS sessions across a reload, one that changes the TLS 1.2
/// cipher list too: the new TLS configuration keeps the ticket keys and the session
/// cache of the one it replaces, so a reload costs no full handshakes.
#[tokio::test]
async fn sessions_resume_across_a_reload_that_changes_the_ciphers() {
    use rustls::HandshakeKind;
    let b = text_backend("ok").await;
    let pki = TestPki::new(&["webmail.example.test"]);
    let cfg = https_cfg(b.addr, &[(&pki.cert_path(), &pki.key_path())]);
    let p = start(&cfg).await;
    let client = shared::tls::client_config(false, None, &[b"http/1.1"]).expect("client config");
    // One request per connection: a TLS 1.3 client stores the server's tickets as it
    // reads the response.
    let handshake = || async {
        let tcp = TcpStream::connect(p.addr).await.expect("connect");
        let name = shared::tls::server_name("webmail.example.test").expect("name");
        let s = tokio_rustls::TlsConnector::from(Arc::clone(&client))
            .connect(name, tcp)
            .await
            .expect("handshake");
        let kind = s.get_ref().1.handshake_kind();
        let mut c = hyper_h1(s).await;
        let req = Request::get("/")
            .header("host", "webmail.example.test")
            .body(body(""))
            .expect("req");
        assert_eq!(
            collect(c.send_request(req).await.expect("resp"))
                .await
                .text(),
            "ok"
        );
        kind
    };
    assert_eq!(handshake().await, Some(HandshakeKind::Full));
    assert_eq!(
        handshake().await,
        Some(HandshakeKind::Resumed),
        "the client resumes at all"
    );
    let mut reloaded = cfg.clone();
    reloaded.http.tls12_ciphers = Some(vec!["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384".into()]);
    p.lb.reload(std::slice::from_ref(&reloaded))
        .await
        .expect("reload");
    assert_eq!(
        handshake().await,
        Some(HandshakeKind::Resumed),
        "after the reload"
    );
}
