//! Connection protection: a slowloris client (a head trickling in, or nothing sent at
//! all) is disconnected after `header_timeout` while normal clients are served
//! meanwhile; a client that stalls mid-upload (HTTP/1.1 or HTTP/2) gets a 408 after
//! `body_timeout`, its backend not blamed; `max_connections` turns further clients
//! away with a 503.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod http_support;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use http_support::*;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_while_normal_clients_are_served() {
    let b = text_backend("ok").await;
    let cfg = vip_config("http", &[("web1", b.addr)], "header_timeout = \"500ms\"");
    let p = start(&cfg).await;

    let addr = p.addr;
    let slow = tokio::spawn(async move {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .expect("write");
        // One header byte every 100 ms, forever; stop when the proxy hangs up.
        let mut buf = [0u8; 512];
        loop {
            if s.write_all(b"X").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(_)) => {} // hyper may say 408 before closing
                Err(_) => {}
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "slowloris never cut"
            );
        }
        started.elapsed()
    });
    let silent = tokio::spawn(async move {
        let started = Instant::now();
        let (_, closed) = raw(addr, b"", Duration::from_secs(5)).await;
        assert!(closed, "a client that sends nothing is cut");
        started.elapsed()
    });

    // Meanwhile normal clients are served.
    let mut served = 0;
    while !slow.is_finished() {
        let got = get(p.addr, "/", &[]).await;
        assert_eq!(got.text(), "ok");
        served += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut_after = slow.await.expect("join");
    assert!(
        cut_after >= Duration::from_millis(400),
        "not before the timeout: {cut_after:?}"
    );
    assert!(
        served >= 5,
        "normal clients were served meanwhile ({served})"
    );
    let silent_after = silent.await.expect("join");
    assert!(silent_after < Duration::from_secs(3), "{silent_after:?}");
}

#[tokio::test]
async fn max_connections_refuses_with_503() {
    let b = text_backend("ok").await;
    let cfg = vip_config("http", &[("web1", b.addr)], "max_connections = 1");
    let p = start(&cfg).await;
    let mut held = h1_conn(p.addr).await;
    let resp = held
        .send_request(
            http::Request::get("/")
                .header("host", "a")
                .body(body(""))
                .expect("req"),
        )
        .await
        .expect("resp");
    assert_eq!(collect(resp).await.text(), "ok");
    assert!(eventually(Duration::from_secs(2), || p.lb.active_connections() == 1).await);

    let (resp, closed) = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 503"), "{resp:?}");
    assert!(closed);

    drop(held);
    assert!(eventually(Duration::from_secs(3), || p.lb.active_connections() == 0).await);
    assert_eq!(get(p.addr, "/", &[]).await.text(), "ok");
}

#[tokio::test]
async fn a_stalled_upload_is_answered_408_after_body_timeout_without_blaming_the_backend() {
    let b = length_backend().await;
    let cfg = vip_config(
        "http",
        &[("web1", b.addr)],
        "body_timeout = \"400ms\"\nejection = { consecutive_failures = 1 }",
    );
    let p = start(&cfg).await;

    // Promises 1000 bytes, sends 10, then goes quiet while keeping the connection.
    let started = Instant::now();
    let mut s = TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: webmail\r\nContent-Length: 1000\r\n\r\n0123456789",
    )
    .await
    .expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    while !reply.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => reply.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer to a stalled upload within 10s"),
        }
    }
    let took = started.elapsed();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        took >= Duration::from_millis(350),
        "not before body_timeout: {took:?}"
    );

    // The client stalled, not the backend: it stays in rotation (one failure would
    // eject it here) and serves the next upload.
    let web1 = p.pool.get("web1").expect("backend");
    assert!(
        !web1.is_ejected(),
        "a stalled client does not eject its backend"
    );
    let req = http::Request::post("/upload")
        .header("host", "webmail")
        .body(body("x".repeat(100)))
        .expect("request");
    let got = send(p.addr, req).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "100");
}

#[tokio::test]
async fn a_stalled_http2_upload_gets_408_on_its_stream() {
    let b = length_backend().await;
    let cfg = vip_config("http", &[("web1", b.addr)], "body_timeout = \"400ms\"");
    let p = start(&cfg).await;
    let tcp = TcpStream::connect(p.addr).await.expect("connect");
    let mut h2 = h2_conn(tcp).await;
    // One piece, then nothing more, with the stream left open.
    let first = futures::stream::once(async {
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"0123456789")))
    });
    let stalled = StreamBody::new(first.chain(futures::stream::pending()));
    let req = http::Request::post("http://webmail/upload")
        .body(stalled.map_err(|never| match never {}).boxed())
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), h2.send_request(req))
        .await
        .expect("answered within 10s")
        .expect("response");
    assert_eq!(resp.status(), http::StatusCode::REQUEST_TIMEOUT);
}
