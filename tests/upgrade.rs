//! Binary upgrade of a running `portico run` (SIGUSR2, or `run --upgrade-from`): the
//! successor takes every listening socket over, probes before it accepts, carries the
//! operator's drain over, and nothing is refused or lost while it happens; an upgrade
//! that fails to start leaves the old process serving.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    bin, echo_roundtrip, free_port, free_udp_tcp_port, poll, query_a, Echo, Portico, TempDir,
};

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
    let events = p.ctl("show events");
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

#[test]
fn sigusr2_upgrades_under_load_without_losing_a_connection_or_a_query() {
    let (e1, e2, ka) = (Echo::start(), Echo::start(), Echo::start());
    let dir = TempDir::new("upgrade");
    let (vip, http, dns) = (free_port(), free_port(), free_udp_tcp_port());
    let cfg = config(&dir, vip, http, dns, e1.addr, e2.addr, ka.addr);
    let mut old = Portico::start(&dir, &cfg);
    poll(Duration::from_secs(10), || {
        let out = old.ctl("show backends echo");
        (out.lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("up"))
            .count()
            == 2)
            .then_some(())
    })
    .expect("both backends up");
    old.ctl("drain echo/e2");
    let drained = old.ctl("show backends echo");
    assert!(
        drained
            .lines()
            .any(|l| l.starts_with("echo/e2 ") && l.contains(" drain ")),
        "{drained}"
    );
    let dns_addr = SocketAddr::from(([127, 0, 0, 1], dns));
    assert_eq!(
        query_a(dns_addr, "mx.gslb.example.test"),
        Some(vec!["192.0.2.25".parse().expect("ip")])
    );
    // A session that is open across the upgrade: the old process keeps serving it.
    let mut session = TcpStream::connect(("127.0.0.1", vip)).expect("session");
    assert!(echo_roundtrip(&mut session, b"before\n"));

    // Load: new connections and DNS queries, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, answered, lost) = (
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
        Arc::new(AtomicU32::new(0)),
    );
    let load = {
        let (stop, ok, failed, answered, lost) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            answered.clone(),
            lost.clone(),
        );
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst)
                && n < 20_000
                && started.elapsed() < Duration::from_secs(60)
            {
                n += 1;
                let good = TcpStream::connect(("127.0.0.1", vip))
                    .map(|mut s| echo_roundtrip(&mut s, b"load\n"))
                    .unwrap_or(false);
                if good { &ok } else { &failed }.fetch_add(1, Ordering::SeqCst);
                match query_a(dns_addr, "mx.gslb.example.test") {
                    Some(_) => answered.fetch_add(1, Ordering::SeqCst),
                    None => lost.fetch_add(1, Ordering::SeqCst),
                };
            }
        })
    };
    poll(Duration::from_secs(5), || {
        (ok.load(Ordering::SeqCst) > 20).then_some(())
    })
    .expect("load flowing");

    old.signal(libc::SIGUSR2);
    let pid = poll(Duration::from_secs(30), || successor_pid(&old))
        .unwrap_or_else(|| panic!("no successor took over:\n{}", old.log_text()));
    let _kill = Kill(pid);
    assert_ne!(pid, old.child.id() as i32);
    // The admin socket is the successor's now; it carried the drain over.
    let backends = old.ctl("show backends echo");
    let e2_line = backends
        .lines()
        .find(|l| l.starts_with("echo/e2 "))
        .unwrap_or_default()
        .to_string();
    assert!(e2_line.contains(" drain "), "{backends}");
    // More load through the successor.
    let after = ok.load(Ordering::SeqCst);
    poll(Duration::from_secs(10), || {
        (ok.load(Ordering::SeqCst) > after + 50).then_some(())
    })
    .expect("the successor serves");
    // The open session still works on the old process, which waits for it.
    assert!(echo_roundtrip(&mut session, b"during\n"));
    assert!(
        old.child.try_wait().expect("wait").is_none(),
        "old exited with a session open"
    );
    drop(session);
    let status = old
        .wait_exit(Duration::from_secs(15))
        .expect("the old process exits once its session ended");
    assert!(status.success(), "{status}");

    stop.store(true, Ordering::SeqCst);
    load.join().expect("load thread");
    eprintln!(
        "through the upgrade: {} connections ok, {} failed; {} queries answered, {} lost",
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        answered.load(Ordering::SeqCst),
        lost.load(Ordering::SeqCst)
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "connections failed during the upgrade"
    );
    assert_eq!(
        lost.load(Ordering::SeqCst),
        0,
        "DNS queries lost during the upgrade"
    );
    assert!(answered.load(Ordering::SeqCst) > 50);
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
