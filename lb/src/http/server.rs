//! The accept loop of an L7 VIP and the protection around each client connection:
//! `max_connections`, a bounded TLS handshake, first byte and first request (an HTTP/2
//! preface is not covered by hyper's timers), hyper's HTTP/1 header read timeout
//! (slowloris; it also bounds idle keep-alive), maximum head size,
//! maximum concurrent HTTP/2 streams, and graceful shutdown.
//!
//! The protocol is decided before hyper sees a byte, and only that protocol is
//! served: on TLS the negotiated ALPN decides (`h2` → HTTP/2 only; `http/1.1` or no
//! ALPN → HTTP/1 only), so a client cannot speak one protocol after negotiating the
//! other; on plain HTTP the first bytes decide (the HTTP/2 preface → HTTP/2 prior
//! knowledge, anything else → HTTP/1). An invalid HTTP/2 preface gets a GOAWAY
//! (PROTOCOL_ERROR) and the connection closes. A connection task never panics the
//! process and errors are per connection: a malformed request gets hyper's 400 (or
//! 431 for an oversized head), which is access-logged, and the connection closes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::interim::{Interim, InterimIo};
use super::proxy::ConnInfo;
use super::{HttpVip, Settings, REFUSED_TOTAL};
use crate::vip::{ConnGuard, VipSlot};
use shared::config::VipMode;

/// Smallest read buffer hyper accepts for HTTP/1.
const MIN_H1_BUF: usize = 8192;

/// Keeps `portico_http_connections_active` in step with the slot's count: the
/// slot's [`ConnGuard`] is the one admission and count, this only mirrors it in the
/// L7 gauge.
struct Gauged {
    _admitted: ConnGuard,
    gauge: metrics::Gauge,
}

