//! Shared helpers of the L7 proxy tests: hyper backends with programmable handlers,
//! VIP configs parsed from TOML (so they are exactly what the loader produces), an
//! L7 VIP started through the lb with inert or injected probes, HTTP/1.1 and HTTP/2 clients, and a
//! bounded `eventually` poll instead of sleeps.

// Shared by several test crates: each uses a part, and `pub` is how they reach it.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb::http::{Body, HttpVip};
use lb::{Lb, LbOptions, Pool};
use shared::config::VipConfig;
use shared::events::EventLog;
use shared::probe::{Probe, ProbeFuture};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A probe that never finishes: backends stay in the `unknown` (in rotation) state.
pub struct Never;
impl Probe for Never {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(std::future::pending())
    }
}

/// A full body.
pub fn body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A test backend: an HTTP/1.1 server (with upgrades) on loopback.
pub struct TestBackend {
    pub addr: SocketAddr,
    /// Requests received.
    pub hits: Arc<AtomicUsize>,
    /// Connections accepted.
    pub conns: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl TestBackend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    pub fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
    /// Stops accepting (open connections continue).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a backend answering every request with `handler`.
pub async fn backend<F, Fut>(handler: F) -> TestBackend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let conns = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let handler = Arc::new(handler);
    {
        let (hits, conns, stop) = (hits.clone(), conns.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                conns.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let hits = hits.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, std::convert::Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
    }
    TestBackend {
        addr,
        hits,
        conns,
        stop,
    }
}

/// A backend answering `200` with `text`.
pub async fn text_backend(text: &'static str) -> TestBackend {
    backend(move |_req| async move { Response::new(body(text)) }).await
}

/// A backend that reads the whole request body, as an upload handler does, and
/// answers its length in bytes.
pub async fn length_backend() -> TestBackend {
    backend(|req| async move {
        let n = match req.into_body().collect().await {
            Ok(b) => b.to_bytes().len(),
            Err(_) => 0,
        };
        Response::new(body(n.to_string()))
    })
    .await
}

/// A backend that echoes the request headers it received as `name: value` lines.
pub async fn header_echo_backend() -> TestBackend {
    backend(|req| async move {
        let mut out = String::new();
        for (k, v) in req.headers() {
            out.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
        }
        Response::new(body(out))
    })
    .await
}

/// A loopback port with nothing listening (connects are refused).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// The config of VIP `web` in `mode` over `backends`, plus extra TOML keys. Its
/// probe rounds are an hour apart, so an inert probe never times out within a test
/// (even on the paused clock) and leaves every backend in rotation.
pub fn vip_config(mode: &str, backends: &[(&str, SocketAddr)], extra: &str) -> VipConfig {
    let list = backends
        .iter()
        .map(|(n, a)| format!("{{ name = \"{n}\", address = \"{a}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "[[vip]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\nmode = \"{mode}\"\nbackends = [{list}]\nprobe = {{ kind = \"http\", path = \"/\", interval = \"1h\", timeout = \"30m\" }}\n{extra}\n"
    );
    match shared::config::parse(&text, Path::new("test.toml")) {
        Ok(mut c) => c.vips.remove(0),
        Err(e) => panic!("config:\n{text}\n{e}"),
    }
}

/// A running L7 VIP, built the way production builds it: through [`Lb::start_with`].
pub struct Proxy {
    pub addr: SocketAddr,
    pub vip: Arc<HttpVip>,
    pub pool: Arc<Pool>,
    pub lb: Lb,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.vip.abort_connections();
    }
}

/// Starts `cfg` through the lb with inert probes (all backends in rotation, health
/// unknown).
pub async fn start(cfg: &VipConfig) -> Proxy {
    start_with_probes(cfg, |_| Arc::new(Never)).await
}

/// Starts `cfg` through the lb; backend `i` (config order) is probed by `probe(i)`.
pub async fn start_with_probes(cfg: &VipConfig, probe: impl Fn(usize) -> Arc<dyn Probe>) -> Proxy {
    let probes: Vec<(SocketAddr, Arc<dyn Probe>)> = cfg
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| (b.address, probe(i)))
        .collect();
    let options = LbOptions {
        probes: Arc::new(
            move |_: &shared::config::ProbeConfig,
                  addr: SocketAddr|
                  -> Result<Arc<dyn Probe>, shared::probe::BuildError> {
                Ok(probes
                    .iter()
                    .find(|(a, _)| *a == addr)
                    .map(|(_, p)| Arc::clone(p))
                    .unwrap_or_else(|| Arc::new(Never)))
            },
        ),
        ..LbOptions::default()
    };
    let lb = Lb::start_with(
        std::slice::from_ref(cfg),
        Arc::new(EventLog::default()),
        options,
    )
    .await
    .expect("lb start");
    Proxy {
        addr: lb.local_addr(&cfg.name).expect("addr"),
        vip: lb.http(&cfg.name).expect("http vip"),
        pool: lb.pool(&cfg.name).expect("pool"),
        lb,
    }
}

/// An HTTP/1.1 client connection.
pub async fn h1_conn(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    send
}

/// A collected response.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// Collects a response (bounded by 10 s).
pub async fn collect(resp: Response<Incoming>) -> Got {
    let (parts, b) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), b.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Sends `req` on a new HTTP/1.1 connection and collects the answer.
pub async fn send(addr: SocketAddr, req: Request<Body>) -> Got {
    let mut c = h1_conn(addr).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), c.send_request(req))
        .await
        .expect("response in time")
        .expect("response");
    collect(resp).await
}

/// `GET path` with extra headers.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut b = Request::get(path).header("host", "webmail.example.test");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(addr, b.body(body("")).expect("request")).await
}

/// Writes raw bytes and reads until the peer closes (bounded by `limit`); returns
/// what was read and whether the peer closed in time.
pub async fn raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (String, bool) {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Polls `cond` every 10 ms until true or `limit` passes.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An HTTP/2 connection over any stream.
pub async fn h2_conn<I>(io: I) -> hyper::client::conn::http2::SendRequest<Body>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}
