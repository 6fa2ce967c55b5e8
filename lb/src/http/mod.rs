//! The L7 proxy for `mode = "http"` and `mode = "https"` VIPs: webmail, Outlook's
//! MAPI-over-HTTP and ActiveSync.
//!
//! One [`HttpVip`] per VIP serves the clients its slot's listener accepts (HTTP/1.1 and HTTP/2, ALPN on TLS), picks a
//! backend per request from the VIP's [`crate::pool::Pool`] (the same selection, leases, drain and
//! passive ejection as the L4 proxy), and relays the request over a pooled keep-alive
//! HTTP/1.1 connection. Bodies stream both ways under hyper's flow control, so memory
//! per request is bounded by buffer sizes, not body sizes; `Upgrade` (WebSocket) is
//! relayed as raw bytes after the 101; there is no request timeout unless
//! `backend_timeout` is set (and it runs from the end of the request body, so a slow
//! upload is not cut either), so ActiveSync long-polls are never cut.
//!
//! Modules: [`server`] accept loop and connection protection, [`proxy`] per-request
//! logic (selection, retries, outlier reports), [`client`] backend connections,
//! [`tls`] SNI certificates with reload, [`headers`] forwarding and hop-by-hop rules,
//! [`sticky`] cookie stickiness, [`errors`] the failure type.
//!
//! ## Metrics
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `portico_http_requests_total` | counter | vip | requests received |
//! | `portico_http_responses_total` | counter | vip, backend, class (`1xx`..`5xx`) | responses sent to clients; `backend="-"` for the proxy's own (503 no backend) |
//! | `portico_http_retries_total` | counter | vip | requests re-sent to another backend (or a fresh connection) |
//! | `portico_http_backend_errors_total` | counter | vip, backend, kind (`connect`/`not_sent`/`backend`/`timeout`) | failed attempts |
//! | `portico_http_connections_active` | gauge | vip | client connections open now |
//! | `portico_http_refused_total` | counter | vip, reason (`max_connections`/`tls_handshake`) | client connections refused before HTTP |
//! | `portico_http_client_errors_total` | counter | vip, reason | requests (or connections) that failed by the client's doing, never counted against a backend: `bad_head` (hyper's 400), `head_too_large` (431), `too_many_headers` (431), `bad_host` (400), `transfer_encoding` (501), `connect` (405), `body` (upload broken off or malformed: 400, or nothing when the client left), `body_timeout` (408), `bad_preface` (GOAWAY) |
//!
//! ## Operational notes
//!
//! * Slowloris: an HTTP/1 request head must arrive within `header_timeout` (also the
//!   idle keep-alive bound); a TLS handshake too. Heads over `max_header_size` get 431.
//! * Malformed requests get hyper's 400 and the connection is closed; the access log
//!   has a line for them too.
//! * `max_connections` refuses further connections (plain HTTP gets a 503).

pub mod client;
pub mod errors;
pub mod headers;
pub mod interim;
pub mod proxy;
pub mod server;
pub mod sticky;
pub mod tls;

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use shared::config::{HttpVipConfig, VipConfig, VipMode};
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::metrics::LazyCounter;
use crate::supervisor::Tasks;

pub use crate::error::{CertError, ProxyError, SetupError, Side};
pub use errors::BodyStalled;
pub use server::accept_loop;
pub use tls::CertStore;

/// `portico_http_requests_total{vip}`
pub const REQUESTS_TOTAL: &str = "portico_http_requests_total";
/// `portico_http_responses_total{vip,backend,class}`
pub const RESPONSES_TOTAL: &str = "portico_http_responses_total";
/// `portico_http_retries_total{vip}`
pub const RETRIES_TOTAL: &str = "portico_http_retries_total";
/// `portico_http_backend_errors_total{vip,backend,kind}`
pub const BACKEND_ERRORS_TOTAL: &str = "portico_http_backend_errors_total";
/// `portico_http_connections_active{vip}`
pub const CONNECTIONS_ACTIVE: &str = "portico_http_connections_active";
/// `portico_http_refused_total{vip,reason}`
pub const REFUSED_TOTAL: &str = "portico_http_refused_total";
/// `portico_http_client_errors_total{vip,reason}`
pub const CLIENT_ERRORS_TOTAL: &str = "portico_http_client_errors_total";

