//! The L7 edge is strict where peers and attackers probe it: one validated host
//! (HTTP/1.1 Host rules, HTTP/2 `:authority`, absolute-form targets) reaches the
//! backend and the forwarding headers; HTTP/2 cookie crumbs arrive as one line;
//! transfer codings other than a lone `chunked` get 501; CONNECT gets 405; `Upgrade:
//! h2c` is not relayed; trailers reach clients that asked for them; `forwarded_for`
//! and `trusted_proxies` decide whether a client's forwarding chain is kept; the
//! header-count limit holds on HTTP/2 too. Raw sockets are used wherever hyper's
//! client would refuse to send the bad input.

mod http_support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, StreamBody};
use http_support::*;
use hyper::body::Frame;
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(5);

/// The body of a raw HTTP/1.1 exchange (after the blank line).
fn body_of(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn http1_host_must_be_one_valid_header() {
    let b = header_echo_backend().await;
    let p = start(&vip_config("http", &[("web1", b.addr)], "")).await;
    for req in [
        "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.example/evil\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: user@a.example\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a.example:99999999\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\nHost: a b\r\n\r\n",
    ] {
        let (out, closed) = raw(p.addr, req.as_bytes(), LIMIT).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{req:?} got {out:?}");
        assert!(closed, "{req:?}: the connection closes after the 400");
    }
    assert_eq!(b.hits(), 0, "no refused request reached the backend");

    // HTTP/1.0 may omit Host.
    let (out, _) = raw(p.addr, b"GET / HTTP/1.0\r\n\r\n", LIMIT).await;
    assert!(out.starts_with("HTTP/1.0 200 "), "{out}");
    assert!(!body_of(&out).contains("host:"), "{out}");
}

#[tokio::test]
async fn absolute_form_authority_replaces_host_everywhere() {
    let b = header_echo_backend().await;
    let p = start(&vip_config("http", &[("web1", b.addr)], "")).await;
    let (out, _) = raw(
        p.addr,
        b"GET http://real.example:8080/x?y HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    let seen = body_of(&out);
    assert!(seen.contains("host: real.example:8080\n"), "{seen}");
    assert!(!seen.contains("other.example"), "{seen}");
    assert!(
        seen.contains("x-forwarded-host: real.example:8080\n"),
        "{seen}"
    );
    assert!(seen.contains(";host=\"real.example:8080\""), "{seen}");
}

/// An HTTP/2 (prior knowledge) connection to the proxy.
async fn h2(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<lb::http::Body> {
    h2_conn(TcpStream::connect(addr).await.expect("connect")).await
}

async fn h2_send(
    c: &mut hyper::client::conn::http2::SendRequest<lb::http::Body>,
    req: Request<lb::http::Body>,
) -> Got {
    let resp = tokio::time::timeout(LIMIT, c.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    collect(resp).await
}

#[tokio::test]
async fn http2_authority_is_the_host_and_a_differing_host_is_refused() {
    let b = header_echo_backend().await;
    let p = start(&vip_config("http", &[("web1", b.addr)], "")).await;
    let mut c = h2(p.addr).await;

    let req = Request::get("http://mail.example.test/owa/")
        .body(body(""))
        .expect("request");
    let got = h2_send(&mut c, req).await;
    assert_eq!(got.status, 200);
    assert!(
        got.text().lines().any(|l| l == "host: mail.example.test"),
        "{}",
        got.text()
    );

    let req = Request::get("http://mail.example.test/owa/")
        .header("host", "intranet.example.test")
        .body(body(""))
        .expect("request");
    let got = h2_send(&mut c, req).await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(b.hits(), 1, "the request with a differing host never left");

    // The same host in both is fine, and the backend gets it once.
    let req = Request::get("http://mail.example.test/")
        .header("host", "mail.example.test")
        .body(body(""))
        .expect("request");
    let got = h2_send(&mut c, req).await;
    assert_eq!(got.status, 200);
    let text = got.text();
    let hosts: Vec<&str> = text.lines().filter(|l| l.starts_with("host: ")).collect();
    assert_eq!(hosts, ["host: mail.example.test"]);
}

#[tokio::test]
async fn http2_cookie_crumbs_reach_the_backend_as_one_line() {
    let b = header_echo_backend().await;
    let cfg = vip_config(
        "http",
        &[("web1", b.addr)],
        "sticky = { cookie = \"PORTICO\" }",
    );
    let p = start(&cfg).await;
    let mut c = h2(p.addr).await;
    let req = Request::get("http://mail.example.test/")
        .header("cookie", "session=abc")
        .header("cookie", "PORTICO=0000000000000000")
        .header("cookie", "lang=en; theme=dark")
        .body(body(""))
        .expect("request");
    let got = h2_send(&mut c, req).await;
    assert_eq!(got.status, 200);
    let text = got.text();
    let cookies: Vec<&str> = text.lines().filter(|l| l.starts_with("cookie: ")).collect();
    assert_eq!(cookies, ["cookie: session=abc; lang=en; theme=dark"]);
}

#[tokio::test]
async fn transfer_codings_other_than_chunked_get_501() {
    let b = length_backend().await;
    let p = start(&vip_config("http", &[("web1", b.addr)], "")).await;
    for te in ["gzip, chunked", "identity, chunked", "chunked, chunked"] {
        let req = format!(
            "POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let (out, closed) = raw(p.addr, req.as_bytes(), LIMIT).await;
        assert!(out.starts_with("HTTP/1.1 501 "), "{te}: {out}");
        assert!(closed, "{te}");
    }
    assert_eq!(b.hits(), 0);
    let (out, _) = raw(
        p.addr,
        b"POST / HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(body_of(&out), "5");
}

#[tokio::test]
async fn connect_is_refused_and_h2c_is_not_relayed() {
    let b = header_echo_backend().await;
    let p = start(&vip_config("http", &[("web1", b.addr)], "")).await;
    let (out, _) = raw(
        p.addr,
        b"CONNECT mail.example.test:443 HTTP/1.1\r\nHost: mail.example.test:443\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 405 "), "{out}");
    assert!(out.to_ascii_lowercase().contains("\r\nallow: "), "{out}");
    assert_eq!(b.hits(), 0);

    let (out, _) = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    let seen = body_of(&out);
    assert!(!seen.contains("upgrade"), "{seen}");
    assert!(!seen.contains("http2-settings"), "{seen}");
}

#[tokio::test]
async fn trailers_reach_http1_clients_that_accept_them() {
    let b = backend(|_req| async move {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
        let frames = futures::stream::iter([
            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello"))),
            Ok(Frame::trailers(trailers)),
        ]);
        let mut resp = Response::new(StreamBody::new(frames).map_err(|n| match n {}).boxed());
        resp.headers_mut()
            .insert("trailer", HeaderValue::from_static("x-checksum"));
        resp
    })
    .await;
    let p = start(&vip_config("http", &[("web1", b.addr)], "")).await;
    let (out, _) = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nTE: trailers\r\nConnection: TE, close\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(out.contains("\r\nx-checksum: abc123\r\n"), "{out}");

    let (out, _) = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert!(!out.contains("x-checksum"), "{out}");
}

/// The `x-forwarded-for` a header-echo backend saw for a request carrying a forged
/// chain, on a VIP with `extra` options.
async fn forwarded_chain(extra: &str) -> (String, String) {
    let b = header_echo_backend().await;
    let p = start(&vip_config("http", &[("web1", b.addr)], extra)).await;
    let got = get(
        p.addr,
        "/",
        &[("x-forwarded-for", "6.6.6.6"), ("forwarded", "for=6.6.6.6")],
    )
    .await;
    let line = |name: &str| {
        got.text()
            .lines()
            .find_map(|l| l.strip_prefix(name).map(str::to_string))
            .unwrap_or_default()
    };
    (line("x-forwarded-for: "), line("forwarded: "))
}

#[tokio::test]
async fn forwarded_for_replaces_or_appends_by_option_and_trusted_peer() {
    let ours = "for=127.0.0.1;proto=http;host=webmail.example.test";
    assert_eq!(
        forwarded_chain("").await,
        ("6.6.6.6, 127.0.0.1".into(), format!("for=6.6.6.6, {ours}"))
    );
    assert_eq!(
        forwarded_chain("forwarded_for = \"replace\"").await,
        ("127.0.0.1".into(), ours.to_string())
    );
    assert_eq!(
        forwarded_chain("forwarded_for = \"append\"\ntrusted_proxies = [\"10.0.0.0/8\"]").await,
        ("127.0.0.1".into(), ours.to_string()),
        "an untrusted peer's chain is dropped"
    );
    assert_eq!(
        forwarded_chain("forwarded_for = \"append\"\ntrusted_proxies = [\"127.0.0.0/8\"]").await,
        ("6.6.6.6, 127.0.0.1".into(), format!("for=6.6.6.6, {ours}"))
    );
}

#[tokio::test]
async fn header_count_limit_holds_on_both_protocols() {
    let b = text_backend("ok").await;
    let p = start(&vip_config("http", &[("web1", b.addr)], "max_headers = 16")).await;
    let mut head = String::from("GET / HTTP/1.1\r\nHost: a.example\r\n");
    for i in 0..20 {
        head.push_str(&format!("x-h{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let (out, _) = raw(p.addr, head.as_bytes(), LIMIT).await;
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");

    let mut c = h2(p.addr).await;
    let mut req = Request::get("http://a.example/");
    for i in 0..20 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let got = h2_send(&mut c, req.body(body("")).expect("request")).await;
    assert_eq!(got.status, 431);
    let req = Request::get("http://a.example/")
        .header("x-one", "v")
        .body(body(""))
        .expect("request");
    assert_eq!(h2_send(&mut c, req).await.status, 200);
    assert_eq!(b.hits(), 1);
}
