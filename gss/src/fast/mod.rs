//! Pre-rendered UDP responses: the fast path's table and its lookup, no sockets.
//!
//! **Tables.** Whenever the supervisor publishes a new zone (every health change,
//! override, failback timer and reload), [`render_table`] renders, on a blocking
//! thread right after the swap (so it never delays the switch itself), for
//! every owner name in the zone and a fixed set of common QTYPEs (plus every static
//! type), the exact UDP response the full path would send to a plain lower-case
//! query, once without and once with an option-less EDNS(0) OPT. It does so by
//! running the full path's own decision code ([`Reply`]) on a synthetic query and
//! encoding it the same way ([`Reply::encode`]: owner names compress against the
//! question at offset 12, which the patch keeps), so the two paths cannot drift
//! apart. Answers that depend on more than the name's own pick (a CNAME to a
//! weighted or client-rule name) are not pre-rendered. The table is published with
//! its zone in the same [`crate::snapshot::Snapshot`], so a fast answer is never older
//! than a full one; until a new zone's table is filled its queries simply take the
//! full path. Weighted names get one rendering per site pick and share the full
//! path's rotation counter; names with client rules (answers depend on the source)
//! are left out for A, AAAA and ANY.
//!
//! **Per query.** [`answer`] parses the header and question with [`wire::parse_query`]
//! (bounds-checked, lower-cases the name into a stack buffer), looks the
//! `(name, qtype)` key up in a hash map with a cheap non-keyed hash (keys come from the
//! config, not from clients, so collisions cannot be forced into long chains), copies
//! the template into the caller's send buffer and patches ID, RD, CD, the question
//! bytes as sent, and the OPT's DO bit (its payload stays our own 1232). In a
//! signed zone each key has a third rendering, for DO queries, with the RRSIGs and
//! NSEC records made ahead ([`crate::zone::signed`]): signed answers come from bytes
//! too. Metrics use
//! counter handles cached per rendering (registered on first use), so the hot path
//! does one atomic add. Responses bigger than the client may take are never sent from
//! here. Everything else is the caller's to hand over ([`crate::udp`]).

pub mod wire;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;

use crate::respond::Reply;
use crate::zone::lookup::Choose;
use crate::zone::{rotate, Zone};
use wire::KEY_MAX;

/// QTYPEs pre-rendered at every owner (static types are added per owner): the ones
/// resolvers and mail clients actually ask, so NODATA for them is fast too.
const QTYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::ANY,
    RecordType::SOA,
    RecordType::NS,
    RecordType::MX,
    RecordType::TXT,
    RecordType::HTTPS,
];

/// FxHash-style hasher for the table: fast on short byte keys. Not keyed, which is
/// fine because only config-derived keys are ever inserted.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl FxHasher {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(FX_K);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            self.add(u64::from_le_bytes(b));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(b) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// One rendering of one (name, qtype, pick).
struct Variant {
    /// Response for a query without OPT (absent when it would not fit 512 bytes).
    plain: Option<Box<[u8]>>,
    /// Response for a query with an option-less OPT, payload 1232 and DO clear
    /// (patched per query); absent when it would not fit 1232 bytes.
    edns: Option<Box<[u8]>>,
    /// In a signed zone, the response to the same query with DO set: signatures and
    /// NSEC proofs included, all made ahead.
    secure: Option<Box<[u8]>>,
    /// `portico_dns_queries_total` labels, as the hickory path would count them.
    label: Box<str>,
    qtype: RecordType,
    rcode: ResponseCode,
    /// The counter handle, registered on first use (not at render, so series appear
    /// only for queries that happened, as with the hickory path).
    counter: OnceLock<metrics::Counter>,
}

impl Variant {
    fn count(&self) {
        self.counter
            .get_or_init(|| crate::metrics::query_counter(&self.label, self.qtype, self.rcode))
            .increment(1);
    }
}

/// Weighted split shared with the full path ([`crate::zone::RuleAnswer`]).
struct Rotation {
    counter: Arc<AtomicU32>,
    bounds: Box<[u32]>,
    total: u32,
}

struct Entry {
    rotation: Option<Rotation>,
    variants: Box<[Variant]>,
}

/// The pre-rendered responses of one [`Zone`], keyed by lower-cased wire name + QTYPE.
#[derive(Default)]
pub struct FastTable {
    map: HashMap<Box<[u8]>, Entry, BuildHasherDefault<FxHasher>>,
    /// The zone is signed: DO queries get the `secure` renderings (or the full path).
    signed: bool,
}

impl std::fmt::Debug for FastTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FastTable({} keys)", self.map.len())
    }
}

