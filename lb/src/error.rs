//! Errors of the lb role, L4 and L7 alike. [`ProxyError`] records which [`Side`]
//! failed and whether the connection (or request) may safely be retried on another
//! backend; the retry logic, outlier reports, the status an HTTP client gets and the
//! metrics read those fields, never the message. [`LbError`] covers starting and
//! reloading, [`SetupError`] and [`CertError`] an HTTP VIP's setup.
//!
//! HTTP requests (`http/`):
//!
//! | variant | side | status | retry |
//! |---|---|---|---|
//! | `NoBackend` | - | 503 + `Retry-After` | no |
//! | `HttpConnect` | backend | 502 | yes (nothing was sent) |
//! | `NotSent` (stale pooled connection) | backend | 502 | yes (request handed back) |
//! | `BeforeResponse` | backend | 502 | only idempotent without body, once |
//! | `BeforeResponse` (the request body failed) | client | 400 | no |
//! | `Timeout` | backend | 504 | no |
//! | `BodyStalled` | client | 408 | no |
//! | `Client` | client | (connection gone) | no |
//!
//! L4 connections (`l4/`): the connect-phase variants (`Connect`, `ConnectTimeout`,
//! `ProxyHeader` and the greeting ones) blame the backend and may be retried;
//! `Read`/`Write` name their leg; `Idle` blames neither.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use shared::tls::TlsError;

/// Which leg of a proxied connection (or request) an error happened on. A failure of
/// neither leg (no backend, an idle timeout) has no side: `ProxyError::side` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's connection to the VIP.
    Client,
    /// Portico's connection to the backend.
    Backend,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Backend => "backend",
        })
    }
}

