//! Byte relay between a client and a backend without per-connection buffers.
//!
//! Each direction waits for its source to become readable and only then moves what
//! is there: dialogue-sized reads through a 16 KiB buffer borrowed from a per-thread
//! pool, bulk (a read that fills the buffer) kernel-side with splice(2) through a
//! pipe pair borrowed from a small per-thread pool ([`super::splice`]), back to the
//! buffer when a splice moves little, and always the buffer where splice is refused
//! (EINVAL/ENOSYS) or no pipe can be had.
//! Either is given back as soon as it is empty again, so an idle connection (thousands
//! of IMAP IDLE sessions) holds no buffer and no pipe, unlike `copy_bidirectional`'s
//! two 8 KiB buffers for the connection's whole life. A FIN from one side is passed on
//! as a write shutdown of the other leg while the opposite direction keeps flowing
//! (SMTP/IMAP clients half-close after their last command). Both directions and the
//! idle watchdog run in the connection's one task, on `&TcpStream`, with no spawns,
//! as one small hand-written poll loop rather than nested async state machines: an
//! idle connection's relay is two [`Dir`]s (a few words each), one `Sleep` and the
//! wakers tokio keeps in the sockets' own registrations.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use metrics::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::splice::{self, PipeLease};
use crate::error::{ProxyError, Side};

/// Size of a relay buffer: one read's worth.
pub(crate) const BUF_SIZE: usize = 16 * 1024;
/// Buffers kept per thread for reuse; more in flight are allocated and freed.
const POOL_KEEP: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A relay buffer borrowed from the per-thread pool; returned on drop.
pub(crate) struct PooledBuf(Option<Box<[u8]>>);

impl PooledBuf {
    /// Takes a buffer from this thread's pool, or allocates one.
    pub(crate) fn take() -> PooledBuf {
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

/// Bytes moved each way by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Relayed {
    /// Client → backend.
    pub to_backend: u64,
    /// Backend → client.
    pub to_client: u64,
}

/// Relays until both directions have seen EOF, either side fails, or nothing has
/// moved for `idle`. Counts bytes into the two counters as they move.
pub(crate) fn relay<'a>(
    client: &'a TcpStream,
    backend: &'a TcpStream,
    idle: Duration,
    to_backend: &'a Counter,
    to_client: &'a Counter,
) -> Relay<'a> {
    let last = Instant::now();
    Relay {
        client,
        backend,
        to_backend,
        to_client,
        up: Dir::new(Side::Client),
        down: Dir::new(Side::Backend),
        idle,
        last,
        sleep: tokio::time::sleep_until(last + idle),
    }
}

pin_project_lite::pin_project! {
    /// The relay's future, written out as a struct rather than an `async fn` around
    /// `poll_fn`: every idle connection holds it for its whole life, and the compiler's
    /// state machine kept the arguments twice and the closure's references beside them
    /// (456 bytes against this one's 352).
    pub(crate) struct Relay<'a> {
        client: &'a TcpStream,
        backend: &'a TcpStream,
        to_backend: &'a Counter,
        to_client: &'a Counter,
        up: Dir,
        down: Dir,
        idle: Duration,
        // When a byte last moved.
        last: Instant,
        #[pin]
        sleep: Sleep,
    }
}

impl Future for Relay<'_> {
    type Output = Result<Relayed, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut moved = false;
        let (client, backend) = (*this.client, *this.backend);
        if let Poll::Ready(Err(e)) = this
            .up
            .poll(cx, client, backend, this.to_backend, &mut moved)
        {
            return Poll::Ready(Err(e));
        }
        if let Poll::Ready(Err(e)) = this
            .down
            .poll(cx, backend, client, this.to_client, &mut moved)
        {
            return Poll::Ready(Err(e));
        }
        if this.up.done && this.down.done {
            return Poll::Ready(Ok(Relayed {
                to_backend: this.up.total,
                to_client: this.down.total,
            }));
        }
        if moved {
            *this.last = Instant::now();
        }
        // The sleep is only pushed back when it fires, not on every byte.
        let idle = *this.idle;
        while this.sleep.as_mut().poll(cx).is_ready() {
            if *this.last + idle <= Instant::now() {
                return Poll::Ready(Err(ProxyError::Idle(idle)));
            }
            this.sleep.as_mut().reset(*this.last + idle);
        }
        Poll::Pending
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Backend,
        Side::Backend => Side::Client,
    }
}

