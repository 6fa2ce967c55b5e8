//! Interim (1xx) responses from backends, forwarded to clients (RFC 9110 §15.2: a
//! proxy forwards the 1xx responses it did not ask for itself). hyper's client hands
//! each 1xx to a per-request callback (`hyper::ext::on_informational`); a [`Gate`],
//! open from the moment the handler of a request starts until it returns its final
//! response, relays them to that request's client, by one policy for both protocols:
//! 100 Continue is not forwarded (`Expect` is answered by this hop), nor is 101 (a
//! final response of its own, and not part of HTTP/2), nor anything to HTTP/1.0
//! clients (RFC 9110 §15.2); hop-by-hop fields are removed; a 1xx arriving once the
//! gate has closed (a late one after a 504, say) is dropped; and a backend cannot
//! make the proxy hold more than [`MAX_QUEUED`] bytes of them per request.
//!
//! HTTP/2: hyper's server (vendored with a patch, `vendor/hyper/PORTICO-PATCH.md`,
//! until hyper releases the same) puts a `hyper::ext::InformationalSender` in each
//! request's extensions, which queues a 1xx for h2's `SendResponse::send_informational`
//! on the request's stream while the final response is pending. Connection-specific
//! fields (`TE` too) are not allowed there, so they are removed. h2 buffers the frames
//! where the proxy cannot see them drain, so the cap counts every byte relayed for the
//! request rather than those still queued (hyper also refuses more than 32 waiting
//! for the stream's task: a burst beyond that loses the rest, as 1xx may).
//!
//! HTTP/1.1: hyper's server has no way to send a 1xx (a service returns exactly one
//! response), so the bytes of a 1xx are written on the client connection underneath
//! hyper, by [`InterimIo`], at a point where hyper's own output is at a message
//! boundary:
//!
//! * only 1xx of the request whose gate is open are queued (a connection's gates
//!   follow one another: [`Interim`] counts them);
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

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, StatusCode, Version};
use hyper::ext::InformationalSender;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::headers;

/// Most bytes of 1xx responses held for one request (HTTP/1.1: queued and not yet
/// written; HTTP/2: relayed in all, as HTTP/1.1 would spell them); later ones are
/// dropped, so a backend sending 1xx in a loop to a client that does not read costs
/// no memory.
pub const MAX_QUEUED: usize = 16 * 1024;

