//! The L4 proxy: one accept loop per `mode = "tcp"` VIP and one task per client.
//!
//! Per connection: admission limits, then up to `1 + retries` attempts, each picking a
//! backend not yet tried ([`crate::pool::Pool::select`]), connecting within
//! `connect_timeout` and writing the PROXY header. For protocols whose server speaks
//! first (SMTP, IMAP, POP3 in the clear) the backend's whole greeting is part of
//! connecting: it is read within `greeting_timeout` and judged ([`super::greeting`]),
//! so a backend that accepts but stays silent (SIGSTOPped, overloaded) or greets with a
//! refusal is a failed attempt like a refused connect. A failed attempt is reported for
//! passive ejection and the next backend tried, so a dead or hung node not yet
//! detected costs the client nothing (nothing has been relayed yet, so a retry is
//! invisible). When nothing is left the client gets its protocol's temporary-failure
//! greeting ([`super::refuse`]) instead of a reset. Otherwise the good greeting is
//! written to the client, then [`super::copy::relay`] moves bytes with `TCP_NODELAY`
//! on both legs and the VIP's idle timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shared::config::{MailProtocol, ProxyVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::copy;
use super::greeting::{self, Verdict};
use super::refuse::refusal;
use crate::accept_proxy;
use crate::access;
use crate::backend::Lease;
use crate::error::{ProxyError, Side};
use crate::vip::{ConnGuard, Refusal, VipSlot, VipState};

