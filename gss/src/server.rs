//! The authoritative DNS front: our own hickory [`RequestHandler`] (the stock
//! `Catalog` cannot set the ECS scope). hickory's `Server` runs it for TCP; UDP is
//! owned by the fast path ([`crate::fastpath`]), which answers plain queries from
//! bytes pre-rendered through this very code ([`Reply`]) and calls the handler
//! directly for everything else. [`FAST_UDP`] switches UDP back to hickory's `Server`.
//!
//! Per query it loads the current [`Zone`] (one atomic), looks the name up in
//! pre-rendered records and writes the response: AA on every in-zone answer and
//! negative, RA clear; SOA in AUTHORITY with TTL min(SOA TTL, MINIMUM) on NXDOMAIN and
//! NODATA, NXDOMAIN only where the name and everything below it is absent; REFUSED
//! outside the zone; OPT only when the query had one (version > 0 → BADVERS, payload
//! below 512 read as 512, capped at 1232 for UDP, DO copied, ECS echoed with its
//! scope); TC with an empty answer when a UDP response does not fit; RFC 8482 minimal
//! ANY; NOTIMP for opcodes other than QUERY; FORMERR unless QDCOUNT is 1.
//!
//! What hickory's `Server` does before us: it drops datagrams shorter than a header
//! and every message with QR=1, answers FORMERR itself (with no question) when the
//! message does not parse, and otherwise hands us the parsed request whatever its
//! opcode, QDCOUNT or EDNS version, so those rules are ours and tested here. The fast
//! path's hand-over ([`crate::fastpath::handover`]) repeats exactly those steps.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
    DEFAULT_MAX_PAYLOAD_LEN,
};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use hickory_server::Server;
use ipnet::IpNet;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::answers::{NameAnswers, Zone};
use crate::select::{self, Client};
use crate::GssError;

/// Largest UDP response we send even to clients advertising more (DNS flag day 2020).
pub const MAX_UDP_PAYLOAD: u16 = DEFAULT_MAX_PAYLOAD_LEN;

/// The request handler: answers from whatever zone is current.
pub struct DnsHandler {
    zone: Arc<ArcSwap<Zone>>,
}

impl DnsHandler {
    /// A handler answering from `zone`.
    pub fn new(zone: Arc<ArcSwap<Zone>>) -> Self {
        DnsHandler { zone }
    }
}

/// The outcome of looking a question up.
enum Answer<'z> {
    Records {
        answers: &'z [Record],
        more: &'z [Record],
        scope: u8,
        label: &'z str,
    },
    NoData(&'z str),
    NxDomain,
    Servfail(&'z str),
    Refused,
}

const EMPTY: &[Record] = &[];

fn lookup<'z>(
    zone: &'z Zone,
    name: &LowerName,
    qtype: RecordType,
    client: Client,
    choose: Choose,
) -> Answer<'z> {
    let tpl = &zone.tpl;
    if !tpl.origin.zone_of(name) {
        return Answer::Refused;
    }
    let records = |answers: &'z [Record], label: &'z str| Answer::Records {
        answers,
        more: EMPTY,
        scope: 0,
        label,
    };
    if *name == tpl.origin {
        let label = tpl.cfg.zone.as_str();
        match qtype {
            RecordType::SOA | RecordType::ANY => {
                return records(std::slice::from_ref(&zone.soa), label)
            }
            RecordType::NS if !tpl.ns.is_empty() => return records(&tpl.ns, label),
            _ => {}
        }
    }
    if let Some(n) = zone.names.get(name) {
        if let Some(a) = site_lookup(n, qtype, client, choose) {
            return a;
        }
    }
    if let Some(sets) = tpl.statics.get(name) {
        let label = sets
            .first()
            .and_then(|(_, v)| v.first())
            .map(|_| {
                tpl.names
                    .get(name)
                    .map(|c| c.fqdn.as_str())
                    .unwrap_or("static")
            })
            .unwrap_or("static");
        if qtype == RecordType::ANY {
            if let Some((_, v)) = sets.first() {
                return records(v, label);
            }
        }
        if let Some((_, v)) = sets.iter().find(|(t, _)| *t == qtype) {
            return records(v, label);
        }
    }
    if let Some(n) = zone.names.get(name) {
        return Answer::NoData(n.cfg.fqdn.as_str());
    }
    if tpl.existing.contains(name) || tpl.ents.contains(name) {
        return Answer::NoData(if *name == tpl.origin {
            tpl.cfg.zone.as_str()
        } else {
            "static"
        });
    }
    Answer::NxDomain
}