/// Whether a backend's 1xx with `status` is relayed: not 100 Continue (this hop
/// answers `Expect`; the backend never sees one), not 101 (a final response, and
/// not part of HTTP/2), nothing that is not a 1xx.
fn relayed(status: StatusCode) -> bool {
    status.is_informational()
        && status != StatusCode::CONTINUE
        && status != StatusCode::SWITCHING_PROTOCOLS
}

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
    fn open(self: &Arc<Self>) -> Gate {
        let mut s = crate::sync::lock(&self.state);
        s.generation += 1;
        s.open = true;
        s.queued.clear();
        Gate {
            sink: Sink::H1 {
                interim: Arc::clone(self),
                generation: s.generation,
            },
        }
    }

    /// Queues the 1xx `status`/`headers` for request `generation`, if its gate is
    /// still open, and wakes the connection to write it.
    fn push(&self, generation: u64, status: StatusCode, hdrs: &HeaderMap) {
        if !relayed(status) {
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

    fn close(&self, generation: u64) {
        let mut s = crate::sync::lock(&self.state);
        if s.generation == generation {
            s.open = false;
        }
    }
}

/// Where a 1xx for an HTTP/2 stream is handed over (hyper's sender; a recorder in
/// the unit tests). `false`: it was refused (the final response went, or hyper's
/// queue is full).
trait Informational {
    fn send(&self, res: http::Response<()>) -> bool;
}

impl Informational for InformationalSender {
    fn send(&self, res: http::Response<()>) -> bool {
        InformationalSender::send(self, res).is_ok()
    }
}

/// The 1xx state of one HTTP/2 request: its stream's sender, whether its handler
/// still waits for the final response, and how many bytes it was sent.
#[derive(Debug)]
struct H2Interim<S = InformationalSender> {
    sender: S,
    /// `(open, sent)`: one lock, so a 1xx cannot slip past the gate's closing.
    state: Mutex<(bool, usize)>,
}

impl<S: Informational> H2Interim<S> {
    fn new(sender: S) -> Self {
        H2Interim {
            sender,
            state: Mutex::new((true, 0)),
        }
    }

    /// Hands the 1xx `status`/`headers` to the stream, if the gate is still open and
    /// the request's budget allows.
    fn push(&self, status: StatusCode, hdrs: &HeaderMap) {
        if !relayed(status) {
            return;
        }
        let mut hdrs = hdrs.clone();
        headers::strip_hop_by_hop(&mut hdrs, false);
        // `TE: trailers` survives the hop-by-hop rule (it is a request field) but is
        // a connection-specific field HTTP/2 does not allow in a response.
        hdrs.remove(http::header::TE);
        let len = wire_len(status, &hdrs);
        let mut res = http::Response::new(());
        *res.status_mut() = status;
        *res.headers_mut() = hdrs;
        let mut s = crate::sync::lock(&self.state);
        let (open, sent) = &mut *s;
        if !*open {
            return;
        }
        if *sent + len > MAX_QUEUED {
            tracing::debug!(%status, "too many interim responses from the backend; dropped");
            return;
        }
        if self.sender.send(res) {
            *sent += len;
        } else {
            tracing::debug!(%status, "interim response refused by the HTTP/2 stream; dropped");
        }
    }

    fn close(&self) {
        crate::sync::lock(&self.state).0 = false;
    }
}

/// Where the 1xx of one request go.
#[derive(Debug)]
enum Sink {
    /// Written under hyper on an HTTP/1.1 connection, as request `generation`'s.
    H1 {
        interim: Arc<Interim>,
        generation: u64,
    },
    /// Handed to hyper's HTTP/2 stream.
    H2(Arc<H2Interim>),
}

/// The 1xx of one request are relayed to its client while this lives.
#[derive(Debug)]
pub struct Gate {
    sink: Sink,
}

impl Gate {
    /// Opens the gate of the client request `req` whose handler is starting, if its
    /// client can be sent 1xx: HTTP/1.1 on a connection with `interim` state, HTTP/2
    /// when hyper gave the request an `InformationalSender` (taken out of its
    /// extensions here); never HTTP/1.0 (RFC 9110 §15.2).
    pub fn open<B>(interim: Option<&Arc<Interim>>, req: &mut http::Request<B>) -> Option<Gate> {
        match req.version() {
            Version::HTTP_11 => interim.map(Interim::open),
            Version::HTTP_2 => req
                .extensions_mut()
                .remove::<InformationalSender>()
                .map(|sender| Gate {
                    sink: Sink::H2(Arc::new(H2Interim::new(sender))),
                }),
            _ => None,
        }
    }

    /// Has the 1xx responses to `req` (a request to a backend) relayed to the client.
    pub fn attach<B>(&self, req: &mut http::Request<B>) {
        match &self.sink {
            Sink::H1 {
                interim,
                generation,
            } => {
                let interim = Arc::clone(interim);
                let generation = *generation;
                hyper::ext::on_informational(req, move |res| {
                    interim.push(generation, res.status(), res.headers());
                });
            }
            Sink::H2(h2) => {
                let h2 = Arc::clone(h2);
                hyper::ext::on_informational(req, move |res| {
                    h2.push(res.status(), res.headers());
                });
            }
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        match &self.sink {
            Sink::H1 {
                interim,
                generation,
            } => interim.close(*generation),
            Sink::H2(h2) => h2.close(),
        }
    }
}

/// The length of [`encode`]'s output, without building it: the measure of the cap
/// for both protocols.
fn wire_len(status: StatusCode, hdrs: &HeaderMap) -> usize {
    let reason = status.canonical_reason().unwrap_or("").len();
    let fields: usize = hdrs
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    "HTTP/1.1 000 \r\n\r\n".len() + reason + fields
}

/// The HTTP/1.1 wire form of an interim response, hop-by-hop fields removed.
fn encode(status: StatusCode, hdrs: &HeaderMap) -> Vec<u8> {
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
        match &gate.sink {
            Sink::H1 {
                interim,
                generation,
            } => interim.push(*generation, status, &hints()),
            Sink::H2(h2) => h2.push(status, &hints()),
        }
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
        let Sink::H1 { generation, .. } = third.sink else {
            unreachable!("an HTTP/1.1 gate")
        };
        drop(third);
        interim.push(generation, StatusCode::EARLY_HINTS, &hints());
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

    /// Plays hyper's HTTP/2 stream: records what it accepts, or refuses all.
    #[derive(Debug, Default)]
    struct Stream {
        got: Mutex<Vec<http::Response<()>>>,
        refuse: bool,
    }

    impl Informational for Stream {
        fn send(&self, res: http::Response<()>) -> bool {
            if !self.refuse {
                crate::sync::lock(&self.got).push(res);
            }
            !self.refuse
        }
    }

    fn got(h2: &H2Interim<Stream>) -> Vec<StatusCode> {
        crate::sync::lock(&h2.sender.got)
            .iter()
            .map(|r| r.status())
            .collect()
    }

    #[test]
    fn http2_gets_the_same_1xx_without_connection_fields() {
        let h2 = H2Interim::new(Stream::default());
        let mut hdrs = hints();
        hdrs.insert("connection", http::HeaderValue::from_static("x-hop"));
        hdrs.insert("x-hop", http::HeaderValue::from_static("1"));
        hdrs.insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
        hdrs.insert("te", http::HeaderValue::from_static("trailers"));
        for status in [
            StatusCode::CONTINUE,
            StatusCode::SWITCHING_PROTOCOLS,
            StatusCode::OK,
            StatusCode::EARLY_HINTS,
        ] {
            h2.push(status, &hdrs);
        }
        assert_eq!(got(&h2), [StatusCode::EARLY_HINTS]);
        let sent = crate::sync::lock(&h2.sender.got);
        assert_eq!(sent[0].headers(), &hints(), "only the end-to-end Link");
    }

    #[test]
    fn http2_1xx_stop_when_the_gate_closes_and_at_the_cap() {
        let h2 = H2Interim::new(Stream::default());
        h2.push(StatusCode::PROCESSING, &hints());
        h2.close();
        h2.push(StatusCode::EARLY_HINTS, &hints());
        assert_eq!(
            got(&h2),
            [StatusCode::PROCESSING],
            "nothing after the final"
        );

        // The cap counts everything relayed: h2 holds the frames out of sight.
        let h2 = H2Interim::new(Stream::default());
        for _ in 0..10_000 {
            h2.push(StatusCode::EARLY_HINTS, &hints());
        }
        let n = got(&h2).len();
        assert_eq!(
            n,
            MAX_QUEUED / HINT.len(),
            "as many as HTTP/1.1 queues at once"
        );

        // What the stream refused is not counted against the request.
        let h2 = H2Interim::new(Stream {
            refuse: true,
            ..Stream::default()
        });
        h2.push(StatusCode::EARLY_HINTS, &hints());
        assert_eq!(crate::sync::lock(&h2.state).1, 0);
    }

    #[test]
    fn the_cap_measures_both_protocols_by_the_http11_form() {
        for status in [StatusCode::EARLY_HINTS, StatusCode::PROCESSING] {
            assert_eq!(wire_len(status, &hints()), encode(status, &hints()).len());
        }
        assert_eq!(wire_len(StatusCode::EARLY_HINTS, &hints()), HINT.len());
    }

    #[test]
    fn only_http11_and_http2_requests_get_a_gate() {
        let interim = Interim::new();
        let mut req = http::Request::new(());
        *req.version_mut() = Version::HTTP_10;
        assert!(Gate::open(Some(&interim), &mut req).is_none());
        *req.version_mut() = Version::HTTP_11;
        assert!(Gate::open(None, &mut req).is_none());
        assert!(Gate::open(Some(&interim), &mut req).is_some());
        // HTTP/2 needs the sender hyper puts in the request (the integration tests).
        *req.version_mut() = Version::HTTP_2;
        assert!(Gate::open(Some(&interim), &mut req).is_none());
    }
}
