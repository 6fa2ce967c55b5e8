//! Shared helpers for the gss integration tests: configs built from the model
//! structs, keepalive probes under test control, and a tiny DNS client over real
//! UDP/TCP sockets using hickory-proto messages.

// Shared by several test crates: each uses a part, and `pub` is how they reach it.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gss::{Gss, ProbeFactory};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use shared::config::{
    AllDown, Failback, GssConfig, KeepaliveConfig, MinUp, NameConfig, Policy, ProbeConfig,
    ProbeKind, ProbeTiming, SiteConfig, SoaConfig, StaticRecord,
};
use shared::events::EventLog;
use shared::probe::Probe;
use shared::testing::SwitchProbe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const ZONE: &str = "gslb.example.test";

/// Probes that connect over TCP to each keepalive's address.
pub fn tcp_probes() -> ProbeFactory {
    Arc::new(|k: &KeepaliveConfig| {
        shared::probe::build(&ProbeConfig::new(ProbeKind::Tcp), k.address)
    })
}

/// Probes driven by switches keyed by keepalive address.
pub fn switch_probes(switches: Vec<(SocketAddr, Arc<AtomicBool>)>) -> ProbeFactory {
    Arc::new(move |k: &KeepaliveConfig| {
        let s = switches
            .iter()
            .find(|(a, _)| *a == k.address)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        Ok(Arc::new(SwitchProbe(s)) as Arc<dyn Probe>)
    })
}

pub fn timing() -> ProbeTiming {
    ProbeTiming {
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(200),
        rise: 2,
        fall: 2,
    }
}

pub fn site(name: &str, target: SocketAddr, t: ProbeTiming) -> SiteConfig {
    let mut probe = ProbeConfig::new(ProbeKind::Tcp);
    probe.timing = t;
    SiteConfig {
        name: name.into(),
        min_up: MinUp::Count(1),
        keepalives: vec![KeepaliveConfig {
            name: format!("tcp {target}"),
            address: target,
            probe,
        }],
    }
}

pub fn name(label: &str, policy: Policy, failback: Failback, all_down: AllDown) -> NameConfig {
    NameConfig {
        fqdn: format!("{label}.{ZONE}"),
        policy,
        sites: vec!["dc1".into(), "dc2".into()],
        weights: BTreeMap::new(),
        answers: BTreeMap::from([
            ("dc1".to_string(), vec!["127.0.0.1".parse().unwrap()]),
            ("dc2".to_string(), vec!["127.0.0.2".parse().unwrap()]),
        ]),
        failback,
        all_down,
        clients: Vec::new(),
        ttl: 20,
    }
}

/// A failover name whose dc1 answer is `count` addresses `PREFIX.1`..`PREFIX.count`
/// (for truncation and size limits).
pub fn many(label: &str, prefix: &str, count: u32) -> NameConfig {
    let mut n = name(label, Policy::Failover, Failback::Manual, AllDown::First);
    let addrs = (1..=count)
        .map(|i| format!("{prefix}.{i}").parse().unwrap())
        .collect();
    n.answers.insert("dc1".into(), addrs);
    n
}

/// A failover name answering dc1 with 127.0.0.1 and ::1 (A and AAAA).
pub fn dual_stack(label: &str) -> NameConfig {
    let mut n = name(label, Policy::Failover, Failback::Manual, AllDown::First);
    if let Some(dc1) = n.answers.get_mut("dc1") {
        dc1.push("::1".parse().unwrap());
    }
    n
}

pub fn config(sites: Vec<SiteConfig>, names: Vec<NameConfig>) -> GssConfig {
    GssConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        zone: ZONE.into(),
        ttl: 20,
        nameservers: vec![format!("ns1.{ZONE}"), format!("ns2.{ZONE}")],
        soa: SoaConfig {
            ttl: 300,
            ..SoaConfig::defaults(ZONE, format!("ns1.{ZONE}"))
        },
        sites,
        names,
        records: vec![
            StaticRecord {
                fqdn: ZONE.into(),
                ttl: 300,
                rtype: "MX".into(),
                rdata: format!("10 smtp.{ZONE}."),
            },
            StaticRecord {
                fqdn: format!("txt.deep.{ZONE}"),
                ttl: 60,
                rtype: "TXT".into(),
                rdata: "\"v=spf1 -all\"".into(),
            },
        ],
        server_id: None,
        server_version: None,
        dnssec: None,
        role: Default::default(),
        quorum: None,
    }
}

pub async fn start(cfg: &GssConfig, probes: ProbeFactory) -> (Gss, Arc<EventLog>) {
    let events = Arc::new(EventLog::default());
    let gss = Gss::start_with_probes(cfg, events.clone(), probes)
        .await
        .expect("gss starts");
    (gss, events)
}

pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

pub fn with_edns(mut m: Message, payload: u16, dnssec_ok: bool) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(payload);
    e.set_dnssec_ok(dnssec_ok);
    m.set_edns(e);
    m
}

pub fn with_ecs(mut m: Message, addr: IpAddr, source: u8) -> Message {
    let mut e = m.edns.take().unwrap_or_default();
    e.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(addr, source, 0)));
    m.set_edns(e);
    m
}

fn rand_id() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(7, Ordering::Relaxed)
}

/// Sends raw bytes over UDP and returns the raw reply.
pub async fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, server).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .expect("udp reply within 3s")
        .unwrap();
    buf.truncate(n);
    buf
}

pub async fn udp(server: SocketAddr, m: &Message) -> Message {
    let raw = udp_raw(server, &m.to_vec().unwrap()).await;
    let reply = Message::from_vec(&raw).expect("reply parses");
    assert_eq!(reply.metadata.id, m.metadata.id);
    reply
}

pub async fn tcp(server: SocketAddr, m: &Message) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    let bytes = m.to_vec().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len))
        .await
        .expect("tcp reply within 3s")
        .unwrap();
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.unwrap();
    Message::from_vec(&body).expect("reply parses")
}

/// The IPv4 addresses in a reply's answer section.
pub fn a_records(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// Asks `name` A over UDP and returns the first address.
pub async fn answer(server: SocketAddr, name: &str) -> Option<IpAddr> {
    let r = udp(server, &query(name, RecordType::A)).await;
    a_records(&r).first().copied()
}

/// Polls until `name` answers `want`, up to `bound`; returns the time it took. On
/// timeout the panic shows the last answer and the gss's recent events, so a failure
/// says which site state held the answer back.
pub async fn wait_answer(
    server: SocketAddr,
    name: &str,
    want: &str,
    bound: Duration,
    events: &EventLog,
) -> Duration {
    let want: IpAddr = want.parse().unwrap();
    let start = tokio::time::Instant::now();
    loop {
        let got = answer(server, name).await;
        if got == Some(want) {
            return start.elapsed();
        }
        if start.elapsed() >= bound {
            let log: Vec<String> = events.last(50).iter().map(|e| e.to_string()).collect();
            panic!("{name} did not answer {want} within {bound:?} (last answer {got:?}); events: {log:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Under CI (`CI` set and not `false`) a missing real peer fails the test instead of
/// skipping it.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// A real peer's binary from Debian (`package` names what `.ci/run` installs); `None`
/// skips the test locally, and under CI a missing binary panics.
pub fn find_tool(bin: &str, package: &str) -> Option<std::path::PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let p = std::path::Path::new(dir).join(bin);
        if p.exists() {
            return Some(p);
        }
    }
    if on_ci() {
        panic!("{bin} is required under CI; .ci/run installs {package}");
    }
    eprintln!("skipping: {bin} is not installed (apt-get install {package}, or run .ci/run)");
    None
}
