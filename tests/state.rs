//! Admin intent kept across restarts (`state_dir`): drains, maints, weights and gss
//! site overrides are written to the state file before the command answers `ok`,
//! restored before the first connection or answer, kept for backends a reload
//! removes and brings back; a corrupt state file is set aside, never fatal; a write
//! that fails answers the command with an error and changes nothing.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::config::{Config, Vip, FAST};
use common::{free_port, free_udp_tcp_port, poll, query_a, Echo, Portico, TempDir};

fn lb_config(dir: &TempDir, port: u16, backends: &[(&str, SocketAddr)]) -> String {
    let vip = backends.iter().fold(
        Vip::new("smtp", format!("127.0.0.1:{port}")).probe("tcp", FAST),
        |v, (n, a)| v.backend(n, a),
    );
    Config::admin(dir)
        .top("drain_timeout = \"1s\"")
        .top("state_dir = \"state\"")
        .vip(vip)
        .render()
}

/// `show backends` as (VIP/BACKEND, admin, weight).
fn backends(p: &Portico) -> Vec<(String, String, String)> {
    p.ctl("show backends")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| (f[0].to_string(), f[3].to_string(), f[4].to_string()))
        })
        .collect()
}

fn backend(p: &Portico, id: &str) -> (String, String) {
    backends(p)
        .into_iter()
        .find(|(b, _, _)| b == id)
        .map(|(_, a, w)| (a, w))
        .unwrap_or_else(|| panic!("no {id} in {:?}", backends(p)))
}

fn restart(mut p: Portico, dir: &TempDir, cfg: &str, hard: bool) -> Portico {
    if hard {
        p.signal(libc::SIGKILL);
    } else {
        p.signal(libc::SIGTERM);
    }
    let status = p.wait_exit(Duration::from_secs(15)).expect("portico exits");
    assert_eq!(status.success(), !hard, "{status}\n{}", p.log_text());
    drop(p);
    Portico::start(dir, cfg)
}

/// The backend a fresh session through the VIP is counted on, while it is open.
fn session_lands_on(p: &Portico, port: u16) -> String {
    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the VIP");
    let on = poll(Duration::from_secs(5), || {
        p.ctl("show backends")
            .lines()
            .find(|l| l.split_whitespace().nth(5).is_some_and(|a| a != "0"))
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
    });
    drop(s);
    let on = on.expect("the session shows on a backend");
    // Wait until it is released, so the next look is not confused by it.
    poll(Duration::from_secs(5), || {
        p.ctl("show backends")
            .lines()
            .all(|l| l.split_whitespace().nth(5) == Some("0"))
            .then_some(())
    })
    .expect("session released");
    on
}

#[test]
fn drain_and_weight_survive_sigterm_and_restart() {
    let (e1, e2) = (Echo::start(), Echo::start());
    let dir = TempDir::new("state-term");
    let port = free_port();
    let cfg = lb_config(&dir, port, &[("mx1", e1.addr), ("mx2", e2.addr)]);
    let p = Portico::start(&dir, &cfg);
    assert_eq!(p.ctl("drain smtp/mx1"), "ok\n");
    assert_eq!(p.ctl("set weight smtp/mx2 7"), "ok\n");
    let state = dir.path("state/intent.json");
    let text = std::fs::read_to_string(&state).expect("state file next to the config");
    assert!(
        text.contains("\"key\":\"backend/smtp/mx1/admin\""),
        "{text}"
    );

    let p = restart(p, &dir, &cfg, false);
    assert_eq!(backend(&p, "smtp/mx1"), ("drain".into(), "1".into()));
    assert_eq!(backend(&p, "smtp/mx2"), ("ready".into(), "7".into()));
    // Drained means drained: new sessions go to mx2 only.
    poll(Duration::from_secs(10), || {
        p.ctl("show backends smtp")
            .lines()
            .any(|l| l.starts_with("smtp/mx2 ") && l.contains(" up "))
            .then_some(())
    })
    .expect("mx2 up");
    for _ in 0..3 {
        assert_eq!(session_lands_on(&p, port), "smtp/mx2");
    }
    let events = p.ctl("show events");
    assert!(
        events.contains("smtp/mx1 admin drain (restored"),
        "{events}"
    );

    // `ready` is intent too: after another restart mx1 is back in rotation.
    assert_eq!(p.ctl("ready smtp/mx1"), "ok\n");
    let p = restart(p, &dir, &cfg, false);
    assert_eq!(backend(&p, "smtp/mx1"), ("ready".into(), "1".into()));
    assert_eq!(backend(&p, "smtp/mx2"), ("ready".into(), "7".into()));
}