/// Why one proxied connection or request (or one attempt at it) ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// L4: the backend refused or was unreachable.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Backend address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The backend did not accept within `connect_timeout`.
    #[error("connect to {addr}: timeout after {}ms", .timeout.as_millis())]
    ConnectTimeout {
        /// Backend address.
        addr: SocketAddr,
        /// The bound that expired.
        timeout: Duration,
    },
    /// Writing the PROXY header to a freshly connected backend failed.
    #[error("PROXY header to {addr}: {source}")]
    ProxyHeader {
        /// Backend address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A backend of a server-speaks-first protocol (SMTP, IMAP, POP3) closed or
    /// reset before sending its greeting: nothing reached the client, so another
    /// backend can be tried (a dying node's listener still accepts for a moment).
    #[error("{addr} closed before its greeting{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NoGreeting {
        /// Backend address.
        addr: SocketAddr,
        /// The OS error, when it was a reset rather than a close.
        #[source]
        source: Option<io::Error>,
    },
    /// A server-speaks-first backend accepted but sent no complete greeting within
    /// `greeting_timeout` (a stopped or overloaded process; the kernel still accepts).
    #[error("{addr} sent no greeting within {}ms", .timeout.as_millis())]
    GreetingTimeout {
        /// Backend address.
        addr: SocketAddr,
        /// The bound that expired.
        timeout: Duration,
    },
    /// The backend greeted with a refusal (`421`, `* BYE`, `-ERR`) or with something
    /// that is not a greeting of the VIP's protocol.
    #[error("{addr} greeted {reply:?}")]
    BadGreeting {
        /// Backend address.
        addr: SocketAddr,
        /// The greeting's first line (clipped), or what was wrong with it.
        reply: String,
    },
    /// Reading from one leg failed.
    #[error("{side} read: {source}")]
    Read {
        /// The leg read from.
        side: Side,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing to one leg failed.
    #[error("{side} write: {source}")]
    Write {
        /// The leg written to.
        side: Side,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No traffic either way for the idle timeout.
    #[error("idle for {}s", .0.as_secs())]
    Idle(Duration),
    /// HTTP: no backend is in rotation (or every one was tried).
    #[error("no backend available")]
    NoBackend,
    /// HTTP: connecting (TCP, TLS or the HTTP handshake) to the backend failed.
    #[error("connect to {backend}: {reason}")]
    HttpConnect {
        /// Backend name.
        backend: String,
        /// Human reason for the log.
        reason: String,
    },
    /// HTTP: a pooled connection turned out closed before the request was written;
    /// the request was handed back untouched.
    #[error("pooled connection to {backend} closed before the request was sent")]
    NotSent {
        /// Backend name.
        backend: String,
    },
    /// HTTP: the backend failed after the request was (partly) sent, before any
    /// response byte arrived.
    #[error("{backend} failed before responding: {source}")]
    BeforeResponse {
        /// Backend name.
        backend: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// HTTP: `backend_timeout` passed without a response head.
    #[error("{backend} sent no response within {timeout:?}")]
    Timeout {
        /// Backend name.
        backend: String,
        /// The configured bound.
        timeout: Duration,
    },
    /// HTTP: the client paused its request body upload for longer than
    /// `body_timeout`; the backend request was abandoned.
    #[error("client sent no request body bytes for {timeout:?}")]
    BodyStalled {
        /// The configured bound.
        timeout: Duration,
    },
    /// HTTP: the client side failed (e.g. its request body broke off while being
    /// streamed).
    #[error("client: {0}")]
    Client(String),
}

impl ProxyError {
    /// The leg that failed; `None` when neither did (an idle timeout, no backend).
    pub fn side(&self) -> Option<Side> {
        match self {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::ProxyHeader { .. }
            | ProxyError::NoGreeting { .. }
            | ProxyError::GreetingTimeout { .. }
            | ProxyError::BadGreeting { .. } => Some(Side::Backend),
            ProxyError::Read { side, .. } | ProxyError::Write { side, .. } => Some(*side),
            ProxyError::Idle(_) | ProxyError::NoBackend => None,
            ProxyError::Client(_) | ProxyError::BodyStalled { .. } => Some(Side::Client),
            ProxyError::BeforeResponse { source, .. } if source.is_user() => Some(Side::Client),
            ProxyError::HttpConnect { .. }
            | ProxyError::NotSent { .. }
            | ProxyError::BeforeResponse { .. }
            | ProxyError::Timeout { .. } => Some(Side::Backend),
        }
    }

    /// True when no byte has left the proxy yet, so another backend may be tried
    /// without the client noticing (for HTTP: regardless of the request's method).
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::ProxyHeader { .. }
                | ProxyError::NoGreeting { .. }
                | ProxyError::GreetingTimeout { .. }
                | ProxyError::BadGreeting { .. }
                | ProxyError::HttpConnect { .. }
                | ProxyError::NotSent { .. }
        )
    }

    /// Whether an idempotent HTTP request without a body may be retried once
    /// elsewhere: the backend failed before any response byte.
    pub fn retry_if_idempotent(&self) -> bool {
        self.retry_safe()
            || matches!(self, ProxyError::BeforeResponse { .. })
                && self.side() == Some(Side::Backend)
    }

    /// True for failures of the greeting phase (counted on their own as well).
    pub fn is_greeting(&self) -> bool {
        matches!(
            self,
            ProxyError::NoGreeting { .. }
                | ProxyError::GreetingTimeout { .. }
                | ProxyError::BadGreeting { .. }
        )
    }

    /// True when the failure counts against the backend for passive ejection: a
    /// backend-side failure, except a relay's read or write (the connection had
    /// worked) and a stale pooled connection (the backend merely closed it).
    pub fn blames_backend(&self) -> bool {
        match self {
            ProxyError::Read { .. } | ProxyError::Write { .. } | ProxyError::NotSent { .. } => {
                false
            }
            _ => self.side() == Some(Side::Backend),
        }
    }

    /// The status an HTTP client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Client(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            // The client's upload broke off or was malformed (RFC 9112 §7.1: a bad
            // chunked body is the client's error): not a gateway failure.
            ProxyError::BeforeResponse { .. } if self.side() == Some(Side::Client) => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short label for the HTTP metrics and logs: the `kind` of a backend error,
    /// the `reason` of a client error. L4 connections label their ends in
    /// `l4::tcp` instead; their variants get the label of their phase.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoBackend => "no_backend",
            ProxyError::HttpConnect { .. } => "connect",
            ProxyError::NotSent { .. } => "not_sent",
            ProxyError::BeforeResponse { .. } if self.side() == Some(Side::Client) => "body",
            ProxyError::BeforeResponse { .. } => "backend",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::BodyStalled { .. } => "body_timeout",
            ProxyError::Client(_) => "body",
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::ProxyHeader { .. } => "connect",
            ProxyError::NoGreeting { .. }
            | ProxyError::GreetingTimeout { .. }
            | ProxyError::BadGreeting { .. } => "greeting",
            ProxyError::Read { .. } | ProxyError::Write { .. } => "relay",
            ProxyError::Idle(_) => "idle_timeout",
        }
    }
}

