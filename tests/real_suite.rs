//! The end-to-end suite on real software from Debian packages, driven through
//! `portico run` processes: a real Postfix `smtpd` that requires the PROXY protocol
//! behind an SMTP VIP (with `swaks` and a small SMTP client as clients), Dovecot IMAP
//! backends behind a PROXY v2 VIP, nginx webmail backends, and Debian's `dig` against
//! the gss. It covers mail through the VIP, a backend killed under load, a node
//! drained and maintained, and the primary site failing with the DNS answers moving.
//!
//! Postfix runs without touching /etc: its `master` runs in the foreground on a
//! main.cf/master.cf written into the test's temp dir, with its own queue directory.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::config::{Config, Vip, REAL};
use common::real::{nginx, smtp_session, tcp_from, Dovecot, Postfix};
use common::{free_port, free_udp_tcp_port, http_get, poll, tool, Portico, TempDir};

fn swaks(server: &str, port: u16, extra: &[&str]) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--server", server, "--port", &port.to_string()])
        .args(["--from", "sender@example.test", "--to", "rcpt@example.test"])
        .args(["--helo", "client.example.test", "--timeout", "15"])
        .args(extra)
        .output()
        .expect("run swaks");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The `show backends` line of `vip/backend`, split in fields.
fn backend_fields(lb: &Portico, id: &str) -> Vec<String> {
    let vip = id.split('/').next().unwrap();
    lb.ctl(&format!("show backends {vip}"))
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

fn wait_backends_up(lb: &Portico, ids: &[&str]) {
    let up = poll(Duration::from_secs(20), || {
        ids.iter()
            .all(|id| backend_fields(lb, id).get(2).map(String::as_str) == Some("up"))
            .then_some(())
    });
    assert!(
        up.is_some(),
        "backends never all up:\n{}\nlog:\n{}",
        lb.ctl("show backends"),
        lb.log_text()
    );
}

// ---------------------------------------------------------------- 1. mail through the VIP

#[test]
fn mail_through_the_vip_to_real_postfix_with_proxy_v2_keeps_the_client_address() {
    let Some(_) = tool("swaks") else { return };
    let dir = TempDir::new("suite-mail");
    let Some(postfix) = Postfix::start(&dir, "mx1") else {
        return;
    };
    let vip = free_port();
    let config = Config::admin(&dir)
        .vip(
            Vip::new("smtp", format!("127.0.0.1:{vip}"))
                .with("proxy_protocol = \"v2\"")
                .backend("mx1", postfix.addr())
                .probe(
                    "smtp",
                    r#"interval = "500ms", timeout = "400ms", rise = 1, fall = 2"#,
                ),
        )
        .render();
    let lb = Portico::start(&dir, &config);
    // The smtp probe (PROXY v2 LOCAL header, then the SMTP dialogue) passes on Postfix.
    wait_backends_up(&lb, &["smtp/mx1"]);

    let (ok, text) = swaks(
        "127.0.0.1",
        vip,
        &[
            "--local-interface",
            "127.0.0.5",
            "--header",
            "Subject: via-vip",
        ],
    );
    assert!(
        ok,
        "swaks through the VIP failed:\n{text}\n{}",
        postfix.log()
    );
    let queued = text
        .lines()
        .find(|l| l.contains("<- ") && l.contains("250") && l.contains("queued as"))
        .unwrap_or_else(|| panic!("no 'queued as' in:\n{text}"));
    let queue_id = queued
        .split_whitespace()
        .last()
        .expect("queue id")
        .to_string();

    // Postfix logs the REAL client (127.0.0.5, from the PROXY header) for that message.
    let line = poll(Duration::from_secs(10), || {
        postfix
            .log()
            .lines()
            .find(|l| l.contains(&format!("{queue_id}: client=")))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no client= line for {queue_id}:\n{}", postfix.log()));
    assert!(line.contains("[127.0.0.5]"), "{line}");
    let connect = postfix
        .log()
        .lines()
        .filter(|l| l.contains("postfix/smtpd") && l.contains("connect from"))
        .any(|l| l.contains("[127.0.0.5]"));
    assert!(connect, "{}", postfix.log());
    // And it was delivered (to discard:).
    let delivered = poll(Duration::from_secs(10), || {
        postfix
            .log()
            .lines()
            .any(|l| l.contains(&queue_id) && l.contains("status=sent"))
            .then_some(())
    });
    assert!(delivered.is_some(), "{}", postfix.log());
}

// ---------------------------------------------------------------- 2. killed under load

struct Outcome {
    started: Instant,
    ended: Instant,
    result: Result<(), String>,
}

#[test]
fn a_postfix_killed_under_load_costs_no_session_started_after_its_ejection() {
    let dir = TempDir::new("suite-load");
    let Some(mut mx1) = Postfix::start(&dir, "mx1") else {
        return;
    };
    let Some(mx2) = Postfix::start(&dir, "mx2") else {
        return;
    };
    let vip_port = free_port();
    let config = Config::admin(&dir)
        .vip(
            Vip::new("smtp", format!("127.0.0.1:{vip_port}"))
                .with("balance = \"round_robin\"")
                .with("proxy_protocol = \"v2\"")
                .backend("mx1", mx1.addr())
                .backend("mx2", mx2.addr())
                .probe("smtp", REAL),
        )
        .render();
    let lb = Portico::start(&dir, &config);
    wait_backends_up(&lb, &["smtp/mx1", "smtp/mx2"]);
    let vip = SocketAddr::from(([127, 0, 0, 1], vip_port));

    const THREADS: usize = 4;
    const MAX_SESSIONS: usize = 400;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (stop, next, outcomes) = (stop.clone(), next.clone(), outcomes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let id = next.fetch_add(1, Ordering::SeqCst);
                    if id >= MAX_SESSIONS {
                        break;
                    }
                    let started = Instant::now();
                    let result = smtp_session([127, 0, 0, 5], vip, id);
                    let ended = Instant::now();
                    outcomes.lock().unwrap().push(Outcome {
                        started,
                        ended,
                        result,
                    });
                }
            })
        })
        .collect();
    let done = |o: &Arc<Mutex<Vec<Outcome>>>| o.lock().unwrap().len();

    // Load flows to both backends first.
    let delivered = |pf: &Postfix| pf.log().matches("status=sent").count();
    let going = poll(Duration::from_secs(20), || {
        (done(&outcomes) >= 30 && delivered(&mx1) > 0 && delivered(&mx2) > 0).then_some(())
    });
    if going.is_none() {
        stop.store(true, Ordering::SeqCst);
        panic!(
            "load never got going on both backends: {} sessions, delivered {}/{}",
            done(&outcomes),
            delivered(&mx1),
            delivered(&mx2)
        );
    }
    let killed = Instant::now();
    mx1.kill_hard();
    let ejected = poll(Duration::from_secs(10), || {
        (backend_fields(&lb, "smtp/mx1").get(2).map(String::as_str) != Some("up"))
            .then(Instant::now)
    });
    let Some(ejected) = ejected else {
        stop.store(true, Ordering::SeqCst);
        panic!("mx1 never left rotation:\n{}", lb.ctl("show backends"));
    };
    // Keep the load on until enough sessions started after the ejection finished.
    let after = |o: &Arc<Mutex<Vec<Outcome>>>| {
        o.lock()
            .unwrap()
            .iter()
            .filter(|x| x.started > ejected)
            .count()
    };
    let enough = poll(Duration::from_secs(25), || {
        (after(&outcomes) >= 40 || next.load(Ordering::SeqCst) >= MAX_SESSIONS).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("load thread");
    }
    assert!(enough.is_some(), "load stalled after the kill");

    let outcomes = outcomes.lock().unwrap();
    let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    let after_ejection: Vec<_> = outcomes.iter().filter(|o| o.started > ejected).collect();
    eprintln!(
        "load: {} sessions, {} failed overall, {} started after ejection ({:?} after the kill)",
        outcomes.len(),
        failed.len(),
        after_ejection.len(),
        ejected - killed
    );
    for o in &failed {
        eprintln!(
            "  failed, started {:?} the kill: {:?}",
            if o.started > killed {
                format!("{:?} after", o.started - killed)
            } else {
                format!("{:?} before", killed - o.started)
            },
            o.result
        );
    }
    let failed_after: Vec<_> = after_ejection
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect();
    assert!(
        failed_after.is_empty(),
        "sessions started after mx1's ejection failed: {failed_after:?}\n{}",
        lb.ctl("show backends")
    );
    assert!(
        after_ejection.len() >= 10,
        "too few sessions after the ejection"
    );
    // Only sessions caught by mx1's death fail (in flight on it, or accepted by its
    // dying listener in the milliseconds it took to die): none before the kill.
    assert!(
        failed.iter().all(|o| o.ended > killed),
        "sessions failed before the kill: {:?}",
        failed.iter().map(|o| &o.result).collect::<Vec<_>>()
    );
    // The survivor took the load after the kill.
    let sent = mx2
        .log()
        .lines()
        .filter(|l| l.contains("status=sent"))
        .count();
    assert!(sent >= after_ejection.len(), "mx2 delivered {sent}");
}

