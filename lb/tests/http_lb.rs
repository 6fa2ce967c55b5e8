//! L7 VIPs run by the lb supervisor (`Lb::start`), as the binary runs them: an HTTPS
//! VIP serves through its slot's pool with real `http` probes, its connections count
//! in the lb-wide total used for shutdown draining, a config reload pointing at new
//! certificate files is seen by new handshakes (and a reload that one VIP refuses
//! changes no other VIP's certificates), and draining the only backend turns new
//! requests into 503s.

mod http_support;

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http_support::*;
use hyper_util::rt::TokioIo;
use lb::{AdminState, Lb};
use shared::events::EventLog;
use shared::testing::tls::TestPki;
use tokio::net::TcpStream;

fn cfg_for(backend: std::net::SocketAddr, pki: &TestPki) -> shared::config::VipConfig {
    vip_config(
        "https",
        &[("web1", backend)],
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            pki.cert_path().display(),
            pki.key_path().display()
        ),
    )
}

async fn tls_h1(
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<lb::http::Body>,
    rustls::pki_types::CertificateDer<'static>,
) {
    let config = shared::tls::client_config(false, None, &[b"http/1.1"]).expect("cfg");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let s = tokio_rustls::TlsConnector::from(config)
        .connect(
            shared::tls::server_name("webmail.example.test").expect("n"),
            tcp,
        )
        .await
        .expect("handshake");
    let leaf = s.get_ref().1.peer_certificates().expect("certs")[0]
        .clone()
        .into_owned();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .expect("h1");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, leaf)
}

fn req() -> Request<lb::http::Body> {
    Request::get("/owa/")
        .header("host", "webmail.example.test")
        .body(body(""))
        .expect("req")
}

#[tokio::test]
async fn https_vip_served_by_the_lb_with_reload_and_drain() {
    let b = header_echo_backend().await;
    let old = TestPki::new(&["webmail.example.test"]);
    let new = TestPki::new(&["webmail.example.test"]);
    let cfg = cfg_for(b.addr, &old);
    let lb = Lb::start(std::slice::from_ref(&cfg), Arc::new(EventLog::default()))
        .await
        .expect("lb starts");
    let addr = lb.local_addr("web").expect("bound");

    let (mut c1, leaf) = tls_h1(addr).await;
    assert_eq!(leaf, old.cert);
    let got = collect(c1.send_request(req()).await.expect("resp")).await;
    assert_eq!(got.status, 200);
    assert!(
        got.text().contains("x-forwarded-proto: https"),
        "{}",
        got.text()
    );
    assert_eq!(
        lb.active_connections(),
        1,
        "L7 connections count for draining"
    );

    // Reload with new certificate files: new handshakes see them, c1 keeps working.
    lb.reload(&[cfg_for(b.addr, &new)]).await.expect("reload");
    let (mut c2, leaf) = tls_h1(addr).await;
    assert_eq!(leaf, new.cert);
    assert_eq!(
        collect(c2.send_request(req()).await.expect("resp"))
            .await
            .status,
        200
    );
    c1.ready().await.expect("c1 still open");
    assert_eq!(
        collect(c1.send_request(req()).await.expect("resp"))
            .await
            .status,
        200
    );

    // Draining the only backend: new requests get 503 with Retry-After.
    lb.backend("web", "web1")
        .expect("backend")
        .set_admin(AdminState::Drain, "test");
    c2.ready().await.expect("c2 open");
    let got = collect(c2.send_request(req()).await.expect("resp")).await;
    assert_eq!(got.status, 503);
    assert!(got.header("retry-after").is_some());

    drop((c1, c2));
    lb.stop_accepting();
    assert!(
        lb.wait_idle(Duration::from_secs(5)).await,
        "connections drained"
    );
    lb.shutdown().await;
}

#[tokio::test]
async fn a_reload_one_https_vip_refuses_changes_no_other_vip() {
    let b = text_backend("ok").await;
    let old = TestPki::new(&["webmail.example.test"]);
    let new = TestPki::new(&["webmail.example.test"]);
    // Two HTTPS VIPs; `web` comes first, so it is planned before `web2` fails.
    let second = |pki: &TestPki| {
        let mut c = cfg_for(b.addr, pki);
        c.name = "web2".into();
        c.listen = "127.0.0.2:0".parse().expect("addr");
        c
    };
    let lb = Lb::start(
        &[cfg_for(b.addr, &old), second(&old)],
        Arc::new(EventLog::default()),
    )
    .await
    .expect("lb starts");
    let addr = lb.local_addr("web").expect("bound");

    let mut broken = second(&new);
    if let Some(tls) = broken.tls.as_mut() {
        tls.certs[0].key = new.dir().join("no-such-key.pem");
    }
    let refused = lb.reload(&[cfg_for(b.addr, &new), broken]).await;
    assert!(refused.is_err(), "a missing key file refuses the reload");
    let (_, leaf) = tls_h1(addr).await;
    assert_eq!(leaf, old.cert, "the refused reload left `web` as it was");

    lb.reload(&[cfg_for(b.addr, &new), second(&new)])
        .await
        .expect("reload");
    let (_, leaf) = tls_h1(addr).await;
    assert_eq!(
        leaf, new.cert,
        "an accepted reload swaps `web`'s certificate"
    );
    lb.shutdown().await;
}

