//! The `http` probe: `GET path` over HTTP/1.1 (hyper's client connection, over TLS
//! when `tls = true`) with `Host`, `Connection: close` and `User-Agent: portico-probe`;
//! passes when the status is expected and, if configured, the body (first 64 KiB)
//! contains the expected text. [`exchange`] is the one request/response round trip
//! the `mapi` and `lb_status` probes reuse.

use std::error::Error as _;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::conn::Endpoint;
use super::{Probe, ProbeError, ProbeFuture};
use crate::config::ProbeConfig;

/// Most body bytes a probe reads.
pub(crate) const BODY_CAP: usize = 64 * 1024;

/// The part of a response a probe judges.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// At most the requested cap.
    pub(crate) body: Bytes,
    /// The body was longer than the cap.
    pub(crate) truncated: bool,
}

/// The `Host` header value: the configured host, else the target address.
pub(crate) fn host_header(cfg: &ProbeConfig, endpoint: &Endpoint) -> Result<HeaderValue, String> {
    let host = match &cfg.host {
        Some(h) => h.clone(),
        None => endpoint.target.to_string(),
    };
    HeaderValue::from_str(&host).map_err(|_| format!("invalid host {host:?}"))
}

/// One HTTP/1.1 exchange on a fresh connection; reads at most `body_cap` body bytes.
pub(crate) async fn exchange(
    endpoint: &Endpoint,
    request: Request<Empty<Bytes>>,
    body_cap: usize,
) -> Result<Answer, ProbeError> {
    let io = endpoint.open().await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| hyper_error(&e))?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| hyper_error(&e))?;
        let (parts, mut body) = response.into_parts();
        let mut buf = BytesMut::new();
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| hyper_error(&e))?;
            if let Ok(data) = frame.into_data() {
                let room = body_cap - buf.len();
                if data.len() > room {
                    buf.extend_from_slice(&data[..room]);
                    truncated = true;
                    break;
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: buf.freeze(),
            truncated,
        })
    };
    // Drive the connection in this future (no spawned task outlives a timed-out probe).
    tokio::pin!(conn);
    tokio::pin!(exchange);
    tokio::select! {
        answer = &mut exchange => answer,
        done = &mut conn => match done {
            Ok(()) => exchange.await,
            Err(e) => Err(hyper_error(&e)),
        },
    }
}

/// Maps a hyper error to a probe reason: a peer that closed early reads as such.
fn hyper_error(e: &hyper::Error) -> ProbeError {
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        return ProbeError::Closed("HTTP exchange");
    }
    if let Some(io) = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
        return super::conn::io_error(
            std::io::Error::new(io.kind(), io.to_string()),
            "HTTP exchange",
        );
    }
    ProbeError::Protocol(format!("http: {e}"))
}

/// Builds a request with the probe's common headers.
pub(crate) fn request(method: Method, path: &str, host: &HeaderValue) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host.clone())
        .header(http::header::CONNECTION, "close")
        .header(http::header::USER_AGENT, "portico-probe")
}

/// Pure verdict on an answer: status among `expect_status`, body contains `expect_body`.
pub fn judge(
    status: u16,
    body: &[u8],
    expect_status: &[u16],
    expect_body: Option<&str>,
) -> Result<(), ProbeError> {
    if !expect_status.contains(&status) {
        return Err(ProbeError::Status(status));
    }
    if let Some(needle) = expect_body {
        let found = needle.is_empty() || body.windows(needle.len()).any(|w| w == needle.as_bytes());
        if !found {
            return Err(ProbeError::Body(needle.to_string()));
        }
    }
    Ok(())
}

/// GET with expected status and optional body text.
pub struct HttpProbe {
    endpoint: Endpoint,
    path: String,
    host: HeaderValue,
    expect_status: Vec<u16>,
    expect_body: Option<String>,
}

impl HttpProbe {
    pub(crate) fn new(endpoint: Endpoint, cfg: &ProbeConfig) -> Result<Self, String> {
        let host = host_header(cfg, &endpoint)?;
        check_path(&cfg.path)?;
        Ok(HttpProbe {
            endpoint,
            path: cfg.path.clone(),
            host,
            expect_status: if cfg.expect_status.is_empty() {
                vec![200]
            } else {
                cfg.expect_status.clone()
            },
            expect_body: cfg.expect_body.clone(),
        })
    }

    async fn run(&self) -> Result<(), ProbeError> {
        let req = request(Method::GET, &self.path, &self.host)
            .body(Empty::new())
            .map_err(|e| ProbeError::Protocol(e.to_string()))?;
        let cap = if self.expect_body.is_some() {
            BODY_CAP
        } else {
            0
        };
        let answer = exchange(&self.endpoint, req, cap).await?;
        judge(
            answer.status.as_u16(),
            &answer.body,
            &self.expect_status,
            self.expect_body.as_deref(),
        )
    }
}

/// Rejects paths hyper could not send, at build time rather than on every check.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.parse::<http::Uri>().is_err() {
        return Err(format!("invalid probe path {path:?}"));
    }
    Ok(())
}

impl Probe for HttpProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(judge(200, b"", &[200], None), Ok(()));
        assert_eq!(judge(204, b"", &[200, 204], None), Ok(()));
        assert_eq!(judge(503, b"", &[200], None), Err(ProbeError::Status(503)));
        assert_eq!(judge(200, b"all good", &[200], Some("good")), Ok(()));
        assert_eq!(
            judge(200, b"all bad", &[200], Some("good")),
            Err(ProbeError::Body("good".into()))
        );
        assert_eq!(judge(200, b"", &[200], Some("")), Ok(()));
        assert_eq!(
            ProbeError::Status(503).to_string(),
            "http status 503",
            "operator-facing reason"
        );
    }

    #[test]
    fn paths() {
        assert!(check_path("/health").is_ok());
        assert!(check_path("/mapi/emsmdb/?a=b").is_ok());
        assert!(check_path("health").is_err());
        assert!(check_path("/a b").is_err());
    }
}
