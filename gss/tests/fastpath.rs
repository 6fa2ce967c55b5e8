//! The UDP fast path against the hickory path: answers byte-identical in their
//! sections for the same query (over real sockets and by differential fuzzing in
//! process), immediate answer changes on health changes and overrides, hand-over of
//! everything the fast path does not own, and no answer to malformed input.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use common::*;
use gss::respond::{answer_message, Protocol};
use gss::select::{HealthView, SiteView};
use gss::server::DnsServer;
use gss::udp::{self, UdpMode};
use gss::zone::{render, ZoneTemplate};
use gss::Snapshot;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;
use shared::admin::SiteOverride;
use shared::config::{AllDown, ClientRule, Failback, GssConfig, Policy};
use shared::testing::metrics::CountingRecorder;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn cfg(weighted: bool) -> GssConfig {
    let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let smtp = dual_stack("smtp");
    let big = many("big", "127.0.1", 60);
    let mid = many("mid", "127.0.2", 30);
    let mut local = name("local", Policy::Failover, Failback::Manual, AllDown::First);
    local.clients = vec![ClientRule {
        networks: vec!["127.0.0.0/8".parse().unwrap()],
        sites: vec!["dc2".into(), "dc1".into()],
    }];
    let sf = name("sf", Policy::Failover, Failback::Manual, AllDown::Servfail);
    let mut names = vec![smtp, big, mid, local, sf];
    if weighted {
        let mut w = name("w", Policy::Weighted, Failback::Manual, AllDown::First);
        w.weights.insert("dc1".into(), 3);
        w.weights.insert("dc2".into(), 1);
        names.push(w);
    }
    config(
        vec![site("dc1", a1, timing()), site("dc2", a2, timing())],
        names,
    )
}

fn zone_for(cfg: &GssConfig, dc1: bool, dc2: bool, prev: Option<&Snapshot>) -> Snapshot {
    let tpl = Arc::new(ZoneTemplate::new(cfg).unwrap());
    let v = |up| if up { SiteView::up() } else { SiteView::down() };
    let view = HealthView::from_pairs([("dc1", v(dc1)), ("dc2", v(dc2))]);
    let z = render(tpl, &view, Instant::now(), prev.map(|p| &*p.zone));
    let s = Snapshot::new(z, view);
    s.fill_table();
    s
}

/// The fast path alone: `None` when `snap`'s table does not answer `pkt`.
fn fast(snap: &Snapshot, pkt: &[u8], out: &mut [u8]) -> Option<usize> {
    gss::fast::answer(snap.table()?, pkt, out)
}

/// The full path for a UDP datagram, as the fast path hands it over.
fn handover(snap: &Snapshot, pkt: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    answer_message(&snap.zone, pkt, src, Protocol::Udp)
}

struct Pair {
    zone: Arc<ArcSwap<Snapshot>>,
    fast: DnsServer,
    hickory: DnsServer,
    _cancel: CancellationToken,
}

async fn pair(cfg: &GssConfig) -> Pair {
    let zone = Arc::new(ArcSwap::from_pointee(zone_for(cfg, true, true, None)));
    let cancel = CancellationToken::new();
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let fast = DnsServer::bind(listen, zone.clone(), UdpMode::Fast(2), cancel.clone())
        .await
        .unwrap();
    let hickory = DnsServer::bind(listen, zone.clone(), UdpMode::Hickory, cancel.clone())
        .await
        .unwrap();
    Pair {
        zone,
        fast,
        hickory,
        _cancel: cancel,
    }
}

fn q(name: &str, t: RecordType) -> Vec<u8> {
    query(name, t).to_vec().unwrap()
}

fn qe(name: &str, t: RecordType, payload: u16, dnssec_ok: bool) -> Vec<u8> {
    with_edns(query(name, t), payload, dnssec_ok)
        .to_vec()
        .unwrap()
}

/// Queries both servers with the same bytes and checks the replies parse to the same
/// message and echo the question bytes as sent.
async fn same_reply(p: &Pair, bytes: &[u8]) -> Message {
    let f = udp_raw(p.fast.local_addr(), bytes).await;
    let h = udp_raw(p.hickory.local_addr(), bytes).await;
    let fm = Message::from_vec(&f).expect("fast reply parses");
    let hm = Message::from_vec(&h).expect("hickory reply parses");
    assert_eq!(fm, hm, "query {bytes:02x?}");
    let mut key = [0u8; gss::fast::wire::KEY_MAX];
    if let (false, Some(pq)) = (
        fm.queries.is_empty(),
        gss::fast::wire::parse_query(bytes, &mut key),
    ) {
        let qend = pq.question_end;
        assert_eq!(f[12..qend], bytes[12..qend], "question echoed as sent");
    }
    assert!(f.len() <= h.len(), "fast reply no larger");
    fm
}

