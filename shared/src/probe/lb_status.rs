//! The `lb_status` keepalive: `GET path` (default `/status`) on a Portico lb and parse
//! its [`StatusDoc`]; passes while every VIP named in `vips` (all VIPs when empty) is
//! present and `up`. The failure reason names the down and missing VIPs.

use http::{HeaderValue, Method};
use http_body_util::Empty;

use super::conn::Endpoint;
use super::http::{check_path, exchange, host_header, request};
use super::{Probe, ProbeError, ProbeFuture};
use crate::config::ProbeConfig;
use crate::status::StatusDoc;

/// Largest status document read (a big lb's full backend list fits comfortably).
const DOC_CAP: usize = 4 * 1024 * 1024;

/// Pure verdict: `Err(reason)` names the VIPs that are down or missing. An lb that
/// reports no VIP at all fails too: it balances nothing, so the site is not serving.
pub fn evaluate(doc: &StatusDoc, wanted: &[String]) -> Result<(), String> {
    if wanted.is_empty() {
        if doc.vips.is_empty() {
            return Err("no VIPs reported".into());
        }
        let down: Vec<&str> = doc
            .vips
            .iter()
            .filter(|v| !v.up)
            .map(|v| v.name.as_str())
            .collect();
        if down.is_empty() {
            return Ok(());
        }
        return Err(format!("down: {}", down.join(", ")));
    }
    let mut down = Vec::new();
    let mut missing = Vec::new();
    for name in wanted {
        match doc.vips.iter().find(|v| &v.name == name) {
            Some(v) if v.up => {}
            Some(_) => down.push(name.as_str()),
            None => missing.push(name.as_str()),
        }
    }
    let mut parts = Vec::new();
    if !down.is_empty() {
        parts.push(format!("down: {}", down.join(", ")));
    }
    if !missing.is_empty() {
        parts.push(format!("missing: {}", missing.join(", ")));
    }
    if parts.is_empty() {
        Ok(())
    } else {
        Err(parts.join("; "))
    }
}

/// Pure verdict on a `/status` body as received: parsed as a [`StatusDoc`], then
/// [`evaluate`]d. Any bytes give a verdict, never a panic.
pub fn judge(body: &[u8], wanted: &[String]) -> Result<(), ProbeError> {
    let doc: StatusDoc = serde_json::from_slice(body)
        .map_err(|e| ProbeError::Protocol(format!("status json: {e}")))?;
    evaluate(&doc, wanted).map_err(ProbeError::LbStatus)
}

/// A Portico lb's `/status`.
pub struct LbStatusProbe {
    endpoint: Endpoint,
    path: String,
    host: HeaderValue,
    vips: Vec<String>,
}

impl LbStatusProbe {
    pub(crate) fn new(endpoint: Endpoint, cfg: &ProbeConfig) -> Result<Self, String> {
        let host = host_header(cfg, &endpoint)?;
        check_path(&cfg.path)?;
        Ok(LbStatusProbe {
            endpoint,
            path: cfg.path.clone(),
            host,
            vips: cfg.vips.clone(),
        })
    }

    async fn run(&self) -> Result<(), ProbeError> {
        let req = request(Method::GET, &self.path, &self.host)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| ProbeError::Protocol(e.to_string()))?;
        let answer = exchange(&self.endpoint, req, DOC_CAP).await?;
        if answer.status != http::StatusCode::OK {
            return Err(ProbeError::Status(answer.status.as_u16()));
        }
        if answer.truncated {
            return Err(ProbeError::Protocol(format!(
                "status document larger than {DOC_CAP} bytes"
            )));
        }
        judge(&answer.body, &self.vips)
    }
}

impl Probe for LbStatusProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::VipStatus;

    fn doc(vips: &[(&str, bool)]) -> StatusDoc {
        StatusDoc {
            vips: vips
                .iter()
                .map(|(n, up)| VipStatus {
                    name: n.to_string(),
                    up: *up,
                    healthy: usize::from(*up),
                    total: 1,
                    backends: vec![],
                })
                .collect(),
            sites: vec![],
        }
    }

    #[test]
    fn all_vips_when_none_named() {
        assert_eq!(
            evaluate(&doc(&[("smtp", true), ("imap", true)]), &[]),
            Ok(())
        );
        assert_eq!(
            evaluate(&doc(&[("smtp", true), ("imap", false)]), &[]),
            Err("down: imap".into())
        );
        assert_eq!(evaluate(&doc(&[]), &[]), Err("no VIPs reported".into()));
    }

    #[test]
    fn named_vips() {
        let d = doc(&[("smtp", true), ("imap", false)]);
        assert_eq!(evaluate(&d, &["smtp".into()]), Ok(()));
        assert_eq!(
            evaluate(&d, &["smtp".into(), "imap".into(), "pop3".into()]),
            Err("down: imap; missing: pop3".into())
        );
        assert_eq!(
            ProbeError::LbStatus("missing: pop3".into()).to_string(),
            "lb status: missing: pop3"
        );
    }

    #[test]
    fn parses_the_spec_document() {
        let json = r#"{ "vips": [ { "name": "smtp", "up": true, "healthy": 2, "total": 2,
              "backends": [ { "name": "mx1", "state": "up", "admin": "ready", "active": 0 } ] } ],
  "sites": [ { "name": "dc1", "up": true, "override": null } ] }"#;
        let d: StatusDoc = serde_json::from_str(json).unwrap();
        assert_eq!(evaluate(&d, &[]), Ok(()));
        assert_eq!(judge(json.as_bytes(), &["smtp".into()]), Ok(()));
        assert_eq!(
            judge(json.as_bytes(), &["imap".into()]),
            Err(ProbeError::LbStatus("missing: imap".into()))
        );
        assert!(matches!(
            judge(b"{\"vips\": 7}", &[]),
            Err(ProbeError::Protocol(m)) if m.starts_with("status json: ")
        ));
    }
}
