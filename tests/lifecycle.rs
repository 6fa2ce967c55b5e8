//! Process lifecycle of `portico run`: graceful shutdown waits for open sessions and
//! removes the admin socket; reload applies a new config without touching established
//! sessions or flapping unchanged backends, and a broken config is refused (also when
//! only the gss refuses it: the lb then keeps its old VIPs).

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::config::{Vip, FAST};
use common::{
    echo_roundtrip, free_port, free_udp_tcp_port, http_get, poll, request_in_flight, Echo, Portico,
    SlowHttp, TempDir,
};

fn config(sock: &str, vips: &str) -> String {
    format!("drain_timeout = \"20s\"\n\n[admin]\nsocket = \"{sock}\"\n{vips}")
}

fn tcp_vip(name: &str, port: u16, backends: &[(&str, std::net::SocketAddr, u32)]) -> String {
    let vip = backends.iter().fold(
        Vip::new(name, format!("127.0.0.1:{port}")).probe("tcp", FAST),
        |v, (n, a, w)| v.weighted(n, a, *w),
    );
    format!("\n{}", vip.render())
}

fn http_vip(name: &str, port: u16, backend: std::net::SocketAddr) -> String {
    let vip = Vip::new(name, format!("127.0.0.1:{port}"))
        .mode("http")
        .backend(&format!("{name}1"), backend)
        .probe("tcp", FAST);
    format!("\n{}", vip.render())
}

fn wait_backends_up(p: &Portico, vip: &str, n: usize) {
    let ok = poll(Duration::from_secs(10), || {
        let out = p.ctl(&format!("show backends {vip}"));
        (out.lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("up"))
            .count()
            == n)
            .then_some(())
    });
    assert!(ok.is_some(), "{}", p.ctl("show backends"));
}

#[test]
fn sigterm_waits_for_open_sessions_then_exits_zero() {
    let echo = Echo::start();
    let dir = TempDir::new("term");
    let port = free_port();
    let sock = dir.path("admin.sock");
    let cfg = config(
        &sock.display().to_string(),
        &tcp_vip("echo", port, &[("e1", echo.addr, 1)]),
    );
    let mut p = Portico::start(&dir, &cfg);
    wait_backends_up(&p, "echo", 1);
    let session = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sigterm_drains_the_session(&mut p, port, session);
    assert!(!sock.exists(), "admin socket removed on exit");
}

/// SIGTERM with `session` open on the VIP at `port`: new connections are refused,
/// the session keeps working and the process waits for it, then exits 0 once it
/// closes.
fn sigterm_drains_the_session(p: &mut Portico, port: u16, mut session: TcpStream) {
    assert!(echo_roundtrip(&mut session, b"before\n"));
    p.signal(libc::SIGTERM);
    let refused = poll(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(refused.is_some(), "still accepting after SIGTERM");
    assert!(
        echo_roundtrip(&mut session, b"during drain\n"),
        "the session was cut\n{}",
        p.log_text()
    );
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited with a session open"
    );
    drop(session);
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("exits once the session closes");
    assert!(status.success(), "{status}\n{}", p.log_text());
}

/// A SIGTERM that arrives before every probe has its first verdict (here a backend
/// that accepts but never greets holds them for seconds) still drains: a plain start
/// accepts from its first moment, so its sessions are as real as later ones. It used to
/// cut them at once, which CI caught as a race in the test above.
#[test]
fn sigterm_before_the_first_verdicts_still_drains() {
    let echo = Echo::start();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("termearly");
    let (port, mute_port) = (free_port(), free_port());
    let sock = dir.path("admin.sock");
    let mute = Vip::new("mute", format!("127.0.0.1:{mute_port}"))
        .backend("m1", silent.local_addr().unwrap())
        .probe(
            "smtp",
            r#"interval = "10s", timeout = "8s", rise = 1, fall = 1"#,
        )
        .render();
    let cfg = config(
        &sock.display().to_string(),
        &(tcp_vip("echo", port, &[("e1", echo.addr, 1)]) + "\n" + &mute),
    );
    let mut p = Portico::start(&dir, &cfg);
    wait_backends_up(&p, "echo", 1);
    let still_pending = p.ctl("show backends mute");
    assert!(
        still_pending.trim_end().ends_with("pending"),
        "the mute backend already has a verdict: {still_pending}"
    );
    let session = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sigterm_drains_the_session(&mut p, port, session);
}

