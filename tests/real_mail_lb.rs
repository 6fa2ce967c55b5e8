//! The L4 balancer against real mail software from Debian: Postfix's `smtp-sink` as
//! SMTP backends with `swaks` as the client, and Dovecot as an IMAP backend that
//! requires Portico's PROXY v2 header and must see the real client address, also when
//! a real HAProxy in front hands Portico the client in its own PROXY v2 header.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::config::{Config, Vip, REAL};
use common::real::{haproxy, read_file, Dovecot, Postfix, PostfixSetup};
use common::{
    free_port, http_get, listen_port, poll, tool, wait_listening, Daemon, Portico, TempDir,
};

fn smtp_sink(port: u16) -> Option<Daemon> {
    let sink = tool("smtp-sink")?;
    let d = Daemon::spawn(
        Command::new(sink)
            .args(["-u", "nobody", "-c", &format!("127.0.0.1:{port}"), "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(wait_listening(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10)
    ));
    Some(d)
}

fn swaks(port: u16) -> (bool, String) {
    let out = Command::new("swaks")
        .args(["--server", "127.0.0.1", "--port", &port.to_string()])
        .args(["--from", "sender@example.test", "--to", "rcpt@example.test"])
        .args(["--helo", "client.example.test", "--timeout", "10"])
        .output()
        .expect("run swaks");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A Portico with one SMTP VIP on `vip` (plus the `extra` VIP line) in front of the
/// smtp-sinks on `ports`, returned once both are up.
fn two_sink_vip(dir: &TempDir, vip: u16, ports: (u16, u16), extra: &str) -> Portico {
    let (p1, p2) = ports;
    let config = Config::admin(dir)
        .vip(
            Vip::new("smtp", format!("127.0.0.1:{vip}"))
                .with(extra)
                .backend("sink1", format!("127.0.0.1:{p1}"))
                .backend("sink2", format!("127.0.0.1:{p2}"))
                .probe("smtp", REAL),
        )
        .render();
    let portico = Portico::start(dir, &config);
    let both_up = poll(Duration::from_secs(10), || {
        let out = portico.ctl("show backends smtp");
        (out.lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("up"))
            .count()
            == 2)
            .then_some(())
    });
    assert!(both_up.is_some(), "{}", portico.ctl("show backends"));
    portico
}

#[test]
fn swaks_through_the_vip_to_smtp_sink_survives_a_backend_kill() {
    let Some(_) = tool("swaks") else { return };
    let (p1, p2, vip) = (free_port(), free_port(), free_port());
    let Some(sink1) = smtp_sink(p1) else { return };
    let Some(_sink2) = smtp_sink(p2) else { return };
    let dir = TempDir::new("sink");
    let portico = two_sink_vip(&dir, vip, (p1, p2), "balance = \"round_robin\"");

    for i in 0..6 {
        let (ok, text) = swaks(vip);
        assert!(ok, "mail {i} through the VIP failed:\n{text}");
        assert!(text.contains("250"), "{text}");
    }

    // Kill one sink: mail keeps flowing, first via connect retries, then via ejection.
    drop(sink1);
    for i in 0..6 {
        let (ok, text) = swaks(vip);
        assert!(ok, "mail {i} after the kill failed:\n{text}");
    }
    let down = poll(Duration::from_secs(10), || {
        let out = portico.ctl("show backends smtp");
        out.lines()
            .find(|l| l.starts_with("smtp/sink1 "))
            .filter(|l| l.split_whitespace().nth(2) != Some("up"))
            .map(str::to_string)
    });
    assert!(
        down.is_some(),
        "sink1 never left rotation:\n{}",
        portico.ctl("show backends")
    );
}

/// One SMTP session straight over TCP (greeting, `QUIT`, `221`), every read bounded.
fn smtp_session(port: u16) -> Result<(), String> {
    let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        r.read_line(&mut line)
            .map_err(|e| format!("greeting: {e}"))?;
        if !line.starts_with("220") {
            return Err(format!("greeting {line:?}"));
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    }
    r.get_mut()
        .write_all(b"QUIT\r\n")
        .map_err(|e| e.to_string())?;
    let mut bye = String::new();
    r.read_line(&mut bye).map_err(|e| format!("QUIT: {e}"))?;
    bye.starts_with("221")
        .then_some(())
        .ok_or_else(|| format!("QUIT answered {bye:?}"))
}

/// A stopped Postfix process still has its kernel accept connections, so only its
/// missing greeting shows it is gone. The lb reads the greeting as part of connecting:
/// none of 300 sessions started right after one of two smtp-sinks is SIGSTOPped fails
/// or hangs, and the stopped one leaves rotation.
#[test]
fn a_sigstopped_smtp_sink_costs_no_session() {
    let (p1, p2, vip) = (free_port(), free_port(), free_port());
    let Some(mut sink1) = smtp_sink(p1) else {
        return;
    };
    let Some(_sink2) = smtp_sink(p2) else { return };
    let dir = TempDir::new("sigstop");
    let portico = two_sink_vip(&dir, vip, (p1, p2), "greeting_timeout = \"500ms\"");

    sink1.signal_group(libc::SIGSTOP);
    let failures: Vec<String> = (0..300)
        .filter_map(|i| smtp_session(vip).err().map(|e| format!("session {i}: {e}")))
        .collect();
    let backends = portico.ctl("show backends smtp");
    sink1.kill_hard();
    assert!(
        failures.is_empty(),
        "{} of 300 sessions failed or hung: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let sink1_line = backends
        .lines()
        .find(|l| l.starts_with("smtp/sink1 "))
        .unwrap_or_default();
    assert!(
        sink1_line.split_whitespace().nth(2) != Some("up"),
        "the stopped sink left rotation:\n{backends}"
    );
}

#[test]
fn dovecot_behind_proxy_v2_sees_the_real_client_address() {
    let dir = TempDir::new("dovecot");
    let Some(dovecot) = Dovecot::start(&dir, "imap1") else {
        return;
    };
    let vip = free_port();
    let config = imap_vip_config(&dir, vip, &dovecot, "");
    let portico = Portico::start(&dir, &config);
    // The IMAP probe (with its PROXY v2 LOCAL header) must pass against Dovecot.
    wait_up(&portico, "imap", "dovecot1");

    // A client from 127.0.0.7: Dovecot must log rip=127.0.0.7, not the lb's address.
    imap_login_from([127, 0, 0, 7], vip);
    let logged = dovecot_login_line(&dovecot);
    assert!(logged.contains("rip=127.0.0.7"), "{logged}");
}

/// A config with one IMAP VIP on `vip` in front of `dovecot`, sending PROXY v2 and
/// probing with IMAP (whose PROXY v2 LOCAL header Dovecot must accept); `extra` adds
/// VIP keys.
fn imap_vip_config(dir: &TempDir, vip: u16, dovecot: &Dovecot, extra: &str) -> String {
    Config::admin(dir)
        .vip(
            Vip::new("imap", format!("127.0.0.1:{vip}"))
                .with("proxy_protocol = \"v2\"")
                .with(extra)
                .backend("dovecot1", format!("127.0.0.1:{}", dovecot.port))
                .probe("imap", REAL),
        )
        .render()
}

/// Logs in and out over IMAP from `src` (a loopback address) to 127.0.0.1:`port`.
fn imap_login_from(src: [u8; 4], port: u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((src, 0)).into()).unwrap();
    socket
        .connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("* OK"), "greeting {line:?}");
    stream.write_all(b"a LOGIN user secret\r\n").unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("a OK"), "login {line:?}");
    stream.write_all(b"b LOGOUT\r\n").unwrap();
    let mut rest = String::new();
    while reader.read_line(&mut rest).map(|n| n > 0).unwrap_or(false) {}
    assert!(rest.contains("b OK"), "{rest}");
}

