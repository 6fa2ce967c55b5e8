//! `portico demo` as a newcomer runs it: it starts, prints what to try, answers `dig`
//! and `swaks` and `curl` through its VIPs, moves answers on `site down`, and stops
//! cleanly on Ctrl-C (SIGINT), removing its admin socket.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{bin, poll, tool, Daemon};

const SOCKET: &str = "/tmp/portico-demo.sock";

#[test]
fn demo_starts_answers_and_stops_on_sigint() {
    let (Some(_), Some(_), Some(_)) = (tool("dig"), tool("swaks"), tool("curl")) else {
        return;
    };
    let mut demo = Daemon::spawn(
        Command::new(bin())
            .arg("demo")
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let stdout = demo.child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.contains("Ctrl-C stops it"))
    {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => printed.push(l),
            Err(_) => panic!("demo printed no instructions: {printed:?}"),
        }
    }
    let text = printed.join("\n");
    for hint in [
        "dig @127.0.0.1 -p 5353",
        "swaks --server",
        "curl",
        "ctl --socket",
        "site down dc1",
    ] {
        assert!(
            text.contains(hint),
            "instructions mention {hint:?}:\n{text}"
        );
    }

    let dig = |name: &str| {
        let out = Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                "5353",
                "+norec",
                "+short",
                "+time=2",
                name,
                "A",
            ])
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(dig("smtp.gslb.example.test"), "127.0.0.1");

    // Backends pass their probes shortly after start; until then the lb is optimistic.
    let mail = poll(Duration::from_secs(15), || {
        let out = Command::new("swaks")
            .args(["--server", "127.0.0.1", "--port", "2525", "--timeout", "5"])
            .args(["--from", "demo@example.test", "--to", "user@example.test"])
            .output()
            .expect("swaks");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let mail = mail.expect("swaks through the demo's SMTP VIP");
    assert!(mail.contains("queued as dc1-smtp/"), "{mail}");

    let web = Command::new("curl")
        .args(["-s", "http://127.0.0.1:8080/"])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&web.stdout).starts_with("dc1-webmail/"));

    let ctl = |cmd: &[&str]| {
        let out = Command::new(bin())
            .args(["ctl", "--socket", SOCKET])
            .args(cmd)
            .output()
            .expect("ctl");
        assert!(out.status.success(), "{cmd:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(ctl(&["site", "down", "dc1"]).trim(), "ok");
    assert_eq!(dig("smtp.gslb.example.test"), "127.0.0.2");
    assert_eq!(ctl(&["site", "auto", "dc1"]).trim(), "ok");
    assert_eq!(dig("smtp.gslb.example.test"), "127.0.0.1");

    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(demo.child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = poll(Duration::from_secs(15), || {
        demo.child.try_wait().ok().flatten()
    })
    .expect("demo exits on SIGINT");
    assert!(status.success(), "{status}");
    assert!(
        !std::path::Path::new(SOCKET).exists(),
        "admin socket removed"
    );
}
