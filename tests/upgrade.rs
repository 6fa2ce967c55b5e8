//! Binary upgrade of a running `portico run` (SIGUSR2, or `run --upgrade-from`): the
//! successor takes every listening socket over, probes before it accepts, carries the
//! operator's drain over, and nothing is refused or lost while it happens (real
//! Postfix behind an SMTP VIP, real nginx behind an http VIP, DNS over UDP and TCP);
//! an upgrade that fails to start leaves the old process serving.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::real::{nginx, smtp_reply, smtp_session, Postfix};
use common::{
    bin, echo_roundtrip, free_port, free_udp_tcp_port, poll, query_a, query_a_tcp, Echo, Portico,
    TempDir,
};
use shared::testing::listening_sockets;

fn config(
    dir: &TempDir,
    vip: u16,
    http: u16,
    dns: u16,
    e1: SocketAddr,
    e2: SocketAddr,
    ka: SocketAddr,
) -> String {
    format!(
        r#"
drain_timeout = "20s"

[admin]
socket = "{sock}"

[http]
listen = "127.0.0.1:{http}"

[[vip]]
name = "echo"
listen = "127.0.0.1:{vip}"
backends = [ {{ name = "e1", address = "{e1}" }}, {{ name = "e2", address = "{e2}" }} ]
probe = {{ kind = "tcp", interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

{gss}"#,
        gss = common::one_site_gss(dns, ka, "mx", "192.0.2.25"),
        sock = dir.path("admin.sock").display(),
    )
}

/// The successor's pid, from the event it records when it takes over.
fn successor_pid(p: &Portico) -> Option<i32> {
    // While the admin socket changes hands it may not answer for a moment.
    let (_, events) = p.ctl_raw(&["show", "events"]).ok()?;
    events
        .lines()
        .find_map(|l| l.split("took over from the running process (pid ").nth(1))
        .and_then(|rest| rest.trim_end_matches(')').parse().ok())
}

/// Kills a process by pid on drop (the successor is not our child).
struct Kill(i32);
impl Drop for Kill {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

/// One HTTP/1.1 response read from `r`: (status, body); `Ok(None)` when the server
/// closed before sending a byte of it (an idle keep-alive it had decided to close).
fn read_response(r: &mut impl BufRead) -> std::io::Result<Option<(u16, String)>> {
    let mut status = String::new();
    if r.read_line(&mut status)? == 0 {
        return Ok(None);
    }
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':').unwrap_or((h, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().unwrap_or(0);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.trim().eq_ignore_ascii_case("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        r.read_exact(&mut body)?;
    }
    Ok(Some((code, String::from_utf8_lossy(&body).into_owned())))
}

/// A client of the http VIP that keeps its connection alive for `per_connection`
/// requests, then opens a new one. Like any HTTP client it retries a request on a
/// new connection when a reused one was closed before the response began (RFC 9112
/// section 9.3.1); such retries are counted apart. Anything else is a failure.
struct HttpClient {
    port: u16,
    conn: Option<(BufReader<TcpStream>, TcpStream, u32)>,
    per_connection: u32,
    retried: u32,
}

impl HttpClient {
    fn get(&mut self) -> Result<String, String> {
        let reused = self.conn.is_some();
        match self.try_get() {
            Ok(Some(body)) => Ok(body),
            Ok(None) if reused => {
                self.retried += 1;
                self.try_get()?
                    .ok_or_else(|| "new connection closed".to_string())
            }
            Ok(None) => Err("new connection closed before the response".into()),
            Err(e) => Err(e),
        }
    }

    fn try_get(&mut self) -> Result<Option<String>, String> {
        if self.conn.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            let w = s.try_clone().map_err(|e| e.to_string())?;
            self.conn = Some((BufReader::new(s), w, 0));
        }
        let Some((r, w, n)) = self.conn.as_mut() else {
            return Err("no connection".into());
        };
        *n += 1;
        let (n, last) = (*n, *n >= self.per_connection);
        let req = format!(
            "GET / HTTP/1.1\r\nHost: web.example.test\r\nConnection: {}\r\n\r\n",
            if last { "close" } else { "keep-alive" }
        );
        let got = match w.write_all(req.as_bytes()) {
            Ok(()) => read_response(r),
            Err(e) => Err(e),
        };
        let got = match got {
            Ok(g) => g,
            // A reused connection the server closed: reset on write or read.
            Err(e) if n > 1 && is_closed(&e) => None,
            Err(e) => {
                self.conn = None;
                return Err(format!("request {n} on its connection: {e}"));
            }
        };
        if last || got.is_none() {
            self.conn = None;
        }
        match got {
            Some((200, body)) => Ok(Some(body)),
            Some((code, body)) => Err(format!("{code} {body}")),
            None => Ok(None),
        }
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | BrokenPipe | UnexpectedEof)
}

/// Outcomes of one kind of load.
#[derive(Default)]
struct Tally {
    ok: AtomicU32,
    failed: AtomicU32,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, r: Result<(), String>) {
        match r {
            Ok(()) => self.ok.fetch_add(1, Ordering::SeqCst),
            Err(e) => {
                shared::sync::lock(&self.errors).push(e);
                self.failed.fetch_add(1, Ordering::SeqCst)
            }
        };
    }
    fn ok(&self) -> u32 {
        self.ok.load(Ordering::SeqCst)
    }
    fn failed(&self) -> u32 {
        self.failed.load(Ordering::SeqCst)
    }
    fn errors(&self) -> Vec<String> {
        shared::sync::lock(&self.errors)
            .iter()
            .take(10)
            .cloned()
            .collect()
    }
}

/// Runs `one` in a loop on a thread until `stop`, at most `max` times and 90 s.
fn load_loop(
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
    max: u32,
    mut one: impl FnMut(u32) -> Result<(), String> + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let (stop, tally) = (stop.clone(), tally.clone());
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) && n < max && started.elapsed() < Duration::from_secs(90)
        {
            tally.record(one(n));
            n += 1;
        }
    })
}

