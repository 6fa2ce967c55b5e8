//! Zone lookup as an authoritative server does it (RFC 1034 §4.3.2), without I/O so
//! every rule is unit-tested: referrals below a delegation, CNAME chains followed
//! while they stay in the zone, wildcard synthesis (RFC 4592, empty non-terminals
//! count as existing), site-selected answers, NODATA/NXDOMAIN with the negative SOA,
//! and additional-section addresses for NS, MX and SRV targets in the zone.
//!
//! It clones the records it returns: it serves the rare shapes and TCP, while the UDP
//! fast path answers the common ones from bytes pre-rendered through this code.

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{CNAME, TXT};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use super::{NameAnswers, Zone, ZoneTemplate};
use crate::select::{self, Client};

/// Longest CNAME chain followed inside the zone; longer chains are answered with
/// the part followed (the resolver continues from the last target).
pub const MAX_CHAIN: usize = 8;

/// Which weighted pick answers: the live rotation (queries) or a fixed one (the fast
/// path pre-renders every pick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choose {
    /// Advance the name's rotation.
    Rotate,
    /// Use this pick, leaving the rotation alone.
    Index(usize),
}

/// The decided content of a response, before EDNS and size limits.
#[derive(Debug)]
pub struct Resolution<'z> {
    /// Response code.
    pub rcode: ResponseCode,
    /// AA: set on in-zone answers and negatives, clear on referrals and REFUSED.
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section: the negative SOA, or a referral's NS set.
    pub authority: Vec<Record>,
    /// Additional section: glue and target addresses.
    pub additional: Vec<Record>,
    /// ECS scope prefix (RFC 7871 §7.2.1): non-zero only when client rules decided.
    pub scope: u8,
    /// The metrics label (the name's config or a kind of answer).
    pub label: &'z str,
    /// A referral: its glue may not be dropped to make the response fit.
    pub referral: bool,
    /// The answer depends on more than the query name's own pick (a CNAME led to a
    /// name answering per client or by rotation): not for pre-rendering.
    pub varies: bool,
    /// What a signed answer must prove besides its RRsets' signatures (DNSSEC
    /// denial of existence, wildcard expansion, an unsigned delegation), per step.
    pub proofs: Vec<Proof>,
}

/// The DNSSEC proofs an answer needs ([`super::proof`] turns them into NSEC records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// Nothing beyond the signatures of the RRsets.
    None,
    /// The name does not exist (nor a wildcard that would match it).
    NxDomain(LowerName),
    /// The name exists without this type.
    NoData(LowerName, RecordType),
    /// An empty non-terminal: exists, owns nothing.
    EmptyNonTerminal(LowerName),
    /// The answer was synthesized from the wildcard `source`: the query name does
    /// not exist.
    Wildcard {
        /// The query name (or chain step) answered.
        name: LowerName,
        /// The `*.` owner it came from.
        source: LowerName,
    },
    /// A wildcard matched but has no data of this type.
    WildcardNoData {
        /// The name asked.
        name: LowerName,
        /// The `*.` owner.
        source: LowerName,
        /// The type asked.
        qtype: RecordType,
    },
    /// A referral to an unsigned child: there is no DS at the cut.
    Referral(LowerName),
}

impl<'z> Resolution<'z> {
    fn new(rcode: ResponseCode, authoritative: bool, label: &'z str) -> Self {
        Resolution {
            rcode,
            authoritative,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            scope: 0,
            label,
            referral: false,
            varies: false,
            proofs: Vec::new(),
        }
    }
}

