//! Issue 16 in the netns lab: sites dc1 and dc2 (each a Portico lb and gss in its own
//! network namespace) and a witness in a third, joined by direct links. The gss nodes
//! and the witness vote on each site's health over the authenticated cluster layer.
//! Every query loop is bounded in count and time.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::lab::Lab;
use common::{poll, query_a_via, Portico, TempDir};

const DC1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const DC2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const WIT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// The answers of the name `smtp`: dc1 is primary.
const ANSWER_DC1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
const ANSWER_DC2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
const NAME: &str = "smtp.gslb.example.test";

/// Keepalive timing of every gss (interval, fall) and the gossip interval.
const INTERVAL: Duration = Duration::from_millis(500);
const FALL: u32 = 2;
const GOSSIP: Duration = Duration::from_millis(200);
const STALE_AFTER: Duration = Duration::from_millis(1500);

struct Node {
    name: &'static str,
    addr: Ipv4Addr,
    /// Runs an lb (its /status is the site's keepalive) and a DNS-serving gss.
    server: bool,
}

const SITES: [Node; 3] = [
    Node {
        name: "dc1",
        addr: DC1,
        server: true,
    },
    Node {
        name: "dc2",
        addr: DC2,
        server: true,
    },
    Node {
        name: "wit",
        addr: WIT,
        server: false,
    },
];

fn config(
    me: &Node,
    members: &[&Node],
    quorum: Option<u32>,
    timing: (Duration, Duration),
    dir: &TempDir,
) -> String {
    let secret = dir.path("cluster.key");
    std::fs::write(&secret, "lab-secret-0123456789abcdef\n").expect("secret");
    let mut c = format!(
        "[admin]\nsocket = \"{}\"\n\n",
        dir.path("admin.sock").display()
    );
    if me.server {
        c.push_str(&format!(
            r#"[http]
listen = "{a}:9100"

[[vip]]
name = "smtp"
listen = "{a}:2525"
mode = "tcp"
backends = [ {{ name = "self", address = "{a}:9100" }} ]
probe = {{ kind = "tcp", interval = "500ms", timeout = "400ms", rise = 1, fall = 3 }}

"#,
            a = me.addr
        ));
    }
    c.push_str(&format!(
        r#"[cluster]
id = "lab"
node = "{node}"
secret_file = "{secret}"
gossip_interval = "{gossip}ms"
stale_after = "{stale}ms"
"#,
        node = me.name,
        secret = secret.display(),
        gossip = GOSSIP.as_millis(),
        stale = STALE_AFTER.as_millis(),
    ));
    for m in members {
        c.push_str(&format!(
            "\n[[cluster.member]]\nid = \"{}\"\naddress = \"{}:7946\"\n",
            m.name, m.addr
        ));
    }
    c.push_str(&format!(
        r#"
[gss]
{listen}zone = "gslb.example.test"
nameservers = ["ns1.gslb.example.test"]
ttl = 5
role = "{role}"
{quorum}
"#,
        listen = if me.server {
            format!("listen = \"{}:53\"\n", me.addr)
        } else {
            String::new()
        },
        role = if me.server { "server" } else { "witness" },
        quorum = quorum.map(|q| format!("quorum = {q}")).unwrap_or_default(),
    ));
    for site in SITES.iter().filter(|s| s.server) {
        c.push_str(&format!(
            r#"
[[gss.site]]
name = "{n}"
keepalives = [ {{ kind = "lb_status", url = "http://{a}:9100/status" }} ]
probe_defaults = {{ interval = "{i}ms", timeout = "{t}ms", rise = 2, fall = {FALL} }}
"#,
            n = site.name,
            a = site.addr,
            i = timing.0.as_millis(),
            t = timing.1.as_millis(),
        ));
    }
    c.push_str(&format!(
        r#"
[[gss.name]]
name = "smtp"
policy = "failover"
sites = ["dc1", "dc2"]
answers = {{ dc1 = ["{ANSWER_DC1}"], dc2 = ["{ANSWER_DC2}"] }}
failback = "auto"
failback_after = "1s"
"#
    ));
    c
}

