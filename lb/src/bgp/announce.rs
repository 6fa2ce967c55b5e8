//! Which prefixes this replica announces, and why, from the VIPs' health and the
//! operator's intent; pure, so every rule is a unit test.
//!
//! A VIP wants its prefixes announced while it is `up` (at least `min_healthy`
//! backends in rotation), unless an operator ran `withdraw VIP` or the process is
//! shutting down. One prefix may belong to several VIPs (SMTP and submission on one
//! address): it is announced while any of them wants it, because withdrawing it
//! would take the healthy services on that address away too.

use std::collections::{BTreeMap, HashSet};

use ipnet::IpNet;
use shared::config::AnnounceConfig;

use super::wire::RouteAttrs;

/// What the decision reads of one VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipView {
    /// VIP name.
    pub name: String,
    /// Backends up and in rotation.
    pub healthy: usize,
    /// The VIP's `min_healthy`.
    pub min_healthy: usize,
    /// Its `announce`, if any.
    pub announce: Option<AnnounceConfig>,
}

/// Why a prefix is or is not announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The VIP is up.
    VipUp,
    /// Fewer than `min_healthy` backends in rotation.
    VipDown,
    /// `withdraw VIP` from the admin socket.
    AdminWithdrawn,
    /// SIGTERM: withdrawn before listeners close.
    ShuttingDown,
}

impl Reason {
    /// For `show bgp` and events.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::VipUp => "vip up",
            Reason::VipDown => "vip down",
            Reason::AdminWithdrawn => "withdrawn by admin",
            Reason::ShuttingDown => "shutting down",
        }
    }
}

/// The decision for one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// The prefix.
    pub prefix: IpNet,
    /// The VIP whose state decided (the first that announces it, else the first).
    pub vip: String,
    /// Every VIP listing the prefix, config order.
    pub owners: Vec<String>,
    /// Announced or withdrawn.
    pub announced: bool,
    /// Why.
    pub reason: Reason,
    /// What it carries.
    pub attrs: RouteAttrs,
    /// For the reason: the VIP's healthy count and `min_healthy`.
    pub healthy: (usize, usize),
}

/// The announced prefixes with their attributes: what every session sends.
pub(crate) type Routes = BTreeMap<IpNet, RouteAttrs>;

fn attrs(a: &AnnounceConfig) -> RouteAttrs {
    RouteAttrs {
        communities: a.communities.clone(),
        as_path_prepend: a.as_path_prepend,
        med: a.med,
        next_hop: a.next_hop,
    }
}

fn reason(v: &VipView, withdrawn: &HashSet<String>, shutting_down: bool) -> Reason {
    if shutting_down {
        Reason::ShuttingDown
    } else if withdrawn.contains(&v.name) {
        Reason::AdminWithdrawn
    } else if v.healthy >= v.min_healthy {
        Reason::VipUp
    } else {
        Reason::VipDown
    }
}

/// Every configured prefix, in order of first appearance, with its decision.
pub(crate) fn decide(
    vips: &[VipView],
    withdrawn: &HashSet<String>,
    shutting_down: bool,
) -> Vec<Decision> {
    let mut out: Vec<Decision> = Vec::new();
    for v in vips {
        let Some(a) = &v.announce else { continue };
        let r = reason(v, withdrawn, shutting_down);
        let wants = r == Reason::VipUp;
        for p in &a.prefixes {
            let d = Decision {
                prefix: *p,
                vip: v.name.clone(),
                owners: vec![v.name.clone()],
                announced: wants,
                reason: r,
                attrs: attrs(a),
                healthy: (v.healthy, v.min_healthy),
            };
            match out.iter_mut().find(|d| d.prefix == *p) {
                Some(existing) => {
                    let mut owners = std::mem::take(&mut existing.owners);
                    owners.push(v.name.clone());
                    if !existing.announced && wants {
                        *existing = d;
                    }
                    existing.owners = owners;
                }
                None => out.push(d),
            }
        }
    }
    out
}

/// The routes of the announced decisions.
pub(crate) fn routes(decisions: &[Decision]) -> Routes {
    decisions
        .iter()
        .filter(|d| d.announced)
        .map(|d| (d.prefix, d.attrs.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, healthy: usize, prefixes: &[&str]) -> VipView {
        VipView {
            name: name.into(),
            healthy,
            min_healthy: 2,
            announce: Some(AnnounceConfig {
                prefixes: prefixes.iter().map(|p| p.parse().unwrap()).collect(),
                communities: vec![(65010 << 16) | 100],
                as_path_prepend: 0,
                med: None,
                next_hop: None,
            }),
        }
    }

    fn one(vips: &[VipView], withdrawn: &[&str], shutting: bool) -> (bool, Reason) {
        let w = withdrawn.iter().map(|s| s.to_string()).collect();
        let d = decide(vips, &w, shutting);
        (d[0].announced, d[0].reason)
    }

    #[test]
    fn up_means_at_least_min_healthy() {
        let p = ["198.51.100.10/32"];
        assert_eq!(
            one(&[view("smtp", 2, &p)], &[], false),
            (true, Reason::VipUp)
        );
        assert_eq!(
            one(&[view("smtp", 1, &p)], &[], false),
            (false, Reason::VipDown)
        );
        assert_eq!(
            one(&[view("smtp", 0, &p)], &[], false),
            (false, Reason::VipDown)
        );
    }

    #[test]
    fn admin_withdraw_and_shutdown_win_over_health() {
        let p = ["198.51.100.10/32"];
        assert_eq!(
            one(&[view("smtp", 3, &p)], &["smtp"], false),
            (false, Reason::AdminWithdrawn)
        );
        assert_eq!(
            one(&[view("smtp", 3, &p)], &["other"], false),
            (true, Reason::VipUp)
        );
        assert_eq!(
            one(&[view("smtp", 3, &p)], &["smtp"], true),
            (false, Reason::ShuttingDown)
        );
    }

    #[test]
    fn a_shared_prefix_stays_while_any_owner_is_up() {
        let p = ["198.51.100.10/32"];
        let vips = [view("smtp", 0, &p), view("submission", 2, &p)];
        let d = decide(&vips, &HashSet::new(), false);
        assert_eq!(d.len(), 1);
        assert!(d[0].announced);
        assert_eq!(d[0].vip, "submission");
        assert_eq!(d[0].owners, ["smtp", "submission"]);
        let both_down = [view("smtp", 0, &p), view("submission", 1, &p)];
        let d = decide(&both_down, &HashSet::new(), false);
        assert_eq!((d[0].announced, d[0].vip.as_str()), (false, "smtp"));
        assert!(routes(&d).is_empty());
    }

    #[test]
    fn routes_carry_the_vip_attributes_and_skip_vips_without_announce() {
        let mut plain = view("web", 5, &[]);
        plain.announce = None;
        let vips = [
            plain,
            view("smtp", 2, &["198.51.100.10/32", "2001:db8::10/128"]),
        ];
        let r = routes(&decide(&vips, &HashSet::new(), false));
        assert_eq!(r.len(), 2);
        let a = &r[&"198.51.100.10/32".parse::<IpNet>().unwrap()];
        assert_eq!(a.communities, vec![(65010 << 16) | 100]);
    }
}
