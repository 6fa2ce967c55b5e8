//! The zone: config template and rendered answers, no sockets. Everything a query
//! can get is rendered ahead of time into ready-made hickory records: a
//! [`ZoneTemplate`] per config (apex SOA/NS fields, parsed static records, the set of
//! existing names and empty non-terminals), and a [`Zone`] per health state with, for
//! every site-selected name and every client rule, the records of the chosen
//! site(s). The supervisor publishes the current [`Zone`] in its snapshot
//! ([`crate::snapshot`]) and swaps it whole when health changes, so a query costs a
//! hash lookup ([`lookup`]) and (for `weighted`) one atomic increment, never a
//! selection run.
//!
//! The SOA serial changes whenever the answers change, by one, from the config's
//! base and what was served before ([`crate::serial`]); no clock is read.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, HTTPS, NS, PTR, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use shared::config::{GssConfig, NameConfig};
use tokio::time::Instant;

use crate::dnssec::KeySet;
use crate::error::GssError;
use crate::metrics::QueryCounters;
use crate::select::{self, HealthView, Outcome, Selection};
use crate::serial::{self, Served};

pub mod lookup;
pub mod proof;
pub mod signed;

/// Parses a configured domain name (no trailing dot) as a fully qualified name.
pub fn fqdn(s: &str) -> Result<Name, GssError> {
    let dotted = if s.ends_with('.') {
        s.to_string()
    } else {
        format!("{s}.")
    };
    Name::from_ascii(&dotted).map_err(|e| GssError::Config(format!("bad name {s:?}: {e}")))
}

/// Config-derived, health-independent zone data.
#[derive(Debug, Clone)]
pub struct ZoneTemplate {
    /// The apex.
    pub origin: LowerName,
    /// The apex as a plain name (record owners).
    pub origin_name: Name,
    /// The source config.
    pub cfg: GssConfig,
    /// Apex NS records.
    pub ns: Vec<Record>,
    /// Static RRsets by owner, in config order of first appearance.
    pub statics: HashMap<LowerName, Vec<(RecordType, Vec<Record>)>>,
    /// Site-selected names.
    pub names: HashMap<LowerName, Arc<NameConfig>>,
    /// The keys of `names` in config order: a render walks them in this order, so
    /// every node hashes the same outcomes into the zone's signature, and finds each
    /// by key (a search of the config per name made a render quadratic: 100,000 names
    /// took minutes).
    pub order: Vec<LowerName>,
    /// Owner names that exist (apex, names, statics).
    pub existing: HashSet<LowerName>,
    /// Empty non-terminals: ancestors of existing names that own nothing.
    pub ents: HashSet<LowerName>,
    /// Delegation points: owners of static NS records below the apex.
    pub cuts: HashSet<LowerName>,
    /// The signing keys when `[gss.dnssec]` is configured.
    pub keys: Option<Arc<KeySet>>,
    /// Every signature of this template, made ahead (see [`signed`]).
    pub signatures: Option<Arc<signed::Signatures>>,
}

