//! The UDP fast path: pre-rendered response bytes, one `SO_REUSEPORT` socket per core,
//! `recvmmsg`/`sendmmsg` batches, no allocation and no lock per answered query.
//!
//! **Tables.** Whenever the supervisor stores a new [`Zone`] (every health change,
//! override, failback timer and reload), [`render_table`] renders, on a blocking
//! thread right after the store (so it never delays the switch itself), for
//! every owner name in the zone and a fixed set of common QTYPEs (plus every static
//! type), the exact UDP response the hickory path would send to a plain lower-case
//! query, once without and once with an option-less EDNS(0) OPT. It does so by
//! running the full path's own decision code ([`Reply`]) on a synthetic query and
//! encoding it the same way ([`Reply::encode`]: owner names compress against the
//! question at offset 12, which the patch keeps), so the two paths cannot drift
//! apart. Answers that depend on more than the name's own pick (a CNAME to a
//! weighted or client-rule name) are not pre-rendered. The table lives inside the `Zone` (a `OnceLock`) and is swapped with
//! it through the same `ArcSwap`, so a fast answer is never older than a hickory one;
//! until a new zone's table is filled its queries simply take the hickory path. Weighted names
//! get one rendering per site pick and share the hickory path's rotation counter;
//! names with client rules (answers depend on the source) are left out for A, AAAA
//! and ANY.
//!
//! **Per query.** [`answer`] parses the header and question with [`wire::parse_query`]
//! (bounds-checked, lower-cases the name into a stack buffer), looks the
//! `(name, qtype)` key up in a hash map with a cheap non-keyed hash (keys come from the
//! config, not from clients, so collisions cannot be forced into long chains), copies
//! the template into the socket's reusable send buffer and patches ID, RD, CD, the
//! question bytes as sent, and the OPT's DO bit (its payload stays our own 1232). Metrics use counter
//! handles cached per rendering (registered on first use), so the hot path does one
//! atomic add. Responses bigger than the client may take are never sent from here.
//!
//! **Hand-over.** Anything else (other opcodes, QDCOUNT ≠ 1, EDNS options other than a
//! well-formed DNS cookie, which both paths ignore, EDNS version ≠ 0, unknown names, client rules, truncation, malformed
//! input) goes to [`handover`], which runs [`crate::server::answer_message`], the
//! path TCP uses too (nothing for short messages and QR=1, FORMERR with no question
//! when hickory-proto cannot parse it), inline on the socket's thread with the
//! client's real source address (a forwarding socket would lose it, and with it
//! client rules).
//!
//! **Threads.** One blocking thread per socket (not tokio tasks): a blocking
//! `recvmmsg` with `MSG_WAITFORONE` costs one syscall per batch with no readiness
//! round-trip, and a socket read timeout ([`POLL`]) bounds how long shutdown waits for
//! a thread to see the cancellation token. Idle threads wake 1/[`POLL`] times a second.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::pktinfo::{self, Ctrl};
use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use tokio_util::sync::CancellationToken;

use crate::answers::{rotate, Zone};
use crate::lookup::Choose;
use crate::server::{DnsHandler, Reply};
use crate::wire::{self, KEY_MAX};

/// How long a socket thread blocks before checking for shutdown.
pub const POLL: Duration = Duration::from_millis(100);
/// Datagrams per `recvmmsg`/`sendmmsg`.
pub const BATCH: usize = 32;
/// Receive and send buffer per datagram (hickory's UDP receive buffer is 4096 too).
pub const BUF: usize = 4096;

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

/// Weighted split shared with the hickory path ([`crate::answers::RuleAnswer`]).
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