/// What one owner name holds for the question.
enum Node<'z> {
    Records {
        records: Vec<Record>,
        scope: u8,
        label: &'z str,
        varies: bool,
    },
    Cname {
        record: Box<Record>,
        target: LowerName,
        label: &'z str,
    },
    NoData(&'z str),
    NxDomain,
    Servfail(&'z str),
}

/// Resolves `qname`/`qtype` in `zone` for `client`.
pub fn resolve<'z>(
    zone: &'z Zone,
    qname: &LowerName,
    qtype: RecordType,
    client: Client,
    choose: Choose,
) -> Resolution<'z> {
    let tpl = &zone.tpl;
    if !tpl.origin.zone_of(qname) {
        return Resolution::new(ResponseCode::Refused, false, "out-of-zone");
    }
    let mut r = Resolution::new(ResponseCode::NoError, true, "-");
    let mut name = qname.clone();
    let mut visited: Vec<LowerName> = Vec::new();
    for step in 0..=MAX_CHAIN {
        let first = step == 0;
        if let Some(cut) = tpl.cut_above(&name) {
            if !first {
                // A CNAME into a delegated subtree: the CNAME alone, the resolver
                // follows it to the child zone.
                break;
            }
            if !(name == *cut && qtype == RecordType::DS) {
                referral(zone, cut, &mut r);
                r.proofs.push(Proof::Referral(cut.clone()));
                return r;
            }
            // DS at the cut is the parent's data; there is none (children are
            // unsigned), which the NSEC at the cut proves.
            r.label = "delegation";
            r.authority.push(zone.neg_soa.clone());
            r.proofs.push(Proof::NoData(cut.clone(), RecordType::DS));
            return r;
        }
        // Later steps of a chain pick without advancing another name's rotation
        // when pre-rendering.
        let pick = if first { choose } else { Choose::Index(0) };
        let mut source = None;
        let found = node(zone, &name, qtype, client, pick, &mut source);
        let proof = match (&found, source) {
            (Node::NxDomain, _) => Proof::NxDomain(name.clone()),
            (Node::NoData(_), None) if tpl.ents.contains(&name) => {
                Proof::EmptyNonTerminal(name.clone())
            }
            (Node::NoData(_), None) => Proof::NoData(name.clone(), qtype),
            (Node::NoData(_), Some(source)) => Proof::WildcardNoData {
                name: name.clone(),
                source,
                qtype,
            },
            (Node::Records { .. } | Node::Cname { .. }, Some(source)) => Proof::Wildcard {
                name: name.clone(),
                source,
            },
            _ => Proof::None,
        };
        if proof != Proof::None {
            r.proofs.push(proof);
        }
        match found {
            Node::Records {
                records,
                scope,
                label,
                varies,
            } => {
                if first {
                    r.label = label;
                }
                r.scope = r.scope.max(scope);
                r.varies |= varies && !first;
                r.answers.extend(records);
                break;
            }
            Node::Cname {
                record,
                target,
                label,
            } => {
                if first {
                    r.label = label;
                }
                r.answers.push(*record);
                visited.push(name);
                if !tpl.origin.zone_of(&target) || visited.contains(&target) {
                    break;
                }
                name = target;
            }
            Node::NoData(label) => {
                if first {
                    r.label = label;
                }
                r.authority.push(zone.neg_soa.clone());
                break;
            }
            Node::NxDomain => {
                if first {
                    r.label = "nxdomain";
                }
                // RFC 6604: a chain ending at a missing name is NXDOMAIN, CNAMEs kept.
                r.rcode = ResponseCode::NXDomain;
                r.authority.push(zone.neg_soa.clone());
                break;
            }
            Node::Servfail(label) => {
                let mut s = Resolution::new(ResponseCode::ServFail, false, label);
                if !first {
                    s.label = r.label;
                }
                return s;
            }
        }
    }
    additional(zone, &mut r);
    r
}

/// The source of synthesis for a name that does not exist: `*.<closest encloser>`
/// when that wildcard exists (RFC 4592 §3.3.1).
pub(crate) fn wildcard_source(tpl: &ZoneTemplate, name: &LowerName) -> Option<LowerName> {
    let mut ce = name.base_name();
    while !tpl.existing.contains(&ce) && !tpl.ents.contains(&ce) {
        if ce == tpl.origin || ce.is_root() {
            break;
        }
        ce = ce.base_name();
    }
    let star = LowerName::from(Name::from(&ce).prepend_label("*").ok()?);
    tpl.existing.contains(&star).then_some(star)
}