impl ZoneTemplate {
    /// Builds the template, parsing static rdata (presentation format).
    pub fn new(cfg: &GssConfig) -> Result<ZoneTemplate, GssError> {
        let origin_name = fqdn(&cfg.zone)?;
        let origin = LowerName::from(&origin_name);
        let mut ns = Vec::new();
        for n in &cfg.nameservers {
            ns.push(Record::from_rdata(
                origin_name.clone(),
                cfg.soa.ttl,
                RData::NS(NS(fqdn(n)?)),
            ));
        }
        let mut statics: HashMap<LowerName, Vec<(RecordType, Vec<Record>)>> = HashMap::new();
        for r in &cfg.records {
            let owner = fqdn(&r.fqdn)?;
            let rtype: RecordType = r.rtype.parse().map_err(|e| {
                GssError::Config(format!("record {}: type {}: {e}", r.fqdn, r.rtype))
            })?;
            let rdata = RData::try_from_str(rtype, &r.rdata)
                .map_err(|e| e.to_string())
                .and_then(|d| absolutize(d, &origin_name))
                .map_err(|e| {
                    GssError::Config(format!("record {} {} {:?}: {e}", r.fqdn, r.rtype, r.rdata))
                })?;
            let lower = LowerName::from(&owner);
            if !origin.zone_of(&lower) {
                return Err(GssError::Config(format!(
                    "record {} is outside zone {}",
                    r.fqdn, cfg.zone
                )));
            }
            let record = Record::from_rdata(owner, r.ttl, rdata);
            let sets = statics.entry(lower).or_default();
            match sets.iter_mut().find(|(t, _)| *t == rtype) {
                Some((_, v)) => v.push(record),
                None => sets.push((rtype, vec![record])),
            }
        }
        let keys = match &cfg.dnssec {
            Some(d) => Some(Arc::new(KeySet::load(d, &origin_name)?)),
            None => None,
        };
        if let Some(k) = &keys {
            // The key sets live at the apex like any static data, so lookups, the fast
            // path and the NSEC type maps see them without special cases.
            let ttl = cfg.soa.ttl;
            let apex = statics.entry(origin.clone()).or_default();
            for set in [k.dnskeys(ttl), k.cds(ttl), k.cdnskey(ttl)] {
                if let Some(f) = set.first() {
                    apex.push((f.record_type(), set));
                }
            }
        }
        let mut names = HashMap::new();
        let mut order = Vec::with_capacity(cfg.names.len());
        for n in &cfg.names {
            let owner = LowerName::from(&fqdn(&n.fqdn)?);
            if !origin.zone_of(&owner) {
                return Err(GssError::Config(format!(
                    "name {} is outside zone {}",
                    n.fqdn, cfg.zone
                )));
            }
            if names.insert(owner.clone(), Arc::new(n.clone())).is_none() {
                order.push(owner);
            }
        }
        let mut existing: HashSet<LowerName> = HashSet::new();
        existing.insert(origin.clone());
        existing.extend(statics.keys().cloned());
        existing.extend(names.keys().cloned());
        let mut ents = HashSet::new();
        for name in &existing {
            let mut n = name.base_name();
            while origin.zone_of(&n) && n != origin {
                if !existing.contains(&n) {
                    ents.insert(n.clone());
                }
                n = n.base_name();
            }
        }
        let cuts = statics
            .iter()
            .filter(|(owner, sets)| {
                **owner != origin && sets.iter().any(|(t, _)| *t == RecordType::NS)
            })
            .map(|(owner, _)| owner.clone())
            .collect();
        let mut tpl = ZoneTemplate {
            origin,
            origin_name,
            cfg: cfg.clone(),
            ns,
            statics,
            names,
            order,
            existing,
            ents,
            cuts,
            keys,
            signatures: None,
        };
        tpl.signatures = tpl
            .keys
            .as_ref()
            .map(|k| Arc::new(signed::Signatures::make(&tpl, k, unix_now())));
        Ok(tpl)
    }

    /// The same template with every signature made again at `unix` seconds (the
    /// re-sign loop); `None` for an unsigned zone.
    pub fn resigned(&self, unix: u64) -> Option<ZoneTemplate> {
        let keys = self.keys.as_ref()?;
        let mut tpl = self.clone();
        tpl.signatures = Some(Arc::new(signed::Signatures::make(self, keys, unix)));
        Some(tpl)
    }

    /// The delegation point at or above `name` closest to the apex, if any: the
    /// parent side of a cut answers with a referral for everything at or below it.
    pub fn cut_above(&self, name: &LowerName) -> Option<&LowerName> {
        if self.cuts.is_empty() {
            return None;
        }
        let mut best = None;
        let mut n = name.clone();
        while n != self.origin && self.origin.zone_of(&n) {
            if let Some(c) = self.cuts.get(&n) {
                best = Some(c);
            }
            n = n.base_name();
        }
        best
    }

