//! Pure answer selection: given a name's policy, a snapshot of every site's health
//! ([`HealthView`]), who is asking ([`Client`]) and the time, decide which sites answer
//! and say why. Nothing here does I/O or reads a clock, so every policy rule (failover
//! order, weights, client rules, failback hold and wait, all-down behaviour) is unit
//! tested directly. The zone renderer ([`crate::zone`]) runs this once per name and
//! client rule whenever health changes, never per query.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use shared::admin::SiteOverride;
use shared::config::{AllDown, Failback, NameConfig, Policy};
use tokio::time::Instant;

/// One site's state as selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteView {
    /// Effective state: health, unless an operator override says otherwise.
    pub up: bool,
    /// Aggregate keepalive health alone.
    pub health_up: bool,
    /// Operator override in force (`Down` or `Up`; `Auto` is never stored).
    pub forced: Option<SiteOverride>,
    /// Keepalives passing.
    pub passing: usize,
    /// Keepalives configured.
    pub total: usize,
    /// When the site last came back up after being down; `None` when it has been up
    /// since start (or was released by `site auto`), so no failback wait applies.
    pub recovered_at: Option<Instant>,
    /// Manual failback hold: the site went down and no `site auto` released it since.
    pub held: bool,
}

impl SiteView {
    /// A site that is up with no history (tests and cold start).
    pub fn up() -> Self {
        SiteView {
            up: true,
            health_up: true,
            forced: None,
            passing: 1,
            total: 1,
            recovered_at: None,
            held: false,
        }
    }

    /// A site that is down on health.
    pub fn down() -> Self {
        SiteView {
            up: false,
            health_up: false,
            passing: 0,
            held: true,
            ..SiteView::up()
        }
    }
}

/// Every site's state at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthView {
    /// By site name.
    pub sites: HashMap<String, SiteView>,
}

impl HealthView {
    /// Builds a view from `(name, state)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, SiteView)>) -> Self {
        HealthView {
            sites: pairs.into_iter().map(|(n, v)| (n.to_string(), v)).collect(),
        }
    }
}

/// Who is asking, as far as client rules are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// Nothing known (or ECS with source prefix 0): the default order applies.
    Unknown,
    /// The query's source address.
    Addr(IpAddr),
    /// The EDNS Client Subnet the resolver sent.
    Subnet(IpNet),
}

impl Client {
    /// The address rules are matched against.
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            Client::Unknown => None,
            Client::Addr(a) => Some(*a),
            Client::Subnet(n) => Some(n.network()),
        }
    }
}

/// What a name answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// These sites' addresses, with their weights (one site for `failover`).
    Serve(Vec<(String, u32)>),
    /// Every site is down: fail open to the first site of the order.
    FailOpen(String),
    /// Every site is down and `all_down = "servfail"`.
    Servfail,
}

impl Outcome {
    /// Short form for events and `explain`: `dc1`, `dc1*3 dc2*1`, `dc1 (fail-open)`, `SERVFAIL`.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Serve(sites) if sites.len() == 1 => sites[0].0.clone(),
            Outcome::Serve(sites) => sites
                .iter()
                .map(|(s, w)| format!("{s}*{w}"))
                .collect::<Vec<_>>()
                .join(" "),
            Outcome::FailOpen(s) => format!("{s} (fail-open, all sites down)"),
            Outcome::Servfail => "SERVFAIL (all sites down)".to_string(),
        }
    }
}

/// The decision for one name and client, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// What is answered.
    pub outcome: Outcome,
    /// The client rule that chose the order (`None`: the name's default order).
    pub rule: Option<usize>,
    /// The site order that was applied.
    pub order: Vec<String>,
    /// Human-readable reasons, one per line: each site's state, then the choice.
    pub reasons: Vec<String>,
}

/// Why a site may or may not take a name's traffic now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Eligibility {
    Ok,
    Down,
    Held,
    Waiting(Duration),
}

