//! DNS over TCP (RFC 7766): two-byte length-prefixed messages, pipelined queries
//! answered in order, an idle timeout, and a cap on open connections. Every message
//! goes through [`crate::respond::answer_message`], the same path as UDP hand-overs,
//! so TCP answers compress against the question and never answer QR=1 (hickory's
//! `Server` did neither: it encodes the question uncompressed and answers a
//! malformed response with FORMERR).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::respond::answer_message;
use crate::snapshot::Snapshot;

/// A connection that sends no complete query for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);
/// Open connections at most; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Once the server stops (shutdown, or a binary upgrade's successor took the
/// listener), how long a connection still waits for a query already on its way:
/// a client that connected just before must get its answer, not a close.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// Accepts connections until `cancel` fires; each runs on `tracker`.
pub async fn serve(
    listener: TcpListener,
    snap: Arc<ArcSwap<Snapshot>>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "gss: tcp accept failed");
                    // EMFILE and friends: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (snap, cancel) = (snap.clone(), cancel.clone());
        tracker.spawn(async move {
            if let Err(e) = connection(stream, peer, &snap, &cancel).await {
                tracing::debug!(%peer, error = %e, "gss: tcp connection ended");
            }
            drop(permit);
        });
    }
}

/// Serves one connection until the peer closes it, goes idle, or sends garbage
/// (a message shorter than a header closes it; errors never leave this task).
/// Once `stop` fires it answers what arrives within [`STOP_GRACE`], then closes:
/// stopping never cuts a query in flight.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    snap: &ArcSwap<Snapshot>,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    // Sized per message, so idle connections hold no 64 KiB buffer.
    let mut buf = Vec::new();
    loop {
        // Between messages: the length prefix, read with a cancel-safe `read` so a
        // stop can shorten the wait without losing a byte of the framing.
        let mut len = [0u8; 2];
        let mut got = 0;
        let mut stopping = stop.is_cancelled();
        let mut deadline = Instant::now() + if stopping { STOP_GRACE } else { IDLE };
        while got < len.len() {
            tokio::select! {
                r = stream.read(&mut len[got..]) => match r? {
                    0 => return Ok(()),
                    n => got += n,
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    deadline = deadline.min(Instant::now() + STOP_GRACE);
                }
            }
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n < 12 {
            return Ok(());
        }
        buf.resize(n, 0);
        let body = &mut buf[..n];
        match tokio::time::timeout(IDLE, stream.read_exact(body)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        let Some(resp) = answer_message(&snap.load().zone, body, peer, Protocol::Tcp) else {
            continue;
        };
        let Ok(rlen) = u16::try_from(resp.len()) else {
            continue;
        };
        let mut out = Vec::with_capacity(resp.len() + 2);
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&resp);
        // A client that stops reading its answers is closed after IDLE too, or a
        // few of them would hold every connection slot forever.
        match tokio::time::timeout(IDLE, stream.write_all(&out)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        }
        if buf.capacity() > 4096 {
            buf = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::HealthView;
    use std::path::Path;

    const ZONE: &str = r#"
[gss]
listen = "127.0.0.1:5353"
zone = "gslb.example.test"
nameservers = ["ns1.gslb.example.test"]
[[gss.site]]
name = "dc1"
keepalives = [ { kind = "tcp", address = "127.0.0.1:1" } ]
[[gss.name]]
name = "smtp"
sites = ["dc1"]
answers = { dc1 = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"] }
"#;

    /// A query for smtp.gslb.example.test A, framed for TCP.
    fn framed_query(id: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in ["smtp", "gslb", "example", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        framed
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_closed() {
        let cfg = shared::config::parse(ZONE, Path::new("t.toml")).expect("config");
        let zone = crate::zone::render_all_up(&cfg.gss.expect("gss")).expect("zone");
        let snap = ArcSwap::from_pointee(Snapshot::new(zone, HealthView::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        sock.connect(&addr.into()).expect("connect");
        sock.set_nonblocking(true).expect("nonblocking");
        let mut client = TcpStream::from_std(sock.into()).expect("tokio stream");
        let (server, peer) = listener.accept().await.expect("accept");
        // Pipelined queries, never reading an answer: the answers fill the client's
        // receive buffer and then the server's send buffer.
        let writer = tokio::spawn(async move {
            let batch: Vec<u8> = (0..256u16).flat_map(framed_query).collect();
            for _ in 0..2_000 {
                if client.write_all(&batch).await.is_err() {
                    break;
                }
            }
            client
        });
        let served = tokio::time::timeout(
            IDLE * 3,
            connection(server, peer, &snap, &CancellationToken::new()),
        )
        .await;
        assert!(
            served.is_ok(),
            "the connection was still blocked writing to a client that reads nothing"
        );
        writer.abort();
    }

    /// A client that connected just before the server stopped (a binary upgrade's
    /// handover, a shutdown) and sends its query right after still gets the answer;
    /// an idle connection is closed within the grace.
    #[tokio::test]
    async fn a_query_sent_just_after_the_stop_is_still_answered() {
        let cfg = shared::config::parse(ZONE, Path::new("t.toml")).expect("config");
        let zone = crate::zone::render_all_up(&cfg.gss.expect("gss")).expect("zone");
        let snap = Arc::new(ArcSwap::from_pointee(Snapshot::new(
            zone,
            HealthView::default(),
        )));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, tracker) = (CancellationToken::new(), TaskTracker::new());
        let server = tokio::spawn(serve(listener, snap, stop.clone(), tracker.clone()));
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        let accepted = tokio::time::timeout(Duration::from_secs(5), async {
            while tracker.len() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(accepted.is_ok(), "the connections were never accepted");
        stop.cancel();
        server.await.expect("accept loop ends");
        client.write_all(&framed_query(7)).await.expect("query");
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut len))
            .await
            .expect("an answer in time")
            .expect("an answer, not a close");
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        client.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer[..2], &7u16.to_be_bytes());
        // The other connection sent nothing: closed once the grace is over.
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(STOP_GRACE * 3, idle.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
        tracker.close();
        tokio::time::timeout(STOP_GRACE * 3, tracker.wait())
            .await
            .expect("every connection task ends");
    }
}