    /// Static RRset of `rtype` at `name`.
    pub fn static_set(&self, name: &LowerName, rtype: RecordType) -> Option<&[Record]> {
        self.statics
            .get(name)?
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, v)| v.as_slice())
    }
}

/// Makes the domain names inside static rdata absolute: as in a zone file, a name
/// without a trailing dot is relative to the zone (`mx MX 10 mx2` means
/// `mx2.ZONE.`), where hickory's parser would leave it relative to the root.
fn absolutize(data: RData, origin: &Name) -> Result<RData, String> {
    let abs = |n: Name| -> Result<Name, String> {
        if n.is_fqdn() {
            Ok(n)
        } else if n.to_ascii() == "@" {
            Ok(origin.clone())
        } else {
            n.append_domain(origin).map_err(|e| e.to_string())
        }
    };
    Ok(match data {
        RData::CNAME(CNAME(n)) => RData::CNAME(CNAME(abs(n)?)),
        RData::NS(NS(n)) => RData::NS(NS(abs(n)?)),
        RData::PTR(PTR(n)) => RData::PTR(PTR(abs(n)?)),
        RData::MX(mut mx) => {
            mx.exchange = abs(mx.exchange)?;
            RData::MX(mx)
        }
        RData::SRV(mut srv) => {
            srv.target = abs(srv.target)?;
            RData::SRV(srv)
        }
        RData::SVCB(mut svcb) => {
            svcb.target_name = abs(svcb.target_name)?;
            RData::SVCB(svcb)
        }
        RData::HTTPS(HTTPS(mut svcb)) => {
            svcb.target_name = abs(svcb.target_name)?;
            RData::HTTPS(HTTPS(svcb))
        }
        other => other,
    })
}

/// One site's ready-made address records for a name.
#[derive(Debug)]
pub struct Pick {
    /// Cumulative weight bound (exclusive) of this pick.
    pub upto: u32,
    /// Site name.
    pub site: String,
    /// A records.
    pub a: Vec<Record>,
    /// AAAA records.
    pub aaaa: Vec<Record>,
}

/// The answer for one (name, client rule) under the current health.
#[derive(Debug)]
pub enum RuleAnswer {
    /// `all_down = "servfail"` and every site is down.
    Servfail,
    /// One or more sites (several only for `weighted`).
    Serve {
        /// Picks with cumulative weights.
        picks: Vec<Pick>,
        /// Sum of weights.
        total: u32,
        /// Per-query rotation for the weighted split, shared with the UDP fast path's
        /// pre-rendered variants so both paths walk one rotation.
        counter: Arc<AtomicU32>,
    },
}

impl RuleAnswer {
    /// The site whose records answer this query: a counter walks the weight space, so
    /// over many queries each site gets exactly its share.
    pub fn pick(&self) -> Option<&Pick> {
        self.pick_index().and_then(|i| self.pick_at(i))
    }

    /// The index of the pick answering this query (advances the rotation); `None`
    /// for SERVFAIL.
    pub fn pick_index(&self) -> Option<usize> {
        match self {
            RuleAnswer::Servfail => None,
            RuleAnswer::Serve {
                picks,
                total,
                counter,
            } => {
                if picks.len() <= 1 {
                    return (!picks.is_empty()).then_some(0);
                }
                Some(rotate(picks.iter().map(|p| p.upto), *total, counter))
            }
        }
    }

    /// Pick `i` without touching the rotation (the fast path pre-renders each one).
    pub fn pick_at(&self, i: usize) -> Option<&Pick> {
        match self {
            RuleAnswer::Servfail => None,
            RuleAnswer::Serve { picks, .. } => picks.get(i),
        }
    }

    /// How many picks there are (1 for SERVFAIL, which has one rendering).
    pub fn variants(&self) -> usize {
        match self {
            RuleAnswer::Servfail => 1,
            RuleAnswer::Serve { picks, .. } => picks.len().max(1),
        }
    }
}

