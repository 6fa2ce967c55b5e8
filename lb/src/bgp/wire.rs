//! The BGP messages this speaker sends and the parser of what routers send, over the
//! `rustbgpd-wire` codec.
//!
//! Why that crate: of the three looked at, it is the one that encodes every message
//! the speaker needs (OPEN with 4-octet AS, MP IPv4/IPv6 and route-refresh
//! capabilities; UPDATE with body NLRI for IPv4 and MP_REACH/MP_UNREACH for IPv6,
//! ORIGIN, AS_PATH, NEXT_HOP, MED, COMMUNITIES; KEEPALIVE, NOTIFICATION,
//! ROUTE-REFRESH), documents and fuzzes "no panics on malformed input, no unsafe",
//! and adds no crate to our tree beyond itself (it needs only `bytes` and
//! `thiserror`, which we already build). `netgauze-bgp-pkt` decodes as well but
//! brings nom, serde, strum and its IANA crates; `zettabgp` has no dependencies but
//! indexes slices on received lengths. Received UPDATEs are framed and dropped, never
//! parsed beyond their lengths: this speaker only announces. The fuzz target
//! `bgp_message` runs [`decode`] on arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr};

use bytes::Bytes;
use ipnet::IpNet;
use rustbgpd_wire::{
    AsPath, AsPathSegment, Capability, Ipv4NlriEntry, Ipv4Prefix, Ipv4UnicastMode, Ipv6Prefix,
    MpReachNlri, MpUnreachNlri, NlriEntry, NotificationCode, NotificationMessage, OpenMessage,
    Origin, PathAttribute, Prefix, UpdateMessage,
};

pub(crate) use rustbgpd_wire::{Afi, Message, Safi};

/// RFC 4271's maximum message size (we negotiate no extended messages).
pub const MAX_LEN: usize = 4096;

/// The 2-octet AS carried in OPEN for an AS above 65535 (RFC 6793).
const AS_TRANS: u16 = 23456;

/// Why bytes from a router are not a message we accept. Carries the NOTIFICATION
/// (code, subcode) RFC 4271 §6 says to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail} (NOTIFICATION {code}/{subcode})")]
pub struct WireError {
    /// NOTIFICATION error code.
    pub code: u8,
    /// NOTIFICATION error subcode.
    pub subcode: u8,
    /// What was wrong, for `show bgp` and the log.
    pub detail: String,
}

impl From<rustbgpd_wire::DecodeError> for WireError {
    fn from(e: rustbgpd_wire::DecodeError) -> Self {
        let (code, subcode, _) = e.to_notification();
        WireError {
            code: code.as_u8(),
            subcode,
            detail: e.to_string(),
        }
    }
}

/// Length of the message at the start of `buf` once its header is in, `None` while
/// fewer than 19 bytes are there. A bad marker or length is an error: the stream can
/// not be re-synchronised, the session must reset.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    rustbgpd_wire::peek_message_length(buf, MAX_LEN as u16)
        .map(|n| n.map(usize::from))
        .map_err(WireError::from)
}

/// Decodes one whole message (header included). Never panics, whatever the bytes.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let msg = rustbgpd_wire::decode_message(&mut buf, MAX_LEN as u16)?;
    if !buf.is_empty() {
        return Err(WireError {
            code: 1,
            subcode: 2,
            detail: format!("{} bytes after the message", buf.len()),
        });
    }
    Ok(msg)
}

fn encode(msg: &Message) -> Bytes {
    // Only our own, bounded messages are encoded here: one prefix per UPDATE, at
    // most 16 prepends and a config-bounded list of communities.
    match rustbgpd_wire::encode_message(msg) {
        Ok(b) => b.freeze(),
        Err(e) => {
            tracing::error!("bgp: cannot encode {msg}: {e}");
            keepalive()
        }
    }
}

/// Our OPEN: 4-octet AS, IPv4 and IPv6 unicast, route refresh.
pub(crate) fn open(local_as: u32, hold_secs: u16, router_id: Ipv4Addr) -> Bytes {
    let my_as = u16::try_from(local_as).unwrap_or(AS_TRANS);
    encode(&Message::Open(OpenMessage {
        version: 4,
        my_as,
        hold_time: hold_secs,
        bgp_identifier: router_id,
        capabilities: vec![
            Capability::MultiProtocol {
                afi: Afi::Ipv4,
                safi: Safi::Unicast,
            },
            Capability::MultiProtocol {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
            },
            Capability::RouteRefresh,
            Capability::FourOctetAs { asn: local_as },
        ],
    }))
}

/// The peer's AS from its OPEN: the 4-octet capability when present.
pub(crate) fn open_as(open: &OpenMessage) -> u32 {
    open.four_byte_as()
}

/// True when the peer's OPEN offers 4-octet AS numbers.
pub(crate) fn open_four_octet(open: &OpenMessage) -> bool {
    open.capabilities
        .iter()
        .any(|c| matches!(c, Capability::FourOctetAs { .. }))
}