/// Why an HTTP VIP could not be built or reloaded.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `mode = "https"` without certificates.
    #[error("vip {0}: mode \"https\" needs a tls section")]
    NoTls(String),
    /// A certificate or key failed to load.
    #[error("vip {vip}: {source}")]
    Certs {
        /// The VIP.
        vip: String,
        /// The cause.
        #[source]
        source: CertError,
    },
    /// Backend TLS could not be configured (CA file, SNI name).
    #[error("vip {vip}: backend tls: {reason}")]
    BackendTls {
        /// The VIP.
        vip: String,
        /// The cause.
        reason: String,
    },
    /// The VIP is not an L7 VIP.
    #[error("vip {0} is mode \"tcp\"")]
    NotHttp(String),
    /// No running `https` VIP has that name (a certificate reload).
    #[error("vip {0}: no running https vip by that name")]
    NotHttps(String),
}

/// Why a VIP's certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The TLS section has no pair.
    #[error("no certificate configured")]
    Empty,
    /// A file could not be read or parsed.
    #[error(transparent)]
    File(#[from] TlsError),
    /// The key does not fit the certificate, or rustls rejected it.
    #[error("{}: {reason}", path.display())]
    Pair {
        /// The certificate file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Starting or reloading the lb failed; nothing was changed by a failed reload.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A VIP's listen address could not be bound.
    #[error("vip {vip}: cannot listen on {addr}: {source}")]
    Bind {
        /// VIP name.
        vip: String,
        /// Configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An L7 VIP could not be set up (certificates, backend TLS).
    #[error(transparent)]
    Http(#[from] SetupError),
    /// A backend's probe could not be built (e.g. unreadable CA file).
    #[error("vip {vip}: backend {backend}: probe: {message}")]
    Probe {
        /// VIP name.
        vip: String,
        /// Backend name.
        backend: String,
        /// Why.
        message: String,
    },
    /// The data-path worker threads could not be started.
    #[error("starting {workers} data-path workers: {source}")]
    Workers {
        /// How many were asked for.
        workers: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_retry_safe_and_blame_the_backend() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let e = ProxyError::Connect {
            addr,
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert!(e.retry_safe() && e.blames_backend());
        assert_eq!(e.side(), Some(Side::Backend));
        let e = ProxyError::Read {
            side: Side::Client,
            source: io::Error::from(io::ErrorKind::ConnectionReset),
        };
        assert!(!e.retry_safe());
        assert_eq!(e.side(), Some(Side::Client));
        assert_eq!(ProxyError::Idle(Duration::from_secs(5)).side(), None);
    }

    #[test]
    fn retry_rules_read_fields() {
        let c = ProxyError::HttpConnect {
            backend: "a".into(),
            reason: "refused".into(),
        };
        assert!(c.retry_safe() && c.retry_if_idempotent() && c.blames_backend());
        assert_eq!(c.status(), StatusCode::BAD_GATEWAY);
        let n = ProxyError::NotSent {
            backend: "a".into(),
        };
        assert!(n.retry_safe() && !n.blames_backend());
        let t = ProxyError::Timeout {
            backend: "a".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert!(!t.retry_if_idempotent() && t.blames_backend());
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ProxyError::NoBackend.side(), None);
    }
}