/// Advances a weighted rotation: the index of the first bound above the counter's
/// next value modulo `total` (the last index if the bounds are short).
pub fn rotate(bounds: impl Iterator<Item = u32>, total: u32, counter: &AtomicU32) -> usize {
    let n = counter.fetch_add(1, Ordering::Relaxed) % total.max(1);
    let mut last = 0;
    for (i, upto) in bounds.enumerate() {
        if n < upto {
            return i;
        }
        last = i;
    }
    last
}

impl RuleAnswer {
    /// The rotation counter and cumulative bounds of a weighted split, for the fast
    /// path; `None` when there is at most one pick.
    pub fn rotation(&self) -> Option<(Arc<AtomicU32>, Vec<u32>, u32)> {
        match self {
            RuleAnswer::Serve {
                picks,
                total,
                counter,
            } if picks.len() > 1 => Some((
                counter.clone(),
                picks.iter().map(|p| p.upto).collect(),
                *total,
            )),
            _ => None,
        }
    }
}

/// A site-selected name's answers under the current health.
#[derive(Debug)]
pub struct NameAnswers {
    /// The name's config (client rules are matched per query).
    pub cfg: Arc<NameConfig>,
    /// Default order's answer.
    pub default: RuleAnswer,
    /// Per client rule, same indices as `cfg.clients`.
    pub rules: Vec<RuleAnswer>,
}

impl Zone {
    /// This rendering's serial and signature, for the next one's serial.
    pub fn served(&self) -> Served {
        Served {
            serial: self.serial,
            signature: self.signature,
        }
    }
}

/// Everything the server answers from, for one health state.
#[derive(Debug)]
pub struct Zone {
    /// Config-derived data.
    pub tpl: Arc<ZoneTemplate>,
    /// SOA serial of this rendering.
    pub serial: u32,
    /// Apex SOA (TTL = soa.ttl).
    pub soa: Record,
    /// SOA for negative answers (TTL = min(soa.ttl, minimum), RFC 2308 §3).
    pub neg_soa: Record,
    /// RRSIGs of `soa` (signed zones), made when this zone was rendered.
    pub soa_sigs: Vec<Record>,
    /// The same RRSIGs with `neg_soa`'s TTL.
    pub neg_soa_sigs: Vec<Record>,
    /// Site-selected answers by owner.
    pub names: HashMap<LowerName, NameAnswers>,
    /// Per name (config order): default outcome summary then each rule's, for change
    /// detection and events.
    pub outcomes: Vec<(String, Vec<String>)>,
    /// Hash of `outcomes`; a different value means the answers changed.
    pub signature: u64,
    /// The full answer path's query counters for this zone's answers.
    pub counters: QueryCounters,
}

pub(crate) fn address_records(
    owner: &Name,
    ttl: u32,
    addrs: &[IpAddr],
) -> (Vec<Record>, Vec<Record>) {
    let mut a = Vec::new();
    let mut aaaa = Vec::new();
    for ip in addrs {
        match ip {
            IpAddr::V4(v4) => a.push(Record::from_rdata(owner.clone(), ttl, RData::A(A(*v4)))),
            IpAddr::V6(v6) => aaaa.push(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::AAAA(AAAA(*v6)),
            )),
        }
    }
    (a, aaaa)
}

fn render_rule(name: &NameConfig, owner: &Name, sel: &Selection) -> RuleAnswer {
    let sites: Vec<(String, u32)> = match &sel.outcome {
        Outcome::Servfail => return RuleAnswer::Servfail,
        Outcome::FailOpen(s) => vec![(s.clone(), 1)],
        Outcome::Serve(v) => v.clone(),
    };
    let mut picks = Vec::with_capacity(sites.len());
    let mut upto = 0u32;
    for (site, weight) in sites {
        let addrs = name.answers.get(&site).map(Vec::as_slice).unwrap_or(&[]);
        let (a, aaaa) = address_records(owner, name.ttl, addrs);
        upto = upto.saturating_add(weight.max(1));
        picks.push(Pick {
            upto,
            site,
            a,
            aaaa,
        });
    }
    RuleAnswer::Serve {
        picks,
        total: upto,
        counter: Arc::new(AtomicU32::new(0)),
    }
}