/// A splice that moves less than this goes back to the buffer copy.
const SPLICE_MIN: usize = BUF_SIZE / 4;

/// How many reads one direction does per poll before letting the other direction and
/// the watchdog run (the two share one task).
const ROUNDS: usize = 16;

/// One direction's state: the bytes in flight (a pipe, or a buffer with its unsent
/// range) and the count so far. Both are `None` while the direction is idle.
struct Dir {
    /// Bytes spliced from the source, not yet all written out.
    pipe: Option<PipeLease>,
    /// Bytes read into a buffer: `buf[off..len]` not yet written out. Always older
    /// than what is in `pipe` (filled from the pipe's head by the EINVAL fallback).
    buf: Option<(PooledBuf, usize, usize)>,
    total: u64,
    side: Side,
    splice: bool,
    /// The last read filled a buffer (or a good part of a pipe): bulk data, spliced.
    /// Dialogue-sized reads (SMTP commands, IMAP lines) go through a buffer, where
    /// read+write is cheaper than two splices and a pipe.
    bulk: bool,
    done: bool,
}

impl Dir {
    fn new(side: Side) -> Dir {
        Dir {
            pipe: None,
            buf: None,
            total: 0,
            side,
            splice: splice::enabled(),
            bulk: false,
            done: false,
        }
    }

