//! Receiving a PROXY protocol header (v1 or v2) on a VIP with `accept_proxy = true`:
//! when Portico sits behind another balancer (a cloud NLB, a front HAProxy) that
//! prepends one, the header's source address is the real client. It then stands in
//! for the socket peer everywhere the client address matters: `source_hash`, the
//! PROXY header sent on to backends (so Dovecot and Postfix still log the real client),
//! `X-Forwarded-For`/`Forwarded`, and the access log. A `LOCAL` header (the upstream's
//! own health check) or v1 `UNKNOWN` keeps the socket addresses.
//!
//! The header is read with `MSG_PEEK` first and then consumed exactly, so no byte of
//! the client's stream that follows it is read here. A connection that does not open
//! with a valid header within the bound is closed (as HAProxy's `accept-proxy` does):
//! a PROXY-expecting listener must never take a client-supplied address from the data.
//! Per-source connection limits apply to the connecting address, which behind such a
//! balancer is the balancer itself.

use std::net::SocketAddr;
use std::time::Duration;

use shared::proxy_protocol::{self, ParseError};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest header accepted: v2 headers with TLVs from cloud balancers stay far below
/// this; anything longer is refused rather than buffered.
const MAX_HEADER: usize = 1024;

/// How long an L4 VIP waits for the header (L7 VIPs use their `header_timeout`): the
/// upstream sends it with its first segment, so this only ends silent connections.
pub(crate) const L4_WAIT: Duration = Duration::from_secs(10);

/// Pause between peeks while a header is still incomplete (it normally arrives in the
/// first segment, so this is the rare path).
const INCOMPLETE_RETRY: Duration = Duration::from_millis(5);

/// Why a connection on an `accept_proxy` VIP was closed before proxying.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptProxyError {
    /// The client closed or the socket failed before a full header arrived.
    #[error("connection ended before a complete PROXY header: {0}")]
    Io(#[from] std::io::Error),
    /// No complete header within the bound.
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    /// The first bytes are not a valid PROXY header.
    #[error("{0}")]
    Invalid(#[from] ParseError),
    /// The header claims to be longer than [`MAX_HEADER`].
    #[error("PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
}

/// The client's `(source, destination)` as the header says, or `None` when the socket
/// addresses stand (`LOCAL`, `UNKNOWN`). Consumes exactly the header's bytes.
pub(crate) async fn read_header(
    tcp: &mut TcpStream,
    limit: Duration,
) -> Result<Option<(SocketAddr, SocketAddr)>, AcceptProxyError> {
    match tokio::time::timeout(limit, read_inner(tcp)).await {
        Ok(r) => r,
        Err(_) => Err(AcceptProxyError::Timeout(limit)),
    }
}

async fn read_inner(
    tcp: &mut TcpStream,
) -> Result<Option<(SocketAddr, SocketAddr)>, AcceptProxyError> {
    let mut buf = [0u8; MAX_HEADER];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        match proxy_protocol::parse(&buf[..n])? {
            Some((header, used)) => {
                tcp.read_exact(&mut buf[..used]).await?;
                return Ok(match header.is_local() {
                    true => None,
                    false => header.addrs,
                });
            }
            None if n == buf.len() => return Err(AcceptProxyError::TooLong),
            None => tokio::time::sleep(INCOMPLETE_RETRY).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = l.accept().await.expect("accept");
        (client, server)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[tokio::test]
    async fn v2_header_is_consumed_exactly_and_the_stream_follows() {
        let (mut client, mut server) = pair().await;
        let mut sent = proxy_protocol::v2(addr("192.0.2.7:40000"), addr("198.51.100.1:993"));
        sent.extend_from_slice(b"a1 LOGIN\r\n");
        client.write_all(&sent).await.expect("write");
        let got = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect("header");
        assert_eq!(
            got,
            Some((addr("192.0.2.7:40000"), addr("198.51.100.1:993")))
        );
        let mut rest = [0u8; 10];
        server.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"a1 LOGIN\r\n");
    }

    #[tokio::test]
    async fn v1_header_split_across_segments_is_awaited() {
        let (mut client, mut server) = pair().await;
        let reader =
            tokio::spawn(async move { read_header(&mut server, Duration::from_secs(5)).await });
        client.write_all(b"PROXY TCP4 192.0.2.9 ").await.expect("w");
        client.flush().await.expect("flush");
        tokio::time::sleep(Duration::from_millis(30)).await;
        client
            .write_all(b"198.51.100.1 5555 25\r\nEHLO x\r\n")
            .await
            .expect("w");
        let got = reader.await.expect("join").expect("header");
        assert_eq!(got, Some((addr("192.0.2.9:5555"), addr("198.51.100.1:25"))));
    }

    #[tokio::test]
    async fn local_header_keeps_the_socket_addresses() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(proxy_protocol::v2_local())
            .await
            .expect("write");
        let got = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect("header");
        assert_eq!(got, None);
    }

    #[tokio::test]
    async fn data_without_a_header_is_refused() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let err = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect_err("no header");
        assert!(matches!(err, AcceptProxyError::Invalid(_)), "{err}");
    }

    #[tokio::test]
    async fn a_tlv_running_past_the_header_is_refused() {
        let (mut client, mut server) = pair().await;
        // A v2 TCP4 header whose length covers 4 bytes after the addresses, where a
        // TLV claims 255: the client's own bytes must not be taken for the rest of it.
        let mut sent = proxy_protocol::v2(addr("192.0.2.7:40000"), addr("198.51.100.1:25"));
        sent[15] = 12 + 4;
        sent.extend_from_slice(&[0x04, 0x00, 0xFF, 0x00]);
        sent.extend_from_slice(b"EHLO x\r\n");
        client.write_all(&sent).await.expect("write");
        let err = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect_err("bad TLV");
        assert!(matches!(err, AcceptProxyError::Invalid(_)), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_cut_after_the_bound() {
        let (_client, mut server) = pair().await;
        let err = read_header(&mut server, Duration::from_secs(3))
            .await
            .expect_err("timeout");
        assert!(matches!(err, AcceptProxyError::Timeout(_)), "{err}");
    }
}
