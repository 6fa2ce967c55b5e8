//! The `mapi` probe: a MAPI-over-HTTP PING (MS-OXCMAPIHTTP §2.2.6) — `POST path`
//! (default `/mapi/emsmdb/`) with `X-RequestType: PING`, `X-ClientInfo`,
//! `X-RequestId` and no body; passes on HTTP 200 with `X-ResponseCode: 0`.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use http_body_util::Empty;
use rand::Rng;

use super::conn::Endpoint;
use super::http::{check_path, exchange, host_header, request};
use super::{Probe, ProbeError, ProbeFuture};
use crate::config::ProbeConfig;

/// A random GUID in the `{8-4-4-4-12}` form Exchange clients send.
fn guid() -> String {
    let b: [u8; 16] = rand::thread_rng().gen();
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{{{}-{}-{}-{}-{}}}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

/// Pure verdict on a PING answer.
pub fn judge(status: u16, headers: &HeaderMap) -> Result<(), ProbeError> {
    if status != 200 {
        return Err(ProbeError::Status(status));
    }
    match headers.get("x-responsecode").map(|v| v.to_str()) {
        Some(Ok(code)) if code.trim() == "0" => Ok(()),
        Some(Ok(code)) => Err(ProbeError::MapiCode(code.trim().to_string())),
        Some(Err(_)) => Err(ProbeError::MapiCode("unreadable".into())),
        None => Err(ProbeError::MapiCode("missing".into())),
    }
}

/// MAPI-over-HTTP PING.
pub struct MapiProbe {
    endpoint: Endpoint,
    path: String,
    host: HeaderValue,
    /// Stable per probe, like a client's installation GUID.
    client_info: String,
    /// Per-probe GUID; the counter after it numbers the requests.
    request_guid: String,
    sequence: AtomicU64,
}

impl MapiProbe {
    pub(crate) fn new(endpoint: Endpoint, cfg: &ProbeConfig) -> Result<Self, String> {
        let host = host_header(cfg, &endpoint)?;
        check_path(&cfg.path)?;
        Ok(MapiProbe {
            endpoint,
            path: cfg.path.clone(),
            host,
            client_info: format!("{}:1", guid()),
            request_guid: guid(),
            sequence: AtomicU64::new(0),
        })
    }

    async fn run(&self) -> Result<(), ProbeError> {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let req = request(Method::POST, &self.path, &self.host)
            .header("X-RequestType", "PING")
            .header("X-ClientInfo", self.client_info.as_str())
            .header("X-RequestId", format!("{}:{n}", self.request_guid))
            .header(http::header::CONTENT_TYPE, "application/mapi-http")
            .header(http::header::CONTENT_LENGTH, "0")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ProbeError::Protocol(e.to_string()))?;
        let answer = exchange(&self.endpoint, req, 0).await?;
        judge(answer.status.as_u16(), &answer.headers)
    }
}

impl Probe for MapiProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_shape() {
        let g = guid();
        assert_eq!(g.len(), 38);
        assert!(g.starts_with('{') && g.ends_with('}'));
        let groups: Vec<usize> = g[1..37].split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
    }

    #[test]
    fn verdicts() {
        let mut h = HeaderMap::new();
        assert_eq!(judge(200, &h), Err(ProbeError::MapiCode("missing".into())));
        h.insert("x-responsecode", HeaderValue::from_static("0"));
        assert_eq!(judge(200, &h), Ok(()));
        assert_eq!(judge(401, &h), Err(ProbeError::Status(401)));
        h.insert("x-responsecode", HeaderValue::from_static("9"));
        assert_eq!(
            judge(200, &h).unwrap_err().to_string(),
            "mapi X-ResponseCode 9"
        );
    }
}
