//! Operator overrides, explain, all-down, weighted split, client (CIDR/ECS) rules,
//! cold start and reload, with keepalives driven by switches the test flips.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::RecordType;
use shared::admin::{Command, Peer, Reply, SiteOverride};
use shared::config::{AllDown, ClientRule, Failback, Policy};
use shared::probe::{Probe, ProbeFuture};

const K1: &str = "127.0.0.1:1";
const K2: &str = "127.0.0.1:2";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

struct Fixture {
    gss: gss::Gss,
    dns: SocketAddr,
    dc1: Arc<AtomicBool>,
    events: Arc<shared::events::EventLog>,
}

async fn fixture(dc1_up: bool, dc2_up: bool) -> Fixture {
    let dc1 = Arc::new(AtomicBool::new(dc1_up));
    let dc2 = Arc::new(AtomicBool::new(dc2_up));
    let mut weighted = name(
        "web",
        Policy::Weighted,
        Failback::Auto(Duration::ZERO),
        AllDown::First,
    );
    weighted.weights.insert("dc1".into(), 3);
    let mut imap = name(
        "imap",
        Policy::Failover,
        Failback::Auto(Duration::ZERO),
        AllDown::First,
    );
    imap.clients = vec![ClientRule {
        networks: vec!["10.0.0.0/8".parse().unwrap()],
        sites: vec!["dc2".into(), "dc1".into()],
    }];
    let mut pop = name(
        "pop",
        Policy::Failover,
        Failback::Auto(Duration::ZERO),
        AllDown::First,
    );
    pop.clients = vec![ClientRule {
        networks: vec!["127.0.0.0/8".parse().unwrap()],
        sites: vec!["dc2".into(), "dc1".into()],
    }];
    let cfg = config(
        vec![
            site("dc1", addr(K1), timing()),
            site("dc2", addr(K2), timing()),
        ],
        vec![
            name(
                "smtp",
                Policy::Failover,
                Failback::Auto(Duration::from_secs(60)),
                AllDown::First,
            ),
            name(
                "strict",
                Policy::Failover,
                Failback::Auto(Duration::ZERO),
                AllDown::Servfail,
            ),
            weighted,
            imap,
            pop,
        ],
    );
    let (gss, events) = start(
        &cfg,
        switch_probes(vec![(addr(K1), dc1.clone()), (addr(K2), dc2)]),
    )
    .await;
    let dns = gss.local_addr();
    Fixture {
        gss,
        dns,
        dc1,
        events,
    }
}

async fn admin(g: &gss::Gss, cmd: Command) -> Reply {
    g.admin()
        .handle(&cmd, Peer { uid: Some(42) })
        .expect("gss owns the command")
        .await
}

/// A peer's override arrives as an intent entry (the fleet loop hands it over
/// after the store took it): it moves answers as a local `site down` does, is not
/// recorded again, and says where it came from.
#[tokio::test]
async fn a_peers_shared_override_moves_answers_like_a_local_one() {
    use shared::intent::{Entry, Key, SiteIntent, Timestamp, Value};
    let f = fixture(true, true).await;
    let smtp = "smtp.gslb.example.test.";
    assert_eq!(answer(f.dns, smtp).await, Some(ip("127.0.0.1")));
    let entry = |state, ms| Entry {
        value: Value::Site { state },
        stamp: Timestamp {
            ms,
            logical: 0,
            node: "gss2".into(),
        },
    };
    let dc1 = Key::Site("dc1".into());
    f.gss
        .core()
        .apply_shared(&dc1, &entry(SiteIntent::Down, 10));
    assert_eq!(answer(f.dns, smtp).await, Some(ip("127.0.0.2")));
    assert_eq!(f.gss.status()[0].override_state.as_deref(), Some("down"));
    let log: Vec<String> = f.events.last(30).iter().map(|e| e.to_string()).collect();
    assert!(
        log.iter()
            .any(|l| l.contains("dc1 override down set by operator (shared by peer gss2)")),
        "{log:#?}"
    );
    // Keys of other kinds and sites this gss does not have are ignored.
    f.gss
        .core()
        .apply_shared(&Key::Site("dc9".into()), &entry(SiteIntent::Up, 11));
    f.gss
        .core()
        .apply_shared(&Key::Vip("smtp".into()), &entry(SiteIntent::Up, 12));
    assert_eq!(f.gss.status()[0].override_state.as_deref(), Some("down"));
    f.gss
        .core()
        .apply_shared(&dc1, &entry(SiteIntent::Auto, 13));
    assert_eq!(answer(f.dns, smtp).await, Some(ip("127.0.0.1")));
    assert_eq!(f.gss.status()[0].override_state, None);
    f.gss.shutdown().await;
}

