//! The plain-HTTP proxy: requests reach backends and answers come back, forwarding
//! headers are appended to incoming chains, hop-by-hop headers are stripped, keep-alive
//! connections to backends are reused, nothing in rotation is a 503 with
//! `Retry-After`, and a malformed request is a 400 that leaves the proxy serving.

mod http_support;

use std::time::Duration;

use http::Request;
use http_support::*;
use lb::AdminState;

#[tokio::test]
async fn proxies_and_reuses_backend_connections() {
    let b = text_backend("hello from web1").await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let p = start(&cfg).await;
    for _ in 0..5 {
        let got = get(p.addr, "/owa/?x=1", &[]).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), "hello from web1");
    }
    assert_eq!(b.hits(), 5);
    assert!(
        eventually(Duration::from_secs(2), || b.conns() == 1).await,
        "five sequential requests share one pooled backend connection, got {}",
        b.conns()
    );
}

#[tokio::test]
async fn forwarding_headers_appended_to_incoming_chain() {
    let b = header_echo_backend().await;
    let cfg = vip_config("http", &[("web1", b.addr)], "via = true");
    let p = start(&cfg).await;
    let got = get(
        p.addr,
        "/",
        &[
            ("x-forwarded-for", "203.0.113.7, 10.1.2.3"),
            ("forwarded", "for=203.0.113.7;proto=https"),
            ("x-forwarded-proto", "spoofed"),
            ("via", "1.1 edge"),
        ],
    )
    .await;
    let echoed = got.text();
    let line = |name: &str| {
        echoed
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::to_string)
    };
    assert_eq!(
        line("x-forwarded-for").as_deref(),
        Some("203.0.113.7, 10.1.2.3, 127.0.0.1"),
        "{echoed}"
    );
    assert_eq!(
        line("forwarded").as_deref(),
        Some("for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=webmail.example.test")
    );
    assert_eq!(line("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        line("x-forwarded-host").as_deref(),
        Some("webmail.example.test")
    );
    assert_eq!(line("host").as_deref(), Some("webmail.example.test"));
    assert_eq!(line("via").as_deref(), Some("1.1 edge, 1.1 portico"));
}

// Paused clock: the raw read of a kept-alive connection ends at its limit, which
// the clock jumps to once the response is in.
#[tokio::test(start_paused = true)]
async fn hop_by_hop_headers_stripped_both_ways() {
    let b = backend(|req| async move {
        let mut names: Vec<String> = req.headers().keys().map(|k| k.to_string()).collect();
        names.sort();
        http::Response::builder()
            .header("x-backend-private", "secret")
            .header("connection", "x-backend-private")
            .header("keep-alive", "timeout=5")
            .body(body(names.join(",")))
            .expect("response")
    })
    .await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let p = start(&cfg).await;
    // Raw so the client can send exactly these hop-by-hop headers.
    let req = b"GET / HTTP/1.1\r\nHost: webmail\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=9\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nTrailer: x-sum\r\nUpgrade: h2c\r\nX-End: 2\r\n\r\n";
    let (resp, _) = raw(p.addr, req, Duration::from_secs(2)).await;
    let head_end = resp.find("\r\n\r\n").expect("head");
    let (head, rest) = resp.split_at(head_end);
    let names = rest.trim();
    for gone in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "connection",
    ] {
        assert!(
            !names.split(',').any(|n| n == gone),
            "{gone} reached the backend: {names}"
        );
    }
    assert!(names.split(',').any(|n| n == "x-end"), "{names}");
    let head = head.to_ascii_lowercase();
    assert!(!head.contains("x-backend-private"), "{head}");
    assert!(!head.contains("keep-alive: timeout=5"), "{head}");
}

#[tokio::test]
async fn nothing_in_rotation_is_503_with_retry_after() {
    let b = text_backend("x").await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let p = start(&cfg).await;
    p.pool.backends()[0].set_admin(AdminState::Maint, "test");
    let got = get(p.addr, "/", &[]).await;
    assert_eq!(got.status, 503);
    assert!(got.header("retry-after").is_some());
    assert!(got.text().contains("no backend"), "{}", got.text());
    assert_eq!(b.hits(), 0);
}

// Paused clock: the raw read of a kept-alive connection ends at its limit, which
// the clock jumps to once the response is in.
#[tokio::test(start_paused = true)]
async fn malformed_request_is_400_and_proxy_keeps_serving() {
    let b = text_backend("ok").await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let p = start(&cfg).await;
    let (resp, closed) = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp:?}");
    assert!(closed, "connection closed after the 400");
    let (resp, _) = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: 0123456789012345678901234567890123456789\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp:?}");
    let got = get(p.addr, "/", &[]).await;
    assert_eq!(got.text(), "ok");
}

#[tokio::test]
async fn oversized_head_is_rejected() {
    let b = text_backend("ok").await;
    let cfg = vip_config("http", &[("web1", b.addr)], "max_header_size = 8192");
    let p = start(&cfg).await;
    let big = "a".repeat(20_000);
    let req = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {big}\r\n\r\n");
    let (resp, closed) = raw(p.addr, req.as_bytes(), Duration::from_secs(5)).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{:?}", resp.get(..60));
    assert!(closed);
    assert_eq!(b.hits(), 0);
    let ok = send(
        p.addr,
        Request::get("/")
            .header("host", "a")
            .body(body(""))
            .expect("req"),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn accept_proxy_takes_the_client_from_the_proxy_header() {
    let b = header_echo_backend().await;
    let cfg = vip_config("http", &[("web1", b.addr)], "accept_proxy = true");
    let p = start(&cfg).await;
    let request = b"PROXY TCP4 192.0.2.9 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\nHost: webmail\r\nConnection: close\r\n\r\n";
    let (reply, closed) = raw(p.addr, request, Duration::from_secs(5)).await;
    assert!(closed && reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("x-forwarded-for: 192.0.2.9\n"),
        "the header's client is forwarded: {reply}"
    );
    // Without the header the connection is closed unanswered.
    let (reply, closed) = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: webmail\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(closed && reply.is_empty(), "{reply}");
}
