//! Route health injection against a real BIRD 2 (and FRR for interop) on loopback:
//! a healthy VIP's prefix reaches the router with our next hop and communities, is
//! withdrawn when the VIP's backends die, by `withdraw VIP`, and on SIGTERM before the
//! listener closes; anycast prepends lose to a plain path until it goes; a router
//! restart or a router speaking garbage costs a reconnect, never the process.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::router::{Bird, BirdPeer, ROUTER_AS};
use common::{echo_roundtrip, listen_port, poll, Portico, TempDir};

const PREFIX: &str = "198.51.100.10/32";

/// Probe timing of every test VIP: down after 2 failed 200 ms rounds.
const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);
const FALL: u32 = 2;

/// A TCP echo backend on a fixed loopback port that can be killed (listener and
/// sessions gone: the probe is refused) and brought back on the same port.
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start() -> Backend {
        let port = listen_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut b = Backend {
            addr,
            stop: Arc::new(AtomicBool::new(true)),
        };
        b.revive();
        b
    }

    fn revive(&mut self) {
        use std::io::{Read, Write};
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket.set_reuse_address(true).expect("reuseaddr");
        socket.bind(&self.addr.into()).expect("bind backend");
        socket.listen(128).expect("listen");
        let listener: TcpListener = socket.into();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        self.stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
    }

    fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // The accept loop sees the flag within 5 ms and drops the listener.
        let gone = poll(Duration::from_secs(2), || {
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(100))
                .is_err()
                .then_some(())
        });
        assert!(gone.is_some(), "backend {} still accepts", self.addr);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One replica's config: a VIP on `listen` announcing PREFIX with `announce_extra`,
/// a BGP session from `source` (127.0.0.N) to BIRD.
struct Replica<'a> {
    source: &'a str,
    asn: u32,
    listen: SocketAddr,
    backends: &'a [&'a Backend],
    announce_extra: &'a str,
    neighbor_extra: &'a str,
    bird_port: u16,
    grace: &'a str,
    /// `/metrics` and `/status`.
    http: SocketAddr,
}

impl Replica<'_> {
    fn config(&self, dir: &TempDir) -> String {
        let backends: Vec<String> = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{{ name = \"mx{}\", address = \"{}\" }}", i + 1, b.addr))
            .collect();
        format!(
            r#"drain_timeout = "5s"
[admin]
socket = "{sock}"

[http]
listen = "{http}"

[bgp]
local_as = {asn}
router_id = "{source}"
withdraw_grace = "{grace}"

[[bgp.neighbor]]
address = "127.0.0.1"
port = {port}
remote_as = {router_as}
local_address = "{source}"
hold_time = "9s"
{neighbor_extra}

[[vip]]
name = "smtp"
listen = "{listen}"
backends = [ {backends} ]
probe = {{ kind = "tcp", interval = "{interval}ms", timeout = "{timeout}ms", rise = 1, fall = {fall} }}
announce = {{ prefixes = ["{PREFIX}"], communities = ["65010:100", "65010:200"]{announce_extra} }}
"#,
            sock = dir.path("admin.sock").display(),
            http = self.http,
            asn = self.asn,
            source = self.source,
            grace = self.grace,
            port = self.bird_port,
            router_as = ROUTER_AS,
            neighbor_extra = self.neighbor_extra,
            listen = self.listen,
            backends = backends.join(", "),
            interval = INTERVAL.as_millis(),
            timeout = TIMEOUT.as_millis(),
            fall = FALL,
            announce_extra = self.announce_extra,
        )
    }

    fn start(&self, dir: &TempDir) -> Portico {
        Portico::start(dir, &self.config(dir))
    }
}

fn replica<'a>(bird: &Bird, source: &'a str, backends: &'a [&'a Backend]) -> Replica<'a> {
    Replica {
        source,
        asn: 65010,
        listen: format!("{source}:{}", listen_port()).parse().unwrap(),
        backends,
        announce_extra: "",
        neighbor_extra: "",
        bird_port: bird.port,
        grace: "1s",
        http: format!("127.0.0.1:{}", listen_port()).parse().unwrap(),
    }
}

/// Waits (bounded) until BIRD holds `n` paths for PREFIX; returns them.
fn wait_paths(bird: &Bird, n: usize, limit: Duration) -> Vec<common::router::Path> {
    let got = poll(limit, || {
        let p = bird.paths(PREFIX);
        (p.len() == n).then_some(p)
    });
    got.unwrap_or_else(|| {
        panic!(
            "expected {n} path(s) for {PREFIX}, BIRD has:\n{}\nlog:\n{}",
            bird.route(PREFIX),
            bird.log_text()
        )
    })
}