fn eligibility(view: Option<&SiteView>, failback: Failback, now: Instant) -> Eligibility {
    let Some(v) = view else {
        return Eligibility::Down;
    };
    if !v.up {
        return Eligibility::Down;
    }
    if v.forced == Some(SiteOverride::Up) {
        return Eligibility::Ok;
    }
    match failback {
        Failback::Manual if v.held => Eligibility::Held,
        Failback::Auto(after) => match v.recovered_at {
            Some(at) => {
                let up_for = now.saturating_duration_since(at);
                if up_for < after {
                    Eligibility::Waiting(after - up_for)
                } else {
                    Eligibility::Ok
                }
            }
            None => Eligibility::Ok,
        },
        Failback::Manual => Eligibility::Ok,
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

fn describe(site: &str, view: Option<&SiteView>, failback: Failback, now: Instant) -> String {
    let Some(v) = view else {
        return format!("site {site}: unknown site, treated as down");
    };
    let mut line = format!(
        "site {site}: {} (health {}, {}/{} keepalives passing",
        if v.up { "up" } else { "down" },
        if v.health_up { "up" } else { "down" },
        v.passing,
        v.total
    );
    match v.forced {
        Some(o) => {
            let _ = write!(line, ", override {}", o.as_str());
        }
        None => line.push_str(", no override"),
    }
    line.push(')');
    match eligibility(view, failback, now) {
        Eligibility::Ok | Eligibility::Down => {}
        Eligibility::Held => {
            let _ = write!(
                line,
                "; failback hold (manual): not used until `site auto {site}`"
            );
        }
        Eligibility::Waiting(left) => {
            let after = match failback {
                Failback::Auto(d) => d,
                Failback::Manual => Duration::ZERO,
            };
            let _ = write!(
                line,
                "; recovering: failback after {} of uptime, {} left",
                fmt_secs(after),
                fmt_secs(left)
            );
        }
    }
    line
}

/// The client rule of `name` that `client` falls in, first match wins.
pub fn match_rule(name: &NameConfig, client: Client) -> Option<usize> {
    match client {
        Client::Unknown => None,
        Client::Addr(a) => name
            .clients
            .iter()
            .position(|r| r.networks.iter().any(|n| n.contains(&a))),
        Client::Subnet(s) => name
            .clients
            .iter()
            .position(|r| r.networks.iter().any(|n| n.contains(&s))),
    }
}

fn common_prefix_bits(a: IpAddr, b: IpAddr) -> u8 {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)).leading_zeros() as u8,
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)).leading_zeros() as u8,
        _ => 0,
    }
}

/// ECS SCOPE PREFIX-LENGTH for an answer to `client` (RFC 7871 §7.2.1): the shortest
/// prefix around the client's address inside which every address gets the same rule,
/// so resolvers may cache it for exactly that block. 0 when the name has no client
/// rules (the answer does not depend on the client).
pub fn ecs_scope(name: &NameConfig, client: Client) -> u8 {
    let Some(addr) = client.addr() else {
        return 0;
    };
    let mut scope = 0u8;
    for net in name.clients.iter().flat_map(|r| r.networks.iter()) {
        if net.addr().is_ipv4() != addr.is_ipv4() {
            continue;
        }
        let needed = if net.contains(&addr) {
            net.prefix_len()
        } else {
            // A block longer than the common prefix excludes this network entirely.
            net.prefix_len()
                .min(common_prefix_bits(net.network(), addr).saturating_add(1))
        };
        scope = scope.max(needed);
    }
    scope
}

/// The site order used for `rule` (`None` = the name's default order).
pub fn order_for(name: &NameConfig, rule: Option<usize>) -> &[String] {
    match rule.and_then(|i| name.clients.get(i)) {
        Some(r) => &r.sites,
        None => &name.sites,
    }
}