/// A KEEPALIVE.
pub(crate) fn keepalive() -> Bytes {
    // 16 bytes of marker, length 19, type 4.
    let mut b = vec![0xff; 16];
    b.extend_from_slice(&[0, 19, 4]);
    Bytes::from(b)
}

/// A NOTIFICATION with `code`/`subcode`.
pub(crate) fn notification(code: u8, subcode: u8) -> Bytes {
    encode(&Message::Notification(NotificationMessage::new(
        NotificationCode::from_u8(code),
        subcode,
        Bytes::new(),
    )))
}

/// What a route carries besides its prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RouteAttrs {
    /// RFC 1997 communities.
    pub communities: Vec<u32>,
    /// Extra copies of our AS in front of the path.
    pub as_path_prepend: u8,
    /// MULTI_EXIT_DISC.
    pub med: Option<u32>,
    /// Next hop; the session's local address when `None`.
    pub next_hop: Option<IpAddr>,
}

/// How a session encodes its UPDATEs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peering {
    /// Our AS.
    pub local_as: u32,
    /// Same AS on both sides: empty AS_PATH, LOCAL_PREF sent.
    pub ibgp: bool,
    /// The peer negotiated 4-octet AS numbers.
    pub four_octet: bool,
}

/// The UPDATE announcing `prefix` with `attrs` and `next_hop` (resolved by the
/// session: the VIP's override, the neighbor's, or the local address). `None` when
/// the next hop's family cannot carry the prefix (an IPv6 prefix over a session whose
/// only next hop is IPv4, and the reverse).
pub(crate) fn announce(
    prefix: IpNet,
    attrs: &RouteAttrs,
    next_hop: IpAddr,
    p: Peering,
) -> Option<Bytes> {
    let mut path = Vec::new();
    path.push(PathAttribute::Origin(Origin::Igp));
    let asns = if p.ibgp {
        Vec::new()
    } else {
        vec![p.local_as; 1 + usize::from(attrs.as_path_prepend)]
    };
    path.push(PathAttribute::AsPath(AsPath {
        segments: if asns.is_empty() {
            Vec::new()
        } else {
            vec![AsPathSegment::AsSequence(asns)]
        },
    }));
    let mut announced = Vec::new();
    match (prefix, next_hop) {
        (IpNet::V4(net), IpAddr::V4(nh)) => {
            path.push(PathAttribute::NextHop(nh));
            announced.push(Ipv4NlriEntry {
                path_id: 0,
                prefix: Ipv4Prefix::new(net.addr(), net.prefix_len()),
            });
        }
        (IpNet::V6(net), IpAddr::V6(nh)) => {
            path.push(PathAttribute::MpReachNlri(Box::new(MpReachNlri {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
                next_hop: IpAddr::V6(nh),
                link_local_next_hop: None,
                announced: vec![NlriEntry {
                    path_id: 0,
                    prefix: Prefix::V6(Ipv6Prefix::new(net.addr(), net.prefix_len())),
                }],
                flowspec_announced: Vec::new(),
                evpn_announced: Vec::new(),
                bgpls_announced: Vec::new(),
                vpn_announced: Vec::new(),
                labeled_announced: Vec::new(),
                rtc_announced: Vec::new(),
            })));
        }
        _ => return None,
    }
    if let Some(med) = attrs.med {
        path.push(PathAttribute::Med(med));
    }
    if p.ibgp {
        path.push(PathAttribute::LocalPref(100));
    }
    if !attrs.communities.is_empty() {
        path.push(PathAttribute::Communities(attrs.communities.clone()));
    }
    update(&announced, &[], &path, p)
}

/// The UPDATE withdrawing `prefix`.
pub(crate) fn withdraw(prefix: IpNet, p: Peering) -> Option<Bytes> {
    match prefix {
        IpNet::V4(net) => update(
            &[],
            &[Ipv4NlriEntry {
                path_id: 0,
                prefix: Ipv4Prefix::new(net.addr(), net.prefix_len()),
            }],
            &[],
            p,
        ),
        IpNet::V6(net) => update(
            &[],
            &[],
            &[PathAttribute::MpUnreachNlri(Box::new(MpUnreachNlri {
                afi: Afi::Ipv6,
                safi: Safi::Unicast,
                withdrawn: vec![NlriEntry {
                    path_id: 0,
                    prefix: Prefix::V6(Ipv6Prefix::new(net.addr(), net.prefix_len())),
                }],
                flowspec_withdrawn: Vec::new(),
                evpn_withdrawn: Vec::new(),
                bgpls_withdrawn: Vec::new(),
                vpn_withdrawn: Vec::new(),
                labeled_withdrawn: Vec::new(),
                rtc_withdrawn: Vec::new(),
            }))],
            p,
        ),
    }
}