/// Renders every name's answers for `view` at `now`. `prev` is the zone being
/// replaced (its serial and signature decide the new serial).
pub fn render(
    tpl: Arc<ZoneTemplate>,
    view: &HealthView,
    now: Instant,
    prev: Option<&Zone>,
) -> Zone {
    render_after(tpl, view, now, prev.map(Zone::served), &[])
}

/// The zone `cfg` serves with every site up, for tools and fuzzing that need
/// answers without probes or sockets.
pub fn render_all_up(cfg: &GssConfig) -> Result<Zone, GssError> {
    let tpl = Arc::new(ZoneTemplate::new(cfg)?);
    let view = HealthView {
        sites: cfg
            .sites
            .iter()
            .map(|s| (s.name.clone(), select::SiteView::up()))
            .collect(),
    };
    Ok(render(tpl, &view, Instant::now(), None))
}

/// [`render`] after the serial and signature that were served last (the zone being
/// replaced, or what a restart found saved) and what the cluster's other gss nodes
/// serve, for the serial ([`serial::next`]).
pub fn render_after(
    tpl: Arc<ZoneTemplate>,
    view: &HealthView,
    now: Instant,
    prev: Option<Served>,
    peers: &[Served],
) -> Zone {
    let mut names = HashMap::new();
    let mut outcomes = Vec::new();
    for lower in &tpl.order {
        let Some(cfg) = tpl.names.get(lower).cloned() else {
            continue;
        };
        let lower = lower.clone();
        let owner = Name::from(&lower);
        let default_sel = select::select_rule(&cfg, None, view, now);
        let mut summaries = vec![default_sel.outcome.summary()];
        let default = render_rule(&cfg, &owner, &default_sel);
        let mut rules = Vec::with_capacity(cfg.clients.len());
        for i in 0..cfg.clients.len() {
            let sel = select::select_rule(&cfg, Some(i), view, now);
            summaries.push(sel.outcome.summary());
            rules.push(render_rule(&cfg, &owner, &sel));
        }
        outcomes.push((cfg.fqdn.clone(), summaries));
        names.insert(
            lower,
            NameAnswers {
                cfg,
                default,
                rules,
            },
        );
    }
    let mut h = DefaultHasher::new();
    outcomes.hash(&mut h);
    tpl.cfg.hash_key().hash(&mut h);
    let signature = h.finish();
    let serial = serial::next(prev, signature, tpl.cfg.soa.serial, peers);
    let soa_cfg = &tpl.cfg.soa;
    let mname = fqdn(&soa_cfg.mname).unwrap_or_else(|_| tpl.origin_name.clone());
    let rname = fqdn(&soa_cfg.rname).unwrap_or_else(|_| tpl.origin_name.clone());
    let soa_rdata = RData::SOA(SOA::new(
        mname,
        rname,
        serial,
        clamp_i32(soa_cfg.refresh),
        clamp_i32(soa_cfg.retry),
        clamp_i32(soa_cfg.expire),
        soa_cfg.minimum,
    ));
    let soa = Record::from_rdata(tpl.origin_name.clone(), soa_cfg.ttl, soa_rdata.clone());
    let neg_soa = Record::from_rdata(
        tpl.origin_name.clone(),
        soa_cfg.ttl.min(soa_cfg.minimum),
        soa_rdata,
    );
    let soa_sigs = match &tpl.keys {
        Some(k) => k.sign(std::slice::from_ref(&soa), unix_now()),
        None => Vec::new(),
    };
    let neg_soa_sigs = soa_sigs
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.ttl = neg_soa.ttl;
            r
        })
        .collect();
    Zone {
        tpl,
        serial,
        soa,
        neg_soa,
        soa_sigs,
        neg_soa_sigs,
        names,
        outcomes,
        signature,
        counters: QueryCounters::default(),
    }
}