/// What `name` holds for `qtype`; `wildcard` is set to the `*.` owner when the
/// records are synthesized from a wildcard.
fn node<'z>(
    zone: &'z Zone,
    name: &LowerName,
    qtype: RecordType,
    client: Client,
    choose: Choose,
    wildcard: &mut Option<LowerName>,
) -> Node<'z> {
    let tpl = &zone.tpl;
    let (source, synthesized) = if tpl.existing.contains(name) {
        (name.clone(), false)
    } else if tpl.ents.contains(name) {
        return Node::NoData("static");
    } else {
        match wildcard_source(tpl, name) {
            Some(w) => {
                *wildcard = Some(w.clone());
                (w, true)
            }
            None => return Node::NxDomain,
        }
    };
    let owner = Name::from(name);
    let copy = |recs: &[Record]| -> Vec<Record> {
        recs.iter()
            .map(|r| {
                let mut r = r.clone();
                if synthesized {
                    r.name = owner.clone();
                }
                r
            })
            .collect()
    };
    let records = |records: Vec<Record>, label: &'z str| Node::Records {
        records,
        scope: 0,
        label,
        varies: false,
    };
    if let Some(c) = tpl.static_set(&source, RecordType::CNAME) {
        if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
            return records(copy(c), "static");
        }
        if let Some(record) = copy(&c[..1]).pop() {
            if let RData::CNAME(CNAME(target)) = &record.data {
                let target = LowerName::from(target);
                return Node::Cname {
                    record: Box::new(record),
                    target,
                    label: "static",
                };
            }
        }
    }
    if source == tpl.origin {
        let label = tpl.cfg.zone.as_str();
        match qtype {
            RecordType::SOA | RecordType::ANY => return records(vec![zone.soa.clone()], label),
            RecordType::NS if !tpl.ns.is_empty() => return records(tpl.ns.clone(), label),
            _ => {}
        }
    }
    let selected = zone.names.get(&source);
    if let Some(n) = selected {
        if let Some(x) = site_lookup(n, qtype, client, choose) {
            return x;
        }
    }
    let label = match selected {
        Some(n) => n.cfg.fqdn.as_str(),
        None if source == tpl.origin => tpl.cfg.zone.as_str(),
        None => "static",
    };
    if let Some(sets) = tpl.statics.get(&source) {
        let set = if qtype == RecordType::ANY {
            sets.first()
        } else {
            sets.iter().find(|(t, _)| *t == qtype)
        };
        if let Some((_, v)) = set {
            return records(copy(v), label);
        }
    }
    Node::NoData(label)
}

fn site_lookup<'z>(
    n: &'z NameAnswers,
    qtype: RecordType,
    client: Client,
    choose: Choose,
) -> Option<Node<'z>> {
    if !matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY) {
        return None;
    }
    let (rule, scope) = if n.cfg.clients.is_empty() {
        (None, 0)
    } else {
        (
            select::match_rule(&n.cfg, client),
            select::ecs_scope(&n.cfg, client),
        )
    };
    let answer = match rule.and_then(|i| n.rules.get(i)) {
        Some(r) => r,
        None => &n.default,
    };
    let label = n.cfg.fqdn.as_str();
    let pick = match choose {
        Choose::Rotate => answer.pick(),
        Choose::Index(i) => answer.pick_at(i),
    };
    let Some(pick) = pick else {
        return Some(Node::Servfail(label));
    };
    let records = match qtype {
        RecordType::A => &pick.a,
        RecordType::AAAA => &pick.aaaa,
        _ if !pick.a.is_empty() => &pick.a,
        _ => &pick.aaaa,
    };
    if records.is_empty() {
        // The selected site has no address of this family: NODATA for now, but the
        // name exists, so never NXDOMAIN.
        return None;
    }
    Some(Node::Records {
        records: records.clone(),
        scope,
        label,
        varies: !n.cfg.clients.is_empty() || n.default.variants() > 1,
    })
}

fn referral(zone: &Zone, cut: &LowerName, r: &mut Resolution<'_>) {
    r.authoritative = false;
    r.referral = true;
    r.label = "delegation";
    if let Some(ns) = zone.tpl.static_set(cut, RecordType::NS) {
        r.authority = ns.to_vec();
    }
    let targets: Vec<LowerName> = r
        .authority
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::NS(ns) => Some(LowerName::from(&ns.0)),
            _ => None,
        })
        .collect();
    for t in targets {
        addresses(zone, &t, &mut r.additional);
    }
}