/// Describes the L7 metrics for the exporter; call once after installing it.
pub fn describe_metrics() {
    metrics::describe_counter!(REQUESTS_TOTAL, "HTTP requests received");
    metrics::describe_counter!(RESPONSES_TOTAL, "HTTP responses sent, by status class");
    metrics::describe_counter!(RETRIES_TOTAL, "HTTP requests re-sent elsewhere");
    metrics::describe_counter!(
        BACKEND_ERRORS_TOTAL,
        "Failed attempts to get a response from a backend"
    );
    metrics::describe_gauge!(CONNECTIONS_ACTIVE, "HTTP client connections open now");
    metrics::describe_counter!(REFUSED_TOTAL, "HTTP client connections refused before HTTP");
    metrics::describe_counter!(
        CLIENT_ERRORS_TOTAL,
        "HTTP requests that failed by the client's doing, by reason"
    );
}

/// Status classes of `portico_http_responses_total`, in index order.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Backend error kinds of `portico_http_backend_errors_total`, in index order.
const KINDS: [&str; 4] = ["connect", "not_sent", "backend", "timeout"];

/// The L7 counters of one VIP.
#[derive(Default)]
struct VipCounters {
    requests: LazyCounter,
    retries: LazyCounter,
    connections: OnceLock<metrics::Gauge>,
}

impl HttpVip {
    /// Counts a request received.
    fn count_request(&self) {
        self.counters
            .requests
            .increment(|| metrics::counter!(REQUESTS_TOTAL, "vip" => self.name.clone()));
    }

    /// Counts a retry.
    fn count_retry(&self) {
        self.counters
            .retries
            .increment(|| metrics::counter!(RETRIES_TOTAL, "vip" => self.name.clone()));
    }

    /// The `portico_http_connections_active{vip}` gauge.
    fn connections_gauge(&self) -> &metrics::Gauge {
        self.counters
            .connections
            .get_or_init(|| metrics::gauge!(CONNECTIONS_ACTIVE, "vip" => self.name.clone()))
    }

    /// Counts a response of status class `class` (index into [`CLASSES`]) from
    /// `backend`. Handles are cached in the backend when it belongs to this VIP.
    fn count_backend_response(&self, backend: &Backend, class: usize) {
        let label = CLASSES[class];
        if backend.vip() == self.name {
            backend.metrics.http.responses[class].increment(|| {
                metrics::counter!(RESPONSES_TOTAL, "vip" => self.name.clone(), "backend" => backend.name().to_string(), "class" => label)
            });
        } else {
            metrics::counter!(RESPONSES_TOTAL, "vip" => self.name.clone(), "backend" => backend.name().to_string(), "class" => label).increment(1);
        }
    }

    /// Counts a request that failed by the client's doing (rare: not cached).
    fn count_client_error(&self, reason: &'static str) {
        metrics::counter!(CLIENT_ERRORS_TOTAL, "vip" => self.name.clone(), "reason" => reason)
            .increment(1);
    }

    /// The access line of a request hyper refused before the handler saw it (an
    /// unparsable or oversized head): the same fields as every L7 line, with `-`
    /// for what could not be read.
    fn log_rejected(
        &self,
        client: std::net::SocketAddr,
        status: http::StatusCode,
        since: tokio::time::Instant,
    ) {
        tracing::info!(
            target: crate::access::TARGET,
            vip = %self.name,
            client = %client,
            method = "-",
            host = "-",
            path = "-",
            version = "-",
            backend = "-",
            status = status.as_u16(),
            retries = 0u32,
            head_ms = 0u64,
            duration_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes = 0u64,
            aborted = false,
            "request"
        );
    }