fn clamp_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// `unix` seconds as RFC 3339 text (for events and `show dnssec`).
pub fn unix_time_text(unix: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The wall clock in unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A stable key of the config parts that show in answers, so a reload that changes
/// addresses or TTLs also bumps the serial.
trait HashKey {
    fn hash_key(&self) -> String;
}

impl HashKey for GssConfig {
    fn hash_key(&self) -> String {
        format!(
            "{:?}{:?}{:?}{}",
            self.names, self.records, self.soa, self.ttl
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::SiteView;
    use shared::config::{AllDown, Failback, Policy, SoaConfig, StaticRecord};
    use std::collections::BTreeMap;
    use std::time::Duration;

    pub(crate) fn cfg() -> GssConfig {
        GssConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            zone: "gslb.example.test".into(),
            ttl: 20,
            nameservers: vec!["ns1.gslb.example.test".into()],
            soa: SoaConfig {
                ttl: 300,
                ..SoaConfig::defaults("gslb.example.test", "ns1.gslb.example.test".into())
            },
            sites: vec![],
            names: vec![NameConfig {
                fqdn: "smtp.gslb.example.test".into(),
                policy: Policy::Weighted,
                sites: vec!["dc1".into(), "dc2".into()],
                weights: BTreeMap::from([("dc1".to_string(), 3)]),
                answers: BTreeMap::from([
                    ("dc1".to_string(), vec!["127.0.0.1".parse().unwrap()]),
                    (
                        "dc2".to_string(),
                        vec!["127.0.0.2".parse().unwrap(), "::2".parse().unwrap()],
                    ),
                ]),
                failback: Failback::Auto(Duration::from_secs(60)),
                all_down: AllDown::First,
                clients: vec![],
                ttl: 20,
            }],
            records: vec![StaticRecord {
                fqdn: "a.b.gslb.example.test".into(),
                ttl: 60,
                rtype: "TXT".into(),
                rdata: "\"hello world\"".into(),
            }],
            server_id: None,
            server_version: None,
            dnssec: None,
            role: Default::default(),
            quorum: None,
        }
    }

    fn view(dc1: bool, dc2: bool) -> HealthView {
        let v = |up| if up { SiteView::up() } else { SiteView::down() };
        HealthView::from_pairs([("dc1", v(dc1)), ("dc2", v(dc2))])
    }

    #[test]
    fn template_knows_names_and_empty_non_terminals() {
        let t = ZoneTemplate::new(&cfg()).unwrap();
        let l = |s: &str| LowerName::from(&fqdn(s).unwrap());
        assert!(t.existing.contains(&l("smtp.gslb.example.test")));
        assert!(t.existing.contains(&l("a.b.gslb.example.test")));
        assert!(t.ents.contains(&l("b.gslb.example.test")));
        assert!(!t.ents.contains(&l("gslb.example.test")));
        let txt = t
            .static_set(&l("A.B.gslb.example.test"), RecordType::TXT)
            .expect("case-insensitive");
        assert_eq!(txt.len(), 1);
    }

    /// Outcomes follow the config's order, whatever the map's order: every node hashes
    /// them alike into the zone's signature.
    #[test]
    fn outcomes_follow_the_config_order() {
        let mut c = cfg();
        let base = c.names[0].clone();
        c.names = ["zeta", "alpha", "mid", "beta", "omega", "gamma"]
            .iter()
            .map(|n| NameConfig {
                fqdn: format!("{n}.gslb.example.test"),
                ..base.clone()
            })
            .collect();
        let tpl = Arc::new(ZoneTemplate::new(&c).unwrap());
        let z = render(tpl, &view(true, true), Instant::now(), None);
        let order: Vec<&str> = z.outcomes.iter().map(|(n, _)| n.as_str()).collect();
        let config: Vec<&str> = c.names.iter().map(|n| n.fqdn.as_str()).collect();
        assert_eq!(order, config);
    }

    #[test]
    fn bad_static_rdata_is_a_config_error() {
        let mut c = cfg();
        c.records[0].rtype = "A".into();
        c.records[0].rdata = "not-an-address".into();
        let e = ZoneTemplate::new(&c).unwrap_err();
        assert!(e.to_string().contains("a.b.gslb.example.test"), "{e}");
    }

    #[test]
    fn weighted_picks_split_exactly_by_weight() {
        let tpl = Arc::new(ZoneTemplate::new(&cfg()).unwrap());
        let z = render(tpl, &view(true, true), Instant::now(), None);
        let n = z.names.values().next().unwrap();
        let mut counts = HashMap::new();
        for _ in 0..400 {
            *counts
                .entry(n.default.pick().unwrap().site.clone())
                .or_insert(0) += 1;
        }
        assert_eq!(counts["dc1"], 300);
        assert_eq!(counts["dc2"], 100);
    }

    #[test]
    fn serial_is_the_same_on_every_node_and_increases_on_change() {
        // Two nodes: separate templates from the same config and the same health,
        // rendered at different moments: no clock enters the serial.
        let node = || {
            let tpl = Arc::new(ZoneTemplate::new(&cfg()).unwrap());
            render(tpl, &view(true, true), Instant::now(), None)
        };
        let a = node();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = node();
        assert_eq!(a.serial, b.serial, "same config and state, same serial");
        assert_eq!(a.serial, 1, "the config's base");
        assert_eq!(a.signature, b.signature);
        // Both see dc1 fail: again the same, and larger.
        let tpl = a.tpl.clone();
        let a2 = render(tpl.clone(), &view(false, true), Instant::now(), Some(&a));
        let b2 = render(b.tpl.clone(), &view(false, true), Instant::now(), Some(&b));
        assert_eq!(a2.serial, b2.serial);
        assert!(a2.serial > a.serial);
        // Back to the first answers: still increasing.
        let a3 = render(tpl.clone(), &view(true, true), Instant::now(), Some(&a2));
        assert!(a3.serial > a2.serial, "{} !> {}", a3.serial, a2.serial);
        // Nothing changed: nothing moves.
        let a4 = render(tpl, &view(true, true), Instant::now(), Some(&a3));
        assert_eq!(a4.serial, a3.serial);
        // A restart that finds a3's serial saved, with the same answers, keeps it.
        let restarted = render_after(
            Arc::new(ZoneTemplate::new(&cfg()).unwrap()),
            &view(true, true),
            Instant::now(),
            Some(a3.served()),
            &[],
        );
        assert_eq!(restarted.serial, a3.serial);
    }

    #[test]
    fn a_newer_config_serial_base_is_taken() {
        let mut c = cfg();
        c.soa.serial = 2_026_112_900;
        let z = render(
            Arc::new(ZoneTemplate::new(&c).unwrap()),
            &view(true, true),
            Instant::now(),
            None,
        );
        assert_eq!(z.serial, 2_026_112_900);
        match &z.soa.data {
            RData::SOA(soa) => assert_eq!(soa.serial, 2_026_112_900),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn serial_changes_only_when_answers_change() {
        let tpl = Arc::new(ZoneTemplate::new(&cfg()).unwrap());
        let now = Instant::now();
        let z1 = render(tpl.clone(), &view(true, true), now, None);
        let z2 = render(tpl.clone(), &view(true, true), now, Some(&z1));
        assert_eq!(z1.serial, z2.serial);
        let z3 = render(tpl.clone(), &view(false, true), now, Some(&z2));
        assert!(z3.serial > z2.serial);
        assert_eq!(z3.outcomes[0].1[0], "dc2");
        let pick = z3.names.values().next().unwrap().default.pick().unwrap();
        assert_eq!(pick.a.len(), 1);
        assert_eq!(pick.aaaa.len(), 1);
        assert_eq!(z3.neg_soa.ttl, 30, "min(soa ttl, minimum)");
        assert_eq!(z3.soa.ttl, 300);
    }
}
