//! An HTTPS VIP in front of real nginx webmail backends, driven by real `curl` over
//! HTTP/1.1 and HTTP/2: TLS termination with a certificate made at test time,
//! forwarding headers, and a killed backend costing clients nothing.

mod common;

use std::process::Command;
use std::time::Duration;

use common::config::{Config, Vip, REAL};
use common::real::nginx;
use common::{free_port, poll, tool, Portico, TempDir};
use shared::testing::tls::TestPki;

struct Curl<'a> {
    pki: &'a TestPki,
    port: u16,
}

impl Curl<'_> {
    /// Returns (http version, body).
    fn get(&self, version: &str, path: &str) -> (String, String) {
        let host = "webmail.example.test";
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", version])
            .arg("--cacert")
            .arg(self.pki.ca_path())
            .args(["--resolve", &format!("{host}:{}:127.0.0.1", self.port)])
            .args(["-w", "\n%{http_version}"])
            .arg(format!("https://{host}:{}{path}", self.port))
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "curl {version} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, ver) = text.rsplit_once('\n').unwrap_or((&text, ""));
        (ver.to_string(), body.trim().to_string())
    }
}

#[test]
fn curl_h1_and_h2_through_an_https_vip_to_nginx() {
    let Some(_) = tool("curl") else { return };
    let dir = TempDir::new("web");
    let vip = free_port();
    let Some(web1) = nginx(&dir, "web1") else {
        return;
    };
    let Some(web2) = nginx(&dir, "web2") else {
        return;
    };
    let (p1, p2) = (web1.port, web2.port);
    let pki = TestPki::new(&["webmail.example.test"]);
    let config = Config::admin(&dir)
        .vip(
            Vip::new("webmail", format!("127.0.0.1:{vip}"))
                .mode("https")
                .with(format!(
                    "tls = {{ cert = \"{}\", key = \"{}\" }}",
                    pki.cert_path().display(),
                    pki.key_path().display()
                ))
                .backend("web1", format!("127.0.0.1:{p1}"))
                .backend("web2", format!("127.0.0.1:{p2}"))
                .probe("http", &format!("path = \"/health\", {REAL}")),
        )
        .render();
    let portico = Portico::start(&dir, &config);
    let up = poll(Duration::from_secs(10), || {
        let out = portico.ctl("show backends webmail");
        (out.lines()
            .filter(|l| l.split_whitespace().nth(2) == Some("up"))
            .count()
            == 2)
            .then_some(())
    });
    assert!(up.is_some(), "{}", portico.ctl("show backends"));
    let curl = Curl {
        pki: &pki,
        port: vip,
    };

    let (ver, body) = curl.get("--http1.1", "/headers");
    assert_eq!(ver, "1.1");
    let fields: Vec<&str> = body.split('|').collect();
    assert_eq!(fields.len(), 5, "{body}");
    assert!(fields[0] == "web1" || fields[0] == "web2", "{body}");
    assert_eq!(fields[1], "127.0.0.1", "X-Forwarded-For: {body}");
    assert_eq!(fields[2], "https", "X-Forwarded-Proto: {body}");
    assert_eq!(
        fields[3],
        format!("webmail.example.test:{vip}"),
        "X-Forwarded-Host: {body}"
    );
    assert!(
        fields[4].contains("for=127.0.0.1") && fields[4].contains("proto=https"),
        "Forwarded: {body}"
    );

    let (ver, body) = curl.get("--http2", "/");
    assert_eq!(ver, "2", "ALPN h2");
    assert!(body == "web1" || body == "web2", "{body}");

    // Both backends serve over a few requests (round robin).
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(curl.get("--http2", "/").1);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Kill web1: every request still succeeds (connect failure retried elsewhere).
    drop(web1);
    for _ in 0..10 {
        let (_, body) = curl.get("--http1.1", "/");
        assert_eq!(body, "web2");
    }
}
