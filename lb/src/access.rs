//! Access log: with `access_log = true` on a VIP, one `info` event with target
//! `portico::access` per finished L4 connection or L7 request, so an operator can
//! answer "what happened to this user's connection" (which backend, what status, how
//! long, how many bytes) from the logs, as HAProxy's `option httplog` or NGINX's
//! `access_log` do. Fields are structured (`--log-format json` prints one object per
//! line); `RUST_LOG=warn,portico::access=info` keeps only these among quiet logs.
//!
//! Both shapes are written here so their field names stay the same everywhere:
//! `vip`, `client`, `backend` (`-` when none was reached) and `duration_ms` on every
//! line; L4 adds `to_backend`, `to_client` (bytes; 0 when the relay ended in an error,
//! whose bytes still count in the backend's byte counters) and `end` (`closed`,
//! `client_error`, `backend_error`, `idle_timeout`, `refused`); L7 adds `method`, `host`,
//! `path`, `version`, `status`, `retries`, `head_ms` (until the response head) and
//! `bytes` (response body bytes relayed; `aborted` when the client left first).

use std::net::SocketAddr;
use tokio::time::Instant;

use http::{HeaderValue, Method, StatusCode, Uri, Version};

/// The target the access events carry (for log filters).
pub(crate) const TARGET: &str = "portico::access";

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One finished L4 connection; `end` is `closed` or which side failed.
pub(crate) fn connection(
    vip: &str,
    client: SocketAddr,
    backend: &str,
    started: impl Into<Instant>,
    bytes: (u64, u64),
    end: &str,
) {
    tracing::info!(
        target: TARGET,
        vip,
        client = %client,
        backend,
        to_backend = bytes.0,
        to_client = bytes.1,
        duration_ms = ms(started.into()),
        end,
        "connection"
    );
}

/// What an L7 access line says about the request, collected when it arrives.
#[derive(Debug)]
pub(crate) struct Request {
    /// VIP name.
    pub vip: String,
    /// The client's address.
    pub client: SocketAddr,
    /// Request method.
    pub method: Method,
    /// Host header or `:authority`.
    pub host: Option<HeaderValue>,
    /// The target as sent to the backend (origin form).
    pub path: Uri,
    /// The client's HTTP version.
    pub version: Version,
    /// When the request arrived.
    pub started: Instant,
}

impl Request {
    /// Logs a request the proxy answered itself with `status` after `attempts`
    /// tries, the last on `backend` (`-` when none was reached).
    pub(crate) fn log_failed(&self, backend: &str, status: StatusCode, attempts: usize) {
        let retries = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
        self.log(backend, status, retries, Instant::now(), 0, false);
    }

    /// Logs the outcome: `status` from `backend` (`-` for the proxy's own answers),
    /// after `retries` further attempts, the head at `head`, `bytes` of body relayed.
    pub(crate) fn log(
        &self,
        backend: &str,
        status: StatusCode,
        retries: u32,
        head: Instant,
        bytes: u64,
        aborted: bool,
    ) {
        let host = self
            .host
            .as_ref()
            .and_then(|h| h.to_str().ok())
            .unwrap_or("-");
        tracing::info!(
            target: TARGET,
            vip = %self.vip,
            client = %self.client,
            method = %self.method,
            host,
            path = %self.path,
            version = ?self.version,
            backend,
            status = status.as_u16(),
            retries,
            head_ms = u64::try_from(head.duration_since(self.started).as_millis()).unwrap_or(u64::MAX),
            duration_ms = ms(self.started),
            bytes,
            aborted,
            "request"
        );
    }
}
