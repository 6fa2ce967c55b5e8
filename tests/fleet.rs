//! Fleet admin intent: replicas of one lb pod share drains, maints and weights over
//! the cluster layer (chitchat, HMAC-authenticated), report how far each applied
//! them, and say so when some replica is unreachable. Three `portico run` processes
//! on loopback, same config except the node id and the listen addresses, gossiping
//! every 100 ms; every wait is a bounded poll.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::config::{Config, Vip, FAST};
use common::{echo_roundtrip, free_port, free_udp_tcp_port, poll, Echo, Portico, TempDir};

/// Upper bound for anything to cross the fleet (a few gossip rounds, with room for
/// a loaded CI machine).
const FLEET: Duration = Duration::from_secs(10);

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// One replica's ports and directory.
struct Node {
    dir: TempDir,
    vip: u16,
}

/// A pod of `n` replicas (ids `lb1`..), their gossip ports and backends.
struct Pod {
    nodes: Vec<Node>,
    gossip: Vec<u16>,
    backends: Vec<(&'static str, SocketAddr)>,
    secret: TempDir,
}

impl Pod {
    fn new(n: usize, backends: Vec<(&'static str, SocketAddr)>) -> Pod {
        let secret = TempDir::new("fleet-secret");
        std::fs::write(secret.path("good.key"), SECRET).unwrap();
        std::fs::write(secret.path("bad.key"), "fedcba9876543210fedcba9876543210").unwrap();
        Pod {
            nodes: (0..n)
                .map(|i| Node {
                    dir: TempDir::new(&format!("fleet-lb{}", i + 1)),
                    vip: free_port(),
                })
                .collect(),
            gossip: (0..n).map(|_| free_udp_tcp_port()).collect(),
            backends,
            secret,
        }
    }

    /// Replica `i` (0-based)'s config; `key` is the secret file it uses.
    fn config(&self, i: usize, key: &str) -> String {
        let node = &self.nodes[i];
        let vip = self.backends.iter().fold(
            Vip::new("smtp", format!("127.0.0.1:{}", node.vip))
                .with("balance = \"round_robin\"")
                .probe("tcp", FAST),
            |v, (n, a)| v.backend(n, a),
        );
        let members: String = self
            .gossip
            .iter()
            .enumerate()
            .map(|(j, port)| {
                format!(
                    "\n[[cluster.member]]\nid = \"lb{}\"\naddress = \"127.0.0.1:{port}\"\nvantage = false\npod = \"pod1\"\n",
                    j + 1
                )
            })
            .collect();
        Config::admin(&node.dir)
            .top("drain_timeout = \"1s\"")
            .top("state_dir = \"state\"")
            .vip(vip)
            .table(format!(
                "[cluster]\nid = \"fleet-test\"\nnode = \"lb{n}\"\nsecret_file = \"{secret}\"\ngossip_interval = \"100ms\"\nstale_after = \"1s\"\n{members}",
                n = i + 1,
                secret = self.secret.path(key).display(),
            ))
            .render()
    }

    fn start(&self, i: usize) -> Portico {
        Portico::start(&self.nodes[i].dir, &self.config(i, "good.key"))
    }

    fn start_all(&self) -> Vec<Portico> {
        let ps: Vec<Portico> = (0..self.nodes.len()).map(|i| self.start(i)).collect();
        for p in &ps {
            all_reachable(p, self.nodes.len());
        }
        ps
    }
}

/// Waits until `p` reports every replica of the pod reachable and every backend up.
fn all_reachable(p: &Portico, n: usize) {
    let ok = poll(FLEET, || {
        let out = p.ctl("show backends");
        let lines: Vec<&str> = out.lines().collect();
        (!lines.is_empty()
            && lines.iter().all(|l| {
                l.split_whitespace().nth(2) == Some("up")
                    && !l.contains("unreachable")
                    && !l.contains(" ?")
                    && l.contains(&format!("/{n} applied"))
            }))
        .then_some(())
    });
    assert!(
        ok.is_some(),
        "not every replica reachable:\n{}\n{}",
        p.ctl("show backends"),
        p.ctl("show cluster")
    );
}

/// `show backends` line of `id` on `p`.
fn line(p: &Portico, id: &str) -> String {
    p.ctl("show backends")
        .lines()
        .find(|l| l.starts_with(&format!("{id} ")))
        .unwrap_or_else(|| panic!("no {id}"))
        .to_string()
}

/// (admin, weight, active) of `id` on `p`.
fn local(p: &Portico, id: &str) -> (String, u32, u64) {
    let l = line(p, id);
    let f: Vec<&str> = l.split_whitespace().collect();
    (
        f[3].to_string(),
        f[4].parse().unwrap(),
        f[5].parse().unwrap(),
    )
}

/// Waits until `id` on `p` satisfies `want`.
fn until_local(p: &Portico, id: &str, what: &str, want: impl Fn(&(String, u32, u64)) -> bool) {
    let ok = poll(FLEET, || want(&local(p, id)).then_some(()));
    assert!(
        ok.is_some(),
        "{what}: {}\nevents:\n{}",
        line(p, id),
        p.ctl("show events 30")
    );
}

/// Opens a session through `vip` and waits until `p` counts it on some backend;
/// returns the stream and that backend.
fn open_session(p: &Portico, vip: u16) -> (TcpStream, String) {
    let before: Vec<(String, u64)> = ["smtp/mx1", "smtp/mx2"]
        .iter()
        .map(|b| (b.to_string(), local(p, b).2))
        .collect();
    let mut s = TcpStream::connect(("127.0.0.1", vip)).expect("connect to the VIP");
    assert!(echo_roundtrip(&mut s, b"hello\n"), "session relays");
    let on = poll(FLEET, || {
        before
            .iter()
            .find(|(b, n)| local(p, b).2 > *n)
            .map(|(b, _)| b.clone())
    })
    .expect("the session shows on a backend");
    (s, on)
}

/// Opens sessions until one lands on `backend`; the others are closed.
fn session_on(p: &Portico, vip: u16, backend: &str) -> TcpStream {
    for _ in 0..6 {
        let (s, on) = open_session(p, vip);
        if on == backend {
            return s;
        }
        drop(s);
        until_local(p, &on, "released", |(_, _, n)| *n == 0);
    }
    panic!("no session landed on {backend}: {}", p.ctl("show backends"));
}

#[test]
fn drain_on_one_replica_reaches_all_and_wait_drained_waits_for_the_last_session() {
    let (e1, e2) = (Echo::start(), Echo::start());
    let pod = Pod::new(3, vec![("mx1", e1.addr), ("mx2", e2.addr)]);
    let ps = pod.start_all();
    // One established session on mx1 through each replica.
    let mut sessions: Vec<TcpStream> = ps
        .iter()
        .zip(&pod.nodes)
        .map(|(p, n)| session_on(p, n.vip, "smtp/mx1"))
        .collect();

    // Every replica reachable: the plain reply the SPEC promises.
    assert_eq!(ps[0].ctl("drain smtp/mx1"), "ok\n");
    for p in &ps {
        until_local(p, "smtp/mx1", "drain reached every replica", |(a, _, _)| {
            a == "drain"
        });
    }
    assert!(
        ps[1]
            .ctl("show events 30")
            .contains("smtp/mx1 admin drain (shared by peer lb1)"),
        "{}",
        ps[1].ctl("show events 30")
    );
    // New sessions on every replica avoid mx1; the established ones continue.
    for (p, n) in ps.iter().zip(&pod.nodes) {
        let mut fresh = Vec::new();
        for _ in 0..3 {
            let (s, on) = open_session(p, n.vip);
            assert_eq!(on, "smtp/mx2", "{}", p.ctl("show backends"));
            fresh.push(s);
        }
        assert_eq!(
            local(p, "smtp/mx1").2,
            1,
            "the old session is still counted"
        );
    }
    for s in &mut sessions {
        assert!(
            echo_roundtrip(s, b"still here\n"),
            "established session cut"
        );
    }
    let progress = poll(FLEET, || {
        line(&ps[2], "smtp/mx1")
            .contains("| fleet drain 3/3 applied, 3 sessions (lb1 1, lb2 1, lb3 1)")
            .then_some(())
    });
    assert!(progress.is_some(), "{}", line(&ps[2], "smtp/mx1"));

    // `wait drained` on replica 3 returns only once the last session on any
    // replica has closed.
    let socket = ps[2].socket.clone();
    let waiter = std::thread::spawn(move || {
        let out = std::process::Command::new(common::bin())
            .args(["ctl", "--socket"])
            .arg(&socket)
            .args(["wait", "drained", "smtp/mx1", "30"])
            .output()
            .expect("run ctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            Instant::now(),
        )
    });
    let last = sessions.remove(1);
    drop(sessions);
    let one_left = poll(FLEET, || {
        line(&ps[2], "smtp/mx1")
            .contains("applied, 1 sessions (lb1 0, lb2 1, lb3 0)")
            .then_some(())
    });
    assert!(one_left.is_some(), "{}", line(&ps[2], "smtp/mx1"));
    assert!(
        !waiter.is_finished(),
        "wait drained returned with a session open on lb2"
    );
    let closed = Instant::now();
    drop(last);
    let (ok, out, at) = waiter.join().unwrap();
    assert!(ok, "{out}");
    assert_eq!(out, "ok\n");
    assert!(at >= closed);
    assert!(at - closed < FLEET, "took {:?}", at - closed);
}

#[test]
fn a_replica_down_during_the_drain_gets_a_degraded_reply_and_applies_it_on_rejoin() {
    let (e1, e2) = (Echo::start(), Echo::start());
    let pod = Pod::new(3, vec![("mx1", e1.addr), ("mx2", e2.addr)]);
    let mut ps = pod.start_all();
    let mut down = ps.pop().unwrap();
    down.signal(libc::SIGTERM);
    down.wait_exit(Duration::from_secs(15)).expect("lb3 exits");
    drop(down);
    let seen = poll(FLEET, || {
        line(&ps[0], "smtp/mx1")
            .contains("lb3 unreachable")
            .then_some(())
    });
    assert!(seen.is_some(), "{}", ps[0].ctl("show cluster"));

    let started = Instant::now();
    assert_eq!(
        ps[0].ctl("drain smtp/mx1"),
        "ok (applied on 2/3; 1 unreachable, will apply on contact)\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the acknowledgement wait is bounded"
    );
    until_local(&ps[1], "smtp/mx1", "drain on lb2", |(a, _, _)| a == "drain");
    // `wait drained` with a replica unreachable says so.
    assert_eq!(
        ps[1].ctl("wait drained smtp/mx1 5"),
        "ok (drained on 2/3; 1 unreachable: lb3, their sessions unknown)\n"
    );

    // lb3 comes back (its own state file never saw the drain) and applies it.
    ps.push(pod.start(2));
    until_local(
        &ps[2],
        "smtp/mx1",
        "drain applied on rejoin",
        |(a, _, _)| a == "drain",
    );
    all_reachable(&ps[0], 3);
    let fleet = line(&ps[0], "smtp/mx1");
    assert!(fleet.contains("| fleet drain 3/3 applied"), "{fleet}");

    // Conflicting commands on two replicas: the later one wins everywhere.
    for (p, cmd) in [
        (&ps[0], "set weight smtp/mx2 5"),
        (&ps[2], "set weight smtp/mx2 9"),
        (&ps[1], "maint smtp/mx1"),
        (&ps[2], "ready smtp/mx1"),
    ] {
        assert!(p.ctl(cmd).starts_with("ok"), "{cmd}");
    }
    for p in &ps {
        until_local(p, "smtp/mx2", "later weight everywhere", |(_, w, _)| {
            *w == 9
        });
        until_local(p, "smtp/mx1", "later admin everywhere", |(a, _, _)| {
            a == "ready"
        });
    }
    // And it is what each replica's state file keeps.
    for n in &pod.nodes {
        let text = std::fs::read_to_string(n.dir.path("state/intent.json")).unwrap();
        assert!(text.contains("\"weight\":9"), "{text}");
        assert!(!text.contains("\"weight\":5"), "{text}");
    }
}

#[test]
fn a_node_with_the_wrong_key_cannot_change_intent() {
    let (e1, e2) = (Echo::start(), Echo::start());
    let pod = Pod::new(3, vec![("mx1", e1.addr), ("mx2", e2.addr)]);
    let good: Vec<Portico> = (0..2).map(|i| pod.start(i)).collect();
    // lb3 claims a member id of the pod but holds another secret.
    let bad = Portico::start(&pod.nodes[2].dir, &pod.config(2, "bad.key"));
    let reply = bad.ctl("drain smtp/mx1");
    assert!(reply.starts_with("ok (applied on 1/3;"), "{reply}");
    // Its datagrams reach the good nodes and are dropped there.
    let rejected = poll(FLEET, || {
        let out = good[0].ctl("show cluster");
        let n: u64 = out
            .split_whitespace()
            .skip_while(|w| *w != "rejected_datagrams")
            .nth(1)?
            .parse()
            .ok()?;
        (n > 0).then_some(())
    });
    assert!(rejected.is_some(), "{}", good[0].ctl("show cluster"));
    // The good replicas still share intent with each other, and a drain of mx2
    // on lb2 arrives at lb1 well after lb3's drain of mx1 would have.
    assert!(good[1].ctl("drain smtp/mx2").starts_with("ok"));
    until_local(&good[0], "smtp/mx2", "lb2's drain", |(a, _, _)| {
        a == "drain"
    });
    for p in &good {
        assert_eq!(
            local(p, "smtp/mx1").0,
            "ready",
            "{}",
            p.ctl("show events 30")
        );
        assert!(!p.ctl("show events 50").contains("shared by peer lb3"));
    }
    assert_eq!(
        local(&bad, "smtp/mx2").0,
        "ready",
        "nothing flows to it either"
    );
}
