//! The gss zone's content: site-selected `[[gss.name]]` entries and static
//! `[[gss.record]]`s.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::{owner_in_zone, Validator};
use crate::config::model::*;
use crate::config::raw::*;

impl Validator<'_> {
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

    pub(super) fn name(
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
    pub(super) fn record(
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