/// Selection for an already-matched client rule; what the answer renderer calls once
/// per (name, rule) when health changes.
pub fn select_rule(
    name: &NameConfig,
    rule: Option<usize>,
    view: &HealthView,
    now: Instant,
) -> Selection {
    let order = order_for(name, rule);
    let mut reasons = Vec::with_capacity(order.len() + 2);
    match rule.and_then(|i| name.clients.get(i)) {
        Some(r) => reasons.push(format!(
            "rule: client rule #{} ({}) -> order [{}]",
            rule.unwrap_or(0) + 1,
            r.networks
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            order.join(", ")
        )),
        None => reasons.push(format!(
            "rule: default order [{}]{}",
            order.join(", "),
            if name.clients.is_empty() {
                ""
            } else {
                " (no client rule matched)"
            }
        )),
    }
    let elig: Vec<Eligibility> = order
        .iter()
        .map(|s| eligibility(view.sites.get(s), name.failback, now))
        .collect();
    for s in order {
        reasons.push(describe(s, view.sites.get(s), name.failback, now));
    }
    let weight = |s: &str| name.weights.get(s).copied().unwrap_or(1);
    let eligible: Vec<&String> = order
        .iter()
        .zip(&elig)
        .filter(|(_, e)| **e == Eligibility::Ok)
        .map(|(s, _)| s)
        .collect();
    let outcome = match name.policy {
        Policy::Failover => eligible.first().map(|s| {
            reasons.push(format!(
                "chose {s}: first eligible site in order (failover)"
            ));
            Outcome::Serve(vec![((*s).clone(), 1)])
        }),
        Policy::Weighted => {
            let sites: Vec<(String, u32)> = eligible
                .iter()
                .map(|s| ((*s).clone(), weight(s)))
                .filter(|(_, w)| *w > 0)
                .collect();
            if sites.is_empty() {
                None
            } else {
                let total: u32 = sites.iter().map(|(_, w)| *w).sum();
                reasons.push(format!(
                    "chose {}: weighted split over eligible sites",
                    sites
                        .iter()
                        .map(|(s, w)| format!("{s} {w}/{total}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                Some(Outcome::Serve(sites))
            }
        }
    };
    let outcome = outcome.unwrap_or_else(|| {
        // No eligible site: a site that is up but held back by failback control is
        // still better than none.
        let fallback = order
            .iter()
            .zip(&elig)
            .find(|(_, e)| matches!(e, Eligibility::Held | Eligibility::Waiting(_)));
        if let Some((s, _)) = fallback {
            reasons.push(format!(
                "chose {s}: held back by failback control, but no other site is up"
            ));
            return Outcome::Serve(vec![(s.clone(), 1)]);
        }
        match (name.all_down, order.first()) {
            (AllDown::First, Some(first)) => {
                reasons.push(format!(
                    "chose {first}: every site is down; failing open to the first site (all_down = \"first\")"
                ));
                Outcome::FailOpen(first.clone())
            }
            _ => {
                reasons.push(
                    "answer SERVFAIL: every site is down (all_down = \"servfail\")".to_string(),
                );
                Outcome::Servfail
            }
        }
    });
    Selection {
        outcome,
        rule,
        order: order.to_vec(),
        reasons,
    }
}

/// Full selection for one client: match its rule, then [`select_rule`].
pub fn select(name: &NameConfig, view: &HealthView, client: Client, now: Instant) -> Selection {
    select_rule(name, match_rule(name, client), view, now)
}

/// When the selection of `name` may next change with no health event: the earliest
/// end of a failback wait among its sites, if any is pending.
pub fn next_deadline(name: &NameConfig, view: &HealthView, now: Instant) -> Option<Instant> {
    let Failback::Auto(after) = name.failback else {
        return None;
    };
    let mut sites: Vec<&String> = name.sites.iter().collect();
    sites.extend(name.clients.iter().flat_map(|r| r.sites.iter()));
    sites
        .into_iter()
        .filter_map(|s| view.sites.get(s))
        .filter(|v| v.up && v.forced != Some(SiteOverride::Up))
        .filter_map(|v| v.recovered_at.map(|at| at + after))
        .filter(|d| *d > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::config::ClientRule;
    use std::collections::BTreeMap;

    fn name(policy: Policy, failback: Failback, all_down: AllDown) -> NameConfig {
        NameConfig {
            fqdn: "smtp.gslb.example.test".into(),
            policy,
            sites: vec!["dc1".into(), "dc2".into()],
            weights: BTreeMap::new(),
            answers: BTreeMap::from([
                ("dc1".to_string(), vec!["127.0.0.1".parse().unwrap()]),
                ("dc2".to_string(), vec!["127.0.0.2".parse().unwrap()]),
            ]),
            failback,
            all_down,
            clients: Vec::new(),
            ttl: 20,
        }
    }

    fn failover() -> NameConfig {
        name(
            Policy::Failover,
            Failback::Auto(Duration::from_secs(60)),
            AllDown::First,
        )
    }

    fn view(dc1: SiteView, dc2: SiteView) -> HealthView {
        HealthView::from_pairs([("dc1", dc1), ("dc2", dc2)])
    }

    fn serve(sites: &[&str]) -> Outcome {
        Outcome::Serve(sites.iter().map(|s| (s.to_string(), 1)).collect())
    }

    #[test]
    fn failover_prefers_first_healthy_site() {
        let now = Instant::now();
        let n = failover();
        let s = select(
            &n,
            &view(SiteView::up(), SiteView::up()),
            Client::Unknown,
            now,
        );
        assert_eq!(s.outcome, serve(&["dc1"]));
        assert_eq!(s.rule, None);
        let s = select(
            &n,
            &view(SiteView::down(), SiteView::up()),
            Client::Unknown,
            now,
        );
        assert_eq!(s.outcome, serve(&["dc2"]));
        assert!(s.reasons.iter().any(|r| r.starts_with("site dc1: down")));
        assert!(s.reasons.last().unwrap().contains("chose dc2"));
    }

    #[test]
    fn all_down_fails_open_or_servfails() {
        let now = Instant::now();
        let n = failover();
        let v = view(SiteView::down(), SiteView::down());
        let s = select(&n, &v, Client::Unknown, now);
        assert_eq!(s.outcome, Outcome::FailOpen("dc1".into()));
        let n = name(
            Policy::Failover,
            Failback::Auto(Duration::ZERO),
            AllDown::Servfail,
        );
        let s = select(&n, &v, Client::Unknown, now);
        assert_eq!(s.outcome, Outcome::Servfail);
        assert!(s.reasons.last().unwrap().contains("SERVFAIL"));
    }

    #[test]
    fn auto_failback_waits_for_failback_after() {
        let now = Instant::now();
        let n = failover();
        let recovering = SiteView {
            recovered_at: Some(now - Duration::from_secs(30)),
            ..SiteView::up()
        };
        let v = view(recovering.clone(), SiteView::up());
        let s = select(&n, &v, Client::Unknown, now);
        assert_eq!(s.outcome, serve(&["dc2"]), "still waiting");
        assert!(
            s.reasons.iter().any(|r| r.contains("30s left")),
            "{:?}",
            s.reasons
        );
        assert_eq!(
            next_deadline(&n, &v, now),
            Some(now + Duration::from_secs(30))
        );
        let later = now + Duration::from_secs(30);
        let s = select(&n, &v, Client::Unknown, later);
        assert_eq!(s.outcome, serve(&["dc1"]), "back after failback_after");
        assert_eq!(next_deadline(&n, &v, later), None);
    }

    #[test]
    fn recovering_site_is_used_when_nothing_else_is_up() {
        let now = Instant::now();
        let n = failover();
        let recovering = SiteView {
            recovered_at: Some(now),
            ..SiteView::up()
        };
        let s = select(
            &n,
            &view(recovering, SiteView::down()),
            Client::Unknown,
            now,
        );
        assert_eq!(s.outcome, serve(&["dc1"]));
        assert!(s.reasons.last().unwrap().contains("no other site is up"));
    }

    #[test]
    fn manual_failback_holds_until_released() {
        let now = Instant::now();
        let n = name(Policy::Failover, Failback::Manual, AllDown::First);
        let held = SiteView {
            held: true,
            recovered_at: Some(now - Duration::from_secs(3600)),
            ..SiteView::up()
        };
        let s = select(
            &n,
            &view(held.clone(), SiteView::up()),
            Client::Unknown,
            now,
        );
        assert_eq!(s.outcome, serve(&["dc2"]));
        assert!(s
            .reasons
            .iter()
            .any(|r| r.contains("until `site auto dc1`")));
        assert_eq!(next_deadline(&n, &view(held, SiteView::up()), now), None);
        let released = SiteView::up();
        let s = select(&n, &view(released, SiteView::up()), Client::Unknown, now);
        assert_eq!(s.outcome, serve(&["dc1"]));
    }

    #[test]
    fn override_up_skips_failback_wait_and_down_wins_over_health() {
        let now = Instant::now();
        let n = failover();
        let forced_up = SiteView {
            forced: Some(SiteOverride::Up),
            recovered_at: Some(now),
            held: true,
            ..SiteView::up()
        };
        let s = select(&n, &view(forced_up, SiteView::up()), Client::Unknown, now);
        assert_eq!(s.outcome, serve(&["dc1"]));
        let forced_down = SiteView {
            up: false,
            forced: Some(SiteOverride::Down),
            ..SiteView::up()
        };
        let s = select(&n, &view(forced_down, SiteView::up()), Client::Unknown, now);
        assert_eq!(s.outcome, serve(&["dc2"]));
        assert!(s.reasons.iter().any(|r| r.contains("override down")));
    }

    #[test]
    fn weighted_returns_every_eligible_site_with_weight() {
        let now = Instant::now();
        let mut n = name(
            Policy::Weighted,
            Failback::Auto(Duration::ZERO),
            AllDown::First,
        );
        n.weights.insert("dc1".into(), 3);
        let s = select(
            &n,
            &view(SiteView::up(), SiteView::up()),
            Client::Unknown,
            now,
        );
        assert_eq!(
            s.outcome,
            Outcome::Serve(vec![("dc1".into(), 3), ("dc2".into(), 1)])
        );
        let s = select(
            &n,
            &view(SiteView::down(), SiteView::up()),
            Client::Unknown,
            now,
        );
        assert_eq!(s.outcome, Outcome::Serve(vec![("dc2".into(), 1)]));
        n.weights.insert("dc2".into(), 0);
        let s = select(
            &n,
            &view(SiteView::up(), SiteView::up()),
            Client::Unknown,
            now,
        );
        assert_eq!(s.outcome, Outcome::Serve(vec![("dc1".into(), 3)]));
    }

    #[test]
    fn client_rules_pick_the_order_by_source_or_subnet() {
        let now = Instant::now();
        let mut n = failover();
        n.clients = vec![ClientRule {
            networks: vec!["10.2.0.0/16".parse().unwrap()],
            sites: vec!["dc2".into(), "dc1".into()],
        }];
        let v = view(SiteView::up(), SiteView::up());
        let office: IpAddr = "10.2.3.4".parse().unwrap();
        let s = select(&n, &v, Client::Addr(office), now);
        assert_eq!(s.outcome, serve(&["dc2"]));
        assert_eq!(s.rule, Some(0));
        assert!(s.reasons[0].contains("10.2.0.0/16"));
        let s = select(&n, &v, Client::Addr("10.3.0.1".parse().unwrap()), now);
        assert_eq!(s.outcome, serve(&["dc1"]));
        assert!(s.reasons[0].contains("no client rule matched"));
        let ecs = Client::Subnet("10.2.3.0/24".parse().unwrap());
        assert_eq!(select(&n, &v, ecs, now).outcome, serve(&["dc2"]));
        // A subnet wider than the rule cannot be said to be inside it.
        let wide = Client::Subnet("10.0.0.0/8".parse().unwrap());
        assert_eq!(match_rule(&n, wide), None);
        // The rule's order still fails over.
        let s = select(
            &n,
            &view(SiteView::up(), SiteView::down()),
            Client::Addr(office),
            now,
        );
        assert_eq!(s.outcome, serve(&["dc1"]));
    }

    #[test]
    fn ecs_scope_covers_the_block_with_one_answer() {
        let mut n = failover();
        assert_eq!(
            ecs_scope(&n, Client::Subnet("10.2.3.0/24".parse().unwrap())),
            0,
            "no rules: answer does not depend on the client"
        );
        n.clients = vec![
            ClientRule {
                networks: vec!["10.2.0.0/16".parse().unwrap()],
                sites: vec!["dc2".into()],
            },
            ClientRule {
                networks: vec!["10.2.128.0/24".parse().unwrap()],
                sites: vec!["dc1".into()],
            },
        ];
        // Inside 10.2/16 but far from 10.2.128/24: the /16 rule, excluded at /17.
        assert_eq!(
            ecs_scope(&n, Client::Subnet("10.2.3.0/24".parse().unwrap())),
            17
        );
        // Outside every rule: just enough bits to exclude 10.2/16.
        assert_eq!(
            ecs_scope(&n, Client::Subnet("192.0.2.0/24".parse().unwrap())),
            1
        );
        assert_eq!(ecs_scope(&n, Client::Unknown), 0);
        // IPv6 clients are not constrained by IPv4 rules.
        assert_eq!(
            ecs_scope(&n, Client::Addr("2001:db8::1".parse().unwrap())),
            0
        );
    }

    #[test]
    fn unknown_site_is_down() {
        let now = Instant::now();
        let n = failover();
        let v = HealthView::from_pairs([("dc2", SiteView::up())]);
        let s = select(&n, &v, Client::Unknown, now);
        assert_eq!(s.outcome, serve(&["dc2"]));
        assert!(s.reasons.iter().any(|r| r.contains("unknown site")));
    }

    #[test]
    fn outcome_summary() {
        assert_eq!(serve(&["dc1"]).summary(), "dc1");
        assert_eq!(
            Outcome::Serve(vec![("dc1".into(), 3), ("dc2".into(), 1)]).summary(),
            "dc1*3 dc2*1"
        );
        assert!(Outcome::Servfail.summary().starts_with("SERVFAIL"));
    }
}