fn update(
    announced: &[Ipv4NlriEntry],
    withdrawn: &[Ipv4NlriEntry],
    attrs: &[PathAttribute],
    p: Peering,
) -> Option<Bytes> {
    match UpdateMessage::try_build(
        announced,
        withdrawn,
        attrs,
        p.four_octet,
        false,
        Ipv4UnicastMode::Body,
    ) {
        Ok(u) => Some(encode(&Message::Update(u))),
        Err(e) => {
            tracing::error!("bgp: cannot build UPDATE: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Peering = Peering {
        local_as: 65010,
        ibgp: false,
        four_octet: true,
    };

    fn attrs() -> RouteAttrs {
        RouteAttrs {
            communities: vec![(65010 << 16) | 100],
            as_path_prepend: 2,
            med: Some(5),
            next_hop: None,
        }
    }

    #[test]
    fn ipv4_announce_is_byte_exact() {
        let b = announce(
            "198.51.100.10/32".parse().unwrap(),
            &attrs(),
            "127.0.0.2".parse().unwrap(),
            P,
        )
        .unwrap();
        let mut want = vec![0xff; 16];
        let attrs: &[u8] = &[
            0x40, 1, 1, 0, // ORIGIN IGP
            0x40, 2, 14, 2, 3, 0, 0, 0xfd, 0xf2, 0, 0, 0xfd, 0xf2, 0, 0, 0xfd,
            0xf2, // AS_PATH
            0x40, 3, 4, 127, 0, 0, 2, // NEXT_HOP
            0x80, 4, 4, 0, 0, 0, 5, // MED
            0xc0, 8, 4, 0xfd, 0xf2, 0, 100, // COMMUNITIES
        ];
        let nlri: &[u8] = &[32, 198, 51, 100, 10];
        let len = 19 + 2 + 2 + attrs.len() + nlri.len();
        want.extend_from_slice(&[0, len as u8, 2, 0, 0, 0, attrs.len() as u8]);
        want.extend_from_slice(attrs);
        want.extend_from_slice(nlri);
        assert_eq!(b.as_ref(), want.as_slice());
        assert!(matches!(decode(&b), Ok(Message::Update(_))));
    }

    #[test]
    fn ipv4_withdraw_is_byte_exact() {
        let b = withdraw("198.51.100.0/24".parse().unwrap(), P).unwrap();
        let mut want = vec![0xff; 16];
        want.extend_from_slice(&[0, 27, 2, 0, 4, 24, 198, 51, 100, 0, 0]);
        assert_eq!(b.as_ref(), want.as_slice());
    }

    #[test]
    fn ipv6_goes_in_mp_reach_and_unreach() {
        let b = announce(
            "2001:db8::10/128".parse().unwrap(),
            &attrs(),
            "2001:db8::2".parse().unwrap(),
            P,
        )
        .unwrap();
        // MP_REACH_NLRI: optional (0x80), type 14.
        assert!(b.windows(2).any(|w| w == [0x80, 14]), "{b:02x?}");
        let w = withdraw("2001:db8::10/128".parse().unwrap(), P).unwrap();
        assert!(w.windows(2).any(|w| w == [0x80, 15]), "{w:02x?}");
        assert!(matches!(decode(&w), Ok(Message::Update(_))));
        // A v6 prefix cannot take a v4 next hop.
        assert!(announce(
            "2001:db8::10/128".parse().unwrap(),
            &attrs(),
            "127.0.0.2".parse().unwrap(),
            P
        )
        .is_none());
    }

    #[test]
    fn open_round_trips_with_its_capabilities() {
        let b = open(4_200_000_001, 9, Ipv4Addr::new(192, 0, 2, 21));
        let Ok(Message::Open(o)) = decode(&b) else {
            panic!("not an OPEN: {b:02x?}");
        };
        assert_eq!(o.my_as, AS_TRANS);
        assert_eq!(open_as(&o), 4_200_000_001);
        assert!(open_four_octet(&o));
        assert_eq!(o.hold_time, 9);
        assert!(o.capabilities.contains(&Capability::RouteRefresh));
        assert!(o.capabilities.contains(&Capability::MultiProtocol {
            afi: Afi::Ipv6,
            safi: Safi::Unicast
        }));
    }

    #[test]
    fn keepalive_and_notification_decode() {
        assert_eq!(decode(&keepalive()), Ok(Message::Keepalive));
        let Ok(Message::Notification(n)) = decode(&notification(4, 0)) else {
            panic!("not a NOTIFICATION");
        };
        assert_eq!((n.code.as_u8(), n.subcode), (4, 0));
    }

    #[test]
    fn garbage_is_an_error_with_its_notification() {
        let e = decode(&[0u8; 19]).unwrap_err();
        assert_eq!(
            (e.code, e.subcode),
            (1, 1),
            "bad marker: connection not synchronized"
        );
        let mut bad_type = vec![0xff; 16];
        bad_type.extend_from_slice(&[0, 19, 9]);
        assert_eq!(decode(&bad_type).unwrap_err().code, 1);
        assert_eq!(frame_len(&bad_type[..10]), Ok(None));
        let mut short = vec![0xff; 16];
        short.extend_from_slice(&[0, 5, 4]);
        assert!(frame_len(&short).is_err());
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + n) as u8).collect();
            let _ = decode(&junk);
        }
    }
}