fn fast_answers(snap: &Snapshot, bytes: &[u8]) -> bool {
    let mut out = [0u8; udp::BUF];
    fast(snap, bytes, &mut out).is_some()
}

#[tokio::test]
async fn fast_answers_match_the_hickory_path() {
    let cfg = cfg(false);
    let p = pair(&cfg).await;
    let z = p.zone.load_full();
    let mut cases: Vec<Vec<u8>> = vec![
        q("smtp.gslb.example.test.", RecordType::A),
        q("SmTp.GsLb.Example.TEST.", RecordType::A),
        q("smtp.gslb.example.test.", RecordType::AAAA),
        q("smtp.gslb.example.test.", RecordType::ANY),
        q("smtp.gslb.example.test.", RecordType::MX),
        q("gslb.example.test.", RecordType::SOA),
        q("gslb.example.test.", RecordType::NS),
        q("GSLB.example.test.", RecordType::MX),
        q("gslb.example.test.", RecordType::A),
        q("deep.gslb.example.test.", RecordType::A),
        q("txt.deep.gslb.example.test.", RecordType::TXT),
        q("sf.gslb.example.test.", RecordType::A),
        q("mid.gslb.example.test.", RecordType::A),
        qe("smtp.gslb.example.test.", RecordType::A, 1232, false),
        qe("smtp.gslb.example.test.", RecordType::A, 4096, true),
        qe("smtp.gslb.example.test.", RecordType::A, 512, false),
        qe("big.gslb.example.test.", RecordType::A, 1232, false),
        qe("big.gslb.example.test.", RecordType::A, 1400, true),
        qe("gslb.example.test.", RecordType::SOA, 1232, true),
        qe("nope.gslb.example.test.", RecordType::A, 1232, false),
    ];
    // RD and CD from the client are copied.
    let mut rd_cd = q("smtp.gslb.example.test.", RecordType::A);
    rd_cd[2] |= 0x01;
    rd_cd[3] |= 0x10;
    cases.push(rd_cd);
    for bytes in &cases {
        let m = same_reply(&p, bytes).await;
        assert!(m.metadata.authoritative, "{m:?}");
    }
    // The fast path really answered the common ones (and not the TC one).
    assert!(fast_answers(&z, &cases[0]));
    assert!(fast_answers(&z, &cases[1]));
    assert!(fast_answers(&z, &cases[13]));
    assert!(
        fast_answers(&z, &cases[14]),
        "DO is patched, not handed over"
    );
    assert!(fast_answers(&z, &cases[16]), "60 A records fit 1232");
    assert!(!fast_answers(
        &z,
        &q("big.gslb.example.test.", RecordType::A)
    ));
    // The servfail name is answered from bytes too, as SERVFAIL only when all down.
    let m = same_reply(&p, &cases[11]).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn sizes_and_truncation() {
    let cfg = cfg(false);
    let p = pair(&cfg).await;
    let z = p.zone.load_full();
    // 60 A records ≈ 1000 bytes: no EDNS or EDNS 512 → TC from the hickory path.
    for bytes in [
        q("big.gslb.example.test.", RecordType::A),
        qe("big.gslb.example.test.", RecordType::A, 512, false),
        qe("big.gslb.example.test.", RecordType::A, 900, false),
    ] {
        assert!(!fast_answers(&z, &bytes));
        let m = same_reply(&p, &bytes).await;
        assert!(m.metadata.truncation);
    }
    // 30 A records ≈ 500+ bytes: over 512 without EDNS, fine with 1232.
    let m = same_reply(&p, &q("mid.gslb.example.test.", RecordType::A)).await;
    let big_enough = qe("mid.gslb.example.test.", RecordType::A, 1232, false);
    assert!(fast_answers(&z, &big_enough));
    let m2 = same_reply(&p, &big_enough).await;
    assert!(!m2.metadata.truncation);
    assert_eq!(m2.answers.len(), 30);
    assert!(m.metadata.truncation || m.answers.len() == 30);
    // OPT present iff the query had one.
    let plain = same_reply(&p, &q("smtp.gslb.example.test.", RecordType::A)).await;
    assert!(plain.edns.is_none());
    let e = same_reply(&p, &qe("smtp.gslb.example.test.", RecordType::A, 700, true)).await;
    let opt = e.edns.expect("OPT echoed");
    assert_eq!(
        opt.max_payload(),
        1232,
        "the response OPT advertises our own payload size (RFC 6891 §6.2.3), not the client's"
    );
    assert!(opt.flags().dnssec_ok);
}

#[tokio::test]
async fn hand_over_cases_get_the_hickory_answers() {
    let cfg = cfg(false);
    let p = pair(&cfg).await;
    let z = p.zone.load_full();
    let ecs = with_ecs(
        with_edns(query("smtp.gslb.example.test.", RecordType::A), 1232, false),
        "192.0.2.0".parse().unwrap(),
        24,
    )
    .to_vec()
    .unwrap();
    let local = q("local.gslb.example.test.", RecordType::A);
    let nx = q("nope.gslb.example.test.", RecordType::A);
    let refused = q("www.example.com.", RecordType::A);
    let mut two = vec![0x12, 0x34, 0x00, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0];
    for _ in 0..2 {
        for label in ["smtp", "gslb", "example", "test"] {
            two.push(label.len() as u8);
            two.extend_from_slice(label.as_bytes());
        }
        two.extend_from_slice(&[0, 0, 1, 0, 1]);
    }
    let mut v1 = qe("smtp.gslb.example.test.", RecordType::A, 1232, false);
    let n = v1.len();
    v1[n - 5] = 1;
    let mut cookie = qe("smtp.gslb.example.test.", RecordType::A, 1232, false);
    let n = cookie.len();
    cookie[n - 1] = 12;
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut notify = q("smtp.gslb.example.test.", RecordType::A);
    notify[2] |= 4 << 3;
    let cut = vec![
        0x33, 0x33, 0x00, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 4, b's', b'm',
    ];
    for bytes in [&ecs, &local, &nx, &refused, &two, &v1, &notify, &cut] {
        assert!(!fast_answers(&z, bytes), "{bytes:02x?} is handed over");
        same_reply(&p, bytes).await;
    }
    // A DNS cookie (BIND and dig send one with nearly every query) is ignored on the
    // fast path exactly as the hickory path ignores it.
    assert!(
        fast_answers(&z, &cookie),
        "a cookie query stays on the fast path"
    );
    same_reply(&p, &cookie).await;
    // Specific answers, to be sure they are the right ones and not just equal.
    let r = Message::from_vec(&udp_raw(p.fast.local_addr(), &ecs).await).unwrap();
    let Some(EdnsOption::Subnet(s)) = r.edns.as_ref().unwrap().option(EdnsCode::Subnet) else {
        panic!("ECS echoed: {r:?}")
    };
    assert_eq!(s.source_prefix(), 24);
    let r = Message::from_vec(&udp_raw(p.fast.local_addr(), &local).await).unwrap();
    assert_eq!(
        a_records(&r),
        vec!["127.0.0.2".parse::<std::net::IpAddr>().unwrap()],
        "client rule by source"
    );
    let r = Message::from_vec(&udp_raw(p.fast.local_addr(), &two).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    let r = Message::from_vec(&udp_raw(p.fast.local_addr(), &nx).await).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities.len(), 1);
    let r = Message::from_vec(&udp_raw(p.fast.local_addr(), &cookie).await).unwrap();
    assert_eq!(a_records(&r).len(), 1);
    assert!(
        r.edns.as_ref().unwrap().option(EdnsCode::Cookie).is_none(),
        "no cookie echoed by a server that does not implement them"
    );
}

#[tokio::test]
async fn answers_change_with_the_swapped_zone() {
    let cfg = cfg(false);
    let p = pair(&cfg).await;
    let addr = p.fast.local_addr();
    assert_eq!(
        answer(addr, "smtp.gslb.example.test.").await,
        Some("127.0.0.1".parse().unwrap())
    );
    let prev = p.zone.load_full();
    p.zone
        .store(Arc::new(zone_for(&cfg, false, true, Some(&prev))));
    assert_eq!(
        answer(addr, "smtp.gslb.example.test.").await,
        Some("127.0.0.2".parse().unwrap())
    );
    // All down on a servfail name: SERVFAIL, from bytes.
    let prev = p.zone.load_full();
    p.zone
        .store(Arc::new(zone_for(&cfg, false, false, Some(&prev))));
    let bytes = q("sf.gslb.example.test.", RecordType::A);
    assert!(fast_answers(&p.zone.load(), &bytes));
    let m = same_reply(&p, &bytes).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn overrides_show_in_the_very_next_fast_answer() {
    let a1: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let a2: SocketAddr = "127.0.0.1:2".parse().unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let cfg = cfg(false);
    let (g, _) = start(&cfg, switch_probes(vec![(a1, up.clone()), (a2, up)])).await;
    let addr = g.local_addr();
    let smtp = "smtp.gslb.example.test.";
    assert_eq!(answer(addr, smtp).await, Some("127.0.0.1".parse().unwrap()));
    g.core()
        .set_override("dc1", SiteOverride::Down, "test")
        .unwrap();
    assert_eq!(answer(addr, smtp).await, Some("127.0.0.2".parse().unwrap()));
    g.core()
        .set_override("dc1", SiteOverride::Up, "test")
        .unwrap();
    assert_eq!(answer(addr, smtp).await, Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        g.core().set_override("dc9", SiteOverride::Down, "test"),
        Err(gss::OverrideError::UnknownSite("dc9".into())),
        "an unknown site is a typed error and changes nothing"
    );
    assert_eq!(answer(addr, smtp).await, Some("127.0.0.1".parse().unwrap()));
    g.shutdown().await;
    // Every socket is closed once shutdown returns: the kernel refuses the datagram
    // (ICMP port unreachable, seen as ECONNREFUSED on a connected socket).
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    sock.send(&q(smtp, RecordType::A)).await.unwrap();
    let mut buf = [0u8; 512];
    let r = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf)).await;
    assert!(
        matches!(&r, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "no answer after shutdown, the port is closed: {r:?}"
    );
}

#[tokio::test]
async fn weighted_rotation_is_shared_and_exact() {
    let cfg = cfg(true);
    let p = pair(&cfg).await;
    let z = p.zone.load_full();
    let bytes = q("w.gslb.example.test.", RecordType::A);
    assert!(fast_answers(&z, &bytes), "weighted names are fast too");
    let mut dc1 = 0;
    // 200 through the fast path, 200 through hickory: one rotation, exact 3:1.
    for i in 0..400 {
        let addr = if i % 2 == 0 {
            p.fast.local_addr()
        } else {
            p.hickory.local_addr()
        };
        let r = Message::from_vec(&udp_raw(addr, &bytes).await).unwrap();
        if a_records(&r) == vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()] {
            dc1 += 1;
        }
    }
    // The rotation started at 0 and was also advanced by the fast_answers call above.
    assert!((299..=301).contains(&dc1), "dc1 got {dc1} of 400");
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Differential fuzzing in process: mutated queries either go to the hickory path or
/// get an answer that parses to exactly what the hickory path answers; input hickory
/// cannot parse is never answered by the fast path.
#[test]
fn fuzzed_queries_agree_with_the_hickory_path() {
    let cfg = cfg(false);
    let zone = zone_for(&cfg, true, false, None);
    let src: SocketAddr = "192.0.2.1:5353".parse().unwrap();
    let seeds: Vec<Vec<u8>> = vec![
        q("smtp.gslb.example.test.", RecordType::A),
        q("SMTP.gslb.example.test.", RecordType::AAAA),
        qe("smtp.gslb.example.test.", RecordType::A, 1232, true),
        qe("mid.gslb.example.test.", RecordType::A, 600, false),
        q("gslb.example.test.", RecordType::SOA),
        qe("gslb.example.test.", RecordType::NS, 512, false),
        q("txt.deep.gslb.example.test.", RecordType::TXT),
        q("sf.gslb.example.test.", RecordType::A),
    ];
    let mut s = 0x2545_f491_4f6c_dd1du64;
    let mut out = [0u8; udp::BUF];
    let (mut fast_hits, mut agreed) = (0, 0);
    for i in 0..60_000 {
        let mut p = if i % 10 == 0 {
            let len = (xorshift(&mut s) % 64) as usize;
            (0..len).map(|_| xorshift(&mut s) as u8).collect()
        } else {
            seeds[i % seeds.len()].clone()
        };
        for _ in 0..(xorshift(&mut s) % 3) {
            if p.is_empty() {
                break;
            }
            let at = (xorshift(&mut s) as usize) % p.len();
            match xorshift(&mut s) % 8 {
                0 => p.truncate(at),
                1 => p.insert(at, xorshift(&mut s) as u8),
                // Flip a bit, mostly in the header and question.
                _ => {
                    let at = at % p.len().min(40);
                    p[at] ^= 1 << (xorshift(&mut s) % 8);
                }
            }
        }
        let Some(n) = fast(&zone, &p, &mut out) else {
            continue;
        };
        fast_hits += 1;
        let parsed = Message::from_vec(&p).expect("the fast path only answers parseable queries");
        assert_eq!(parsed.queries.len(), 1);
        let mine = Message::from_vec(&out[..n]).expect("fast answer parses");
        let theirs = handover(&zone, &p, src).expect("hickory answers it too");
        let theirs = Message::from_vec(&theirs).unwrap();
        assert_eq!(mine, theirs, "query {p:02x?}");
        let mut key = [0u8; gss::fast::wire::KEY_MAX];
        let qend = gss::fast::wire::parse_query(&p, &mut key)
            .unwrap()
            .question_end;
        assert_eq!(out[12..qend], p[12..qend], "question echoed as sent");
        assert_eq!(out[..2], p[..2], "ID copied");
        agreed += 1;
    }
    assert!(
        fast_hits > 10_000,
        "most seeds still hit the fast path ({fast_hits})"
    );
    assert_eq!(fast_hits, agreed);
}

#[tokio::test]
async fn garbage_over_the_socket_gets_no_answer_from_bytes() {
    let cfg = cfg(false);
    let p = pair(&cfg).await;
    // Too short for a header, and a response message: hickory answers nothing, so
    // neither do we. The server keeps serving afterwards.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(p.fast.local_addr()).await.unwrap();
    let mut resp = q("smtp.gslb.example.test.", RecordType::A);
    resp[..2].copy_from_slice(&[0x11, 0x11]);
    resp[2] |= 0x80;
    let mut valid = q("smtp.gslb.example.test.", RecordType::A);
    valid[..2].copy_from_slice(&[0x42, 0x42]);
    for bytes in [&b"\x01\x02\x03"[..], &resp[..]] {
        // Datagrams from one source reach one socket thread, which answers them in
        // order: the first reply is to the valid query sent after the garbage.
        sock.send(bytes).await.unwrap();
        sock.send(&valid).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), sock.recv(&mut buf))
            .await
            .expect("the valid query is answered")
            .unwrap();
        assert!(n >= 12);
        assert_eq!(buf[..2], [0x42, 0x42], "no reply to {bytes:02x?}");
    }
    assert_eq!(
        answer(p.fast.local_addr(), "smtp.gslb.example.test.").await,
        Some("127.0.0.1".parse().unwrap())
    );
}