/// The `show backends VIP` line of `id`.
fn backend_line(p: &Portico, vip: &str, id: &str) -> String {
    p.ctl(&format!("show backends {vip}"))
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn sigusr2_upgrades_under_smtp_http_and_dns_load_without_losing_anything() {
    let dir = TempDir::new("upgrade");
    let Some(postfix) = Postfix::start(&dir, "mx1") else {
        return;
    };
    let Some(web1) = nginx(&dir, "web1") else {
        return;
    };
    let Some(web2) = nginx(&dir, "web2") else {
        return;
    };
    let ka = Echo::start();
    let (smtp, web, http, dns) = (free_port(), free_port(), free_port(), free_udp_tcp_port());
    let probe = r#"interval = "300ms", timeout = "250ms", rise = 1, fall = 2"#;
    let cfg = format!(
        r#"
drain_timeout = "30s"

[admin]
socket = "{sock}"

[http]
listen = "127.0.0.1:{http}"

[[vip]]
name = "smtp"
listen = "127.0.0.1:{smtp}"
proxy_protocol = "v2"
backends = [ {{ name = "mx1", address = "{mx1}" }} ]
probe = {{ kind = "smtp", {probe} }}

[[vip]]
name = "web"
mode = "http"
listen = "127.0.0.1:{web}"
balance = "round_robin"
backends = [
  {{ name = "web1", address = "127.0.0.1:{w1}" }},
  {{ name = "web2", address = "127.0.0.1:{w2}" }},
]
probe = {{ kind = "http", path = "/health", expect_status = 200, {probe} }}
{gss}"#,
        sock = dir.path("admin.sock").display(),
        mx1 = postfix.addr(),
        w1 = web1.port,
        w2 = web2.port,
        gss = common::one_site_gss(dns, ka.addr, "mx", "192.0.2.25"),
    );
    let mut old = Portico::start(&dir, &cfg);
    poll(Duration::from_secs(20), || {
        ["smtp/mx1", "web/web1", "web/web2"]
            .iter()
            .all(|id| {
                let vip = id.split('/').next().unwrap_or_default();
                backend_line(&old, vip, id).split_whitespace().nth(2) == Some("up")
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("backends never up:\n{}", old.ctl("show backends")));
    old.ctl("drain web/web2");
    assert!(
        backend_line(&old, "web", "web/web2").contains(" drain "),
        "{}",
        old.ctl("show backends web")
    );
    let dns_addr = SocketAddr::from(([127, 0, 0, 1], dns));
    let answer = Some(vec!["192.0.2.25".parse().expect("ip")]);
    assert_eq!(query_a(dns_addr, "mx.gslb.example.test"), answer);
    assert_eq!(query_a_tcp(dns_addr, "mx.gslb.example.test").ok(), answer);
    let smtp_vip = SocketAddr::from(([127, 0, 0, 1], smtp));

    // A mail session open across the upgrade: greeted and past MAIL FROM now,
    // finished once the successor serves; the old process keeps it.
    let long = TcpStream::connect(smtp_vip).expect("long session");
    long.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut long_w = long.try_clone().expect("clone");
    let mut long_r = BufReader::new(long);
    assert!(smtp_reply(&mut long_r)
        .expect("greeting")
        .starts_with("220"));
    let mut long_step = |send: &str, want: &str| {
        long_w.write_all(send.as_bytes()).expect("write");
        let reply = smtp_reply(&mut long_r).expect("reply");
        assert!(reply.starts_with(want), "after {send:?}: {reply}");
        reply
    };
    long_step("EHLO long.example.test\r\n", "250");
    long_step("MAIL FROM:<long@example.test>\r\n", "250");

    // Load, each loop bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let (mail, pages, udp, tcp) = (
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
        Arc::new(Tally::default()),
    );
    let retried = Arc::new(AtomicU32::new(0));
    let mut loops = vec![
        load_loop(&stop, &mail, 5_000, move |n| {
            smtp_session([127, 0, 0, 1], smtp_vip, n as usize)
        }),
        load_loop(&stop, &udp, 300_000, move |_| {
            query_a(dns_addr, "mx.gslb.example.test")
                .filter(|a| a.len() == 1)
                .map(|_| ())
                .ok_or_else(|| "UDP query lost".to_string())
        }),
        load_loop(&stop, &tcp, 300_000, move |_| {
            match query_a_tcp(dns_addr, "mx.gslb.example.test")?.len() {
                1 => Ok(()),
                n => Err(format!("{n} addresses")),
            }
        }),
    ];
    {
        let mut client = HttpClient {
            port: web,
            conn: None,
            per_connection: 5,
            retried: 0,
        };
        let retried = retried.clone();
        // The drained web2 gets no new request, before or after the upgrade.
        loops.push(load_loop(&stop, &pages, 100_000, move |_| {
            let body = client.get();
            retried.store(client.retried, Ordering::SeqCst);
            match body?.trim() {
                "web1" => Ok(()),
                other => Err(format!("answered by {other:?}")),
            }
        }));
    }
    poll(Duration::from_secs(20), || {
        [&mail, &pages, &udp, &tcp]
            .iter()
            .all(|t| t.ok() > 10)
            .then_some(())
    })
    .expect("load flowing");

    old.signal(libc::SIGUSR2);
    let pid = poll(Duration::from_secs(30), || successor_pid(&old))
        .unwrap_or_else(|| panic!("no successor took over:\n{}", old.log_text()));
    let _kill = Kill(pid);
    assert_ne!(pid, old.child.id() as i32);
    // The admin socket is the successor's now; it carried the drain over.
    let web2_line = backend_line(&old, "web", "web/web2");
    assert!(web2_line.contains(" drain "), "{web2_line}");
    // More load through the successor, of every kind.
    let after: Vec<u32> = [&mail, &pages, &udp, &tcp].iter().map(|t| t.ok()).collect();
    let kinds = [&mail, &pages, &udp, &tcp];
    let served = poll(Duration::from_secs(20), || {
        kinds
            .iter()
            .zip(&after)
            .all(|(t, a)| t.ok() > a + 20)
            .then_some(())
    });
    assert!(
        served.is_some(),
        "the successor does not serve every kind of load: ok {:?} -> {:?}, failed {:?}: {:?}\n{}",
        after,
        kinds.iter().map(|t| t.ok()).collect::<Vec<_>>(),
        kinds.iter().map(|t| t.failed()).collect::<Vec<_>>(),
        kinds.iter().flat_map(|t| t.errors()).collect::<Vec<_>>(),
        old.log_text()
    );
    // The long session finishes on the old process, which waited for it.
    assert!(
        old.child.try_wait().expect("wait").is_none(),
        "old exited with a session open"
    );
    long_step("RCPT TO:<rcpt@example.test>\r\n", "250");
    long_step("DATA\r\n", "354");
    let queued = long_step(
        "Subject: across the upgrade\r\n\r\nopened before, finished after\r\n.\r\n",
        "250",
    );
    long_step("QUIT\r\n", "221");
    // The session ends: the old process has nothing left to drain.
    drop((long_w, long_r));
    let status = old
        .wait_exit(Duration::from_secs(20))
        .expect("the old process exits once its session ended");
    assert!(status.success(), "{status}");
    let queue_id = queued
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        poll(Duration::from_secs(10), || postfix
            .log()
            .contains(&format!("{queue_id}: client="))
            .then_some(()))
        .is_some(),
        "the long session's mail {queue_id} never reached Postfix:\n{}",
        postfix.log()
    );

    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.join().expect("load thread");
    }
    eprintln!(
        "through the upgrade: smtp {} ok {} failed; http {} ok {} failed ({} keep-alive retries); dns udp {} ok {} lost; dns tcp {} ok {} failed",
        mail.ok(),
        mail.failed(),
        pages.ok(),
        pages.failed(),
        retried.load(Ordering::SeqCst),
        udp.ok(),
        udp.failed(),
        tcp.ok(),
        tcp.failed()
    );
    for (what, t) in [
        ("SMTP sessions", &mail),
        ("HTTP requests", &pages),
        ("UDP DNS queries", &udp),
        ("TCP DNS queries", &tcp),
    ] {
        assert_eq!(t.failed(), 0, "{what} failed: {:?}", t.errors());
    }
}

#[test]
fn an_upgrade_that_fails_to_start_leaves_the_old_process_serving() {
    let (e1, e2, ka) = (Echo::start(), Echo::start(), Echo::start());
    let dir = TempDir::new("upgrade-fail");
    let (vip, http, dns) = (free_port(), free_port(), free_udp_tcp_port());
    let cfg = config(&dir, vip, http, dns, e1.addr, e2.addr, ka.addr);
    let mut old = Portico::start(&dir, &cfg);
    // The successor's config adds a VIP on a port someone else holds: it receives
    // the sockets, then fails to bind and exits before it is ready.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("blocker");
    let taken = blocker.local_addr().expect("addr").port();
    let broken = format!(
        "{cfg}\n[[vip]]\nname = \"extra\"\nlisten = \"127.0.0.1:{taken}\"\nbackends = [ {{ name = \"x\", address = \"{}\" }} ]\n",
        e1.addr
    );
    let broken_path = dir.path("broken.toml");
    std::fs::write(&broken_path, broken).expect("write");
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&broken_path)
        .arg("--upgrade-from")
        .arg(dir.path("admin.sock.upgrade"))
        .output()
        .expect("run the successor");
    assert!(!out.status.success(), "the broken successor must fail");
    // The old process never stopped: it accepts, answers DNS and its admin socket.
    let mut s = TcpStream::connect(("127.0.0.1", vip)).expect("still accepting");
    assert!(echo_roundtrip(&mut s, b"still here\n"));
    assert_eq!(
        query_a(
            SocketAddr::from(([127, 0, 0, 1], dns)),
            "mx.gslb.example.test"
        ),
        Some(vec!["192.0.2.25".parse().expect("ip")])
    );
    let events = poll(Duration::from_secs(5), || {
        let e = old.ctl("show events");
        e.contains("upgrade aborted").then_some(e)
    });
    assert!(events.is_some(), "{}", old.ctl("show events"));
    assert!(
        old.child.try_wait().expect("wait").is_none(),
        "the old process is running"
    );
    old.signal(libc::SIGTERM);
    drop(s);
    assert!(old.wait_exit(Duration::from_secs(15)).is_some());
}