#[test]
fn kill_9_right_after_ok_loses_nothing() {
    let e1 = Echo::start();
    let dir = TempDir::new("state-kill");
    let port = free_port();
    let cfg = lb_config(&dir, port, &[("mx1", e1.addr), ("mx2", e1.addr)]);
    let p = Portico::start(&dir, &cfg);
    assert_eq!(p.ctl("maint smtp/mx2"), "ok\n");
    assert_eq!(p.ctl("drain smtp/mx1"), "ok\n");
    // SIGKILL the moment the reply is in: no shutdown path runs.
    let p = restart(p, &dir, &cfg, true);
    assert_eq!(backend(&p, "smtp/mx1").0, "drain");
    assert_eq!(backend(&p, "smtp/mx2").0, "maint");
}

#[test]
fn corrupt_state_file_is_set_aside_and_start_succeeds() {
    let e1 = Echo::start();
    let dir = TempDir::new("state-corrupt");
    std::fs::create_dir_all(dir.path("state")).unwrap();
    std::fs::write(
        dir.path("state/intent.json"),
        b"{\"version\":1,\"intents\":[{\"key\":\"backend/smtp/m",
    )
    .unwrap();
    let cfg = lb_config(&dir, free_port(), &[("mx1", e1.addr)]);
    let p = Portico::start(&dir, &cfg);
    assert_eq!(backend(&p, "smtp/mx1").0, "ready");
    let log = p.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("is unusable (corrupt")),
        "{log}"
    );
    let events = p.ctl("show events");
    assert!(
        events.contains("state state file") && events.contains("intent.json.bad-"),
        "{events}"
    );
    let kept: Vec<_> = std::fs::read_dir(dir.path("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("intent.json.bad-")
        })
        .collect();
    assert_eq!(kept.len(), 1, "the bad file is kept for the operator");
    // And the node records intent again.
    assert_eq!(p.ctl("drain smtp/mx1"), "ok\n");
    let text = std::fs::read_to_string(dir.path("state/intent.json")).unwrap();
    assert!(text.contains("backend/smtp/mx1/admin"), "{text}");
}

#[test]
fn unknown_version_is_set_aside_too() {
    let e1 = Echo::start();
    let dir = TempDir::new("state-version");
    std::fs::create_dir_all(dir.path("state")).unwrap();
    std::fs::write(dir.path("state/intent.json"), b"{\"version\":7,\"x\":[]}").unwrap();
    let cfg = lb_config(&dir, free_port(), &[("mx1", e1.addr)]);
    let p = Portico::start(&dir, &cfg);
    let events = p.ctl("show events");
    assert!(events.contains("unknown version 7"), "{events}");
}

#[test]
fn a_failed_write_answers_an_error_and_changes_nothing() {
    let e1 = Echo::start();
    let dir = TempDir::new("state-fail");
    let cfg = lb_config(&dir, free_port(), &[("mx1", e1.addr)]);
    let p = Portico::start(&dir, &cfg);
    // The temp file's name taken by a non-empty directory: the write fails (as root,
    // mode bits would not stop it).
    std::fs::create_dir_all(dir.path("state/.intent.json.tmp/x")).unwrap();
    let (ok, out) = p.ctl_raw(&["drain", "smtp/mx1"]).unwrap();
    assert!(!ok, "{out}");
    assert!(
        out.starts_with("error: cannot write the state file"),
        "{out}"
    );
    assert_eq!(backend(&p, "smtp/mx1").0, "ready");
    std::fs::remove_dir_all(dir.path("state/.intent.json.tmp")).unwrap();
    assert_eq!(p.ctl("drain smtp/mx1"), "ok\n");
}