impl FastTable {
    /// Number of (name, qtype) keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing was rendered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

fn synthetic_query(
    owner: &Name,
    qtype: RecordType,
    edns: bool,
    dnssec_ok: bool,
) -> Option<Vec<u8>> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    let mut q = Query::query(owner.clone(), qtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(wire::MAX_EDNS_PAYLOAD);
        e.set_version(0);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().ok()
}

/// Renders one variant through the hickory path's decision code; `None` when this
/// query shape cannot be answered from bytes (truncated, unexpected layout).
fn render_one(
    zone: &Zone,
    owner: &Name,
    qtype: RecordType,
    pick: usize,
    edns: bool,
    dnssec_ok: bool,
) -> Option<(Box<[u8]>, Box<str>, ResponseCode)> {
    let bytes = synthetic_query(owner, qtype, edns, dnssec_ok)?;
    let request =
        Request::from_bytes(bytes, SocketAddr::from(([0, 0, 0, 0], 0)), Protocol::Udp).ok()?;
    let reply = Reply::new(zone, &request, Choose::Index(pick));
    if reply.meta.truncation || reply.varies {
        return None;
    }
    let label: Box<str> = reply.label.into();
    let rcode = reply.meta.response_code;
    let out = reply.encode();
    let qlen = request.queries.as_bytes().len();
    let limit = if edns {
        usize::from(wire::MAX_EDNS_PAYLOAD)
    } else {
        wire::MAX_PLAIN_PAYLOAD
    };
    let header_ok = Header::read(&mut BinDecoder::new(&out))
        .is_ok_and(|h| !h.metadata.truncation && h.metadata.response_code == rcode);
    if !header_ok || out.len() > limit || !wire::template_ok(&out, qlen, edns) {
        return None;
    }
    Some((out.into_boxed_slice(), label, rcode))
}

/// Pre-renders every answerable (name, qtype) of `zone`.
pub fn render_table(zone: &Zone) -> FastTable {
    let tpl = &zone.tpl;
    let signed = tpl.signatures.is_some();
    let mut owners: Vec<&LowerName> = tpl.existing.iter().chain(tpl.ents.iter()).collect();
    owners.sort();
    owners.dedup();
    let mut map: HashMap<Box<[u8]>, Entry, BuildHasherDefault<FxHasher>> = HashMap::default();
    for lower in owners {
        let owner = Name::from(lower);
        let Ok(wire_name) = owner.to_bytes() else {
            continue;
        };
        let mut qtypes: Vec<RecordType> = QTYPES.to_vec();
        if let Some(sets) = tpl.statics.get(lower) {
            for (t, _) in sets {
                if !qtypes.contains(t) {
                    qtypes.push(*t);
                }
            }
        }
        let site = zone.names.get(lower);
        for qtype in qtypes {
            let selected = matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY);
            let (count, rotation) = match site {
                Some(n) if selected => {
                    if !n.cfg.clients.is_empty() {
                        continue;
                    }
                    let rotation = n
                        .default
                        .rotation()
                        .map(|(counter, bounds, total)| Rotation {
                            counter,
                            bounds: bounds.into_boxed_slice(),
                            total,
                        });
                    (n.default.variants(), rotation)
                }
                _ => (1, None),
            };
            let mut variants = Vec::with_capacity(count);
            for pick in 0..count {
                let plain = render_one(zone, &owner, qtype, pick, false, false);
                let edns = render_one(zone, &owner, qtype, pick, true, false);
                let secure = if signed {
                    render_one(zone, &owner, qtype, pick, true, true).map(|(b, _, _)| b)
                } else {
                    None
                };
                let Some((label, rcode)) = plain
                    .as_ref()
                    .or(edns.as_ref())
                    .map(|(_, l, r)| (l.clone(), *r))
                else {
                    break;
                };
                variants.push(Variant {
                    plain: plain.map(|(b, _, _)| b),
                    edns: edns.map(|(b, _, _)| b),
                    secure,
                    label,
                    qtype,
                    rcode,
                    counter: OnceLock::new(),
                });
            }
            if variants.len() != count {
                continue;
            }
            let mut key = wire_name.clone();
            key.extend_from_slice(&u16::from(qtype).to_be_bytes());
            map.insert(
                key.into_boxed_slice(),
                Entry {
                    rotation,
                    variants: variants.into_boxed_slice(),
                },
            );
        }
    }
    FastTable { map, signed }
}

/// Answers `pkt` from `table`'s pre-rendered responses into `out`, returning the
/// response length, or `None` to hand the query over. No allocation, no lock.
pub fn answer(table: &FastTable, pkt: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut key = [0u8; KEY_MAX];
    let q = wire::parse_query(pkt, &mut key)?;
    let entry = table.map.get(key.get(..q.key_len)?)?;
    let v = match &entry.rotation {
        Some(r) => entry
            .variants
            .get(rotate(r.bounds.iter().copied(), r.total, &r.counter))?,
        None => entry.variants.first()?,
    };
    let tmpl = match q.opt {
        Some(o) if o.dnssec_ok && table.signed => v.secure.as_deref()?,
        Some(_) => v.edns.as_deref()?,
        None => v.plain.as_deref()?,
    };
    if tmpl.len() > wire::size_limit(&q) {
        return None;
    }
    let n = wire::patch(tmpl, pkt, &q, out)?;
    v.count();
    Some(n)
}