/// (1) A healthy VIP's prefix is in BIRD's table with our next hop, AS path and
/// communities; `show bgp` and `show vips` say so.
#[test]
fn healthy_vip_prefix_reaches_the_router_with_next_hop_and_communities() {
    let dir = TempDir::new("bgp-announce");
    let Some(bird) = Bird::start(&dir, &[BirdPeer::new("r1", "127.0.0.2", 65010)]) else {
        return;
    };
    let mx = Backend::start();
    let pool = [&mx];
    let r = replica(&bird, "127.0.0.2", &pool);
    let portico = r.start(&dir);
    let paths = wait_paths(&bird, 1, Duration::from_secs(15));
    let p = &paths[0];
    assert_eq!(p.protocol(), "r1", "{p:?}");
    assert_eq!(p.attr("BGP.next_hop"), Some("127.0.0.2"), "{p:?}");
    assert_eq!(p.attr("BGP.as_path"), Some("65010"), "{p:?}");
    assert_eq!(p.attr("BGP.origin"), Some("IGP"), "{p:?}");
    assert_eq!(
        p.attr("BGP.community"),
        Some("(65010,100) (65010,200)"),
        "{p:?}"
    );
    let bgp = portico.ctl("show bgp");
    assert!(
        bgp.lines().any(|l| l.starts_with(&format!(
            "neighbor 127.0.0.1:{} as 65000 established",
            bird.port
        ))),
        "{bgp}"
    );
    assert!(
        bgp.lines()
            .any(|l| l.starts_with(&format!("prefix {PREFIX} vip smtp announced vip up"))),
        "{bgp}"
    );
    assert!(portico.ctl("show vips").trim_end().ends_with(" announced"));
    assert!(portico
        .ctl("show events 100")
        .contains(&format!("prefix {PREFIX} announced")));
    let (code, metrics) = common::http_get(r.http, "/metrics").unwrap();
    assert_eq!(code, 200);
    let neighbor = format!("127.0.0.1:{}", bird.port);
    for want in [
        format!("portico_bgp_session_up{{neighbor=\"{neighbor}\"}} 1"),
        format!("portico_bgp_prefix_announced{{vip=\"smtp\",prefix=\"{PREFIX}\"}} 1"),
        format!("portico_bgp_updates_sent_total{{neighbor=\"{neighbor}\"}} 1"),
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "{want} not in:\n{metrics}"
        );
    }
}

/// (2) All backends killed: withdrawn within the probe's detection time plus 1 s;
/// backends back: announced again.
#[test]
fn dead_backends_withdraw_the_prefix_and_revived_ones_announce_it() {
    let dir = TempDir::new("bgp-health");
    let Some(bird) = Bird::start(&dir, &[BirdPeer::new("r1", "127.0.0.2", 65010)]) else {
        return;
    };
    let mut a = Backend::start();
    let mut b = Backend::start();
    let portico = replica(&bird, "127.0.0.2", &[&a, &b]).start(&dir);
    wait_paths(&bird, 1, Duration::from_secs(15));

    a.kill();
    b.kill();
    let killed = Instant::now();
    wait_paths(&bird, 0, Duration::from_secs(10));
    let took = killed.elapsed();
    // A backend is down after FALL failed rounds, each at most an interval apart and
    // a timeout long.
    let detection = INTERVAL * FALL + TIMEOUT;
    eprintln!("withdrawn {took:?} after the last backend died (detection {detection:?})");
    assert!(
        took <= detection + Duration::from_secs(1),
        "withdrawn after {took:?}, more than detection {detection:?} + 1 s"
    );
    let bgp = portico.ctl("show bgp");
    assert!(
        bgp.contains(&format!(
            "prefix {PREFIX} vip smtp withdrawn vip down: 0 healthy"
        )),
        "{bgp}"
    );
    assert!(portico.ctl("show vips").trim_end().ends_with(" withdrawn"));

    a.revive();
    b.revive();
    let paths = wait_paths(&bird, 1, Duration::from_secs(10));
    assert_eq!(paths[0].attr("BGP.next_hop"), Some("127.0.0.2"));
    let events = portico.ctl("show events 100");
    assert!(
        events.contains(&format!("prefix {PREFIX} withdrawn (vip down")),
        "{events}"
    );
}