/// A running lab: the namespaces, one Portico per node, and a DNS client socket in
/// each serving site (queries stay inside their own site, so cuts do not touch them).
/// One lab at a time: each runs several Portico processes whose 400 ms probe timeouts
/// are the behaviour under test, and two labs at once on a small machine starve them
/// into real (and correct) failovers that these tests would read as split answers.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Running {
    // Dropped first: the processes, then the lab's namespaces, then the turn.
    nodes: Vec<(&'static str, Portico, TempDir)>,
    clients: Vec<(&'static str, UdpSocket)>,
    lab: Lab,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Running {
    fn start(names: &[&'static str], quorum: Option<u32>) -> Option<Running> {
        Running::start_timed(names, quorum, (INTERVAL, Duration::from_millis(400)))
    }

    /// As [`Running::start`] with the keepalives' (interval, timeout).
    fn start_timed(
        names: &[&'static str],
        quorum: Option<u32>,
        timing: (Duration, Duration),
    ) -> Option<Running> {
        let turn = shared::sync::lock(&ONE_LAB);
        let members: Vec<&Node> = SITES.iter().filter(|s| names.contains(&s.name)).collect();
        let lab_sites: Vec<(&str, Ipv4Addr)> = members.iter().map(|m| (m.name, m.addr)).collect();
        let mut links = Vec::new();
        for i in 0..members.len() {
            for j in i + 1..members.len() {
                links.push((i, j));
            }
        }
        let lab = Lab::build(&lab_sites, &links)?;
        let mut nodes = Vec::new();
        for m in &members {
            let dir = TempDir::new(&format!("lab-{}", m.name));
            let cfg = config(m, &members, quorum, timing, &dir);
            let p = Portico::start_prefixed(&dir, &cfg, &[], &[], &lab.exec_prefix(m.name));
            nodes.push((m.name, p, dir));
        }
        let clients = members
            .iter()
            .filter(|m| m.server)
            .map(|m| (m.name, lab.udp_socket(m.name)))
            .collect();
        Some(Running {
            nodes,
            clients,
            lab,
            _turn: turn,
        })
    }

    fn node(&self, name: &str) -> &Portico {
        &self
            .nodes
            .iter()
            .find(|(n, _, _)| *n == name)
            .expect("node")
            .1
    }

    /// The A answer of `site`'s gss for the name, asked from inside that site.
    fn answer(&self, site: &str) -> Option<Vec<Ipv4Addr>> {
        let sock = &self.clients.iter().find(|(n, _)| *n == site)?.1;
        let addr = SITES.iter().find(|s| s.name == site)?.addr;
        query_a_via(
            sock,
            SocketAddr::from((addr, 53)),
            NAME,
            Duration::from_millis(500),
        )
    }

    /// `GET /metrics` of `site`'s status listener, fetched inside its namespace.
    fn metrics(&self, site: &str) -> String {
        let addr = SITES.iter().find(|s| s.name == site).expect("site").addr;
        let mut cmd = std::process::Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.lab.site(site).ns,
            "curl",
            "-s",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{addr}:9100/metrics"));
        let out = cmd.output().expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn explain(&self, site: &str) -> String {
        self.node(site).ctl("explain smtp")
    }

    /// Waits until every serving gss counts every vantage point's fresh view and
    /// agrees dc1 is up, and answers dc1.
    fn settle(&self, voters: usize) {
        for (site, _) in &self.clients {
            let ok = poll(Duration::from_secs(20), || {
                let e = self.explain(site);
                let line = e
                    .lines()
                    .find(|l| l.contains("votes:") && l.contains("up "))?;
                (line.contains(&format!("up {voters} "))
                    && self.answer(site) == Some(vec![ANSWER_DC1]))
                .then_some(())
            });
            assert!(
                ok.is_some(),
                "{site} did not settle:\n{}\n{}",
                self.explain(site),
                self.node(site).log_text()
            );
        }
    }

    /// Queries every serving gss every 50 ms for `span` (bounded); returns each
    /// answer that was not dc1's, with the gss that gave it.
    fn answers_other_than_dc1(&self, span: Duration) -> Vec<(String, Option<Vec<Ipv4Addr>>)> {
        let end = Instant::now() + span;
        let mut bad = Vec::new();
        let mut rounds = 0;
        while Instant::now() < end && rounds < 1000 {
            rounds += 1;
            for (site, _) in &self.clients {
                let a = self.answer(site);
                if a != Some(vec![ANSWER_DC1]) {
                    bad.push((site.to_string(), a));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bad
    }
}

/// The indented lines under `site SITE:` in an `explain` reply.
fn site_block(explain: &str, site: &str) -> Vec<String> {
    let header = format!("site {site}:");
    explain
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().to_string())
        .collect()
}

fn own_line(explain: &str, site: &str, me: &str) -> bool {
    site_block(explain, site)
        .iter()
        .any(|l| l.starts_with(&format!("vantage {me} (this node): down")))
}

fn votes_line(explain: &str, site: &str) -> String {
    site_block(explain, site)
        .into_iter()
        .find(|l| l.starts_with("votes:"))
        .unwrap_or_default()
}

#[test]
fn link_cut_between_sites_the_witness_outvotes_dc2_and_nobody_answers_dc2() {
    let Some(lab) = Running::start(&["dc1", "dc2", "wit"], None) else {
        return;
    };
    lab.settle(3);
    lab.lab.cut("dc1", "dc2");
    // dc2's own keepalive of dc1 fails within interval × fall (plus a timeout); keep
    // querying well past that and past stale_after.
    let span = INTERVAL * FALL + STALE_AFTER + Duration::from_secs(2);
    let started = Instant::now();
    let bad = lab.answers_other_than_dc1(span);
    assert!(
        bad.is_empty(),
        "answers other than dc1 during the cut: {bad:?}"
    );
    assert!(started.elapsed() >= span);
    // dc2's own view says down, and it is outvoted: dc1 (relayed by the witness) and
    // the witness say up.
    let e = lab.explain("dc2");
    assert!(
        own_line(&e, "dc1", "dc2"),
        "dc2 never saw dc1 down itself:\n{e}"
    );
    let votes = votes_line(&e, "dc1");
    assert!(
        votes.contains("down 1 (dc2)") && votes.contains("up 2") && votes.ends_with("agreed up"),
        "{e}"
    );
    let events = lab.node("dc2").ctl("show events 200");
    assert!(events.contains("vote: "), "{events}");
    let sites = lab.node("dc2").ctl("show sites");
    assert!(
        sites
            .lines()
            .any(|l| l.starts_with("dc1 up ") && l.ends_with(" quorum"))
            && sites.contains("vantage wit: up")
            && sites.contains("vantage dc2 (this node): down"),
        "{sites}"
    );
    let cluster = lab.node("dc2").ctl("show cluster");
    assert!(
        cluster
            .lines()
            .any(|l| l.starts_with("dc1 192.0.2.1:7946 alive last_contact "))
            && cluster
                .lines()
                .any(|l| l.starts_with("wit 203.0.113.1:7946 alive ")),
        "{cluster}"
    );
    let metrics = lab.metrics("dc2");
    assert!(
        metrics.contains(r#"portico_gss_site_vote{site="dc1",voter="dc2"} 0"#)
            && metrics.contains(r#"portico_gss_site_vote{site="dc1",voter="wit"} 1"#),
        "{metrics}"
    );
    lab.lab.heal("dc1", "dc2");
}

#[test]
fn an_operator_override_on_one_gss_is_followed_by_its_peers() {
    let Some(lab) = Running::start(&["dc1", "dc2", "wit"], None) else {
        return;
    };
    lab.settle(3);
    lab.node("dc1").ctl("site down dc1");
    let moved = poll(Duration::from_secs(5), || {
        (lab.answer("dc2") == Some(vec![ANSWER_DC2]) && lab.answer("dc1") == Some(vec![ANSWER_DC2]))
            .then_some(())
    });
    assert!(moved.is_some(), "{}", lab.node("dc2").ctl("show events 50"));
    let events = lab.node("dc2").ctl("show events 50");
    assert!(
        events.contains("override down set by operator (shared by peer dc1)"),
        "{events}"
    );
    // The release, given on the other node, is newer and wins everywhere.
    lab.node("dc2").ctl("site auto dc1");
    let back = poll(Duration::from_secs(5), || {
        (lab.answer("dc1") == Some(vec![ANSWER_DC1]) && lab.answer("dc2") == Some(vec![ANSWER_DC1]))
            .then_some(())
    });
    assert!(back.is_some(), "{}", lab.node("dc1").ctl("show events 50"));
}

#[test]
fn dc1_dies_and_answers_move_to_dc2_within_the_bound() {
    let Some(lab) = Running::start(&["dc1", "dc2", "wit"], None) else {
        return;
    };
    lab.settle(3);
    let bound = INTERVAL * FALL + GOSSIP + Duration::from_secs(1);
    let t0 = Instant::now();
    lab.lab.kill_site("dc1");
    let moved = poll(bound + Duration::from_secs(5), || {
        (lab.answer("dc2") == Some(vec![ANSWER_DC2])).then(|| t0.elapsed())
    });
    let took = moved.unwrap_or_else(|| panic!("dc2 never answered dc2:\n{}", lab.explain("dc2")));
    eprintln!("failover with quorum took {took:?} (bound {bound:?})");
    assert!(
        took <= bound,
        "failover took {took:?}, bound {bound:?}:\n{}",
        lab.explain("dc2")
    );
    let e = lab.explain("dc2");
    let votes = votes_line(&e, "dc1");
    assert!(
        votes.contains("down 2 (dc2, wit)") && votes.ends_with("agreed down"),
        "{e}"
    );
}

#[test]
fn two_nodes_without_witness_stay_fail_static_and_quorum_one_splits() {
    // Quorum 2 of 2: the cut leaves each node fail-static on dc1 up.
    {
        let Some(lab) = Running::start(&["dc1", "dc2"], None) else {
            return;
        };
        lab.settle(2);
        lab.lab.cut("dc1", "dc2");
        let bad =
            lab.answers_other_than_dc1(INTERVAL * FALL + STALE_AFTER + Duration::from_secs(2));
        assert!(
            bad.is_empty(),
            "split answers: {bad:?}\ndc1:\n{}\nevents dc1:\n{}",
            lab.explain("dc1"),
            lab.node("dc1").ctl("show events")
        );
        let e = lab.explain("dc2");
        assert!(
            votes_line(&e, "dc1").contains("no quorum, fail-static: keeping up"),
            "{e}"
        );
        let sites = lab.node("dc2").ctl("show sites");
        assert!(
            sites
                .lines()
                .any(|l| l.starts_with("dc1 up ") && l.ends_with(" fail-static")),
            "{sites}"
        );
    }
    // quorum = 1: today's per-node rule; dc2 fails over on its own view.
    let Some(lab) = Running::start(&["dc1", "dc2"], Some(1)) else {
        return;
    };
    lab.settle(2);
    lab.lab.cut("dc1", "dc2");
    let split = poll(INTERVAL * FALL + Duration::from_secs(5), || {
        (lab.answer("dc2") == Some(vec![ANSWER_DC2])).then_some(())
    });
    assert!(
        split.is_some(),
        "quorum 1 did not fail over:\n{}",
        lab.explain("dc2")
    );
    assert_eq!(lab.answer("dc1"), Some(vec![ANSWER_DC1]));
}

#[test]
fn a_frozen_witness_stops_voting_after_stale_after() {
    let Some(lab) = Running::start(&["dc1", "dc2", "wit"], None) else {
        return;
    };
    lab.settle(3);
    lab.node("wit").signal(libc::SIGSTOP);
    let t0 = Instant::now();
    let stale = poll(STALE_AFTER + Duration::from_secs(3), || {
        let e = lab.explain("dc2");
        e.contains("vantage wit:")
            .then_some(())
            .filter(|_| votes_line(&e, "dc1").contains("stale 1 (wit)"))
            .map(|_| t0.elapsed())
    });
    lab.node("wit").signal(libc::SIGCONT);
    let took = stale.unwrap_or_else(|| panic!("wit never went stale:\n{}", lab.explain("dc2")));
    assert!(took + GOSSIP >= STALE_AFTER, "stale after only {took:?}");
    // Thawed, it votes again.
    let back = poll(Duration::from_secs(5), || {
        votes_line(&lab.explain("dc2"), "dc1")
            .contains("stale 0")
            .then_some(())
    });
    assert!(back.is_some(), "{}", lab.explain("dc2"));
}

#[test]
fn a_flapping_or_starved_link_does_not_flap_answers() {
    let Some(lab) = Running::start(&["dc1", "dc2", "wit"], None) else {
        return;
    };
    lab.settle(3);
    // 20 × (300 ms down, 300 ms up): 12 s, bounded; queries run meanwhile.
    let bad = std::thread::scope(|scope| {
        scope.spawn(|| {
            lab.lab.flap(
                "dc1",
                "dc2",
                Duration::from_millis(300),
                Duration::from_millis(300),
                20,
            )
        });
        lab.answers_other_than_dc1(Duration::from_secs(12))
    });
    lab.lab.heal("dc1", "dc2");
    assert!(
        bad.is_empty(),
        "answers flapped: {bad:?}\ndc1 events:\n{}",
        lab.node("dc1").ctl("show events 100")
    );

    lab.lab.squeeze("dc1", "dc2", "8kbit");
    let bad = lab.answers_other_than_dc1(INTERVAL * FALL + STALE_AFTER + Duration::from_secs(3));
    lab.lab.unsqueeze("dc1", "dc2");
    assert!(
        bad.is_empty(),
        "answers moved on a starved link: {bad:?}\ndc1 events:\n{}",
        lab.node("dc1").ctl("show events 100")
    );
}

/// gdnsd (Debian `gdnsd`), one per serving site on port 5300 next to Portico, with the
/// `simplefo` plugin watching each site's lb `/status` (http_status) and answering the
/// site address of the first one up: the peer anchor, deciding per node.
fn gdnsd_in(lab: &Running, site: &str, dir: &TempDir) -> Option<common::Daemon> {
    let bin = common::tool("gdnsd")?;
    let addr = SITES.iter().find(|s| s.name == site)?.addr;
    for d in ["zones", "run", "state"] {
        std::fs::create_dir_all(dir.path(d)).ok()?;
    }
    std::fs::write(
        dir.path("config"),
        format!(
            r#"options => {{
  listen => [ {addr} ]
  dns_port => 5300
  run_dir => {run}
  state_dir => {state}
}}
service_types => {{
  lbstatus => {{ plugin => http_status, port => 9100, url_path => /status, ok_codes => [200], interval => 2, timeout => 1, up_thresh => 2, down_thresh => {FALL}, ok_thresh => 2 }}
}}
plugins => {{
  simplefo => {{
    smtp => {{ service_types => lbstatus, primary => {DC1}, secondary => {DC2} }}
  }}
}}
"#,
            run = dir.path("run").display(),
            state = dir.path("state").display(),
        ),
    )
    .ok()?;
    std::fs::write(
        dir.path("zones/gslb.example.test"),
        "$TTL 5\n@ SOA ns1 hostmaster 1 3600 600 86400 30\n@ NS ns1\nns1 A 192.0.2.1\nsmtp 5 DYNA simplefo!smtp\n",
    )
    .ok()?;
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &lab.lab.site(site).ns])
        .arg(bin)
        .arg("-c")
        .arg(&dir.0)
        .arg("start")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Some(common::Daemon::spawn(&mut cmd))
}

/// Measures, for README: split answers during a 10 s cut between dc1 and dc2 (dc1
/// healthy, witness reaching both) and the failover time when dc1 dies, for Portico
/// with a witness (majority quorum), Portico with `quorum = 1`, and gdnsd per site.
/// All with the same probe timing (gdnsd's minimum interval, 2 s; fall 2).
/// Run by hand: `cargo test --test lab -- --ignored --nocapture measure`.
#[test]
#[ignore]
fn measure_split_answers_and_failover() {
    let timing = (Duration::from_secs(2), Duration::from_secs(1));
    let dc1_answer = |a: &Option<Vec<Ipv4Addr>>, gdnsd: bool| {
        *a == Some(vec![if gdnsd { DC1 } else { ANSWER_DC1 }])
    };
    for (label, quorum) in [
        ("Portico, witness, quorum 2 of 3", None),
        ("Portico, quorum = 1", Some(1)),
    ] {
        // Split answers during a cut.
        let Some(lab) = Running::start_timed(&["dc1", "dc2", "wit"], quorum, timing) else {
            return;
        };
        let dirs: Vec<TempDir> = ["dc1", "dc2"]
            .iter()
            .map(|s| TempDir::new(&format!("gdnsd-{s}")))
            .collect();
        let gd: Vec<_> = ["dc1", "dc2"]
            .iter()
            .zip(&dirs)
            .filter_map(|(s, d)| gdnsd_in(&lab, s, d))
            .collect();
        lab.settle(3);
        std::thread::sleep(Duration::from_secs(5));
        lab.lab.cut("dc1", "dc2");
        let end = Instant::now() + Duration::from_secs(10);
        let (mut total, mut split, mut gd_total, mut gd_split) = (0, 0, 0, 0);
        while Instant::now() < end {
            for (site, sock) in &lab.clients {
                let addr = SITES.iter().find(|s| s.name == *site).expect("site").addr;
                let a = query_a_via(
                    sock,
                    SocketAddr::from((addr, 53)),
                    NAME,
                    Duration::from_millis(500),
                );
                total += 1;
                if !dc1_answer(&a, false) {
                    split += 1;
                }
                if gd.len() == 2 && quorum.is_none() {
                    let a = query_a_via(
                        sock,
                        SocketAddr::from((addr, 5300)),
                        NAME,
                        Duration::from_millis(500),
                    );
                    gd_total += 1;
                    if !dc1_answer(&a, true) {
                        gd_split += 1;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("MEASURE | {label} | split answers during a 10 s cut: {split} of {total}");
        if gd_total > 0 {
            eprintln!("MEASURE | gdnsd, one per site | split answers during a 10 s cut: {gd_split} of {gd_total}");
        }
        drop(gd);
        drop(lab);

        // Failover when dc1 dies.
        let Some(lab) = Running::start_timed(&["dc1", "dc2", "wit"], quorum, timing) else {
            return;
        };
        let dirs: Vec<TempDir> = ["dc1", "dc2"]
            .iter()
            .map(|s| TempDir::new(&format!("gdnsd-{s}")))
            .collect();
        let gd: Vec<_> = ["dc1", "dc2"]
            .iter()
            .zip(&dirs)
            .filter_map(|(s, d)| gdnsd_in(&lab, s, d))
            .collect();
        lab.settle(3);
        std::thread::sleep(Duration::from_secs(5));
        let sock = &lab
            .clients
            .iter()
            .find(|(n, _)| *n == "dc2")
            .expect("dc2")
            .1;
        let t0 = Instant::now();
        lab.lab.kill_site("dc1");
        let (mut portico, mut gdnsd) = (None, None);
        while t0.elapsed() < Duration::from_secs(20)
            && (portico.is_none() || (gdnsd.is_none() && gd.len() == 2 && quorum.is_none()))
        {
            if portico.is_none()
                && query_a_via(
                    sock,
                    SocketAddr::from((DC2, 53)),
                    NAME,
                    Duration::from_millis(300),
                ) == Some(vec![ANSWER_DC2])
            {
                portico = Some(t0.elapsed());
            }
            if gdnsd.is_none()
                && gd.len() == 2
                && query_a_via(
                    sock,
                    SocketAddr::from((DC2, 5300)),
                    NAME,
                    Duration::from_millis(300),
                ) == Some(vec![DC2])
            {
                gdnsd = Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("MEASURE | {label} | failover when dc1 dies: {portico:?}");
        if quorum.is_none() {
            eprintln!("MEASURE | gdnsd, one per site | failover when dc1 dies: {gdnsd:?}");
        }
    }
}