fn site_lookup<'z>(
    n: &'z NameAnswers,
    qtype: RecordType,
    client: Client,
    choose: Choose,
) -> Option<Answer<'z>> {
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
        return Some(Answer::Servfail(label));
    };
    let answers: &[Record] = match qtype {
        RecordType::A => &pick.a,
        RecordType::AAAA => &pick.aaaa,
        _ if !pick.a.is_empty() => &pick.a,
        _ => &pick.aaaa,
    };
    if answers.is_empty() {
        // The selected site has no address of this family: NODATA for now, but the
        // name exists, so never NXDOMAIN.
        return None;
    }
    Some(Answer::Records {
        answers,
        more: EMPTY,
        scope,
        label,
    })
}

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
fn fits(limit: usize, question: &[u8], records: &[&[Record]], opt_len: usize) -> bool {
    let base = 12 + question.len() + opt_len;
    let bound: usize = records
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
    if enc.emit_vec(&[0u8; 12]).is_err() || enc.emit_vec(question).is_err() {
        return false;
    }
    records
        .iter()
        .flat_map(|s| s.iter())
        .all(|r| r.emit(&mut enc).is_ok())
}

pub(crate) fn qtype_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        RecordType::MX => "MX",
        RecordType::TXT => "TXT",
        RecordType::SRV => "SRV",
        RecordType::CNAME => "CNAME",
        RecordType::PTR => "PTR",
        RecordType::CAA => "CAA",
        RecordType::HTTPS => "HTTPS",
        _ => "other",
    }
}

pub(crate) fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}

fn count(name: &str, qtype: RecordType, rcode: ResponseCode) {
    metrics::counter!(
        "portico_dns_queries_total",
        "name" => name.to_string(),
        "qtype" => qtype_label(qtype),
        "rcode" => rcode_label(rcode)
    )
    .increment(1);
}

/// Which weighted pick answers: the live rotation (queries) or a fixed one (the fast
/// path pre-renders every pick).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choose {
    Rotate,
    Index(usize),
}

/// Everything decided about one request, before encoding: kept apart from sending so
/// the fast path can pre-render responses through exactly this logic.
pub(crate) struct Reply<'a> {
    pub(crate) meta: Metadata,
    queries: &'a Queries,
    empty_queries: Option<Queries>,
    pub(crate) edns: Option<Edns>,
    answers: &'a [Record],
    more: &'a [Record],
    soa: &'a [Record],
    pub(crate) label: &'a str,
    pub(crate) qtype: RecordType,
}

impl<'a> Reply<'a> {
    /// Decides the response to `request` from `zone`.
    pub(crate) fn new(zone: &'a Zone, request: &'a Request, choose: Choose) -> Reply<'a> {
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = false;