/// A gss in a two-node cluster (`a`, `b`) on loopback: both vantage points vote on
/// the one site `dc1`, kept alive by `keepalive`.
fn cluster_node(
    dir: &TempDir,
    me: &str,
    gossip: (u16, u16),
    dns: u16,
    keepalive: SocketAddr,
) -> String {
    let secret = dir.path("cluster.key");
    std::fs::write(&secret, "upgrade-secret-0123456789abcdef\n").expect("secret");
    format!(
        r#"
drain_timeout = "5s"

[admin]
socket = "{sock}"

[cluster]
id = "upgrade"
node = "{me}"
secret_file = "{secret}"
gossip_interval = "200ms"
stale_after = "1500ms"

[[cluster.member]]
id = "a"
address = "127.0.0.1:{ga}"

[[cluster.member]]
id = "b"
address = "127.0.0.1:{gb}"
{gss}"#,
        sock = dir.path("admin.sock").display(),
        secret = secret.display(),
        ga = gossip.0,
        gb = gossip.1,
        gss = common::one_site_gss(dns, keepalive, "mx", "192.0.2.25"),
    )
}

/// `b`'s line in `show cluster` on `a`: (state, seconds since last contact).
fn member_state(a: &Portico, id: &str) -> Option<(String, f64)> {
    let (ok, out) = a.ctl_raw(&["show", "cluster"]).ok()?;
    let line = out
        .lines()
        .find(|l| ok && l.split_whitespace().next() == Some(id))?
        .to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    let age = f.get(4)?.trim_end_matches('s').parse().ok()?;
    Some((f.get(2)?.to_string(), age))
}

