//! `Upgrade: websocket` passes through: the 101 is relayed with `Upgrade` and
//! `Connection: upgrade` intact, then WebSocket frames flow both ways as raw bytes
//! (a hand-rolled masked client frame, unmasked server echo).

mod http_support;

use std::time::Duration;

use http::{Response, StatusCode};
use http_support::*;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one small WebSocket frame; returns (opcode, unmasked payload).
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    let masked = head[1] & 0x80 != 0;
    let len = usize::from(head[1] & 0x7f);
    assert!(len < 126, "test frames are small");
    let mut mask = [0u8; 4];
    if masked {
        s.read_exact(&mut mask).await?;
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok((head[0] & 0x0f, payload))
}

fn client_frame(text: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x81, 0x80 | u8::try_from(text.len()).expect("small")];
    f.extend_from_slice(&mask);
    f.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A backend that switches to WebSocket and echoes text frames.
async fn echo_backend() -> TestBackend {
    backend(|mut req| async move {
        let ok = req
            .headers()
            .get("upgrade")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
            && req
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"upgrade"));
        if !ok {
            let mut r = Response::new(body("expected an upgrade"));
            *r.status_mut() = StatusCode::BAD_REQUEST;
            return r;
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let mut io = TokioIo::new(up);
            while let Ok((op, payload)) = read_frame(&mut io).await {
                if op == 0x8 {
                    return;
                }
                let mut reply = vec![0x81, u8::try_from(payload.len()).unwrap_or(0)];
                reply.extend_from_slice(&payload);
                if io.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(body(""))
            .expect("101")
    })
    .await
}

/// Sends the upgrade request to `addr` and returns the stream and the 101's head
/// (lowercased).
async fn upgraded(addr: std::net::SocketAddr) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /owa/notify HTTP/1.1\r\nHost: webmail\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("101 in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before the 101: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).to_ascii_lowercase())
}

async fn echo(s: &mut TcpStream, msg: &str) {
    s.write_all(&client_frame(msg)).await.expect("send frame");
    let (op, payload) = tokio::time::timeout(Duration::from_secs(5), read_frame(s))
        .await
        .expect("echo in time")
        .expect("frame");
    assert_eq!(op, 1);
    assert_eq!(payload, msg.as_bytes());
}

#[tokio::test]
async fn websocket_upgrade_round_trips_messages() {
    let b = echo_backend().await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let p = start(&cfg).await;

    let (mut s, head) = upgraded(p.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    assert!(head.contains("connection: upgrade"), "{head}");
    assert!(head.contains("sec-websocket-accept"), "{head}");

    for msg in ["hello", "new mail: 3", "bye"] {
        echo(&mut s, msg).await;
    }
    assert_eq!(
        p.pool.active(),
        1,
        "the upgraded connection holds its lease"
    );
    drop(s);
    assert!(
        eventually(Duration::from_secs(5), || p.pool.active() == 0).await,
        "lease released when the tunnel closes"
    );
}

/// The upgrade task belongs to the lb's supervisor: shutdown (the end of the drain
/// period) ends the tunnel like any L7 connection and returns only once every task
/// the lb spawned (listener, checkers, connection, tunnel) has finished.
#[tokio::test]
async fn shutdown_ends_upgraded_connections_and_waits_for_every_task() {
    let b = echo_backend().await;
    let cfg = vip_config("http", &[("web1", b.addr)], "");
    let p = start(&cfg).await;
    let (mut s, head) = upgraded(p.addr).await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo(&mut s, "hello").await;
    assert!(!p.lb.tasks().is_empty());

    p.lb.shutdown().await;
    assert!(
        p.lb.tasks().is_empty(),
        "{} tasks left after shutdown",
        p.lb.tasks().len()
    );
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("tunnel closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the tunnel is closed, not relaying");
    assert_eq!(p.pool.active(), 0, "lease released");
}