#[test]
fn unusable_state_dir_stops_the_start_with_its_line() {
    let e1 = Echo::start();
    let dir = TempDir::new("state-nodir");
    std::fs::write(dir.path("state"), b"a file, not a directory").unwrap();
    let cfg = lb_config(&dir, free_port(), &[("mx1", e1.addr)]);
    let path = dir.path("portico.toml");
    std::fs::write(&path, &cfg).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("portico.toml:2:13: state_dir \"")
            && err.contains("exists and is not a directory"),
        "{err}"
    );
}

#[test]
fn a_backend_removed_by_reload_gets_its_intent_back_when_it_returns() {
    let (e1, e2) = (Echo::start(), Echo::start());
    let dir = TempDir::new("state-reload");
    let port = free_port();
    let both = lb_config(&dir, port, &[("mx1", e1.addr), ("mx2", e2.addr)]);
    let p = Portico::start(&dir, &both);
    assert_eq!(p.ctl("drain smtp/mx2"), "ok\n");
    std::fs::write(&p.config, lb_config(&dir, port, &[("mx1", e1.addr)])).unwrap();
    assert_eq!(p.ctl("reload"), "ok\n");
    assert!(backends(&p).iter().all(|(b, _, _)| b != "smtp/mx2"));
    let text = std::fs::read_to_string(dir.path("state/intent.json")).unwrap();
    assert!(
        text.contains("backend/smtp/mx2/admin"),
        "kept, inert: {text}"
    );
    std::fs::write(&p.config, &both).unwrap();
    assert_eq!(p.ctl("reload"), "ok\n");
    assert_eq!(backend(&p, "smtp/mx2").0, "drain");
    assert_eq!(backend(&p, "smtp/mx1").0, "ready");
}

#[test]
fn gss_site_override_survives_a_restart() {
    let (e1, e2) = (Echo::start(), Echo::start());
    let dir = TempDir::new("state-gss");
    let dns = free_udp_tcp_port();
    let cfg = gss_node(&dir, dns, &e1, &e2, "");
    let server: SocketAddr = format!("127.0.0.1:{dns}").parse().unwrap();
    let name = "smtp.gslb.example.test.";
    let p = Portico::start(&dir, &cfg);
    let dc1: Vec<std::net::Ipv4Addr> = vec!["127.0.0.1".parse().unwrap()];
    let dc2: Vec<std::net::Ipv4Addr> = vec!["127.0.0.2".parse().unwrap()];
    assert_eq!(query_a(server, name), Some(dc1));
    assert_eq!(p.ctl("site down dc1"), "ok\n");
    assert_eq!(query_a(server, name), Some(dc2.clone()));

    let p = restart(p, &dir, &cfg, false);
    // The very first answer after the restart already honours the override.
    assert_eq!(query_a(server, name), Some(dc2));
    let sites = p.ctl("show sites");
    assert!(
        sites.lines().any(|l| l.starts_with("dc1 down down ")),
        "{sites}"
    );
    assert!(p.ctl("show events").contains("override down restored"));
}

#[test]
fn a_config_weight_change_wins_over_an_older_operator_weight() {
    let e1 = Echo::start();
    let dir = TempDir::new("state-weight");
    let port = free_port();
    let cfg = lb_config(&dir, port, &[("mx1", e1.addr)]);
    let p = Portico::start(&dir, &cfg);
    assert_eq!(p.ctl("set weight smtp/mx1 7"), "ok\n");
    // Restarted with the same config: the operator's weight.
    let p = restart(p, &dir, &cfg, false);
    assert_eq!(backend(&p, "smtp/mx1").1, "7");
    // Restarted with a new weight in the config: the config's.
    let heavier = cfg.replace(
        &format!("address = \"{}\" }}", e1.addr),
        &format!("address = \"{}\", weight = 3 }}", e1.addr),
    );
    assert_ne!(heavier, cfg);
    let p = restart(p, &dir, &heavier, false);
    assert_eq!(backend(&p, "smtp/mx1").1, "3");
    let events = p.ctl("show events");
    assert!(
        events.contains("operator weight 7 not applied: it was set when the config's weight was 1, the config now says 3"),
        "{events}"
    );
}

