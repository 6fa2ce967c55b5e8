//! Zone-data conflicts between `[gss]` records and names that a zone-file loader
//! (NSD, Knot) refuses: data beside a CNAME, static data shadowing a site-selected
//! answer, apex SOA/NS written by hand, and names hidden below a delegation. Kept
//! apart from the syntax checks so the rules read as one list.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use super::model::StaticRecord;

/// Types that a site-selected name answers itself; a static one beside it would be
/// shadowed by (or conflict with) the site choice.
const SELECTED_TYPES: &[&str] = &["A", "AAAA", "CNAME", "NS", "DNAME"];

/// Address types allowed below a delegation (glue for the child's name servers).
const GLUE_TYPES: &[&str] = &["A", "AAAA"];

/// Whether `name` equals `ancestor` or lies below it.
fn at_or_below(name: &str, ancestor: &str) -> bool {
    name == ancestor
        || name
            .strip_suffix(ancestor)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Every conflict as (span, message). `names` are the site-selected owners with the
/// span of their `name = ...`; `records` the parsed static records with their spans.
pub(crate) fn conflicts(
    zone: &str,
    names: &[(String, Range<usize>)],
    records: &[(StaticRecord, Range<usize>)],
) -> Vec<(Range<usize>, String)> {
    let mut out = Vec::new();
    let selected: BTreeSet<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
    let mut types_at: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (r, _) in records {
        types_at.entry(r.fqdn.as_str()).or_default().push(&r.rtype);
    }
    // Delegation points: NS owners below the apex.
    let cuts: BTreeSet<&str> = records
        .iter()
        .filter(|(r, _)| r.rtype == "NS" && r.fqdn != zone)
        .map(|(r, _)| r.fqdn.as_str())
        .collect();
    let cut_above = |name: &str, strictly: bool| {
        cuts.iter()
            .find(|c| at_or_below(name, c) && !(strictly && name == **c))
            .copied()
    };

    for (r, span) in records {
        let owner = r.fqdn.as_str();
        let t = r.rtype.as_str();
        if owner == zone && (t == "SOA" || t == "NS") {
            let from = if t == "SOA" {
                "[gss.soa] (the serial is derived by the gss)"
            } else {
                "[gss] nameservers"
            };
            out.push((
                span.clone(),
                format!("a static {t} record at the zone apex conflicts with the one built from {from}; remove this record"),
            ));
            continue;
        }
        if t == "SOA" {
            out.push((
                span.clone(),
                format!("a SOA record belongs only at the zone apex, not at \"{owner}\""),
            ));
            continue;
        }
        if selected.contains(owner) && SELECTED_TYPES.contains(&t) {
            out.push((
                span.clone(),
                format!("\"{owner}\" is a site-selected name ([[gss.name]]); a static {t} record there conflicts with its site answers"),
            ));
            continue;
        }
        let others = types_at.get(owner).map(Vec::as_slice).unwrap_or(&[]);
        if t == "CNAME" {
            if owner == zone {
                out.push((
                    span.clone(),
                    "a CNAME cannot sit at the zone apex, which owns SOA and NS".to_string(),
                ));
            } else if others.iter().filter(|o| **o == "CNAME").count() > 1 {
                out.push((
                    span.clone(),
                    format!("\"{owner}\" has more than one CNAME; a name has at most one"),
                ));
            } else if others.iter().any(|o| *o != "CNAME") {
                out.push((
                    span.clone(),
                    format!("\"{owner}\" has a CNAME and other data; a CNAME owner has no other records (RFC 1034 §3.6.2)"),
                ));
            }
            continue;
        }
        if let Some(cut) = cut_above(owner, t == "NS") {
            if !(GLUE_TYPES.contains(&t) || t == "NS" && owner == cut) {
                out.push((
                    span.clone(),
                    format!("\"{owner}\" is at or below the delegation \"{cut}\" (NS records there); only A/AAAA glue may sit there, the child zone answers the rest"),
                ));
            }
        }
    }
    for (n, span) in names {
        if let Some(cut) = cut_above(n, false) {
            out.push((
                span.clone(),
                format!("site-selected name \"{n}\" is at or below the delegation \"{cut}\"; the child zone answers for it"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(owner: &str, t: &str, data: &str, at: usize) -> (StaticRecord, Range<usize>) {
        (
            StaticRecord {
                fqdn: owner.into(),
                ttl: 60,
                rtype: t.into(),
                rdata: data.into(),
            },
            at..at + 1,
        )
    }

    #[test]
    fn each_conflict_is_reported_at_its_record() {
        let z = "ex.test";
        let names = vec![("smtp.ex.test".to_string(), 100..101)];
        let records = vec![
            rec("ex.test", "SOA", "a. b. 1 2 3 4 5", 1),
            rec("ex.test", "NS", "ns9.ex.test.", 2),
            rec("www.ex.test", "CNAME", "smtp", 3),
            rec("www.ex.test", "TXT", "\"x\"", 4),
            rec("smtp.ex.test", "A", "192.0.2.1", 5),
            rec("smtp.ex.test", "CNAME", "www", 6),
            rec("smtp.ex.test", "MX", "10 smtp", 7),
            rec("sub.ex.test", "NS", "ns.sub.ex.test.", 8),
            rec("ns.sub.ex.test", "A", "192.0.2.9", 9),
            rec("x.sub.ex.test", "TXT", "\"hidden\"", 10),
            rec("ok.ex.test", "CNAME", "elsewhere.example.", 11),
        ];
        let got = conflicts(z, &names, &records);
        let at: Vec<usize> = got.iter().map(|(s, _)| s.start).collect();
        assert_eq!(at, vec![1, 2, 3, 5, 6, 10], "{got:#?}");
        let names = vec![("a.sub.ex.test".to_string(), 100..101)];
        let got = conflicts(z, &names, &records[7..9]);
        assert_eq!(got.len(), 1);
        assert!(got[0].1.contains("delegation"), "{got:?}");
    }
}
