//! The `[gss]` section: zone, nameservers, SOA, sites with their keepalives and
//! `min_up`, CHAOS texts.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::probe::ProbeUse;
use super::{dns_name, parse_addr, Validator};
use crate::config::model::*;
use crate::config::raw::*;

impl Validator<'_> {
    pub(super) fn gss(&mut self, rg: &Spanned<RawGss>) -> GssConfig {
        let g = rg.get_ref();
        let witness = g.role.as_ref().is_some_and(|r| r.get_ref() == "witness");
        let listen = match (&g.listen, witness) {
            (Some(l), false) => self.listener(l, "[gss]".to_string()),
            (Some(l), true) => {
                self.err(
                    l.span(),
                    "a witness answers no DNS and opens no port: remove listen",
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
            (None, true) => SocketAddr::from(([0, 0, 0, 0], 0)),
            (None, false) => {
                self.err(
                    rg.span().start..rg.span().start,
                    "[gss] needs listen = \"IP:PORT\" (UDP and TCP) for its DNS answers",
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        };
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
        for (span, msg) in
            crate::config::zone_check::conflicts(&zone, &spanned_names, &spanned_records)
        {
            self.err(span, msg);
        }
        let server_id = self.chaos_text(&g.server_id, "server_id");
        let server_version = self.chaos_text(&g.server_version, "server_version");
        let dnssec = g.dnssec.as_ref().map(|d| self.dnssec(d, &zone));

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
            dnssec,
            role: GssRole::Server,
            quorum: None,
        }
    }

    /// `[gss.dnssec]`: keys (files opened by the loader), their roles and states, and
    /// the signature timing.
    fn dnssec(&mut self, rd: &Spanned<RawDnssec>, zone: &str) -> DnssecConfig {
        let d = rd.get_ref();
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        let list = match &d.keys {
            Some(list) if !list.get_ref().is_empty() => list.get_ref().as_slice(),
            Some(list) => {
                self.err(list.span(), "keys is empty; list at least one key, e.g. { file = \"Kzone.+013+12345\", role = \"csk\" }");
                &[]
            }
            None => {
                self.err(
                    rd.span(),
                    "[gss.dnssec] needs keys = [ { file = \"Kzone.+013+12345\", role = \"csk\" } ]",
                );
                &[]
            }
        };
        for rk in list {
            let k = rk.get_ref();
            let file = self.path(&k.file, "dnssec key");
            let (public, _) = crate::dnssec::key_paths(&file);
            if seen.insert(public.clone()) {
                self.files.dnssec_key(&file, k.file.span(), zone);
            } else {
                self.err(
                    k.file.span(),
                    format!("dnssec key \"{}\" is listed twice", k.file.get_ref()),
                );
            }
            let role = self.opt_choice(
                &k.role,
                "dnssec key role",
                &[
                    ("csk", KeyRole::Csk),
                    ("ksk", KeyRole::Ksk),
                    ("zsk", KeyRole::Zsk),
                ],
                KeyRole::Csk,
            );
            let state = self.opt_choice(
                &k.state,
                "dnssec key state",
                &[
                    ("published", KeyState::Published),
                    ("active", KeyState::Active),
                    ("retired", KeyState::Retired),
                ],
                KeyState::Active,
            );
            keys.push(DnssecKeyConfig { file, role, state });
        }
        if !list.is_empty() {
            let active = |f: fn(KeyRole) -> bool| {
                keys.iter()
                    .any(|k| k.state == KeyState::Active && f(k.role))
            };
            if !active(KeyRole::signs_keys) {
                self.err(
                    rd.span(),
                    "no active key signs the DNSKEY set; make a csk or ksk key state = \"active\"",
                );
            }
            if !active(KeyRole::signs_zone) {
                self.err(
                    rd.span(),
                    "no active key signs the zone; make a csk or zsk key state = \"active\"",
                );
            }
        }
        let validity = self.positive_duration(
            &d.validity,
            DnssecConfig::DEFAULT_VALIDITY,
            "dnssec validity",
        );
        let refresh =
            self.positive_duration(&d.refresh, DnssecConfig::DEFAULT_REFRESH, "dnssec refresh");
        let inception = self.opt_duration(
            &d.inception,
            DnssecConfig::DEFAULT_INCEPTION,
            "dnssec inception",
        );
        let jitter = self.opt_duration(&d.jitter, DnssecConfig::DEFAULT_JITTER, "dnssec jitter");
        const MAX_VALIDITY: Duration = Duration::from_secs(365 * 86400);
        if validity > MAX_VALIDITY {
            if let Some(v) = &d.validity {
                self.err(v.span(), "dnssec validity is above 365 days; a stolen signature would replay that long, keep it to weeks");
            }
        } else if refresh + jitter >= validity {
            let span = d
                .refresh
                .as_ref()
                .or(d.jitter.as_ref())
                .or(d.validity.as_ref())
                .map(|v| v.span())
                .unwrap_or_else(|| rd.span());
            self.err(
                span,
                format!(
                    "dnssec refresh ({}) plus jitter ({}) must be less than validity ({}): signatures would be re-made as soon as they are made",
                    humantime::format_duration(refresh),
                    humantime::format_duration(jitter),
                    humantime::format_duration(validity)
                ),
            );
        }
        DnssecConfig {
            keys,
            validity,
            refresh,
            inception,
            jitter,
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
        let mname = nameservers
            .first()
            .cloned()
            .unwrap_or_else(|| format!("ns1.{zone}"));
        let mut soa = SoaConfig::defaults(zone, mname);
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
        if let Some(v) = &r.serial {
            match u32::try_from(*v.get_ref()) {
                Ok(n) => soa.serial = n,
                Err(_) => self.err(
                    v.span(),
                    format!(
                        "soa serial must be between 0 and {}, got {}",
                        u32::MAX,
                        v.get_ref()
                    ),
                ),
            }
        }
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
}