// ---------------------------------------------------------------- 3. drain and maint

/// A blocking IMAP client session.
struct Imap {
    w: TcpStream,
    r: BufReader<TcpStream>,
    tag: usize,
}

impl Imap {
    fn connect(local: [u8; 4], vip: SocketAddr) -> Imap {
        let s = tcp_from(local, vip).expect("connect to the IMAP VIP");
        let mut imap = Imap {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
            tag: 0,
        };
        let mut greeting = String::new();
        imap.r.read_line(&mut greeting).expect("greeting");
        assert!(greeting.starts_with("* OK"), "greeting {greeting:?}");
        imap
    }

    /// Sends one command; returns the tagged reply line (untagged lines dropped).
    fn cmd(&mut self, cmd: &str) -> String {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        self.w
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .unwrap_or_else(|e| panic!("send {cmd}: {e}"));
        loop {
            let mut line = String::new();
            let n = self
                .r
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("reply to {cmd}: {e}"));
            assert!(n > 0, "connection closed during {cmd}");
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                return rest.trim_end().to_string();
            }
        }
    }

    fn login(local: [u8; 4], vip: SocketAddr, user: &str) -> Imap {
        let mut imap = Imap::connect(local, vip);
        let reply = imap.cmd(&format!("LOGIN {user} secret"));
        assert!(reply.starts_with("OK"), "login {user}: {reply}");
        imap
    }

    fn logout(mut self) {
        let reply = self.cmd("LOGOUT");
        assert!(reply.starts_with("OK"), "logout: {reply}");
    }
}

