//! The UDP sockets: one `SO_REUSEPORT` socket per core served by a blocking thread
//! with `recvmmsg`/`sendmmsg` batches, answering from the current snapshot's
//! pre-rendered table ([`crate::fast`]) with no allocation and no lock per answered
//! query, or (as [`UdpMode::Hickory`]) one tokio socket through the full path only.
//!
//! **Hand-over.** Anything the table does not answer (other opcodes, QDCOUNT ≠ 1, EDNS
//! options other than a well-formed DNS cookie, which both paths ignore, EDNS version
//! ≠ 0, unknown names, client rules, truncation, malformed input) goes to
//! [`crate::respond::answer_message`], the path TCP uses too (nothing for short
//! messages and QR=1, FORMERR with no question when hickory-proto cannot parse it),
//! inline on the socket's thread with the client's real source address (a forwarding
//! socket would lose it, and with it client rules). Both come from the same snapshot,
//! loaded once per datagram.
//!
//! **Threads.** One blocking thread per socket (not tokio tasks): a blocking
//! `recvmmsg` with `MSG_WAITFORONE` costs one syscall per batch with no readiness
//! round-trip, and a socket read timeout ([`POLL`]) bounds how long shutdown waits for
//! a thread to see the cancellation token. Idle threads wake 1/[`POLL`] times a second.

pub mod pktinfo;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_server::net::xfer::Protocol;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::respond::answer_message;
use crate::snapshot::Snapshot;
use pktinfo::Ctrl;

/// How long a socket thread blocks before checking for shutdown.
pub const POLL: Duration = Duration::from_millis(100);
/// Datagrams per `recvmmsg`/`sendmmsg`.
pub const BATCH: usize = 32;
/// Receive and send buffer per datagram (hickory's UDP receive buffer is 4096 too).
pub const BUF: usize = 4096;

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

/// Answers one datagram from `snap`: its pre-rendered table first, else the full
/// path. Returns the response length written to `out`, or `None` to send nothing.
pub fn respond(snap: &Snapshot, pkt: &[u8], src: SocketAddr, out: &mut [u8]) -> Option<usize> {
    if !sane_source(src) {
        return None;
    }
    if let Some(n) = snap.table().and_then(|t| crate::fast::answer(t, pkt, out)) {
        return Some(n);
    }
    let bytes = answer_message(&snap.zone, pkt, src, Protocol::Udp)?;
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
    /// Destination reports (wildcard listen only, see [`pktinfo`]).
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
    snap: Arc<ArcSwap<Snapshot>>,
    cancel: CancellationToken,
    pktinfo: bool,
) {
    let fd = sock.as_raw_fd();
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
                respond(&snap.load(), rx, src, tx)
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

/// The internal switch for the UDP fast path ([`crate::fast`]); with `false`,
/// one tokio socket answers every datagram through the full parser. Not a
/// config option: it exists to back the fast path out without a code change
/// elsewhere and for A/B measurements.
pub const FAST_UDP: bool = true;

/// Who serves UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpMode {
    /// One tokio socket, every datagram parsed by hickory-proto and answered by
    /// [`answer_message`] (the fast path's hand-over path for everything).
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
/// leave from the address the query was sent to ([`pktinfo`]).
pub fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_reuse_port(true)?;
    if addr.ip().is_unspecified() {
        pktinfo::enable(std::os::fd::AsRawFd::as_raw_fd(&s), addr.is_ipv6())?;
    }
    // Room for bursts while the thread is descheduled (the kernel caps this at
    // net.core.rmem_max); best effort.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_read_timeout(Some(POLL))?;
    Ok(s.into())
}

/// UDP without the fast path: one datagram at a time through [`answer_message`].
pub async fn serve_udp(sock: UdpSocket, snap: Arc<ArcSwap<Snapshot>>, cancel: CancellationToken) {
    let mut buf = vec![0u8; BUF];
    loop {
        let (n, src) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "gss: udp recv failed");
                    continue;
                }
            },
        };
        if !sane_source(src) {
            continue;
        }
        let Some(resp) = answer_message(&snap.load().zone, &buf[..n], src, Protocol::Udp) else {
            continue;
        };
        if let Err(e) = sock.send_to(&resp, src).await {
            tracing::debug!(error = %e, "gss: udp send failed");
        }
    }
}
