//! `GET /metrics` is valid Prometheus text (checked with a parser, not a grep) and its
//! counters move when traffic flows; `GET /status` is the SPEC's JSON document.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::config::{Config, Vip, FAST};
use common::{echo_roundtrip, free_port, http_get, poll, Echo, Portico, TempDir};

fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let (code, body) = http_get(addr, "/metrics").expect("GET /metrics");
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[test]
fn metrics_parse_and_counters_move_with_traffic() {
    let echo = Echo::start();
    let dir = TempDir::new("metrics");
    let (vip, http) = (free_port(), free_port());
    let config = Config::admin(&dir)
        .http(http)
        .vip(
            Vip::new("echo", format!("127.0.0.1:{vip}"))
                .backend("e1", echo.addr)
                .probe("tcp", FAST),
        )
        .render();
    let p = Portico::start(&dir, &config);
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    let up = poll(Duration::from_secs(10), || {
        let (_, body) = http_get(addr, "/status").ok()?;
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        (doc["vips"][0]["up"] == true).then_some(doc)
    })
    .unwrap_or_else(|| panic!("VIP up in /status: {}", p.ctl("show backends")));
    assert_eq!(up["vips"][0]["name"], "echo");
    assert_eq!(up["vips"][0]["backends"][0]["state"], "up");
    assert_eq!(up["vips"][0]["backends"][0]["admin"], "ready");

    let before = scrape(addr);
    let labels = [("vip", "echo"), ("backend", "e1")];
    let conns_before = value(&before, "portico_lb_connections_total", &labels).unwrap_or(0.0);
    for _ in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.1", vip)).unwrap();
        assert!(echo_roundtrip(&mut s, b"hello metrics\n"));
    }
    let moved = poll(Duration::from_secs(5), || {
        let after = scrape(addr);
        let conns = value(&after, "portico_lb_connections_total", &labels)?;
        (conns >= conns_before + 5.0).then_some(after)
    });
    let after = moved.expect("portico_lb_connections_total grew by 5");
    let bytes: f64 = after
        .samples
        .iter()
        .filter(|s| s.metric == "portico_lb_bytes_total" && s.labels.get("vip") == Some("echo"))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert!(bytes >= 5.0 * 14.0, "bytes counted both ways: {bytes}");
    assert_eq!(value(&after, "portico_lb_backend_up", &labels), Some(1.0));
    assert!(
        after
            .samples
            .iter()
            .any(|s| s.metric.starts_with("portico_probe_duration_seconds")),
        "probe latency histogram exported"
    );

    // A refused reload is counted.
    std::fs::write(&p.config, "this is not toml").unwrap();
    let (ok, _) = p.ctl_raw(&["reload"]).unwrap();
    assert!(!ok);
    let failed = value(
        &scrape(addr),
        "portico_config_reloads_total",
        &[("result", "failed")],
    );
    assert_eq!(failed, Some(1.0));
}

