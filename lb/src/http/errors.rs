//! Why a proxied request failed, as data: which side failed (client or backend), at
//! which stage, and whether the request may be retried elsewhere. Retry decisions,
//! outlier reports, the status returned to the client and the metrics all read these
//! fields — never an error's text.
//!
//! | variant | side | status | retry |
//! |---|---|---|---|
//! | `NoBackend` | - | 503 + `Retry-After` | no |
//! | `Connect` | backend | 502 | yes (nothing was sent) |
//! | `NotSent` (stale pooled connection) | backend | 502 | yes (request handed back) |
//! | `BeforeResponse` | backend | 502 | only idempotent without body, once |
//! | `BeforeResponse` (the request body failed) | client | 400 | no |
//! | `Timeout` | backend | 504 | no |
//! | `BodyStalled` | client | 408 | no |
//! | `Client` | client | (connection gone) | no |

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::Body;

/// The side of the proxy that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (went away, sent a broken body).
    Client,
    /// The backend (refused, reset, timed out, spoke garbage).
    Backend,
    /// Neither: nothing to send the request to.
    Proxy,
}

/// A failed attempt to proxy one request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No backend is in rotation (or every one was tried).
    #[error("no backend available")]
    NoBackend,
    /// Connecting (TCP, TLS or the HTTP handshake) to the backend failed.
    #[error("connect to {backend}: {reason}")]
    Connect {
        /// Backend name.
        backend: String,
        /// Human reason for the log.
        reason: String,
    },
    /// A pooled connection turned out closed before the request was written; the
    /// request was handed back untouched.
    #[error("pooled connection to {backend} closed before the request was sent")]
    NotSent {
        /// Backend name.
        backend: String,
    },
    /// The backend failed after the request was (partly) sent, before any response
    /// byte arrived.
    #[error("{backend} failed before responding: {source}")]
    BeforeResponse {
        /// Backend name.
        backend: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// `backend_timeout` passed without a response head.
    #[error("{backend} sent no response within {timeout:?}")]
    Timeout {
        /// Backend name.
        backend: String,
        /// The configured bound.
        timeout: std::time::Duration,
    },
    /// The client paused its request body upload for longer than `body_timeout`;
    /// the backend request was abandoned.
    #[error("client sent no request body bytes for {timeout:?}")]
    BodyStalled {
        /// The configured bound.
        timeout: std::time::Duration,
    },
    /// The client side failed (e.g. its request body broke off while being streamed).
    #[error("client: {0}")]
    Client(String),
}

/// The error a request body ends with when its client stalls past `body_timeout`;
/// the proxy finds it in hyper's error chain to answer 408 and blame the client.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes from the client for {0:?}")]
pub struct BodyStalled(pub std::time::Duration);

impl BodyStalled {
    /// The stall bound, when `e` (a backend request's failure) was caused by one.
    pub fn found_in(e: &(dyn std::error::Error + 'static)) -> Option<std::time::Duration> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(s) = err.downcast_ref::<BodyStalled>() {
                return Some(s.0);
            }
            cur = err.source();
        }
        None
    }
}

impl ProxyError {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoBackend => Side::Proxy,
            ProxyError::Client(_) | ProxyError::BodyStalled { .. } => Side::Client,
            ProxyError::BeforeResponse { source, .. } if source.is_user() => Side::Client,
            _ => Side::Backend,
        }
    }

    /// Whether the request may go to another backend *regardless of its method*:
    /// true only when no byte of it left the proxy.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. } | ProxyError::NotSent { .. }
        )
    }

    /// Whether an idempotent request without a body may be retried once elsewhere:
    /// the backend failed before any response byte.
    pub fn retry_if_idempotent(&self) -> bool {
        self.nothing_sent()
            || matches!(self, ProxyError::BeforeResponse { .. }) && self.side() == Side::Backend
    }

    /// Counts against the backend's passive-ejection record.
    pub fn blames_backend(&self) -> bool {
        self.side() == Side::Backend && !matches!(self, ProxyError::NotSent { .. })
    }

    /// The status the client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Client(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyStalled { .. } => StatusCode::REQUEST_TIMEOUT,
            // The client's upload broke off or was malformed (RFC 9112 §7.1: a bad
            // chunked body is the client's error): not a gateway failure.
            ProxyError::BeforeResponse { .. } if self.side() == Side::Client => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A short label for metrics and logs: the `kind` of a backend error, the
    /// `reason` of a client error.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoBackend => "no_backend",
            ProxyError::Connect { .. } => "connect",
            ProxyError::NotSent { .. } => "not_sent",
            ProxyError::BeforeResponse { .. } if self.side() == Side::Client => "body",
            ProxyError::BeforeResponse { .. } => "backend",
            ProxyError::Timeout { .. } => "timeout",
            ProxyError::BodyStalled { .. } => "body_timeout",
            ProxyError::Client(_) => "body",
        }
    }
}

/// A short plain-text response generated by the proxy itself (`Connection: close`
/// is left to hyper; these are ordinary responses on a healthy client connection).
pub fn local_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(super::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// The client-facing response for a failed request.
pub fn error_response(err: &ProxyError) -> Response<Body> {
    let text = match err.status() {
        StatusCode::SERVICE_UNAVAILABLE => "503 Service Unavailable: no backend in rotation\n",
        StatusCode::GATEWAY_TIMEOUT => "504 Gateway Timeout: the backend did not answer in time\n",
        StatusCode::BAD_REQUEST => "400 Bad Request\n",
        StatusCode::REQUEST_TIMEOUT => "408 Request Timeout: the request body stopped arriving\n",
        _ => "502 Bad Gateway: the backend failed\n",
    };
    local_response(err.status(), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_rules_read_fields() {
        let c = ProxyError::Connect {
            backend: "a".into(),
            reason: "refused".into(),
        };
        assert!(c.nothing_sent() && c.retry_if_idempotent() && c.blames_backend());
        assert_eq!(c.status(), StatusCode::BAD_GATEWAY);
        let n = ProxyError::NotSent {
            backend: "a".into(),
        };
        assert!(n.nothing_sent() && !n.blames_backend());
        let t = ProxyError::Timeout {
            backend: "a".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        assert!(!t.retry_if_idempotent() && t.blames_backend());
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(ProxyError::NoBackend.side(), Side::Proxy);
        let r = error_response(&ProxyError::NoBackend);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key(header::RETRY_AFTER));
    }
}