#[tokio::test]
async fn site_down_moves_answers_at_once_and_auto_releases() {
    let f = fixture(true, true).await;
    let smtp = "smtp.gslb.example.test.";
    assert_eq!(answer(f.dns, smtp).await, Some(ip("127.0.0.1")));
    assert_eq!(
        admin(&f.gss, Command::Site("dc1".into(), SiteOverride::Down)).await,
        Reply::Ok
    );
    assert_eq!(answer(f.dns, smtp).await, Some(ip("127.0.0.2")));
    let Reply::Data(lines) = admin(&f.gss, Command::ShowSites).await else {
        panic!("show sites is data")
    };
    assert_eq!(lines.len(), 2);
    let parts: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        &parts[..5],
        ["dc1", "down", "down", "1/1", "since"],
        "{}",
        lines[0]
    );
    assert!(humantime::parse_rfc3339(parts[5]).is_ok(), "{}", lines[0]);
    assert!(lines[1].starts_with("dc2 up - 1/1 since "), "{}", lines[1]);
    assert_eq!(
        f.gss.status()[0],
        shared::status::SiteStatus {
            name: "dc1".into(),
            up: false,
            override_state: Some("down".into())
        }
    );
    let Reply::Data(why) = admin(&f.gss, Command::Explain("smtp".into(), None)).await else {
        panic!("explain is data")
    };
    let text = why.join("\n");
    assert!(why[0].contains("127.0.0.2"), "{text}");
    assert!(
        text.contains("site dc1: down (health up, 1/1 keepalives passing, override down)"),
        "{text}"
    );
    assert!(text.contains("chose dc2"), "{text}");
    assert!(why.len() >= 5, "several lines: {text}");

    assert_eq!(
        admin(&f.gss, Command::Site("dc1".into(), SiteOverride::Auto)).await,
        Reply::Ok
    );
    // DR drill: `site auto` brings clients back at once, despite failback_after = 60s.
    assert_eq!(answer(f.dns, smtp).await, Some(ip("127.0.0.1")));
    let log: Vec<String> = f.events.last(30).iter().map(|e| e.to_string()).collect();
    assert!(
        log.iter()
            .any(|l| l.contains("dc1 override down set by operator (admin socket, uid 42)")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("dc1 down: operator override down")),
        "{log:#?}"
    );
    // Unknown site and foreign commands.
    assert!(matches!(
        admin(&f.gss, Command::Site("dc9".into(), SiteOverride::Down)).await,
        Reply::Error(e) if e.contains("dc9")
    ));
    assert!(f
        .gss
        .admin()
        .handle(&Command::ShowVips, Peer { uid: None })
        .is_none());
    assert!(matches!(
        admin(&f.gss, Command::Explain("nope".into(), None)).await,
        Reply::Error(_)
    ));
}