impl Gauged {
    fn new(admitted: ConnGuard, gauge: &metrics::Gauge) -> Gauged {
        gauge.increment(1.0);
        Gauged {
            _admitted: admitted,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Gauged {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

/// Which HTTP version a connection speaks (decided before hyper sees it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocols {
    H1,
    H2,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Its first line, which is never a valid HTTP/1 request: a client that sends it
/// means HTTP/2, and a wrong remainder is an invalid preface, not an HTTP/1 request.
const PREFACE_LINE: usize = 16;

/// An empty SETTINGS frame (the server's preface) followed by GOAWAY with last
/// stream 0 and PROTOCOL_ERROR: the answer to an invalid client preface.
const GOAWAY_PROTOCOL_ERROR: [u8; 26] = [
    0, 0, 0, 0x4, 0, 0, 0, 0, 0, // SETTINGS, no parameters
    0, 0, 8, 0x7, 0, 0, 0, 0, 0, // GOAWAY on stream 0, 8 bytes:
    0, 0, 0, 0, // last stream id 0
    0, 0, 0, 1, // PROTOCOL_ERROR
];

/// What the first bytes of a connection said.
#[derive(Debug, PartialEq, Eq)]
enum Opening {
    /// Speak this protocol; the bytes read so far are replayed to hyper.
    Speak(Protocols),
    /// An HTTP/2 preface that is not one.
    BadPreface,
    /// The client closed (or failed) before deciding anything.
    Gone,
}

/// Reads the start of a connection into `buf` (returning how much) and decides its
/// protocol: with `expect = Some(H2)` (ALPN h2) the exact preface is required;
/// with `None` (plain HTTP) the preface means HTTP/2 and any other start HTTP/1,
/// decided at the first byte that differs from the preface, so an HTTP/1 request
/// costs one read.
async fn read_opening<I: AsyncRead + Unpin>(
    io: &mut I,
    expect: Option<Protocols>,
    buf: &mut [u8; 24],
) -> (Opening, usize) {
    let mut n = 0;
    while n < PREFACE.len() {
        match io.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return (Opening::Gone, n),
            Ok(r) => n += r,
        }
        if let Some(at) = buf[..n].iter().zip(PREFACE).position(|(a, b)| a != b) {
            let opening = if expect == Some(Protocols::H2) || at >= PREFACE_LINE {
                Opening::BadPreface
            } else {
                Opening::Speak(Protocols::H1)
            };
            return (opening, n);
        }
    }
    (Opening::Speak(Protocols::H2), n)
}

/// A stream whose first bytes were already read to pick the protocol: they are
/// served again before the rest.
struct Replayed<I> {
    head: [u8; 24],
    pos: usize,
    len: usize,
    inner: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Replayed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.len {
            let n = (self.len - self.pos).min(buf.remaining());
            let from = self.pos;
            buf.put_slice(&self.head[from..from + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Replayed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts clients of an L7 VIP's `slot` until its token is cancelled (reload
/// removal, `stop_accepting`, shutdown), as [`crate::l4::tcp::accept_loop`] does for L4:
/// the slot admits and counts each connection and gives each request its current
/// pool; `proxy` serves them. Stopping closes the listener and asks every connection
/// to finish gracefully (in-flight requests complete, idle keep-alives close, HTTP/2
/// gets GOAWAY; a connection still waiting for its first request gets it answered
/// first, within `header_timeout`); [`HttpVip::abort_connections`] ends the
/// stragglers. `listener` is one of the slot's sockets, the one of data-path worker
/// `worker` (this runs on that worker's runtime, and so do the connections it
/// spawns).
pub async fn accept_loop(
    listener: TcpListener,
    slot: Arc<VipSlot>,
    proxy: Arc<HttpVip>,
    worker: usize,
) {
    if !slot.wait_open().await {
        return;
    }
    let stop = slot.cancel.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            _ = proxy.kill.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(vip = %proxy.name, error = %e, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        slot.count_accept(worker);
        // Not (or no longer) in the lb's snapshot: a reload removed this VIP and is
        // cancelling the loop.
        let Some((state, settings)) = slot.snapshot().and_then(|s| s.l7_of(&slot)) else {
            break;
        };
        let admitted = match ConnGuard::admit(&slot, peer.ip(), &state.cfg) {
            Ok(g) => g,
            Err(why) => {
                metrics::counter!(REFUSED_TOTAL, "vip" => proxy.name.clone(), "reason" => "max_connections").increment(1);
                tracing::debug!(vip = %proxy.name, %peer, "refused: {why:?}");
                proxy.tasks.spawn(refuse(tcp, proxy.mode != VipMode::Https));
                continue;
            }
        };
        let guard = Gauged::new(admitted, proxy.connections_gauge());
        let (vip, slot, stop) = (Arc::clone(&proxy), Arc::clone(&slot), stop.clone());
        proxy.tasks.spawn(async move {
            let _guard = guard;
            vip.connection(tcp, peer, slot, settings, stop).await;
        });
    }
    tracing::debug!(vip = %proxy.name, "stopped accepting");
}

impl HttpVip {
    async fn connection(
        self: Arc<Self>,
        mut tcp: TcpStream,
        peer: SocketAddr,
        slot: Arc<VipSlot>,
        settings: Arc<Settings>,
        stop: CancellationToken,
    ) {
        let _ = tcp.set_nodelay(true);
        let limit = settings.http.header_timeout;
        // Behind another balancer, its PROXY header names the client (before TLS).
        let peer = if settings.accept_proxy {
            match crate::accept_proxy::read_header(&mut tcp, limit).await {
                Ok(Some((src, _))) => src,
                Ok(None) => peer,
                Err(e) => {
                    tracing::debug!(vip = %self.name, %peer, "closed: {e}");
                    return;
                }
            }
        } else {
            peer
        };
        match settings.tls_config() {
            None => {
                // Nothing sent at all is a slowloris too: hyper's timer only starts
                // with a request head.
                let info = ConnInfo::new(peer, false, &settings.http);
                self.open(tcp, None, info, slot, &settings, stop).await;
            }
            Some(config) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                let tls = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        metrics::counter!(REFUSED_TOTAL, "vip" => self.name.clone(), "reason" => "tls_handshake").increment(1);
                        tracing::debug!(vip = %self.name, %peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics::counter!(REFUSED_TOTAL, "vip" => self.name.clone(), "reason" => "tls_handshake").increment(1);
                        tracing::debug!(vip = %self.name, %peer, "tls handshake timed out");
                        return;
                    }
                };
                // ALPN decides: without it (or with http/1.1), HTTP/2 is refused.
                let expect = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocols::H2,
                    _ => Protocols::H1,
                };
                let info = ConnInfo::new(peer, true, &settings.http);
                self.open(tls, Some(expect), info, slot, &settings, stop)
                    .await;
            }
        }
    }

    /// Decides the protocol of a connection (`expect` from ALPN, else from its first
    /// bytes, which must arrive within `header_timeout`) and serves it.
    async fn open<I>(
        self: &Arc<Self>,
        mut io: I,
        expect: Option<Protocols>,
        info: Arc<ConnInfo>,
        slot: Arc<VipSlot>,
        settings: &Settings,
        stop: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut head = [0u8; 24];
        let (opening, len) = match expect {
            // HTTP/1 only: hyper's header timer covers the first bytes.
            Some(Protocols::H1) => (Opening::Speak(Protocols::H1), 0),
            _ => {
                let read = read_opening(&mut io, expect, &mut head);
                match tokio::time::timeout(settings.http.header_timeout, read).await {
                    Ok(r) => r,
                    Err(_) => (Opening::Gone, 0),
                }
            }
        };
        let protocols = match opening {
            Opening::Speak(p) => p,
            Opening::Gone => return,
            Opening::BadPreface => {
                tracing::debug!(vip = %self.name, peer = %info.peer, "invalid HTTP/2 preface; GOAWAY");
                self.count_client_error("bad_preface");
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    io.write_all(&GOAWAY_PROTOCOL_ERROR).await?;
                    io.shutdown().await
                })
                .await;
                return;
            }
        };
        let io = Replayed {
            head,
            pos: 0,
            len,
            inner: io,
        };
        self.serve(TokioIo::new(io), info, slot, protocols, settings, stop)
            .await;
    }

    async fn serve<I>(
        self: &Arc<Self>,
        io: TokioIo<I>,
        info: Arc<ConnInfo>,
        slot: Arc<VipSlot>,
        protocols: Protocols,
        settings: &Settings,
        stop: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let vip = Arc::clone(self);
        let peer = info.peer;
        // HTTP/1.1 clients get the backends' 1xx responses written under hyper;
        // HTTP/2 ones through hyper (`enable_informational`).
        let interim = Interim::new();
        let for_service = (protocols == Protocols::H1).then(|| Arc::clone(&interim));
        let first_request = Arc::new(FirstRequest::default());
        let seen = Arc::clone(&first_request);
        // Requests on a connection whose VIP a reload removed go on with the pool
        // and settings it had when they could last see them.
        let current = || {
            slot.snapshot()
                .and_then(|s| s.l7_of(&slot))
                .map(|(st, settings)| (Arc::clone(&st.pool), settings))
        };
        let last = std::sync::Mutex::new(current());
        let service = service_fn(move |req| {
            seen.arrived();
            let vip = Arc::clone(&vip);
            let info = Arc::clone(&info);
            let interim = for_service.clone();
            // Read per request: a reload swaps the pool and settings under open
            // connections, both in one snapshot.
            let state = {
                let mut last = shared::sync::lock(&last);
                if let Some(now) = current() {
                    *last = Some(now);
                }
                last.clone()
            };
            async move {
                let Some((pool, settings)) = state else {
                    return Ok::<_, Infallible>(crate::http::errors::local_response(
                        hyper::StatusCode::SERVICE_UNAVAILABLE,
                        "503 Service Unavailable: this VIP was removed\n",
                    ));
                };
                Ok::<_, Infallible>(vip.handle(req, info, pool, settings, interim).await)
            }
        });
        let opened = Instant::now();
        let result = match protocols {
            Protocols::H1 => {
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(settings.http.header_timeout)
                    .max_buf_size(settings.http.max_header_size.max(MIN_H1_BUF))
                    .keep_alive(true);
                // hyper parses up to 100 headers on the stack; another limit puts
                // every request's header array on the heap, so it is set only when
                // configured.
                if settings.http.max_headers != shared::config::DEFAULT_MAX_HEADERS {
                    builder.max_headers(settings.http.max_headers);
                }
                let io = TokioIo::new(InterimIo::new(io.into_inner(), interim));
                let conn = builder.serve_connection(io, service).with_upgrades();
                tokio::pin!(conn);
                self.drive(
                    conn,
                    |c| c.graceful_shutdown(),
                    &first_request,
                    peer,
                    settings,
                    &stop,
                )
                .await
            }
            Protocols::H2 => {
                let mut builder = http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .max_concurrent_streams(settings.http.max_h2_streams)
                    .max_header_list_size(
                        u32::try_from(settings.http.max_header_size).unwrap_or(u32::MAX),
                    )
                    .keep_alive_interval(Some(Duration::from_secs(30)))
                    .enable_informational(true);
                let conn = builder.serve_connection(io, service);
                tokio::pin!(conn);
                self.drive(
                    conn,
                    |c| c.graceful_shutdown(),
                    &first_request,
                    peer,
                    settings,
                    &stop,
                )
                .await
            }
        };
        if let Err(e) = result {
            // hyper answered a request head it could not parse itself (400, or 431
            // when too large): the handler never saw it, so its access line and
            // client-error count are written here.
            let status = if e.is_parse_too_large() {
                Some((
                    http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "head_too_large",
                ))
            } else if e.is_parse() && !e.is_parse_version_h2() {
                Some((http::StatusCode::BAD_REQUEST, "bad_head"))
            } else {
                None
            };
            if let Some((status, reason)) = status {
                self.count_client_error(reason);
                self.count_own_response(status);
                if settings.access_log {
                    self.log_rejected(peer, status, opened);
                }
            }
            tracing::debug!(vip = %self.name, %peer, error = %e, "client connection ended with an error");
        }
    }

    /// Runs a client connection to its end: bounded until its first request,
    /// shut down gracefully on `stop`, cut on [`HttpVip::abort_connections`].
    async fn drive<C>(
        &self,
        mut conn: Pin<&mut C>,
        graceful: impl Fn(Pin<&mut C>),
        first_request: &FirstRequest,
        peer: SocketAddr,
        settings: &Settings,
        stop: &CancellationToken,
    ) -> Result<(), hyper::Error>
    where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        // hyper's header timer starts with an HTTP/1 head; an HTTP/2 client that
        // completes its preface but never sends a request would hold the connection
        // forever. The first request must arrive within header_timeout of the
        // connection being handed to hyper.
        let first = tokio::time::sleep(settings.http.header_timeout);
        tokio::pin!(first);
        let mut first_armed = true;
        let mut stopping = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => return r,
                _ = first.as_mut(), if first_armed => {
                    first_armed = false;
                    if !first_request.seen() {
                        tracing::debug!(vip = %self.name, %peer, "no request within header_timeout; closing");
                        return Ok(());
                    }
                }
                _ = stop.cancelled(), if !stopping => {
                    if first_request.seen() {
                        return self.finish(conn, &graceful).await;
                    }
                    // Not one request yet: the client may already have sent one that
                    // is still unread in the socket, and hyper, seeing an idle
                    // connection, would close on it at once, losing the request (a
                    // client retries only on a reused connection). The connection
                    // gets what is left of its first-request time instead.
                    stopping = true;
                }
                _ = first_request.wait(), if stopping => {
                    return self.finish(conn, &graceful).await;
                }
                _ = self.kill.cancelled() => return Ok(()),
            }
        }
    }

    /// Asks `conn` to finish gracefully (an HTTP/1 request in flight completes and the
    /// connection closes; HTTP/2 gets GOAWAY) and drives it until it has, or until the
    /// VIP's connections are killed.
    async fn finish<C>(
        &self,
        mut conn: Pin<&mut C>,
        graceful: &impl Fn(Pin<&mut C>),
    ) -> Result<(), hyper::Error>
    where
        C: Future<Output = Result<(), hyper::Error>>,
    {
        graceful(conn.as_mut());
        tokio::select! {
            r = conn.as_mut() => r,
            _ = self.kill.cancelled() => Ok(()),
        }
    }
}