/// The zone's SOA serial as `server` answers it over UDP.
fn soa_serial(server: SocketAddr, zone: &str) -> Option<u32> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut msg = Message::new(4321, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(zone).ok()?, RecordType::SOA));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    sock.send_to(&msg.to_vec().ok()?, server).ok()?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    let reply = Message::from_vec(&buf[..n]).ok()?;
    reply.answers.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// A gss node in its own directory; `dns` is its DNS port. Apart from the ports
/// and the socket path, every node's config is the same.
fn gss_node(dir: &TempDir, dns: u16, e1: &Echo, e2: &Echo, extra_soa: &str) -> String {
    format!(
        r#"state_dir = "state"

[admin]
socket = "{sock}"

[gss]
listen = "127.0.0.1:{dns}"
zone = "gslb.example.test"
nameservers = ["ns1.gslb.example.test"]
{extra_soa}

[[gss.site]]
name = "dc1"
keepalives = [ {{ kind = "tcp", address = "{a1}" }} ]
probe_defaults = {{ interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[gss.site]]
name = "dc2"
keepalives = [ {{ kind = "tcp", address = "{a2}" }} ]
probe_defaults = {{ interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[gss.name]]
name = "smtp"
sites = ["dc1", "dc2"]
answers = {{ dc1 = ["127.0.0.1"], dc2 = ["127.0.0.2"] }}
"#,
        sock = dir.path("admin.sock").display(),
        a1 = e1.addr,
        a2 = e2.addr,
    )
}

#[test]
fn soa_serial_agrees_across_nodes_increases_on_change_and_survives_restart() {
    let (e1, e2) = (Echo::start(), Echo::start());
    let zone = "gslb.example.test.";
    let (da, db) = (TempDir::new("serial-a"), TempDir::new("serial-b"));
    let (pa, pb) = (free_udp_tcp_port(), free_udp_tcp_port());
    let (sa, sb): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{pa}").parse().unwrap(),
        format!("127.0.0.1:{pb}").parse().unwrap(),
    );
    let cfg_a = gss_node(&da, pa, &e1, &e2, "");
    let cfg_b = gss_node(&db, pb, &e1, &e2, "");
    let a = Portico::start(&da, &cfg_a);
    // Started apart in time: the clock has no part in the serial.
    std::thread::sleep(Duration::from_millis(1100));
    let b = Portico::start(&db, &cfg_b);
    let first = soa_serial(sa, zone).expect("SOA from a");
    assert_eq!(first, 1, "the config's base (soa.serial defaults to 1)");
    assert_eq!(soa_serial(sb, zone), Some(first));

    // The same change on both: the same, higher serial.
    assert_eq!(a.ctl("site down dc1"), "ok\n");
    assert_eq!(b.ctl("site down dc1"), "ok\n");
    let second = soa_serial(sa, zone).unwrap();
    assert!(second > first, "{second} > {first}");
    assert_eq!(soa_serial(sb, zone), Some(second));
    let saved = std::fs::read_to_string(da.path("state/gss-serial.json")).unwrap();
    assert!(saved.contains(&format!("\"serial\":{second}")), "{saved}");

    // A restart with the same answers (the override is restored) keeps it.
    let a = restart(a, &da, &cfg_a, false);
    assert_eq!(soa_serial(sa, zone), Some(second));
    // kill -9 as well: the serial was saved when it was served.
    let a = restart(a, &da, &cfg_a, true);
    assert_eq!(soa_serial(sa, zone), Some(second));

    // Answers move back: higher again, on both.
    assert_eq!(a.ctl("site auto dc1"), "ok\n");
    assert_eq!(b.ctl("site auto dc1"), "ok\n");
    let third = soa_serial(sa, zone).unwrap();
    assert!(third > second, "{third} > {second}");
    assert_eq!(soa_serial(sb, zone), Some(third));

    // An operator moves every node to a chosen serial with the config's base.
    let based = gss_node(&da, pa, &e1, &e2, "soa = { serial = 2026112900 }");
    std::fs::write(&a.config, &based).unwrap();
    assert_eq!(a.ctl("reload"), "ok\n");
    assert_eq!(soa_serial(sa, zone), Some(2_026_112_900));
}

/// Two gss nodes of one cluster whose histories differ (node a saw a failover and
/// its failback before node b started) serve the same answers, so within a gossip
/// round they serve the same serial: b follows a's newer serial for those answers.
/// The next change moves both past it, to one serial.
#[test]
fn soa_serial_converges_across_a_cluster_after_different_histories() {
    let (e1, e2) = (Echo::start(), Echo::start());
    let zone = "gslb.example.test.";
    let (da, db) = (TempDir::new("cserial-a"), TempDir::new("cserial-b"));
    let (pa, pb) = (free_udp_tcp_port(), free_udp_tcp_port());
    let (ga, gb) = (free_udp_tcp_port(), free_udp_tcp_port());
    let secret = da.path("cluster.key");
    std::fs::write(&secret, "serial-secret-0123456789abcdef\n").unwrap();
    let cluster = |node: &str| {
        format!(
            "[cluster]\nid = \"serial\"\nnode = \"{node}\"\nsecret_file = \"{}\"\ngossip_interval = \"100ms\"\nstale_after = \"1s\"\n\n[[cluster.member]]\nid = \"a\"\naddress = \"127.0.0.1:{ga}\"\n\n[[cluster.member]]\nid = \"b\"\naddress = \"127.0.0.1:{gb}\"\n\n",
            secret.display()
        )
    };
    // quorum = 1: each node decides on its own view, so a runs (and fails over)
    // alone before b exists.
    let node = |dir: &TempDir, dns: u16, name: &str| {
        gss_node(dir, dns, &e1, &e2, "quorum = 1") + "\n" + &cluster(name)
    };
    let (sa, sb): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{pa}").parse().unwrap(),
        format!("127.0.0.1:{pb}").parse().unwrap(),
    );
    let a = Portico::start(&da, &node(&da, pa, "a"));
    assert_eq!(soa_serial(sa, zone), Some(1));
    assert_eq!(a.ctl("site down dc1"), "ok\n");
    assert_eq!(a.ctl("site auto dc1"), "ok\n");
    let a_serial = soa_serial(sa, zone).unwrap();
    assert_eq!(a_serial, 3, "two answer changes on a");

    // b starts with no history: the base serial, the same answers as a.
    let b = Portico::start(&db, &node(&db, pb, "b"));
    let joined = poll(Duration::from_secs(10), || {
        (soa_serial(sb, zone) == Some(a_serial)).then_some(())
    });
    assert!(
        joined.is_some(),
        "b serves {:?}, a {a_serial}\n{}",
        soa_serial(sb, zone),
        b.ctl("show cluster")
    );
    assert_eq!(soa_serial(sa, zone), Some(a_serial), "a never goes back");

    // dc1's keepalive target dies: both fail over, past a's serial, to one serial.
    drop(e1);
    let moved = poll(Duration::from_secs(10), || {
        let (x, y) = (soa_serial(sa, zone)?, soa_serial(sb, zone)?);
        (x == y && x > a_serial).then_some(x)
    });
    assert_eq!(
        moved,
        Some(a_serial + 1),
        "a {:?}, b {:?}",
        soa_serial(sa, zone),
        soa_serial(sb, zone)
    );
    assert_eq!(
        query_a(sa, "smtp.gslb.example.test"),
        query_a(sb, "smtp.gslb.example.test")
    );
}
