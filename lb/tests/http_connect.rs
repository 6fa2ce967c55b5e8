//! `allow_connect = true` tunnels CONNECT to a backend (an HTTP proxy, an RPC-over-
//! HTTP gateway): the backend gets `CONNECT host:port`, and once it answers 2xx the
//! bytes flow both ways, over HTTP/1.1 and HTTP/2 client connections. A refusal by
//! the backend (407) is relayed as a plain response; a target without a port gets
//! 400; without the option CONNECT stays 405 (lb/tests/http_edge.rs).

mod http_support;

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_support::*;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(5);

/// A CONNECT-speaking backend: a target of `mail.example.test:443` with the matching
/// Host opens a tunnel that echoes in upper case; anything else gets 407.
async fn tunnel_backend() -> TestBackend {
    backend(|mut req| async move {
        let ok = req.method() == Method::CONNECT
            && *req.uri() == "mail.example.test:443"
            && req
                .headers()
                .get("host")
                .is_some_and(|h| h == "mail.example.test:443");
        if !ok {
            let mut r = Response::new(body(format!("{} {}\n", req.method(), req.uri())));
            *r.status_mut() = StatusCode::PROXY_AUTHENTICATION_REQUIRED;
            return r;
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut io = TokioIo::new(up);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                    return;
                }
            }
        });
        Response::new(body(""))
    })
    .await
}

/// Reads from `s` until `out` ends with `until` (bounded by [`LIMIT`]).
async fn read_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, out: &mut Vec<u8>, until: &[u8]) {
    let done = tokio::time::timeout(LIMIT, async {
        let mut buf = [0u8; 1024];
        while !out.ends_with(until) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        done.is_ok() && out.ends_with(until),
        "waited for {:?}, got {:?}",
        String::from_utf8_lossy(until),
        String::from_utf8_lossy(out)
    );
}

#[tokio::test]
async fn connect_is_tunnelled_over_http1_when_allowed() {
    let b = tunnel_backend().await;
    let p = start(&vip_config(
        "http",
        &[("web1", b.addr)],
        "allow_connect = true",
    ))
    .await;
    let mut c = TcpStream::connect(p.addr).await.expect("connect");
    c.write_all(b"CONNECT mail.example.test:443 HTTP/1.1\r\nHost: mail.example.test:443\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    read_until(&mut c, &mut out, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        !head.contains("content-length") && !head.contains("transfer-encoding"),
        "{head}"
    );
    for word in ["ping", "rpc_in_data"] {
        c.write_all(word.as_bytes()).await.expect("write");
        let mut echo = Vec::new();
        read_until(&mut c, &mut echo, word.to_ascii_uppercase().as_bytes()).await;
    }
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn connect_is_tunnelled_over_http2_when_allowed() {
    let b = tunnel_backend().await;
    let p = start(&vip_config(
        "http",
        &[("web1", b.addr)],
        "allow_connect = true",
    ))
    .await;
    let mut h2 = h2_conn(TcpStream::connect(p.addr).await.expect("connect")).await;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("mail.example.test:443")
        .body(body(""))
        .expect("request");
    let resp = h2.send_request(req).await.expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let up = hyper::upgrade::on(resp).await.expect("tunnel");
    let mut io = TokioIo::new(up);
    io.write_all(b"ping").await.expect("write");
    let mut echo = Vec::new();
    read_until(&mut io, &mut echo, b"PING").await;
}

#[tokio::test]
async fn a_backend_refusal_is_relayed_and_a_portless_target_is_refused() {
    let b = tunnel_backend().await;
    let p = start(&vip_config(
        "http",
        &[("web1", b.addr)],
        "allow_connect = true",
    ))
    .await;
    let (out, _) = raw(
        p.addr,
        b"CONNECT other.example.test:25 HTTP/1.1\r\nHost: other.example.test:25\r\nConnection: close\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 407 "), "{out}");
    assert!(out.ends_with("CONNECT other.example.test:25\n"), "{out}");
    assert_eq!(b.hits(), 1);

    let (out, closed) = raw(
        p.addr,
        b"CONNECT mail.example.test HTTP/1.1\r\nHost: mail.example.test\r\n\r\n",
        LIMIT,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    assert!(closed);
    assert_eq!(
        b.hits(),
        1,
        "the portless CONNECT never reached the backend"
    );
}

#[tokio::test]
async fn an_http10_proxy_backend_is_answered_to_the_client_in_http11() {
    // Forward proxies such as tinyproxy answer CONNECT in HTTP/1.0; the version is
    // hop-by-hop, so the client still gets HTTP/1.1 from this hop.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut head = Vec::new();
        read_until(&mut s, &mut head, b"\r\n\r\n").await;
        let _ = s
            .write_all(b"HTTP/1.0 200 Connection established\r\nProxy-agent: test\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let p = start(&vip_config(
        "http",
        &[("proxy1", addr)],
        "allow_connect = true",
    ))
    .await;
    let mut c = TcpStream::connect(p.addr).await.expect("connect");
    c.write_all(b"CONNECT 127.0.0.1:25 HTTP/1.1\r\nHost: 127.0.0.1:25\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    read_until(&mut c, &mut out, b"\r\n\r\n").await;
    let head = String::from_utf8_lossy(&out);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    c.write_all(b"EHLO x\r\n").await.expect("write");
    let mut echo = Vec::new();
    read_until(&mut c, &mut echo, b"EHLO x\r\n").await;
}