/// A reload that renames an L7 VIP on the same listener keeps the listener and its
/// proxy, found under the new name.
#[tokio::test]
async fn renamed_vip_keeps_its_listener_and_proxy() {
    let b = text_backend("ok").await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let p = start(&cfg).await;
    let mut renamed = cfg.clone();
    renamed.name = "webmail".to_string();
    p.lb.reload(std::slice::from_ref(&renamed))
        .await
        .expect("reload");
    assert_eq!(p.lb.local_addr("webmail"), Some(p.addr));
    let proxy = p.lb.http("webmail").expect("proxy under the new name");
    assert!(Arc::ptr_eq(&proxy, &p.vip), "the same proxy serves");
    assert!(p.lb.http("web").is_none());
    assert_eq!(get(p.addr, "/", &[]).await.text(), "ok");
}

/// A reload swaps an L7 VIP's proxy settings and its pool in one store: a client
/// asking on one keep-alive connection while reloads flip both (backend `a` with
/// `Via`, backend `b` without) never gets an answer from one config's backend with
/// the other config's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_proxy_settings_and_pool_together() {
    let a = text_backend("a").await;
    let b = text_backend("b").await;
    let config = |first: bool| {
        if first {
            vip_config("http", &[("a", a.addr)], "via = true")
        } else {
            vip_config("http", &[("b", b.addr)], "")
        }
    };
    let p = start(&config(true)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asked = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let addr = p.addr;
    let client = tokio::spawn({
        let (stop, asked) = (Arc::clone(&stop), Arc::clone(&asked));
        async move {
            let mut c = h1_conn(addr).await;
            let mut mixed = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let resp = tokio::time::timeout(Duration::from_secs(10), c.send_request(req()))
                    .await
                    .expect("response in time")
                    .expect("response");
                let got = collect(resp).await;
                let via = got.header("via").is_some();
                if (got.text() == "a") != via {
                    mixed.push(format!("{} via={via}", got.text()));
                }
                asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            mixed
        }
    });
    // Reloads go on until the client has asked often (a busy machine may not run it
    // at first), bounded in count.
    let mut reloads = 0u32;
    while reloads < 200 || asked.load(std::sync::atomic::Ordering::Relaxed) < 300 {
        assert!(reloads < 100_000, "the client never got to ask");
        p.lb.reload(&[config(reloads % 2 == 1)])
            .await
            .expect("reload");
        reloads += 1;
        tokio::task::yield_now().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mixed = client.await.expect("client");
    let asked = asked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        mixed.is_empty(),
        "{} of {asked} answers mixed two configs: {:?}",
        mixed.len(),
        &mixed[..mixed.len().min(5)]
    );
}

#[tokio::test]
async fn connections_stopped_before_their_first_request_still_get_it_answered() {
    // Clients that connected a moment before a drain (binary upgrade, reload removal,
    // shutdown) may have their first request in flight; a graceful shutdown at once
    // would find an idle connection and close it, losing the request, and clients
    // retry only on reused connections. Before the fix each of these connections
    // lost its request half the time (which of the stop and the request hyper saw
    // first), so eight of them all answered cannot happen by chance.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CONNS: u64 = 8;
    let b = text_backend("ok").await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let lb = Lb::start(std::slice::from_ref(&cfg), Arc::new(EventLog::default()))
        .await
        .expect("lb starts");
    let addr = lb.local_addr("web").expect("bound");
    let mut conns = Vec::new();
    for _ in 0..CONNS {
        conns.push(TcpStream::connect(addr).await.expect("connect"));
    }
    for _ in 0..500 {
        if lb.active_connections() == CONNS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lb.active_connections(), CONNS, "all accepted");
    lb.stop_accepting();
    for tcp in &mut conns {
        tcp.write_all(b"GET /owa/ HTTP/1.1\r\nHost: webmail.example.test\r\n\r\n")
            .await
            .expect("request");
    }
    for (i, tcp) in conns.iter_mut().enumerate() {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
            .await
            .expect("answered and closed in time")
            .expect("read");
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "connection {i}: {text:?}");
        assert!(text.contains("connection: close"), "connection {i}: {text}");
        assert!(text.ends_with("ok"), "connection {i}: {text}");
    }
    assert!(lb.wait_idle(Duration::from_secs(5)).await, "drained");
    lb.shutdown().await;
}