#[test]
fn drain_timeout_bounds_the_wait() {
    let echo = Echo::start();
    let dir = TempDir::new("termto");
    let port = free_port();
    let sock = dir.path("admin.sock");
    let cfg = config(
        &sock.display().to_string(),
        &tcp_vip("echo", port, &[("e1", echo.addr, 1)]),
    )
    .replace("drain_timeout = \"20s\"", "drain_timeout = \"500ms\"");
    let mut p = Portico::start(&dir, &cfg);
    wait_backends_up(&p, "echo", 1);
    let mut session = TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(echo_roundtrip(&mut session, b"x"));
    p.signal(libc::SIGTERM);
    let status = p
        .wait_exit(Duration::from_secs(15))
        .expect("exits after drain_timeout");
    assert!(status.success());
}

#[test]
fn reload_keeps_sessions_and_state_and_refuses_broken_configs() {
    let (e1, e2, e3) = (Echo::start(), Echo::start(), Echo::start());
    let dir = TempDir::new("reload");
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let sock = dir.path("admin.sock").display().to_string();
    let slow = SlowHttp::start();
    let pw = free_port();
    let web = http_vip("w", pw, slow.addr);
    let before = config(
        &sock,
        &(tcp_vip("a", pa, &[("a1", e1.addr, 1), ("a2", e2.addr, 1)])
            + &tcp_vip("b", pb, &[("b1", e3.addr, 1)])
            + &web),
    );
    let p = Portico::start(&dir, &before);
    wait_backends_up(&p, "a", 2);
    wait_backends_up(&p, "b", 1);
    p.ctl("drain a/a2");
    let mut session = TcpStream::connect(("127.0.0.1", pa)).unwrap();
    assert!(echo_roundtrip(&mut session, b"hello\n"));
    wait_backends_up(&p, "w", 1);
    let long_request = request_in_flight(
        pw,
        b"GET /long-poll HTTP/1.1\r\nHost: webmail\r\nConnection: close\r\n\r\n",
    );
    slow.arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("the long request reached the backend");

    // Add VIP c, remove VIP b, change a1's weight.
    let after = config(
        &sock,
        &(tcp_vip("a", pa, &[("a1", e1.addr, 5), ("a2", e2.addr, 1)])
            + &tcp_vip("c", pc, &[("c1", e3.addr, 1)])
            + &web),
    );
    std::fs::write(&p.config, &after).unwrap();
    assert_eq!(p.ctl("reload").trim(), "ok");
    assert!(
        echo_roundtrip(&mut session, b"across reload\n"),
        "session survived the reload"
    );
    slow.release_one();
    let reply = long_request.join().unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("slow"),
        "the in-flight HTTP request completed across the reload: {reply:?}"
    );
    let backends = p.ctl("show backends");
    let a1 = backends
        .lines()
        .find(|l| l.starts_with("a/a1 "))
        .expect("a1 listed");
    let a2 = backends
        .lines()
        .find(|l| l.starts_with("a/a2 "))
        .expect("a2 listed");
    assert_eq!(a1.split_whitespace().nth(2), Some("up"), "{a1}");
    assert_eq!(
        a1.split_whitespace().nth(4),
        Some("5"),
        "weight changed: {a1}"
    );
    assert_eq!(
        a2.split_whitespace().nth(3),
        Some("drain"),
        "drain survives reload: {a2}"
    );
    assert!(!backends.contains("b/b1"), "VIP b removed:\n{backends}");
    wait_backends_up(&p, "c", 1);
    let mut c = TcpStream::connect(("127.0.0.1", pc)).unwrap();
    assert!(echo_roundtrip(&mut c, b"new vip\n"));
    assert!(
        TcpStream::connect(("127.0.0.1", pb)).is_err(),
        "VIP b stopped listening"
    );
    let events = p.ctl("show events 100");
    assert!(
        !events
            .lines()
            .any(|l| l.contains("a/a1") && l.contains(" down")),
        "a1 flapped:\n{events}"
    );

    // A broken config is refused with its errors and nothing changes.
    std::fs::write(
        &p.config,
        after.replace("listen = \"127.0.0.1", "listen = \"not-an-address"),
    )
    .unwrap();
    let (ok, out) = p.ctl_raw(&["reload"]).unwrap();
    assert!(!ok && out.starts_with("error: "), "{out}");
    assert!(
        out.contains("portico.toml:"),
        "errors name the file and line: {out}"
    );
    assert!(echo_roundtrip(&mut session, b"after refused reload\n"));
    let mut c2 = TcpStream::connect(("127.0.0.1", pc)).unwrap();
    assert!(echo_roundtrip(&mut c2, b"still serving\n"));
    assert!(p.ctl("show events 100").contains("reload refused"));
}