/// The `votes:` line of site `dc1` in `explain mx`.
fn votes(p: &Portico) -> String {
    p.ctl_raw(&["explain", "mx"])
        .map(|(_, out)| out)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("votes:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_upgraded_cluster_member_stays_the_same_member_and_its_votes_go_on() {
    let ka = Echo::start();
    let (dir_a, dir_b) = (TempDir::new("upgrade-ca"), TempDir::new("upgrade-cb"));
    let gossip = (free_udp_tcp_port(), free_udp_tcp_port());
    let (dns_a, dns_b) = (free_udp_tcp_port(), free_udp_tcp_port());
    let a = Portico::start(&dir_a, &cluster_node(&dir_a, "a", gossip, dns_a, ka.addr));
    let mut b = Portico::start(&dir_b, &cluster_node(&dir_b, "b", gossip, dns_b, ka.addr));
    poll(Duration::from_secs(20), || {
        (votes(&a).contains(" up 2 (")
            && votes(&b).contains(" up 2 (")
            && member_state(&a, "b").is_some_and(|(s, _)| s == "alive"))
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no agreement: {} / {}\n{}",
            votes(&a),
            votes(&b),
            a.log_text()
        )
    });

    let b_votes = |p: &Portico| p.ctl("show events").matches("vote: b ").count();
    let b_votes_before = b_votes(&a);

    // Watch b from a throughout the upgrade (bounded: 20 ms apart, at most 2000).
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let a_sock = dir_a.path("admin.sock");
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 2000 {
                n += 1;
                let out = std::process::Command::new(bin())
                    .args(["ctl", "--socket"])
                    .arg(&a_sock)
                    .args(["show", "cluster"])
                    .output();
                if let Ok(o) = out {
                    let text = String::from_utf8_lossy(&o.stdout).into_owned();
                    if let Some(l) = text.lines().find(|l| l.starts_with("b ")) {
                        seen.push(l.to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };

    b.signal(libc::SIGUSR2);
    let pid = poll(Duration::from_secs(30), || successor_pid(&b))
        .unwrap_or_else(|| panic!("no successor took over:\n{}", b.log_text()));
    let _kill = Kill(pid);
    assert!(
        b.wait_exit(Duration::from_secs(20)).is_some(),
        "the old b did not exit"
    );
    // The new b's heartbeat reaches a: contact stays fresh well after the handover.
    let fresh = poll(Duration::from_secs(10), || {
        member_state(&a, "b").filter(|(s, age)| s == "alive" && *age < 0.5)
    });
    assert!(fresh.is_some(), "{:?}", member_state(&a, "b"));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    let seen = watcher.join().expect("watcher");
    assert!(seen.len() > 20, "{seen:?}");
    // Never dead, never stale: the upgrade looks like at most a late heartbeat.
    for l in &seen {
        let f: Vec<&str> = l.split_whitespace().collect();
        let age: f64 = f
            .get(4)
            .and_then(|a| a.trim_end_matches('s').parse().ok())
            .unwrap_or(f64::MAX);
        assert!(
            f.get(2) == Some(&"alive") && age < 1.5,
            "a saw b as {l:?}\nall: {seen:?}"
        );
    }
    let v = votes(&a);
    assert!(v.contains(" up 2 (a, b) stale 0 "), "{v}");
    // No vote of b's was lost and came back (each change is an event).
    assert_eq!(b_votes(&a), b_votes_before, "{}", a.ctl("show events"));

    // b's votes go on: the site fails, and a counts the new b's vote for down.
    drop(ka);
    let both_down = poll(Duration::from_secs(15), || {
        let v = votes(&a);
        v.contains("down 2 (a, b)").then_some(v)
    });
    assert!(
        both_down.is_some(),
        "a never counted b's new vote: {}\n{}",
        votes(&a),
        a.ctl("show cluster")
    );
}

/// Under `Type=notify`, the successor tells the supervisor it is the main process
/// (`MAINPID=` its pid, with `READY=1`), and the old process, which goes on
/// draining, never says `STOPPING=1`: the service did not stop.
#[test]
fn the_successor_announces_itself_as_main_pid_and_the_service_never_stops() {
    let (e1, e2, ka) = (Echo::start(), Echo::start(), Echo::start());
    let dir = TempDir::new("upgrade-notify");
    let (vip, http, dns) = (free_port(), free_port(), free_udp_tcp_port());
    let cfg = config(&dir, vip, http, dns, e1.addr, e2.addr, ka.addr);
    let sock_path = dir.path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let notify_env = sock_path.display().to_string();
    let mut old = Portico::start_env(&dir, &cfg, &[("NOTIFY_SOCKET", notify_env.as_str())]);
    let mut buf = [0u8; 4096];
    let mut next = |sock: &std::os::unix::net::UnixDatagram| {
        sock.recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let first = next(&notify).expect("READY=1 of the first process");
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");

    old.signal(libc::SIGUSR2);
    let pid = poll(Duration::from_secs(30), || successor_pid(&old))
        .unwrap_or_else(|| panic!("no successor took over:\n{}", old.log_text()));
    let _kill = Kill(pid);
    let status = old
        .wait_exit(Duration::from_secs(30))
        .expect("the old process exits after its drain");
    assert!(status.success(), "{status}");
    // Everything sent up to the old process's exit (bounded: 50 datagrams, each
    // read waiting at most 1 s once the old process is gone).
    notify
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut heard = Vec::new();
    while heard.len() < 50 {
        match next(&notify) {
            Some(m) => heard.push(m),
            None => break,
        }
    }
    let main = heard
        .iter()
        .find(|m| m.lines().any(|l| l == format!("MAINPID={pid}")))
        .unwrap_or_else(|| panic!("no MAINPID={pid} in {heard:?}"));
    assert!(main.lines().any(|l| l == "READY=1"), "{main}");
    assert!(
        !heard.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{heard:?}"
    );
}

/// `portico_lb_accepted_total{vip="echo",worker=...}` of each worker, from `/metrics`.
fn accepted_by_worker(http: u16) -> Vec<(String, u64)> {
    let Ok((200, text)) = common::http_get(SocketAddr::from(([127, 0, 0, 1], http)), "/metrics")
    else {
        return Vec::new();
    };
    text.lines()
        .filter(|l| l.starts_with("portico_lb_accepted_total{") && l.contains("vip=\"echo\""))
        .filter_map(|l| {
            let worker = l.split("worker=\"").nth(1)?.split('"').next()?.to_string();
            let n = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((worker, n as u64))
        })
        .collect()
}

/// With several data-path workers a VIP is several `SO_REUSEPORT` sockets, and every
/// one must cross: one left behind would close, resetting the clients the kernel
/// queued on it. Under a load of fresh connections (each hashed to any socket of the
/// group), upgrades from 2 workers to 3 (the successor opens one more socket, and
/// only once it takes over), to 1 (it accepts on all three it received) and to 2
/// lose nothing.
#[test]
fn upgrades_hand_over_every_workers_socket_and_a_successor_with_other_workers_copes() {
    let (e1, e2, ka) = (Echo::start(), Echo::start(), Echo::start());
    let dir = TempDir::new("upgrade-workers");
    let (vip, http, dns) = (free_port(), free_port(), free_udp_tcp_port());
    let cfg = config(&dir, vip, http, dns, e1.addr, e2.addr, ka.addr);
    let mut current = Portico::start_env(&dir, &cfg, &[("PORTICO_WORKERS", "2")]);
    assert_eq!(listening_sockets(vip), 2, "one socket per worker");
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let vip_addr = SocketAddr::from(([127, 0, 0, 1], vip));
    let loops: Vec<_> = (0..4)
        .map(|_| {
            load_loop(&stop, &tally, 1_000_000, move |n| {
                let mut s = TcpStream::connect_timeout(&vip_addr, Duration::from_secs(5))
                    .map_err(|e| format!("connect: {e}"))?;
                if echo_roundtrip(&mut s, format!("hello {n}\n").as_bytes()) {
                    Ok(())
                } else {
                    Err("echo lost".to_string())
                }
            })
        })
        .collect();
    poll(Duration::from_secs(20), || (tally.ok() > 100).then_some(())).expect("load flowing");
    for (workers, sockets) in [("3", 3), ("1", 3), ("2", 3)] {
        // The running process binds its upgrade socket with its admin socket, once it
        // took over itself.
        poll(Duration::from_secs(20), || {
            let answers = current.ctl_raw(&["help"]).is_ok_and(|(ok, _)| ok);
            (answers && dir.path("admin.sock.upgrade").exists()).then_some(())
        })
        .expect("the running process answers on its admin and upgrade sockets");
        let log = dir.path(&format!("successor-{workers}.log"));
        let child = std::process::Command::new(bin())
            .args(["run", "--config"])
            .arg(&current.config)
            .arg("--upgrade-from")
            .arg(dir.path("admin.sock.upgrade"))
            .env("RUST_LOG", "info")
            .env("PORTICO_WORKERS", workers)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start the successor");
        let status = current
            .wait_exit(Duration::from_secs(60))
            .unwrap_or_else(|| {
                panic!(
                    "the predecessor never handed over to {workers} workers:\n{}\nsuccessor:\n{}",
                    current.log_text(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        assert!(status.success(), "{status}");
        current = Portico {
            child,
            socket: current.socket.clone(),
            config: current.config.clone(),
            log,
        };
        // The successor listens on a socket it opened only once it took over.
        let listening = poll(Duration::from_secs(10), || {
            (listening_sockets(vip) == sockets).then_some(())
        });
        assert!(
            listening.is_some(),
            "{} sockets with {workers} workers after the upgrade, not {sockets}:\n{}",
            listening_sockets(vip),
            current.log_text()
        );
        let before = tally.ok();
        poll(Duration::from_secs(20), || {
            (tally.ok() > before + 200).then_some(())
        })
        .unwrap_or_else(|| panic!("the successor does not serve:\n{}", current.log_text()));
        // Every worker of the successor accepts (the metric is per worker).
        let want: usize = workers.parse().expect("n");
        let spread = poll(Duration::from_secs(20), || {
            let a = accepted_by_worker(http);
            (a.len() == want && a.iter().all(|(_, n)| *n > 0)).then_some(a)
        });
        assert!(
            spread.is_some(),
            "accepts by worker with {workers}: {:?}",
            accepted_by_worker(http)
        );
        assert_eq!(tally.failed(), 0, "lost: {:?}", tally.errors());
    }
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.join().expect("load thread");
    }
    eprintln!(
        "through three upgrades: {} round trips, {} lost",
        tally.ok(),
        tally.failed()
    );
    assert_eq!(tally.failed(), 0, "lost: {:?}", tally.errors());
}