/// How long a refusal greeting may take to deliver before the socket is dropped.
const REFUSAL_WRITE: Duration = Duration::from_secs(5);
/// After a refusal, how long to wait for the client to close (so unread client bytes
/// do not turn our close into a reset that could discard the greeting).
const REFUSAL_LINGER: Duration = Duration::from_secs(2);
/// Pause after an accept error (e.g. out of file descriptors) so it cannot spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts clients of `slot` on one of its listening sockets (the one of data-path
/// worker `worker`, whose runtime this runs on, so every connection task spawned
/// here stays there) until its token is cancelled (reload removal,
/// `stop_accepting`, shutdown). Dropping out of the loop closes the listening socket.
pub(crate) async fn accept_loop(listener: TcpListener, slot: Arc<VipSlot>, worker: usize) {
    if !slot.wait_open().await {
        return;
    }
    loop {
        let accepted = tokio::select! {
            _ = slot.cancel.cancelled() => return,
            r = listener.accept() => r,
        };
        let (client, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(vip = %slot.local, "accept: {e}");
                tokio::select! {
                    _ = slot.cancel.cancelled() => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        slot.count_accept(worker);
        // Not (or no longer) in the lb's snapshot: a reload removed this VIP and is
        // cancelling the loop.
        let Some(state) = slot.state() else { return };
        match ConnGuard::admit(&slot, peer.ip(), &state.cfg) {
            Ok(guard) => {
                slot.tasks
                    .spawn_until_shutdown(serve(client, peer, state, guard));
            }
            Err(why) => {
                match why {
                    Refusal::MaxConnections => state.refused_max.increment(1),
                    Refusal::PerSource => state.refused_per_source.increment(1),
                }
                tracing::debug!(vip = %state.cfg.name, client = %peer, "refused: {why:?}");
                slot.tasks
                    .spawn_until_shutdown(refuse(client, state.cfg.protocol));
            }
        }
    }
}

/// Serves one admitted client to the end.
///
/// Not an `async fn`: its future would keep the arguments twice, as captures and again
/// as locals (rust-lang/rust#62958), and this future is what every connection holds
/// for its whole life (an idle IMAP session is little else). The `async move` block
/// uses what it captured in place and has one suspension point that lasts, the relay;
/// everything before it runs boxed in [`open`] and is freed once the relay starts.
/// `per_connection_future_is_small` holds the size.
#[allow(clippy::manual_async_fn)] // the point: see above
fn serve(
    mut client: TcpStream,
    mut peer: SocketAddr,
    state: Arc<VipState>,
    guard: ConnGuard,
) -> impl Future<Output = ()> {
    async move {
        let Some(Opened {
            lease,
            backend,
            started,
        }) = Box::pin(open(&mut client, &mut peer, &state)).await
        else {
            return;
        };
        let m = &lease.backend().metrics;
        let idle = state.cfg.idle_timeout;
        let relayed = copy::relay(
            &client,
            &backend,
            idle,
            &m.bytes_to_backend,
            &m.bytes_to_client,
        )
        .await;
        closed(&state, peer, &lease, started, relayed);
        // Admission (and the lb-wide count a drain waits on) is given back only with
        // both sockets closed; on the early return above, when the future is dropped.
        drop(backend);
        drop(client);
        drop(guard);
    }
}

/// A client connected to a backend that greeted it: what the relay phase needs.
struct Opened {
    lease: Lease,
    backend: TcpStream,
    started: tokio::time::Instant,
}

/// Everything before the relay: the client's PROXY header (which may rename `peer`),
/// a backend that takes the client, its greeting passed on. `None` when the client is
/// done with (closed, refused in its protocol, logged).
async fn open(client: &mut TcpStream, peer: &mut SocketAddr, state: &VipState) -> Option<Opened> {
    let started = tokio::time::Instant::now();
    let _ = client.set_nodelay(true);
    // Behind another balancer, its PROXY header names the client (and the address it
    // connected to); without a valid one the connection is closed.
    let mut dst = None;
    if state.cfg.accept_proxy {
        match accept_proxy::read_header(client, accept_proxy::L4_WAIT).await {
            Ok(Some((src, d))) => {
                *peer = src;
                dst = Some(d);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(vip = %state.cfg.name, client = %peer, "closed: {e}");
                return None;
            }
        }
    }
    let peer = *peer;
    let (lease, backend, greeting) = match connect_any(state, client, peer, dst).await {
        Ok(connected) => connected,
        Err(why) => {
            state.refused_no_backend.increment(1);
            tracing::debug!(vip = %state.cfg.name, client = %peer, "no backend available; refusing");
            if state.cfg.access_log {
                access::connection(&state.cfg.name, peer, "-", started, (0, 0), why.end());
            }
            refuse_borrowed(client, state.cfg.protocol).await;
            return None;
        }
    };
    // The backend's greeting, read while connecting, reaches the client before any
    // relayed byte; the client's socket buffer is empty, so this only fails for a
    // client that already went away.
    if !greeting.is_empty() {
        if let Err(e) = write_all_within(client, greeting, state.cfg.idle_timeout).await {
            tracing::debug!(vip = %state.cfg.name, client = %peer, "closed: greeting to client: {e}");
            if state.cfg.access_log {
                let name = lease.backend().name();
                access::connection(&state.cfg.name, peer, name, started, (0, 0), "client_error");
            }
            return None;
        }
    }
    Some(Opened {
        lease,
        backend,
        started,
    })
}

/// Logs how a relayed connection ended.
fn closed(
    state: &VipState,
    peer: SocketAddr,
    lease: &Lease,
    started: tokio::time::Instant,
    relayed: Result<copy::Relayed, ProxyError>,
) {
    let name = lease.backend().name();
    match relayed {
        Ok(r) => {
            tracing::trace!(
                vip = %state.cfg.name, backend = %name, client = %peer,
                to_backend = r.to_backend, to_client = r.to_client, "closed"
            );
            if state.cfg.access_log {
                let bytes = (r.to_backend, r.to_client);
                access::connection(&state.cfg.name, peer, name, started, bytes, "closed");
            }
        }
        Err(e) => {
            tracing::debug!(
                vip = %state.cfg.name, backend = %name, client = %peer,
                side = ?e.side(), "closed: {e}"
            );
            if state.cfg.access_log {
                let end = match e.side() {
                    Some(Side::Client) => "client_error",
                    Some(Side::Backend) => "backend_error",
                    None => "idle_timeout",
                };
                access::connection(&state.cfg.name, peer, name, started, (0, 0), end);
            }
        }
    }
}

/// Why no backend took a client: the access log's `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoBackend {
    /// None in rotation, or every attempt failed to connect.
    Refused,
    /// At least one attempt reached a backend that did not greet properly.
    GreetingFailed,
}

impl NoBackend {
    fn end(self) -> &'static str {
        match self {
            NoBackend::Refused => "refused",
            NoBackend::GreetingFailed => "greeting_failed",
        }
    }
}