#[test]
fn single_threaded_runtime_proxies_reloads_and_drains() {
    // One CPU (TOKIO_WORKER_THREADS=1, as under `taskset -c 1`) selects the
    // single-threaded scheduler; everything the supervisor spawns must still run:
    // probes, both proxies, the admin socket, reload and the SIGTERM drain.
    use shared::testing::{Behaviour, FakeKind, FakeServer};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let web = rt.block_on(FakeServer::start(FakeKind::Http, Behaviour::Good));
    let echo = Echo::start();
    let dir = TempDir::new("one-thread");
    let (pt, ph, pt2) = (free_port(), free_port(), free_port());
    let sock = dir.path("admin.sock");
    let vips = format!(
        "{}{}",
        tcp_vip("t", pt, &[("t1", echo.addr, 1)]),
        http_vip("h", ph, web.addr())
    );
    let mut p = Portico::start_env(
        &dir,
        &config(&sock.display().to_string(), &vips),
        &[("TOKIO_WORKER_THREADS", "1")],
    );
    assert!(
        p.log_text().contains("scheduler=\"single-threaded\""),
        "{}",
        p.log_text()
    );
    wait_backends_up(&p, "t", 1);
    wait_backends_up(&p, "h", 1);
    let mut session = TcpStream::connect(("127.0.0.1", pt)).unwrap();
    assert!(echo_roundtrip(&mut session, b"one thread\n"));
    for _ in 0..20 {
        let (code, _) = common::http_get(([127, 0, 0, 1], ph).into(), "/").unwrap();
        assert_eq!(code, 200);
    }

    let more = format!("{vips}{}", tcp_vip("t2", pt2, &[("u1", echo.addr, 1)]));
    std::fs::write(&p.config, config(&sock.display().to_string(), &more)).unwrap();
    p.signal(libc::SIGHUP);
    wait_backends_up(&p, "t2", 1);
    let mut c = TcpStream::connect(("127.0.0.1", pt2)).unwrap();
    assert!(echo_roundtrip(&mut c, b"after reload\n"));
    assert!(echo_roundtrip(&mut session, b"kept\n"));
    drop(c);

    p.signal(libc::SIGTERM);
    let refused = poll(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", pt)).is_err().then_some(())
    });
    assert!(refused.is_some(), "still accepting after SIGTERM");
    assert!(echo_roundtrip(&mut session, b"during drain\n"));
    drop(session);
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("exits once the session closes");
    assert!(status.success(), "{status}\n{}", p.log_text());
}