#[test]
fn query_counter_is_the_same_series_on_both_paths() {
    let cfg = cfg(false);
    let zone = zone_for(&cfg, true, true, None);
    let src: SocketAddr = "192.0.2.1:5353".parse().unwrap();
    let rec = CountingRecorder::default();
    let a = q("Smtp.gslb.example.test.", RecordType::A);
    let mx = qe("smtp.gslb.example.test.", RecordType::MX, 1232, false);
    let nx = q("nope.gslb.example.test.", RecordType::A);
    metrics::with_local_recorder(&rec, || {
        let mut out = [0u8; udp::BUF];
        for _ in 0..3 {
            assert!(fast(&zone, &a, &mut out).is_some());
        }
        assert!(handover(&zone, &a, src).is_some());
        assert!(fast(&zone, &mx, &mut out).is_some());
        assert!(udp::respond(&zone, &nx, src, &mut out).is_some());
    });
    let got = rec.snapshot();
    let want: std::collections::BTreeMap<String, u64> = [
        (
            "portico_dns_queries_total{name=smtp.gslb.example.test,qtype=A,rcode=NOERROR}",
            4,
        ),
        (
            "portico_dns_queries_total{name=smtp.gslb.example.test,qtype=MX,rcode=NOERROR}",
            1,
        ),
        (
            "portico_dns_queries_total{name=nxdomain,qtype=A,rcode=NXDOMAIN}",
            1,
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(got, want);
}