/// `portico_*` names in a PromQL expression (histogram series reduced to their base).
fn promql_metrics(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("portico_") {
        let tail = &rest[pos..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        // `portico_.*` in a label matcher is a pattern, not a metric.
        if !tail[end..].starts_with(".*") {
            out.push(base.to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Every expression of the Grafana dashboard: panel targets and template queries.
fn dashboard_exprs(doc: &serde_json::Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in doc["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in doc["templating"]["list"].as_array().expect("templating") {
        if let Some(d) = var["definition"].as_str() {
            exprs.push(d.to_string());
        }
    }
    exprs
}

/// A backend that greets like an SMTP server, then echoes.
fn smtp_greeter() -> (SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                if s.write_all(b"220 greeter ESMTP\r\n").is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, handle)
}

/// A backend that accepts and closes at once: probes (TCP connect) pass, every
/// session fails on its greeting, every HTTP request on its response.
fn closer() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    addr
}

/// The dashboard only queries metrics a running Portico exports: every metric in
/// `config/grafana-dashboard.json` shows up in a scrape of a process that served L4
/// and HTTP traffic, saw backend and client failures, answered DNS, failed a site
/// over and reloaded.
#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/grafana-dashboard.json"))
        .expect("config/grafana-dashboard.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut wanted: Vec<String> = dashboard_exprs(&doc)
        .iter()
        .flat_map(|e| promql_metrics(e))
        .collect();
    wanted.sort();
    wanted.dedup();
    assert!(wanted.len() >= 20, "{wanted:?}");

    let (greeter, _g) = smtp_greeter();
    let closed = closer();
    let keepalive = Echo::start();
    let limited_echo = Echo::start();
    let dir = TempDir::new("dashboard");
    let (mail, limited, web, http, dns) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        common::free_udp_tcp_port(),
    );
    let config = Config::admin(&dir)
        .http(http)
        .vip(
            Vip::new("mail", format!("127.0.0.1:{mail}"))
                .with("protocol = \"smtp\"")
                .with("ejection = { consecutive_failures = 1 }")
                .backend("good", greeter)
                .backend("bad", closed)
                .probe("tcp", FAST),
        )
        .vip(
            Vip::new("limited", format!("127.0.0.1:{limited}"))
                .with("max_connections = 1")
                .backend("e1", limited_echo.addr)
                .probe("tcp", FAST),
        )
        .vip(
            Vip::new("web", format!("127.0.0.1:{web}"))
                .mode("http")
                .with("max_connections = 1")
                .backend("w1", closed)
                .probe("tcp", FAST),
        )
        .table(common::one_site_gss(
            dns,
            keepalive.addr,
            "smtp",
            "192.0.2.1",
        ))
        .render();
    let p = Portico::start(&dir, &config);
    let status = SocketAddr::from(([127, 0, 0, 1], http));
    poll(Duration::from_secs(10), || {
        let (_, body) = http_get(status, "/status").ok()?;
        let doc: serde_json::Value = serde_json::from_str(&body).ok()?;
        let all_up = doc["vips"].as_array()?.iter().all(|v| v["up"] == true);
        (all_up && doc["sites"][0]["up"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("everything up: {}", p.ctl("show backends")));

    // L4 through the greeter; the closer fails its greeting, is retried and ejected.
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", mail)).expect("mail");
        let mut greeting = [0u8; 5];
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.read_exact(&mut greeting).expect("greeting");
        assert_eq!(&greeting, b"220 g");
    }
    // One connection held on a max_connections = 1 VIP; the next is refused.
    let mut held = TcpStream::connect(("127.0.0.1", limited)).expect("limited");
    assert!(echo_roundtrip(&mut held, b"hold\n"));
    let second = TcpStream::connect(("127.0.0.1", limited)).expect("connect");
    drop(second);
    // HTTP: a request to a backend that closes (a backend error), and a malformed
    // request (a client error).
    let web_addr = SocketAddr::from(([127, 0, 0, 1], web));
    let (code, _) = http_get(web_addr, "/").expect("GET");
    assert_eq!(code, 502);
    {
        use std::io::{Read, Write};
        // The web VIP takes one connection: until the lb has seen the previous one
        // close, a new one is refused with 503, so ask again (bounded).
        let mut last = String::new();
        let answered = poll(Duration::from_secs(5), || {
            let mut s = TcpStream::connect(web_addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"NOT HTTP AT ALL\r\n\r\n").ok()?;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            last = out;
            (!last.contains("too many connections")).then_some(())
        });
        assert!(answered.is_some(), "still refused: {last}");
        assert!(last.starts_with("HTTP/1.1 400"), "{last}");
    }
    // An idle HTTP client holds the web VIP's one connection; the next is refused.
    let idle_web = TcpStream::connect(web_addr).expect("idle client");
    let refused = poll(Duration::from_secs(5), || {
        let (_, body) = http_get(web_addr, "/").ok()?;
        Some(body)
    });
    assert!(refused.is_some(), "the refused client got an answer");
    // DNS, then dc1's keepalive dies: the site fails over (detection time recorded).
    assert_eq!(
        common::query_a(
            SocketAddr::from(([127, 0, 0, 1], dns)),
            "smtp.gslb.example.test"
        ),
        Some(vec!["192.0.2.1".parse().expect("ip")])
    );
    drop(keepalive);
    // A reload.
    let (ok, out) = p.ctl_raw(&["reload"]).expect("reload");
    assert!(ok, "{out}");

    let missing = || {
        let scrape = scrape(status);
        let names: std::collections::BTreeSet<&str> =
            scrape.samples.iter().map(|s| s.metric.as_str()).collect();
        wanted
            .iter()
            .filter(|w| !names.contains(w.as_str()))
            .cloned()
            .collect::<Vec<String>>()
    };
    // The site's failover lands within its probes' fall time; the rest is there.
    let all = poll(Duration::from_secs(10), || {
        missing().is_empty().then_some(())
    });
    assert!(
        all.is_some(),
        "dashboard metrics missing from /metrics: {:?}",
        missing()
    );
    drop((held, idle_web));
}

/// A signed gss exports the earliest expiry of the signatures it serves, within the
/// configured validity of now, and `ctl show dnssec` reports the same keys.
#[test]
fn signed_gss_exports_its_earliest_signature_expiry() {
    let dir = TempDir::new("metrics-dnssec");
    let (dns, http) = (common::free_udp_tcp_port(), free_port());
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/gss/tests/testdata/dnssec");
    let config = format!(
        r#"
[admin]
socket = "{sock}"

[http]
listen = "127.0.0.1:{http}"

[gss]
listen = "127.0.0.1:{dns}"
zone = "gslb.example.test"
nameservers = ["ns1.gslb.example.test"]

[[gss.site]]
name = "dc1"
keepalives = [ {{ kind = "tcp", address = "127.0.0.1:1", interval = "200ms", timeout = "100ms" }} ]

[[gss.name]]
name = "mx"
sites = ["dc1"]
answers = {{ dc1 = ["127.0.0.10"] }}

[gss.dnssec]
keys = [ {{ file = "{keys}/Kgslb.example.test.+013+17467" }} ]
validity = "3d"
refresh = "1d"
jitter = "1h"
"#,
        sock = dir.path("admin.sock").display(),
    );
    let p = Portico::start(&dir, &config);
    let addr = SocketAddr::from(([127, 0, 0, 1], http));
    let expiry = poll(Duration::from_secs(10), || {
        value(&scrape(addr), "portico_dns_signatures_expiry_seconds", &[])
    })
    .expect("portico_dns_signatures_expiry_seconds exported");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (validity, jitter) = (3.0 * 86400.0, 3600.0);
    assert!(
        expiry > now + validity - jitter - 60.0 && expiry <= now + validity,
        "expiry {expiry} vs now {now}"
    );
    let show = p.ctl("show dnssec");
    assert!(show.contains("key 17467 alg 13 csk active"), "{show}");
    assert!(
        show.contains("ds gslb.example.test. IN DS 17467 13 2 "),
        "{show}"
    );
}
