//! Active health through the lb (real probes against fake servers), drain and the
//! admin commands' output, and reload keeping state.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lb::LbOptions;
use shared::admin::Reply;
use shared::config::{MailProtocol, ProbeConfig, ProbeKind};
use shared::testing::{Behaviour, FakeKind, FakeOptions, FakeServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_goes_down_in_time_and_comes_back_after_rise() {
    let mx = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mut cfg = vip("smtp", MailProtocol::Smtp, &[("mx1", mx.addr())]);
    let mut probe = ProbeConfig::new(ProbeKind::Smtp);
    probe.timing = timing(300, 200, 2, 2);
    cfg.probe = probe.clone();
    let (lb, events) = start(&[cfg], LbOptions::default()).await;
    let state = |lb: &lb::Lb| lb.status()[0].backends[0].state.clone();
    eventually(WAIT, || state(&lb) == "up")
        .await
        .expect("first probe marks it up");
    assert!(lb.status()[0].up);

    mx.set_behaviour(Behaviour::Refuse);
    // interval × fall + timeout, with 10 % jitter and slack for a loaded 2-core box.
    let bound = probe.timing.interval.mul_f64(1.1) * probe.timing.fall + probe.timing.timeout;
    let took = eventually(bound + Duration::from_secs(2), || state(&lb) == "down")
        .await
        .expect("marked down");
    assert!(
        took >= probe.timing.interval.mul_f64(0.9),
        "needed `fall` = 2 failures, took {took:?}"
    );
    assert!(!lb.status()[0].up, "VIP down with no healthy backend");
    let line = data(admin(&lb, "show backends smtp").await).remove(0);
    assert!(line.ends_with("fail:connection refused"), "{line}");

    mx.set_behaviour(Behaviour::Good);
    let back = eventually(Duration::from_secs(5), || state(&lb) == "up")
        .await
        .expect("back up");
    assert!(
        back >= probe.timing.interval.mul_f64(0.9),
        "needed `rise` = 2 good probes, took {back:?}"
    );
    let log: Vec<String> = events
        .last(10)
        .iter()
        .map(|e| format!("{} {}", e.subject, e.message))
        .collect();
    assert!(
        log.iter().any(|l| l == "smtp/mx1 down: connection refused"),
        "{log:?}"
    );
    assert!(
        log.iter().filter(|l| l.as_str() == "smtp/mx1 up").count() >= 2,
        "{log:?}"
    );
}

async fn greeting_banner(c: &mut Client) -> String {
    let l = c.line().await;
    assert!(l.starts_with("220 "), "{l:?}");
    l.split_whitespace().nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_established_sessions_and_sends_new_ones_elsewhere() {
    let mx1 = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().banner("mx1"),
    )
    .await;
    let mx2 = FakeServer::start_with(
        FakeKind::Smtp,
        Behaviour::Good,
        FakeOptions::new().banner("mx2"),
    )
    .await;
    let cfg = vip(
        "smtp",
        MailProtocol::Smtp,
        &[("mx1", mx1.addr()), ("mx2", mx2.addr())],
    );
    let (lb, events) = start(&[cfg], scripted(Arc::new(AtomicBool::new(true)))).await;
    let a = addr(&lb, "smtp");

    let mut held = Client::connect(a).await;
    let victim = greeting_banner(&mut held).await;
    let other = if victim == "mx1" { "mx2" } else { "mx1" };
    assert_eq!(admin(&lb, &format!("drain smtp/{victim}")).await, Reply::Ok);

    for _ in 0..20 {
        let mut c = Client::connect(a).await;
        assert_eq!(
            greeting_banner(&mut c).await,
            other,
            "new sessions avoid the drained node"
        );
        c.send("QUIT\r\n").await;
        assert!(c.line().await.starts_with("221"));
    }
    // The established session still works.
    held.send("NOOP\r\n").await;
    assert!(
        held.line().await.starts_with("250"),
        "drained session continues"
    );
    let line = data(admin(&lb, "show backends smtp").await)
        .into_iter()
        .find(|l| l.starts_with(&format!("smtp/{victim} ")))
        .expect("line");
    let f: Vec<&str> = line.split(' ').collect();
    assert_eq!((f[3], f[5]), ("drain", "1"), "{line}");

    assert_eq!(
        admin(&lb, &format!("wait drained smtp/{victim} 0.3")).await,
        Reply::error("timeout")
    );
    let lb = Arc::new(lb);
    let waiter = tokio::spawn({
        let lb = lb.clone();
        let cmd = format!("wait drained smtp/{victim} 10");
        async move { admin(&lb, &cmd).await }
    });
    // The held session answers a command (the lb relays it, so the session is
    // demonstrably open and counted) and the wait must still be pending after it.
    held.send("NOOP\r\n").await;
    assert!(held.line().await.starts_with("250"));
    assert!(!waiter.is_finished(), "still one session open");
    held.send("QUIT\r\n").await;
    assert!(held.line().await.starts_with("221"));
    drop(held);
    let r = tokio::time::timeout(WAIT, waiter)
        .await
        .expect("in time")
        .expect("join");
    assert_eq!(r, Reply::Ok);
    assert!(events
        .last(20)
        .iter()
        .any(|e| e.subject == format!("smtp/{victim}") && e.message.starts_with("admin drain")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_and_their_output() {
    let mx1 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mx2 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mut cfg = vip(
        "smtp",
        MailProtocol::Smtp,
        &[("mx1", mx1.addr()), ("mx2", mx2.addr())],
    );
    cfg.probe.timing = timing(300, 100, 1, 1);
    let flag = Arc::new(AtomicBool::new(true));
    let (lb, events) = start(&[cfg], scripted(flag)).await;
    eventually(WAIT, || lb.status()[0].healthy == 2)
        .await
        .expect("probed up");
    let a = addr(&lb, "smtp");

    assert_eq!(
        data(admin(&lb, "show vips").await),
        [format!("smtp {a} tcp up 2/2 0 -")]
    );
    assert_eq!(
        data(admin(&lb, "show backends").await),
        [
            format!("smtp/mx1 {} up ready 1 0 ok", mx1.addr()),
            format!("smtp/mx2 {} up ready 1 0 ok", mx2.addr()),
        ]
    );
    assert_eq!(admin(&lb, "set weight smtp/mx2 3").await, Reply::Ok);
    assert!(
        matches!(admin(&lb, "set weight smtp/mx2 0").await, Reply::Error(e) if e.contains("at least 1"))
    );
    assert_eq!(
        admin(&lb, "drain smtp/mx7").await,
        Reply::error("no backend \"smtp/mx7\"; see show backends")
    );
    assert!(matches!(
        admin(&lb, "show backends nope").await,
        Reply::Error(_)
    ));
    assert_eq!(admin(&lb, "maint smtp/mx1").await, Reply::Ok);
    let lines = data(admin(&lb, "show backends smtp").await);
    assert_eq!(lines[0], format!("smtp/mx1 {} up maint 1 0 ok", mx1.addr()));
    assert_eq!(lines[1], format!("smtp/mx2 {} up ready 3 0 ok", mx2.addr()));
    assert_eq!(
        data(admin(&lb, "show vips").await),
        [format!("smtp {a} tcp up 1/2 0 -")]
    );
    assert_eq!(admin(&lb, "ready smtp/mx1").await, Reply::Ok);
    eventually(WAIT, || lb.status()[0].healthy == 2)
        .await
        .expect("re-probed up after ready");
    // Commands of other roles are not the lb's.
    let cmd = shared::admin::protocol::parse("show sites").expect("parse");
    assert!(lb
        .admin()
        .handle(&cmd, shared::admin::Peer { uid: None })
        .is_none());
    let msgs: Vec<String> = events
        .last(20)
        .iter()
        .map(|e| format!("{} {}", e.subject, e.message))
        .collect();
    for want in [
        "smtp/mx2 weight 1 -> 3 (admin uid 1000)",
        "smtp/mx1 admin maint (admin uid 1000)",
        "smtp/mx1 admin ready (admin uid 1000)",
    ] {
        assert!(msgs.iter().any(|m| m == want), "{want} in {msgs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_listener_and_backend_state() {
    let mx1 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mx2 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let cfg = vip("smtp", MailProtocol::Smtp, &[("mx1", mx1.addr())]);
    let (lb, _events) = start(
        std::slice::from_ref(&cfg),
        scripted(Arc::new(AtomicBool::new(true))),
    )
    .await;
    let a = addr(&lb, "smtp");
    let mut held = Client::connect(a).await;
    assert!(held.line().await.starts_with("220 "));
    assert_eq!(admin(&lb, "drain smtp/mx1").await, Reply::Ok);

    let mut bigger = cfg.clone();
    bigger.backends.push(shared::config::BackendConfig {
        name: "mx2".into(),
        address: mx2.addr(),
        weight: 1,
        backup: false,
    });
    lb.reload(&[bigger]).await.expect("reload");
    assert_eq!(addr(&lb, "smtp"), a, "listener kept");
    let b1 = lb.backend("smtp", "mx1").expect("mx1");
    assert_eq!(
        (b1.admin().as_str(), b1.active()),
        ("drain", 1),
        "state and count kept"
    );
    let mut c = Client::connect(a).await;
    assert!(c.line().await.starts_with("220 "), "new backend serves");
    held.send("NOOP\r\n").await;
    assert!(
        held.line().await.starts_with("250"),
        "established session survived the reload"
    );

    // A reload that cannot bind changes nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut broken = vip("other", MailProtocol::Smtp, &[("x", mx1.addr())]);
    broken.listen = taken.local_addr().expect("addr");
    assert!(lb.reload(&[cfg.clone(), broken]).await.is_err());
    assert_eq!(lb.status().len(), 1);
    assert_eq!(lb.status()[0].total, 2);

    // Removing the VIP closes its listener.
    lb.reload(&[]).await.expect("reload to nothing");
    eventually(WAIT, || std::net::TcpStream::connect(a).is_err())
        .await
        .expect("listener closed");
}

/// Readiness (`sd_notify` READY=1, `GET /ready`) waits for this: every probed
/// backend's first verdict, which comes after the checkers' random start spread.
#[tokio::test(start_paused = true)]
async fn first_verdicts_waits_for_every_probed_backend() {
    let flag = Arc::new(AtomicBool::new(false));
    let cfg = vip(
        "smtp",
        MailProtocol::None,
        &[
            ("a", "127.0.0.1:9".parse().expect("addr")),
            ("b", "127.0.0.1:10".parse().expect("addr")),
        ],
    );
    let (lb, _events) = start(&[cfg], scripted(flag)).await;
    let check = |name: &str| lb.backend("smtp", name).expect("backend").last_check();
    assert_eq!(check("a"), lb::LastCheck::Pending);
    let started = tokio::time::Instant::now();
    assert!(lb.first_verdicts().await, "every verdict within the bound");
    for name in ["a", "b"] {
        assert!(
            matches!(check(name), lb::LastCheck::Fail(_)),
            "{name}: {:?}",
            check(name)
        );
    }
    // The spread is at most a fifth of the 60 s interval.
    assert!(started.elapsed() <= Duration::from_secs(12) + Duration::from_millis(100));
}

/// A peer's intent, as the fleet loop hands it over (through the store's
/// `merge_in`), lands on the backend it names, with its origin in the event; what
/// the lb then reports as progress carries the entry's stamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peers_intent_applies_to_its_backend_and_shows_in_progress() {
    use shared::intent::{AdminIntent, Entry, IntentStore, Intents, Key, Timestamp, Value};
    let mx1 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mx2 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let cfg = vip(
        "smtp",
        MailProtocol::Smtp,
        &[("mx1", mx1.addr()), ("mx2", mx2.addr())],
    );
    let store = Arc::new(IntentStore::memory("lb1"));
    let options = LbOptions {
        intents: store.clone(),
        ..scripted(Arc::new(AtomicBool::new(true)))
    };
    let (lb, events) = start(&[cfg], options).await;
    let stamp = Timestamp {
        ms: 1_000,
        logical: 0,
        node: "lb2".into(),
    };
    let key = |b: &str| Key::BackendAdmin {
        vip: "smtp".into(),
        backend: b.into(),
    };
    let mut remote = Intents::new();
    for k in [key("mx1"), key("mx9")] {
        remote.insert(
            k,
            Entry {
                value: Value::Admin {
                    state: AdminIntent::Drain,
                },
                stamp: stamp.clone(),
            },
        );
    }
    let won = store
        .merge_in(&remote, |k, e| lb.apply_shared(k, e))
        .unwrap();
    assert_eq!(won, 2, "both kept, mx9 inert until a reload brings it");
    let b = lb.backend("smtp", "mx1").unwrap();
    assert_eq!(b.admin().as_str(), "drain");
    assert_eq!(lb.backend("smtp", "mx2").unwrap().admin().as_str(), "ready");
    assert!(
        events
            .last(20)
            .iter()
            .any(|e| e.subject == "smtp/mx1" && e.message == "admin drain (shared by peer lb2)"),
        "{:?}",
        events.last(20)
    );
    let progress = lb.fleet_progress();
    let of = |name: &str| {
        progress
            .iter()
            .find(|(v, b, _)| v == "smtp" && b == name)
            .map(|(_, _, a)| a.clone())
            .unwrap()
    };
    assert_eq!(of("mx1").admin, AdminIntent::Drain);
    assert_eq!(of("mx1").admin_at, Some(stamp));
    assert_eq!(of("mx2").admin_at, None);
    assert_eq!(progress.len(), 2);
    lb.shutdown().await;
}

/// A reload moves every VIP to the new config with one store: a reader (here
/// `status`, spinning on another thread while reloads flip both VIPs between one and
/// two backends) never sees one VIP on the old config and the other on the new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_is_seen_whole_by_every_reader() {
    let mx1 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let mx2 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        })
        .collect();
    let config = |two: bool| -> Vec<shared::config::VipConfig> {
        ["a", "b"]
            .iter()
            .zip(&ports)
            .map(|(name, port)| {
                let mut backends = vec![("mx1", mx1.addr())];
                if two {
                    backends.push(("mx2", mx2.addr()));
                }
                let mut v = vip(name, MailProtocol::Smtp, &backends);
                v.listen = format!("127.0.0.1:{port}").parse().expect("addr");
                v
            })
            .collect()
    };
    let (lb, _events) = start(&config(false), scripted(Arc::new(AtomicBool::new(true)))).await;
    let lb = Arc::new(lb);
    let stop = Arc::new(AtomicBool::new(false));
    let looks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = std::thread::spawn({
        let (lb, stop, looks) = (Arc::clone(&lb), Arc::clone(&stop), Arc::clone(&looks));
        move || {
            let mut mixed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let s = lb.status();
                if s.len() == 2 && s[0].total != s[1].total {
                    mixed += 1;
                }
                looks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            mixed
        }
    });
    // Reloads go on until the reader has looked often (a busy machine may not run
    // it at first), bounded in count; an even count ends on the one-backend config.
    let mut reloads = 0u32;
    while reloads < 60 || looks.load(std::sync::atomic::Ordering::Relaxed) < 1_000 {
        assert!(reloads < 200_000, "the reader never got to look");
        lb.reload(&config(reloads.is_multiple_of(2)))
            .await
            .expect("reload");
        reloads += 1;
        if reloads.is_multiple_of(2) {
            tokio::task::yield_now().await;
        }
    }
    if !reloads.is_multiple_of(2) {
        lb.reload(&config(false)).await.expect("reload");
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mixed = reader.join().expect("reader");
    let looks = looks.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(mixed, 0, "{mixed} of {looks} looks saw two configs at once");
    assert_eq!(
        lb.status().iter().map(|v| v.total).collect::<Vec<_>>(),
        [1, 1]
    );
}