/// Dovecot's log line for the login of `user`, once it is written.
fn dovecot_login_line(dovecot: &Dovecot) -> String {
    poll(Duration::from_secs(5), || {
        let log = read_file(&dovecot.log);
        log.lines()
            .find(|l| l.contains("Login: user=<user>"))
            .map(str::to_string)
    })
    .expect("dovecot logged the login")
}

/// Waits until `vip/backend` is up in `show backends`.
fn wait_up(portico: &Portico, vip: &str, backend: &str) {
    let prefix = format!("{vip}/{backend} ");
    let up = poll(Duration::from_secs(10), || {
        let out = portico.ctl(&format!("show backends {vip}"));
        out.lines()
            .any(|l| l.starts_with(&prefix) && l.split_whitespace().nth(2) == Some("up"))
            .then_some(())
    });
    assert!(
        up.is_some(),
        "probe never passed: {}",
        portico.ctl("show backends")
    );
}

#[test]
fn behind_haproxy_sending_proxy_v2_dovecot_still_sees_the_real_client() {
    // Two PROXY hops with real software on both ends: HAProxy (send-proxy-v2) ->
    // Portico (accept_proxy, proxy_protocol v2) -> Dovecot (haproxy = yes).
    if tool("haproxy").is_none() {
        return;
    }
    let dir = TempDir::new("dovecot-haproxy");
    let Some(dovecot) = Dovecot::start(&dir, "imap1") else {
        return;
    };
    let (vip, front) = (free_port(), free_port());
    let config = imap_vip_config(&dir, vip, &dovecot, "accept_proxy = true\n");
    let portico = Portico::start(&dir, &config);
    wait_up(&portico, "imap", "dovecot1");

    let Some(_front) = haproxy(
        &dir,
        &format!(
            "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\
             frontend imap\n    bind 127.0.0.1:{front}\n    default_backend portico\n\
             backend portico\n    server p1 127.0.0.1:{vip} send-proxy-v2\n"
        ),
        front,
    ) else {
        return;
    };

    imap_login_from([127, 0, 0, 8], front);
    let logged = dovecot_login_line(&dovecot);
    assert!(
        logged.contains("rip=127.0.0.8"),
        "the client's address crossed both hops: {logged}"
    );
}