#[test]
fn a_reload_the_gss_refuses_leaves_the_lb_as_it_was() {
    // The new file adds VIP c and a gss whose DNS port another process holds: the
    // config is valid (files named in a config are checked when it is loaded, so a
    // missing file can no longer get this far), the gss cannot start, and the lb must
    // not have applied its half.
    let e1 = Echo::start();
    let dir = TempDir::new("reload-gss");
    let (pa, pc) = (free_port(), free_port());
    let dns_port = free_udp_tcp_port();
    let _held_udp = std::net::UdpSocket::bind(("127.0.0.1", dns_port)).unwrap();
    let _held_tcp = std::net::TcpListener::bind(("127.0.0.1", dns_port)).unwrap();
    let sock = dir.path("admin.sock").display().to_string();
    let gss = format!(
        r#"
[gss]
listen = "127.0.0.1:{dns_port}"
zone = "gslb.example.test"
nameservers = ["ns1.gslb.example.test"]

[[gss.site]]
name = "dc1"
keepalives = [ {{ kind = "tcp", address = "{}" }} ]

[[gss.name]]
name = "smtp"
sites = ["dc1"]
answers = {{ dc1 = ["127.0.0.1"] }}
"#,
        e1.addr
    );
    let before = config(&sock, &tcp_vip("a", pa, &[("a1", e1.addr, 1)]));
    let p = Portico::start(&dir, &before);
    wait_backends_up(&p, "a", 1);

    let after = config(
        &sock,
        &(tcp_vip("a", pa, &[("a1", e1.addr, 1)]) + &tcp_vip("c", pc, &[("c1", e1.addr, 1)])),
    ) + &gss;
    std::fs::write(&p.config, &after).unwrap();
    let (ok, out) = p.ctl_raw(&["reload"]).unwrap();
    assert!(!ok && out.starts_with("error: "), "{out}");
    assert!(
        out.contains(&format!("127.0.0.1:{dns_port}")),
        "the error names the port: {out}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", pc)).is_err(),
        "the refused reload did not start VIP c"
    );
    let vips = p.ctl("show vips");
    assert!(!vips.lines().any(|l| l.starts_with("c ")), "{vips}");
    let mut a = TcpStream::connect(("127.0.0.1", pa)).unwrap();
    assert!(echo_roundtrip(&mut a, b"still serving\n"));
    assert!(p.ctl("show events 100").contains("reload failed"));
}

/// Reads the next `sd_notify` datagram, bounded.
fn next_notification(sock: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the read timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A `Type=notify` supervisor hears READY=1 once the probes have spoken, RELOADING=1
/// then READY=1 around a reload, and STOPPING=1 when the drain begins; `GET /ready`
/// tells a readiness probe the same (200 only while ready, 503 while draining).
#[test]
fn sd_notify_and_ready_follow_the_process_phases() {
    let echo = Echo::start();
    let dir = TempDir::new("notify");
    let port = free_port();
    let http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let sock_path = dir.path("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let admin = dir.path("admin.sock");
    let cfg = format!(
        "{}\n[http]\nlisten = \"{http}\"\n",
        config(
            &admin.display().to_string(),
            &tcp_vip("echo", port, &[("e1", echo.addr, 1)]),
        )
    );
    let notify_env = sock_path.display().to_string();
    let mut p = Portico::start_env(&dir, &cfg, &[("NOTIFY_SOCKET", notify_env.as_str())]);

    let first = next_notification(&notify);
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    // Ready means the probes have spoken: the backend has a verdict.
    let backends = p.ctl("show backends echo");
    assert!(!backends.contains("pending"), "{backends}");
    assert_eq!(
        http_get(http, "/ready").expect("GET /ready"),
        (200, "ready\n".to_string())
    );

    p.signal(libc::SIGHUP);
    let reloading = next_notification(&notify);
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    let again = next_notification(&notify);
    assert!(again.lines().any(|l| l == "READY=1"), "{again}");

    let mut session = TcpStream::connect(("127.0.0.1", port)).expect("session");
    assert!(echo_roundtrip(&mut session, b"hold the drain\n"));
    p.signal(libc::SIGTERM);
    let stopping = next_notification(&notify);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    let (code, body) = http_get(http, "/ready").expect("GET /ready while draining");
    assert_eq!((code, body.as_str()), (503, "stopping\n"));
    drop(session);
    let status = p
        .wait_exit(Duration::from_secs(15))
        .expect("exits after the drain");
    assert!(status.success(), "{status}");
}
