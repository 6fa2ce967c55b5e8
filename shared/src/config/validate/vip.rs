//! A `[[vip]]` table: listener, mode, backends, limits, passive ejection, TLS and the
//! L7 options of an HTTP VIP.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::probe::ProbeUse;
use super::{fmt_dur, parse_addr, Validator};
use crate::config::error::{clip, MAX_ECHO};
use crate::config::files::FileKind;
use crate::config::model::*;
use crate::config::raw::*;

impl Validator<'_> {
    pub(super) fn vip(&mut self, rv: &Spanned<RawVip>) -> VipConfig {
        let r = rv.get_ref();
        self.ident(&r.name, "VIP");
        let name = r.name.get_ref().clone();
        let listen = self.listener(&r.listen, format!("VIP \"{name}\""));
        let mode = self.opt_choice(
            &r.mode,
            "mode",
            &[
                ("tcp", VipMode::Tcp),
                ("http", VipMode::Http),
                ("https", VipMode::Https),
            ],
            VipMode::Tcp,
        );
        let balance = self.opt_choice(
            &r.balance,
            "balance",
            &[
                ("round_robin", Balance::RoundRobin),
                ("least_conn", Balance::LeastConn),
                ("source_hash", Balance::SourceHash),
            ],
            Balance::RoundRobin,
        );
        let proxy_protocol = r.proxy_protocol.as_ref().and_then(|p| {
            self.choice(
                p,
                "proxy_protocol",
                &[("v1", ProxyVersion::V1), ("v2", ProxyVersion::V2)],
            )
        });
        let probe = match &r.probe {
            Some(p) => self.probe(
                p.get_ref(),
                p.span(),
                ProbeUse::Vip {
                    proxy: r.proxy_protocol.is_some(),
                },
            ),
            None => {
                let mut p = ProbeConfig::new(ProbeKind::Tcp);
                p.send_proxy = r.proxy_protocol.is_some();
                p
            }
        };
        let default_protocol = match probe.kind {
            ProbeKind::Smtp => MailProtocol::Smtp,
            ProbeKind::Imap => MailProtocol::Imap,
            ProbeKind::Pop3 => MailProtocol::Pop3,
            _ => MailProtocol::None,
        };
        let protocol = self.opt_choice(
            &r.protocol,
            "protocol",
            &[
                ("smtp", MailProtocol::Smtp),
                ("imap", MailProtocol::Imap),
                ("pop3", MailProtocol::Pop3),
                ("none", MailProtocol::None),
            ],
            default_protocol,
        );

        // Backends.
        let mut backends = Vec::new();
        match &r.backends {
            None => self.err(
                r.name.span(),
                format!("VIP \"{name}\" has no backends; add backends = [ {{ name = \"...\", address = \"IP:PORT\" }} ]"),
            ),
            Some(list) if list.get_ref().is_empty() => self.err(
                list.span(),
                format!("VIP \"{name}\" has an empty backends list; add at least one backend"),
            ),
            Some(list) => {
                let mut seen = HashSet::new();
                for b in list.get_ref() {
                    let b = b.get_ref();
                    self.ident(&b.name, "backend");
                    if !seen.insert(b.name.get_ref().clone()) {
                        self.err(
                            b.name.span(),
                            format!(
                                "duplicate backend name \"{}\" in VIP \"{name}\"; backend names must be unique within a VIP",
                                b.name.get_ref()
                            ),
                        );
                    }
                    let address = self
                        .addr(&b.address, "backend address")
                        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                    if address.port() == 0 && parse_addr(b.address.get_ref()).is_some() {
                        self.err(
                            b.address.span(),
                            format!(
                                "backend address \"{}\" has port 0, which nothing listens on; give the backend's port",
                                b.address.get_ref()
                            ),
                        );
                    }
                    let weight = match &b.weight {
                        Some(w) if *w.get_ref() < 1 => {
                            self.err(
                                w.span(),
                                format!(
                                    "backend weight must be at least 1, got {}; use `drain`/`maint` or remove the backend to take it out",
                                    w.get_ref()
                                ),
                            );
                            1
                        }
                        Some(w) => self.int_in(w, "backend weight", 1, i64::from(u32::MAX)).unwrap_or(1),
                        None => 1,
                    };
                    backends.push(BackendConfig {
                        name: b.name.get_ref().clone(),
                        address,
                        weight,
                        backup: b.backup.as_ref().map(|v| *v.get_ref()).unwrap_or(false),
                    });
                }
            }
        }

        let retries = r.retries.as_ref().map(|v| *v.get_ref()).unwrap_or(2);
        let connect_timeout = self.positive_duration(
            &r.connect_timeout,
            Duration::from_secs(2),
            "connect_timeout",
        );
        let greeting_timeout = self.positive_duration(
            &r.greeting_timeout,
            Duration::from_secs(5),
            "greeting_timeout",
        );
        let idle_timeout = self.positive_duration(
            &r.idle_timeout,
            Duration::from_secs(31 * 60),
            "idle_timeout",
        );
        let max_connections = self.opt_count(&r.max_connections, "max_connections");
        let max_connections_per_source =
            self.opt_count(&r.max_connections_per_source, "max_connections_per_source");
        let min_healthy = match &r.min_healthy {
            Some(v) => {
                let n = *v.get_ref();
                if n < 1 {
                    self.err(v.span(), "min_healthy must be at least 1");
                } else if !backends.is_empty() && n as usize > backends.len() {
                    self.err(
                        v.span(),
                        format!(
                            "min_healthy ({n}) is larger than the number of backends ({}); the VIP could never be up",
                            backends.len()
                        ),
                    );
                }
                n.max(1) as usize
            }
            None => 1,
        };
        let ejection = self.ejection(&r.ejection);

        // TLS termination.
        let tls = match (&r.tls, mode) {
            (Some(t), VipMode::Https) => self.tls(t),
            (Some(t), _) => {
                self.err(
                    t.span(),
                    format!(
                        "tls is only used with mode = \"https\" (VIP \"{name}\" is \"{}\"); set mode = \"https\" or remove tls",
                        mode.as_str()
                    ),
                );
                None
            }
            (None, VipMode::Https) => {
                self.err(
                    r.mode.as_ref().map(|m| m.span()).unwrap_or(r.name.span()),
                    format!("VIP \"{name}\" has mode = \"https\" but no tls; add tls = {{ cert = \"...pem\", key = \"...pem\" }}"),
                );
                None
            }
            (None, _) => None,
        };

        let http = self.http_vip(r, mode, &name);
        VipConfig {
            name,
            listen,
            mode,
            balance,
            proxy_protocol,
            accept_proxy: r.accept_proxy.as_ref().is_some_and(|v| *v.get_ref()),
            protocol,
            backends,
            probe,
            retries,
            connect_timeout,
            greeting_timeout,
            idle_timeout,
            max_connections,
            max_connections_per_source,
            min_healthy,
            ejection,
            tls,
            http,
            access_log: r.access_log.as_ref().is_some_and(|v| *v.get_ref()),
            announce: r.announce.as_ref().map(|a| self.announce(a)),
        }
    }

    fn opt_count(&mut self, v: &O<u32>, what: &str) -> Option<u32> {
        let v = v.as_ref()?;
        if *v.get_ref() == 0 {
            self.err(
                v.span(),
                format!("{what} must be at least 1; leave it out for no limit"),
            );
        }
        Some(*v.get_ref())
    }

    fn ejection(&mut self, raw: &O<RawEjection>) -> EjectionConfig {
        let mut e = EjectionConfig {
            consecutive_failures: 3,
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(300),
            max_percent: 50,
            reset_after: Duration::from_secs(60),
        };
        let Some(raw) = raw else { return e };
        let r = raw.get_ref();
        e.consecutive_failures = self.opt_int(
            &r.consecutive_failures,
            "ejection consecutive_failures",
            1,
            i64::from(u32::MAX),
            3,
        );
        e.base_time = self.positive_duration(&r.base_time, e.base_time, "ejection base_time");
        e.max_time = self.positive_duration(&r.max_time, e.max_time, "ejection max_time");
        e.max_percent = self.opt_int(&r.max_percent, "ejection max_percent", 0, 100, 50);
        e.reset_after =
            self.positive_duration(&r.reset_after, e.reset_after, "ejection reset_after");
        if e.max_time < e.base_time {
            let span = r
                .max_time
                .as_ref()
                .or(r.base_time.as_ref())
                .map(|v| v.span())
                .unwrap_or(raw.span());
            self.err(
                span,
                format!(
                    "ejection max_time ({}) must not be shorter than base_time ({})",
                    fmt_dur(e.max_time),
                    fmt_dur(e.base_time)
                ),
            );
        }
        e
    }

    fn tls(&mut self, raw: &Spanned<RawTls>) -> Option<TlsConfig> {
        let t = raw.get_ref();
        let mut certs = Vec::new();
        match (&t.cert, &t.key, &t.certs) {
            (Some(cert), Some(key), None) => certs.push(self.cert_pair(cert, key)),
            (None, None, Some(list)) => {
                if list.get_ref().is_empty() {
                    self.err(
                        list.span(),
                        "tls certs is empty; list at least one { cert, key } pair",
                    );
                }
                for p in list.get_ref() {
                    let p = p.get_ref();
                    certs.push(self.cert_pair(&p.cert, &p.key));
                }
            }
            (_, _, Some(list)) => {
                self.err(
                    list.span(),
                    "use either tls = { cert, key } or tls = { certs = [...] }, not both",
                );
            }
            (Some(cert), None, None) => {
                self.err(
                    cert.span(),
                    "tls has a cert but no key; add key = \"...pem\"",
                );
            }
            (None, Some(key), None) => {
                self.err(
                    key.span(),
                    "tls has a key but no cert; add cert = \"...pem\"",
                );
            }
            (None, None, None) => {
                self.err(
                    raw.span(),
                    "tls needs cert and key (or certs = [ { cert, key }, ... ])",
                );
            }
        }
        Some(TlsConfig { certs })
    }

    fn http_vip(&mut self, r: &RawVip, mode: VipMode, name: &str) -> HttpVipConfig {
        let mut h = HttpVipConfig::default();
        if mode == VipMode::Tcp {
            let l7: [(&str, Option<Range<usize>>); 18] = [
                (
                    "header_timeout",
                    r.header_timeout.as_ref().map(|v| v.span()),
                ),
                (
                    "max_header_size",
                    r.max_header_size.as_ref().map(|v| v.span()),
                ),
                (
                    "max_h2_streams",
                    r.max_h2_streams.as_ref().map(|v| v.span()),
                ),
                (
                    "backend_timeout",
                    r.backend_timeout.as_ref().map(|v| v.span()),
                ),
                ("body_timeout", r.body_timeout.as_ref().map(|v| v.span())),
                ("sticky", r.sticky.as_ref().map(|v| v.span())),
                ("backend_tls", r.backend_tls.as_ref().map(|v| v.span())),
                ("backend_ca", r.backend_ca.as_ref().map(|v| v.span())),
                ("backend_sni", r.backend_sni.as_ref().map(|v| v.span())),
                (
                    "backend_tls_verify",
                    r.backend_tls_verify.as_ref().map(|v| v.span()),
                ),
                ("via", r.via.as_ref().map(|v| v.span())),
                ("allow_connect", r.allow_connect.as_ref().map(|v| v.span())),
                ("forwarded_for", r.forwarded_for.as_ref().map(|v| v.span())),
                (
                    "trusted_proxies",
                    r.trusted_proxies.as_ref().map(|v| v.span()),
                ),
                ("max_headers", r.max_headers.as_ref().map(|v| v.span())),
                (
                    "tls_min_version",
                    r.tls_min_version.as_ref().map(|v| v.span()),
                ),
                ("tls12_ciphers", r.tls12_ciphers.as_ref().map(|v| v.span())),
                ("ocsp", r.ocsp.as_ref().map(|v| v.span())),
            ];
            for (key, span) in l7 {
                if let Some(span) = span {
                    self.err(
                        span,
                        format!("{key} applies only to mode \"http\" or \"https\"; VIP \"{name}\" is mode \"tcp\": remove it or change the mode"),
                    );
                }
            }
            return h;
        }
        h.header_timeout =
            self.positive_duration(&r.header_timeout, h.header_timeout, "header_timeout");
        if let Some(v) = &r.max_header_size {
            if *v.get_ref() < 1024 {
                self.err(v.span(), "max_header_size must be at least 1024 bytes");
            }
            h.max_header_size = *v.get_ref() as usize;
        }
        if let Some(v) = &r.max_h2_streams {
            if *v.get_ref() < 1 {
                self.err(v.span(), "max_h2_streams must be at least 1");
            }
            h.max_h2_streams = *v.get_ref();
        }
        h.backend_timeout = r
            .backend_timeout
            .as_ref()
            .and_then(|v| self.duration(v, "backend_timeout"));
        h.body_timeout = self.positive_duration(&r.body_timeout, h.body_timeout, "body_timeout");
        if let Some(s) = &r.sticky {
            let cookie = s.get_ref().cookie.get_ref();
            let ok = !cookie.is_empty()
                && cookie
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c));
            if !ok {
                self.err(
                    s.get_ref().cookie.span(),
                    format!("invalid sticky cookie name \"{cookie}\": use letters, digits and -_."),
                );
            }
            h.sticky_cookie = Some(cookie.clone());
        }
        h.backend_tls = r
            .backend_tls
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(false);
        if !h.backend_tls {
            let needs_tls = [
                ("backend_ca", r.backend_ca.as_ref().map(|v| v.span())),
                ("backend_sni", r.backend_sni.as_ref().map(|v| v.span())),
                (
                    "backend_tls_verify",
                    r.backend_tls_verify.as_ref().map(|v| v.span()),
                ),
            ];
            for (key, span) in needs_tls {
                if let Some(span) = span {
                    self.err(span, format!("{key} only applies with backend_tls = true"));
                }
            }
        }
        h.backend_ca = r
            .backend_ca
            .as_ref()
            .map(|v| self.file(v, "backend_ca", FileKind::CaBundle));
        h.backend_sni = r
            .backend_sni
            .as_ref()
            .map(|v| self.nonempty_string(v, "backend_sni"));
        // The lb would refuse it when building its backend TLS client: refuse it here.
        if let Some(v) = &r.backend_sni {
            if !v.get_ref().is_empty() && crate::tls::server_name(v.get_ref()).is_err() {
                self.err(
                    v.span(),
                    format!(
                        "backend_sni \"{}\" is neither a DNS name nor an IP address",
                        clip(v.get_ref(), MAX_ECHO)
                    ),
                );
            }
        }
        h.backend_tls_verify = r
            .backend_tls_verify
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(true);
        h.via = r.via.as_ref().map(|v| *v.get_ref()).unwrap_or(false);
        h.allow_connect = r
            .allow_connect
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(false);
        self.http_edge_options(r, mode, &mut h);
        h
    }

    /// The options of an L7 VIP's edge: forwarding chains, header count, and the TLS
    /// versions and TLS 1.2 ciphers offered to clients.
    fn http_edge_options(&mut self, r: &RawVip, mode: VipMode, h: &mut HttpVipConfig) {
        if let Some(v) = &r.forwarded_for {
            h.forwarded_for = self
                .choice(
                    v,
                    "forwarded_for",
                    &[
                        ("append", ForwardedFor::Append),
                        ("replace", ForwardedFor::Replace),
                    ],
                )
                .unwrap_or(ForwardedFor::Replace);
        }
        if let Some(list) = &r.trusted_proxies {
            if h.forwarded_for == ForwardedFor::Replace {
                self.err(
                    list.span(),
                    "trusted_proxies only applies with forwarded_for = \"append\" (with \"replace\" no chain is kept)",
                );
            }
            if list.get_ref().is_empty() {
                self.err(
                    list.span(),
                    "trusted_proxies is empty; list networks, or remove it to trust every peer",
                );
            }
            for net in list.get_ref() {
                let s = net.get_ref().trim();
                let parsed = s
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from));
                match parsed {
                    Some(p) => h.trusted_proxies.push(p),
                    None => self.err(
                        net.span(),
                        format!(
                            "invalid network \"{}\" in trusted_proxies: expected CIDR such as \"10.0.0.0/8\" or an address",
                            clip(net.get_ref(), MAX_ECHO)
                        ),
                    ),
                }
            }
        }
        if let Some(v) = &r.max_headers {
            let n = *v.get_ref();
            if !(8..=10_000).contains(&n) {
                self.err(v.span(), "max_headers must be between 8 and 10000");
            }
            h.max_headers = n as usize;
        }
        let tls_only = [
            (
                "tls_min_version",
                r.tls_min_version.as_ref().map(|v| v.span()),
            ),
            ("tls12_ciphers", r.tls12_ciphers.as_ref().map(|v| v.span())),
            ("ocsp", r.ocsp.as_ref().map(|v| v.span())),
        ];
        if mode != VipMode::Https {
            for (key, span) in tls_only {
                if let Some(span) = span {
                    self.err(span, format!("{key} applies only to mode \"https\""));
                }
            }
            return;
        }
        if let Some(v) = &r.tls_min_version {
            h.tls_min_version = self
                .choice(
                    v,
                    "tls_min_version",
                    &[("1.2", TlsVersion::Tls12), ("1.3", TlsVersion::Tls13)],
                )
                .unwrap_or(TlsVersion::Tls12);
        }
        if let Some(list) = &r.tls12_ciphers {
            if h.tls_min_version == TlsVersion::Tls13 {
                self.err(
                    list.span(),
                    "tls12_ciphers has no effect with tls_min_version = \"1.3\"; remove one of them",
                );
            }
            if list.get_ref().is_empty() {
                self.err(
                    list.span(),
                    "tls12_ciphers is empty; list at least one suite, or remove it for the defaults",
                );
            }
            let known = tls12_cipher_names();
            let mut names = Vec::new();
            for c in list.get_ref() {
                let name = c.get_ref().trim().to_ascii_uppercase();
                if known.contains(&name.as_str()) {
                    names.push(name);
                } else {
                    self.err(
                        c.span(),
                        format!(
                            "unknown TLS 1.2 cipher suite \"{}\"; known: {}",
                            clip(c.get_ref(), MAX_ECHO),
                            known.join(", ")
                        ),
                    );
                }
            }
            h.tls12_ciphers = Some(names);
        }
        if let Some(map) = &r.ocsp {
            // Each key names a certificate file of this VIP's `tls`, as written there.
            let certs: Vec<&str> = r.tls.as_ref().map_or_else(Vec::new, |t| {
                let t = t.get_ref();
                let single = t.cert.iter().map(|c| c.get_ref().as_str());
                let listed = t.certs.iter().flat_map(|l| {
                    l.get_ref()
                        .iter()
                        .map(|p| p.get_ref().cert.get_ref().as_str())
                });
                single.chain(listed).collect()
            });
            for (cert, file) in map.get_ref() {
                if !certs.contains(&cert.get_ref().as_str()) {
                    self.err(
                        cert.span(),
                        format!(
                            "ocsp names \"{}\", which is not a cert of this VIP's tls",
                            clip(cert.get_ref(), MAX_ECHO)
                        ),
                    );
                    continue;
                }
                let cert = self.path(cert, "ocsp cert");
                let path = self.file(file, "ocsp response file", FileKind::OcspResponse);
                h.ocsp.insert(cert, path);
            }
        }
    }
}

/// The TLS 1.2 cipher suites rustls (ring) implements, by their IANA names.
fn tls12_cipher_names() -> Vec<&'static str> {
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .filter_map(|s| s.suite().as_str())
        .collect()
}
