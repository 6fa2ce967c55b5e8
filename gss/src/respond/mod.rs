//! The full answer path, pure: zone × request bytes → reply bytes, no sockets. Every
//! message that is not answered from the UDP fast path's pre-rendered bytes
//! ([`crate::fast`]) goes through [`answer_message`]: TCP ([`crate::tcp`]), UDP
//! hand-overs, and the fast path's own pre-rendering, so the paths cannot drift
//! apart. hickory-proto parses; [`crate::zone::lookup`] decides the
//! sections; [`Reply`] adds the header and EDNS rules and [`Reply::encode`] writes it.
//!
//! Rules applied here: AA on in-zone answers and negatives, never on REFUSED or
//! referrals; RA clear; REFUSED outside the zone, for other classes and for zone
//! transfers, with an extended DNS error (RFC 8914) when the query had OPT, as on
//! SERVFAIL; CHAOS `id.server`/`version.server` per config; OPT only when the query
//! had one, advertising our own payload size (1232), version > 0 → BADVERS, DO
//! copied (and, in a signed zone, the pre-made RRSIGs and NSEC proofs added,
//! [`crate::zone::proof`]), ECS echoed with its scope and FORMERR for a malformed ECS (RFC 7871 §6);
//! the client's payload (512 to 1232) bounds a UDP answer: optional additional data
//! is dropped first, then TC with empty sections; NOTIMP for opcodes other than QUERY;
//! FORMERR unless QDCOUNT is 1 and, with no question, when the message does not
//! parse; nothing at all for a message with QR=1 or shorter than a header. Owner
//! names compress against the question ([`Question`]).

pub mod edns;

use std::net::SocketAddr;

use hickory_proto::op::{
    emit_message_parts, Edns, EmitAndCount, Header, HeaderCounts, MessageType, Metadata, OpCode,
    ResponseCode, DEFAULT_MAX_PAYLOAD_LEN,
};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_proto::ProtoError;
pub use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use hickory_server::zone_handler::Queries;
use ipnet::IpNet;

use crate::select::Client;
use crate::zone::lookup::{self, Choose};
use crate::zone::Zone;
use edns::Ede;

/// Largest UDP response we send even to clients advertising more (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = DEFAULT_MAX_PAYLOAD_LEN;

fn client_of(src: SocketAddr, ecs: Option<&ClientSubnet>) -> Client {
    match ecs {
        Some(s) if s.source_prefix() == 0 => Client::Unknown,
        Some(s) => match IpNet::new(s.addr(), s.source_prefix()) {
            Ok(n) => Client::Subnet(n.trunc()),
            Err(_) => Client::Unknown,
        },
        None => Client::Addr(src.ip()),
    }
}

fn rdata_estimate(r: &Record) -> usize {
    match &r.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        _ => usize::from(u16::MAX),
    }
}

/// Whether the response fits `limit` bytes; exact (by encoding) only when a cheap
/// upper bound says it might not.
fn fits(limit: usize, question: &[u8], sections: &[&[Record]], opt_len: usize) -> bool {
    let base = 12 + question.len() + opt_len;
    let bound: usize = sections
        .iter()
        .flat_map(|s| s.iter())
        .map(|r| r.name.len() + 2 + 10 + rdata_estimate(r))
        .sum();
    if base + bound <= limit {
        return true;
    }
    if base > limit {
        return false;
    }
    let mut buf = Vec::with_capacity(limit);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_max_size(u16::try_from(limit - opt_len).unwrap_or(u16::MAX));
    if enc.emit_vec(&[0u8; 12]).is_err() {
        return false;
    }
    let mut q = Question {
        bytes: question,
        count: 1,
    };
    if q.emit(&mut enc).is_err() {
        return false;
    }
    sections
        .iter()
        .flat_map(|s| s.iter())
        .all(|r| r.emit(&mut enc).is_ok())
}

/// Length of the uncompressed name at the start of `q` (up to and including its root
/// label), or `None` if it holds a pointer or runs short.
fn plain_name_len(q: &[u8]) -> Option<usize> {
    let mut at = 0usize;
    loop {
        let len = usize::from(*q.get(at)?);
        if len & 0xc0 != 0 {
            return None;
        }
        if len == 0 {
            return Some(at + 1);
        }
        at += 1 + len;
    }
}

/// The question section as the client sent it, registered for name compression so
/// answer owners point at it (as NSD and Knot do), whatever case the client used:
/// each label suffix is registered lower-cased, then the bytes as sent are written
/// back over it (RFC 4343: the question is echoed byte for byte).
struct Question<'q> {
    bytes: &'q [u8],
    count: usize,
}

