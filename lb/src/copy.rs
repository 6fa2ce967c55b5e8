//! Byte relay between a client and a backend without per-connection buffers.
//!
//! Each direction waits for its source to become readable and only then moves what
//! is there: kernel-side with splice(2) through a pipe pair borrowed from a small
//! per-thread pool ([`crate::splice`]), or, where splice is refused (EINVAL/ENOSYS)
//! or no pipe can be had, through a 16 KiB buffer borrowed from a per-thread pool.
//! Either is given back as soon as it is empty again, so an idle connection (thousands
//! of IMAP IDLE sessions) holds no buffer and no pipe, unlike `copy_bidirectional`'s
//! two 8 KiB buffers for the connection's whole life. A FIN from one side is passed on
//! as a write shutdown of the other leg while the opposite direction keeps flowing
//! (SMTP/IMAP clients half-close after their last command). Both directions and the
//! idle watchdog run in the connection's one task, on `&TcpStream`, with no spawns.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::os::fd::AsRawFd;

use metrics::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::error::{ProxyError, Side};
use crate::splice::{self, PipeLease};

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

/// How many pipe-fulls one direction moves before letting the other direction and
/// the watchdog run (the two pumps share one task).
const SPLICE_ROUNDS: usize = 16;

/// How a splice round ended.
enum Round {
    /// The source has nothing more for now (readiness cleared); the pipe is empty.
    Drained,
    /// The round's budget is used up; the source may have more.
    Budget,
    /// End of stream from the source; everything before it was written out.
    Eof,
    /// No pipe could be had (descriptor limit): copy through a buffer this time.
    NoPipe,
    /// splice(2) is refused here (EINVAL/ENOSYS): use the buffer copy from now on.
    Unsupported,
}

/// What a buffer-copy round read.
enum Copied {
    /// End of stream.
    Eof,
    /// Moved this many bytes (0: spurious readiness).
    Bytes,
}

/// One direction: `from` (the `side` leg) to `to`.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    side: Side,
    counter: &Counter,
    activity: &Activity,
) -> Result<u64, ProxyError> {
    let mut total = 0u64;
    let mut use_splice = splice::enabled();
    loop {
        from.readable()
            .await
            .map_err(|source| ProxyError::Read { side, source })?;
        if use_splice {
            match splice_round(from, to, side, counter, activity, &mut total).await? {
                Round::Drained => continue,
                Round::Budget => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Round::Eof => break,
                Round::NoPipe => {}
                Round::Unsupported => {
                    splice::disable();
                    use_splice = false;
                }
            }
        }
        match copy_round(from, to, side, counter, activity, &mut total).await? {
            Copied::Bytes => {}
            Copied::Eof => break,
        }
    }
    // Pass the FIN on; the other direction keeps flowing.
    match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
        Err(source) => {
            return Err(ProxyError::Write {
                side: other(side),
                source,
            })
        }
    }
    Ok(total)
}

/// Moves what `from` has to `to` through a pooled pipe, kernel-side, until `from`
/// would block, ends, or the round's budget is spent. Every byte spliced into the
/// pipe is spliced out before the next read, so the pipe is empty whenever this
/// returns `Ok` (and goes back to the pool); on `EAGAIN` from `to` the bytes wait in
/// the pipe while the task waits for writability.
async fn splice_round(
    from: &TcpStream,
    to: &TcpStream,
    side: Side,
    counter: &Counter,
    activity: &Activity,
    total: &mut u64,
) -> Result<Round, ProxyError> {
    let read_err = |source| ProxyError::Read { side, source };
    let write_err = |source| ProxyError::Write {
        side: other(side),
        source,
    };
    let Ok(mut pipe) = PipeLease::take() else {
        return Ok(Round::NoPipe);
    };
    let (src, dst) = (from.as_raw_fd(), to.as_raw_fd());
    for _ in 0..SPLICE_ROUNDS {
        match from.try_io(Interest::READABLE, || pipe.fill(src)) {
            Ok(0) => return Ok(Round::Eof),
            Ok(_) => activity.touch(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Round::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if splice::is_unsupported(&e) => return Ok(Round::Unsupported),
            Err(e) => return Err(read_err(e)),
        }
        while pipe.pending() > 0 {
            match to.try_io(Interest::WRITABLE, || pipe.drain(dst)) {
                Ok(k) => {
                    counter.increment(k as u64);
                    *total += k as u64;
                    activity.touch();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    to.writable().await.map_err(write_err)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if splice::is_unsupported(&e) => {
                    // Bytes are already in the pipe: pass them on through a buffer,
                    // in order, before the caller switches to the buffer copy.
                    let mut buf = PooledBuf::take();
                    while pipe.pending() > 0 {
                        let n = pipe.read_out(&mut buf).map_err(read_err)?;
                        if n == 0 {
                            break;
                        }
                        write_all(to, &buf[..n], activity)
                            .await
                            .map_err(write_err)?;
                        counter.increment(n as u64);
                        *total += n as u64;
                    }
                    return Ok(Round::Unsupported);
                }
                Err(e) => return Err(write_err(e)),
            }
        }
    }
    Ok(Round::Budget)
}

/// Reads once from `from` into a pooled buffer and writes it all to `to`.
async fn copy_round(
    from: &TcpStream,
    to: &TcpStream,
    side: Side,
    counter: &Counter,
    activity: &Activity,
    total: &mut u64,
) -> Result<Copied, ProxyError> {
    let mut buf = PooledBuf::take();
    let n = match from.try_read(&mut buf) {
        Ok(0) => return Ok(Copied::Eof),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Copied::Bytes),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Copied::Bytes),
        Err(source) => return Err(ProxyError::Read { side, source }),
    };
    activity.touch();
    write_all(to, &buf[..n], activity)
        .await
        .map_err(|source| ProxyError::Write {
            side: other(side),
            source,
        })?;
    counter.increment(n as u64);
    *total += n as u64;
    Ok(Copied::Bytes)
}

/// Writes all of `bytes` to `to`, waiting for writability on `EAGAIN`.
async fn write_all(to: &TcpStream, bytes: &[u8], activity: &Activity) -> io::Result<()> {
    let mut off = 0;
    while off < bytes.len() {
        match to.try_write(&bytes[off..]) {
            Ok(k) => {
                off += k;
                activity.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => to.writable().await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
