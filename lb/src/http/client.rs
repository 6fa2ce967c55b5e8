//! Backend connections: HTTP/1.1 over TCP or TLS, kept alive in a small pool per
//! backend so a busy VIP does not pay a connect (and a TLS handshake) per request.
//!
//! Built directly on `hyper::client::conn::http1` rather than hyper-util's legacy
//! client because retries need to tell the stages apart: *connect* (nothing sent, any
//! request may go elsewhere), *not sent* (a pooled connection turned out closed and
//! hyper handed the request back) and *sent* (only an idempotent body-less request may
//! be retried). A connection returns to the pool once hyper reports it ready for the
//! next request, i.e. after the previous response body was fully relayed; upgraded
//! connections (WebSocket) never return. Idle connections older than the idle bound
//! are discarded on checkout, newest first (LIFO keeps the warm ones warm).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Body;
use crate::backend::Backend;
use crate::error::ProxyError;
use crate::supervisor::Tasks;

/// Most idle connections kept per backend.
const MAX_IDLE_PER_BACKEND: usize = 256;

/// A byte stream to a backend, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// TLS towards backends.
#[derive(Clone)]
pub struct BackendTls {
    /// The rustls client configuration (verification, CA, ALPN `http/1.1`).
    pub config: Arc<rustls::ClientConfig>,
    /// Name sent as SNI and verified; `None` uses the backend's IP address.
    pub sni: Option<ServerName<'static>>,
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("sni", &self.sni)
            .finish()
    }
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

/// Connections of one VIP to its backends.
pub struct BackendClient {
    tls: Option<BackendTls>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
    /// Owns the connection drivers, so shutdown ends them rather than leaving
    /// backend connections behind.
    tasks: Tasks,
}

impl std::fmt::Debug for BackendClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendClient")
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// A connection ready to take one request.
pub struct Conn {
    /// hyper's request handle.
    pub sender: SendRequest<Body>,
    /// It came from the pool (a failure may just be a stale keep-alive).
    pub reused: bool,
    addr: SocketAddr,
}

impl BackendClient {
    /// A client with `tls` to backends (if any), connects bounded by
    /// `connect_timeout`, idle pooled connections kept for `idle_timeout`; the tasks
    /// driving its connections belong to `tasks`.
    pub fn new(
        tls: Option<BackendTls>,
        connect_timeout: Duration,
        idle_timeout: Duration,
        tasks: Tasks,
    ) -> Self {
        BackendClient {
            tls,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(HashMap::new()),
            tasks,
        }
    }

    /// Idle connections to `addr` right now (tests, debugging).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        crate::sync::lock(&self.idle).get(&addr).map_or(0, Vec::len)
    }

    /// A pooled connection to `backend`, or a new one. `fresh` skips the pool (the
    /// retry after a stale keep-alive).
    pub async fn checkout(&self, backend: &Backend, fresh: bool) -> Result<Conn, ProxyError> {
        let addr = backend.address();
        if !fresh {
            if let Some(sender) = self.take_idle(addr) {
                return Ok(Conn {
                    sender,
                    reused: true,
                    addr,
                });
            }
        }
        let sender = tokio::time::timeout(self.connect_timeout, self.connect(backend))
            .await
            .map_err(|_| ProxyError::HttpConnect {
                backend: backend.name().to_string(),
                reason: format!("timeout after {:?}", self.connect_timeout),
            })??;
        Ok(Conn {
            sender,
            reused: false,
            addr,
        })
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = crate::sync::lock(&self.idle);
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(c) = list.pop() {
            if now.duration_since(c.since) < self.idle_timeout
                && !c.sender.is_closed()
                && c.sender.is_ready()
            {
                return Some(c.sender);
            }
        }
        None
    }

    async fn connect(&self, backend: &Backend) -> Result<SendRequest<Body>, ProxyError> {
        let fail = |reason: String| ProxyError::HttpConnect {
            backend: backend.name().to_string(),
            reason,
        };
        let addr = backend.address();
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = tls
                    .sni
                    .clone()
                    .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(&tls.config));
                let stream = connector.connect(name, tcp).await.map_err(|e| {
                    let reason = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                        Some(tls_err) => shared::tls::describe_error(tls_err),
                        None => e.to_string(),
                    };
                    fail(format!("tls: {reason}"))
                })?;
                Box::new(stream)
            }
        };
        let (sender, conn) = http1::Builder::new()
            .handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let id = backend.id();
        self.tasks.spawn_until_shutdown(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(backend = %id, error = %e, "backend connection ended");
            }
        });
        Ok(sender)
    }

    /// Hands the connection back once its response body was relayed to the end. When
    /// hyper already reports it ready for the next request (the usual case: its
    /// connection task re-armed while delivering the last frame) it joins the pool at
    /// once; otherwise a task waits for readiness. It is dropped if it closes, or the
    /// pool is full.
    pub fn checkin(self: &Arc<Self>, mut conn: Conn) {
        if conn.sender.is_ready() {
            self.park(conn);
            return;
        }
        if conn.sender.is_closed() {
            return;
        }
        let me = Arc::clone(self);
        self.tasks.spawn_until_shutdown(async move {
            if conn.sender.ready().await.is_ok() {
                me.park(conn);
            }
        });
    }

    fn park(&self, conn: Conn) {
        let mut idle = crate::sync::lock(&self.idle);
        let list = idle.entry(conn.addr).or_default();
        let now = Instant::now();
        list.retain(|c| now.duration_since(c.since) < self.idle_timeout && !c.sender.is_closed());
        if list.len() < MAX_IDLE_PER_BACKEND {
            list.push(Idle {
                sender: conn.sender,
                since: now,
            });
        }
    }
}