/// (3) `withdraw VIP` takes this replica out of the router's table, `announce VIP`
/// brings it back; `show bgp` says why.
#[test]
fn admin_withdraw_and_announce_move_the_route() {
    let dir = TempDir::new("bgp-admin");
    let Some(bird) = Bird::start(&dir, &[BirdPeer::new("r1", "127.0.0.2", 65010)]) else {
        return;
    };
    let mx = Backend::start();
    let portico = replica(&bird, "127.0.0.2", &[&mx]).start(&dir);
    wait_paths(&bird, 1, Duration::from_secs(15));

    assert_eq!(portico.ctl("withdraw smtp").trim(), "ok");
    wait_paths(&bird, 0, Duration::from_secs(5));
    let bgp = portico.ctl("show bgp");
    assert!(
        bgp.contains(&format!(
            "prefix {PREFIX} vip smtp withdrawn withdrawn by admin"
        )),
        "{bgp}"
    );
    let (ok, out) = portico.ctl_raw(&["withdraw", "nosuch"]).unwrap();
    assert!(!ok && out.contains("no vip"), "{out}");

    assert_eq!(portico.ctl("announce smtp").trim(), "ok");
    wait_paths(&bird, 1, Duration::from_secs(5));
    let bgp = portico.ctl("show bgp");
    assert!(
        bgp.contains(&format!("prefix {PREFIX} vip smtp announced vip up")),
        "{bgp}"
    );
    let events = portico.ctl("show events 100");
    assert!(events.contains("vip smtp withdraw by admin"), "{events}");
    assert!(
        events.contains(&format!("prefix {PREFIX} withdrawn (withdrawn by admin)")),
        "{events}"
    );
}

/// Where clients go: a thread that follows BIRD's paths for PREFIX (what a router
/// programs into its forwarding table) and hands out their next hops in turn, as
/// ECMP spreads flows.
struct Forwarding {
    hops: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Forwarding {
    fn follow(bird: &Bird) -> Forwarding {
        let hops = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (Arc::clone(&hops), Arc::clone(&stop));
        let ctl = bird.ctl.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let out = std::process::Command::new("birdc")
                    .arg("-s")
                    .arg(&ctl)
                    .args(["show", "route", "for", PREFIX, "all"])
                    .output();
                if let Ok(out) = out {
                    let text = String::from_utf8_lossy(&out.stdout);
                    let now: Vec<String> = text
                        .lines()
                        .filter_map(|l| l.trim().strip_prefix("BGP.next_hop: "))
                        .map(str::to_string)
                        .collect();
                    *h.lock().unwrap() = now;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Forwarding { hops, stop }
    }

    fn hops(&self) -> Vec<String> {
        self.hops.lock().unwrap().clone()
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// (4) Two replicas announce one VIP: BIRD holds both paths. SIGTERM one under a
/// client connection loop that follows the router's table: its path goes before its
/// listener closes, and no client connection fails.
#[test]
fn sigterm_withdraws_before_the_listener_closes_and_costs_no_connection() {
    let dir1 = TempDir::new("bgp-ecmp-1");
    let dir2 = TempDir::new("bgp-ecmp-2");
    let Some(bird) = Bird::start(
        &dir1,
        &[
            BirdPeer::new("r1", "127.0.0.2", 65010),
            BirdPeer::new("r2", "127.0.0.3", 65010),
        ],
    ) else {
        return;
    };
    let mx = Backend::start();
    let port = listen_port();
    let pool = [&mx];
    let mut r1 = replica(&bird, "127.0.0.2", &pool);
    r1.listen = format!("127.0.0.2:{port}").parse().unwrap();
    r1.neighbor_extra = "next_hop = \"203.0.113.2\"";
    let mut r2 = replica(&bird, "127.0.0.3", &pool);
    r2.listen = format!("127.0.0.3:{port}").parse().unwrap();
    r2.neighbor_extra = "next_hop = \"203.0.113.3\"";
    let mut p1 = r1.start(&dir1);
    let _p2 = r2.start(&dir2);
    let paths = wait_paths(&bird, 2, Duration::from_secs(15));
    let mut hops: Vec<_> = paths
        .iter()
        .filter_map(|p| p.attr("BGP.next_hop"))
        .collect();
    hops.sort();
    assert_eq!(hops, ["203.0.113.2", "203.0.113.3"]);

    let fwd = Forwarding::follow(&bird);
    assert!(poll(Duration::from_secs(5), || (fwd.hops().len() == 2)
        .then_some(()))
    .is_some());
    let done = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let ok = Arc::new(AtomicUsize::new(0));
    let client = {
        let (done, failures, ok) = (Arc::clone(&done), Arc::clone(&failures), Arc::clone(&ok));
        let hops = Arc::clone(&fwd.hops);
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0usize;
            // Bounded: 3000 connections or 30 s, whichever first.
            while !done.load(Ordering::SeqCst)
                && i < 3000
                && started.elapsed() < Duration::from_secs(30)
            {
                let now = hops.lock().unwrap().clone();
                if now.is_empty() {
                    failures.lock().unwrap().push(format!("#{i}: no route"));
                    std::thread::sleep(Duration::from_millis(5));
                    i += 1;
                    continue;
                }
                let hop = &now[i % now.len()];
                // Next hop 203.0.113.N is replica N's 127.0.0.N.
                let host = hop.replace("203.0.113.", "127.0.0.");
                let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(mut s) => {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        if echo_roundtrip(&mut s, b"HELO\r\n") {
                            ok.fetch_add(1, Ordering::SeqCst);
                        } else {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("#{i} via {hop}: no echo"));
                        }
                    }
                    Err(e) => failures
                        .lock()
                        .unwrap()
                        .push(format!("#{i} via {hop}: {e}")),
                }
                i += 1;
            }
        })
    };
    // Let traffic flow through both, then stop replica 1.
    assert!(
        poll(Duration::from_secs(10), || (ok.load(Ordering::SeqCst) > 50)
            .then_some(()))
        .is_some()
    );
    p1.signal(libc::SIGTERM);
    let termed = Instant::now();
    // Its path goes while its listener still accepts (withdraw_grace is 1 s).
    wait_paths(&bird, 1, Duration::from_secs(3));
    let withdrawn_at = termed.elapsed();
    assert!(
        TcpStream::connect_timeout(&r1.listen, Duration::from_secs(1)).is_ok(),
        "replica 1's listener closed before or with its withdrawal ({withdrawn_at:?})"
    );
    let status = p1
        .wait_exit(Duration::from_secs(15))
        .expect("replica 1 exits");
    assert!(status.success(), "{status}");
    let before = ok.load(Ordering::SeqCst);
    assert!(poll(Duration::from_secs(10), || (ok.load(Ordering::SeqCst)
        > before + 50)
        .then_some(()))
    .is_some());
    done.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let failures = failures.lock().unwrap();
    eprintln!(
        "withdrawn {withdrawn_at:?} after SIGTERM; {} connections, {} failed",
        ok.load(Ordering::SeqCst),
        failures.len()
    );
    assert!(failures.is_empty(), "failed connections: {failures:?}");
    let log = std::fs::read_to_string(dir1.path("portico.log")).unwrap_or_default();
    assert!(
        log.contains("routes withdrawn, waiting withdraw_grace"),
        "{log}"
    );
}

