//! Byte relay between a client and a backend without per-connection buffers.
//!
//! Each direction waits for its source to become readable and only then borrows a
//! 16 KiB buffer from a small per-thread pool, reads what is there, writes it all to
//! the other leg and gives the buffer back. An idle connection (thousands of IMAP
//! IDLE sessions) therefore holds no buffer at all, unlike `copy_bidirectional`'s
//! two 8 KiB buffers for the connection's whole life. A FIN from one side is passed on
//! as a write shutdown of the other leg while the opposite direction keeps flowing
//! (SMTP/IMAP clients half-close after their last command). Both directions and the
//! idle watchdog run in the connection's one task, on `&TcpStream`, with no spawns.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Counter;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{ProxyError, Side};

/// Size of a relay buffer: one read's worth.
pub const BUF_SIZE: usize = 16 * 1024;
/// Buffers kept per thread for reuse; more in flight are allocated and freed.
const POOL_KEEP: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A relay buffer borrowed from the per-thread pool; returned on drop.
pub struct PooledBuf(Option<Box<[u8]>>);

impl PooledBuf {
    /// Takes a buffer from this thread's pool, or allocates one.
    pub fn take() -> PooledBuf {
        let buf = POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        PooledBuf(Some(buf))
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            // try_with: during thread teardown the pool may already be gone.
            let _ = POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_KEEP {
                    p.push(buf);
                }
            });
        }
    }
}

/// Last time any byte moved, as milliseconds since the relay started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Bytes moved each way by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// Client → backend.
    pub to_backend: u64,
    /// Backend → client.
    pub to_client: u64,
}

/// Relays until both directions have seen EOF, either side fails, or nothing has
/// moved for `idle`. Counts bytes into the two counters as they move.
pub async fn relay(
    client: &TcpStream,
    backend: &TcpStream,
    idle: Duration,
    to_backend: &Counter,
    to_client: &Counter,
) -> Result<Relayed, ProxyError> {
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let up = pump(client, backend, Side::Client, to_backend, &activity);
    let down = pump(backend, client, Side::Backend, to_client, &activity);
    let both = async { tokio::try_join!(up, down) };
    let watchdog = async {
        loop {
            let deadline = activity.last() + idle;
            tokio::time::sleep_until(deadline).await;
            if activity.last() + idle <= Instant::now() {
                return ProxyError::Idle(idle);
            }
        }
    };
    tokio::select! {
        r = both => r.map(|(to_backend, to_client)| Relayed { to_backend, to_client }),
        e = watchdog => Err(e),
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Backend,
        Side::Backend => Side::Client,
    }
}

/// One direction: `from` (the `side` leg) to `to`.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    side: Side,
    counter: &Counter,
    activity: &Activity,
) -> Result<u64, ProxyError> {
    let read_err = |source| ProxyError::Read { side, source };
    let write_err = |source| ProxyError::Write {
        side: other(side),
        source,
    };
    let mut total = 0u64;
    loop {
        from.readable().await.map_err(read_err)?;
        let mut buf = PooledBuf::take();
        let n = match from.try_read(&mut buf) {
            Ok(0) => {
                drop(buf);
                // Pass the FIN on; the other direction keeps flowing.
                match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Err(write_err(e)),
                }
                return Ok(total);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        activity.touch();
        let mut off = 0;
        while off < n {
            match to.try_write(&buf[off..n]) {
                Ok(k) => {
                    off += k;
                    activity.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    to.writable().await.map_err(write_err)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(write_err(e)),
            }
        }
        counter.increment(n as u64);
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_buffers() {
        let a = PooledBuf::take();
        let ptr = a.as_ptr();
        assert_eq!(a.len(), BUF_SIZE);
        drop(a);
        let b = PooledBuf::take();
        assert_eq!(b.as_ptr(), ptr, "the returned buffer is handed out again");
    }
}