    /// Counts a failed attempt of kind `kind` on `backend`.
    fn count_backend_error(&self, backend: &Backend, kind: &'static str) {
        match KINDS.iter().position(|k| *k == kind) {
            Some(i) if backend.vip() == self.name => {
                backend.metrics.http.errors[i].increment(|| {
                    metrics::counter!(BACKEND_ERRORS_TOTAL, "vip" => self.name.clone(), "backend" => backend.name().to_string(), "kind" => kind)
                });
            }
            _ => {
                metrics::counter!(BACKEND_ERRORS_TOTAL, "vip" => self.name.clone(), "backend" => backend.name().to_string(), "kind" => kind).increment(1);
            }
        }
    }
}

/// The body type relayed in both directions: a boxed stream of frames, so backend,
/// client and locally generated bodies share one type without being collected. Its
/// error is boxed so the proxy can end a body with its own reason (a stalled upload,
/// [`errors::BodyStalled`]) and find it again in hyper's error chain.
pub type Body = BoxBody<Bytes, BoxError>;

/// The error type of [`Body`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A complete small body (error pages).
pub fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// An empty body (retried body-less requests).
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// Everything a reload may change in an L7 VIP without restarting its listener,
/// built whole by [`HttpVip::prepare`] and served from the lb's snapshot beside the
/// VIP's [`crate::VipState`], so a reload swaps it in the same store as every VIP's
/// config and pool. Connections take both per request, from one load.
pub struct Settings {
    pub(crate) http: HttpVipConfig,
    pub(crate) access_log: bool,
    pub(crate) accept_proxy: bool,
    pub(crate) retries: u32,
    pub(crate) client: Arc<client::BackendClient>,
    /// Identity of the backend-connection settings, to keep the pool across reloads
    /// that do not touch them.
    client_key: ClientKey,
    /// An HTTPS VIP's certificates (one store per reload; re-read in place by
    /// [`crate::Lb::reload_certs`]) and the TLS configuration resolving from them.
    tls: Option<(Arc<CertStore>, Arc<rustls::ServerConfig>)>,
}

impl Settings {
    /// The TLS configuration of new handshakes (`None` for plain HTTP).
    pub(crate) fn tls_config(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(|(_, config)| Arc::clone(config))
    }

    /// An HTTPS VIP's certificates.
    pub(crate) fn certs(&self) -> Option<&Arc<CertStore>> {
        self.tls.as_ref().map(|(store, _)| store)
    }
}

#[derive(Clone, PartialEq)]
struct ClientKey {
    tls: bool,
    ca: Option<std::path::PathBuf>,
    sni: Option<String>,
    verify: bool,
    connect_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
}

impl ClientKey {
    fn of(cfg: &VipConfig) -> ClientKey {
        ClientKey {
            tls: cfg.http.backend_tls,
            ca: cfg.http.backend_ca.clone(),
            sni: cfg.http.backend_sni.clone(),
            verify: cfg.http.backend_tls_verify,
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
        }
    }
}

/// How long a pooled backend connection may sit idle: the VIP's idle timeout, capped
/// well below common backend keep-alive timeouts (nginx 75 s) to avoid reusing a
/// connection the backend is closing.
fn pooled_idle(cfg: &VipConfig) -> std::time::Duration {
    cfg.idle_timeout.min(std::time::Duration::from_secs(30))
}