/// (5) Anycast: dc1 announces plainly, dc2 with its AS prepended twice; BIRD prefers
/// dc1; dc1's backends die; dc2's path is the best, with no DNS involved. Next hops
/// are set per neighbor so BIRD resolves them (see tests/common/router.rs).
#[test]
fn anycast_backup_site_takes_over_when_the_primary_withdraws() {
    let dir1 = TempDir::new("bgp-dc1");
    let dir2 = TempDir::new("bgp-dc2");
    let Some(bird) = Bird::start(
        &dir1,
        &[
            BirdPeer::new("dc1", "127.0.0.2", 65011),
            BirdPeer::new("dc2", "127.0.0.3", 65012),
        ],
    ) else {
        return;
    };
    let mx1 = Backend::start();
    let mx2 = Backend::start();
    let (pool1, pool2) = ([&mx1], [&mx2]);
    let mut dc1 = replica(&bird, "127.0.0.2", &pool1);
    dc1.asn = 65011;
    dc1.neighbor_extra = "next_hop = \"203.0.113.2\"";
    let mut dc2 = replica(&bird, "127.0.0.3", &pool2);
    dc2.asn = 65012;
    dc2.neighbor_extra = "next_hop = \"203.0.113.3\"";
    dc2.announce_extra = ", as_path_prepend = 2";
    let _p1 = dc1.start(&dir1);
    let _p2 = dc2.start(&dir2);
    let paths = wait_paths(&bird, 2, Duration::from_secs(15));
    let best: Vec<_> = paths.iter().filter(|p| p.best()).collect();
    assert_eq!(best.len(), 1, "{paths:?}");
    assert_eq!(best[0].protocol(), "dc1", "{paths:?}");
    let dc2_path = paths.iter().find(|p| p.protocol() == "dc2").unwrap();
    assert_eq!(dc2_path.attr("BGP.as_path"), Some("65012 65012 65012"));

    mx1.kill();
    let paths = wait_paths(&bird, 1, Duration::from_secs(10));
    assert_eq!(paths[0].protocol(), "dc2");
    assert!(paths[0].best(), "{paths:?}");
    assert_eq!(paths[0].attr("BGP.next_hop"), Some("203.0.113.3"));
}