/// Whether a connection's first request has reached the service, and a wake-up for a
/// drain waiting for it.
#[derive(Default)]
struct FirstRequest {
    seen: AtomicBool,
    notify: tokio::sync::Notify,
}

impl FirstRequest {
    fn arrived(&self) {
        if !self.seen.swap(true, Ordering::Relaxed) {
            // Stores a permit when nobody waits yet, so the wake-up is never lost.
            self.notify.notify_one();
        }
    }

    fn seen(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    async fn wait(&self) {
        if !self.seen() {
            self.notify.notified().await;
        }
    }
}

/// Turns away a connection over `max_connections`: plain HTTP gets a 503 so browsers
/// show something useful; TLS is just closed (no handshake is spent on it).
async fn refuse(mut tcp: TcpStream, plain: bool) {
    if plain {
        let msg = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nRetry-After: 5\r\nConnection: close\r\n\r\ntoo many connections\n";
        let _ = tokio::time::timeout(Duration::from_secs(1), tcp.write_all(msg)).await;
        let _ = tcp.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn opening(bytes: &[u8], expect: Option<Protocols>) -> (Opening, usize) {
        let mut buf = [0u8; 24];
        read_opening(&mut &bytes[..], expect, &mut buf).await
    }

    #[tokio::test]
    async fn first_bytes_decide_the_protocol() {
        assert_eq!(
            opening(b"GET / HTTP/1.1\r\n", None).await,
            (Opening::Speak(Protocols::H1), 16)
        );
        assert_eq!(
            opening(PREFACE, None).await,
            (Opening::Speak(Protocols::H2), 24)
        );
        // "PRI" alone could still be an HTTP/1 method; the preface's whole first
        // line cannot.
        assert_eq!(
            opening(b"PRI / HTTP/1.1\r\n", None).await.0,
            Opening::Speak(Protocols::H1)
        );
        assert_eq!(
            opening(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", None).await.0,
            Opening::BadPreface
        );
        assert_eq!(
            opening(b"GET / HTTP/1.1\r\n", Some(Protocols::H2)).await.0,
            Opening::BadPreface
        );
        assert_eq!(opening(b"PRI * HT", None).await.0, Opening::Gone);
    }
}
