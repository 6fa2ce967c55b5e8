//! A backend's 1xx interim responses (103 Early Hints, 102 Processing) reach an
//! HTTP/1.1 client before the final response, while the backend is still thinking
//! (RFC 9110 §15.2); 100 Continue from the backend is not relayed (this hop answers
//! Expect), an HTTP/1.0 client gets no 1xx, and keep-alive requests after one stay in
//! step. The backend is a raw socket so the test holds its final response until the
//! client has seen the 103.

mod http_support;

use std::net::SocketAddr;
use std::time::Duration;

use http_support::*;
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
