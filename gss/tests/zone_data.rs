//! Zone-file semantics and the protocol fixes found by differential testing against
//! NSD and Knot, over real UDP (fast path and hand-over) and TCP sockets: CNAME
//! chasing, delegations, wildcards, relative rdata names, additional addresses,
//! strict EDNS, CHAOS identity, silence towards QR=1, compression against the question.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use shared::config::{AllDown, Failback, GssConfig, Policy, StaticRecord};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const TLSA_DATA: &str = "3 1 1 8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1";

fn rec(owner: &str, rtype: &str, rdata: &str) -> StaticRecord {
    StaticRecord {
        fqdn: if owner == "@" {
            ZONE.to_string()
        } else {
            format!("{owner}.{ZONE}")
        },
        ttl: 60,
        rtype: rtype.into(),
        rdata: rdata.into(),
    }
}

fn zone_cfg() -> GssConfig {
    let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let sf = name("sf", Policy::Failover, Failback::Manual, AllDown::Servfail);
    let mut cfg = config(
        vec![site("dc1", a1, timing()), site("dc2", a2, timing())],
        vec![dual_stack("smtp"), sf],
    );
    cfg.records = vec![
        rec("@", "MX", "10 mx"),
        rec("mx", "A", "192.0.2.25"),
        rec("ns1", "A", "192.0.2.53"),
        rec("www", "CNAME", "smtp"),
        rec("out", "CNAME", "mail.example.net."),
        rec("sub", "NS", "ns.sub"),
        rec("ns.sub", "A", "192.0.2.99"),
        rec("*.wild", "A", "192.0.2.7"),
        rec("_imap._tcp", "SRV", "0 1 993 imap"),
        rec("imap", "AAAA", "2001:db8::143"),
        rec("_25._tcp.smtp", "TLSA", TLSA_DATA),
        rec("svc", "SVCB", "1 imap alpn=h2 port=8443"),
        rec("@", "HTTPS", "1 . alpn=h2,h3"),
        rec("@", "CAA", "0 issue \"letsencrypt.org\""),
        rec(
            "imap",
            "SSHFP",
            "4 2 8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1",
        ),
    ];
    cfg.server_id = Some("gss-test-1".into());
    cfg
}

/// A gss with dc1 up and dc2 `dc2_up`; `sf` SERVFAILs when both are down.
async fn server(dc1_up: bool) -> (gss::Gss, SocketAddr) {
    let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let (g, _) = start(
        &zone_cfg(),
        switch_probes(vec![
            (a1, Arc::new(AtomicBool::new(dc1_up))),
            (a2, Arc::new(AtomicBool::new(dc1_up))),
        ]),
    )
    .await;
    let addr = g.local_addr();
    (g, addr)
}

fn show(m: &[hickory_proto::rr::Record]) -> Vec<String> {
    m.iter()
        .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
        .collect()
}

fn z(s: &str) -> String {
    format!("{s}.{ZONE}.")
}

#[tokio::test]
async fn cname_delegation_wildcard_and_additional_on_every_path() {
    let (_g, addr) = server(true).await;
    for tcp_path in [false, true] {
        let ask = |name: String, t: RecordType| {
            let m = query(&name, t);
            async move {
                if tcp_path {
                    tcp(addr, &m).await
                } else {
                    udp(addr, &m).await
                }
            }
        };
        // 1: the CNAME, then the target's records.
        let r = ask(z("www"), RecordType::A).await;
        assert!(r.metadata.authoritative);
        assert_eq!(
            show(&r.answers),
            [
                format!("{} CNAME {}", z("www"), z("smtp")),
                format!("{} A 127.0.0.1", z("smtp"))
            ]
        );
        let r = ask(z("out"), RecordType::AAAA).await;
        assert_eq!(
            show(&r.answers),
            [format!("{} CNAME mail.example.net.", z("out"))]
        );
        // 2: a referral for the cut and everything below it.
        for name in [z("sub"), z("a.b.sub")] {
            let r = ask(name, RecordType::A).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            assert!(!r.metadata.authoritative);
            assert!(r.answers.is_empty());
            assert_eq!(
                show(&r.authorities),
                [format!("{} NS {}", z("sub"), z("ns.sub"))]
            );
            assert_eq!(
                show(&r.additionals),
                [format!("{} A 192.0.2.99", z("ns.sub"))]
            );
        }
        // 3: wildcard synthesis and NODATA for other types.
        let r = ask(z("Foo.wild"), RecordType::A).await;
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].name.to_ascii().to_lowercase(), z("foo.wild"));
        let r = ask(z("a.b.wild"), RecordType::TXT).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        // 4 and 7: relative MX target, its address in additional; apex NS glue; SRV.
        let r = ask(ZONE.to_string() + ".", RecordType::MX).await;
        assert_eq!(show(&r.answers), [format!("{ZONE}. MX 10 {}", z("mx"))]);
        assert_eq!(show(&r.additionals), [format!("{} A 192.0.2.25", z("mx"))]);
        let r = ask(ZONE.to_string() + ".", RecordType::NS).await;
        assert_eq!(show(&r.additionals), [format!("{} A 192.0.2.53", z("ns1"))]);
        let r = ask(z("_imap._tcp"), RecordType::SRV).await;
        assert_eq!(
            show(&r.additionals),
            [format!("{} AAAA 2001:db8::143", z("imap"))]
        );
    }
}