/// Tries backends until one accepts (took the PROXY header and, for protocols whose
/// server speaks first, greeted), or none is left. Returns the connection and the
/// greeting bytes read from it, still owed to the client. `dst` is the address the
/// client connected to when an upstream balancer said so.
async fn connect_any(
    state: &VipState,
    client: &TcpStream,
    peer: SocketAddr,
    dst: Option<SocketAddr>,
) -> Result<(Lease, TcpStream, Vec<u8>), NoBackend> {
    // The accept gave the peer address; the local one (a getsockname(2)) is only
    // needed for a PROXY header, so it is not asked for otherwise.
    let local = match (dst, state.cfg.proxy_protocol) {
        (Some(d), _) => d,
        (None, Some(_)) => client.local_addr().unwrap_or(state.cfg.listen),
        (None, None) => state.cfg.listen,
    };
    let pool = &state.pool;
    let mut tried: Vec<usize> = Vec::new();
    let mut why = NoBackend::Refused;
    for attempt in 0..=state.cfg.retries {
        let lease = pool.select(peer.ip(), &tried).ok_or(why)?;
        if attempt > 0 {
            state.retries.increment(1);
        }
        match connect(&state.cfg, lease.backend().address(), peer, local).await {
            Ok((stream, greeting)) => {
                pool.report_success(&lease);
                return Ok((lease, stream, greeting));
            }
            Err(e) => {
                tracing::debug!(
                    vip = %state.cfg.name, backend = %lease.backend().name(),
                    attempt, "{e}"
                );
                if e.is_greeting() {
                    lease.backend().metrics.greeting_failures.increment(1);
                    why = NoBackend::GreetingFailed;
                }
                if e.blames_backend() {
                    lease.backend().metrics.connect_failures.increment(1);
                    pool.report_failure(&lease);
                }
                tried.push(lease.index());
                if !e.retry_safe() {
                    return Err(why);
                }
            }
        }
    }
    Err(why)
}

/// Connects to `addr` within the VIP's connect timeout, sends the PROXY header, and
/// reads the greeting when the server speaks first (returned, else empty).
async fn connect(
    cfg: &shared::config::VipConfig,
    addr: SocketAddr,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<(TcpStream, Vec<u8>), ProxyError> {
    let stream = match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return Err(ProxyError::Connect { addr, source }),
        Err(_) => {
            return Err(ProxyError::ConnectTimeout {
                addr,
                timeout: cfg.connect_timeout,
            })
        }
    };
    let _ = stream.set_nodelay(true);
    if let Some(version) = cfg.proxy_protocol {
        let header = match version {
            ProxyVersion::V1 => shared::proxy_protocol::v1(peer, local),
            ProxyVersion::V2 => shared::proxy_protocol::v2(peer, local),
        };
        write_all_within(&stream, header, cfg.connect_timeout)
            .await
            .map_err(|source| ProxyError::ProxyHeader { addr, source })?;
    }
    let greeting = if greets(cfg) {
        read_greeting(&stream, addr, cfg.protocol, cfg.greeting_timeout).await?
    } else {
        Vec::new()
    };
    Ok((stream, greeting))
}

/// SMTP, IMAP and POP3 servers speak first, so until the greeting arrives nothing has
/// reached the client and a backend that stays silent, closes or refuses can be
/// passed over. Behind implicit TLS (the probe's `tls`: 465, 993, 995) the client
/// speaks first and the greeting is inside TLS, out of the lb's sight.
fn greets(cfg: &shared::config::VipConfig) -> bool {
    matches!(
        cfg.protocol,
        MailProtocol::Smtp | MailProtocol::Imap | MailProtocol::Pop3
    ) && !cfg.probe.tls
}

/// How long the rest of a multi-line SMTP greeting may take once its first line
/// arrived positive (`220-`): Postfix's postscreen pauses before its last line
/// (`postscreen_greet_wait`, 6 s), and a client connected directly waits for the
/// whole greeting too, up to RFC 5321's 5 minutes (§4.5.3.2.1).
const GREETING_REST: Duration = Duration::from_secs(300);

