//! Retry rules, passive ejection and gateway errors of the L7 proxy:
//! a connect failure goes to another backend (even a POST: nothing was sent); a GET
//! whose backend fails before any response byte is retried once elsewhere, never
//! twice; a POST whose body was streamed is never retried; consecutive 5xx eject a
//! backend (the L4 outlier policy); a slow backend is a 504 only when
//! `backend_timeout` is set (counted once the request body is in, so a slow upload is
//! not cut), and otherwise a long poll is left alone.

mod http_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use http_support::*;
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A backend that reads each request head (and drains what arrives shortly after),
/// counts it, and closes without answering: "failed before any response byte".
async fn dying_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                s.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.shutdown().await;
            });
        }
    });
    (addr, seen)
}

/// A backend that answers with its name and the length of the body it received.
async fn named_backend(name: &'static str) -> TestBackend {
    backend(move |req| async move {
        let n = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        Response::new(body(format!("{name} {n}")))
    })
    .await
}

#[tokio::test]
async fn connect_failure_goes_to_another_backend_even_for_post() {
    let dead = dead_addr().await;
    let good = named_backend("good").await;
    let cfg = vip_config("http", &[("dead", dead), ("good", good.addr)], "");
    let p = start(&cfg).await;
    for i in 0..4 {
        let req = Request::post("/mapi/emsmdb/")
            .header("host", "a")
            .body(body(vec![b'x'; 1000 + i]))
            .expect("req");
        let got = send(p.addr, req).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.text(), format!("good {}", 1000 + i));
    }
    assert_eq!(good.hits(), 4);
}

#[tokio::test]
async fn get_failing_before_response_is_retried_once() {
    let (dying, seen) = dying_backend().await;
    let good = named_backend("good").await;
    let cfg = vip_config("http", &[("dying", dying), ("good", good.addr)], "");
    let p = start(&cfg).await;
    for _ in 0..6 {
        let got = get(p.addr, "/owa/", &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert_eq!(got.text(), "good 0");
    }
    assert!(
        seen.load(Ordering::SeqCst) > 0,
        "some GETs went to the dying backend first"
    );
    assert_eq!(good.hits(), 6);

    // Two dying backends before a good one: one retry only, then 502.
    let (d1, s1) = dying_backend().await;
    let (d2, s2) = dying_backend().await;
    let cfg = vip_config("http", &[("d1", d1), ("d2", d2)], "");
    let p = start(&cfg).await;
    let got = get(p.addr, "/", &[]).await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        s1.load(Ordering::SeqCst) + s2.load(Ordering::SeqCst),
        2,
        "tried exactly twice"
    );
}

#[tokio::test]
async fn post_with_body_is_never_retried() {
    let (dying, seen) = dying_backend().await;
    let good = named_backend("good").await;
    let cfg = vip_config("http", &[("dying", dying), ("good", good.addr)], "");
    let p = start(&cfg).await;
    let mut bad = 0;
    for _ in 0..6 {
        let req = Request::post("/ews/")
            .header("host", "a")
            .body(body(&b"<soap/>"[..]))
            .expect("req");
        let got = send(p.addr, req).await;
        if got.status == StatusCode::BAD_GATEWAY {
            bad += 1;
        } else {
            assert_eq!(got.text(), "good 7");
        }
    }
    assert!(bad > 0, "some POSTs met the dying backend");
    assert_eq!(bad, seen.load(Ordering::SeqCst), "each 502 was one attempt");
    assert_eq!(
        good.hits(),
        6 - bad,
        "no failed POST was re-sent to the good backend"
    );
}

