//! Answering from the address a query was sent to, when the gss listens on a wildcard
//! address (`0.0.0.0` or `::`).
//!
//! A UDP socket bound to a wildcard address sends with whatever source address the
//! route picks, so on a host with several addresses a query sent to the second one is
//! answered from the first, and resolvers drop the answer as coming from the wrong
//! server. NSD and Knot ask the kernel for each datagram's destination (`IP_PKTINFO`,
//! `IPV6_RECVPKTINFO`) and send the reply from it; so does the fast path, through the
//! control messages built and read here. Sockets bound to one address skip all of
//! this (the kernel already answers from that address).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

/// Room for one `IP_PKTINFO` or `IPV6_PKTINFO` control message, aligned for
/// `cmsghdr` (both need well under 64 bytes).
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Ctrl(pub [u8; 64]);

impl Ctrl {
    /// An empty buffer.
    pub const fn new() -> Self {
        Ctrl([0; 64])
    }
}

impl Default for Ctrl {
    fn default() -> Self {
        Ctrl::new()
    }
}

/// Where a datagram arrived: the address (and, for IPv6, the interface, which a
/// link-local address needs) to answer it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dst {
    /// An IPv4 destination (also on a dual-stack IPv6 socket).
    V4(Ipv4Addr),
    /// An IPv6 destination and the interface index it arrived on.
    V6(Ipv6Addr, u32),
}

fn setsockopt_on(fd: RawFd, level: libc::c_int, name: libc::c_int) -> std::io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a live c_int and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Asks the kernel to report each datagram's destination on `fd`. An IPv6 socket
/// (dual-stack unless `IPV6_V6ONLY`) also asks for IPv4 datagrams' destinations.
pub fn enable(fd: RawFd, v6: bool) -> std::io::Result<()> {
    if v6 {
        setsockopt_on(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
        // Best effort: an IPv6-only socket never sees IPv4 datagrams.
        let _ = setsockopt_on(fd, libc::IPPROTO_IP, libc::IP_PKTINFO);
        Ok(())
    } else {
        setsockopt_on(fd, libc::IPPROTO_IP, libc::IP_PKTINFO)
    }
}

/// The destination reported in a received message's control data, if any.
///
/// # Safety
/// `hdr.msg_control`/`msg_controllen` must describe control data the kernel filled
/// in (or be null/0).
pub unsafe fn destination(hdr: &libc::msghdr) -> Option<Dst> {
    if hdr.msg_control.is_null() || hdr.msg_controllen == 0 {
        return None;
    }
    // SAFETY: the caller guarantees the control buffer; the CMSG_* walkers stay
    // within msg_controllen.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !c.is_null() {
        // SAFETY: `c` is a header inside the buffer (CMSG_FIRSTHDR/NXTHDR checked).
        let (level, kind) = unsafe { ((*c).cmsg_level, (*c).cmsg_type) };
        // SAFETY: as above; the data of these kinds holds the named struct, read
        // unaligned because CMSG_DATA only guarantees cmsghdr alignment.
        unsafe {
            if level == libc::IPPROTO_IP && kind == libc::IP_PKTINFO {
                let info: libc::in_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                return Some(Dst::V4(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr))));
            }
            if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
                let info: libc::in6_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>());
                let ip = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                return Some(match ip.to_ipv4_mapped() {
                    Some(v4) => Dst::V4(v4),
                    None => Dst::V6(ip, info.ipi6_ifindex),
                });
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Fills `buf` with the control message that makes a reply leave from `dst`, and
/// points `hdr` at it.
pub fn set_source(hdr: &mut libc::msghdr, buf: &mut Ctrl, dst: Dst) {
    let (level, kind, len) = match dst {
        Dst::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            std::mem::size_of::<libc::in_pktinfo>(),
        ),
        Dst::V6(..) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            std::mem::size_of::<libc::in6_pktinfo>(),
        ),
    };
    buf.0 = [0; 64];
    hdr.msg_control = buf.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic on a small constant length.
    let (space, cmsg_len) = unsafe { (libc::CMSG_SPACE(len as u32), libc::CMSG_LEN(len as u32)) };
    hdr.msg_controllen = space as _;
    // SAFETY: `buf` is 64 aligned bytes, more than CMSG_SPACE of either struct, and
    // `hdr` now describes it, so the first header and its data lie inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(hdr);
        (*c).cmsg_level = level;
        (*c).cmsg_type = kind;
        (*c).cmsg_len = cmsg_len as _;
        let data = libc::CMSG_DATA(c);
        match dst {
            Dst::V4(ip) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(data.cast::<libc::in_pktinfo>(), info);
            }
            Dst::V6(ip, ifindex) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: ifindex,
                };
                std::ptr::write_unaligned(data.cast::<libc::in6_pktinfo>(), info);
            }
        }
    }
}