#[test]
fn an_imap_node_drained_then_maintained_then_readied() {
    let dir = TempDir::new("suite-drain");
    let Some(d1) = Dovecot::start(&dir, "imap1") else {
        return;
    };
    let Some(d2) = Dovecot::start(&dir, "imap2") else {
        return;
    };
    let vip_port = free_port();
    let config = Config::admin(&dir)
        .vip(
            Vip::new("imap", format!("127.0.0.1:{vip_port}"))
                .with("balance = \"round_robin\"")
                .with("proxy_protocol = \"v2\"")
                .backend("imap1", format!("127.0.0.1:{}", d1.port))
                .backend("imap2", format!("127.0.0.1:{}", d2.port))
                .probe("imap", REAL),
        )
        .render();
    let lb = Portico::start(&dir, &config);
    wait_backends_up(&lb, &["imap/imap1", "imap/imap2"]);
    let vip = SocketAddr::from(([127, 0, 0, 1], vip_port));

    // A session held open on whichever node it got.
    let mut held = Imap::login([127, 0, 0, 7], vip, "held");
    let (node, other, held_dc, other_dc) = poll(Duration::from_secs(5), || {
        if d1.logged_in("held") {
            Some(("imap1", "imap2", &d1, &d2))
        } else if d2.logged_in("held") {
            Some(("imap2", "imap1", &d2, &d1))
        } else {
            None
        }
    })
    .unwrap_or_else(|| panic!("no dovecot logged the login:\n{}\n{}", d1.log(), d2.log()));
    let login = held_dc
        .log()
        .lines()
        .find(|l| l.contains("Login: user=<held>"))
        .unwrap()
        .to_string();
    assert!(login.contains("rip=127.0.0.7"), "{login}");
    let id = format!("imap/{node}");
    assert_eq!(
        backend_fields(&lb, &id).get(5).map(String::as_str),
        Some("1")
    );

    // Drain it: the held session keeps working, new sessions go to the other node.
    assert_eq!(lb.ctl(&format!("drain {id}")).trim(), "ok");
    let f = backend_fields(&lb, &id);
    assert_eq!(f[3], "drain", "{f:?}");
    for _ in 0..3 {
        let reply = held.cmd("NOOP");
        assert!(reply.starts_with("OK"), "NOOP while draining: {reply}");
    }
    for i in 0..4 {
        let user = format!("new{i}");
        Imap::login([127, 0, 0, 8], vip, &user).logout();
        assert!(
            poll(Duration::from_secs(5), || other_dc
                .logged_in(&user)
                .then_some(()))
            .is_some(),
            "{user} did not reach {other}:\n{}",
            other_dc.log()
        );
        assert!(!held_dc.logged_in(&user), "{user} reached drained {node}");
    }
    // Still busy: `wait drained` times out.
    let (ok, out) = lb.ctl_raw(&["wait", "drained", &id, "1"]).expect("run ctl");
    assert!(!ok && out.contains("timeout"), "{out}");
    // It returns ok once the held session logs out.
    let waiter = {
        let socket = lb.socket.clone();
        let id = id.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let out = Command::new(common::bin())
                .args(["ctl", "--socket"])
                .arg(&socket)
                .args(["wait", "drained", &id, "10"])
                .output()
                .expect("run ctl");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                start.elapsed(),
            )
        })
    };
    assert!(held.cmd("NOOP").starts_with("OK"));
    held.logout();
    let (ok, out, took) = waiter.join().unwrap();
    assert!(ok && out.trim() == "ok", "wait drained: {out}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        backend_fields(&lb, &id).get(5).map(String::as_str),
        Some("0")
    );

    // Maintenance: admin `maint`, and no more probes reach the node while the other
    // node keeps being probed.
    assert_eq!(lb.ctl(&format!("maint {id}")).trim(), "ok");
    let f = backend_fields(&lb, &id);
    assert_eq!(f[3], "maint", "{f:?}");
    // Probe rounds are counted on the other node, which is probed at the same
    // interval: once it has seen a new probe, one that was in flight to the held
    // node when it went into maint has landed; two more rounds later the held node
    // must not have been contacted again.
    let probes_on_other = |more: usize| {
        let from = other_dc.connection_lines();
        poll(Duration::from_secs(10), || {
            (other_dc.connection_lines() >= from + more).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "the probes of {other} are not visible in its log, so this check proves nothing:\n{}",
                other_dc.log()
            )
        })
    };
    probes_on_other(1);
    let held_before = held_dc.connection_lines();
    probes_on_other(2);
    let held_after = held_dc.connection_lines();
    assert_eq!(
        held_after,
        held_before,
        "{node} in maint was still contacted:\n{}",
        held_dc.log()
    );
    for i in 0..2 {
        let user = format!("maint{i}");
        Imap::login([127, 0, 0, 8], vip, &user).logout();
        assert!(!held_dc.logged_in(&user));
    }

    // Ready: back in rotation once its probes pass, and it takes new sessions again.
    assert_eq!(lb.ctl(&format!("ready {id}")).trim(), "ok");
    let back = poll(Duration::from_secs(10), || {
        let f = backend_fields(&lb, &id);
        (f.get(2).map(String::as_str) == Some("up")
            && f.get(3).map(String::as_str) == Some("ready"))
        .then_some(())
    });
    assert!(back.is_some(), "{}", lb.ctl("show backends"));
    for i in 0..4 {
        Imap::login([127, 0, 0, 8], vip, &format!("back{i}")).logout();
    }
    let reached = poll(Duration::from_secs(5), || {
        (0..4)
            .any(|i| held_dc.logged_in(&format!("back{i}")))
            .then_some(())
    });
    assert!(
        reached.is_some(),
        "{node} got no session after ready:\n{}",
        held_dc.log()
    );
}

