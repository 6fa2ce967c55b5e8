//! A client's fault is never a backend's: a malformed chunked upload (size overflow,
//! `-1`, bare LF, missing CRLF) gets 400, an upload the client abandons gets no
//! answer, and neither raises `portico_http_responses_total{class="5xx"}` nor counts
//! against the backend (passive ejection after one failure would otherwise take it
//! out); each is counted in `portico_http_client_errors_total{reason="body"}`.
//!
//! Every test in this binary uses VIP `web` and none provokes a 5xx, so the 5xx
//! assertions hold whatever order the tests run in.

mod http_support;

use std::time::Duration;

use http_support::*;
use lb::http::{CLIENT_ERRORS_TOTAL, RESPONSES_TOTAL};
use shared::testing::metrics::CountingRecorder;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(5);
/// One failure ejects: a single blamed client fault would show.
const EJECT_AT_ONE: &str = "ejection = { consecutive_failures = 1 }";

fn five_xx() -> u64 {
    CountingRecorder::global().sum(RESPONSES_TOTAL, &[("vip", "web"), ("class", "5xx")])
}

fn body_errors() -> u64 {
    CountingRecorder::global().sum(CLIENT_ERRORS_TOTAL, &[("vip", "web"), ("reason", "body")])
}

#[tokio::test]
async fn malformed_chunked_uploads_get_400_and_blame_nobody() {
    let rec = CountingRecorder::global();
    let b = length_backend().await;
    let cfg = vip_config("http", &[("web1", b.addr)], EJECT_AT_ONE);
    let p = start(&cfg).await;
    let before = body_errors();
    let cases: [&[u8]; 4] = [
        b"5\r\nhello\r\nffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        b"5\r\nhello\r\n-1\r\n\r\n",
        b"5\r\nhello\r\nzz\r\n",
        b"5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n",
    ];
    for chunks in cases {
        let mut req =
            b"POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        req.extend_from_slice(chunks);
        let (out, closed) = raw(p.addr, &req, LIMIT).await;
        let shown = String::from_utf8_lossy(chunks);
        assert!(out.starts_with("HTTP/1.1 400 "), "{shown:?}: {out}");
        assert!(closed, "{shown:?}");
    }
    assert!(
        !p.pool.backends()[0].is_ejected(),
        "a client's broken upload never ejects the backend"
    );
    assert_eq!(five_xx(), 0, "{:?}", rec.snapshot());
    assert!(
        body_errors() >= before + cases.len() as u64,
        "{:?}",
        rec.snapshot()
    );
    // The backend still serves.
    assert_eq!(get(p.addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn abandoned_upload_is_a_client_error_not_a_backend_failure() {
    let rec = CountingRecorder::global();
    let b = length_backend().await;
    let cfg = vip_config("http", &[("web1", b.addr)], EJECT_AT_ONE);
    let p = start(&cfg).await;
    let before = body_errors();
    {
        let mut tcp = TcpStream::connect(p.addr).await.expect("connect");
        tcp.write_all(
            b"POST /upload HTTP/1.1\r\nHost: a.example\r\nContent-Length: 100000\r\n\r\n0123456789",
        )
        .await
        .expect("write");
        // The request must have reached the backend before the client leaves.
        assert!(eventually(LIMIT, || b.hits() == 1).await);
    }
    assert!(
        eventually(LIMIT, || body_errors() > before).await,
        "the abandoned upload is counted as a client error: {:?}",
        rec.snapshot()
    );
    assert!(!p.pool.backends()[0].is_ejected());
    assert_eq!(five_xx(), 0, "{:?}", rec.snapshot());
    assert_eq!(get(p.addr, "/", &[]).await.status, 200);
}