fn build_settings(
    cfg: &VipConfig,
    keep: Option<&Settings>,
    tasks: &Tasks,
) -> Result<Settings, SetupError> {
    let tls = match cfg.mode {
        VipMode::Tcp => return Err(SetupError::NotHttp(cfg.name.clone())),
        VipMode::Http => None,
        VipMode::Https => {
            let tls_cfg = cfg
                .tls
                .as_ref()
                .ok_or_else(|| SetupError::NoTls(cfg.name.clone()))?;
            let certs_err = |source| SetupError::Certs {
                vip: cfg.name.clone(),
                source,
            };
            let store = CertStore::load(tls_cfg, &cfg.http.ocsp).map_err(certs_err)?;
            let old = keep.and_then(|k| k.tls.as_ref()).map(|(_, c)| c.as_ref());
            let config = tls::server_config(&store, &cfg.http, old).map_err(certs_err)?;
            Some((store, config))
        }
    };
    let key = ClientKey::of(cfg);
    let client = match keep {
        Some(old) if old.client_key == key => Arc::clone(&old.client),
        _ => {
            let tls = if cfg.http.backend_tls {
                let config = shared::tls::client_config(
                    cfg.http.backend_tls_verify,
                    cfg.http.backend_ca.as_deref(),
                    &[b"http/1.1"],
                )
                .map_err(|e| SetupError::BackendTls {
                    vip: cfg.name.clone(),
                    reason: e.to_string(),
                })?;
                let sni =
                    match &cfg.http.backend_sni {
                        Some(s) => Some(shared::tls::server_name(s).map_err(|e| {
                            SetupError::BackendTls {
                                vip: cfg.name.clone(),
                                reason: e.to_string(),
                            }
                        })?),
                        None => None,
                    };
                Some(client::BackendTls { config, sni })
            } else {
                None
            };
            Arc::new(client::BackendClient::new(
                tls,
                cfg.connect_timeout,
                pooled_idle(cfg),
                tasks.clone(),
            ))
        }
    };
    Ok(Settings {
        http: cfg.http.clone(),
        access_log: cfg.access_log,
        accept_proxy: cfg.accept_proxy,
        retries: cfg.retries,
        client,
        client_key: key,
        tls,
    })
}

/// One L7 VIP's proxy: what lives as long as its listener (name, tasks, counters).
/// It knows nothing of the VIP's slot: the listener ([`accept_loop`]) is handed the
/// slot, which admits and counts each connection and, through the lb's snapshot,
/// holds the current pool and [`Settings`].
pub struct HttpVip {
    name: String,
    mode: VipMode,
    /// Owner of the connection and upgrade tasks.
    tasks: Tasks,
    /// Cached metric handles.
    counters: VipCounters,
    /// Ends every connection at once (after the drain period).
    kill: CancellationToken,
}

impl std::fmt::Debug for HttpVip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpVip")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .finish()
    }
}

impl HttpVip {
    /// Builds the VIP's proxy from its config, with its first [`Settings`]; its tasks
    /// belong to `tasks`. Loads the certificates of an HTTPS VIP and the backend TLS
    /// settings; errors name the VIP.
    pub fn new(cfg: &VipConfig, tasks: Tasks) -> Result<(Arc<HttpVip>, Settings), SetupError> {
        let settings = build_settings(cfg, None, &tasks)?;
        let vip = Arc::new(HttpVip {
            name: cfg.name.clone(),
            mode: cfg.mode,
            tasks,
            counters: VipCounters::default(),
            kill: CancellationToken::new(),
        });
        Ok((vip, settings))
    }

    /// VIP name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http` or `https`.
    pub fn mode(&self) -> VipMode {
        self.mode
    }

    /// Reads a reloaded config of the same VIP (same listen address and mode; the
    /// owner restarts the listener otherwise) into new [`Settings`]: certificates from
    /// the new paths, header/timeout/sticky/retry options, backend TLS. Changes
    /// nothing: the lb puts the result in its next snapshot once every VIP of the
    /// reload has prepared, so an error anywhere leaves all running settings as they
    /// are. The backend connection pool is kept when its settings did not change, and
    /// TLS session tickets and the session cache when the VIP stays HTTPS.
    pub fn prepare(&self, cfg: &VipConfig, old: &Settings) -> Result<Settings, SetupError> {
        build_settings(cfg, Some(old), &self.tasks)
    }

    /// Closes every client connection now (the end of the drain period).
    pub fn abort_connections(&self) {
        self.kill.cancel();
    }
}