/// DANE and service-binding records are served as static data beside a
/// site-selected name, on the fast path and over TCP; a relative SVCB target is
/// completed with the zone, as in a zone file.
#[tokio::test]
async fn tlsa_svcb_https_caa_and_sshfp_are_served() {
    let (_g, addr) = server(true).await;
    for tcp_path in [false, true] {
        let ask = |name: String, t: RecordType| {
            let m = query(&name, t);
            async move {
                if tcp_path {
                    tcp(addr, &m).await
                } else {
                    udp(addr, &m).await
                }
            }
        };
        let apex = format!("{ZONE}.");
        for (owner, t, want) in [
            (z("_25._tcp.smtp"), RecordType::TLSA, TLSA_DATA.to_string()),
            (
                z("svc"),
                RecordType::SVCB,
                format!("1 {} alpn=h2 port=8443", z("imap")),
            ),
            (
                apex.clone(),
                RecordType::HTTPS,
                "1 . alpn=h2,h3".to_string(),
            ),
            (
                apex.clone(),
                RecordType::CAA,
                "0 issue \"letsencrypt.org\"".to_string(),
            ),
            (
                z("imap"),
                RecordType::SSHFP,
                "4 2 8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1".to_string(),
            ),
        ] {
            let r = ask(owner.clone(), t).await;
            assert!(r.metadata.authoritative, "{owner} {t}");
            let want = RData::try_from_str(t, &want).unwrap();
            let got: Vec<&RData> = r.answers.iter().map(|a| &a.data).collect();
            assert_eq!(got, [&want], "{owner} {t} tcp={tcp_path}");
        }
        // The TLSA owner's parents exist as empty non-terminals: NODATA, not NXDOMAIN.
        let r = ask(z("_tcp.smtp"), RecordType::TLSA).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }
}

/// A query with OPT rdata `options` (raw bytes) for `name` A.
fn with_options(name: &str, options: &[u8]) -> Vec<u8> {
    let mut p = with_edns(query(name, RecordType::A), 1232, false)
        .to_vec()
        .unwrap();
    let n = p.len();
    p[n - 2..].copy_from_slice(&(options.len() as u16).to_be_bytes());
    p.extend_from_slice(options);
    p
}

fn ede_code(m: &Message) -> Option<u16> {
    let e = m.edns.as_ref()?;
    match e.option(EdnsCode::Unknown(15)) {
        Some(EdnsOption::Unknown(15, d)) if d.len() >= 2 => Some(u16::from_be_bytes([d[0], d[1]])),
        _ => None,
    }
}

#[tokio::test]
async fn edns_and_refused_follow_the_rfcs() {
    let (_g, addr) = server(true).await;
    let smtp = z("smtp");
    // Our own payload size, whatever the client's.
    for size in [512, 4096] {
        let r = udp(addr, &with_edns(query(&smtp, RecordType::A), size, false)).await;
        assert_eq!(r.edns.unwrap().max_payload(), 1232, "client said {size}");
    }
    // Malformed ECS (RFC 7871 §6): FORMERR on both paths.
    let bad_bits = [0, 8, 0, 7, 0, 1, 20, 0, 192, 0, 0x21];
    let too_long = [0, 8, 0, 8, 0, 1, 24, 0, 192, 0, 2, 1];
    let good = [0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2];
    for (opt, want) in [
        (&bad_bits[..], ResponseCode::FormErr),
        (&too_long[..], ResponseCode::FormErr),
        (&good[..], ResponseCode::NoError),
    ] {
        let q = with_options(&smtp, opt);
        let u = Message::from_vec(&udp_raw(addr, &q).await).unwrap();
        assert_eq!(u.metadata.response_code, want, "udp {opt:?}");
        let t = Message::from_vec(&tcp_raw(addr, &q).await.unwrap()).unwrap();
        assert_eq!(t.metadata.response_code, want, "tcp {opt:?}");
    }
    // REFUSED: never aa, with an extended error when the query had OPT.
    let r = udp(
        addr,
        &with_edns(query("www.example.com.", RecordType::A), 1232, false),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(!r.metadata.authoritative);
    assert_eq!(ede_code(&r), Some(20), "Not Authoritative");
    let r = tcp(
        addr,
        &with_edns(
            query(&(ZONE.to_string() + "."), RecordType::AXFR),
            1232,
            false,
        ),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(
        !r.metadata.authoritative,
        "no aa on REFUSED, in zone or not"
    );
    assert_eq!(ede_code(&r), Some(18), "Prohibited");
    // CHAOS identity per config; version unset → REFUSED.
    let mut q = query("id.server.", RecordType::TXT);
    q.queries[0].set_query_class(DNSClass::CH);
    let r = udp(addr, &q).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers[0].data.to_string().contains("gss-test-1"));
    let mut q = query("version.server.", RecordType::TXT);
    q.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        udp(addr, &q).await.metadata.response_code,
        ResponseCode::Refused
    );
}