/// Adds addresses of the in-zone NS, MX and SRV targets in the answer.
fn additional(zone: &Zone, r: &mut Resolution<'_>) {
    if r.rcode != ResponseCode::NoError {
        return;
    }
    let targets: Vec<LowerName> = r
        .answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::NS(ns) => Some(LowerName::from(&ns.0)),
            RData::MX(mx) => Some(LowerName::from(&mx.exchange)),
            RData::SRV(srv) => Some(LowerName::from(&srv.target)),
            _ => None,
        })
        .collect();
    for t in targets {
        let in_answer = r.answers.iter().any(|a| {
            matches!(a.data, RData::A(_) | RData::AAAA(_)) && LowerName::from(&a.name) == t
        });
        if !in_answer {
            addresses(zone, &t, &mut r.additional);
        }
    }
}

/// The A and AAAA records of `target` when it is in the zone: static ones, or a
/// site-selected name's answer when that does not depend on the client or a
/// rotation (so pre-rendered responses stay right).
fn addresses(zone: &Zone, target: &LowerName, out: &mut Vec<Record>) {
    let tpl = &zone.tpl;
    if !tpl.origin.zone_of(target) || out.iter().any(|r| LowerName::from(&r.name) == *target) {
        return;
    }
    for t in [RecordType::A, RecordType::AAAA] {
        if let Some(v) = tpl.static_set(target, t) {
            out.extend(v.iter().cloned());
        }
    }
    if let Some(n) = zone.names.get(target) {
        if n.cfg.clients.is_empty() && n.default.variants() == 1 {
            if let Some(p) = n.default.pick_at(0) {
                out.extend(p.a.iter().cloned());
                out.extend(p.aaaa.iter().cloned());
            }
        }
    }
}

