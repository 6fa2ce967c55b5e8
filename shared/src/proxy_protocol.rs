//! PROXY protocol v1/v2 headers (HAProxy's `doc/proxy-protocol.txt`): what the lb
//! sends to backends on proxied connections, and the v2 `LOCAL` header probes send.
//!
//! The encoders are pure functions returning bytes; the parser reads the headers an
//! upstream balancer sends to `accept_proxy` VIPs, and lets fake servers and tests
//! check byte for byte what Portico puts on the wire. The parser never
//! panics: truncated input yields `Ok(None)` ("need more bytes") and garbage an error.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that opens every v2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest v1 header including CRLF, per the spec (107 bytes).
pub const V1_MAX_LEN: usize = 107;

/// The complete v2 `LOCAL` header (AF_UNSPEC, no addresses): what health checks send
/// so a PROXY-expecting backend (Postfix, Dovecot) accepts the connection as its own.
const V2_LOCAL: [u8; 16] = [
    b'\r', b'\n', b'\r', b'\n', 0, b'\r', b'\n', b'Q', b'U', b'I', b'T', b'\n', 0x20, 0x00, 0x00,
    0x00,
];

/// Which encoding a parsed header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// Text form (`PROXY TCP4 ...\r\n`).
    V1,
    /// Binary form.
    V2,
}

/// What the header asks of the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// The connection was relayed for a client; addresses (if any) describe it.
    Proxy,
    /// The proxy's own connection (health checks): use the real socket addresses.
    Local,
}

/// A parsed PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// v1 or v2.
    pub version: Version,
    /// v1 is always [`Command::Proxy`].
    pub command: Command,
    /// `(source, destination)`; `None` for `LOCAL`, v1 `UNKNOWN` and v2 AF_UNSPEC/AF_UNIX.
    pub addrs: Option<(SocketAddr, SocketAddr)>,
}

impl Header {
    /// The original client address the header carries, if any.
    pub fn source(&self) -> Option<SocketAddr> {
        self.addrs.map(|(s, _)| s)
    }

    /// True for a v2 `LOCAL` header (a health check).
    pub fn is_local(&self) -> bool {
        self.command == Command::Local
    }
}

/// Why a buffer is not a PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Neither the v1 `PROXY ` prefix nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// v1 line without CRLF within 107 bytes, or malformed fields.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// v2 header with an unsupported version, command, family or short address block.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Encodes a v1 header. Mixed address families cannot be expressed in v1 and yield the
/// `PROXY UNKNOWN` form (which receivers treat as "use the socket addresses").
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let line = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        (SocketAddr::V6(s), SocketAddr::V6(d)) => format!(
            "PROXY TCP6 {} {} {} {}\r\n",
            s.ip(),
            d.ip(),
            s.port(),
            d.port()
        ),
        _ => "PROXY UNKNOWN\r\n".to_string(),
    };
    line.into_bytes()
}

/// Encodes a v2 `PROXY` header for a TCP connection. Mixed families are sent as TCP6
/// with the IPv4 address mapped (`::ffff:a.b.c.d`), so no information is lost.
pub fn v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21);
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&d.ip().octets());
            out.extend_from_slice(&s.port().to_be_bytes());
            out.extend_from_slice(&d.port().to_be_bytes());
        }
        _ => {
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&as_v6(src.ip()).octets());
            out.extend_from_slice(&as_v6(dst.ip()).octets());
            out.extend_from_slice(&src.port().to_be_bytes());
            out.extend_from_slice(&dst.port().to_be_bytes());
        }
    }
    out
}