/// Points `hdr` at no control data (a reply from a socket bound to one address).
pub fn clear(hdr: &mut libc::msghdr) {
    hdr.msg_control = std::ptr::null_mut();
    hdr.msg_controllen = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    /// One recvmsg with a control buffer: the payload length and the destination.
    fn recv_with_dst(
        s: &UdpSocket,
        ctrl: &mut Ctrl,
    ) -> (usize, Option<Dst>, libc::sockaddr_storage) {
        let mut buf = [0u8; 512];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: zeroed sockaddr_storage and msghdr are valid plain C structs.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = ctrl.0.as_mut_ptr().cast();
        hdr.msg_controllen = ctrl.0.len() as _;
        // SAFETY: every pointer in `hdr` refers to a live local buffer of the stated size.
        let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut hdr, 0) };
        assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
        // SAFETY: the kernel filled the control buffer `hdr` describes.
        (n as usize, unsafe { destination(&hdr) }, from)
    }

    #[test]
    fn ipv4_destination_is_reported_and_used_as_the_reply_source() {
        let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
        enable(server.as_raw_fd(), false).expect("IP_PKTINFO");
        let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
        client
            .send_to(b"query", server.local_addr().expect("addr"))
            .expect("send");

        let mut ctrl = Ctrl::new();
        let (n, dst, mut from) = recv_with_dst(&server, &mut ctrl);
        assert_eq!(n, 5);
        assert_eq!(dst, Some(Dst::V4(Ipv4Addr::LOCALHOST)));

        // The reply carries IP_PKTINFO naming that address; the kernel accepts it.
        let mut payload = *b"reply";
        let mut iov = libc::iovec {
            iov_base: payload.as_mut_ptr().cast(),
            iov_len: payload.len(),
        };
        // SAFETY: zeroed msghdr is a valid plain C struct.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        let mut out = Ctrl::new();
        set_source(&mut hdr, &mut out, dst.expect("dst"));
        // SAFETY: `hdr` points at live buffers of the stated sizes.
        let sent = unsafe { libc::sendmsg(server.as_raw_fd(), &hdr, 0) };
        assert_eq!(sent, 5, "sendmsg: {}", std::io::Error::last_os_error());
        let mut got = [0u8; 16];
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        let (n, peer) = client.recv_from(&mut got).expect("reply");
        assert_eq!(&got[..n], b"reply");
        assert_eq!(peer, server.local_addr().expect("addr"));
    }

    #[test]
    fn ipv6_destination_is_reported_with_its_interface() {
        let Ok(server) = UdpSocket::bind("[::1]:0") else {
            // No IPv6 loopback on this host: nothing to check.
            return;
        };
        enable(server.as_raw_fd(), true).expect("IPV6_RECVPKTINFO");
        let client = UdpSocket::bind("[::1]:0").expect("bind");
        client
            .send_to(b"q", server.local_addr().expect("addr"))
            .expect("send");
        let mut ctrl = Ctrl::new();
        let (_, dst, _) = recv_with_dst(&server, &mut ctrl);
        match dst {
            Some(Dst::V6(ip, ifindex)) => {
                assert_eq!(ip, Ipv6Addr::LOCALHOST);
                assert!(ifindex > 0, "loopback has an interface index");
            }
            other => panic!("expected an IPv6 destination, got {other:?}"),
        }
    }

    #[test]
    fn no_control_data_means_no_destination() {
        // SAFETY: a zeroed msghdr has a null control pointer.
        let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        // SAFETY: null control data is allowed.
        assert_eq!(unsafe { destination(&hdr) }, None);
    }
}