/// (6a) The router restarts: Portico reconnects and announces again.
#[test]
fn router_restart_reconnects_and_reannounces() {
    let dir = TempDir::new("bgp-restart");
    let Some(mut bird) = Bird::start(&dir, &[BirdPeer::new("r1", "127.0.0.2", 65010)]) else {
        return;
    };
    let mx = Backend::start();
    let portico = replica(&bird, "127.0.0.2", &[&mx]).start(&dir);
    wait_paths(&bird, 1, Duration::from_secs(15));
    bird.restart();
    // Portico sees the connection close at once and retries after 1 s of backoff
    // (jittered, at most 1.25 s), then 2 s: well within 15 s.
    wait_paths(&bird, 1, Duration::from_secs(15));
    let bgp = portico.ctl("show bgp");
    assert!(bgp.contains("established"), "{bgp}");
    assert!(
        bgp.contains("last_error connection closed by the router")
            || bgp.contains("last_error read:"),
        "{bgp}"
    );
}

/// (6b) A "router" that answers the OPEN with garbage, then with a NOTIFICATION:
/// each time the session resets and is retried after a backoff; the process and its
/// VIP stay up.
#[test]
fn a_router_sending_garbage_or_notification_resets_the_session_only() {
    use std::io::{Read, Write};
    let dir = TempDir::new("bgp-garbage");
    let port = listen_port();
    let fake = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mx = Backend::start();
    let listen: SocketAddr = format!("127.0.0.2:{}", listen_port()).parse().unwrap();
    let r = Replica {
        source: "127.0.0.2",
        asn: 65010,
        listen,
        backends: &[&mx],
        announce_extra: "",
        neighbor_extra: "",
        bird_port: port,
        grace: "1s",
        http: format!("127.0.0.1:{}", listen_port()).parse().unwrap(),
    };
    let portico = r.start(&dir);
    let mut accepted = Vec::new();
    fake.set_nonblocking(false).unwrap();
    for round in 0..3 {
        let (mut s, _) = fake.accept().unwrap();
        accepted.push(Instant::now());
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut open = [0u8; 19];
        s.read_exact(&mut open).unwrap();
        assert_eq!(open[18], 1, "the first message is an OPEN");
        let reply: Vec<u8> = match round {
            0 => b"this is not BGP at all, just some garbage".to_vec(),
            1 => {
                // NOTIFICATION 6/4 (Cease, connection rejected).
                let mut m = vec![0xff; 16];
                m.extend_from_slice(&[0, 21, 3, 6, 4]);
                m
            }
            _ => Vec::new(),
        };
        let _ = s.write_all(&reply);
        if round == 1 {
            let told = poll(Duration::from_secs(5), || {
                portico
                    .ctl("show bgp")
                    .contains("last_error router sent NOTIFICATION 6/4")
                    .then_some(())
            });
            assert!(told.is_some(), "{}", portico.ctl("show bgp"));
        }
        if round == 0 {
            // We are told why: a NOTIFICATION 1/1 (connection not synchronized).
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            let notification = rest.windows(5).any(|w| w == [0, 21, 3, 1, 1]);
            assert!(notification, "expected a NOTIFICATION 1/1 in {rest:02x?}");
        }
    }
    let gap1 = accepted[1] - accepted[0];
    let gap2 = accepted[2] - accepted[1];
    eprintln!("reconnects after {gap1:?}, {gap2:?}");
    assert!(
        gap1 >= Duration::from_millis(700),
        "backoff after garbage: {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1400),
        "backoff doubles: {gap2:?}"
    );
    assert!(TcpStream::connect_timeout(&listen, Duration::from_secs(1)).is_ok());
    assert!(portico.ctl("show vips").starts_with("smtp "));
}

