//! The status/metrics HTTP listener: `GET /status` (the SPEC's JSON document),
//! `GET /metrics` (Prometheus text), `GET /ready` (200 only between the first probe
//! verdicts and the start of shutdown, for Kubernetes-style readiness probes and
//! outside balancers) and a read-only status page at `GET /` (HTML, CSS and script
//! embedded in the binary, no outside assets; it polls `GET /page.json`). The bodies come from closures the binary supplies, so this
//! crate stays ignorant of the roles and of the metrics exporter.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::status::{PageDoc, StatusDoc};

/// Produces the current status document.
pub type StatusFn = Arc<dyn Fn() -> StatusDoc + Send + Sync>;
/// Produces the current Prometheus exposition.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;
/// Produces the status page's data.
pub type PageFn = Arc<dyn Fn() -> PageDoc + Send + Sync>;
/// Says where the process is in its life, for `GET /ready`.
pub type ReadyFn = Arc<dyn Fn() -> Readiness + Send + Sync>;

/// The phases `GET /ready` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Listeners are open but the first probe verdicts are not all in.
    Starting,
    /// Serving with known health.
    Ready,
    /// Shutting down (draining): take this instance out of rotation.
    Stopping,
}

impl Readiness {
    /// The word `GET /ready` answers with.
    pub fn as_str(self) -> &'static str {
        match self {
            Readiness::Starting => "starting",
            Readiness::Ready => "ready",
            Readiness::Stopping => "stopping",
        }
    }
}

/// What the listener serves.
#[derive(Clone)]
pub struct Endpoints {
    /// `GET /status`.
    pub status: StatusFn,
    /// `GET /metrics`.
    pub metrics: MetricsFn,
    /// `GET /ready`.
    pub ready: ReadyFn,
    /// `GET /page.json`, behind the status page.
    pub page: PageFn,
}

const PAGE_HTML: &str = include_str!("status_page/index.html");
const PAGE_JS: &str = include_str!("status_page/page.js");
const PAGE_CSS: &str = include_str!("status_page/page.css");

/// The status page's own assets only, no inline script, no framing.
fn page_asset(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = reply(StatusCode::OK, content_type, body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    resp
}

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn route(req: &Request<Incoming>, ep: &Endpoints) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match req.uri().path() {
        "/status" => match serde_json::to_vec(&(ep.status)()) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            (ep.metrics)(),
        ),
        "/" => page_asset("text/html; charset=utf-8", PAGE_HTML),
        "/page.js" => page_asset("text/javascript; charset=utf-8", PAGE_JS),
        "/page.css" => page_asset("text/css; charset=utf-8", PAGE_CSS),
        "/page.json" => match serde_json::to_vec(&(ep.page)()) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        "/ready" => {
            let phase = (ep.ready)();
            let code = match phase {
                Readiness::Ready => StatusCode::OK,
                Readiness::Starting | Readiness::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            };
            reply(code, "text/plain", format!("{}\n", phase.as_str()))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /, /status, /metrics or /ready\n",
        ),
    }
}

/// Serves `endpoints` on an already bound listener until `cancel` fires.
pub async fn serve(listener: TcpListener, endpoints: Endpoints, cancel: CancellationToken) {
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("status listener accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let ep = endpoints.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = route(&req, &ep);
                async move { Ok::<_, Infallible>(resp) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = tokio::time::timeout(Duration::from_secs(60), conn) => {}
            }
        });
    }
}

/// Binds the status listener, naming the address on failure.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("status listener {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{SiteStatus, VipStatus};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_status_json_and_metrics_text() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status: StatusFn = Arc::new(|| StatusDoc {
            vips: vec![VipStatus {
                name: "smtp".into(),
                up: true,
                healthy: 1,
                total: 2,
                backends: vec![],
            }],
            sites: vec![SiteStatus {
                name: "dc1".into(),
                up: false,
                override_state: Some("down".into()),
            }],
        });
        let metrics: MetricsFn = Arc::new(|| "portico_up 1\n".to_string());
        let phase = Arc::new(std::sync::Mutex::new(Readiness::Starting));
        let ready: ReadyFn = {
            let phase = Arc::clone(&phase);
            Arc::new(move || *crate::sync::lock(&phase))
        };
        let cancel = CancellationToken::new();
        let ep = Endpoints {
            status,
            metrics,
            ready,
            page: Arc::new(PageDoc::default),
        };
        tokio::spawn(serve(listener, ep, cancel.clone()));

        let resp = get(addr, "/status").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        let body = resp.split("\r\n\r\n").nth(1).unwrap();
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc["vips"][0]["name"], "smtp");
        assert_eq!(doc["sites"][0]["override"], "down");
        let back: StatusDoc = serde_json::from_str(body).unwrap();
        assert_eq!(back.vips[0].healthy, 1);

        let resp = get(addr, "/metrics").await;
        assert!(
            resp.contains("text/plain; version=0.0.4") && resp.ends_with("portico_up 1\n"),
            "{resp}"
        );
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        let page = get(addr, "/").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("script-src 'self'"), "{page}");
        assert!(page.contains(r#"<script src="page.js""#), "{page}");
        assert!(get(addr, "/page.js").await.contains("textContent"));
        let data = get(addr, "/page.json").await;
        assert!(
            data.ends_with(r#"{"vips":[],"sites":[],"names":[],"events":[]}"#),
            "{data}"
        );

        for (set, code, word) in [
            (Readiness::Starting, "503", "starting"),
            (Readiness::Ready, "200", "ready"),
            (Readiness::Stopping, "503", "stopping"),
        ] {
            *crate::sync::lock(&phase) = set;
            let resp = get(addr, "/ready").await;
            assert!(
                resp.starts_with(&format!("HTTP/1.1 {code}"))
                    && resp.ends_with(&format!("{word}\n")),
                "{resp}"
            );
        }
        cancel.cancel();
    }
}
