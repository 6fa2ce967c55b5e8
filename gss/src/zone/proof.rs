//! A signed answer for a query with the DO bit: the RRSIGs made ahead for each RRset
//! of the answer and authority sections, and the NSEC records (with theirs) that the
//! lookup's [`Proof`]s call for (RFC 4035 §3.1.3). Only copies: every signature was
//! made before the query came ([`super::signed`]).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};

use super::lookup::{Proof, Resolution};
use super::signed::{Nsec, Signatures};
use super::Zone;

/// Adds signatures and denial proofs to `r` when the zone is signed.
pub fn secure(zone: &Zone, r: &mut Resolution<'_>) {
    let Some(sigs) = zone.tpl.signatures.as_deref() else {
        return;
    };
    if !matches!(r.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
        return;
    }
    let wild: Vec<(LowerName, LowerName)> = r
        .proofs
        .iter()
        .filter_map(|p| match p {
            Proof::Wildcard { name, source } => Some((name.clone(), source.clone())),
            _ => None,
        })
        .collect();
    r.answers = with_sigs(zone, sigs, &r.answers, &wild);
    let mut authority = with_sigs(zone, sigs, &r.authority, &[]);
    let mut add = |n: Option<&Nsec>| {
        let Some(n) = n else { return };
        if authority.contains(&n.record) {
            return;
        }
        authority.push(n.record.clone());
        authority.extend(n.sigs.iter().cloned());
    };
    for p in &r.proofs {
        match p {
            Proof::None => {}
            Proof::NxDomain(name) => {
                add(sigs.covering(name));
                let ce = closest_encloser(zone, name);
                if let Ok(star) = Name::from(&ce).prepend_label("*") {
                    add(sigs.covering(&LowerName::from(star)));
                }
            }
            Proof::NoData(owner, qtype) => add(sigs.nsec_at(owner, *qtype)),
            Proof::EmptyNonTerminal(name) => add(sigs.covering(name)),
            Proof::Wildcard { name, .. } => add(sigs.covering(name)),
            Proof::WildcardNoData {
                name,
                source,
                qtype,
            } => {
                add(sigs.covering(name));
                add(sigs.nsec_at(source, *qtype));
            }
            Proof::Referral(cut) => add(sigs.nsec_at(cut, RecordType::DS)),
        }
    }
    r.authority = authority;
}

/// The longest ancestor of `name` that exists (empty non-terminals included).
fn closest_encloser(zone: &Zone, name: &LowerName) -> LowerName {
    let tpl = &zone.tpl;
    let mut ce = name.base_name();
    while !tpl.existing.contains(&ce)
        && !tpl.ents.contains(&ce)
        && ce != tpl.origin
        && !ce.is_root()
    {
        ce = ce.base_name();
    }
    ce
}

/// `records` with each RRset (consecutive records of one owner and type) followed by
/// its RRSIGs; `wild` maps names answered from a wildcard to its owner.
fn with_sigs(
    zone: &Zone,
    sigs: &Signatures,
    records: &[Record],
    wild: &[(LowerName, LowerName)],
) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len() * 2);
    let mut i = 0;
    while i < records.len() {
        let first = &records[i];
        let end = records[i..]
            .iter()
            .position(|r| r.name != first.name || r.record_type() != first.record_type())
            .map_or(records.len(), |n| i + n);
        let set = &records[i..end];
        out.extend(set.iter().cloned());
        if first.record_type() == RecordType::SOA {
            let soa_sigs = if first.ttl == zone.neg_soa.ttl && *first == zone.neg_soa {
                &zone.neg_soa_sigs
            } else {
                &zone.soa_sigs
            };
            out.extend(soa_sigs.iter().cloned());
        } else {
            let owner = LowerName::from(&first.name);
            let source = wild.iter().find(|(n, _)| *n == owner).map(|(_, s)| s);
            if let Some(found) = sigs.sigs_for(set, source) {
                out.extend(found.iter().map(|s| {
                    let mut s = s.clone();
                    s.name = first.name.clone();
                    s
                }));
            }
        }
        i = end;
    }
    out
}