    /// Moves `from` (the `side` leg) to `to` until one would block. `Ready(Ok)` once
    /// the source ended and the FIN was passed on.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        counter: &Counter,
        moved: &mut bool,
    ) -> Poll<Result<(), ProxyError>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let side = self.side;
        for _ in 0..ROUNDS {
            ready!(self.poll_flush(cx, to, counter, moved))?;
            ready!(from.poll_read_ready(cx)).map_err(read_err(side))?;
            let n = if self.splice && self.bulk {
                match self.fill_pipe(from) {
                    Ok(Some(n)) => n,
                    Ok(None) => self.fill_buf(from)?, // no pipe: copy this once
                    Err(e) => return Poll::Ready(Err(e)),
                }
            } else {
                self.fill_buf(from)?
            };
            match n {
                Fill::Eof => {
                    self.pipe = None;
                    self.buf = None;
                    self.done = true;
                    // Pass the FIN on; the other direction keeps flowing.
                    return match socket2::SockRef::from(to).shutdown(Shutdown::Write) {
                        Ok(()) => Poll::Ready(Ok(())),
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
                        Err(e) => Poll::Ready(Err(write_err(side)(e))),
                    };
                }
                Fill::Moved => *moved = true,
                Fill::Nothing => {}
            }
        }
        // Budget spent with the source still readable: come back after the others.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Splices what `from` has into a pipe taken from the pool. `Ok(None)` when no
    /// pipe can be had; switches this direction to the buffer copy on EINVAL/ENOSYS.
    fn fill_pipe(&mut self, from: &TcpStream) -> Result<Option<Fill>, ProxyError> {
        let side = self.side;
        let mut pipe = match self.pipe.take() {
            Some(p) => p,
            None => match PipeLease::take() {
                Ok(p) => p,
                Err(_) => return Ok(None),
            },
        };
        let src = from.as_raw_fd();
        match from.try_io(Interest::READABLE, || pipe.fill(src)) {
            Ok(0) => Ok(Some(Fill::Eof)),
            Ok(n) => {
                self.bulk = n >= SPLICE_MIN;
                self.pipe = Some(pipe);
                Ok(Some(Fill::Moved))
            }
            // The empty pipe goes back to the pool here.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some(Fill::Nothing)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(Fill::Nothing)),
            Err(e) if splice::is_unsupported(&e) => {
                splice::disable();
                self.splice = false;
                Ok(None)
            }
            Err(e) => Err(read_err(side)(e)),
        }
    }

    /// Reads what `from` has into a buffer taken from the pool.
    fn fill_buf(&mut self, from: &TcpStream) -> Result<Fill, ProxyError> {
        let side = self.side;
        let mut buf = PooledBuf::take();
        match from.try_read(&mut buf) {
            Ok(0) => Ok(Fill::Eof),
            Ok(n) => {
                self.bulk = n == buf.len();
                if !self.bulk {
                    // A short read drained the socket (epoll is edge-triggered): drop
                    // the readiness now, as tokio's own `poll_read` does, instead of
                    // learning it from one more read that fails with EAGAIN, which
                    // would be a third of a dialogue's reads. Readiness from a newer
                    // event is kept (tokio compares event ticks).
                    let _ = from.try_io(Interest::READABLE, || {
                        Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                    });
                }
                self.buf = Some((buf, 0, n));
                Ok(Fill::Moved)
            }
            // The buffer goes back to the pool here.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::Nothing),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Fill::Nothing),
            Err(e) => Err(read_err(side)(e)),
        }
    }

    /// Writes out everything in flight, oldest first, then gives the buffer and the
    /// pipe back. `Pending` (with `to`'s write readiness registered) when `to` is full:
    /// the bytes stay where they are, in order, until it drains.
    fn poll_flush(
        &mut self,
        cx: &mut Context<'_>,
        to: &TcpStream,
        counter: &Counter,
        moved: &mut bool,
    ) -> Poll<Result<(), ProxyError>> {
        let dst = to.as_raw_fd();
        let side = self.side;
        loop {
            if let Some((buf, off, len)) = &mut self.buf {
                if off < len {
                    match to.try_write(&buf[*off..*len]) {
                        Ok(k) => {
                            *off += k;
                            self.total += k as u64;
                            counter.increment(k as u64);
                            *moved = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            ready!(to.poll_write_ready(cx)).map_err(write_err(side))?;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Poll::Ready(Err(write_err(side)(e))),
                    }
                    continue;
                }
                self.buf = None;
            }
            let Some(pipe) = &mut self.pipe else {
                return Poll::Ready(Ok(()));
            };
            if pipe.pending() == 0 {
                self.pipe = None; // back to the pool
                return Poll::Ready(Ok(()));
            }
            if !self.splice {
                // splice out of the pipe was refused: read its head into a buffer.
                let mut buf = PooledBuf::take();
                let n = pipe.read_out(&mut buf).map_err(read_err(side))?;
                if n == 0 {
                    self.pipe = None;
                    return Poll::Ready(Ok(()));
                }
                self.buf = Some((buf, 0, n));
                continue;
            }
            match to.try_io(Interest::WRITABLE, || pipe.drain(dst)) {
                Ok(k) => {
                    self.total += k as u64;
                    counter.increment(k as u64);
                    *moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(to.poll_write_ready(cx)).map_err(write_err(side))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if splice::is_unsupported(&e) => {
                    splice::disable();
                    self.splice = false;
                }
                Err(e) => return Poll::Ready(Err(write_err(side)(e))),
            }
        }
    }
}

/// What one read from the source did.
enum Fill {
    /// End of stream.
    Eof,
    /// Bytes are in flight.
    Moved,
    /// Nothing to read after all (readiness cleared).
    Nothing,
}

/// A read from the `side` leg failed.
fn read_err(side: Side) -> impl Fn(io::Error) -> ProxyError {
    move |source| ProxyError::Read { side, source }
}

/// A write to the leg opposite `side` failed.
fn write_err(side: Side) -> impl Fn(io::Error) -> ProxyError {
    move |source| ProxyError::Write {
        side: other(side),
        source,
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