/// Reads the backend's whole greeting and returns its bytes once
/// [`greeting::judge`] calls it a welcome. Its first line must arrive within `bound`:
/// silence is [`ProxyError::GreetingTimeout`], a close or reset
/// [`ProxyError::NoGreeting`], a refusal or garbage [`ProxyError::BadGreeting`], all
/// retried elsewhere and counted against the backend. A greeting that began with a
/// positive continuation line has until [`GREETING_REST`] to finish.
async fn read_greeting(
    stream: &TcpStream,
    addr: SocketAddr,
    protocol: MailProtocol,
    bound: Duration,
) -> Result<Vec<u8>, ProxyError> {
    let started = tokio::time::Instant::now();
    let mut deadline = started + bound;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    let timeout = |deadline: tokio::time::Instant| ProxyError::GreetingTimeout {
        addr,
        timeout: deadline - started,
    };
    loop {
        let n = match stream.try_read(&mut chunk) {
            Ok(0) => return Err(ProxyError::NoGreeting { addr, source: None }),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout_at(deadline, stream.readable()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(e)) => {
                        return Err(ProxyError::NoGreeting {
                            addr,
                            source: Some(e),
                        })
                    }
                    Err(_) => return Err(timeout(deadline)),
                }
            }
            Err(e) => {
                return Err(ProxyError::NoGreeting {
                    addr,
                    source: Some(e),
                })
            }
        };
        buf.extend_from_slice(&chunk[..n]);
        match greeting::judge(protocol, &buf) {
            // A complete line that left the verdict open is a positive `220-`.
            Verdict::Incomplete if buf.contains(&b'\n') => {
                deadline = deadline.max(started + GREETING_REST);
            }
            Verdict::Incomplete => {}
            Verdict::Welcome => return Ok(buf),
            Verdict::Refused(reply) | Verdict::Malformed(reply) => {
                return Err(ProxyError::BadGreeting { addr, reply })
            }
        }
    }
}

/// Writes all of `bytes` within `timeout` on a shared reference (no split needed).
async fn write_all_within(
    stream: &TcpStream,
    bytes: impl AsRef<[u8]>,
    timeout: Duration,
) -> io::Result<()> {
    let header = bytes.as_ref();
    let write = async {
        let mut off = 0;
        while off < header.len() {
            stream.writable().await?;
            match stream.try_write(&header[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, write)
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "timed out")))
}

/// Answers in the VIP's protocol and closes: the greeting, a write shutdown, then a
/// short bounded wait for the client to close so the greeting is not lost to a reset.
async fn refuse(mut client: TcpStream, protocol: MailProtocol) {
    refuse_borrowed(&mut client, protocol).await;
}

/// [`refuse`] on a connection its caller keeps.
async fn refuse_borrowed(client: &mut TcpStream, protocol: MailProtocol) {
    let Some(bytes) = refusal(protocol) else {
        return; // opaque TCP: just close
    };
    match tokio::time::timeout(REFUSAL_WRITE, client.write_all(bytes)).await {
        Ok(Ok(())) => {}
        _ => return,
    }
    let _ = client.shutdown().await;
    let mut sink = [0u8; 512];
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        let mut budget = 64 * 1024usize;
        while budget > 0 {
            match client.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Size of the future `f` returns, without calling it.
    fn output_size<F, Fut>(_: &F) -> usize
    where
        F: FnOnce(TcpStream, SocketAddr, Arc<VipState>, ConnGuard) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn per_connection_future_is_small() {
        // What every connection keeps for its whole life, in its task's cell. tokio
        // rounds a cell up to 128 bytes around the future plus about 184 bytes (its
        // header and trailer, the tracker's token, the shutdown waiter), so up to 584
        // bytes make a 768-byte cell, one more byte a 896-byte one. Before the relay
        // was a named future and the connect phase a boxed `open`, this was 864
        // bytes (release), a 1,152-byte cell that the allocator served from its
        // 1,280-byte class: 0.5 KiB per idle session more than now.
        let serve = output_size(&serve);
        eprintln!("serve future: {serve} bytes");
        assert!(serve <= 584, "serve future grew to {serve} bytes");
    }
}