        // Response OPT: only when the query had one.
        let ecs = request
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some(*s),
                _ => None,
            });
        let udp = request.protocol() == Protocol::Udp;
        let mut resp_edns = request.edns.as_ref().map(|q| {
            let mut e = Edns::new();
            // hickory's encoder also uses this as the UDP size limit.
            let payload = if udp {
                q.max_payload().clamp(512, MAX_UDP_PAYLOAD)
            } else {
                MAX_UDP_PAYLOAD
            };
            e.set_max_payload(payload);
            e.set_version(0);
            e.set_dnssec_ok(q.flags().dnssec_ok);
            e
        });
        let limit = if udp {
            resp_edns
                .as_ref()
                .map(|e| usize::from(e.max_payload()))
                .unwrap_or(512)
        } else {
            usize::from(u16::MAX)
        };

        let mut empty_queries = None;
        let (code, answer) = if request.metadata.op_code != OpCode::Query {
            (ResponseCode::NotImp, None)
        } else if request.queries.len() != 1 {
            empty_queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok();
            (ResponseCode::FormErr, None)
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            (ResponseCode::BADVERS, None)
        } else {
            let q = &request.queries.queries()[0];
            let client = client_of(request.src(), ecs.as_ref());
            if q.query_class() != DNSClass::IN {
                (ResponseCode::Refused, None)
            } else if matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR) {
                meta.authoritative = zone.tpl.origin.zone_of(q.name());
                (ResponseCode::Refused, None)
            } else {
                let a = lookup(zone, q.name(), q.query_type(), client, choose);
                (ResponseCode::NoError, Some(a))
            }
        };
        let qtype = request
            .queries
            .queries()
            .first()
            .map(|q| q.query_type())
            .unwrap_or(RecordType::NULL);

        let mut answers: &[Record] = EMPTY;
        let mut more: &[Record] = EMPTY;
        let mut soa: &[Record] = EMPTY;
        let mut scope = 0u8;
        let mut label = "-";
        let rcode = match answer {
            None => code,
            Some(Answer::Refused) => {
                label = "out-of-zone";
                ResponseCode::Refused
            }
            Some(a) => {
                meta.authoritative = true;
                match a {
                    Answer::Records {
                        answers: a,
                        more: m,
                        scope: s,
                        label: l,
                    } => {
                        answers = a;
                        more = m;
                        scope = s;
                        label = l;
                        ResponseCode::NoError
                    }
                    Answer::NoData(l) => {
                        soa = std::slice::from_ref(&zone.neg_soa);
                        label = l;
                        ResponseCode::NoError
                    }
                    Answer::NxDomain => {
                        soa = std::slice::from_ref(&zone.neg_soa);
                        label = "nxdomain";
                        ResponseCode::NXDomain
                    }
                    Answer::Servfail(l) => {
                        label = l;
                        ResponseCode::ServFail
                    }
                    Answer::Refused => ResponseCode::Refused,
                }
            }
        };
        meta.response_code = rcode;
        if let (Some(e), Some(mut s)) = (resp_edns.as_mut(), ecs) {
            if rcode != ResponseCode::BADVERS {
                s.set_scope_prefix(scope);
                e.options_mut().insert(EdnsOption::Subnet(s));
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
        if udp && !fits(limit, qbytes, &[answers, more, soa], opt_len) {
            meta.truncation = true;
            answers = EMPTY;
            more = EMPTY;
            soa = EMPTY;
        }
        Reply {
            meta,
            queries,
            empty_queries,
            edns: resp_edns,
            answers,
            more,
            soa,
            label,
            qtype,
        }
    }

    /// Counts the query in `portico_dns_queries_total`.
    pub(crate) fn count(&self) {
        count(self.label, self.qtype, self.meta.response_code);
    }

    /// The hickory response message, borrowing from this reply.
    pub(crate) fn response(
        &self,
    ) -> MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    > {
        let queries = self.empty_queries.as_ref().unwrap_or(self.queries);
        let mut builder = MessageResponseBuilder::new(queries, None);
        if let Some(e) = self.edns.as_ref() {
            builder.edns(e);
        }
        builder.build(
            self.meta,
            self.answers.iter().chain(self.more.iter()),
            EMPTY.iter(),
            self.soa.iter(),
            EMPTY.iter(),
        )
    }
}

/// Encodes a response as hickory's server does for UDP (`MessageResponse::encode` is
/// crate-private there): the response OPT's payload, or 512 without EDNS, bounds the
/// size; an encoding failure becomes a bare SERVFAIL.
pub(crate) fn encode_udp<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Vec<u8> {
    let id = response.metadata().id;
    let max = response.edns().map(|e| e.max_payload()).unwrap_or(512);
    let mut bytes = Vec::with_capacity(512);
    let mut enc = BinEncoder::new(&mut bytes);
    enc.set_max_size(max);
    if response.destructive_emit(&mut enc).is_ok() {
        return bytes;
    }
    bytes.clear();
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    let mut enc = BinEncoder::new(&mut bytes);
    if header.emit(&mut enc).is_err() {
        bytes.clear();
    }
    bytes
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let zone = self.zone.load_full();
        let reply = Reply::new(&zone, request, Choose::Rotate);
        reply.count();
        let meta = reply.meta;
        match response_handle.send_response(reply.response()).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending DNS response failed");
                let mut m = meta;
                m.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata: m,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// The internal switch for the UDP fast path ([`crate::fastpath`]); with `false`,
/// hickory's `Server` serves UDP itself, as before the fast path existed. Not a
/// config option: it exists to back the fast path out without a code change
/// elsewhere and for A/B measurements.
pub const FAST_UDP: bool = true;

/// Who serves UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpMode {
    /// hickory's `Server`: one socket, one task per datagram.
    Hickory,
    /// The fast path with this many `SO_REUSEPORT` sockets (at least 1).
    Fast(usize),
}