/// A CHAOS-class question (RFC 4892): `id.server`/`hostname.bind` answer
/// `server_id`, `version.server`/`version.bind` answer `server_version`, each a TXT
/// string, when configured; everything else in class CH is REFUSED.
pub fn chaos<'z>(zone: &'z Zone, qname: &LowerName, qtype: RecordType) -> Resolution<'z> {
    let cfg = &zone.tpl.cfg;
    let text = match qname.to_string().to_ascii_lowercase().as_str() {
        "id.server." | "hostname.bind." => cfg.server_id.as_deref(),
        "version.server." | "version.bind." => cfg.server_version.as_deref(),
        _ => None,
    };
    let Some(text) = text else {
        return Resolution::new(ResponseCode::Refused, false, "chaos");
    };
    // Not zone data: no AA, as NSD answers these.
    let mut r = Resolution::new(ResponseCode::NoError, false, "chaos");
    if matches!(qtype, RecordType::TXT | RecordType::ANY) {
        let mut rec = Record::from_rdata(
            Name::from(qname),
            0,
            RData::TXT(TXT::new(vec![text.to_string()])),
        );
        rec.dns_class = DNSClass::CH;
        r.answers.push(rec);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::select::{HealthView, SiteView};
    use crate::zone::{fqdn, render, ZoneTemplate};
    use shared::config::{
        AllDown, Failback, GssConfig, NameConfig, Policy, SoaConfig, StaticRecord,
    };
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tokio::time::Instant;

    const Z: &str = "ex.test";

    fn rec(owner: &str, rtype: &str, rdata: &str) -> StaticRecord {
        StaticRecord {
            fqdn: if owner == "@" {
                Z.to_string()
            } else {
                format!("{owner}.{Z}")
            },
            ttl: 60,
            rtype: rtype.into(),
            rdata: rdata.into(),
        }
    }

    pub(crate) fn cfg() -> GssConfig {
        GssConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            zone: Z.into(),
            ttl: 20,
            nameservers: vec![format!("ns1.{Z}"), "ns2.elsewhere.test".into()],
            soa: SoaConfig {
                ttl: 300,
                ..SoaConfig::defaults(Z, format!("ns1.{Z}"))
            },
            sites: vec![],
            names: vec![NameConfig {
                fqdn: format!("smtp.{Z}"),
                policy: Policy::Failover,
                sites: vec!["dc1".into(), "dc2".into()],
                weights: BTreeMap::new(),
                answers: BTreeMap::from([
                    (
                        "dc1".to_string(),
                        vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
                    ),
                    ("dc2".to_string(), vec!["192.0.2.2".parse().unwrap()]),
                ]),
                failback: Failback::Manual,
                all_down: AllDown::First,
                clients: vec![],
                ttl: 20,
            }],
            records: vec![
                rec("ns1", "A", "192.0.2.53"),
                rec("www", "CNAME", "smtp"),
                rec("chain", "CNAME", "www"),
                rec("out", "CNAME", "mail.example.net."),
                rec("dangling", "CNAME", "nothing"),
                rec("@", "MX", "10 mx"),
                rec("mx", "A", "192.0.2.25"),
                rec("_imap._tcp", "SRV", "0 1 993 imap"),
                rec("imap", "AAAA", "2001:db8::143"),
                rec("sub", "NS", "ns.sub"),
                rec("ns.sub", "A", "192.0.2.99"),
                rec("*.wild", "A", "192.0.2.7"),
                rec("exists.wild", "TXT", "\"here\""),
                rec("a.ent.wild", "TXT", "\"deep\""),
            ],
            server_id: Some("ns1-test".into()),
            server_version: None,
            dnssec: None,
            role: Default::default(),
            quorum: None,
        }
    }

    fn zone() -> Zone {
        let tpl = Arc::new(ZoneTemplate::new(&cfg()).unwrap());
        let view = HealthView::from_pairs([("dc1", SiteView::up()), ("dc2", SiteView::up())]);
        render(tpl, &view, Instant::now(), None)
    }

    fn ask<'z>(z: &'z Zone, name: &str, t: RecordType) -> Resolution<'z> {
        let n = LowerName::from(&fqdn(name).unwrap());
        resolve(z, &n, t, Client::Unknown, Choose::Rotate)
    }

    /// (owner, type, rdata) of each record, for compact assertions.
    fn show(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect()
    }

    #[test]
    fn cnames_are_followed_inside_the_zone() {
        let z = zone();
        let r = ask(&z, "www.ex.test", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.authoritative);
        assert_eq!(
            show(&r.answers),
            [
                "www.ex.test. CNAME smtp.ex.test.",
                "smtp.ex.test. A 192.0.2.1"
            ]
        );
        let r = ask(&z, "chain.ex.test", RecordType::AAAA);
        assert_eq!(
            show(&r.answers),
            [
                "chain.ex.test. CNAME www.ex.test.",
                "www.ex.test. CNAME smtp.ex.test.",
                "smtp.ex.test. AAAA 2001:db8::1"
            ]
        );
        // Target without the type: the CNAME, then NODATA's SOA.
        let r = ask(&z, "www.ex.test", RecordType::MX);
        assert_eq!(show(&r.answers), ["www.ex.test. CNAME smtp.ex.test."]);
        assert_eq!(r.authority.len(), 1);
        assert_eq!(r.authority[0].record_type(), RecordType::SOA);
        // Every type at the owner gets the CNAME, CNAME itself without chasing.
        for t in [RecordType::CNAME, RecordType::ANY, RecordType::TXT] {
            let r = ask(&z, "www.ex.test", t);
            assert_eq!(r.answers[0].record_type(), RecordType::CNAME, "{t}");
        }
        let r = ask(&z, "www.ex.test", RecordType::CNAME);
        assert_eq!(r.answers.len(), 1);
        assert!(r.authority.is_empty());
        // Out of zone: the CNAME alone, no SOA.
        let r = ask(&z, "out.ex.test", RecordType::A);
        assert_eq!(show(&r.answers), ["out.ex.test. CNAME mail.example.net."]);
        assert!(r.authority.is_empty());
        assert_eq!(r.rcode, ResponseCode::NoError);
        // Into nothing: NXDOMAIN with the CNAME (RFC 6604).
        let r = ask(&z, "dangling.ex.test", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        assert_eq!(r.answers.len(), 1);
        assert!(r.authoritative);
    }

    #[test]
    fn ns_below_the_apex_is_a_referral_with_glue() {
        let z = zone();
        for name in ["sub.ex.test", "x.y.sub.ex.test", "ns.sub.ex.test"] {
            for t in [RecordType::A, RecordType::NS, RecordType::MX] {
                let r = ask(&z, name, t);
                assert_eq!(r.rcode, ResponseCode::NoError, "{name} {t}");
                assert!(!r.authoritative, "{name} {t}: no aa on a referral");
                assert!(r.answers.is_empty());
                assert_eq!(show(&r.authority), ["sub.ex.test. NS ns.sub.ex.test."]);
                assert_eq!(show(&r.additional), ["ns.sub.ex.test. A 192.0.2.99"]);
                assert!(r.referral);
            }
        }
        // The parent side has no DS (and says so authoritatively).
        let r = ask(&z, "sub.ex.test", RecordType::DS);
        assert!(r.authoritative);
        assert_eq!(r.authority[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn wildcards_synthesize_per_rfc4592() {
        let z = zone();
        for name in ["foo.wild.ex.test", "a.b.wild.ex.test"] {
            let r = ask(&z, name, RecordType::A);
            assert_eq!(r.rcode, ResponseCode::NoError);
            assert!(r.authoritative);
            assert_eq!(show(&r.answers), [format!("{name}. A 192.0.2.7")]);
            let r = ask(&z, name, RecordType::MX);
            assert_eq!(r.rcode, ResponseCode::NoError, "NODATA");
            assert!(r.answers.is_empty());
            assert_eq!(r.authority[0].record_type(), RecordType::SOA);
        }
        // A name that exists is not expanded, nor are names below it.
        let r = ask(&z, "exists.wild.ex.test", RecordType::A);
        assert!(r.answers.is_empty());
        assert_eq!(r.rcode, ResponseCode::NoError);
        let r = ask(&z, "x.exists.wild.ex.test", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        // An empty non-terminal counts as existing.
        let r = ask(&z, "ent.wild.ex.test", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        let r = ask(&z, "zz.ent.wild.ex.test", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
        // No wildcard elsewhere.
        let r = ask(&z, "nope.ex.test", RecordType::A);
        assert_eq!(r.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn relative_names_in_rdata_are_under_the_zone() {
        let z = zone();
        let r = ask(&z, "ex.test", RecordType::MX);
        assert_eq!(show(&r.answers), ["ex.test. MX 10 mx.ex.test."]);
        let r = ask(&z, "_imap._tcp.ex.test", RecordType::SRV);
        assert_eq!(
            show(&r.answers),
            ["_imap._tcp.ex.test. SRV 0 1 993 imap.ex.test."]
        );
        let r = ask(&z, "out.ex.test", RecordType::CNAME);
        assert_eq!(show(&r.answers), ["out.ex.test. CNAME mail.example.net."]);
    }

    #[test]
    fn additional_section_has_in_zone_target_addresses() {
        let z = zone();
        let r = ask(&z, "ex.test", RecordType::NS);
        assert_eq!(r.answers.len(), 2);
        assert_eq!(show(&r.additional), ["ns1.ex.test. A 192.0.2.53"]);
        let r = ask(&z, "ex.test", RecordType::MX);
        assert_eq!(show(&r.additional), ["mx.ex.test. A 192.0.2.25"]);
        let r = ask(&z, "_imap._tcp.ex.test", RecordType::SRV);
        assert_eq!(show(&r.additional), ["imap.ex.test. AAAA 2001:db8::143"]);
    }

    #[test]
    fn chaos_names_answer_per_config() {
        let z = zone();
        let n = |s: &str| LowerName::from(&fqdn(s).unwrap());
        let r = chaos(&z, &n("ID.Server"), RecordType::TXT);
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].dns_class, DNSClass::CH);
        assert!(r.answers[0].data.to_string().contains("ns1-test"));
        let r = chaos(&z, &n("hostname.bind"), RecordType::TXT);
        assert_eq!(r.answers.len(), 1);
        let r = chaos(&z, &n("version.server"), RecordType::TXT);
        assert_eq!(r.rcode, ResponseCode::Refused, "off unless configured");
        assert!(!r.authoritative);
        let r = chaos(&z, &n("ex.test"), RecordType::SOA);
        assert_eq!(r.rcode, ResponseCode::Refused);
    }
}
