//! A backend's 1xx interim responses (103 Early Hints, 102 Processing) reach HTTP/1.1
//! and HTTP/2 clients before the final response, while the backend is still thinking
//! (RFC 9110 §15.2, RFC 9113 §8.1); 100 Continue from the backend is not relayed (this
//! hop answers Expect), hop-by-hop fields are removed, an HTTP/1.0 client gets no 1xx,
//! no more than `MAX_QUEUED` bytes of them are relayed per request, and requests after
//! one stay in step. The backend is a raw socket so the test holds its final response
//! until the client has seen the 103.

mod http_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_support::*;
use lb::http::interim::MAX_QUEUED;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(5);

const HINTS: &[u8] =
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n";
const FINAL: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal";

/// A backend that answers each request head with `HINTS` at once, then `FINAL` when
/// the test sends a permit.
async fn hinting_backend() -> (SocketAddr, mpsc::UnboundedSender<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        let mut rx = rx;
        // One connection at a time: the lb pools one keep-alive connection here.
        while let Ok((mut s, _)) = l.accept().await {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            'conn: loop {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break 'conn,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                head.clear();
                if s.write_all(HINTS).await.is_err() || rx.recv().await.is_none() {
                    break;
                }
                if s.write_all(FINAL).await.is_err() {
                    break;
                }
            }
        }
    });
    (addr, tx)
}

/// Reads from `c` until `out` holds `until` (bounded by [`LIMIT`]).
async fn read_until(c: &mut TcpStream, out: &mut Vec<u8>, until: &[u8]) {
    let done = tokio::time::timeout(LIMIT, async {
        let mut buf = [0u8; 1024];
        while !out.windows(until.len()).any(|w| w == until) {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        done.is_ok() && out.windows(until.len()).any(|w| w == until),
        "waited for {:?}, got {:?}",
        String::from_utf8_lossy(until),
        String::from_utf8_lossy(out)
    );
}

#[tokio::test]
async fn early_hints_reach_http11_clients_before_the_final_response() {
    let (b, release) = hinting_backend().await;
    let p = start(&vip_config("http", &[("web1", b)], "")).await;
    let mut c = TcpStream::connect(p.addr).await.expect("connect");
    for path in ["/first", "/second"] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.example\r\n\r\n");
        c.write_all(req.as_bytes()).await.expect("write");
        // The backend holds its final response: what arrives now was relayed early.
        let mut out = Vec::new();
        read_until(&mut c, &mut out, b"HTTP/1.1 102 Processing\r\n\r\n").await;
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(
            text.starts_with("http/1.1 103 early hints\r\n"),
            "{path}: {text:?}"
        );
        assert!(
            text.contains("\r\nlink: </style.css>; rel=preload\r\n"),
            "{text:?}"
        );
        assert!(!text.contains("100 continue"), "{text:?}");
        assert!(!text.contains("x-hop"), "hop-by-hop fields stay: {text:?}");
        assert!(!text.contains("200 ok"), "{text:?}");

        release.send(()).expect("backend");
        read_until(&mut c, &mut out, b"final").await;
        let text = String::from_utf8_lossy(&out);
        let after = text
            .split_once("102 Processing\r\n\r\n")
            .map_or("", |x| x.1);
        assert!(after.starts_with("HTTP/1.1 200 OK\r\n"), "{path}: {text:?}");
        assert!(after.ends_with("\r\n\r\nfinal"), "{path}: {text:?}");
    }
}

#[tokio::test]
async fn http10_clients_get_no_interim_responses() {
    let (b, release) = hinting_backend().await;
    let p = start(&vip_config("http", &[("web1", b)], "")).await;
    release.send(()).expect("backend");
    let (out, closed) = raw(p.addr, b"GET / HTTP/1.0\r\nHost: a.example\r\n\r\n", LIMIT).await;
    assert!(closed, "{out}");
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out:?}");
    assert!(!out.contains(" 103 ") && !out.contains(" 102 "), "{out:?}");
    assert!(out.ends_with("final"), "{out:?}");
}

/// An HTTP/2 (prior knowledge) connection to the proxy, through the `h2` crate,
/// whose responses show their 1xx.
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