fn synthetic_query(owner: &Name, qtype: RecordType, edns: bool) -> Option<Vec<u8>> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    let mut q = Query::query(owner.clone(), qtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(wire::MAX_EDNS_PAYLOAD);
        e.set_version(0);
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
) -> Option<(Box<[u8]>, Box<str>, ResponseCode)> {
    let bytes = synthetic_query(owner, qtype, edns)?;
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

/// Pre-renders every answerable (name, qtype) of `zone`. Called by `render`.
pub fn render_table(zone: &Zone) -> FastTable {
    let tpl = &zone.tpl;
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
                let plain = render_one(zone, &owner, qtype, pick, false);
                let edns = render_one(zone, &owner, qtype, pick, true);
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
    FastTable { map }
}

/// Answers `pkt` from `zone`'s pre-rendered responses into `out`, returning the
/// response length, or `None` to hand the query over. No allocation, no lock.
pub fn answer(zone: &Zone, pkt: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut key = [0u8; KEY_MAX];
    let q = wire::parse_query(pkt, &mut key)?;
    let entry = zone.fast.get()?.map.get(key.get(..q.key_len)?)?;
    let v = match &entry.rotation {
        Some(r) => entry
            .variants
            .get(rotate(r.bounds.iter().copied(), r.total, &r.counter))?,
        None => entry.variants.first()?,
    };
    let tmpl = match q.opt {
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

/// Whether hickory's server would answer this source at all (it drops port 0 and
/// unspecified or broadcast addresses, which cannot be replied to safely).
pub fn sane_source(src: SocketAddr) -> bool {
    if src.port() == 0 {
        return false;
    }
    match src.ip() {
        IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_broadcast(),
        IpAddr::V6(v6) => !v6.is_unspecified(),
    }
}

/// The full path for one UDP datagram ([`crate::server::answer_message`]): `None`
/// when it sends nothing (shorter than a header, or QR=1).
pub fn handover(handler: &DnsHandler, pkt: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    handler.answer(pkt, src, Protocol::Udp)
}

/// Answers one datagram: fast path first, else hand-over. Returns the response length
/// written to `out`, or `None` to send nothing.
pub fn respond(
    zone: &ArcSwap<Zone>,
    handler: &DnsHandler,
    pkt: &[u8],
    src: SocketAddr,
    out: &mut [u8],
) -> Option<usize> {
    if !sane_source(src) {
        return None;
    }
    {
        let z = zone.load();
        if let Some(n) = answer(&z, pkt, out) {
            return Some(n);
        }
    }
    let bytes = handover(handler, pkt, src)?;
    let dst = out.get_mut(..bytes.len())?;
    dst.copy_from_slice(&bytes);
    Some(bytes.len())
}

fn sockaddr_to_std(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: ss_family says the storage holds a sockaddr_in, which is smaller
            // than sockaddr_storage and has no stricter alignment.
            let sin =
                unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 =
                unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Per-socket buffers and message headers, allocated once per thread. The headers
/// hold raw pointers into the buffers, so the whole set stays boxed and never moves.
struct Batch {
    rx: Vec<[u8; BUF]>,
    tx: Vec<[u8; BUF]>,
    addrs: Vec<libc::sockaddr_storage>,
    rx_iov: Vec<libc::iovec>,
    tx_iov: Vec<libc::iovec>,
    rx_hdr: Vec<libc::mmsghdr>,
    tx_hdr: Vec<libc::mmsghdr>,
    /// Destination reports (wildcard listen only, see [`crate::pktinfo`]).
    rx_ctrl: Vec<Ctrl>,
    /// Reply source addresses (wildcard listen only).
    tx_ctrl: Vec<Ctrl>,
}

impl Batch {
    fn new() -> Box<Batch> {
        // SAFETY: all-zero bytes are a valid sockaddr_storage, iovec and mmsghdr
        // (plain C structs of integers and nullable pointers).
        let zeroed_ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zeroed_iov: libc::iovec = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zeroed_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let mut b = Box::new(Batch {
            rx: vec![[0u8; BUF]; BATCH],
            tx: vec![[0u8; BUF]; BATCH],
            addrs: vec![zeroed_ss; BATCH],
            rx_iov: vec![zeroed_iov; BATCH],
            tx_iov: vec![zeroed_iov; BATCH],
            rx_hdr: vec![zeroed_hdr; BATCH],
            tx_hdr: vec![zeroed_hdr; BATCH],
            rx_ctrl: vec![Ctrl::new(); BATCH],
            tx_ctrl: vec![Ctrl::new(); BATCH],
        });
        for i in 0..BATCH {
            b.rx_iov[i].iov_base = b.rx[i].as_mut_ptr().cast();
            b.rx_iov[i].iov_len = BUF;
            let iov = &mut b.rx_iov[i] as *mut libc::iovec;
            let name = &mut b.addrs[i] as *mut libc::sockaddr_storage;
            let h = &mut b.rx_hdr[i].msg_hdr;
            h.msg_iov = iov;
            h.msg_iovlen = 1;
            h.msg_name = name.cast();
        }
        b
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Serves one socket until `cancel` fires. The socket must have a read timeout.
pub fn serve_socket(
    sock: std::net::UdpSocket,
    zone: Arc<ArcSwap<Zone>>,
    cancel: CancellationToken,
    pktinfo: bool,
) {
    let fd = sock.as_raw_fd();
    let handler = DnsHandler::new(zone.clone());
    let mut b = Batch::new();
    let ss_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    while !cancel.is_cancelled() {
        for (h, ctrl) in b.rx_hdr.iter_mut().zip(b.rx_ctrl.iter_mut()) {
            h.msg_hdr.msg_namelen = ss_len;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
            if pktinfo {
                h.msg_hdr.msg_control = ctrl.0.as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = ctrl.0.len() as _;
            }
        }
        // SAFETY: rx_hdr holds BATCH valid mmsghdrs whose iovecs and names point into
        // `b`'s own buffers (heap, never moved while the thread runs); the kernel
        // writes at most iov_len / msg_namelen bytes into them.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                b.rx_hdr.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            match errno() {
                libc::EAGAIN | libc::EINTR => {}
                e => {
                    tracing::debug!(errno = e, "gss: recvmmsg failed");
                    // Not a busy loop on a persistent error.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            continue;
        }
        let n = (n as usize).min(BATCH);
        let mut m = 0usize;
        for i in 0..n {
            let len = (b.rx_hdr[i].msg_len as usize).min(BUF);
            let Some(src) = sockaddr_to_std(&b.addrs[i]) else {
                continue;
            };
            // A panic deep in the hand-over path must not take the socket down with
            // it (its share of SO_REUSEPORT flows would go unanswered); it costs
            // nothing while nothing panics.
            let (rx, tx) = (&b.rx[i][..len], &mut b.tx[i]);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                respond(&zone, &handler, rx, src, tx)
            }));
            let Ok(Some(out_len)) = r else {
                continue;
            };
            b.tx_iov[m].iov_base = b.tx[i].as_mut_ptr().cast();
            b.tx_iov[m].iov_len = out_len;
            let iov = &mut b.tx_iov[m] as *mut libc::iovec;
            let name = &mut b.addrs[i] as *mut libc::sockaddr_storage;
            let h = &mut b.tx_hdr[m];
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = name.cast();
            h.msg_hdr.msg_namelen = b.rx_hdr[i].msg_hdr.msg_namelen;
            h.msg_len = 0;
            // SAFETY: with pktinfo, rx_hdr[i]'s control buffer was filled by recvmmsg;
            // without, it is null.
            match unsafe { pktinfo::destination(&b.rx_hdr[i].msg_hdr) } {
                Some(dst) => pktinfo::set_source(&mut h.msg_hdr, &mut b.tx_ctrl[m], dst),
                None => pktinfo::clear(&mut h.msg_hdr),
            }
            m += 1;
        }
        let mut sent = 0usize;
        while sent < m {
            // SAFETY: tx_hdr[sent..m] are initialised above with iovecs and names
            // pointing into `b`'s buffers, which outlive the call.
            let r = unsafe {
                libc::sendmmsg(
                    fd,
                    b.tx_hdr[sent..m].as_mut_ptr(),
                    (m - sent) as libc::c_uint,
                    0,
                )
            };
            if r < 0 {
                match errno() {
                    libc::EINTR => continue,
                    e => {
                        // The first message failed (bad destination, EPERM...): skip it.
                        tracing::debug!(errno = e, "gss: sendmmsg failed");
                        sent += 1;
                    }
                }
            } else {
                sent += (r as usize).max(1);
            }
        }
    }
}
