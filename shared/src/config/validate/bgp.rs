//! `[bgp]` (the speaker and its `[[bgp.neighbor]]` routers) and each VIP's
//! `announce = { ... }`, with the cross-checks between them: an `announce` needs a
//! `[bgp]`, and a prefix shared by two VIPs (SMTP and submission on one address) must
//! carry the same attributes, since a router holds one path per prefix per peer.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use toml::Spanned;

use super::Validator;
use crate::config::model::*;
use crate::config::raw::*;

/// `withdraw_grace` when unset: long enough for a router to run its best-path
/// selection and reprogram forwarding after a withdrawal, short enough not to
/// stretch a rolling restart.
pub(super) const DEFAULT_WITHDRAW_GRACE: Duration = Duration::from_secs(3);

/// `hold_time` when unset: the common short value for directly attached routers.
pub(super) const DEFAULT_HOLD_TIME: Duration = Duration::from_secs(9);

impl Validator<'_> {
    pub(super) fn bgp(&mut self, rb: &Spanned<RawBgp>) -> BgpConfig {
        let r = rb.get_ref();
        let local_as = self.asn(&r.local_as, "local_as");
        let router_id = match r.router_id.get_ref().parse::<Ipv4Addr>() {
            Ok(id) if !id.is_unspecified() => id,
            _ => {
                self.err(
                    r.router_id.span(),
                    format!(
                        "invalid router_id \"{}\": expected a non-zero IPv4 address such as \"192.0.2.21\"",
                        r.router_id.get_ref()
                    ),
                );
                Ipv4Addr::new(0, 0, 0, 1)
            }
        };
        let withdraw_grace =
            self.opt_duration(&r.withdraw_grace, DEFAULT_WITHDRAW_GRACE, "withdraw_grace");
        if r.neighbor.is_empty() {
            self.err(
                rb.span(),
                "[bgp] has no neighbor; add a [[bgp.neighbor]] with the router's address and remote_as",
            );
        }
        let mut seen = HashSet::new();
        let mut neighbors = Vec::new();
        for rn in &r.neighbor {
            let n = self.neighbor(rn);
            if !seen.insert((n.address, n.port)) {
                self.err(
                    rn.get_ref().address.span(),
                    format!(
                        "duplicate neighbor {} port {}; each router is listed once",
                        n.address, n.port
                    ),
                );
            }
            neighbors.push(n);
        }
        BgpConfig {
            local_as,
            router_id,
            withdraw_grace,
            neighbors,
        }
    }

    fn asn(&mut self, v: &Spanned<i64>, what: &str) -> u32 {
        let n = *v.get_ref();
        // 0 and AS_TRANS (23456) are reserved (RFC 7607, RFC 6793).
        if !(1..=i64::from(u32::MAX)).contains(&n) || n == 23456 {
            self.err(
                v.span(),
                format!("{what} must be an AS number between 1 and 4294967295 (not 23456, AS_TRANS), got {n}"),
            );
            return 64512;
        }
        n as u32
    }

    fn ip(&mut self, v: &Spanned<String>, what: &str) -> Option<IpAddr> {
        match v.get_ref().parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                self.err(
                    v.span(),
                    format!(
                        "invalid {what} \"{}\": expected an IP address without port, such as \"192.0.2.1\" or \"2001:db8::1\"",
                        v.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn neighbor(&mut self, rn: &Spanned<RawNeighbor>) -> NeighborConfig {
        let r = rn.get_ref();
        let address = self
            .ip(&r.address, "neighbor address")
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let remote_as = self.asn(&r.remote_as, "remote_as");
        let port = self.opt_int(&r.port, "neighbor port", 1, 65535, 179) as u16;
        let local_address = r
            .local_address
            .as_ref()
            .and_then(|v| self.ip(v, "local_address"));
        if let (Some(local), Some(v)) = (local_address, &r.local_address) {
            if local.is_ipv4() != address.is_ipv4() {
                self.err(
                    v.span(),
                    format!(
                        "local_address {local} is not of the neighbor {address}'s address family"
                    ),
                );
            }
        }
        let hold_time = self.opt_duration(&r.hold_time, DEFAULT_HOLD_TIME, "hold_time");
        let hold_time = match &r.hold_time {
            Some(v)
                if hold_time.subsec_nanos() != 0
                    || (hold_time.as_secs() != 0 && hold_time.as_secs() < 3)
                    || hold_time.as_secs() > 65535 =>
            {
                self.err(
                    v.span(),
                    "hold_time must be whole seconds, 0 (no keepalives) or between 3s and 65535s (RFC 4271)",
                );
                DEFAULT_HOLD_TIME
            }
            _ => hold_time,
        };
        let password = r.password.as_ref().map(|p| {
            let len = p.get_ref().len();
            if len == 0 || len > 80 {
                self.err(
                    p.span(),
                    format!("password must be 1 to 80 bytes (the kernel's TCP MD5 key limit), got {len}"),
                );
            }
            p.get_ref().clone()
        });
        let next_hop = r.next_hop.as_ref().and_then(|v| self.ip(v, "next_hop"));
        NeighborConfig {
            address,
            remote_as,
            port,
            local_address,
            hold_time,
            password,
            next_hop,
        }
    }

    pub(super) fn announce(&mut self, ra: &Spanned<RawAnnounce>) -> AnnounceConfig {
        let r = ra.get_ref();
        if r.prefixes.get_ref().is_empty() {
            self.err(
                r.prefixes.span(),
                "announce.prefixes is empty; list the VIP's prefix, e.g. [\"198.51.100.10/32\"]",
            );
        }
        let mut prefixes = Vec::new();
        for p in r.prefixes.get_ref() {
            match p.get_ref().parse::<IpNet>() {
                Ok(net) if net.trunc() == net => {
                    if prefixes.contains(&net) {
                        self.err(p.span(), format!("prefix {net} is listed twice"));
                    }
                    prefixes.push(net);
                }
                Ok(net) => self.err(
                    p.span(),
                    format!(
                        "prefix \"{}\" has host bits set; write {}",
                        p.get_ref(),
                        net.trunc()
                    ),
                ),
                Err(_) => self.err(
                    p.span(),
                    format!(
                        "invalid prefix \"{}\": expected ADDRESS/LENGTH such as \"198.51.100.10/32\"",
                        p.get_ref()
                    ),
                ),
            }
        }
        let mut communities = Vec::new();
        for c in r
            .communities
            .as_ref()
            .map(|c| c.get_ref().as_slice())
            .unwrap_or(&[])
        {
            match parse_community(c.get_ref()) {
                Some(v) => communities.push(v),
                None => self.err(
                    c.span(),
                    format!(
                        "invalid community \"{}\": expected ASN:VALUE with both in 0..=65535, such as \"65010:100\"",
                        c.get_ref()
                    ),
                ),
            }
        }
        let as_path_prepend = self.opt_int(&r.as_path_prepend, "as_path_prepend", 0, 16, 0) as u8;
        let med = r
            .med
            .as_ref()
            .and_then(|m| self.int_in(m, "med", 0, i64::from(u32::MAX)));
        let next_hop = r.next_hop.as_ref().and_then(|v| self.ip(v, "next_hop"));
        AnnounceConfig {
            prefixes,
            communities,
            as_path_prepend,
            med,
            next_hop,
        }
    }

    /// Announcements need a speaker, and one prefix carries one set of attributes.
    pub(super) fn check_announce(
        &mut self,
        raw: &RawConfig,
        bgp: Option<&BgpConfig>,
        vips: &[VipConfig],
    ) {
        let mut owners: Vec<(IpNet, &str, &AnnounceConfig)> = Vec::new();
        for (rv, vip) in raw.vip.iter().zip(vips) {
            let (Some(ra), Some(a)) = (&rv.get_ref().announce, &vip.announce) else {
                continue;
            };
            if bgp.is_none() {
                self.err(
                    ra.span(),
                    format!(
                        "VIP \"{}\" has announce but there is no [bgp] section to announce it with",
                        vip.name
                    ),
                );
            }
            for p in &a.prefixes {
                let same_attrs = |o: &AnnounceConfig| {
                    o.communities == a.communities
                        && o.as_path_prepend == a.as_path_prepend
                        && o.med == a.med
                        && o.next_hop == a.next_hop
                };
                if let Some((_, other, _)) =
                    owners.iter().find(|(q, _, o)| q == p && !same_attrs(o))
                {
                    self.err(
                        ra.get_ref().prefixes.span(),
                        format!(
                            "prefix {p} is also announced by VIP \"{other}\" with other communities, as_path_prepend, med or next_hop; a prefix has one set of attributes"
                        ),
                    );
                }
                owners.push((*p, &vip.name, a));
            }
        }
    }
}

/// `ASN:VALUE` as RFC 1997 packs it.
fn parse_community(s: &str) -> Option<u32> {
    let (hi, lo) = s.split_once(':')?;
    let hi: u16 = hi.trim().parse().ok()?;
    let lo: u16 = lo.trim().parse().ok()?;
    Some((u32::from(hi) << 16) | u32::from(lo))
}
