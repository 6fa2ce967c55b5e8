//! The accept loop of an L7 VIP and the protection around each client connection:
//! `max_connections`, a bounded TLS handshake, first byte and first request (an HTTP/2
//! preface is not covered by hyper's timers), hyper's HTTP/1 header read timeout
//! (slowloris; it also bounds idle keep-alive), maximum head size,
//! maximum concurrent HTTP/2 streams, and graceful shutdown.
//!
//! On TLS the negotiated ALPN chooses the protocol (`h2` → HTTP/2 only, `http/1.1` →
//! HTTP/1 only, so hyper's header timer runs from the first byte); plain HTTP and TLS
//! without ALPN auto-detect HTTP/2 prior knowledge. A connection task never panics the
//! process and errors are per connection: a malformed request gets hyper's 400 and the
//! connection closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::proxy::ConnInfo;
use super::{HttpVip, Settings, REFUSED_TOTAL};

/// Smallest read buffer hyper accepts for HTTP/1.
const MIN_H1_BUF: usize = 8192;

/// Counts a client connection for [`HttpVip::active`] and the gauge.
struct ConnGuard(Arc<HttpVip>, #[allow(dead_code)] super::Admitted);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.connections_gauge().decrement(1.0);
    }
}

/// Which HTTP versions a connection may speak.
#[derive(Clone, Copy)]
enum Protocols {
    Auto,
    H1,
    H2,
}

impl HttpVip {
    /// Serves clients from `listener` until `stop` is cancelled. Stopping closes the
    /// listener and asks every connection to finish gracefully (in-flight requests
    /// complete, idle keep-alives close, HTTP/2 gets GOAWAY);
    /// [`HttpVip::abort_connections`] ends the stragglers.
    pub fn spawn(
        self: &Arc<Self>,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let vip = Arc::clone(self);
        tokio::spawn(async move { vip.accept_loop(listener, stop).await })
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.kill.cancelled() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(vip = %self.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let settings = self.settings();
            let admitted = match &self.hooks.admit {
                Some(admit) => admit(peer.ip()),
                None => match settings.max_connections {
                    Some(max) if self.active() >= u64::from(max) => None,
                    _ => Some(Box::new(()) as super::Admitted),
                },
            };
            let Some(admitted) = admitted else {
                metrics::counter!(REFUSED_TOTAL, "vip" => self.name.clone(), "reason" => "max_connections").increment(1);
                tracing::debug!(vip = %self.name, %peer, "connection limit reached; refusing");
                tokio::spawn(refuse(tcp, self.tls.is_none()));
                continue;
            };
            self.active.fetch_add(1, Ordering::AcqRel);
            self.connections_gauge().increment(1.0);
            let guard = ConnGuard(Arc::clone(&self), admitted);
            let vip = Arc::clone(&self);
            let stop = stop.clone();
            tokio::spawn(async move {
                let _guard = guard;
                vip.connection(tcp, peer, settings, stop).await;
            });
        }
        tracing::debug!(vip = %self.name, "stopped accepting");
    }

    async fn connection(
        self: Arc<Self>,
        mut tcp: TcpStream,
        peer: SocketAddr,
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
        match self.tls.clone() {
            None => {
                // Nothing sent at all is a slowloris too: hyper's timer only starts
                // once the protocol is detected.
                let mut byte = [0u8; 1];
                match tokio::time::timeout(limit, tcp.peek(&mut byte)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                let info = ConnInfo::new(peer, false);
                self.serve(TokioIo::new(tcp), info, Protocols::Auto, &settings, stop)
                    .await;
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
                let protocols = match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => Protocols::H2,
                    Some(b"http/1.1") => Protocols::H1,
                    _ => Protocols::Auto,
                };
                let info = ConnInfo::new(peer, true);
                self.serve(TokioIo::new(tls), info, protocols, &settings, stop)
                    .await;
            }
        }
    }

    async fn serve<I>(
        self: &Arc<Self>,
        io: TokioIo<I>,
        info: Arc<ConnInfo>,
        protocols: Protocols,
        settings: &Settings,
        stop: CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(settings.http.header_timeout)
            .max_buf_size(settings.http.max_header_size.max(MIN_H1_BUF))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(settings.http.max_h2_streams)
            .max_header_list_size(u32::try_from(settings.http.max_header_size).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let builder = match protocols {
            Protocols::Auto => builder,
            Protocols::H1 => builder.http1_only(),
            Protocols::H2 => builder.http2_only(),
        };
        let vip = Arc::clone(self);
        let peer = info.peer;
        let first_request = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&first_request);
        let service = service_fn(move |req| {
            seen.store(true, Ordering::Relaxed);
            let vip = Arc::clone(&vip);
            let info = Arc::clone(&info);
            async move { Ok::<_, Infallible>(vip.handle(req, info).await) }
        });
        let conn = builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        // hyper's header timer starts with an HTTP/1 head; an HTTP/2 client (or a
        // plain client still in protocol detection) that never completes its preface
        // and first request would hold the connection forever. The first request must
        // arrive within header_timeout of the connection being handed to hyper.
        let first = tokio::time::sleep(settings.http.header_timeout);
        tokio::pin!(first);
        let mut first_armed = true;
        let result = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = first.as_mut(), if first_armed => {
                    first_armed = false;
                    if !first_request.load(Ordering::Relaxed) {
                        tracing::debug!(vip = %self.name, %peer, "no request within header_timeout; closing");
                        break Ok(());
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    break tokio::select! {
                        r = conn.as_mut() => r,
                        _ = self.kill.cancelled() => Ok(()),
                    };
                }
                _ = self.kill.cancelled() => break Ok(()),
            }
        };
        if let Err(e) = result {
            tracing::debug!(vip = %self.name, %peer, error = %e, "client connection ended with an error");
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
