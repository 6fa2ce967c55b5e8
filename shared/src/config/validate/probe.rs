//! Probe tables, for a VIP's backends and for a gss keepalive, and a site's
//! `probe_defaults`.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{fmt_dur, Validator};
use crate::config::files::FileKind;
use crate::config::model::*;
use crate::config::raw::*;

/// Where a probe table is used; decides defaults and which keys are allowed.
pub(super) enum ProbeUse<'a> {
    /// A VIP's `probe`, aimed at each backend. `proxy` is the VIP's PROXY setting,
    /// which makes `send_proxy` default to true.
    Vip { proxy: bool },
    /// A gss keepalive, with its site's `probe_defaults`.
    Keepalive {
        defaults: Option<&'a RawProbeDefaults>,
    },
}

impl Validator<'_> {
    /// Validates probe_defaults once per site so its errors are not repeated per
    /// keepalive.
    pub(super) fn probe_defaults(&mut self, d: &RawProbeDefaults) {
        let interval = d
            .interval
            .as_ref()
            .and_then(|v| self.duration(v, "probe_defaults interval"));
        let timeout = d
            .timeout
            .as_ref()
            .and_then(|v| self.duration(v, "probe_defaults timeout"));
        for (v, what) in [
            (&d.rise, "probe_defaults rise"),
            (&d.fall, "probe_defaults fall"),
        ] {
            if let Some(v) = v {
                self.int_in(v, what, 1, 1000);
            }
        }
        let base = ProbeTiming::default();
        if let (Some(i), Some(t)) = (
            interval.or(d.interval.is_none().then_some(base.interval)),
            timeout.or(d.timeout.is_none().then_some(base.timeout)),
        ) {
            if let Some(v) = d.timeout.as_ref().or(d.interval.as_ref()) {
                if t >= i {
                    self.err(
                        v.span(),
                        format!(
                            "probe timeout ({}) must be shorter than interval ({})",
                            fmt_dur(t),
                            fmt_dur(i)
                        ),
                    );
                }
            }
        }
    }

    pub(super) fn probe(
        &mut self,
        r: &RawProbe,
        table: Range<usize>,
        usage: ProbeUse<'_>,
    ) -> ProbeConfig {
        let keepalive = matches!(usage, ProbeUse::Keepalive { .. });
        let kinds: &[(&str, ProbeKind)] = &[
            ("tcp", ProbeKind::Tcp),
            ("smtp", ProbeKind::Smtp),
            ("imap", ProbeKind::Imap),
            ("pop3", ProbeKind::Pop3),
            ("http", ProbeKind::Http),
            ("mapi", ProbeKind::Mapi),
            ("lb_status", ProbeKind::LbStatus),
        ];
        let kind = match &r.kind {
            Some(k) => {
                let kind = self
                    .choice(k, "probe kind", kinds)
                    .unwrap_or(ProbeKind::Tcp);
                if kind == ProbeKind::LbStatus && !keepalive {
                    self.err(
                        k.span(),
                        "probe kind \"lb_status\" is only for gss keepalives; a VIP probe speaks its backends' protocol (tcp, smtp, imap, pop3, http, mapi)",
                    );
                    ProbeKind::Tcp
                } else {
                    kind
                }
            }
            None if keepalive => {
                self.err(
                    table.clone(),
                    "keepalive needs a kind: \"tcp\", \"smtp\", \"imap\", \"pop3\", \"http\", \"mapi\" or \"lb_status\"",
                );
                ProbeKind::Tcp
            }
            None => ProbeKind::Tcp,
        };
        let mut p = ProbeConfig::new(kind);

        // Timing: own keys, then the site's probe_defaults, then the built-in defaults.
        let defaults = match &usage {
            ProbeUse::Keepalive { defaults } => *defaults,
            ProbeUse::Vip { .. } => None,
        };
        let base = ProbeTiming::default();
        let (interval, interval_span) =
            match (&r.interval, defaults.and_then(|d| d.interval.as_ref())) {
                (Some(v), _) => (self.duration(v, "probe interval"), Some(v.span())),
                // Already reported by probe_defaults(); just take the value.
                (None, Some(v)) => (
                    match v.get_ref() {
                        toml::Value::String(s) => humantime::parse_duration(s.trim()).ok(),
                        _ => None,
                    },
                    Some(v.span()),
                ),
                (None, None) => (Some(base.interval), None),
            };
        let (timeout, timeout_span) = match (&r.timeout, defaults.and_then(|d| d.timeout.as_ref()))
        {
            (Some(v), _) => (self.duration(v, "probe timeout"), Some(v.span())),
            (None, Some(v)) => (
                match v.get_ref() {
                    toml::Value::String(s) => humantime::parse_duration(s.trim()).ok(),
                    _ => None,
                },
                Some(v.span()),
            ),
            (None, None) => (Some(base.timeout), None),
        };
        if let Some(v) = &r.interval {
            if interval == Some(Duration::ZERO) {
                self.err(v.span(), "probe interval must be greater than zero");
            }
        }
        if let (Some(i), Some(t)) = (interval, timeout) {
            // Report at this table's own key when it has one; a conflict purely
            // inside probe_defaults was reported there already.
            let own = r.timeout.is_some() || r.interval.is_some();
            if t >= i && own {
                let span = r
                    .timeout
                    .as_ref()
                    .map(|v| v.span())
                    .or(r.interval.as_ref().map(|v| v.span()))
                    .or(timeout_span)
                    .or(interval_span)
                    .unwrap_or(table.clone());
                self.err(
                    span,
                    format!(
                        "probe timeout ({}) must be shorter than interval ({})",
                        fmt_dur(t),
                        fmt_dur(i)
                    ),
                );
            }
        }
        p.timing.interval = interval.unwrap_or(base.interval);
        p.timing.timeout = timeout.unwrap_or(base.timeout);
        p.timing.rise = match (&r.rise, defaults.and_then(|d| d.rise.as_ref())) {
            (Some(v), _) => self.int_in(v, "probe rise", 1, 1000).unwrap_or(base.rise),
            (None, Some(v)) => u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n >= 1)
                .unwrap_or(base.rise),
            (None, None) => base.rise,
        };
        p.timing.fall = match (&r.fall, defaults.and_then(|d| d.fall.as_ref())) {
            (Some(v), _) => self.int_in(v, "probe fall", 1, 1000).unwrap_or(base.fall),
            (None, Some(v)) => u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n >= 1)
                .unwrap_or(base.fall),
            (None, None) => base.fall,
        };

        // TLS.
        p.tls = r.tls.as_ref().map(|v| *v.get_ref()).unwrap_or(false);
        p.starttls = r.starttls.as_ref().map(|v| *v.get_ref()).unwrap_or(false);
        if let Some(v) = &r.starttls {
            if p.starttls && p.tls {
                self.err(
                    v.span(),
                    "tls and starttls are exclusive: tls = true is implicit TLS (465/993/995), starttls = true upgrades a plain connection (25/587/143/110)",
                );
            } else if p.starttls
                && !matches!(kind, ProbeKind::Smtp | ProbeKind::Imap | ProbeKind::Pop3)
            {
                self.err(
                    v.span(),
                    format!(
                        "starttls applies only to smtp, imap and pop3 probes, not \"{}\"",
                        kind.as_str()
                    ),
                );
            }
        }
        if let Some(v) = &r.tls {
            if p.tls && kind == ProbeKind::LbStatus {
                self.err(
                    v.span(),
                    "lb_status keepalives speak plain HTTP; remove tls",
                );
            }
        }
        p.tls_verify = r.tls_verify.as_ref().map(|v| *v.get_ref()).unwrap_or(true);
        p.ca =
            r.ca.as_ref()
                .map(|v| self.file(v, "probe ca", FileKind::CaBundle));
        p.sni = r.sni.as_ref().map(|v| self.nonempty_string(v, "probe sni"));

        // HTTP-ish keys.
        let http_kind = matches!(
            kind,
            ProbeKind::Http | ProbeKind::Mapi | ProbeKind::LbStatus
        );
        let http_keys = [
            ("path", r.path.as_ref().map(|v| v.span())),
            ("host", r.host.as_ref().map(|v| v.span())),
            ("expect_status", r.expect_status.as_ref().map(|v| v.span())),
            ("expect_body", r.expect_body.as_ref().map(|v| v.span())),
        ];
        if !http_kind {
            for (key, span) in http_keys {
                if let Some(span) = span {
                    self.err(
                        span,
                        format!(
                            "{key} applies only to http, mapi and lb_status probes, not \"{}\"",
                            kind.as_str()
                        ),
                    );
                }
            }
        }
        if let Some(v) = &r.path {
            if !v.get_ref().starts_with('/') {
                self.err(
                    v.span(),
                    format!("probe path \"{}\" must start with '/'", v.get_ref()),
                );
            }
            if v.get_ref().starts_with('/') && v.get_ref().parse::<http::Uri>().is_err() {
                self.err(
                    v.span(),
                    format!(
                        "probe path \"{}\" is not a valid request path; percent-encode spaces and special characters",
                        v.get_ref()
                    ),
                );
            }
            p.path = v.get_ref().clone();
        }
        p.host = r
            .host
            .as_ref()
            .map(|v| self.nonempty_string(v, "probe host"));
        // What the probe builder would refuse at start, refused here with a position.
        if let Some(v) = &r.sni {
            if crate::tls::server_name(v.get_ref()).is_err() {
                self.err(
                    v.span(),
                    format!(
                        "probe sni \"{}\" is neither a DNS name nor an IP address",
                        v.get_ref()
                    ),
                );
            }
        }
        if let Some(v) = &r.host {
            let host = v.get_ref();
            if http::HeaderValue::from_str(host).is_err() {
                self.err(
                    v.span(),
                    format!("probe host {host:?} cannot be sent as an HTTP Host header"),
                );
            } else if (p.tls || p.starttls)
                && r.sni.is_none()
                && crate::tls::server_name(crate::probe::conn::strip_port(host)).is_err()
            {
                self.err(
                    v.span(),
                    format!(
                        "probe host \"{host}\" is not a TLS server name (the probe verifies the certificate against it); set sni"
                    ),
                );
            }
        }
        if let Some(v) = &r.expect_status {
            p.expect_status = self.expect_status(v);
        }
        p.expect_body = r.expect_body.as_ref().map(|v| v.get_ref().clone());
        p.helo = match &r.helo {
            Some(v) => {
                let h = v.get_ref();
                if h.is_empty() || h.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.err(
                        v.span(),
                        format!("invalid helo \"{h}\": use a host name without spaces"),
                    );
                }
                h.clone()
            }
            None => p.helo,
        };
        p.send_proxy = match (&r.send_proxy, &usage) {
            (Some(v), _) => *v.get_ref(),
            (None, ProbeUse::Vip { proxy }) => *proxy,
            (None, ProbeUse::Keepalive { .. }) => false,
        };

        // Keepalive-only keys on a VIP probe.
        if !keepalive {
            for (key, span) in [
                ("address", r.address.as_ref().map(|v| v.span())),
                ("url", r.url.as_ref().map(|v| v.span())),
                ("vips", r.vips.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    self.err(
                        span,
                        format!("unknown key `{key}` in a VIP probe; a VIP probes each backend's address (`{key}` is for gss keepalives)"),
                    );
                }
            }
        } else if let Some(v) = &r.vips {
            if kind != ProbeKind::LbStatus {
                self.err(v.span(), "vips applies only to lb_status keepalives");
            }
            p.vips = v.get_ref().iter().map(|s| s.get_ref().clone()).collect();
        }
        p
    }

    fn expect_status(&mut self, v: &Spanned<toml::Value>) -> Vec<u16> {
        let items: Vec<&toml::Value> = match v.get_ref() {
            toml::Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        let mut out = Vec::new();
        if items.is_empty() {
            self.err(
                v.span(),
                "expect_status is empty; list at least one status such as 200",
            );
        }
        for item in items {
            match item {
                toml::Value::Integer(n) if (100..=599).contains(n) => out.push(*n as u16),
                other => {
                    self.err(
                        v.span(),
                        format!("expect_status must be HTTP statuses (100-599) such as 200 or [200, 204], got {other}"),
                    );
                    break;
                }
            }
        }
        if out.is_empty() {
            out.push(200);
        }
        out
    }
}