impl EmitAndCount for Question<'_> {
    fn emit(&mut self, enc: &mut BinEncoder<'_>) -> Result<usize, ProtoError> {
        let start = enc.offset();
        let name_len = if self.count == 1 {
            plain_name_len(self.bytes)
        } else {
            None
        };
        let Some(name_len) = name_len else {
            enc.emit_vec(self.bytes)?;
            return Ok(self.count);
        };
        let lower: Vec<u8> = self.bytes.iter().map(u8::to_ascii_lowercase).collect();
        enc.emit_vec(&lower)?;
        let mut at = 0usize;
        while at + 1 < name_len {
            enc.store_label_pointer(start + at, start + name_len - 1);
            at += 1 + usize::from(self.bytes[at]);
        }
        enc.set_offset(start);
        enc.emit_vec(self.bytes)?;
        Ok(self.count)
    }
}

/// Everything decided about one request, before encoding: kept apart from sending so
/// the fast path can pre-render responses through exactly this logic.
pub(crate) struct Reply<'a> {
    pub(crate) meta: Metadata,
    queries: &'a Queries,
    empty_queries: Option<Queries>,
    pub(crate) edns: Option<Edns>,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additional: Vec<Record>,
    pub(crate) label: &'a str,
    pub(crate) qtype: RecordType,
    /// Largest response allowed: the client's UDP payload (512 to 1232), 65535 on TCP.
    pub(crate) limit: u16,
    /// The answer depends on more than (name, type, pick): not for pre-rendering.
    pub(crate) varies: bool,
}

impl<'a> Reply<'a> {
    /// Decides the response to `request` from `zone`.
    pub(crate) fn new(zone: &'a Zone, request: &'a Request, choose: Choose) -> Reply<'a> {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = false;