// ---------------------------------------------------------------- 4. site failover

struct Site {
    postfix: Postfix,
    _nginx: common::real::Nginx,
    smtp_port: u16,
    web_port: u16,
    http: u16,
    lb: Portico,
    _dir: TempDir,
}

fn site(name: &str, vip_ip: &str) -> Option<Site> {
    let dir = TempDir::new(&format!("suite-{name}"));
    let postfix = Postfix::start(&dir, &format!("{name}-mx1"))?;
    let web_backend = nginx(&dir, &format!("{name}-web1"))?;
    let web = web_backend.port;
    let (http, smtp_port, web_port) = (free_port(), free_port(), free_port());
    let config = Config::admin(&dir)
        .http(http)
        .vip(
            Vip::new("smtp", format!("{vip_ip}:{smtp_port}"))
                .with("proxy_protocol = \"v2\"")
                .backend("mx1", postfix.addr())
                .probe("smtp", REAL),
        )
        .vip(
            Vip::new("webmail", format!("{vip_ip}:{web_port}"))
                .mode("http")
                .backend("web1", format!("127.0.0.1:{web}"))
                .probe(
                    "http",
                    &format!("path = \"/health\", expect_status = 200, {REAL}"),
                ),
        )
        .render();
    let lb = Portico::start(&dir, &config);
    Some(Site {
        postfix,
        _nginx: web_backend,
        smtp_port,
        web_port,
        http,
        lb,
        _dir: dir,
    })
}

