//! Interim (1xx) responses from backends, forwarded to HTTP/1.1 clients (RFC 9110
//! §15.2: a proxy forwards the 1xx responses it did not ask for itself).
//!
//! hyper's client hands each 1xx to a per-request callback (`hyper::ext::
//! on_informational`), but its server (1.12) has no way to send one (the server-side
//! work, hyperium/hyper#3815 and #4114, is open and unreleased): a service returns
//! exactly one response. So the bytes of a 1xx are written on the client
//! connection underneath hyper, by [`InterimIo`], at a point where hyper's own output
//! is at a message boundary:
//!
//! * a [`Gate`] is open from the moment the handler of request N starts until it
//!   returns its final response; only 1xx of that request are queued, and only while
//!   it is open (a late 1xx after a 504, say, is dropped);
//! * hyper calls the stream's `poll_flush` only once its own write buffer is empty, and
//!   it reads request N's head only after response N-1 was wholly encoded; so a flush
//!   that completes while N's gate is open leaves the stream right after the end of
//!   response N-1 (a boundary), until hyper writes again;
//! * queued bytes go out at such a boundary: in `poll_flush` while the gate is open
//!   (hyper polls it on every turn of its loop, so a 103 leaves while the backend is
//!   still thinking), or ahead of hyper's next write when no write has happened since
//!   the boundary (the final response's head). If hyper writes first (the tail of
//!   response N-1 still draining to a slow client) and the gate has closed, the
//!   queued 1xx are dropped: 1xx are advisory, a misplaced one would corrupt the
//!   stream.
//!
//! 100 Continue is not forwarded (Expect is answered by this hop), nor are 1xx sent to
//! HTTP/1.0 clients (RFC 9110 §15.2), and a backend cannot queue more than
//! [`MAX_QUEUED`] bytes of them per request. HTTP/2 clients get no 1xx: hyper's
//! HTTP/2 server does not expose h2's `SendResponse::send_informational`.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::headers;

/// Most bytes of 1xx responses queued for one request; later ones are dropped (a
/// backend sending 1xx in a loop to a client that does not read costs no memory).
pub const MAX_QUEUED: usize = 16 * 1024;

/// The 1xx state of one HTTP/1.1 client connection, shared by its [`InterimIo`], the
/// handler of the request in flight, and the backend connection's callback.
#[derive(Debug, Default)]
pub struct Interim {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The request whose 1xx are accepted (counts requests on the connection).
    generation: u64,
    /// Whether that request's handler is still waiting for its final response.
    open: bool,
    /// Whole 1xx messages not yet started on the wire.
    queued: Vec<u8>,
    /// hyper's output is at a message boundary: nothing was written since a flush
    /// completed while a gate was open (or since the connection began).
    at_boundary: bool,
    /// The connection task, woken when a 1xx is queued.
    waker: Option<Waker>,
}

impl Default for State {
    fn default() -> Self {
        State {
            generation: 0,
            open: false,
            queued: Vec::new(),
            at_boundary: true,
            waker: None,
        }
    }
}

impl Interim {
    /// The state of a new connection.
    pub fn new() -> Arc<Self> {
        Arc::new(Interim::default())
    }

    /// Opens the gate for the request whose handler is starting; it closes when the
    /// [`Gate`] is dropped (the handler has its final response).
    pub fn open(self: &Arc<Self>) -> Gate {
        let mut s = crate::sync::lock(&self.state);
        s.generation += 1;
        s.open = true;
        s.queued.clear();
        Gate {
            interim: Arc::clone(self),
            generation: s.generation,
        }
    }

