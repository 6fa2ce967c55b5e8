//! The whole chain as deployed: two sites, each a `portico run` lb in front of fake
//! SMTP/IMAP/HTTP backends, and a third `portico run` as the gss watching each lb's
//! `/status` with `lb_status`. Killing every SMTP backend of dc1 makes dc1's lb mark
//! its VIP down, and the gss moves the answers to dc2.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::config::{Config, Vip, FAST};
use common::{free_port, free_udp_tcp_port, http_get, poll, query_a, Portico, TempDir};
use shared::testing::{Behaviour, FakeKind, FakeServer};

struct Site {
    smtp: Vec<FakeServer>,
    _imap: FakeServer,
    _web: FakeServer,
    http: u16,
    lb: Portico,
    _dir: TempDir,
}

async fn site(name: &str, vip_ip: &str) -> Site {
    let smtp = vec![
        FakeServer::start(FakeKind::Smtp, Behaviour::Good).await,
        FakeServer::start(FakeKind::Smtp, Behaviour::Good).await,
    ];
    let imap = FakeServer::start(FakeKind::Imap, Behaviour::Good).await;
    let web = FakeServer::start(FakeKind::Http, Behaviour::Good).await;
    let dir = TempDir::new(&format!("chain-{name}"));
    let http = free_port();
    let config = Config::admin(&dir)
        .http(http)
        .vip(
            Vip::new("smtp", format!("{vip_ip}:{}", free_port()))
                .backend("mx1", smtp[0].addr())
                .backend("mx2", smtp[1].addr())
                .probe("smtp", FAST),
        )
        .vip(
            Vip::new("imap", format!("{vip_ip}:{}", free_port()))
                .backend("imap1", imap.addr())
                .probe("imap", FAST),
        )
        .vip(
            Vip::new("webmail", format!("{vip_ip}:{}", free_port()))
                .mode("http")
                .backend("web1", web.addr())
                .probe("http", FAST),
        )
        .render();
    let lb = Portico::start(&dir, &config);
    Site {
        smtp,
        _imap: imap,
        _web: web,
        http,
        lb,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_dc1_smtp_backends_moves_dns_answers_to_dc2() {
    let dc1 = site("dc1", "127.0.0.1").await;
    let dc2 = site("dc2", "127.0.0.2").await;
    for s in [&dc1, &dc2] {
        let addr = SocketAddr::from(([127, 0, 0, 1], s.http));
        let up = poll(Duration::from_secs(10), || {
            let (code, body) = http_get(addr, "/status").ok()?;
            let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
            (code == 200 && doc["vips"].as_array()?.iter().all(|v| v["up"] == true)).then_some(())
        });
        assert!(
            up.is_some(),
            "every VIP up on {addr}: {}",
            s.lb.ctl("show backends")
        );
    }

    let gss_dir = TempDir::new("chain-gss");
    let dns_port = free_udp_tcp_port();
    let config = format!(
        r#"
[admin]
socket = "{sock}"

[gss]
listen = "127.0.0.1:{dns_port}"
zone = "gslb.example.test"
nameservers = ["ns1.gslb.example.test"]

[[gss.site]]
name = "dc1"
keepalives = [ {{ kind = "lb_status", url = "http://127.0.0.1:{h1}/status", vips = ["smtp"] }} ]
probe_defaults = {{ interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[gss.site]]
name = "dc2"
keepalives = [ {{ kind = "lb_status", url = "http://127.0.0.1:{h2}/status", vips = ["smtp"] }} ]
probe_defaults = {{ interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[gss.name]]
name = "smtp"
sites = ["dc1", "dc2"]
answers = {{ dc1 = ["127.0.0.1"], dc2 = ["127.0.0.2"] }}
"#,
        sock = gss_dir.path("admin.sock").display(),
        h1 = dc1.http,
        h2 = dc2.http,
    );
    let gss = Portico::start(&gss_dir, &config);
    let dns = SocketAddr::from(([127, 0, 0, 1], dns_port));
    let name = "smtp.gslb.example.test";
    assert_eq!(query_a(dns, name), Some(vec!["127.0.0.1".parse().unwrap()]));

    // Kill every SMTP backend of dc1.
    let killed = Instant::now();
    for f in &dc1.smtp {
        f.stop();
    }
    let vip_down = poll(Duration::from_secs(10), || {
        let out = dc1.lb.ctl("show vips");
        out.lines()
            .any(|l| l.starts_with("smtp ") && l.split_whitespace().nth(3) == Some("down"))
            .then_some(())
    });
    assert!(
        vip_down.is_some(),
        "dc1's lb marks smtp down: {}",
        dc1.lb.ctl("show backends")
    );
    let moved = poll(Duration::from_secs(10), || {
        (query_a(dns, name)? == vec!["127.0.0.2".parse::<std::net::Ipv4Addr>().unwrap()])
            .then_some(())
    });
    assert!(moved.is_some(), "{}", gss.ctl("explain smtp"));
    // lb: interval×fall + timeout; gss: the same again; plus slack for a loaded machine.
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "took {:?}",
        killed.elapsed()
    );
    let explain = gss.ctl("explain smtp");
    assert!(
        explain.contains("dc1") && explain.contains("down"),
        "{explain}"
    );
    let events = gss.ctl("show events 50");
    assert!(
        events
            .lines()
            .any(|l| l.contains("dc1 down") && l.contains("detected in")),
        "{events}"
    );

    // Other VIPs of dc1 stay up; dc2 is untouched.
    let (_, status) = http_get(SocketAddr::from(([127, 0, 0, 1], dc1.http)), "/status").unwrap();
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    let imap = doc["vips"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "imap")
        .unwrap();
    assert_eq!(imap["up"], true);
}
