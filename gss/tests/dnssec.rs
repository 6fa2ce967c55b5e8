//! DNSSEC end to end: a signed gss (keys from `dnssec-keygen` files under
//! `tests/testdata/dnssec`) answers DO queries with pre-made signatures and NSEC
//! proofs that real validators accept (Debian's `unbound` with a stub zone to the gss
//! and `delv`, both given the zone's trust anchor), also after a failover, through a
//! ZSK rollover and across re-signs; without DO its answers are byte for byte an
//! unsigned zone's. The real validators are skipped when not installed, and fail
//! the test under `CI=true` (`.ci/run` installs them).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use shared::config::{DnssecConfig, DnssecKeyConfig, GssConfig, KeyRole, KeyState, StaticRecord};

const KSK: &str = "Kgslb.example.test.+013+17467";
const ZSK: &str = "Kgslb.example.test.+013+33573";
/// A second P-256 key (made with `-f KSK`), used as the incoming ZSK of a rollover.
const ZSK2: &str = "Kgslb.example.test.+013+33435";
const TLSA_DATA: &str = "3 1 1 8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1";

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/dnssec")
}

fn key(file: &str, role: KeyRole, state: KeyState) -> DnssecKeyConfig {
    DnssecKeyConfig {
        file: keys_dir().join(file),
        role,
        state,
    }
}

fn dnssec(keys: Vec<DnssecKeyConfig>) -> DnssecConfig {
    DnssecConfig {
        keys,
        validity: DnssecConfig::DEFAULT_VALIDITY,
        refresh: DnssecConfig::DEFAULT_REFRESH,
        inception: DnssecConfig::DEFAULT_INCEPTION,
        jitter: DnssecConfig::DEFAULT_JITTER,
    }
}

fn ksk_zsk() -> Vec<DnssecKeyConfig> {
    vec![
        key(KSK, KeyRole::Ksk, KeyState::Active),
        key(ZSK, KeyRole::Zsk, KeyState::Active),
    ]
}

fn rec(owner: &str, rtype: &str, rdata: &str) -> StaticRecord {
    StaticRecord {
        fqdn: format!("{owner}.{ZONE}"),
        ttl: 60,
        rtype: rtype.into(),
        rdata: rdata.into(),
    }
}

const A1: &str = "127.0.0.1:1";
const A2: &str = "127.0.0.1:2";

/// `mx` (dc1: 127.0.0.1 and ::1, dc2: 127.0.0.2 only) with its TLSA beside it, a
/// wildcard, an empty non-terminal; short TTLs so a resolver's cache follows a
/// failover quickly.
fn zone_cfg(signed: Option<DnssecConfig>) -> GssConfig {
    let t = timing();
    let mut mx = dual_stack("mx");
    mx.ttl = 1;
    let mut cfg = config(
        vec![
            site("dc1", A1.parse().unwrap(), t),
            site("dc2", A2.parse().unwrap(), t),
        ],
        vec![mx],
    );
    cfg.soa.minimum = 1;
    cfg.records.extend([
        rec("_25._tcp.mx", "TLSA", TLSA_DATA),
        rec("*.wild", "TXT", "\"wild\""),
        rec("ns1", "A", "127.0.0.53"),
    ]);
    cfg.dnssec = signed;
    cfg
}

struct Switches {
    dc1: Arc<AtomicBool>,
}

async fn start_gss(cfg: &GssConfig) -> (gss::Gss, Switches, Arc<shared::events::EventLog>) {
    let dc1 = Arc::new(AtomicBool::new(true));
    let dc2 = Arc::new(AtomicBool::new(true));
    let (g, events) = start(
        cfg,
        switch_probes(vec![
            (A1.parse().unwrap(), dc1.clone()),
            (A2.parse().unwrap(), dc2),
        ]),
    )
    .await;
    (g, Switches { dc1 }, events)
}

fn z(s: &str) -> String {
    format!("{s}.{ZONE}.")
}

