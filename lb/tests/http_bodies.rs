//! Bodies stream through the proxy with bounded memory: a 100 MiB upload and a
//! 100 MiB download each pass while the test process (client, proxy and backend in
//! one) grows its resident set by far less than the body size. Bodies are generated
//! and consumed chunk by chunk, so any growth is buffering in the proxy path.

mod http_support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use http_support::*;
use hyper::body::Frame;

const SIZE: usize = 100 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;
const MAX_GROWTH: usize = 32 * 1024 * 1024;

/// Resident set size of this process, from /proc/self/statm.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

/// A streamed body of `size` bytes in 64 KiB chunks, generated on demand.
fn generated(size: usize) -> lb::http::Body {
    let chunk = Bytes::from(vec![b'm'; CHUNK]);
    let stream = futures::stream::unfold(0usize, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= size {
                return None;
            }
            let n = CHUNK.min(size - sent);
            Some((Ok::<_, Infallible>(Frame::data(chunk.slice(..n))), sent + n))
        }
    });
    StreamBody::new(stream)
        .map_err(|never| match never {})
        .boxed()
}

/// Reads a body to its end, counting bytes and keeping none.
async fn drain(mut b: hyper::body::Incoming) -> usize {
    let mut n = 0;
    while let Some(frame) = b.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            n += data.len();
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_mib_up_and_down_with_bounded_memory() {
    let b = backend(|req| async move {
        if req.method() == http::Method::POST {
            let n = drain(req.into_body()).await;
            Response::new(body(n.to_string()))
        } else if req.uri().path() == "/warm" {
            Response::new(generated(4 * 1024 * 1024))
        } else {
            Response::new(generated(SIZE))
        }
    })
    .await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let p = start(&cfg).await;

    // Warm up allocator arenas and connection pools on every thread.
    for _ in 0..4 {
        let mut c = h1_conn(p.addr).await;
        let resp = c
            .send_request(
                Request::get("/warm")
                    .header("host", "a")
                    .body(body(""))
                    .expect("req"),
            )
            .await
            .expect("response");
        assert_eq!(drain(resp.into_body()).await, 4 * 1024 * 1024);
    }
    let before = rss();

    // Download.
    let mut c = h1_conn(p.addr).await;
    let resp = c
        .send_request(
            Request::get("/attachment")
                .header("host", "a")
                .body(body(""))
                .expect("req"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), 200);
    let got = tokio::time::timeout(Duration::from_secs(120), drain(resp.into_body()))
        .await
        .expect("download in time");
    assert_eq!(got, SIZE);
    let after_down = rss();

    // Upload, on the same keep-alive connection.
    c.ready().await.expect("connection reusable");
    let resp = c
        .send_request(
            Request::post("/upload")
                .header("host", "a")
                .header("content-length", SIZE.to_string())
                .body(generated(SIZE))
                .expect("req"),
        )
        .await
        .expect("response");
    let got = collect(resp).await;
    assert_eq!(got.text(), SIZE.to_string());
    let after_up = rss();

    let growth = after_down.max(after_up).saturating_sub(before);
    assert!(
        growth < MAX_GROWTH,
        "RSS grew by {} MiB while moving 2 x 100 MiB (before {} MiB, after download {} MiB, after upload {} MiB)",
        growth >> 20,
        before >> 20,
        after_down >> 20,
        after_up >> 20
    );
}