    /// Queues the 1xx `status`/`headers` for request `generation`, if its gate is
    /// still open, and wakes the connection to write it.
    fn push(&self, generation: u64, status: StatusCode, hdrs: &http::HeaderMap) {
        if status == StatusCode::CONTINUE || !status.is_informational() {
            return;
        }
        let msg = encode(status, hdrs);
        let waker = {
            let mut s = crate::sync::lock(&self.state);
            if !s.open || s.generation != generation {
                return;
            }
            if s.queued.len() + msg.len() > MAX_QUEUED {
                tracing::debug!(%status, "too many interim responses from the backend; dropped");
                return;
            }
            s.queued.extend_from_slice(&msg);
            s.waker.clone()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The 1xx of one request are accepted while this lives.
#[derive(Debug)]
pub struct Gate {
    interim: Arc<Interim>,
    generation: u64,
}

impl Gate {
    /// Has the 1xx responses to `req` (a request to a backend) queued for the client.
    pub fn attach<B>(&self, req: &mut http::Request<B>) {
        let interim = Arc::clone(&self.interim);
        let generation = self.generation;
        hyper::ext::on_informational(req, move |res| {
            interim.push(generation, res.status(), res.headers());
        });
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut s = crate::sync::lock(&self.interim.state);
        if s.generation == self.generation {
            s.open = false;
        }
    }
}

/// The HTTP/1.1 wire form of an interim response, hop-by-hop fields removed.
fn encode(status: StatusCode, hdrs: &http::HeaderMap) -> Vec<u8> {
    let mut hdrs = hdrs.clone();
    headers::strip_hop_by_hop(&mut hdrs, false);
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &hdrs {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A client stream that writes queued 1xx responses between hyper's messages.
pub struct InterimIo<I> {
    inner: I,
    interim: Arc<Interim>,
    /// 1xx bytes taken from the queue at a boundary, and how much of them is written:
    /// once started they are finished before any byte of hyper's.
    writing: Vec<u8>,
    written: usize,
}

impl<I> InterimIo<I> {
    /// Wraps the stream of a connection whose state is `interim`.
    pub fn new(inner: I, interim: Arc<Interim>) -> Self {
        InterimIo {
            inner,
            interim,
            writing: Vec::new(),
            written: 0,
        }
    }
}

impl<I: AsyncWrite + Unpin> InterimIo<I> {
    /// Writes what must precede hyper's next byte: 1xx already started, and queued
    /// ones if this is a boundary (`flushing`: hyper's buffer is empty and the gate
    /// open, or nothing was written since the last boundary). Queued 1xx that can no
    /// longer be placed before their final response are dropped.
    fn poll_interim(&mut self, cx: &mut Context<'_>, flushing: bool) -> Poll<io::Result<()>> {
        if self.written == self.writing.len() {
            let mut s = crate::sync::lock(&self.interim.state);
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            if s.queued.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if s.at_boundary || (flushing && s.open) {
                self.writing.clear();
                std::mem::swap(&mut self.writing, &mut s.queued);
                self.written = 0;
            } else if !s.open {
                s.queued.clear();
                return Poll::Ready(Ok(()));
            } else {
                return Poll::Ready(Ok(()));
            }
        }
        while self.written < self.writing.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.writing[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }

    fn wrote(&self) {
        crate::sync::lock(&self.interim.state).at_boundary = false;
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for InterimIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for InterimIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_interim(cx, false))?;
        self.wrote();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        std::task::ready!(self.poll_interim(cx, false))?;
        self.wrote();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_interim(cx, true))?;
        std::task::ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        let mut s = crate::sync::lock(&self.interim.state);
        s.at_boundary = s.open;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client stream that records what reaches it and can be made to block.
    #[derive(Default)]
    struct Wire {
        out: Vec<u8>,
        blocked: bool,
    }

    impl AsyncWrite for Wire {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.blocked {
                return Poll::Pending;
            }
            self.out.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            if self.blocked {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn hints() -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            "link",
            http::HeaderValue::from_static("</a.css>; rel=preload"),
        );
        h
    }

    const HINT: &[u8] = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n";

    /// Plays hyper: a write of `bytes` (ready or not).
    fn write(io: &mut InterimIo<Wire>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(io).poll_write(&mut cx, bytes)
    }

    fn flush(io: &mut InterimIo<Wire>) -> Poll<io::Result<()>> {
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(io).poll_flush(&mut cx)
    }

    fn push(gate: &Gate, status: StatusCode) {
        gate.interim.push(gate.generation, status, &hints());
    }

    #[test]
    fn a_hint_leaves_at_the_next_flush_or_ahead_of_the_final_head() {
        let interim = Interim::new();
        let mut io = InterimIo::new(Wire::default(), Arc::clone(&interim));
        let gate = interim.open();
        push(&gate, StatusCode::EARLY_HINTS);
        assert!(flush(&mut io).is_ready());
        assert_eq!(io.inner.out, HINT, "sent while the backend thinks");

        push(&gate, StatusCode::CONTINUE);
        push(&gate, StatusCode::OK);
        push(&gate, StatusCode::EARLY_HINTS);
        drop(gate);
        assert!(write(&mut io, b"HTTP/1.1 200 OK\r\n\r\n").is_ready());
        assert_eq!(
            io.inner.out,
            [HINT, HINT, b"HTTP/1.1 200 OK\r\n\r\n"].concat(),
            "100 and non-1xx are not relayed; the queued 103 goes before the head"
        );
    }

    #[test]
    fn a_hint_that_cannot_precede_its_final_response_is_dropped() {
        let interim = Interim::new();
        let mut io = InterimIo::new(Wire::default(), Arc::clone(&interim));
        // Response 1 is still draining to a slow client when request 2 starts.
        let first = interim.open();
        drop(first);
        io.inner.blocked = true;
        assert!(write(&mut io, b"tail-of-1").is_pending());
        let second = interim.open();
        push(&second, StatusCode::EARLY_HINTS);
        // hyper has response 2's head behind the tail of 1 in its buffer.
        drop(second);
        io.inner.blocked = false;
        assert!(write(&mut io, b"tail-of-1|head-of-2").is_ready());
        assert!(flush(&mut io).is_ready());
        assert_eq!(io.inner.out, b"tail-of-1|head-of-2");

        // A 1xx arriving after its request has its final response is dropped too.
        let third = interim.open();
        let late = Gate {
            interim: Arc::clone(&interim),
            generation: third.generation,
        };
        drop(third);
        push(&late, StatusCode::EARLY_HINTS);
        drop(late);
        assert!(flush(&mut io).is_ready());
        assert_eq!(io.inner.out, b"tail-of-1|head-of-2");
    }

    #[test]
    fn a_hint_started_on_a_blocked_stream_is_finished_before_hyper_writes() {
        let interim = Interim::new();
        let mut io = InterimIo::new(Wire::default(), Arc::clone(&interim));
        let gate = interim.open();
        push(&gate, StatusCode::EARLY_HINTS);
        io.inner.blocked = true;
        assert!(flush(&mut io).is_pending());
        drop(gate);
        io.inner.blocked = false;
        assert!(write(&mut io, b"head").is_ready());
        assert_eq!(io.inner.out, [HINT, b"head"].concat());
    }

    #[test]
    fn a_backend_cannot_queue_without_bound() {
        let interim = Interim::new();
        let gate = interim.open();
        for _ in 0..10_000 {
            push(&gate, StatusCode::EARLY_HINTS);
        }
        let queued = crate::sync::lock(&interim.state).queued.len();
        assert!(queued <= MAX_QUEUED && queued > MAX_QUEUED - HINT.len());
    }
}