#[tokio::test]
async fn servfail_carries_an_extended_error() {
    let (_g, addr) = server(false).await;
    let r = udp(
        addr,
        &with_edns(query(&z("sf"), RecordType::A), 1232, false),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede_code(&r), Some(0));
}

async fn tcp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    read_frame(&mut s).await
}

async fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

/// Packets with QR=1: well-formed, cut short, with trailing junk, with a bad name,
/// with garbage after the header.
fn responses() -> Vec<Vec<u8>> {
    let ok = query(&z("smtp"), RecordType::A).to_vec().unwrap();
    let mut shapes = Vec::new();
    let mut m = ok.clone();
    m[2] |= 0x80;
    shapes.push(m.clone());
    shapes.push(m[..m.len() - 3].to_vec());
    let mut junk = m.clone();
    junk.extend_from_slice(&[1, 2, 3]);
    shapes.push(junk);
    let mut bad_name = m.clone();
    bad_name[12] = 0xc0;
    bad_name[13] = 0xff;
    shapes.push(bad_name);
    let mut counts = m.clone();
    counts[5] = 9;
    shapes.push(counts);
    let mut garbage = m[..12].to_vec();
    garbage.extend((0..40u8).map(|i| i.wrapping_mul(37)));
    shapes.push(garbage);
    shapes
}

#[tokio::test]
async fn packets_with_qr_set_are_never_answered() {
    let (_g, addr) = server(true).await;
    let follow = query(&z("smtp"), RecordType::A);
    let follow_bytes = follow.to_vec().unwrap();
    // UDP: the first reply on the socket must be the one to the valid query after.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for shape in responses() {
        sock.send_to(&shape, addr).await.unwrap();
        sock.send_to(&follow_bytes, addr).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
            .await
            .expect("the valid query is answered")
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.id, follow.metadata.id, "a QR=1 packet got {m:?}");
        assert!(m.metadata.authoritative);
    }
    // TCP: same, on one connection.
    let mut s = TcpStream::connect(addr).await.unwrap();
    for shape in responses() {
        for b in [&shape, &follow_bytes] {
            s.write_all(&(b.len() as u16).to_be_bytes()).await.unwrap();
            s.write_all(b).await.unwrap();
        }
        let m = Message::from_vec(&read_frame(&mut s).await.unwrap()).unwrap();
        assert_eq!(
            m.metadata.id, follow.metadata.id,
            "a QR=1 message got {m:?}"
        );
    }
}

#[tokio::test]
async fn answer_owners_compress_against_the_question() {
    let (_g, addr) = server(true).await;
    let name = format!("SmTp.{}.", ZONE.to_uppercase());
    let plain = query(&name, RecordType::A).to_vec().unwrap();
    let ecs = with_options(&name, &[0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2]);
    let qlen = 12 + name.len() + 1 + 4;
    let via_udp = udp_raw(addr, &plain).await;
    let via_handover = udp_raw(addr, &ecs).await;
    let via_tcp = tcp_raw(addr, &plain).await.unwrap();
    for (what, raw) in [
        ("fast", via_udp),
        ("hand-over", via_handover),
        ("tcp", via_tcp),
    ] {
        assert_eq!(
            &raw[12..qlen],
            &plain[12..qlen],
            "{what}: question echoed as sent"
        );
        assert_eq!(
            &raw[qlen..qlen + 2],
            &[0xc0, 0x0c],
            "{what}: the answer owner points at the question"
        );
        let m = Message::from_vec(&raw).unwrap();
        assert_eq!(m.answers.len(), 1);
    }
    // A CNAME chain: owner → question, target → "smtp" + pointer to the zone, the
    // target's owner → the CNAME's rdata. 19 + 16 bytes, as NSD sends it.
    let q = query(&z("www"), RecordType::A).to_vec().unwrap();
    let raw = udp_raw(addr, &q).await;
    assert_eq!(raw.len(), q.len() + (2 + 10 + 5 + 2) + (2 + 10 + 4));
}
