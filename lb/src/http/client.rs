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
//!
//! The idle pool is per data-path worker ([`crate::supervisor::Tasks::with_workers`]):
//! a connection is driven by a task on the worker that opened it, so a request on
//! worker k takes only from pool k and a connection goes back to the pool of the
//! worker it was opened on. No stealing from another worker's pool: a stolen
//! connection would keep its driver on the other core and every request on it
//! would cross cores twice, while a new connection costs one connect per worker
//! and backend (and the pools fill within the first requests).

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

/// Most idle connections kept per backend in each worker's pool.
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

/// One worker's idle connections, per backend address (newest last).
type IdlePool = Mutex<HashMap<SocketAddr, Vec<Idle>>>;

/// Connections of one VIP to its backends.
pub struct BackendClient {
    tls: Option<BackendTls>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// One idle pool per data-path worker (one in all without workers), indexed by
    /// [`crate::supervisor::current_worker`].
    idle: Box<[IdlePool]>,
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
    /// The idle pool it goes back to: that of the worker whose runtime drives it.
    pool: usize,
}

impl BackendClient {
    /// A client with `tls` to backends (if any), connects bounded by
    /// `connect_timeout`, idle pooled connections kept for `idle_timeout`; the tasks
    /// driving its connections belong to `tasks`, which also says how many
    /// data-path workers (so idle pools) there are.
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
            idle: (0..tasks.workers())
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            tasks,
        }
    }

    /// Idle connections to `addr` right now, over every worker's pool (tests,
    /// debugging).
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle
            .iter()
            .map(|pool| crate::sync::lock(pool).get(&addr).map_or(0, Vec::len))
            .sum()
    }

    /// The idle pool of the calling thread's worker.
    fn here(&self) -> usize {
        crate::supervisor::current_worker().unwrap_or(0) % self.idle.len().max(1)
    }

    /// A pooled connection to `backend`, or a new one. `fresh` skips the pool (the
    /// retry after a stale keep-alive).
    pub async fn checkout(&self, backend: &Backend, fresh: bool) -> Result<Conn, ProxyError> {
        let addr = backend.address();
        let pool = self.here();
        if !fresh {
            if let Some(sender) = self.take_idle(pool, addr) {
                return Ok(Conn {
                    sender,
                    reused: true,
                    addr,
                    pool,
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
            pool,
        })
    }

    fn take_idle(&self, pool: usize, addr: SocketAddr) -> Option<SendRequest<Body>> {
        let mut idle = crate::sync::lock(self.idle.get(pool)?);
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
        let Some(pool) = self.idle.get(conn.pool) else {
            return;
        };
        let mut idle = crate::sync::lock(pool);
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

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::BackendConfig;
    use shared::events::EventLog;

    /// Checks a connection out on `worker`, says whether it was pooled, and checks it
    /// back in there (the connection's driver runs on that worker).
    async fn round_trip(
        tasks: &Tasks,
        client: &Arc<BackendClient>,
        backend: &Arc<Backend>,
        worker: usize,
    ) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (client, backend) = (Arc::clone(client), Arc::clone(backend));
        tasks.spawn_on_worker(worker, async move {
            let mut conn = client.checkout(&backend, false).await.expect("connect");
            let reused = conn.reused;
            // Parked at once, not by a waiter task that could run after the next
            // checkout.
            conn.sender.ready().await.expect("ready");
            client.checkin(conn);
            let _ = tx.send(reused);
        });
        rx.await.expect("the worker answered")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_worker_takes_only_from_its_own_idle_pool() {
        // A backend that accepts and keeps every connection open (no request is
        // sent: an HTTP/1 handshake is local).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(s);
            }
        });
        let backend = Backend::new(
            "web",
            &BackendConfig {
                name: "web1".into(),
                address: addr,
                weight: 1,
                backup: false,
            },
            Arc::new(EventLog::default()),
        );
        let tasks = Tasks::with_workers(2).expect("workers");
        let client = Arc::new(BackendClient::new(
            None,
            Duration::from_secs(2),
            Duration::from_secs(30),
            tasks.clone(),
        ));
        assert!(
            !round_trip(&tasks, &client, &backend, 0).await,
            "first on 0: new"
        );
        assert!(
            round_trip(&tasks, &client, &backend, 0).await,
            "0 reuses its own"
        );
        assert!(
            !round_trip(&tasks, &client, &backend, 1).await,
            "1 does not take 0's connection"
        );
        assert!(
            round_trip(&tasks, &client, &backend, 1).await,
            "1 reuses its own"
        );
        assert!(round_trip(&tasks, &client, &backend, 0).await);
        assert_eq!(client.idle_count(addr), 2, "one idle per worker");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
    }
}
