//! DNS protocol behaviour over real UDP and TCP sockets: the authoritative-server
//! checklist (RFC 1035, 2308, 3225, 4343, 6891, 7871, 8482, 8906, 9619).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{RData, RecordType};

async fn server() -> (gss::Gss, SocketAddr) {
    let up = Arc::new(AtomicBool::new(true));
    let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let big = many("big", "127.0.1", 60);
    let smtp = dual_stack("smtp");
    let mid = many("mid", "127.0.2", 10);
    let cfg = config(
        vec![site("dc1", a1, timing()), site("dc2", a2, timing())],
        vec![smtp, big, mid],
    );
    let (gss, _) = start(&cfg, switch_probes(vec![(a1, up.clone()), (a2, up)])).await;
    let addr = gss.local_addr();
    (gss, addr)
}

fn soa_in_authority(m: &Message) -> bool {
    m.authorities.len() == 1
        && matches!(m.authorities[0].data, RData::SOA(_))
        && m.authorities[0].ttl == 30
}

#[tokio::test]
async fn soa_and_ns_at_apex_are_authoritative() {
    let (_g, addr) = server().await;
    let r = udp(addr, &query("gslb.example.test.", RecordType::SOA)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative);
    assert!(!r.metadata.recursion_available);
    assert_eq!(r.answers.len(), 1);
    let RData::SOA(soa) = &r.answers[0].data else {
        panic!("not a SOA: {r:?}")
    };
    assert_eq!(soa.minimum, 30);
    assert!(soa.serial > 0);
    assert!(r.edns.is_none(), "no OPT without OPT in the query");
    let r = udp(addr, &query("gslb.example.test.", RecordType::NS)).await;
    assert_eq!(r.answers.len(), 2);
    assert!(r.answers.iter().all(|a| matches!(a.data, RData::NS(_))));
    // Static MX at the apex too.
    let r = tcp(addr, &query("gslb.example.test.", RecordType::MX)).await;
    assert!(matches!(r.answers[0].data, RData::MX(_)));
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let (_g, addr) = server().await;
    let r = udp(addr, &query("nope.gslb.example.test.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.metadata.authoritative);
    assert!(r.answers.is_empty());
    assert!(soa_in_authority(&r), "{r:?}");
    // Existing name, missing type.
    let r = udp(addr, &query("smtp.gslb.example.test.", RecordType::MX)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert!(r.metadata.authoritative);
    assert!(soa_in_authority(&r));
    // Empty non-terminal: deep. exists only because txt.deep. does.
    let r = udp(addr, &query("deep.gslb.example.test.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(soa_in_authority(&r));
    // Unknown qtype is NODATA.
    let r = udp(
        addr,
        &query("smtp.gslb.example.test.", RecordType::Unknown(65280)),
    )
    .await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(soa_in_authority(&r));
    // Below a site-selected name: NXDOMAIN.
    let r = udp(addr, &query("x.smtp.gslb.example.test.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn out_of_zone_is_refused_without_aa() {
    let (_g, addr) = server().await;
    for n in ["example.test.", "www.example.com.", "."] {
        let r = udp(addr, &query(n, RecordType::A)).await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused, "{n}");
        assert!(!r.metadata.authoritative);
        assert!(r.answers.is_empty() && r.authorities.is_empty());
    }
}

#[tokio::test]
async fn mixed_case_matches_and_question_is_echoed_as_sent() {
    let (_g, addr) = server().await;
    let q = query("SmTp.GsLb.Example.TEST.", RecordType::A);
    let raw = udp_raw(addr, &q.to_vec().unwrap()).await;
    let r = Message::from_vec(&raw).unwrap();
    assert_eq!(
        a_records(&r),
        vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    let sent = q.to_vec().unwrap();
    // Question section bytes (after the 12-byte header) are identical.
    let qlen = sent.len() - 12;
    assert_eq!(
        &raw[12..12 + qlen],
        &sent[12..],
        "question echoed byte for byte"
    );
    assert_eq!(r.queries[0].name().to_ascii(), "SmTp.GsLb.Example.TEST.");
}

#[tokio::test]
async fn aaaa_and_any() {
    let (_g, addr) = server().await;
    let r = udp(addr, &query("smtp.gslb.example.test.", RecordType::AAAA)).await;
    assert_eq!(
        a_records(&r),
        vec!["::1".parse::<std::net::IpAddr>().unwrap()]
    );
    // RFC 8482: one RRset, not everything.
    let r = udp(addr, &query("smtp.gslb.example.test.", RecordType::ANY)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.answers.is_empty());
    let types: std::collections::HashSet<RecordType> =
        r.answers.iter().map(|a| a.record_type()).collect();
    assert_eq!(types.len(), 1, "{:?}", r.answers);
}

#[tokio::test]
async fn edns_badvers_do_bit_and_small_payload() {
    let (_g, addr) = server().await;
    let mut q = with_edns(query("smtp.gslb.example.test.", RecordType::A), 1232, true);
    let r = udp(addr, &q).await;
    let e = r.edns.as_ref().expect("OPT echoed");
    assert!(e.flags().dnssec_ok, "DO copied");
    assert_eq!(e.version(), 0);
    assert_eq!(a_records(&r).len(), 1);
    let r = udp(
        addr,
        &with_edns(query("smtp.gslb.example.test.", RecordType::A), 1232, false),
    )
    .await;
    assert!(!r.edns.as_ref().unwrap().flags().dnssec_ok);
    // Version 1 → BADVERS with an OPT of version 0.
    q.edns.as_mut().unwrap().set_version(1);
    let r = udp(addr, &q).await;
    // 16 is BADVERS in an OPT context (hickory decodes it under its other name, BADSIG).
    assert_eq!(u16::from(r.metadata.response_code), 16);
    let e = r.edns.as_ref().expect("BADVERS comes with OPT");
    assert_eq!(e.version(), 0);
    assert!(r.answers.is_empty());
    // A payload below 512 is read as 512: a 10-address answer (~210 bytes) is not
    // truncated for a client advertising 100.
    let mut q = with_edns(query("mid.gslb.example.test.", RecordType::A), 512, false);
    q.edns.as_mut().unwrap().set_max_payload(100);
    let mut raw = q.to_vec().unwrap();
    // set_max_payload clamps; write 100 into the OPT CLASS field by hand.
    let n = raw.len();
    raw[n - 8] = 0;
    raw[n - 7] = 100;
    let reply = udp_raw(addr, &raw).await;
    let r = Message::from_vec(&reply).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.metadata.truncation, "small answer fits 512");
    assert_eq!(a_records(&r).len(), 10);
}

#[tokio::test]
async fn truncated_over_udp_then_full_over_tcp() {
    let (_g, addr) = server().await;
    let q = query("big.gslb.example.test.", RecordType::A);
    let raw = udp_raw(addr, &q.to_vec().unwrap()).await;
    assert!(
        raw.len() <= 512,
        "no EDNS: at most 512 bytes, got {}",
        raw.len()
    );
    let r = Message::from_vec(&raw).unwrap();
    assert!(r.metadata.truncation, "TC set");
    assert!(r.metadata.authoritative);
    assert_eq!(r.queries.len(), 1, "question kept");
    // With EDNS 1232 it fits (60 A records ≈ 980 bytes).
    let r = udp(addr, &with_edns(q.clone(), 1232, false)).await;
    assert!(!r.metadata.truncation);
    assert_eq!(a_records(&r).len(), 60);
    // TC with EDNS keeps the OPT.
    let small = udp(addr, &with_edns(q.clone(), 512, false)).await;
    assert!(small.metadata.truncation);
    assert!(small.edns.is_some(), "OPT kept on TC");
    let r = tcp(addr, &q).await;
    assert!(!r.metadata.truncation);
    assert_eq!(a_records(&r).len(), 60);
}

#[tokio::test]
async fn formerr_for_two_questions_and_notimp_for_other_opcodes() {
    let (_g, addr) = server().await;
    // Hand-built: header with QDCOUNT=2, then two questions.
    let mut raw = vec![0x12, 0x34, 0x00, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0];
    for _ in 0..2 {
        for label in ["smtp", "gslb", "example", "test"] {
            raw.push(label.len() as u8);
            raw.extend_from_slice(label.as_bytes());
        }
        raw.extend_from_slice(&[0, 0, 1, 0, 1]);
    }
    let r = Message::from_vec(&udp_raw(addr, &raw).await).unwrap();
    assert_eq!(r.metadata.id, 0x1234);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert!(r.answers.is_empty());
    // QDCOUNT=1 but the question is cut short: hickory's Server answers FORMERR itself.
    let cut = vec![
        0x33, 0x33, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 4, b's', b'm',
    ];
    let r = Message::from_vec(&udp_raw(addr, &cut).await).unwrap();
    assert_eq!(r.metadata.id, 0x3333);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // QDCOUNT=0.
    let raw0 = vec![0x22, 0x22, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
    let r = Message::from_vec(&udp_raw(addr, &raw0).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Opcode 2 (STATUS) and 15 (unassigned).
    for opcode in [2u8, 15] {
        let mut q = query("smtp.gslb.example.test.", RecordType::A)
            .to_vec()
            .unwrap();
        q[2] = (q[2] & 0x87) | (opcode << 3);
        let r = Message::from_vec(&udp_raw(addr, &q).await).unwrap();
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NotImp,
            "opcode {opcode}"
        );
        assert!(r.answers.is_empty());
    }
}

#[tokio::test]
async fn ecs_is_echoed_with_scope_zero_when_the_answer_does_not_depend_on_it() {
    let (_g, addr) = server().await;
    let q = with_ecs(
        with_edns(query("smtp.gslb.example.test.", RecordType::A), 1232, false),
        "192.0.2.0".parse().unwrap(),
        24,
    );
    let r = udp(addr, &q).await;
    let Some(EdnsOption::Subnet(s)) = r.edns.as_ref().unwrap().option(EdnsCode::Subnet) else {
        panic!("ECS echoed: {r:?}")
    };
    assert_eq!(s.source_prefix(), 24);
    assert_eq!(s.scope_prefix(), 0);
    assert_eq!(s.addr(), "192.0.2.0".parse::<std::net::IpAddr>().unwrap());
    // Not asked, not sent.
    let r = udp(
        addr,
        &with_edns(query("smtp.gslb.example.test.", RecordType::A), 1232, false),
    )
    .await;
    assert!(r.edns.unwrap().option(EdnsCode::Subnet).is_none());
}

#[tokio::test]
async fn tcp_pipelined_queries() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_g, addr) = server().await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let q1 = query("smtp.gslb.example.test.", RecordType::A);
    let q2 = query("gslb.example.test.", RecordType::SOA);
    let mut out = Vec::new();
    for q in [&q1, &q2] {
        let b = q.to_vec().unwrap();
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(&b);
    }
    s.write_all(&out).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        ids.push(Message::from_vec(&body).unwrap().metadata.id);
    }
    ids.sort();
    let mut want = vec![q1.metadata.id, q2.metadata.id];
    want.sort();
    assert_eq!(ids, want);
}
