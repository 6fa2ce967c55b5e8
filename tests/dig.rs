//! The gss against Debian's `dig`, as operators and resolvers would query it:
//! `+norec`, `+tcp`, `+bufsize` with truncation and TCP retry, AAAA, NXDOMAIN with the
//! SOA, and answers that move when the operator or a dead keepalive says so.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_udp_tcp_port, poll, tool, Echo, Portico, TempDir};

struct Dns {
    port: u16,
}

impl Dns {
    fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .arg("@127.0.0.1")
            .args(["-p", &self.port.to_string(), "+time=2", "+tries=2"])
            .args(args)
            .output()
            .expect("run dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The addresses in the answer section for `name`/`qtype` (short form).
    fn short(&self, name: &str, qtype: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .dig(&["+norec", "+short", name, qtype])
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    }
}

fn gss_config(sock: &str, port: u16, e1: &Echo, e2: &Echo) -> String {
    let big: Vec<String> = (1..=40).map(|i| format!("\"127.0.1.{i}\"")).collect();
    format!(
        r#"
[admin]
socket = "{sock}"

[gss]
listen = "127.0.0.1:{port}"
zone = "gslb.example.test"
ttl = 20
nameservers = ["ns1.gslb.example.test"]
server_id = "gss-dig-1"
records = [
  "www CNAME smtp",
  "@ MX 10 mx",
  "mx A 192.0.2.25",
  "sub NS ns.sub",
  "ns.sub A 192.0.2.99",
  "*.wild A 192.0.2.7",
]

[[gss.site]]
name = "dc1"
keepalives = [ {{ kind = "tcp", address = "{a1}" }} ]
probe_defaults = {{ interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[gss.site]]
name = "dc2"
keepalives = [ {{ kind = "tcp", address = "{a2}" }} ]
probe_defaults = {{ interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[gss.name]]
name = "smtp"
sites = ["dc1", "dc2"]
answers = {{ dc1 = ["127.0.0.1", "::1"], dc2 = ["127.0.0.2", "::2"] }}
failback = "manual"

[[gss.name]]
name = "big"
sites = ["dc1"]
answers = {{ dc1 = [{big}] }}
"#,
        a1 = e1.addr,
        a2 = e2.addr,
        big = big.join(", ")
    )
}

#[test]
fn dig_sees_a_correct_authoritative_server_and_failover() {
    let Some(_) = tool("dig") else { return };
    let (e1, e2) = (Echo::start(), Echo::start());
    let dir = TempDir::new("dig");
    let port = free_udp_tcp_port();
    let p = Portico::start(
        &dir,
        &gss_config(
            &dir.path("admin.sock").display().to_string(),
            port,
            &e1,
            &e2,
        ),
    );
    let dns = Dns { port };

    let full = dns.dig(&["+norec", "smtp.gslb.example.test", "A"]);
    assert!(full.contains("status: NOERROR"), "{full}");
    assert!(full.contains(" aa"), "authoritative answer: {full}");
    assert!(!full.contains(" ra"), "no recursion offered: {full}");
    assert_eq!(dns.short("smtp.gslb.example.test", "A"), ["127.0.0.1"]);
    assert_eq!(
        dns.short("SMTP.GSLB.Example.Test", "A"),
        ["127.0.0.1"],
        "case-insensitive"
    );
    assert_eq!(dns.short("smtp.gslb.example.test", "AAAA"), ["::1"]);

    let tcp = dns.dig(&["+norec", "+tcp", "smtp.gslb.example.test", "A"]);
    assert!(
        tcp.contains("status: NOERROR") && tcp.contains("127.0.0.1"),
        "{tcp}"
    );

    let nx = dns.dig(&["+norec", "nope.gslb.example.test", "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains(" aa"),
        "{nx}"
    );
    assert!(
        nx.contains("AUTHORITY: 1") && nx.contains("SOA"),
        "SOA in authority: {nx}"
    );

    let nodata = dns.dig(&["+norec", "smtp.gslb.example.test", "MX"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    assert!(nodata.contains("SOA"), "{nodata}");

    let refused = dns.dig(&["+norec", "example.org", "A"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");

    let apex = dns.dig(&["+norec", "gslb.example.test", "SOA"]);
    assert!(
        apex.contains("ns1.gslb.example.test.") && apex.contains("ANSWER: 1"),
        "{apex}"
    );
    assert_eq!(
        dns.short("gslb.example.test", "NS"),
        ["ns1.gslb.example.test."]
    );

    // 40 A records do not fit 512 bytes: TC over UDP (+ignore keeps dig from retrying)...
    let truncated = dns.dig(&[
        "+norec",
        "+ignore",
        "+bufsize=512",
        "big.gslb.example.test",
        "A",
    ]);
    assert!(truncated.contains(" tc"), "{truncated}");
    let no_edns = dns.dig(&["+norec", "+ignore", "+noedns", "big.gslb.example.test", "A"]);
    assert!(no_edns.contains(" tc"), "{no_edns}");
    // ...and dig's automatic TCP retry gets all of them; a large EDNS buffer does too.
    assert_eq!(dns.short("big.gslb.example.test", "A").len(), 40);
    let large = dns.dig(&["+norec", "+bufsize=4096", "big.gslb.example.test", "A"]);
    assert!(
        large.contains("ANSWER: 40") && !large.contains(" tc"),
        "{large}"
    );

    // Zone-file semantics from the TOML records: a CNAME followed to the
    // site-selected name, a relative MX target with its address, a referral, a wildcard.
    assert_eq!(
        dns.short("www.gslb.example.test", "A"),
        ["127.0.0.1", "smtp.gslb.example.test."]
    );
    let mx = dns.dig(&["+norec", "gslb.example.test", "MX"]);
    assert!(
        mx.contains("10 mx.gslb.example.test.") && mx.contains("192.0.2.25"),
        "{mx}"
    );
    let referral = dns.dig(&["+norec", "host.sub.gslb.example.test", "A"]);
    assert!(
        referral.contains("status: NOERROR") && !referral.contains(" aa"),
        "{referral}"
    );
    assert!(
        referral.contains("AUTHORITY: 1") && referral.contains("ns.sub.gslb.example.test."),
        "{referral}"
    );
    assert!(referral.contains("192.0.2.99"), "glue: {referral}");
    assert_eq!(dns.short("x.y.wild.gslb.example.test", "A"), ["192.0.2.7"]);
    // Which server answered, as operators ask it; an extended error on REFUSED.
    assert_eq!(
        dns.dig(&["+short", "CH", "TXT", "id.server"]).trim(),
        "\"gss-dig-1\""
    );
    assert!(refused.contains("EDE: 20"), "{refused}");

    // Operator override moves answers at once; auto releases (manual failback too).
    assert_eq!(p.ctl("site down dc1").trim(), "ok");
    assert_eq!(dns.short("smtp.gslb.example.test", "A"), ["127.0.0.2"]);
    assert_eq!(p.ctl("site auto dc1").trim(), "ok");
    assert_eq!(dns.short("smtp.gslb.example.test", "A"), ["127.0.0.1"]);

    // dc1's keepalive target dies: answers move to dc2 within interval × fall + timeout.
    drop(e1);
    let moved = poll(Duration::from_secs(10), || {
        (dns.short("smtp.gslb.example.test", "A") == ["127.0.0.2"]).then_some(())
    });
    assert!(moved.is_some(), "{}", p.ctl("explain smtp"));
    let explain = p.ctl("explain smtp");
    assert!(
        explain.contains("dc1") && explain.contains("down"),
        "{explain}"
    );
    let sites = p.ctl("show sites");
    assert!(sites.lines().any(|l| l.starts_with("dc1 down")), "{sites}");
}