/// (7) FRR interop: bgpd establishes the session and receives the prefix with our
/// AS path and communities.
#[test]
fn frr_establishes_and_receives_the_prefix() {
    let dir = TempDir::new("bgp-frr");
    let Some(frr) = common::router::Frr::start(&dir, &[("127.0.0.2", 65010)]) else {
        return;
    };
    let mx = Backend::start();
    let r = Replica {
        source: "127.0.0.2",
        asn: 65010,
        listen: format!("127.0.0.2:{}", listen_port()).parse().unwrap(),
        backends: &[&mx],
        announce_extra: "",
        // FRR refuses a 127.0.0.0/8 next hop as martian (NOTIFICATION 3/8).
        neighbor_extra: "next_hop = \"203.0.113.2\"",
        bird_port: frr.port,
        grace: "1s",
        http: format!("127.0.0.1:{}", listen_port()).parse().unwrap(),
    };
    let portico = r.start(&dir);
    let established = poll(Duration::from_secs(15), || {
        frr.vtysh("show bgp neighbors 127.0.0.2")
            .filter(|s| s.contains("BGP state = Established"))
    });
    assert!(
        established.is_some(),
        "{:?}\n{}\n{}",
        frr.vtysh("show bgp neighbors 127.0.0.2"),
        portico.ctl("show bgp"),
        frr.log_text()
    );
    let route = poll(Duration::from_secs(10), || {
        frr.vtysh(&format!("show bgp ipv4 unicast {PREFIX}"))
            .filter(|s| s.contains("Paths: (1 available"))
    })
    .unwrap_or_else(|| panic!("{:?}", frr.vtysh("show bgp ipv4 unicast")));
    assert!(route.contains("65010"), "{route}");
    assert!(route.contains("203.0.113.2"), "{route}");
    assert!(route.contains("Community: 65010:100 65010:200"), "{route}");
    assert!(portico.ctl("show bgp").contains("established"));
}

/// (8) TCP MD5 (RFC 2385): with the router's password the session comes up and the
/// prefix arrives; with a wrong one the kernel drops every segment and it never does.
/// Skipped when this kernel has no TCP_MD5SIG.
#[test]
fn md5_signed_session_with_bird() {
    let dir = TempDir::new("bgp-md5");
    let mut peer = BirdPeer::new("r1", "127.0.0.2", 65010);
    peer.password = Some("s3cret-rhi".into());
    let mut wrong = BirdPeer::new("r2", "127.0.0.3", 65010);
    wrong.password = Some("s3cret-rhi".into());
    let Some(bird) = Bird::start(&dir, &[peer, wrong]) else {
        return;
    };
    let mx = Backend::start();
    let mut good = replica(&bird, "127.0.0.2", &[]);
    let pool = [&mx];
    good.backends = &pool;
    good.neighbor_extra = "password = \"s3cret-rhi\"";
    let p = good.start(&dir);
    let up = poll(Duration::from_secs(15), || {
        let bgp = p.ctl("show bgp");
        (bgp.contains("established") || bgp.contains("Protocol not available")).then_some(bgp)
    })
    .unwrap_or_else(|| panic!("{}\n{}", p.ctl("show bgp"), bird.protocol("r1")));
    if up.contains("Protocol not available") {
        assert!(
            std::env::var("CI").map_or(true, |v| v.is_empty() || v == "false"),
            "TCP MD5 is not available in this kernel: {up}"
        );
        eprintln!("skipping: this kernel has no TCP_MD5SIG: {up}");
        return;
    }
    let paths = wait_paths(&bird, 1, Duration::from_secs(10));
    assert_eq!(paths[0].protocol(), "r1");

    let dir2 = TempDir::new("bgp-md5-wrong");
    let mut bad = replica(&bird, "127.0.0.3", &pool);
    bad.neighbor_extra = "password = \"not-the-key\"";
    let p2 = bad.start(&dir2);
    // The kernel drops the unsigned-to-it SYNs: the first attempt ends in a connect
    // timeout, and nothing was ever established.
    let failed = poll(Duration::from_secs(12), || {
        let bgp = p2.ctl("show bgp");
        bgp.contains("last_error connect").then_some(bgp)
    })
    .unwrap_or_else(|| panic!("{}", p2.ctl("show bgp")));
    assert!(!failed.contains("established"), "{failed}");
    assert!(!p2.ctl("show events 100").contains("session established"));
    assert_eq!(bird.paths(PREFIX).len(), 1, "{}", bird.route(PREFIX));
}

/// The `Since` column of `show protocols NAME`: changes whenever the session resets.
fn since(bird: &Bird, name: &str) -> String {
    let text = bird.protocol(name);
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("{text}"));
    line.split_whitespace()
        .take(6)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A reload adds a neighbor, changes a VIP's communities and removes the other
