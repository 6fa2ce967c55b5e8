//! Turns the raw TOML structs into the validated [`model`](super::model): applies
//! defaults, parses addresses, durations and names, and checks every rule and
//! cross-reference. It never stops at the first problem: each check records its
//! error (with the line:col of the offending value) and validation carries on with
//! a placeholder, so one `portico check` lists everything. Files named in the config
//! (certificates, keys, CA bundles) are not read here, only recorded with their spans
//! ([`FileRefs`]) for the loader to open afterwards.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::error::{clip, Collector, ConfigErrors, MAX_ECHO};
use super::files::{FileKind, FileRefs};
use super::model::*;
use super::raw::*;

/// Validates a parsed file. `text` is the source the spans refer to. Also returns
/// the files the config names, still unopened, whether or not it is valid.
pub(crate) fn validate(
    raw: RawConfig,
    text: &str,
    path: &Path,
) -> (Result<Config, ConfigErrors>, FileRefs) {
    let mut v = Validator {
        c: Collector::new(text, path),
        listeners: Vec::new(),
        status_refs: Vec::new(),
        files: FileRefs::default(),
    };
    let config = v.config(raw, path);
    v.check_listeners();
    let result = if v.c.has_errors() {
        Err(v.c.finish())
    } else {
        Ok(config)
    };
    (result, v.files)
}

/// Where a probe table is used; decides defaults and which keys are allowed.
enum ProbeUse<'a> {
    /// A VIP's `probe`, aimed at each backend. `proxy` is the VIP's PROXY setting,
    /// which makes `send_proxy` default to true.
    Vip { proxy: bool },
    /// A gss keepalive, with its site's `probe_defaults`.
    Keepalive {
        defaults: Option<&'a RawProbeDefaults>,
    },
}

struct Validator<'a> {
    c: Collector<'a>,
    /// Every listening address with its span and who listens, for conflict checks.
    listeners: Vec<(SocketAddr, Range<usize>, String)>,
    /// VIP names that lb_status keepalives expect at a `/status` address, checked
    /// against this file's own VIPs when that address is this file's `[http]`.
    status_refs: Vec<(SocketAddr, Spanned<String>)>,
    /// Files named by the config, opened by the loader once validation passed.
    files: FileRefs,
}

fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn quoted_list(options: &[&str]) -> String {
    options
        .iter()
        .map(|o| format!("\"{o}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Names used in admin identifiers (`VIP/BACKEND`, `SITE`) and whitespace-separated
/// output must not contain separators.
fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks DNS name syntax (no trailing dot expected) and lower-cases it. A leading
/// `*` label is allowed when `wildcard` is set (static records).
fn dns_name(s: &str, wildcard: bool) -> Result<String, String> {
    let name = s.to_ascii_lowercase();
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 {
        return Err(format!("name \"{s}\" is longer than 253 characters"));
    }
    for (i, label) in name.split('.').enumerate() {
        if label.is_empty() {
            return Err(format!("name \"{s}\" has an empty label"));
        }
        if wildcard && i == 0 && label == "*" {
            continue;
        }
        if label.len() > 63 {
            return Err(format!(
                "label \"{label}\" of \"{s}\" is longer than 63 characters"
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "name \"{s}\" contains a character other than letters, digits, '-' and '_'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!(
                "label \"{label}\" of \"{s}\" starts or ends with '-'"
            ));
        }
    }
    Ok(name)
}

/// Resolves an owner name against the zone: `@` is the apex (when allowed), a name
/// with a trailing dot is absolute and must lie in the zone, anything else is
/// relative to the zone.
fn owner_in_zone(s: &str, zone: &str, allow_apex: bool, wildcard: bool) -> Result<String, String> {
    if s == "@" {
        return if allow_apex {
            Ok(zone.to_string())
        } else {
            Err(
                "\"@\" (the zone apex) cannot be a site-selected name; the apex carries SOA and NS"
                    .into(),
            )
        };
    }
    let fqdn = if let Some(abs) = s.strip_suffix('.') {
        let abs = dns_name(abs, wildcard)?;
        let suffix = format!(".{zone}");
        if abs != zone && !abs.ends_with(&suffix) {
            return Err(format!(
                "\"{s}\" is outside the zone \"{zone}\"; use a name under it or a relative name"
            ));
        }
        abs
    } else {
        dns_name(&format!("{s}.{zone}"), wildcard)?
    };
    if fqdn == zone && !allow_apex {
        return Err(format!(
            "\"{s}\" is the zone apex, which cannot be a site-selected name"
        ));
    }
    Ok(fqdn)
}

/// Parses `host:port` without resolving names.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

/// Two listeners conflict when they share a port and family and either has the
/// same IP or one of them is the wildcard address.
fn listeners_conflict(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

impl<'a> Validator<'a> {
    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.c.err(span, message);
    }

    // ---- scalar helpers -------------------------------------------------------

    /// A duration string with a unit, e.g. "500ms", "2s", "1m".
    fn duration(&mut self, v: &Spanned<toml::Value>, what: &str) -> Option<Duration> {
        let span = v.span();
        match v.get_ref() {
            toml::Value::String(s) => {
                let trimmed = s.trim();
                if !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_digit()) {
                    self.err(
                        span,
                        format!("{what} \"{s}\" has no unit; write e.g. \"{trimmed}s\" or \"{trimmed}ms\""),
                    );
                    return None;
                }
                match humantime::parse_duration(trimmed) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.err(
                            span,
                            format!("invalid duration \"{s}\" for {what} ({e}); write a number with a unit such as \"500ms\", \"2s\" or \"1m\""),
                        );
                        None
                    }
                }
            }
            toml::Value::Integer(n) => {
                self.err(
                    span,
                    format!("{what} must be a string with a unit, e.g. \"{n}s\" or \"{n}ms\", not a bare number"),
                );
                None
            }
            other => {
                self.err(
                    span,
                    format!(
                        "{what} must be a duration string such as \"2s\", not a {}",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    /// An optional duration with its default.
    fn opt_duration(&mut self, v: &O<toml::Value>, default: Duration, what: &str) -> Duration {
        match v {
            Some(v) => self.duration(v, what).unwrap_or(default),
            None => default,
        }
    }

    /// A duration that must be greater than zero.
    fn positive_duration(&mut self, v: &O<toml::Value>, default: Duration, what: &str) -> Duration {
        let d = self.opt_duration(v, default, what);
        if let Some(v) = v {
            if d.is_zero() {
                self.err(v.span(), format!("{what} must be greater than zero"));
                return default;
            }
        }
        d
    }

    /// One of a fixed set of spellings.
    fn choice<T: Copy>(
        &mut self,
        v: &Spanned<String>,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let s = v.get_ref();
        if let Some((_, t)) = options.iter().find(|(name, _)| *name == s.as_str()) {
            return Some(*t);
        }
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        self.err(
            v.span(),
            format!(
                "unknown {what} \"{s}\"; expected one of {}",
                quoted_list(&names)
            ),
        );
        None
    }

    fn opt_choice<T: Copy>(
        &mut self,
        v: &O<String>,
        what: &str,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        match v {
            Some(v) => self.choice(v, what, options).unwrap_or(default),
            None => default,
        }
    }

    /// An integer in `min..=max`.
    fn int_in(&mut self, v: &Spanned<i64>, what: &str, min: i64, max: i64) -> Option<u32> {
        let n = *v.get_ref();
        if n < min || n > max {
            let hint = if max == i64::from(u32::MAX) || max >= 2_147_483_647 {
                format!("{what} must be at least {min}, got {n}")
            } else {
                format!("{what} must be between {min} and {max}, got {n}")
            };
            self.err(v.span(), hint);
            return None;
        }
        u32::try_from(n).ok()
    }

    fn opt_int(&mut self, v: &O<i64>, what: &str, min: i64, max: i64, default: u32) -> u32 {
        match v {
            Some(v) => self.int_in(v, what, min, max).unwrap_or(default),
            None => default,
        }
    }

    /// A socket address (IP:PORT; names are not resolved).
    fn addr(&mut self, v: &Spanned<String>, what: &str) -> Option<SocketAddr> {
        match parse_addr(v.get_ref()) {
            Some(a) => Some(a),
            None => {
                self.err(
                    v.span(),
                    format!(
                        "invalid {what} \"{}\": expected IP:PORT such as \"127.0.0.1:25\" or \"[::1]:25\" (host names are not resolved)",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn listener(&mut self, v: &Spanned<String>, who: String) -> SocketAddr {
        match self.addr(v, "listen address") {
            Some(a) => {
                self.listeners.push((a, v.span(), who));
                a
            }
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    fn ident(&mut self, v: &Spanned<String>, what: &str) {
        if !valid_ident(v.get_ref()) {
            self.err(
                v.span(),
                format!(
                    "invalid {what} name \"{}\": use 1-64 letters, digits, '-', '_' or '.'",
                    v.get_ref()
                ),
            );
        }
    }

    fn nonempty_string(&mut self, v: &Spanned<String>, what: &str) -> String {
        if v.get_ref().trim().is_empty() {
            self.err(v.span(), format!("{what} must not be empty"));
        }
        v.get_ref().clone()
    }

    fn path(&mut self, v: &Spanned<String>, what: &str) -> PathBuf {
        PathBuf::from(self.nonempty_string(v, what))
    }

    /// A path to a file the roles will read, recorded for the loader to open.
    fn file(&mut self, v: &Spanned<String>, what: &'static str, kind: FileKind) -> PathBuf {
        let path = self.path(v, what);
        self.files.add(&path, v.span(), what, kind);
        path
    }

    /// A certificate chain and its key, recorded as files that must match.
    fn cert_pair(&mut self, cert: &Spanned<String>, key: &Spanned<String>) -> CertPair {
        let cert_path = self.path(cert, "tls cert");
        let key_path = self.path(key, "tls key");
        let c = self
            .files
            .add(&cert_path, cert.span(), "tls cert", FileKind::CertChain);
        let k = self
            .files
            .add(&key_path, key.span(), "tls key", FileKind::Key);
        self.files.pair(c, k);
        CertPair {
            cert: cert_path,
            key: key_path,
        }
    }

    /// An lb_status keepalive aimed at this very process's status listener can only
    /// name VIPs this file defines; a typo there would keep the site down forever.
    fn check_status_refs(&mut self, http: SocketAddr, vips: &[VipConfig]) {
        let refs = std::mem::take(&mut self.status_refs);
        for (addr, name) in refs {
            let same = addr == http
                || (http.ip().is_unspecified()
                    && addr.port() == http.port()
                    && addr.ip().is_loopback());
            if same && !vips.iter().any(|v| &v.name == name.get_ref()) {
                self.err(
                    name.span(),
                    format!(
                        "lb_status keepalive names VIP \"{}\", but this file's lb (status on {http}) has no such VIP",
                        name.get_ref()
                    ),
                );
            }
        }
    }

    fn check_listeners(&mut self) {
        let listeners = std::mem::take(&mut self.listeners);
        for (i, (a, span, who)) in listeners.iter().enumerate() {
            if let Some((b, _, other)) = listeners[..i]
                .iter()
                .find(|(b, _, _)| listeners_conflict(a, b))
            {
                let msg = if a == b {
                    format!("{who} listens on {a}, which {other} already uses; give each listener its own address")
                } else {
                    format!("{who} listens on {a}, which overlaps {other} on {b}; give each listener its own address")
                };
                self.err(span.clone(), msg);
            }
        }
    }

    // ---- top level ------------------------------------------------------------

    fn config(&mut self, raw: RawConfig, path: &Path) -> Config {
        let admin = raw.admin.as_ref().map(|a| AdminConfig {
            socket: self.path(&a.get_ref().socket, "admin socket"),
        });
        let http = raw.http.as_ref().map(|h| HttpConfig {
            listen: self.listener(&h.get_ref().listen, "[http]".to_string()),
        });
        let drain_timeout =
            self.opt_duration(&raw.drain_timeout, Duration::from_secs(30), "drain_timeout");

        let mut vips = Vec::new();
        let mut seen = HashSet::new();
        for rv in &raw.vip {
            let name = rv.get_ref().name.get_ref();
            if !seen.insert(name.clone()) {
                self.err(
                    rv.get_ref().name.span(),
                    format!("duplicate VIP name \"{name}\"; VIP names must be unique"),
                );
            }
            vips.push(self.vip(rv));
        }
        let gss = raw.gss.as_ref().map(|g| self.gss(g));
        if let Some(h) = &http {
            self.check_status_refs(h.listen, &vips);
        }

        if vips.is_empty() && gss.is_none() {
            self.err(
                0..0,
                "nothing to run: define at least one [[vip]] (load balancer) or a [gss] section",
            );
        }
        Config {
            path: path.to_path_buf(),
            admin,
            http,
            drain_timeout,
            vips,
            gss,
        }
    }

    // ---- VIPs -----------------------------------------------------------------

    fn vip(&mut self, rv: &Spanned<RawVip>) -> VipConfig {
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
            let l7: [(&str, Option<Range<usize>>); 17] = [
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

    // ---- probes ---------------------------------------------------------------

    /// Validates probe_defaults once per site so its errors are not repeated per
    /// keepalive.
    fn probe_defaults(&mut self, d: &RawProbeDefaults) {
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

    fn probe(&mut self, r: &RawProbe, table: Range<usize>, usage: ProbeUse<'_>) -> ProbeConfig {
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

    // ---- gss --------------------------------------------------------------------

    fn gss(&mut self, rg: &Spanned<RawGss>) -> GssConfig {
        let g = rg.get_ref();
        let listen = self.listener(&g.listen, "[gss]".to_string());
        let zone_raw = g.zone.get_ref().trim();
        let zone = match dns_name(zone_raw.strip_suffix('.').unwrap_or(zone_raw), false) {
            Ok(z) => z,
            Err(e) => {
                self.err(g.zone.span(), format!("invalid zone: {e}"));
                "invalid.".to_string()
            }
        };
        let ttl = self.opt_int(&g.ttl, "gss ttl", 0, 2_147_483_647, 20);

        let mut nameservers = Vec::new();
        match &g.nameservers {
            None => self.err(
                g.zone.span(),
                format!("[gss] needs nameservers = [\"ns1.{zone}\", ...] for the apex NS records"),
            ),
            Some(list) if list.get_ref().is_empty() => self.err(
                list.span(),
                "nameservers is empty; list at least one name server",
            ),
            Some(list) => {
                for ns in list.get_ref() {
                    let s = ns.get_ref().trim();
                    match dns_name(s.strip_suffix('.').unwrap_or(s), false) {
                        Ok(n) => nameservers.push(n),
                        Err(e) => self.err(ns.span(), format!("invalid nameserver: {e}")),
                    }
                }
            }
        }

        let soa = self.soa(&g.soa, &zone, &nameservers);

        // Sites.
        let mut sites = Vec::new();
        let mut site_names = HashSet::new();
        for rs in &g.site {
            let s = rs.get_ref();
            if !site_names.insert(s.name.get_ref().clone()) {
                self.err(
                    s.name.span(),
                    format!(
                        "duplicate site name \"{}\"; site names must be unique",
                        s.name.get_ref()
                    ),
                );
            }
            sites.push(self.site(rs));
        }

        // Names.
        let mut names = Vec::new();
        let mut seen_names = HashSet::new();
        let mut spanned_names: Vec<(String, Range<usize>)> = Vec::new();
        for rn in &g.name {
            let n = self.name(rn, &zone, ttl, &site_names);
            if let Some(n) = n {
                if !seen_names.insert(n.fqdn.clone()) {
                    self.err(
                        rn.get_ref().name.span(),
                        format!(
                            "duplicate gss name \"{}\" (names compare case-insensitively)",
                            n.fqdn
                        ),
                    );
                }
                spanned_names.push((n.fqdn.clone(), rn.get_ref().name.span()));
                names.push(n);
            }
        }

        let mut records = Vec::new();
        let mut spanned_records = Vec::new();
        if let Some(list) = &g.records {
            for r in list.get_ref() {
                if let Some(rec) = self.record(r, &zone, soa.ttl) {
                    spanned_records.push((rec.clone(), r.span()));
                    records.push(rec);
                }
            }
        }
        for (span, msg) in super::zone_check::conflicts(&zone, &spanned_names, &spanned_records) {
            self.err(span, msg);
        }
        let server_id = self.chaos_text(&g.server_id, "server_id");
        let server_version = self.chaos_text(&g.server_version, "server_version");

        GssConfig {
            listen,
            zone,
            ttl,
            nameservers,
            soa,
            sites,
            names,
            records,
            server_id,
            server_version,
        }
    }

    /// A CHAOS TXT answer: one character-string, so at most 255 printable ASCII bytes.
    fn chaos_text(&mut self, v: &O<String>, what: &str) -> Option<String> {
        let v = v.as_ref()?;
        let s = v.get_ref();
        if s.is_empty() || s.len() > 255 || !s.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            self.err(
                v.span(),
                format!("{what} must be 1 to 255 printable ASCII characters (it is served as one TXT string)"),
            );
            return None;
        }
        Some(s.clone())
    }

    fn soa(&mut self, raw: &O<RawSoa>, zone: &str, nameservers: &[String]) -> SoaConfig {
        let mut soa = SoaConfig {
            mname: nameservers
                .first()
                .cloned()
                .unwrap_or_else(|| format!("ns1.{zone}")),
            rname: format!("hostmaster.{zone}"),
            refresh: 3600,
            retry: 600,
            expire: 86400,
            minimum: 30,
            ttl: 3600,
        };
        let Some(raw) = raw else { return soa };
        let r = raw.get_ref();
        if let Some(v) = &r.mname {
            let s = v.get_ref().trim();
            match dns_name(s.strip_suffix('.').unwrap_or(s), false) {
                Ok(n) => soa.mname = n,
                Err(e) => self.err(v.span(), format!("invalid soa mname: {e}")),
            }
        }
        if let Some(v) = &r.rname {
            // Accept the mailbox form too: hostmaster@example.com.
            let s = v.get_ref().trim().replacen('@', ".", 1);
            match dns_name(s.strip_suffix('.').unwrap_or(&s), false) {
                Ok(n) => soa.rname = n,
                Err(e) => self.err(v.span(), format!("invalid soa rname: {e}")),
            }
        }
        const MAX: i64 = 2_147_483_647;
        soa.refresh = self.opt_int(&r.refresh, "soa refresh", 1, MAX, soa.refresh);
        soa.retry = self.opt_int(&r.retry, "soa retry", 1, MAX, soa.retry);
        soa.expire = self.opt_int(&r.expire, "soa expire", 1, MAX, soa.expire);
        if let Some(v) = &r.minimum {
            if *v.get_ref() > 86400 {
                self.err(
                    v.span(),
                    format!(
                        "soa minimum ({}) is above 86400; resolvers would cache NXDOMAIN/NODATA that long, keep it small (e.g. 30)",
                        v.get_ref()
                    ),
                );
            } else {
                soa.minimum = self
                    .int_in(v, "soa minimum", 0, 86400)
                    .unwrap_or(soa.minimum);
            }
        }
        soa.ttl = self.opt_int(&r.ttl, "soa ttl", 0, MAX, soa.ttl);
        soa
    }

    fn site(&mut self, rs: &Spanned<RawSite>) -> SiteConfig {
        let s = rs.get_ref();
        self.ident(&s.name, "site");
        let name = s.name.get_ref().clone();
        if let Some(d) = &s.probe_defaults {
            self.probe_defaults(d.get_ref());
        }
        let defaults = s.probe_defaults.as_ref().map(|d| d.get_ref());
        let mut keepalives = Vec::new();
        match &s.keepalives {
            None => self.err(
                s.name.span(),
                format!("site \"{name}\" has no keepalives; add keepalives = [ {{ kind = \"tcp\", address = \"IP:PORT\" }} ] so its health can be known"),
            ),
            Some(list) if list.get_ref().is_empty() => self.err(
                list.span(),
                format!("site \"{name}\" has an empty keepalives list; add at least one keepalive"),
            ),
            Some(list) => {
                for k in list.get_ref() {
                    if let Some(k) = self.keepalive(k, defaults) {
                        keepalives.push(k);
                    }
                }
            }
        }
        let count = s
            .keepalives
            .as_ref()
            .map(|l| l.get_ref().len())
            .unwrap_or(0);
        let min_up = match &s.min_up {
            None => MinUp::Count(1),
            Some(v) => self.min_up(v, count, &name),
        };
        SiteConfig {
            name,
            min_up,
            keepalives,
        }
    }

    fn min_up(&mut self, v: &Spanned<toml::Value>, count: usize, site: &str) -> MinUp {
        match v.get_ref() {
            toml::Value::Integer(n) if *n >= 1 => {
                if count > 0 && *n as usize > count {
                    self.err(
                        v.span(),
                        format!("min_up ({n}) is larger than the number of keepalives ({count}) of site \"{site}\"; the site could never be up"),
                    );
                }
                MinUp::Count(u32::try_from(*n).unwrap_or(1))
            }
            toml::Value::String(s) => {
                let pct = s
                    .trim()
                    .strip_suffix('%')
                    .and_then(|n| n.trim().parse::<u32>().ok())
                    .filter(|n| (1..=100).contains(n));
                match pct {
                    Some(p) => MinUp::Percent(p),
                    None => {
                        self.err(
                            v.span(),
                            format!("invalid min_up \"{s}\": use a count such as 1 or a percentage from \"1%\" to \"100%\""),
                        );
                        MinUp::Count(1)
                    }
                }
            }
            other => {
                self.err(
                    v.span(),
                    format!("invalid min_up {other}: use a count of at least 1 or a percentage such as \"50%\""),
                );
                MinUp::Count(1)
            }
        }
    }

    fn keepalive(
        &mut self,
        rk: &Spanned<RawProbe>,
        defaults: Option<&RawProbeDefaults>,
    ) -> Option<KeepaliveConfig> {
        let k = self.keepalive_target(rk, defaults)?;
        if k.probe.kind == ProbeKind::LbStatus {
            for name in rk.get_ref().vips.iter().flat_map(|v| v.get_ref()) {
                self.status_refs.push((k.address, name.clone()));
            }
        }
        Some(k)
    }

    /// Builds a keepalive and resolves where it connects (address or lb_status url).
    fn keepalive_target(
        &mut self,
        rk: &Spanned<RawProbe>,
        defaults: Option<&RawProbeDefaults>,
    ) -> Option<KeepaliveConfig> {
        let k = rk.get_ref();
        let mut probe = self.probe(k, rk.span(), ProbeUse::Keepalive { defaults });
        if probe.kind == ProbeKind::LbStatus {
            match (&k.url, &k.address) {
                (Some(u), Some(a)) => {
                    self.err(
                        a.span(),
                        "give an lb_status keepalive either url or address, not both",
                    );
                    let _ = u;
                    None
                }
                (Some(u), None) => {
                    if k.path.is_some() {
                        self.err(
                            k.path.as_ref().map(|p| p.span()).unwrap_or(u.span()),
                            "the path of an lb_status keepalive comes from its url; remove path",
                        );
                    }
                    match parse_status_url(u.get_ref()) {
                        Ok((address, path)) => {
                            probe.path = path;
                            Some(KeepaliveConfig {
                                name: u.get_ref().clone(),
                                address,
                                probe,
                            })
                        }
                        Err(e) => {
                            self.err(u.span(), e);
                            None
                        }
                    }
                }
                (None, Some(a)) => {
                    let address = self.addr(a, "keepalive address")?;
                    Some(KeepaliveConfig {
                        name: format!("http://{address}{}", probe.path),
                        address,
                        probe,
                    })
                }
                (None, None) => {
                    self.err(
                        rk.span(),
                        "lb_status keepalive needs url = \"http://IP:PORT/status\" (a portico lb's status listener)",
                    );
                    None
                }
            }
        } else {
            if let Some(u) = &k.url {
                self.err(
                    u.span(),
                    format!("url applies only to lb_status keepalives; a \"{}\" keepalive uses address = \"IP:PORT\"", probe.kind.as_str()),
                );
            }
            match &k.address {
                Some(a) => {
                    let address = self.addr(a, "keepalive address")?;
                    Some(KeepaliveConfig {
                        name: format!("{} {address}", probe.kind.as_str()),
                        address,
                        probe,
                    })
                }
                None => {
                    self.err(
                        rk.span(),
                        format!(
                            "\"{}\" keepalive needs address = \"IP:PORT\"",
                            probe.kind.as_str()
                        ),
                    );
                    None
                }
            }
        }
    }

    fn site_ref(&mut self, v: &Spanned<String>, defined: &HashSet<String>) {
        if !defined.contains(v.get_ref()) {
            self.err(
                v.span(),
                format!(
                    "unknown site \"{}\" in sites; define it with [[gss.site]]",
                    v.get_ref()
                ),
            );
        }
    }

    fn name(
        &mut self,
        rn: &Spanned<RawName>,
        zone: &str,
        default_ttl: u32,
        defined: &HashSet<String>,
    ) -> Option<NameConfig> {
        let n = rn.get_ref();
        let fqdn = match owner_in_zone(n.name.get_ref().trim(), zone, false, false) {
            Ok(f) => Some(f),
            Err(e) => {
                self.err(n.name.span(), format!("invalid gss name: {e}"));
                None
            }
        };
        let label = n.name.get_ref().clone();
        let policy = self.opt_choice(
            &n.policy,
            "policy",
            &[
                ("failover", Policy::Failover),
                ("weighted", Policy::Weighted),
            ],
            Policy::Failover,
        );

        let mut sites = Vec::new();
        match &n.sites {
            None => self.err(
                n.name.span(),
                format!("name \"{label}\" has no sites; add sites = [\"dc1\", ...] in order of preference"),
            ),
            Some(list) if list.get_ref().is_empty() => {
                self.err(list.span(), format!("name \"{label}\" has an empty sites list"))
            }
            Some(list) => {
                for s in list.get_ref() {
                    self.site_ref(s, defined);
                    if sites.contains(s.get_ref()) {
                        self.err(s.span(), format!("site \"{}\" is listed twice", s.get_ref()));
                    } else {
                        sites.push(s.get_ref().clone());
                    }
                }
            }
        }
        let in_sites = |s: &str| sites.iter().any(|x| x == s);

        let mut weights = BTreeMap::new();
        if let Some(w) = &n.weights {
            if policy != Policy::Weighted {
                self.err(w.span(), "weights apply only with policy = \"weighted\"");
            }
            for (site, weight) in w.get_ref() {
                if !in_sites(site.get_ref()) {
                    self.err(
                        site.span(),
                        format!(
                            "weights names site \"{}\", which is not in this name's sites",
                            site.get_ref()
                        ),
                    );
                }
                if *weight.get_ref() < 1 {
                    self.err(
                        weight.span(),
                        format!(
                            "weight of site \"{}\" must be at least 1, got {}",
                            site.get_ref(),
                            weight.get_ref()
                        ),
                    );
                } else if let Some(x) = self.int_in(weight, "weight", 1, i64::from(u32::MAX)) {
                    weights.insert(site.get_ref().clone(), x);
                }
            }
        }
        if policy == Policy::Weighted {
            for s in &sites {
                weights.entry(s.clone()).or_insert(1);
            }
        }

        let mut answers = BTreeMap::new();
        match &n.answers {
            None => self.err(
                n.name.span(),
                format!("name \"{label}\" has no answers; add answers = {{ SITE = [\"IP\", ...] }} for each of its sites"),
            ),
            Some(a) => {
                for (site, ips) in a.get_ref() {
                    if !in_sites(site.get_ref()) {
                        self.err(
                            site.span(),
                            format!("answers names site \"{}\", which is not in this name's sites; add it to sites or remove it", site.get_ref()),
                        );
                    }
                    let mut list = Vec::new();
                    for ip in ips.get_ref() {
                        match ip.get_ref().trim().parse::<IpAddr>() {
                            Ok(addr) => list.push(addr),
                            Err(_) => self.err(
                                ip.span(),
                                format!("invalid address \"{}\" in answers: expected an IPv4 or IPv6 address", ip.get_ref()),
                            ),
                        }
                    }
                    if ips.get_ref().is_empty() {
                        self.err(
                            ips.span(),
                            format!("answers for site \"{}\" is empty; list at least one address", site.get_ref()),
                        );
                    }
                    answers.insert(site.get_ref().clone(), list);
                }
                if let Some(list) = &n.sites {
                    for s in list.get_ref() {
                        if !a.get_ref().keys().any(|k| k.get_ref() == s.get_ref()) {
                            self.err(
                                s.span(),
                                format!("site \"{}\" of name \"{label}\" has no answers; add {} = [\"IP\", ...] to answers", s.get_ref(), s.get_ref()),
                            );
                        }
                    }
                }
            }
        }

        let failback = match &n.failback {
            None => "auto",
            Some(v) => match v.get_ref().as_str() {
                "auto" => "auto",
                "manual" => "manual",
                _ => {
                    self.choice(v, "failback", &[("auto", ()), ("manual", ())]);
                    "auto"
                }
            },
        };
        let failback = if failback == "manual" {
            if let Some(v) = &n.failback_after {
                self.err(
                    v.span(),
                    "failback_after applies only with failback = \"auto\"; remove it or set failback = \"auto\"",
                );
            }
            Failback::Manual
        } else {
            Failback::Auto(self.opt_duration(
                &n.failback_after,
                Duration::from_secs(60),
                "failback_after",
            ))
        };
        let all_down = self.opt_choice(
            &n.all_down,
            "all_down",
            &[("first", AllDown::First), ("servfail", AllDown::Servfail)],
            AllDown::First,
        );

        let mut clients = Vec::new();
        if let Some(rules) = &n.clients {
            for rule in rules.get_ref() {
                let r = rule.get_ref();
                let mut networks = Vec::new();
                if r.networks.get_ref().is_empty() {
                    self.err(
                        r.networks.span(),
                        "client rule networks is empty; list at least one network",
                    );
                }
                for net in r.networks.get_ref() {
                    let s = net.get_ref().trim();
                    let parsed = s
                        .parse::<IpNet>()
                        .ok()
                        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from));
                    match parsed {
                        Some(p) => networks.push(p),
                        None => self.err(
                            net.span(),
                            format!("invalid network \"{}\": expected CIDR such as \"10.0.0.0/8\" or an address", net.get_ref()),
                        ),
                    }
                }
                if r.sites.get_ref().is_empty() {
                    self.err(
                        r.sites.span(),
                        "client rule sites is empty; list the site order for these clients",
                    );
                }
                let mut rule_sites = Vec::new();
                for s in r.sites.get_ref() {
                    if !in_sites(s.get_ref()) {
                        if defined.contains(s.get_ref()) {
                            self.err(
                                s.span(),
                                format!("client rule site \"{}\" is not in this name's sites; add it there first", s.get_ref()),
                            );
                        } else {
                            self.site_ref(s, defined);
                        }
                    }
                    rule_sites.push(s.get_ref().clone());
                }
                clients.push(ClientRule {
                    networks,
                    sites: rule_sites,
                });
            }
        }
        let ttl = self.opt_int(&n.ttl, "name ttl", 0, 2_147_483_647, default_ttl);

        Some(NameConfig {
            fqdn: fqdn?,
            policy,
            sites,
            weights,
            answers,
            failback,
            all_down,
            clients,
            ttl,
        })
    }

    /// `OWNER [TTL] [IN] TYPE RDATA`.
    fn record(
        &mut self,
        r: &Spanned<String>,
        zone: &str,
        default_ttl: u32,
    ) -> Option<StaticRecord> {
        let text = r.get_ref().as_str();
        let mut rest = text.trim_start();
        let next = |rest: &mut &str| -> Option<String> {
            let s = rest.trim_start();
            if s.is_empty() {
                return None;
            }
            let end = s.find(char::is_whitespace).unwrap_or(s.len());
            let tok = s[..end].to_string();
            *rest = &s[end..];
            Some(tok)
        };
        let usage = "write records as \"OWNER [TTL] TYPE RDATA\", e.g. \"@ MX 10 mx.example.com.\"";
        let Some(owner) = next(&mut rest) else {
            self.err(r.span(), format!("empty record; {usage}"));
            return None;
        };
        let mut tok = next(&mut rest);
        let mut ttl = default_ttl;
        if let Some(t) = &tok {
            if t.chars().all(|c| c.is_ascii_digit()) {
                match t.parse::<u32>() {
                    Ok(n) if n <= 2_147_483_647 => ttl = n,
                    _ => {
                        self.err(r.span(), format!("record TTL {t} is too large"));
                        return None;
                    }
                }
                tok = next(&mut rest);
            }
        }
        if tok.as_deref().map(|t| t.eq_ignore_ascii_case("IN")) == Some(true) {
            tok = next(&mut rest);
        }
        let Some(rtype) = tok else {
            self.err(r.span(), format!("record \"{text}\" has no type; {usage}"));
            return None;
        };
        let rtype = rtype.to_ascii_uppercase();
        if !rtype.chars().all(|c| c.is_ascii_alphanumeric())
            || !rtype.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            self.err(
                r.span(),
                format!("record \"{text}\" has an invalid type \"{rtype}\"; {usage}"),
            );
            return None;
        }
        let rdata = rest.trim().to_string();
        if rdata.is_empty() {
            self.err(
                r.span(),
                format!("record \"{text}\" has no data after its type {rtype}; {usage}"),
            );
            return None;
        }
        if let Err(e) = parse_rdata(&rtype, &rdata) {
            self.err(r.span(), format!("record \"{text}\": {e}; {usage}"));
            return None;
        }
        match owner_in_zone(&owner, zone, true, true) {
            Ok(fqdn) => Some(StaticRecord {
                fqdn,
                ttl,
                rtype,
                rdata,
            }),
            Err(e) => {
                self.err(r.span(), format!("invalid record owner: {e}"));
                None
            }
        }
    }
}

/// Parses static rdata with the presentation-format parser the gss serves it with,
/// so `portico check` refuses exactly what the gss would (and a reload never fails
/// late on a record that the config stage let through).
fn parse_rdata(rtype: &str, rdata: &str) -> Result<(), String> {
    use hickory_proto::rr::{RData, RecordType};
    let t: RecordType = rtype
        .parse()
        .map_err(|_| format!("unknown record type {rtype}"))?;
    RData::try_from_str(t, rdata)
        .map(|_| ())
        .map_err(|e| format!("invalid {rtype} data \"{rdata}\": {e}"))
}

/// Splits `http://IP:PORT/path` without DNS. The port defaults to 80 and the path
/// to `/status`.
fn parse_status_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = if let Some(r) = url.strip_prefix("http://") {
        r
    } else if url.starts_with("https://") {
        return Err(format!(
            "lb_status url \"{url}\" uses https, which is not supported; point it at the lb's plain [http] listener"
        ));
    } else {
        return Err(format!(
            "invalid lb_status url \"{url}\": expected http://IP:PORT/status"
        ));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/status"),
    };
    let address = parse_addr(authority)
        .or_else(|| {
            authority
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 80))
        })
        .ok_or_else(|| {
            format!(
                "invalid lb_status url \"{url}\": the host must be an IP address (names are not resolved), e.g. http://127.0.0.1:9100/status"
            )
        })?;
    Ok((address, path.to_string()))
}

/// The TLS 1.2 cipher suites rustls (ring) implements, by their IANA names.
fn tls12_cipher_names() -> Vec<&'static str> {
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS12)
        .filter_map(|s| s.suite().as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_url() {
        assert_eq!(
            parse_status_url("http://127.0.0.1:9100/status"),
            Ok(("127.0.0.1:9100".parse().unwrap(), "/status".to_string()))
        );
        assert_eq!(
            parse_status_url("http://[::1]:9100"),
            Ok(("[::1]:9100".parse().unwrap(), "/status".to_string()))
        );
        assert_eq!(
            parse_status_url("http://10.0.0.1/x"),
            Ok(("10.0.0.1:80".parse().unwrap(), "/x".to_string()))
        );
        assert!(parse_status_url("https://127.0.0.1:9100/status")
            .unwrap_err()
            .contains("https"));
        assert!(parse_status_url("http://lb.example:9100/").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(
            dns_name("GSLB.Example.test", false).unwrap(),
            "gslb.example.test"
        );
        assert!(dns_name("a..b", false).is_err());
        assert!(dns_name("-a.b", false).is_err());
        assert!(dns_name("a b", false).is_err());
        assert_eq!(owner_in_zone("@", "z.test", true, false).unwrap(), "z.test");
        assert!(owner_in_zone("@", "z.test", false, false).is_err());
        assert_eq!(
            owner_in_zone("Smtp", "z.test", false, false).unwrap(),
            "smtp.z.test"
        );
        assert_eq!(
            owner_in_zone("smtp.z.test.", "z.test", false, false).unwrap(),
            "smtp.z.test"
        );
        assert!(owner_in_zone("smtp.other.test.", "z.test", false, false).is_err());
        assert!(owner_in_zone("z.test.", "z.test", false, false).is_err());
        assert_eq!(
            owner_in_zone("*.w", "z.test", true, true).unwrap(),
            "*.w.z.test"
        );
    }

    #[test]
    fn listener_overlap() {
        let a: SocketAddr = "0.0.0.0:25".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let c: SocketAddr = "127.0.0.2:25".parse().unwrap();
        assert!(listeners_conflict(&a, &b));
        assert!(!listeners_conflict(&b, &c));
        assert!(listeners_conflict(&b, &b));
    }
}