        let ecs = request
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some(*s),
                _ => None,
            });
        let udp = request.protocol() == Protocol::Udp;
        // Response OPT: only when the query had one, advertising our own payload size
        // (RFC 6891 §6.2.3); the client's only bounds what we send it.
        let mut resp_edns = request.edns.as_ref().map(|q| {
            let mut e = Edns::new();
            e.set_max_payload(MAX_UDP_PAYLOAD);
            e.set_version(0);
            e.set_dnssec_ok(q.flags().dnssec_ok);
            e
        });
        let limit = if udp {
            request
                .edns
                .as_ref()
                .map(|e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD))
                .unwrap_or(512)
        } else {
            u16::MAX
        };

        let mut empty_queries = None;
        let mut ede = None;
        let first = request.queries.queries().first();
        let qtype = first.map(|q| q.query_type()).unwrap_or(RecordType::NULL);
        let resolution = if request.metadata.op_code != OpCode::Query {
            Err(ResponseCode::NotImp)
        } else if request.queries.len() != 1 {
            empty_queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok();
            Err(ResponseCode::FormErr)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Err(ResponseCode::BADVERS)
        } else if edns::has_malformed_ecs(request.as_slice()) {
            Err(ResponseCode::FormErr)
        } else if let Some(q) = first {
            let class = q.query_class();
            if class == DNSClass::CH {
                Ok(lookup::chaos(zone, q.name(), qtype))
            } else if class != DNSClass::IN {
                // Codes without EXTRA-TEXT, as NSD and Knot send them.
                ede = Some(edns::ede(Ede::NotSupported, ""));
                Err(ResponseCode::Refused)
            } else if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
                ede = Some(edns::ede(Ede::Prohibited, ""));
                Err(ResponseCode::Refused)
            } else {
                let client = client_of(request.src(), ecs.as_ref());
                Ok(lookup::resolve(zone, q.name(), qtype, client, choose))
            }
        } else {
            Err(ResponseCode::FormErr)
        };
        let mut label = "-";
        let mut varies = false;
        let mut referral = false;
        let (mut answers, mut authority, mut additional) = (Vec::new(), Vec::new(), Vec::new());
        let mut scope = 0u8;
        let dnssec_ok = request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        let rcode = match resolution {
            Err(code) => code,
            Ok(mut r) => {
                if dnssec_ok {
                    crate::zone::proof::secure(zone, &mut r);
                }
                meta.authoritative = r.authoritative;
                label = r.label;
                varies = r.varies;
                referral = r.referral;
                scope = r.scope;
                answers = r.answers;
                authority = r.authority;
                additional = r.additional;
                match r.rcode {
                    ResponseCode::Refused if r.label == "out-of-zone" => {
                        // No EXTRA-TEXT, as NSD and Knot: the commonest REFUSED stays small.
                        ede = Some(edns::ede(Ede::NotAuthoritative, ""));
                    }
                    ResponseCode::Refused => {
                        ede = Some(edns::ede(
                            Ede::NotAuthoritative,
                            "no answer is configured for this CHAOS name",
                        ));
                    }
                    ResponseCode::ServFail => {
                        ede = Some(edns::ede(
                            Ede::Other,
                            "every site of this name is down and all_down = servfail",
                        ));
                    }
                    _ => {}
                }
                r.rcode
            }
        };
        meta.response_code = rcode;
        if let Some(e) = resp_edns.as_mut() {
            if let (Some(mut s), false) = (
                ecs,
                matches!(rcode, ResponseCode::BADVERS | ResponseCode::FormErr),
            ) {
                s.set_scope_prefix(scope);
                e.options_mut().insert(EdnsOption::Subnet(s));
            }
            if let Some(o) = ede {
                e.options_mut().insert(o);
            }
        }
        let opt_len = resp_edns
            .as_ref()
            .map(|e| {
                11 + e
                    .options()
                    .as_ref()
                    .iter()
                    .map(|(_, o)| 4 + usize::from(o.len()))
                    .sum::<usize>()
            })
            .unwrap_or(0);
        let queries = &request.queries;
        let qbytes = match &empty_queries {
            Some(e) => e.as_bytes(),
            None => queries.as_bytes(),
        };
        let limit_bytes = usize::from(limit);
        if !fits(
            limit_bytes,
            qbytes,
            &[&answers, &authority, &additional],
            opt_len,
        ) {
            // Additional addresses are optional (RFC 2181 §9) except a referral's glue.
            if !referral && fits(limit_bytes, qbytes, &[&answers, &authority], opt_len) {
                additional.clear();
            } else {
                meta.truncation = true;
                answers.clear();
                authority.clear();
                additional.clear();
            }
        }
        Reply {
            meta,
            queries,
            empty_queries,
            edns: resp_edns,
            answers,
            authority,
            additional,
            label,
            qtype,
            limit,
            varies,
        }
    }

    /// Counts the query in `portico_dns_queries_total` through `zone`'s handles.
    pub(crate) fn count(&self, zone: &Zone) {
        zone.counters
            .count(self.label, self.qtype, self.meta.response_code);
    }

    /// The response bytes, at most [`Reply::limit`] long; an encoding failure
    /// becomes a bare SERVFAIL.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let queries = self.empty_queries.as_ref().unwrap_or(self.queries);
        let mut question = Question {
            bytes: queries.as_bytes(),
            count: queries.len(),
        };
        let mut bytes = Vec::with_capacity(512);
        let mut enc = BinEncoder::new(&mut bytes);
        enc.set_max_size(self.limit);
        let done = emit_message_parts(
            &self.meta,
            &mut question,
            &mut self.answers.iter(),
            &mut self.authority.iter(),
            &mut self.additional.iter(),
            self.edns.as_ref(),
            None,
            &mut enc,
        );
        if done.is_ok() {
            return bytes;
        }
        bytes.clear();
        servfail_header(self.meta.id, &mut bytes);
        bytes
    }
}

fn servfail_header(id: u16, bytes: &mut Vec<u8>) {
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut enc = BinEncoder::new(bytes);
    if header.emit(&mut enc).is_err() {
        bytes.clear();
    }
}

/// The QR bit: set on responses, which are never answered (no reflection loops,
/// whatever else is wrong with the packet).
fn is_response(pkt: &[u8]) -> bool {
    pkt.get(2).is_some_and(|b| b & 0x80 != 0)
}

/// The whole answer path for one message as received: `None` when nothing is sent
/// (shorter than a header, or QR=1); FORMERR with an empty question when hickory
/// cannot parse it; otherwise [`Reply`] decides and [`Reply::encode`] writes it.
pub fn answer_message(
    zone: &Zone,
    pkt: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> Option<Vec<u8>> {
    if is_response(pkt) {
        return None;
    }
    let header = Header::read(&mut BinDecoder::new(pkt)).ok()?;
    let request = match Request::from_bytes(pkt.to_vec(), src, protocol) {
        Ok(r) => r,
        Err(_) => {
            let mut meta = Metadata::response_from_request(&header.metadata);
            meta.response_code = ResponseCode::FormErr;
            let h = Header {
                metadata: meta,
                counts: HeaderCounts::default(),
            };
            let mut bytes = Vec::with_capacity(12);
            let mut enc = BinEncoder::new(&mut bytes);
            h.emit(&mut enc).ok()?;
            zone.counters
                .count("-", RecordType::NULL, ResponseCode::FormErr);
            return Some(bytes);
        }
    };
    let reply = Reply::new(zone, &request, Choose::Rotate);
    reply.count(zone);
    Some(reply.encode())
}