impl Default for UdpMode {
    /// [`FAST_UDP`] decides; the fast path gets one socket per available CPU.
    fn default() -> Self {
        if FAST_UDP {
            UdpMode::Fast(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            )
        } else {
            UdpMode::Hickory
        }
    }
}

/// A UDP socket with `SO_REUSEPORT` bound to `addr`, blocking with a read timeout;
/// on a wildcard address it also reports each datagram's destination, so replies
/// leave from the address the query was sent to ([`crate::pktinfo`]).
fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_reuse_port(true)?;
    if addr.ip().is_unspecified() {
        crate::pktinfo::enable(std::os::fd::AsRawFd::as_raw_fd(&s), addr.is_ipv6())?;
    }
    // Room for bursts while the thread is descheduled (the kernel caps this at
    // net.core.rmem_max); best effort.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(crate::fastpath::POLL))?;
    Ok(s.into())
}

/// A running DNS server.
pub struct DnsServer {
    server: Server<DnsHandler>,
    addr: SocketAddr,
    cancel: CancellationToken,
    udp_threads: Vec<std::thread::JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `listen` (the same port for both, also when `listen` asks
    /// for port 0) and starts serving from `zone`: TCP always through hickory's
    /// `Server`, UDP as `mode` says. `cancel` (or [`DnsServer::shutdown`]) stops it.
    pub async fn bind(
        listen: SocketAddr,
        zone: Arc<ArcSwap<Zone>>,
        mode: UdpMode,
        cancel: CancellationToken,
    ) -> Result<DnsServer, GssError> {
        let bind_err = |e: std::io::Error| GssError::Bind(listen, e.to_string());
        let mut attempt = 0;
        let (udp, tcp) = loop {
            attempt += 1;
            let udp: Vec<std::net::UdpSocket> = match mode {
                UdpMode::Hickory => {
                    let s = std::net::UdpSocket::bind(listen).map_err(bind_err)?;
                    s.set_nonblocking(true).map_err(bind_err)?;
                    vec![s]
                }
                UdpMode::Fast(n) => {
                    let first = reuseport_socket(listen).map_err(bind_err)?;
                    let addr = first.local_addr().map_err(bind_err)?;
                    let mut v = vec![first];
                    for _ in 1..n.max(1) {
                        v.push(reuseport_socket(addr).map_err(bind_err)?);
                    }
                    v
                }
            };
            let addr = udp[0].local_addr().map_err(bind_err)?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, tcp),
                Err(e) if listen.port() == 0 && attempt < 20 => {
                    tracing::debug!(error = %e, "tcp port {} taken, retrying", addr.port());
                }
                Err(e) => return Err(bind_err(e)),
            }
        };
        let addr = udp[0].local_addr().map_err(bind_err)?;
        let pktinfo = addr.ip().is_unspecified();
        let cancel = cancel.child_token();
        let mut server = Server::new(DnsHandler::new(zone.clone()));
        let mut udp_threads = Vec::new();
        match mode {
            UdpMode::Hickory => {
                for s in udp {
                    server.register_socket(UdpSocket::from_std(s).map_err(bind_err)?);
                }
            }
            UdpMode::Fast(_) => {
                for (i, s) in udp.into_iter().enumerate() {
                    let (z, c) = (zone.clone(), cancel.clone());
                    let t = std::thread::Builder::new()
                        .name(format!("gss-udp-{i}"))
                        .spawn(move || crate::fastpath::serve_socket(s, z, c, pktinfo))
                        .map_err(|e| {
                            cancel.cancel();
                            bind_err(e)
                        })?;
                    udp_threads.push(t);
                }
            }
        }
        server.register_listener(tcp, Duration::from_secs(10), 64);
        Ok(DnsServer {
            server,
            addr,
            cancel,
            udp_threads,
        })
    }

    /// The bound address (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the server's tasks and the UDP threads (each sees
    /// the cancellation within [`crate::fastpath::POLL`]).
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!(error = %e, "dns server shutdown");
        }
        let threads = std::mem::take(&mut self.udp_threads);
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if let Err(e) = joined {
            tracing::debug!(error = %e, "joining gss UDP threads");
        }
    }
}

impl Drop for DnsServer {
    /// Stops the UDP threads even when the server is dropped without a shutdown.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
