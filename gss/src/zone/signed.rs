//! The zone's signatures, made ahead ([`Signatures::make`]): every RRset the zone can
//! answer with, including every possible site-selected RRset (a name's A and AAAA
//! set for each of its sites: client rules and failover only choose among them), and
//! the NSEC chain over the zone's known names (one NSEC per owner; a site-selected
//! name has one per distinct set of types its sites give it, so a NODATA for AAAA at a
//! name whose chosen site has only IPv4 is proven by an NSEC that says so).
//!
//! Answers look signatures up ([`Signatures::sigs_for`], [`Signatures::nsec_at`],
//! [`Signatures::covering`]); nothing here runs per query but those lookups. The
//! SOA, whose serial follows the answers, is signed when a zone is rendered
//! ([`super::render_at`]): one signature per change, in the supervisor.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::{address_records, ZoneTemplate};
use crate::dnssec::{expiry_of, KeySet};

/// One NSEC variant at an owner: the record, its RRSIGs and its type set.
#[derive(Debug, Clone)]
pub struct Nsec {
    /// The NSEC record.
    pub record: Record,
    /// Its RRSIGs.
    pub sigs: Vec<Record>,
    types: BTreeSet<RecordType>,
}

/// One signed RRset: the records as the zone serves them and their RRSIGs.
#[derive(Debug, Clone)]
struct Signed {
    rdata: Vec<RData>,
    sigs: Vec<Record>,
}

/// Every signature of one template, made at one moment.
#[derive(Debug)]
pub struct Signatures {
    /// When they were made (unix seconds).
    pub made: u64,
    /// The earliest expiry among them (unix seconds).
    pub earliest_expiry: u64,
    /// How many RRSIGs were made.
    pub count: usize,
    sets: HashMap<(LowerName, RecordType), Vec<Signed>>,
    /// The NSEC chain in canonical order: owner and its variants.
    chain: Vec<(LowerName, Vec<Nsec>)>,
}