/// neighbor: the unchanged session is never reset, the changed route is re-sent on
/// it, the removed router gets a Cease.
#[test]
fn reload_changes_neighbors_and_routes_without_dropping_unchanged_sessions() {
    let dir = TempDir::new("bgp-reload");
    let dir_a = TempDir::new("bgp-reload-a");
    let dir_b = TempDir::new("bgp-reload-b");
    let Some(a) = Bird::start(&dir_a, &[BirdPeer::new("r1", "127.0.0.2", 65010)]) else {
        return;
    };
    let Some(b) = Bird::start(&dir_b, &[BirdPeer::new("r1", "127.0.0.2", 65010)]) else {
        return;
    };
    let mx = Backend::start();
    let pool = [&mx];
    let mut r = replica(&a, "127.0.0.2", &pool);
    let portico = r.start(&dir);
    wait_paths(&a, 1, Duration::from_secs(15));
    let a_since = since(&a, "r1");

    // Add router B.
    let second = format!(
        "[[bgp.neighbor]]\naddress = \"127.0.0.1\"\nport = {}\nremote_as = {ROUTER_AS}\nlocal_address = \"127.0.0.2\"\n",
        b.port
    );
    r.neighbor_extra = "";
    let with_b = r
        .config(&dir)
        .replace("\n[[vip]]", &format!("{second}\n[[vip]]"));
    std::fs::write(&portico.config, &with_b).unwrap();
    assert_eq!(portico.ctl("reload").trim(), "ok");
    wait_paths(&b, 1, Duration::from_secs(15));

    // Change the VIP's communities: re-sent to both, no reset.
    let changed = with_b.replace("\"65010:200\"", "\"65010:300\"");
    std::fs::write(&portico.config, &changed).unwrap();
    assert_eq!(portico.ctl("reload").trim(), "ok");
    for bird in [&a, &b] {
        let ok = poll(Duration::from_secs(5), || {
            let p = bird.paths(PREFIX);
            (p.len() == 1 && p[0].attr("BGP.community") == Some("(65010,100) (65010,300)"))
                .then_some(())
        });
        assert!(ok.is_some(), "{}", bird.route(PREFIX));
    }
    assert_eq!(since(&a, "r1"), a_since, "router A's session was reset");

    // Remove router A: it is told (Cease) and drops our route; B keeps it.
    let b_since = since(&b, "r1");
    let mut only_b = replica(&b, "127.0.0.2", &pool);
    only_b.listen = r.listen;
    let without_a = only_b
        .config(&dir)
        .replace("\"65010:200\"", "\"65010:300\"");
    std::fs::write(&portico.config, &without_a).unwrap();
    assert_eq!(portico.ctl("reload").trim(), "ok");
    wait_paths(&a, 0, Duration::from_secs(5));
    assert_eq!(b.paths(PREFIX).len(), 1);
    assert_eq!(since(&b, "r1"), b_since, "router B's session was reset");
    let bgp = portico.ctl("show bgp");
    assert!(!bgp.contains(&format!(":{} ", a.port)), "{bgp}");
    assert!(
        a.log_text().contains("Administrative shutdown")
            || a.protocol("r1").contains("Administrative shutdown"),
        "{}\n{}",
        a.protocol("r1"),
        a.log_text()
    );
}