/// Queries whose answers must not change when the zone is signed (without DO).
fn plain_queries() -> Vec<(String, RecordType)> {
    vec![
        (z("mx"), RecordType::A),
        (z("mx"), RecordType::AAAA),
        (z("mx"), RecordType::MX),
        (z("_25._tcp.mx"), RecordType::TLSA),
        (z("_tcp.mx"), RecordType::A),
        (z("nope"), RecordType::A),
        (z("a.wild"), RecordType::TXT),
        (format!("{ZONE}."), RecordType::SOA),
        (format!("{ZONE}."), RecordType::NS),
        (format!("{ZONE}."), RecordType::MX),
        (z("txt.deep"), RecordType::TXT),
    ]
}

#[tokio::test]
async fn without_do_answers_are_byte_for_byte_an_unsigned_zones() {
    let (signed, _s1, _) = start_gss(&zone_cfg(Some(dnssec(ksk_zsk())))).await;
    let (mut plain, mut _s2, _) = start_gss(&zone_cfg(None)).await;
    // The serial is the start of the minute the answers took effect: start the
    // unsigned one again if a minute boundary fell between the two starts.
    for _ in 0..3 {
        if plain.core().snapshot().zone.serial == signed.core().snapshot().zone.serial {
            break;
        }
        plain.shutdown().await;
        (plain, _s2, _) = start_gss(&zone_cfg(None)).await;
    }
    let (a, b) = (signed.local_addr(), plain.local_addr());
    for (name, t) in plain_queries() {
        for edns in [None, Some(false)] {
            let mut q = query(&name, t);
            if let Some(d) = edns {
                q = with_edns(q, 1232, d);
            }
            let bytes = q.to_vec().unwrap();
            assert_eq!(
                udp_raw(a, &bytes).await,
                udp_raw(b, &bytes).await,
                "udp {name} {t} edns={edns:?}"
            );
            assert_eq!(
                tcp_raw(a, &bytes).await.unwrap(),
                tcp_raw(b, &bytes).await.unwrap(),
                "tcp {name} {t} edns={edns:?}"
            );
        }
    }
}

fn rrsigs(records: &[hickory_proto::rr::Record]) -> Vec<(RecordType, u16)> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::RRSIG(s)) => {
                Some((s.input().type_covered, s.input().key_tag))
            }
            _ => None,
        })
        .collect()
}