/// The v2 `LOCAL` header (16 bytes) that probes send first on PROXY-expecting ports.
pub fn v2_local() -> &'static [u8] {
    &V2_LOCAL
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Parses a v1 or v2 header at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` is a valid prefix that needs more bytes, and
/// `Ok(Some((header, consumed)))` once complete; bytes after `consumed` belong to the
/// proxied stream. v2 TLVs are checked to fill the header exactly, then skipped.
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ParseError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let sig_len = buf.len().min(V2_SIGNATURE.len());
    if buf[..sig_len] == V2_SIGNATURE[..sig_len] {
        return parse_v2(buf);
    }
    const V1_PREFIX: &[u8] = b"PROXY ";
    let pre_len = buf.len().min(V1_PREFIX.len());
    if buf[..pre_len] == V1_PREFIX[..pre_len] {
        return parse_v1(buf);
    }
    Err(ParseError::NotProxy)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ParseError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LEN {
            return Err(ParseError::V1("no CRLF within 107 bytes"));
        }
        return Ok(None);
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err(ParseError::V1("line does not end in CRLF"));
    }
    let line = std::str::from_utf8(&window[..lf - 1]).map_err(|_| ParseError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    if fields.next() != Some("PROXY") {
        return Err(ParseError::V1("missing PROXY keyword"));
    }
    let proto = fields.next().ok_or(ParseError::V1("missing protocol"))?;
    let header = |addrs| Header {
        version: Version::V1,
        command: Command::Proxy,
        addrs,
    };
    let want_v6 = match proto {
        // UNKNOWN may be followed by anything; the receiver ignores it.
        "UNKNOWN" => return Ok(Some((header(None), lf + 1))),
        "TCP4" => false,
        "TCP6" => true,
        _ => return Err(ParseError::V1("unknown protocol")),
    };
    let mut next = || fields.next().ok_or(ParseError::V1("missing field"));
    let (sip, dip, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(ParseError::V1("trailing fields"));
    }
    let ip = |s: &str| -> Result<IpAddr, ParseError> {
        let ip: IpAddr = s.parse().map_err(|_| ParseError::V1("bad address"))?;
        if ip.is_ipv6() != want_v6 {
            return Err(ParseError::V1("address family does not match protocol"));
        }
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, ParseError> {
        // The spec forbids leading zeros and signs; `u16::from_str` would accept "+1".
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(ParseError::V1("bad port"));
        }
        s.parse().map_err(|_| ParseError::V1("bad port"))
    };
    let src = SocketAddr::new(ip(sip)?, port(sport)?);
    let dst = SocketAddr::new(ip(dip)?, port(dport)?);
    Ok(Some((header(Some((src, dst))), lf + 1)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ParseError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ParseError::V2("unsupported version"));
    }
    let command = match ver_cmd & 0x0f {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => return Err(ParseError::V2("unsupported command")),
    };
    let fam = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[16..total];
    // The address block's size follows from the family; whatever the length field
    // adds beyond it must be TLVs that end exactly at the header's end (HAProxy and
    // the spec reject anything else), so a lying TLV cannot make us skip or read
    // bytes that belong to the proxied stream.
    let addr_len = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => return Err(ParseError::V2("unsupported address family")),
    };
    if body.len() < addr_len {
        return Err(ParseError::V2(match fam >> 4 {
            1 => "short IPv4 address block",
            2 => "short IPv6 address block",
            _ => "short UNIX address block",
        }));
    }
    check_tlvs(&body[addr_len..])?;
    let addrs = match fam >> 4 {
        0 => None,
        1 => {
            let ip4 = |o: usize| Ipv4Addr::new(body[o], body[o + 1], body[o + 2], body[o + 3]);
            let src = SocketAddr::new(ip4(0).into(), u16::from_be_bytes([body[8], body[9]]));
            let dst = SocketAddr::new(ip4(4).into(), u16::from_be_bytes([body[10], body[11]]));
            Some((src, dst))
        }
        2 => {
            let ip6 = |o: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&body[o..o + 16]);
                Ipv6Addr::from(a)
            };
            let src = SocketAddr::new(ip6(0).into(), u16::from_be_bytes([body[32], body[33]]));
            let dst = SocketAddr::new(ip6(16).into(), u16::from_be_bytes([body[34], body[35]]));
            Some((src, dst))
        }
        // AF_UNIX: addresses are paths; nothing a TCP peer can use.
        _ => None,
    };
    if !matches!(fam & 0x0f, 0..=2) {
        return Err(ParseError::V2("unsupported transport"));
    }
    let addrs = if command == Command::Local {
        None
    } else {
        addrs
    };
    Ok(Some((
        Header {
            version: Version::V2,
            command,
            addrs,
        },
        total,
    )))
}

/// Walks the TLV vector after the address block: each TLV is a type byte, a 16-bit
/// big-endian length and that many value bytes, and together they fill `tlvs`.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ParseError> {
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(ParseError::V2("trailing bytes shorter than a TLV"));
        }
        let len = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        if tlvs.len() - 3 < len {
            return Err(ParseError::V2("TLV longer than the header"));
        }
        tlvs = &tlvs[3 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_matches_spec_example() {
        let h = v1(sa("255.255.255.255:65535"), sa("255.255.255.255:65535"));
        assert_eq!(
            h,
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
        );
        let h = v1(sa("192.168.0.1:56324"), sa("192.168.0.11:443"));
        assert_eq!(h, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    }

    #[test]
    fn v1_tcp6_worst_case_fits_107_bytes() {
        let a = sa("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
        let h = v1(a, a);
        assert_eq!(
            h,
            b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec()
        );
        assert_eq!(h.len(), 104);
        assert!(h.len() <= V1_MAX_LEN);
    }

    #[test]
    fn v1_mixed_families_is_unknown() {
        assert_eq!(v1(sa("1.2.3.4:1"), sa("[::1]:2")), b"PROXY UNKNOWN\r\n");
    }

    #[test]
    fn v2_local_is_byte_exact() {
        assert_eq!(
            v2_local(),
            b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A\x20\x00\x00\x00"
        );
        let (h, n) = parse(v2_local()).unwrap().unwrap();
        assert_eq!(n, 16);
        assert!(h.is_local());
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.addrs, None);
    }

    #[test]
    fn v2_tcp4_is_byte_exact() {
        let h = v2(sa("192.168.0.1:56324"), sa("192.168.0.11:443"));
        let mut want = b"\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A".to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C]);
        want.extend_from_slice(&[192, 168, 0, 1, 192, 168, 0, 11]);
        want.extend_from_slice(&[0xDC, 0x04, 0x01, 0xBB]);
        assert_eq!(h, want);
    }

    #[test]
    fn v2_tcp6_is_byte_exact() {
        let h = v2(sa("[2001:db8::1]:1024"), sa("[2001:db8::2]:25"));
        let mut want = V2_SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        want.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        want.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        want.extend_from_slice(&[0x04, 0x00, 0x00, 0x19]);
        assert_eq!(h, want);
        assert_eq!(h.len(), 52);
    }

    #[test]
    fn v2_mixed_maps_v4_to_v6() {
        let h = v2(sa("10.0.0.1:5000"), sa("[::1]:25"));
        let (p, n) = parse(&h).unwrap().unwrap();
        assert_eq!(n, h.len());
        assert_eq!(
            p.addrs,
            Some((sa("[::ffff:10.0.0.1]:5000"), sa("[::1]:25")))
        );
    }

    #[test]
    fn round_trips() {
        for (s, d) in [
            ("127.0.0.1:40000", "127.0.0.2:25"),
            ("[::1]:40000", "[fe80::1]:993"),
            ("0.0.0.0:0", "255.255.255.255:65535"),
        ] {
            let (s, d) = (sa(s), sa(d));
            let enc = v1(s, d);
            let (h, n) = parse(&enc).unwrap().unwrap();
            assert_eq!(
                (h.version, h.command, h.addrs, n),
                (Version::V1, Command::Proxy, Some((s, d)), enc.len())
            );
            let enc = v2(s, d);
            let (h, n) = parse(&enc).unwrap().unwrap();
            assert_eq!(
                (h.version, h.command, h.addrs, n),
                (Version::V2, Command::Proxy, Some((s, d)), enc.len())
            );
        }
    }

    #[test]
    fn trailing_payload_is_not_consumed() {
        let mut buf = v2(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
        let hdr_len = buf.len();
        buf.extend_from_slice(b"EHLO x\r\n");
        assert_eq!(parse(&buf).unwrap().unwrap().1, hdr_len);
        let mut buf = v1(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
        let hdr_len = buf.len();
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(parse(&buf).unwrap().unwrap().1, hdr_len);
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let mut buf = v2(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
        buf[15] = 12 + 5; // length now covers a 5-byte TLV
        buf.extend_from_slice(&[0x04, 0x00, 0x02, 0xAB, 0xCD, b'X']);
        let (h, n) = parse(&buf).unwrap().unwrap();
        assert_eq!(n, 16 + 17);
        assert_eq!(h.source(), Some(sa("1.2.3.4:5")));
    }

    /// A v2 TCP4 header whose length field covers `extra` after the addresses.
    fn v2_with(extra: &[u8]) -> Vec<u8> {
        let mut buf = v2(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
        let len = u16::try_from(12 + extra.len()).unwrap();
        buf[14..16].copy_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(extra);
        buf
    }

    #[test]
    fn v2_tlvs_must_fill_the_header_exactly() {
        // Two well-formed TLVs (ALPN "h2" and an empty NOOP) fill it: accepted.
        let ok = v2_with(&[0x01, 0x00, 0x02, b'h', b'2', 0x04, 0x00, 0x00]);
        assert_eq!(parse(&ok).unwrap().unwrap().1, ok.len());
        // A TLV claiming more bytes than the header has.
        let mut long = v2_with(&[0x04, 0x00, 0x05, 0xAB]);
        assert_eq!(
            parse(&long),
            Err(ParseError::V2("TLV longer than the header"))
        );
        // ... even when the stream after the header has the bytes it claims.
        long.extend_from_slice(b"EHLO x\r\n");
        assert!(parse(&long).is_err());
        // Trailing bytes too short to be a TLV.
        for tail in [&[0x04][..], &[0x04, 0x00][..]] {
            assert_eq!(
                parse(&v2_with(tail)),
                Err(ParseError::V2("trailing bytes shorter than a TLV")),
                "{tail:?}"
            );
        }
        // A good TLV followed by a stray byte.
        assert!(parse(&v2_with(&[0x04, 0x00, 0x01, 0xAA, 0x00])).is_err());
        // LOCAL headers (probes of an upstream balancer) are held to the same rule.
        let mut local = v2_local().to_vec();
        local[15] = 2;
        local.extend_from_slice(&[0x04, 0x00]);
        assert!(parse(&local).is_err());
        // AF_UNIX needs its whole 216-byte address block.
        let mut unix = v2_local().to_vec();
        unix[12] = 0x21;
        unix[13] = 0x31;
        unix[15] = 16;
        unix.extend_from_slice(&[0; 16]);
        assert_eq!(
            parse(&unix),
            Err(ParseError::V2("short UNIX address block"))
        );
    }

    #[test]
    fn truncated_input_needs_more() {
        for enc in [
            v2(sa("1.2.3.4:5"), sa("6.7.8.9:10")),
            v2(sa("[::1]:5"), sa("[::2]:10")),
            v1(sa("1.2.3.4:5"), sa("6.7.8.9:10")),
            v2_local().to_vec(),
        ] {
            for cut in 0..enc.len() {
                assert_eq!(parse(&enc[..cut]), Ok(None), "cut at {cut} of {enc:?}");
            }
        }
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(parse(b"EHLO x\r\n"), Err(ParseError::NotProxy));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ParseError::NotProxy));
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n").is_err());
        assert!(parse(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n").is_err());
        assert!(parse(b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n").is_err());
        assert!(parse(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20)).is_err());
        let mut bad = v2_local().to_vec();
        bad[12] = 0x11; // version 1 in a v2 header
        assert!(parse(&bad).is_err());
        bad[12] = 0x2F;
        assert!(parse(&bad).is_err());
        let mut short = v2(sa("1.2.3.4:5"), sa("6.7.8.9:10"));
        short[15] = 4;
        short.truncate(20);
        assert!(parse(&short).is_err());
    }

    #[test]
    fn no_panic_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix of many pseudo-random buffers,
        // some of them starting with a valid signature.
        let mut x: u32 = 0x1234_5678;
        for i in 0..2000 {
            let mut buf = Vec::new();
            if i % 3 == 0 {
                buf.extend_from_slice(&V2_SIGNATURE);
            } else if i % 3 == 1 {
                buf.extend_from_slice(b"PROXY ");
            }
            for _ in 0..(i % 80) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                buf.push(x as u8);
            }
            for cut in 0..=buf.len() {
                let _ = parse(&buf[..cut]);
            }
        }
    }
}
