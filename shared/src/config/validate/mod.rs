//! Turns the raw TOML structs into the validated [`model`](super::model): applies
//! defaults, parses addresses, durations and names, and checks every rule and
//! cross-reference. It never stops at the first problem: each check records its
//! error (with the line:col of the offending value) and validation carries on with
//! a placeholder, so one `portico check` lists everything. Files named in the config
//! (certificates, keys, CA bundles) are not read here, only recorded with their spans
//! ([`FileRefs`]) for the loader to open afterwards. The scalar checks live here;
//! each part of the file has its own module (`vip`, `probe`, `gss`, `record`).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::error::{Collector, ConfigErrors};
use super::files::{FileKind, FileRefs};
use super::model::*;
use super::raw::*;

mod bgp;
mod cluster;
mod gss;
mod probe;
mod record;
mod vip;

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
        let state_dir = raw.state_dir.as_ref().map(|d| {
            let dir = self.path(d, "state_dir");
            // Relative to the config file, so a restart from another working
            // directory finds the same intent.
            let dir = match path.parent() {
                Some(base) if dir.is_relative() => base.join(dir),
                _ => dir,
            };
            self.files
                .add(&dir, d.span(), "state_dir", FileKind::StateDir);
            dir
        });

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
        let bgp = raw.bgp.as_ref().map(|b| self.bgp(b));
        self.check_announce(&raw, bgp.as_ref(), &vips);
        let cluster = raw.cluster.as_ref().map(|c| self.cluster(c));
        let gss = raw.gss.as_ref().map(|g| {
            let mut cfg = self.gss(g);
            (cfg.role, cfg.quorum) = self.gss_vote(g.get_ref(), cluster.as_ref());
            cfg
        });
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
            state_dir,
            vips,
            gss,
            bgp,
            cluster,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