impl Signatures {
    /// Signs everything `tpl` can answer with, at `unix` seconds, with `keys`.
    pub fn make(tpl: &ZoneTemplate, keys: &KeySet, unix: u64) -> Signatures {
        let mut s = Signatures {
            made: unix,
            earliest_expiry: u64::MAX,
            count: 0,
            sets: HashMap::new(),
            chain: Vec::new(),
        };
        let below_cut = |n: &LowerName| tpl.cut_above(n).is_some_and(|c| c != n);
        let add = |s: &mut Signatures, rrset: &[Record]| {
            let Some(first) = rrset.first() else { return };
            let sigs = keys.sign(rrset, unix);
            s.count += sigs.len();
            for e in sigs.iter().filter_map(expiry_of) {
                s.earliest_expiry = s.earliest_expiry.min(u64::from(e));
            }
            s.sets
                .entry((LowerName::from(&first.name), first.record_type()))
                .or_default()
                .push(Signed {
                    rdata: rrset.iter().map(|r| r.data.clone()).collect(),
                    sigs,
                });
        };
        add(&mut s, &tpl.ns);
        for (owner, sets) in &tpl.statics {
            if below_cut(owner) {
                continue;
            }
            for (rtype, records) in sets {
                // The parent side of a cut is not authoritative for the child's NS.
                if *rtype == RecordType::NS && tpl.cuts.contains(owner) {
                    continue;
                }
                add(&mut s, records);
            }
        }
        // Every site's answer of every site-selected name, whatever health says now.
        let mut site_types: HashMap<LowerName, Vec<BTreeSet<RecordType>>> = HashMap::new();
        for (owner, cfg) in &tpl.names {
            let name = Name::from(owner);
            let variants = site_types.entry(owner.clone()).or_default();
            for site in &cfg.sites {
                let addrs: &[IpAddr] = cfg.answers.get(site).map(Vec::as_slice).unwrap_or(&[]);
                let (a, aaaa) = address_records(&name, cfg.ttl, addrs);
                let mut types = BTreeSet::new();
                for set in [a, aaaa] {
                    if let Some(f) = set.first() {
                        types.insert(f.record_type());
                        let known = s
                            .sets
                            .get(&(owner.clone(), f.record_type()))
                            .is_some_and(|v| v.iter().any(|x| same(&x.rdata, &set)));
                        if !known {
                            add(&mut s, &set);
                        }
                    }
                }
                if !variants.contains(&types) {
                    variants.push(types);
                }
            }
        }
        // The NSEC chain: the apex and every name that exists, but not below a cut.
        let mut owners: Vec<&LowerName> = tpl.existing.iter().filter(|n| !below_cut(n)).collect();
        owners.sort();
        let neg_ttl = tpl.cfg.soa.ttl.min(tpl.cfg.soa.minimum);
        for (i, owner) in owners.iter().enumerate() {
            let next = Name::from(*owners.get(i + 1).unwrap_or(&owners[0]));
            let mut base: BTreeSet<RecordType> = [RecordType::RRSIG, RecordType::NSEC].into();
            if let Some(sets) = tpl.statics.get(*owner) {
                base.extend(sets.iter().map(|(t, _)| *t));
            }
            if **owner == tpl.origin {
                base.extend([RecordType::SOA, RecordType::NS]);
            }
            let variants = match site_types.get(*owner) {
                Some(v) => v
                    .iter()
                    .map(|t| base.iter().chain(t.iter()).copied().collect())
                    .collect(),
                None => vec![base],
            };
            let mut nsecs = Vec::with_capacity(variants.len());
            for types in variants {
                let record = Record::from_rdata(
                    Name::from(*owner),
                    neg_ttl,
                    RData::DNSSEC(DNSSECRData::NSEC(NSEC::new(
                        next.clone(),
                        types.iter().copied(),
                    ))),
                );
                let sigs = keys.sign(std::slice::from_ref(&record), unix);
                s.count += sigs.len();
                for e in sigs.iter().filter_map(expiry_of) {
                    s.earliest_expiry = s.earliest_expiry.min(u64::from(e));
                }
                nsecs.push(Nsec {
                    record,
                    sigs,
                    types,
                });
            }
            s.chain.push(((*owner).clone(), nsecs));
        }
        s
    }

    /// The RRSIGs of the RRset `records` (one owner and type) as the zone signed it,
    /// matched by owner, type and data; `source` looks up a wildcard's signatures for
    /// records synthesized from it.
    pub fn sigs_for(&self, records: &[Record], source: Option<&LowerName>) -> Option<&[Record]> {
        let first = records.first()?;
        let owner = match source {
            Some(s) => s.clone(),
            None => LowerName::from(&first.name),
        };
        self.sets
            .get(&(owner, first.record_type()))?
            .iter()
            .find(|s| same(&s.rdata, records))
            .map(|s| s.sigs.as_slice())
    }

    /// The NSEC at `owner` whose type set lacks `qtype` (and CNAME): the NODATA proof.
    pub fn nsec_at(&self, owner: &LowerName, qtype: RecordType) -> Option<&Nsec> {
        let i = self.chain.binary_search_by(|(o, _)| o.cmp(owner)).ok()?;
        self.chain[i]
            .1
            .iter()
            .find(|n| !n.types.contains(&qtype) && !n.types.contains(&RecordType::CNAME))
    }

    /// The NSEC whose span covers `name` (a name that does not exist): the one at the
    /// greatest owner before it in canonical order.
    pub fn covering(&self, name: &LowerName) -> Option<&Nsec> {
        let i = match self.chain.binary_search_by(|(o, _)| o.cmp(name)) {
            Ok(i) => i,
            Err(0) => self.chain.len().checked_sub(1)?,
            Err(i) => i - 1,
        };
        self.chain.get(i)?.1.first()
    }

    /// Number of owners in the NSEC chain.
    pub fn chain_len(&self) -> usize {
        self.chain.len()
    }
}

fn same(rdata: &[RData], records: &[Record]) -> bool {
    rdata.len() == records.len() && rdata.iter().zip(records).all(|(d, r)| *d == r.data)
}