fn dig_short(port: u16, name: &str) -> Vec<String> {
    let out = Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(["+time=1", "+tries=2", "+norec", "+short", name, "A"])
        .output()
        .expect("run dig");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

fn curl(ip: &str, port: u16) -> (bool, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-H",
            "Host: webmail.example.test",
        ])
        .arg(format!("http://{ip}:{port}/"))
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_primary_site_fails_and_the_dns_answers_move() {
    let Some(_) = tool("dig") else { return };
    let Some(_) = tool("swaks") else { return };
    let Some(_) = tool("curl") else { return };
    let Some(mut dc1) = site("dc1", "127.0.0.1") else {
        return;
    };
    let Some(dc2) = site("dc2", "127.0.0.2") else {
        return;
    };
    for (s, ip) in [(&dc1, "127.0.0.1"), (&dc2, "127.0.0.2")] {
        let addr = SocketAddr::from(([127, 0, 0, 1], s.http));
        let up = poll(Duration::from_secs(20), || {
            let (code, body) = http_get(addr, "/status").ok()?;
            let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
            (code == 200 && doc["vips"].as_array()?.iter().all(|v| v["up"] == true)).then_some(())
        });
        assert!(up.is_some(), "every VIP up: {}", s.lb.ctl("show backends"));
        // Both services work through each site's VIPs.
        let (ok, text) = swaks(ip, s.smtp_port, &[]);
        assert!(ok, "swaks via {ip}:\n{text}");
        let (ok, text) = curl(ip, s.web_port);
        assert!(ok && text.contains("-web1"), "curl via {ip}: {text}");
    }

    let gss_dir = TempDir::new("suite-gss");
    let dns = free_udp_tcp_port();
    let probe = r#"interval = "300ms", timeout = "250ms", rise = 1, fall = 2"#;
    let config = format!(
        r#"
[admin]
socket = "{sock}"

[gss]
listen = "127.0.0.1:{dns}"
zone = "gslb.example.test"
ttl = 5
nameservers = ["ns1.gslb.example.test"]

[[gss.site]]
name = "dc1"
keepalives = [ {{ kind = "lb_status", url = "http://127.0.0.1:{h1}/status" }} ]
probe_defaults = {{ {probe} }}

[[gss.site]]
name = "dc2"
keepalives = [ {{ kind = "lb_status", url = "http://127.0.0.1:{h2}/status" }} ]
probe_defaults = {{ {probe} }}

[[gss.name]]
name = "smtp"
sites = ["dc1", "dc2"]
answers = {{ dc1 = ["127.0.0.1"], dc2 = ["127.0.0.2"] }}

[[gss.name]]
name = "webmail"
sites = ["dc1", "dc2"]
answers = {{ dc1 = ["127.0.0.1"], dc2 = ["127.0.0.2"] }}
"#,
        sock = gss_dir.path("admin.sock").display(),
        h1 = dc1.http,
        h2 = dc2.http,
    );
    let gss = Portico::start(&gss_dir, &config);
    let answer = poll(Duration::from_secs(10), || {
        let a = dig_short(dns, "smtp.gslb.example.test");
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(answer, Some(vec!["127.0.0.1".to_string()]));
    assert_eq!(
        dig_short(dns, "webmail.gslb.example.test"),
        vec!["127.0.0.1"]
    );

    // dc1's mail server dies: dc1's smtp VIP goes down, so its /status fails the gss
    // keepalive, and the answers move to dc2.
    let killed = Instant::now();
    dc1.postfix.kill_hard();
    let moved = poll(Duration::from_secs(15), || {
        (dig_short(dns, "smtp.gslb.example.test") == ["127.0.0.2"]).then(|| killed.elapsed())
    });
    let Some(took) = moved else {
        panic!(
            "answers did not move:\n{}\n{}",
            gss.ctl("explain smtp"),
            dc1.lb.ctl("show vips")
        );
    };
    eprintln!("dns answers moved {took:?} after the kill");
    // lb: interval×fall + timeout; gss: the same again; plus slack for a loaded machine.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        dig_short(dns, "webmail.gslb.example.test"),
        vec!["127.0.0.2"]
    );
    let events = gss.ctl("show events 50");
    let down = events
        .lines()
        .find(|l| l.contains("dc1") && l.contains("down") && l.contains("detected in"))
        .unwrap_or_else(|| panic!("no site-down event with its detection time:\n{events}"));
    // The event carries an RFC 3339 timestamp.
    let ts = down.split_whitespace().next().unwrap_or("");
    assert!(humantime::parse_rfc3339(ts).is_ok(), "{down}");
    assert!(down.contains(" dc1 down"), "{down}");
    let sites = gss.ctl("show sites");
    assert!(
        sites
            .lines()
            .any(|l| l.starts_with("dc1 ") && l.split_whitespace().nth(1) == Some("down")),
        "{sites}"
    );

    // Mail to the new answer is delivered by dc2.
    let (ok, text) = swaks("127.0.0.2", dc2.smtp_port, &[]);
    assert!(ok, "swaks via dc2 after the failover:\n{text}");
    let delivered = poll(Duration::from_secs(10), || {
        (dc2.postfix
            .log()
            .lines()
            .filter(|l| l.contains("status=sent"))
            .count()
            >= 2)
            .then_some(())
    });
    assert!(delivered.is_some(), "{}", dc2.postfix.log());
}
