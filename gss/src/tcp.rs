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
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::respond::answer_message;
use crate::snapshot::Snapshot;

/// A connection that sends no complete query for this long is closed.
pub const IDLE: Duration = Duration::from_secs(10);
/// Open connections at most; further ones are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;

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
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = connection(stream, peer, &snap) => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "gss: tcp connection ended");
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves one connection until the peer closes it, goes idle, or sends garbage
/// (a message shorter than a header closes it; errors never leave this task).
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    snap: &ArcSwap<Snapshot>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    // Sized per message, so idle connections hold no 64 KiB buffer.
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(IDLE, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
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
        stream.write_all(&out).await?;
        if buf.capacity() > 4096 {
            buf = Vec::new();
        }
    }
}
