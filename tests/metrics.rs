//! `GET /metrics` is valid Prometheus text (checked with a parser, not a grep) and its
//! counters move when traffic flows; `GET /status` is the SPEC's JSON document.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

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
    let config = format!(
        r#"
[admin]
socket = "{sock}"

[http]
listen = "127.0.0.1:{http}"

[[vip]]
name = "echo"
listen = "127.0.0.1:{vip}"
backends = [ {{ name = "e1", address = "{e1}" }} ]
probe = {{ kind = "tcp", interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}
"#,
        sock = dir.path("admin.sock").display(),
        e1 = echo.addr
    );
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