#[tokio::test]
async fn all_down_fails_open_or_servfails() {
    let f = fixture(false, false).await;
    let r = udp(f.dns, &query("smtp.gslb.example.test.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        a_records(&r),
        vec![ip("127.0.0.1")],
        "fail-open to the first site"
    );
    let r = udp(f.dns, &query("strict.gslb.example.test.", RecordType::A)).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let Reply::Data(why) = admin(
        &f.gss,
        Command::Explain("strict.gslb.example.test".into(), None),
    )
    .await
    else {
        panic!()
    };
    assert!(why[0].contains("SERVFAIL"), "{why:?}");
    // One site back: served again (dc1 comes back, rise 2 at 200ms).
    f.dc1.store(true, Ordering::SeqCst);
    let start = tokio::time::Instant::now();
    loop {
        let r = udp(f.dns, &query("strict.gslb.example.test.", RecordType::A)).await;
        if r.metadata.response_code == ResponseCode::NoError {
            assert_eq!(a_records(&r), vec![ip("127.0.0.1")]);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "strict never recovered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn weighted_split_follows_weights() {
    let f = fixture(true, true).await;
    let (mut one, mut two) = (0, 0);
    for _ in 0..400 {
        match answer(f.dns, "web.gslb.example.test.").await {
            Some(a) if a == ip("127.0.0.1") => one += 1,
            Some(a) if a == ip("127.0.0.2") => two += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    // 3:1 → 300/100; allow ±10 %.
    assert!((270..=330).contains(&one), "dc1 {one} dc2 {two}");
    assert_eq!(one + two, 400);
    // dc1 down: all to dc2.
    admin(&f.gss, Command::Site("dc1".into(), SiteOverride::Down)).await;
    for _ in 0..20 {
        assert_eq!(
            answer(f.dns, "web.gslb.example.test.").await,
            Some(ip("127.0.0.2"))
        );
    }
}

#[tokio::test]
async fn client_rules_by_source_cidr_and_ecs_with_scope() {
    let f = fixture(true, true).await;
    // Source 127.0.0.1 matches pop's 127.0.0.0/8 rule → dc2 first.
    assert_eq!(
        answer(f.dns, "pop.gslb.example.test.").await,
        Some(ip("127.0.0.2"))
    );
    // imap's rule is 10/8: loopback gets the default order.
    assert_eq!(
        answer(f.dns, "imap.gslb.example.test.").await,
        Some(ip("127.0.0.1"))
    );
    let ecs = |net: &str, src: u8| {
        with_ecs(
            with_edns(query("imap.gslb.example.test.", RecordType::A), 1232, false),
            ip(net),
            src,
        )
    };
    let scope = |r: &hickory_proto::op::Message| match r
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
    {
        Some(EdnsOption::Subnet(s)) => (s.source_prefix(), s.scope_prefix(), s.addr()),
        other => panic!("no ECS in reply: {other:?}"),
    };
    let r = udp(f.dns, &ecs("10.1.2.0", 24)).await;
    assert_eq!(
        a_records(&r),
        vec![ip("127.0.0.2")],
        "ECS inside 10/8 → dc2"
    );
    assert_eq!(scope(&r), (24, 8, ip("10.1.2.0")));
    let r = udp(f.dns, &ecs("192.0.2.0", 24)).await;
    assert_eq!(a_records(&r), vec![ip("127.0.0.1")]);
    assert_eq!(scope(&r).1, 1, "scope excludes 10/8 and nothing more");
    // ECS source /0: no client information → default order, scope 0.
    let r = udp(f.dns, &ecs("0.0.0.0", 0)).await;
    assert_eq!(a_records(&r), vec![ip("127.0.0.1")]);
    assert_eq!(scope(&r).1, 0);
    // explain with a client address.
    let Reply::Data(why) = admin(
        &f.gss,
        Command::Explain("imap".into(), Some(ip("10.9.9.9"))),
    )
    .await
    else {
        panic!()
    };
    let text = why.join("\n");
    assert!(text.contains("matches client rule #1"), "{text}");
    assert!(text.contains("10.0.0.0/8"), "{text}");
    assert!(why[0].contains("127.0.0.2"), "{text}");
}

struct Slow(Duration);
impl Probe for Slow {
    fn check(&self) -> ProbeFuture<'_> {
        let d = self.0;
        Box::pin(async move {
            tokio::time::sleep(d).await;
            Ok(())
        })
    }
}

struct Hang;
impl Probe for Hang {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn cold_start_waits_for_the_first_round_bounded_by_the_timeout() {
    let t = timing();
    let cfg = config(
        vec![site("dc1", addr(K1), t), site("dc2", addr(K2), t)],
        vec![name(
            "smtp",
            Policy::Failover,
            Failback::Manual,
            AllDown::First,
        )],
    );
    // dc1's probe takes 150ms (within the 200ms timeout), dc2's hangs.
    let probes: gss::ProbeFactory = Arc::new(|k: &shared::config::KeepaliveConfig| {
        Ok(if k.address.port() == 1 {
            Arc::new(Slow(Duration::from_millis(150))) as Arc<dyn Probe>
        } else {
            Arc::new(Hang) as Arc<dyn Probe>
        })
    });
    let started = tokio::time::Instant::now();
    let (g, events) = start(&cfg, probes).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150),
        "answered before dc1's first result: {took:?}"
    );
    assert!(
        took <= t.interval / 5 + t.timeout + Duration::from_millis(300) + Duration::from_secs(1),
        "cold start not bounded: {took:?}"
    );
    // Both known from the first round: dc1 up, dc2 down (timed out).
    let st = g.status();
    assert!(st[0].up && !st[1].up, "{st:?}");
    assert_eq!(
        answer(g.local_addr(), "smtp.gslb.example.test.").await,
        Some(ip("127.0.0.1"))
    );
    let log: Vec<String> = events.last(10).iter().map(|e| e.to_string()).collect();
    assert!(
        log.iter()
            .any(|l| l.contains("dc2 down: 0/1 keepalives passing") && l.contains("timeout")),
        "{log:#?}"
    );
}

#[tokio::test]
async fn reload_keeps_overrides_and_rerenders_names() {
    let f = fixture(true, true).await;
    admin(&f.gss, Command::Site("dc1".into(), SiteOverride::Down)).await;
    let serial_before = f.gss.core().snapshot().zone.serial;
    let tpl = f.gss.core().snapshot().zone.tpl.clone();
    let mut cfg = tpl.cfg.clone();
    cfg.names[0]
        .answers
        .insert("dc2".into(), vec![ip("127.0.0.22")]);
    f.gss.reload(&cfg).await.expect("reload");
    assert_eq!(
        answer(f.dns, "smtp.gslb.example.test.").await,
        Some(ip("127.0.0.22"))
    );
    assert_eq!(f.gss.status()[0].override_state.as_deref(), Some("down"));
    assert!(
        f.gss.core().snapshot().zone.serial > serial_before,
        "serial moves with the answers"
    );
    // A bad static record is refused and the old config keeps serving.
    let mut bad = cfg.clone();
    bad.records[0].rdata = "not an mx".into();
    assert!(f.gss.reload(&bad).await.is_err());
    assert_eq!(
        answer(f.dns, "smtp.gslb.example.test.").await,
        Some(ip("127.0.0.22"))
    );
    f.gss.shutdown().await;
}

fn current(g: &gss::Gss) -> String {
    g.core().snapshot().zone.outcomes[0].1[0].clone()
}

/// A gss whose `smtp` name (failover dc1, dc2, with `failback`) has failed over to
/// dc2 and whose dc1 has just come back (a second later, on the paused clock).
async fn failed_over_and_back(failback: Failback) -> gss::Gss {
    let dc1 = Arc::new(AtomicBool::new(true));
    let dc2 = Arc::new(AtomicBool::new(true));
    let cfg = config(
        vec![
            site("dc1", addr(K1), timing()),
            site("dc2", addr(K2), timing()),
        ],
        vec![name("smtp", Policy::Failover, failback, AllDown::First)],
    );
    let (g, _) = start(
        &cfg,
        switch_probes(vec![(addr(K1), dc1.clone()), (addr(K2), dc2)]),
    )
    .await;
    assert_eq!(current(&g), "dc1");
    dc1.store(false, Ordering::SeqCst);
    // fall 2 at 200ms (+10 % jitter) is well inside a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(current(&g), "dc2");
    dc1.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    g
}

#[tokio::test(start_paused = true)]
async fn auto_failback_on_a_paused_clock() {
    let g = failed_over_and_back(Failback::Auto(Duration::from_secs(60))).await;
    let view = g.core().snapshot().view.clone();
    let back = view.sites["dc1"].recovered_at.expect("dc1 recovered");
    assert!(view.sites["dc1"].up);
    tokio::time::sleep_until(back + Duration::from_secs(59)).await;
    assert_eq!(current(&g), "dc2", "still waiting at 59s");
    tokio::time::sleep_until(back + Duration::from_millis(60_050)).await;
    assert_eq!(current(&g), "dc1", "failed back at 60s");
    g.shutdown().await;
}

/// A probe that never answers and counts its checks in flight: one is in flight until
/// its checker has dropped it (timeout, cancellation). Once `slow` is set, dropping
/// takes a while, as for a probe tearing down a slow connection: longer than the DNS
/// server's own shutdown (UDP threads see it within 100 ms), so only a shutdown that
/// waits for the checkers sees none in flight.
struct Live {
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    slow: Arc<AtomicBool>,
}

struct InFlight(Arc<std::sync::atomic::AtomicUsize>, Arc<AtomicBool>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.1.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(300));
        }
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Probe for Live {
    fn check(&self) -> ProbeFuture<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(self.in_flight.clone(), self.slow.clone());
        Box::pin(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_every_checker_also_those_a_reload_replaced() {
    let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow = Arc::new(AtomicBool::new(false));
    let (probe_live, probe_slow) = (live.clone(), slow.clone());
    let probes: gss::ProbeFactory = Arc::new(move |_: &shared::config::KeepaliveConfig| {
        Ok(Arc::new(Live {
            in_flight: probe_live.clone(),
            slow: probe_slow.clone(),
        }) as Arc<dyn Probe>)
    });
    let cfg = config(
        vec![
            site("dc1", addr(K1), timing()),
            site("dc2", addr(K2), timing()),
        ],
        vec![name(
            "smtp",
            Policy::Failover,
            Failback::Manual,
            AllDown::First,
        )],
    );
    let (g, _) = start(&cfg, probes).await;
    slow.store(true, Ordering::SeqCst);
    // dc1's keepalive changes (its checker is replaced), dc2 is removed.
    let mut next = cfg.clone();
    next.sites.truncate(1);
    next.sites[0].keepalives[0].name = "renamed".into();
    next.names[0].sites.truncate(1);
    next.names[0].answers.remove("dc2");
    g.reload(&next).await.expect("reload");
    let snap = g.core().snapshot();
    assert_eq!(
        snap.zone.tpl.cfg.sites.len(),
        1,
        "config and view swap together"
    );
    assert!(!snap.view.sites.contains_key("dc2"));
    g.shutdown().await;
    assert_eq!(
        live.load(Ordering::SeqCst),
        0,
        "a probe is still in flight after shutdown returned"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_failback_holds_on_a_paused_clock() {
    let g = failed_over_and_back(Failback::Manual).await;
    assert!(g.core().snapshot().view.sites["dc1"].up, "dc1 is back");
    // 300 probe intervals later, still held on dc2.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(current(&g), "dc2", "manual failback holds");
    g.core()
        .set_override("dc1", SiteOverride::Auto, "test")
        .unwrap();
    assert_eq!(current(&g), "dc1", "site auto releases the hold at once");
    g.shutdown().await;
}