fn types(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

/// DO answers: RRSIGs by the ZSK on data, by the KSK on the key sets, NSEC proofs
/// on negatives; the UDP fast path's pre-rendered bytes equal the full path's (TCP)
/// sections; a signed answer too big for the client's size is truncated over UDP and
/// whole over TCP.
#[tokio::test]
async fn do_answers_carry_the_signatures_made_ahead() {
    let mut cfg = zone_cfg(Some(dnssec(ksk_zsk())));
    cfg.names.push(many("big", "10.9.0", 30));
    let (g, _s, _) = start_gss(&cfg).await;
    let addr = g.local_addr();
    g.core().snapshot().fill_table();
    let ask = |name: String, t: RecordType, tcp_path: bool| {
        let m = with_edns(query(&name, t), 1232, true);
        async move {
            if tcp_path {
                tcp(addr, &m).await
            } else {
                udp(addr, &m).await
            }
        }
    };
    for tcp_path in [false, true] {
        let r = ask(z("mx"), RecordType::A, tcp_path).await;
        assert!(r.edns.as_ref().unwrap().flags().dnssec_ok);
        assert_eq!(types(&r.answers), [RecordType::A, RecordType::RRSIG]);
        assert_eq!(rrsigs(&r.answers), [(RecordType::A, 33573)]);
        let r = ask(format!("{ZONE}."), RecordType::DNSKEY, tcp_path).await;
        assert_eq!(rrsigs(&r.answers), [(RecordType::DNSKEY, 17467)]);
        assert_eq!(
            types(&r.answers)
                .iter()
                .filter(|t| **t == RecordType::DNSKEY)
                .count(),
            2
        );
        let r = ask(format!("{ZONE}."), RecordType::CDS, tcp_path).await;
        assert_eq!(rrsigs(&r.answers), [(RecordType::CDS, 17467)]);
        let r = ask(z("nope"), RecordType::A, tcp_path).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(types(&r.authorities).contains(&RecordType::NSEC));
        assert!(rrsigs(&r.authorities).contains(&(RecordType::SOA, 33573)));
        assert!(rrsigs(&r.authorities).contains(&(RecordType::NSEC, 33573)));
        let r = ask(z("big"), RecordType::A, tcp_path).await;
        assert!(rrsigs(&r.answers).contains(&(RecordType::A, 33573)));
    }
    // Fast path (UDP, pre-rendered) and full path (TCP) agree section by section.
    for (name, t) in plain_queries() {
        let u = ask(name.clone(), t, false).await;
        let t2 = ask(name.clone(), t, true).await;
        assert_eq!(u.answers, t2.answers, "{name} {t}");
        assert_eq!(u.authorities, t2.authorities, "{name} {t}");
    }
    // Too big for a 512-byte client: TC over UDP, the whole signed answer over TCP.
    let m = with_edns(query(&z("big"), RecordType::A), 512, true);
    let r = udp(addr, &m).await;
    assert!(r.metadata.truncation);
    let r = tcp(addr, &m).await;
    assert_eq!(r.answers.len(), 31);
}

/// `show dnssec`: keys with tag, role and state, counts, times, and the DS for the
/// parent, which is the digest of the KSK the CDS record publishes.
#[tokio::test]
async fn show_dnssec_lists_keys_schedule_and_the_ds() {
    let keys = vec![
        key(KSK, KeyRole::Ksk, KeyState::Active),
        key(ZSK, KeyRole::Zsk, KeyState::Active),
        key(ZSK2, KeyRole::Zsk, KeyState::Published),
    ];
    let (g, _s, _) = start_gss(&zone_cfg(Some(dnssec(keys)))).await;
    let lines = gss::admin::show_dnssec(g.core());
    let text = lines.join("\n");
    assert!(
        lines[0].starts_with(&format!("zone {ZONE} signed: 3 keys, ")),
        "{text}"
    );
    assert!(text.contains("key 17467 alg 13 ksk active "), "{text}");
    assert!(text.contains("key 33573 alg 13 zsk active "), "{text}");
    assert!(text.contains("key 33435 alg 13 zsk published "), "{text}");
    assert!(
        text.contains("earliest expiry 20") && text.contains("next re-sign 20"),
        "{text}"
    );
    let ds: Vec<&String> = lines.iter().filter(|l| l.starts_with("ds ")).collect();
    assert_eq!(ds.len(), 1, "only the KSK goes to the parent: {text}");
    let r = udp(
        g.local_addr(),
        &with_edns(query(&format!("{ZONE}."), RecordType::CDS), 1232, false),
    )
    .await;
    let cds = r.answers[0].data.to_string();
    assert!(ds[0].ends_with(&cds), "{} vs CDS {cds}", ds[0]);
    assert!(ds[0].contains("17467 13 2 "), "{}", ds[0]);
    let (unsigned, _s2, _) = start_gss(&zone_cfg(None)).await;
    assert!(gss::admin::show_dnssec(unsigned.core())[0].contains("is not signed"));
}

/// With a validity of seconds, a running gss re-makes its signatures before they
/// expire, without a reload: the served expiry moves forward and stays ahead.
#[tokio::test]
async fn signatures_are_refreshed_before_expiry_on_a_running_gss() {
    let mut d = dnssec(ksk_zsk());
    d.validity = Duration::from_secs(8);
    d.refresh = Duration::from_secs(4);
    d.jitter = Duration::from_secs(1);
    let (g, _s, events) = start_gss(&zone_cfg(Some(d))).await;
    let addr = g.local_addr();
    let expiry = || async {
        let r = udp(addr, &with_edns(query(&z("mx"), RecordType::A), 1232, true)).await;
        r.answers
            .iter()
            .find_map(|r| match &r.data {
                RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s.input().sig_expiration.get()),
                _ => None,
            })
            .expect("an RRSIG")
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32
    };
    let first = expiry().await;
    let mut seen = vec![first];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 3 && tokio::time::Instant::now() < deadline {
        let e = expiry().await;
        assert!(e > now(), "a served signature expired: {e} <= {}", now());
        if e != *seen.last().unwrap() {
            seen.push(e);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(seen.len() >= 3, "two re-signs within 20s: {seen:?}");
    assert!(seen.windows(2).all(|w| w[1] > w[0]), "{seen:?}");
    let log: Vec<String> = events.last(50).iter().map(|e| e.to_string()).collect();
    assert!(log.iter().any(|l| l.contains("re-signed")), "{log:#?}");
}

// ---- real validators ------------------------------------------------------------

fn free_port() -> u16 {
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!(
            "portico-dnssec-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The KSK's DNSKEY record line, the trust anchor a parent's DS would stand for.
fn anchor_record() -> String {
    anchor_of(KSK)
}

fn anchor_of(key: &str) -> String {
    let text = std::fs::read_to_string(keys_dir().join(format!("{key}.key"))).unwrap();
    text.lines()
        .find(|l| l.contains("DNSKEY"))
        .unwrap()
        .to_string()
}

/// unbound validating with the zone's trust anchor, a stub zone to the gss.
struct Unbound {
    child: Child,
    addr: SocketAddr,
    dir: Dir,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Unbound {
    async fn start(gss: SocketAddr) -> Option<Unbound> {
        Unbound::start_with(gss, &anchor_record()).await
    }

    async fn start_with(gss: SocketAddr, anchor: &str) -> Option<Unbound> {
        let bin = find_tool("unbound", "unbound")?;
        let dir = Dir::new("unbound");
        let d = dir.0.display().to_string();
        let port = free_port();
        std::fs::write(dir.0.join("anchor.key"), format!("{anchor}\n")).unwrap();
        let conf = format!(
            "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  \
             directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"{d}/log\"\n  \
             verbosity: 1\n  val-log-level: 2\n  num-threads: 1\n  do-not-query-localhost: no\n  \
             access-control: 127.0.0.0/8 allow\n  trust-anchor-file: \"{d}/anchor.key\"\n  \
             module-config: \"validator iterator\"\n  qname-minimisation: no\n  \
             cache-max-ttl: 2\n  cache-max-negative-ttl: 1\n  prefetch: no\n  local-zone: \"test.\" nodefault\n\
             remote-control:\n  control-enable: no\n\
             stub-zone:\n  name: \"{ZONE}\"\n  stub-addr: {}@{}\n",
            gss.ip(),
            gss.port()
        );
        std::fs::write(dir.0.join("unbound.conf"), conf).unwrap();
        let child = Command::new(bin)
            .args(["-d", "-c"])
            .arg(dir.0.join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unbound starts");
        let u = Unbound {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            dir,
        };
        for _ in 0..50 {
            let q = with_edns(query(&format!("{ZONE}."), RecordType::SOA), 1232, true);
            let bytes = q.to_vec().unwrap();
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            sock.send_to(&bytes, u.addr).await.unwrap();
            let mut buf = vec![0u8; 4096];
            if tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
                .await
                .is_ok()
            {
                return Some(u);
            }
        }
        panic!("unbound did not answer within 10s; log:\n{}", u.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }

    /// Asks with RD and DO; returns the reply.
    async fn ask(&self, name: &str, t: RecordType) -> Message {
        let mut q = with_edns(query(name, t), 1232, true);
        q.metadata.recursion_desired = true;
        udp(self.addr, &q).await
    }

    /// Asserts `ad` and `rcode` for `name` `t`; returns the reply.
    async fn validated(&self, name: &str, t: RecordType, rcode: ResponseCode) -> Message {
        let r = self.ask(name, t).await;
        assert!(
            r.metadata.authentic_data && r.metadata.response_code == rcode,
            "{name} {t}: ad={} rcode={} (want {rcode}); unbound log:\n{}",
            r.metadata.authentic_data,
            r.metadata.response_code,
            self.log()
        );
        r
    }
}

/// Every answer kind the issue names validates in unbound: a site-selected name, its
/// TLSA, NXDOMAIN, NODATA (at the name and at an empty non-terminal), a wildcard.
async fn all_validate(u: &Unbound) {
    u.validated(&z("mx"), RecordType::A, ResponseCode::NoError)
        .await;
    let r = u
        .validated(&z("_25._tcp.mx"), RecordType::TLSA, ResponseCode::NoError)
        .await;
    assert!(types(&r.answers).contains(&RecordType::TLSA));
    u.validated(&z("nope"), RecordType::A, ResponseCode::NXDomain)
        .await;
    u.validated(&z("mx"), RecordType::MX, ResponseCode::NoError)
        .await;
    u.validated(&z("_tcp.mx"), RecordType::A, ResponseCode::NoError)
        .await;
    u.validated(&z("x.wild"), RecordType::TXT, ResponseCode::NoError)
        .await;
    u.validated(&z("x.wild"), RecordType::A, ResponseCode::NoError)
        .await;
}

fn first_a(m: &Message) -> Option<String> {
    m.answers.iter().find_map(|r| match &r.data {
        RData::A(a) => Some(a.0.to_string()),
        _ => None,
    })
}

/// unbound validates every answer kind; after the primary site fails, the moved
/// answer (and the AAAA NODATA the IPv4-only site gives) still validates.
#[tokio::test]
async fn unbound_validates_answers_before_and_after_a_failover() {
    let (g, s, _events) = start_gss(&zone_cfg(Some(dnssec(ksk_zsk())))).await;
    let Some(u) = Unbound::start(g.local_addr()).await else {
        return;
    };
    all_validate(&u).await;
    let r = u
        .validated(&z("mx"), RecordType::A, ResponseCode::NoError)
        .await;
    assert_eq!(first_a(&r).as_deref(), Some("127.0.0.1"));
    let r = u
        .validated(&z("mx"), RecordType::AAAA, ResponseCode::NoError)
        .await;
    assert!(types(&r.answers).contains(&RecordType::AAAA));
    s.dc1.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = u
            .validated(&z("mx"), RecordType::A, ResponseCode::NoError)
            .await;
        if first_a(&r).as_deref() == Some("127.0.0.2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the answer did not move"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // dc2 has no IPv6: a signed NODATA whose NSEC says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = u
            .validated(&z("mx"), RecordType::AAAA, ResponseCode::NoError)
            .await;
        if r.answers
            .iter()
            .all(|a| a.record_type() != RecordType::AAAA)
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "AAAA still cached");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    all_validate(&u).await;
}

/// An Ed25519 (algorithm 15) CSK alone signs everything; unbound validates it.
#[tokio::test]
async fn an_ed25519_csk_validates() {
    const CSK: &str = "Kgslb.example.test.+015+25971";
    let cfg = zone_cfg(Some(dnssec(vec![key(CSK, KeyRole::Csk, KeyState::Active)])));
    let (g, _s, _) = start_gss(&cfg).await;
    let r = udp(
        g.local_addr(),
        &with_edns(query(&z("mx"), RecordType::A), 1232, true),
    )
    .await;
    assert_eq!(rrsigs(&r.answers), [(RecordType::A, 25971)]);
    let Some(u) = Unbound::start_with(g.local_addr(), &anchor_of(CSK)).await else {
        return;
    };
    all_validate(&u).await;
}

/// A ZSK rollover by pre-publication, one reload per step (new key published, then
/// active with the old one retired, then the old one removed): unbound, keeping its
/// cache across steps, validates every answer at every step.
#[tokio::test]
async fn zsk_rollover_keeps_every_answer_validating() {
    let (g, _s, _) = start_gss(&zone_cfg(Some(dnssec(ksk_zsk())))).await;
    let Some(u) = Unbound::start(g.local_addr()).await else {
        return;
    };
    all_validate(&u).await;
    let steps = [
        vec![
            key(KSK, KeyRole::Ksk, KeyState::Active),
            key(ZSK, KeyRole::Zsk, KeyState::Active),
            key(ZSK2, KeyRole::Zsk, KeyState::Published),
        ],
        vec![
            key(KSK, KeyRole::Ksk, KeyState::Active),
            key(ZSK, KeyRole::Zsk, KeyState::Retired),
            key(ZSK2, KeyRole::Zsk, KeyState::Active),
        ],
        vec![
            key(KSK, KeyRole::Ksk, KeyState::Active),
            key(ZSK2, KeyRole::Zsk, KeyState::Active),
        ],
    ];
    for (i, keys) in steps.into_iter().enumerate() {
        let want_tag = if i == 0 { 33573 } else { 33435 };
        g.reload(&zone_cfg(Some(dnssec(keys)))).await.unwrap();
        let r = udp(
            g.local_addr(),
            &with_edns(query(&z("mx"), RecordType::A), 1232, true),
        )
        .await;
        assert_eq!(rrsigs(&r.answers), [(RecordType::A, want_tag)], "step {i}");
        all_validate(&u).await;
        // The DNSKEY set as the gss serves it validates from the anchor.
        u.validated(
            &format!("{ZONE}."),
            RecordType::DNSKEY,
            ResponseCode::NoError,
        )
        .await;
    }
}

/// `delv` (BIND's validating lookup tool) with the trust anchor validates the same
/// answers, before and after a failover.
#[tokio::test]
async fn delv_validates_answers_before_and_after_a_failover() {
    let Some(delv) = find_tool("delv", "bind9-dnsutils") else {
        return;
    };
    let (g, s, _) = start_gss(&zone_cfg(Some(dnssec(ksk_zsk())))).await;
    let dir = Dir::new("delv");
    let line = anchor_record();
    let f: Vec<&str> = line.split_whitespace().collect();
    // OWNER IN DNSKEY FLAGS PROTO ALG KEY...
    let anchor = format!(
        "trust-anchors {{ {ZONE}. static-key {} {} {} \"{}\"; }};\n",
        f[3],
        f[4],
        f[5],
        f[6..].concat()
    );
    let anchor_file = dir.0.join("anchor.conf");
    std::fs::write(&anchor_file, anchor).unwrap();
    let addr = g.local_addr();
    let run = |name: String, t: &'static str| {
        let (delv, anchor_file) = (delv.clone(), anchor_file.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                let out = Command::new(delv)
                    .arg(format!("@{}", addr.ip()))
                    .args(["-p", &addr.port().to_string(), "-a"])
                    .arg(anchor_file)
                    .arg(format!("+root={ZONE}"))
                    .args([name.as_str(), t])
                    .output()
                    .expect("delv runs");
                let text = String::from_utf8_lossy(&out.stdout).to_string()
                    + &String::from_utf8_lossy(&out.stderr);
                assert!(text.contains("fully validated"), "delv {name} {t}:\n{text}");
                text
            })
            .await
            .unwrap()
        }
    };
    let out = run(z("mx"), "A").await;
    assert!(out.contains("127.0.0.1"), "{out}");
    run(z("_25._tcp.mx"), "TLSA").await;
    let out = run(z("nope"), "A").await;
    assert!(out.contains("NXDOMAIN"), "{out}");
    let out = run(z("mx"), "MX").await;
    assert!(out.contains("NXRRSET"), "{out}");
    run(z("x.wild"), "TXT").await;
    s.dc1.store(false, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let out = run(z("mx"), "A").await;
        if out.contains("127.0.0.2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the answer did not move"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = run(z("mx"), "AAAA").await;
    assert!(out.contains("NXRRSET"), "dc2 has no IPv6: {out}");
}

async fn tcp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .ok()?;
    s.write_all(bytes).await.ok()?;
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}