/// The router-side examples in config/ are valid for the routers they are for.
#[test]
fn router_examples_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    if let Some(bird) = common::tool("bird") {
        let out = std::process::Command::new(bird)
            .arg("-p")
            .arg("-c")
            .arg(root.join("bird-rhi.conf"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let bgpd = ["/usr/lib/frr/bgpd", "/usr/sbin/bgpd"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| common::tool("bgpd"));
    if let Some(bgpd) = bgpd {
        let dir = TempDir::new("frr-check");
        let out = std::process::Command::new(bgpd)
            .arg("-C")
            .arg("-f")
            .arg(root.join("frr-rhi.conf"))
            .args(["-Z", "-S", "-n", "-p", "0", "--vty_socket"])
            .arg(&dir.0)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // bgpd -C exits 0 even on a bad line; it names the line instead.
        assert!(
            out.status.success() && !text.contains("No such command") && !text.contains("rror"),
            "{text}"
        );
    }
}

/// An IPv6 VIP prefix goes in MP_REACH_NLRI over the IPv4 session, with the VIP's
/// IPv6 next hop, and is withdrawn with MP_UNREACH_NLRI; the VIP's IPv4 prefix keeps
/// the session's address as its next hop.
#[test]
fn ipv6_prefix_is_announced_and_withdrawn_over_multiprotocol_bgp() {
    let dir = TempDir::new("bgp-v6");
    let Some(bird) = Bird::start(&dir, &[BirdPeer::new("r1", "127.0.0.2", 65010)]) else {
        return;
    };
    let mx = Backend::start();
    let pool = [&mx];
    let r = replica(&bird, "127.0.0.2", &pool);
    let v6 = "2001:db8::10/128";
    let config = r.config(&dir).replace(
        &format!("prefixes = [\"{PREFIX}\"]"),
        &format!("prefixes = [\"{PREFIX}\", \"{v6}\"], next_hop = \"2001:db8::2\""),
    );
    let portico = Portico::start(&dir, &config);
    // The VIP's next hop is for its v6 prefix; the v4 one keeps the session's address.
    let v4 = wait_paths(&bird, 1, Duration::from_secs(15));
    assert_eq!(v4[0].attr("BGP.next_hop"), Some("127.0.0.2"), "{v4:?}");
    let route = poll(Duration::from_secs(15), || {
        let p = bird.paths(v6);
        (p.len() == 1).then(|| p[0].clone())
    })
    .unwrap_or_else(|| panic!("{}\n{}", bird.route(v6), portico.ctl("show bgp")));
    assert_eq!(route.attr("BGP.next_hop"), Some("2001:db8::2"), "{route:?}");
    assert_eq!(route.attr("BGP.community"), Some("(65010,100) (65010,200)"));
    assert_eq!(portico.ctl("withdraw smtp").trim(), "ok");
    let gone = poll(Duration::from_secs(5), || {
        bird.paths(v6).is_empty().then_some(())
    });
    assert!(gone.is_some(), "{}", bird.route(v6));
}

/// Reads one BGP message (header and body) from a fake router's socket.
fn read_message(s: &mut TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut head = [0u8; 19];
    s.read_exact(&mut head).unwrap();
    let len = usize::from(u16::from_be_bytes([head[16], head[17]]));
    let mut msg = head.to_vec();
    msg.resize(len, 0);
    s.read_exact(&mut msg[19..]).unwrap();
    msg
}

/// A router whose OPEN and KEEPALIVE arrive in one segment still gets our KEEPALIVE
/// before any UPDATE: a router in OpenConfirm resets on an UPDATE (FRR does).
#[test]
fn keepalive_goes_before_the_first_update() {
    use std::io::Write;
    let dir = TempDir::new("bgp-order");
    let port = listen_port();
    let fake = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mx = Backend::start();
    let r = Replica {
        source: "127.0.0.2",
        asn: 65010,
        listen: format!("127.0.0.2:{}", listen_port()).parse().unwrap(),
        backends: &[&mx],
        announce_extra: "",
        neighbor_extra: "",
        bird_port: port,
        grace: "1s",
        http: format!("127.0.0.1:{}", listen_port()).parse().unwrap(),
    };
    let portico = r.start(&dir);
    // The VIP is up (so there is a route to send) before the session starts.
    let up = poll(Duration::from_secs(10), || {
        portico
            .ctl("show bgp")
            .contains(&format!("prefix {PREFIX} vip smtp announced"))
            .then_some(())
    });
    assert!(up.is_some(), "{}", portico.ctl("show bgp"));
    let (mut s, _) = fake.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let open = read_message(&mut s);
    assert_eq!(open[18], 1, "OPEN first");
    // Our OPEN (AS 65000, hold 9, id 127.0.0.1, 4-octet AS capability) and a
    // KEEPALIVE in one write.
    let caps = [2u8, 6, 65, 4, 0, 0, 0xfd, 0xe8];
    let mut body = vec![4, 0xfd, 0xe8, 0, 9, 127, 0, 0, 1, caps.len() as u8];
    body.extend_from_slice(&caps);
    let mut both = vec![0xff; 16];
    both.extend_from_slice(&[0, (19 + body.len()) as u8, 1]);
    both.extend_from_slice(&body);
    both.extend_from_slice(&[0xff; 16]);
    both.extend_from_slice(&[0, 19, 4]);
    s.write_all(&both).unwrap();
    let first = read_message(&mut s);
    assert_eq!(
        first[18], 4,
        "KEEPALIVE before anything else, got {first:02x?}"
    );
    let second = read_message(&mut s);
    assert_eq!(second[18], 2, "then the UPDATE, got {second:02x?}");
}