/// `GET path` on `c`.
async fn h2_get(c: &mut h2::client::SendRequest<Bytes>, path: &str) -> h2::client::ResponseFuture {
    let req = http::Request::get(format!("http://a.example{path}"))
        .body(())
        .expect("request");
    let mut c = c.clone().ready().await.expect("h2 ready");
    let (resp, _) = c.send_request(req, true).expect("send");
    resp
}

/// The next 1xx of `resp`, or `None` once the final response is next (bounded by
/// [`LIMIT`]: the backend may be holding its final response).
async fn next_1xx(resp: &mut h2::client::ResponseFuture) -> Option<http::Response<()>> {
    let next = std::future::poll_fn(|cx| resp.poll_informational(cx));
    match tokio::time::timeout(LIMIT, next).await {
        Ok(r) => r.map(|r| r.expect("1xx")),
        Err(_) => panic!("no 1xx and no final response in time"),
    }
}

/// The final response of `resp`: status and body.
async fn h2_final(resp: h2::client::ResponseFuture) -> (http::StatusCode, Vec<u8>) {
    tokio::time::timeout(LIMIT, async {
        let resp = resp.await.expect("response");
        let status = resp.status();
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        (status, out)
    })
    .await
    .expect("final response in time")
}

#[tokio::test]
async fn early_hints_reach_http2_clients_before_the_final_response() {
    let (b, release) = hinting_backend().await;
    let p = start(&vip_config("http", &[("web1", b)], "")).await;
    let mut c = h2_client(p.addr).await;
    for path in ["/first", "/second"] {
        let mut resp = h2_get(&mut c, path).await;
        // The backend holds its final response: what arrives now was relayed early,
        // and the 100 Continue it sent first was not.
        let hint = next_1xx(&mut resp).await.expect("a 103");
        assert_eq!(hint.status(), http::StatusCode::EARLY_HINTS, "{path}");
        let link = hint.headers().get("link").map(|v| v.as_bytes());
        assert_eq!(link, Some(&b"</style.css>; rel=preload"[..]), "{hint:?}");
        assert!(
            !hint.headers().contains_key("connection") && !hint.headers().contains_key("x-hop"),
            "hop-by-hop fields stay: {hint:?}"
        );
        let processing = next_1xx(&mut resp).await.expect("a 102");
        assert_eq!(processing.status(), http::StatusCode::PROCESSING, "{path}");

        release.send(()).expect("backend");
        assert!(next_1xx(&mut resp).await.is_none(), "{path}: nothing else");
        let (status, body) = h2_final(resp).await;
        assert_eq!(status, http::StatusCode::OK, "{path}");
        assert_eq!(body, b"final", "{path}");
    }
}

#[tokio::test]
async fn http2_clients_get_at_most_max_queued_bytes_of_1xx_per_request() {
    // 20 hints of 1036 bytes each (as HTTP/1.1 spells them), then the 200 at once.
    let link = format!("</{}.css>; rel=preload", "a".repeat(980));
    let hint = format!("HTTP/1.1 103 Early Hints\r\nLink: {link}\r\n\r\n");
    assert_eq!(hint.len(), 1036);
    let mut reply = hint.repeat(20).into_bytes();
    reply.extend_from_slice(FINAL);
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let b = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                loop {
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    head.clear();
                    if s.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let p = start(&vip_config("http", &[("web1", b)], "")).await;
    let mut c = h2_client(p.addr).await;
    for path in ["/first", "/second"] {
        let mut resp = h2_get(&mut c, path).await;
        let mut n = 0;
        while let Some(res) = next_1xx(&mut resp).await {
            assert_eq!(res.status(), http::StatusCode::EARLY_HINTS);
            assert_eq!(
                res.headers().get("link").map(|v| v.as_bytes()),
                Some(link.as_bytes())
            );
            n += 1;
        }
        assert_eq!(
            n,
            MAX_QUEUED / hint.len(),
            "{path}: the first ones, up to the cap"
        );
        let (status, body) = h2_final(resp).await;
        assert_eq!(
            (status, &body[..]),
            (http::StatusCode::OK, &b"final"[..]),
            "{path}"
        );
    }
}