/// Probe rounds that passed for `vip/backend`, from `/metrics` on `status`.
fn probes_passed(status: SocketAddr, vip: &str, backend: &str) -> u64 {
    let Ok((200, body)) = http_get(status, "/metrics") else {
        return 0;
    };
    let labels = format!("vip=\"{vip}\"");
    let name = format!("backend=\"{backend}\"");
    body.lines()
        .filter(|l| l.starts_with("portico_probe_results_total{"))
        .filter(|l| l.contains(&labels) && l.contains(&name) && l.contains("result=\"ok\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A plain `tcp` check is half-open: Postfix's kernel answers the SYN, Portico resets
/// before the last ACK, and `smtpd` never accepts, so twenty checks leave no
/// "connect from" in the mail log (a completed handshake logs "connect from" and
/// "lost connection after CONNECT" per check). One real session, straight to
/// Postfix, shows the log is written.
#[test]
fn tcp_checks_never_reach_a_real_postfix() {
    let dir = TempDir::new("tcp-check-postfix");
    let port = free_port();
    let Some(postfix) = Postfix::start_with(
        &dir,
        "mx1",
        &PostfixSetup {
            listen: &[format!("127.0.0.1:{port}")],
            main_cf: "",
            exec_prefix: &[],
        },
    ) else {
        return;
    };
    assert!(
        wait_listening(postfix.addr(), Duration::from_secs(20)),
        "postfix did not listen:\n{}",
        postfix.log()
    );
    // wait_listening's own connection is logged too: look only past it.
    let before = poll(Duration::from_secs(10), || {
        let log = postfix.log();
        log.contains("disconnect from").then_some(log.len())
    })
    .expect("postfix logged the listening check");
    let (vip, status) = (free_port(), listen_port());
    let config = Config::admin(&dir)
        .http(status)
        .vip(
            Vip::new("smtp", format!("127.0.0.1:{vip}"))
                .backend("mx1", postfix.addr())
                .probe(
                    "tcp",
                    r#"interval = "100ms", timeout = "90ms", rise = 1, fall = 2"#,
                ),
        )
        .render();
    let portico = Portico::start(&dir, &config);
    wait_up(&portico, "smtp", "mx1");
    let checked = poll(Duration::from_secs(20), || {
        (probes_passed(SocketAddr::from(([127, 0, 0, 1], status)), "smtp", "mx1") >= 20)
            .then_some(())
    });
    assert!(checked.is_some(), "20 checks never passed");

    smtp_session(port).expect("one session straight to postfix");
    let logged = poll(Duration::from_secs(10), || {
        let log = postfix.log().split_off(before);
        log.contains("disconnect from").then_some(log)
    })
    .unwrap_or_else(|| panic!("postfix never logged the session:\n{}", postfix.log()));
    let connects = logged
        .lines()
        .filter(|l| l.contains(": connect from"))
        .count();
    assert_eq!(
        connects, 1,
        "only the real session reached smtpd; the checks did not:\n{logged}"
    );
}