#[tokio::test]
async fn consecutive_5xx_eject_the_backend() {
    let broken = backend(|_req| async move {
        let mut r = Response::new(body("broken"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let good = named_backend("good").await;
    let cfg = vip_config(
        "http",
        &[("broken", broken.addr), ("good", good.addr)],
        "ejection = { consecutive_failures = 3, base_time = \"30s\", max_percent = 50 }",
    );
    let p = start(&cfg).await;
    let mut five_hundreds = 0;
    for _ in 0..20 {
        let got = get(p.addr, "/", &[]).await;
        if got.status == StatusCode::INTERNAL_SERVER_ERROR {
            five_hundreds += 1;
        }
    }
    assert_eq!(
        five_hundreds, 3,
        "the 500s are relayed until the third ejects"
    );
    assert!(p.pool.get("broken").expect("b").is_ejected());
    assert_eq!(p.pool.get("broken").expect("b").state_str(), "ejected");
    assert_eq!(broken.hits(), 3);
    assert_eq!(good.hits(), 17);
}

// The paused clock jumps over the backends' think time and the upload's pauses;
// the order of the timers is what the test is about.
#[tokio::test(start_paused = true)]
async fn backend_timeout_is_504_and_no_timeout_allows_long_poll() {
    let slow = backend(|_req| async move {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        Response::new(body("late"))
    })
    .await;
    let cfg = vip_config(
        "http",
        &[("slow", slow.addr)],
        "backend_timeout = \"200ms\"",
    );
    let p = start(&cfg).await;
    let got = get(p.addr, "/Microsoft-Server-ActiveSync", &[]).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);

    // No backend_timeout: the long poll is answered whenever the backend answers.
    let cfg = vip_config("http", &[("slow", slow.addr)], "");
    let p = start(&cfg).await;
    let got = get(p.addr, "/Microsoft-Server-ActiveSync", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.text(), "late");
}

/// A chunked request body of `chunks` ten-byte pieces, each sent `gap` after the last.
fn slow_upload(chunks: usize, gap: Duration) -> lb::http::Body {
    let stream = futures::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(gap).await;
        let chunk = Frame::data(Bytes::from_static(b"0123456789"));
        Some((Ok::<_, Infallible>(chunk), i + 1))
    });
    StreamBody::new(stream)
        .map_err(|never| match never {})
        .boxed()
}

// The paused clock jumps over the backends' think time and the upload's pauses;
// the order of the timers is what the test is about.
#[tokio::test(start_paused = true)]
async fn backend_timeout_counts_from_the_end_of_a_slow_upload() {
    // The client takes 1.5s to upload; backend_timeout is 700ms. The backend answers
    // as soon as the body is in, so the request must succeed: an upload over a slow
    // link is not the backend's delay (and its 250ms pauses are within body_timeout).
    let counting = length_backend().await;
    let cfg = vip_config(
        "http",
        &[("counting", counting.addr)],
        "backend_timeout = \"700ms\"\nbody_timeout = \"1s\"",
    );
    let p = start(&cfg).await;
    let req = Request::post("/Microsoft-Server-ActiveSync?Cmd=SendMail")
        .header("host", "webmail.example.test")
        .body(slow_upload(6, Duration::from_millis(250)))
        .expect("request");
    let got = send(p.addr, req).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.text(), "60");

    // Once the body is in, the backend's own delay is bounded as before.
    let sitting = backend(|req: Request<hyper::body::Incoming>| async move {
        let _ = req.into_body().collect().await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        Response::new(body("late"))
    })
    .await;
    let cfg = vip_config(
        "http",
        &[("sitting", sitting.addr)],
        "backend_timeout = \"700ms\"",
    );
    let p = start(&cfg).await;
    let req = Request::post("/upload")
        .header("host", "webmail.example.test")
        .body(slow_upload(2, Duration::from_millis(100)))
        .expect("request");
    let got = send(p.addr, req).await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn only_failed_connects_count_as_connect_failures() {
    // A 5xx or a backend dying mid-request is a backend error, not a failed connect:
    // `portico_lb_connect_failures_total` must mean the same for L7 as for L4.
    let rec = shared::testing::metrics::CountingRecorder::global();
    let dead = dead_addr().await;
    let (dying, _) = dying_backend().await;
    let broken = backend(|_req| async move {
        let mut r = Response::new(body("broken"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
    .await;
    let cfg = vip_config(
        "http",
        &[
            ("cf-dead", dead),
            ("cf-dying", dying),
            ("cf-broken", broken.addr),
        ],
        "",
    );
    let p = start(&cfg).await;
    for _ in 0..3 {
        let got = get(p.addr, "/", &[]).await;
        assert!(got.status.is_server_error(), "{}", got.status);
    }
    let failures = |b: &str| {
        rec.sum(
            "portico_lb_connect_failures_total",
            &[("vip", "web"), ("backend", b)],
        )
    };
    assert!(failures("cf-dead") >= 1, "{:?}", rec.snapshot());
    assert_eq!(failures("cf-dying"), 0, "{:?}", rec.snapshot());
    assert_eq!(failures("cf-broken"), 0, "{:?}", rec.snapshot());
    assert!(broken.hits() >= 1);
}
