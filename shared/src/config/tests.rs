//! Loader tests: the good path into the model, every error kind with its exact
//! line:col, unknown keys in every table, and the shipped example configs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn parse_ok(text: &str) -> Config {
    match parse(text, Path::new("t.toml")) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

/// Errors as `LINE:COL: message` (file name stripped).
fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("t.toml")) {
        Ok(_) => panic!("expected errors, config was accepted:\n{text}"),
        Err(e) => e
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
            .collect(),
    }
}

/// Asserts that an error at exactly `pos` ("LINE:COL") contains `fragment`.
#[track_caller]
fn expect_err(text: &str, pos: &str, fragment: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{pos}: ")) && e.contains(fragment)),
        "expected an error at {pos} containing {fragment:?}, got:\n{}",
        errs.join("\n")
    );
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const VIP: &str = r#"[[vip]]
name = "smtp"
listen = "127.0.0.1:2525"
backends = [ { name = "mx1", address = "127.0.0.1:12525" } ]
"#;

const GSS: &str = r#"[gss]
listen = "127.0.0.1:5353"
zone = "gslb.example.test"
nameservers = ["ns1.gslb.example.test"]

[[gss.site]]
name = "dc1"
keepalives = [ { kind = "tcp", address = "127.0.0.1:2525" } ]

[[gss.site]]
name = "dc2"
keepalives = [ { kind = "tcp", address = "127.0.0.2:2525" } ]
"#;

// ---- good path ----------------------------------------------------------------

#[test]
fn full_config_maps_to_model() {
    let text = r#"
drain_timeout = "45s"
[admin]
socket = "/tmp/p.sock"
[http]
listen = "127.0.0.1:9100"

[[vip]]
name = "smtp"
listen = "127.0.0.1:2525"
balance = "least_conn"
proxy_protocol = "v2"
backends = [
  { name = "mx1", address = "127.0.0.1:12525" },
  { name = "mx2", address = "127.0.0.1:12526", weight = 2 },
  { name = "mx9", address = "127.0.0.1:12529", backup = true },
]
probe = { kind = "smtp", interval = "1s", timeout = "500ms", rise = 2, fall = 2, starttls = true }
max_connections = 1000
ejection = { consecutive_failures = 5, max_percent = 20 }

[[vip]]
name = "webmail"
listen = "127.0.0.1:8443"
mode = "https"
tls = { certs = [ { cert = "a.pem", key = "a.key" }, { cert = "b.pem", key = "b.key" } ] }
backends = [ { name = "web1", address = "127.0.0.1:18080" } ]
probe = { kind = "http", path = "/health", expect_status = [200, 204], expect_body = "OK" }
sticky = { cookie = "PORTICO" }
backend_timeout = "2m"
body_timeout = "30s"
via = true
allow_connect = true
access_log = true
accept_proxy = true

[gss]
listen = "127.0.0.1:5353"
zone = "GSLB.Example.Test."
nameservers = ["NS1.gslb.example.test.", "ns2.gslb.example.test"]
soa = { rname = "dns@example.test", minimum = 60 }
records = ["@ MX 10 mx.example.test.", "www 300 IN a 127.0.0.9", "txt.gslb.example.test. TXT \"a  b\""]

[[gss.site]]
name = "dc1"
min_up = "50%"
keepalives = [
  { kind = "lb_status", url = "http://127.0.0.1:9100/status", vips = ["smtp"] },
  { kind = "smtp", address = "127.0.0.1:2525", timeout = "300ms" },
]
probe_defaults = { interval = "1s", timeout = "500ms", rise = 3, fall = 4 }

[[gss.site]]
name = "dc2"
min_up = 1
keepalives = [ { kind = "tcp", address = "127.0.0.2:2525" } ]

[[gss.name]]
name = "Smtp"
sites = ["dc1", "dc2"]
answers = { dc1 = ["127.0.0.1", "::1"], dc2 = ["127.0.0.2"] }
clients = [ { networks = ["10.0.0.0/8", "192.0.2.1"], sites = ["dc2", "dc1"] } ]

[[gss.name]]
name = "imap.gslb.example.test."
policy = "weighted"
sites = ["dc1", "dc2"]
weights = { dc1 = 3 }
answers = { dc1 = ["127.0.0.1"], dc2 = ["127.0.0.2"] }
failback = "manual"
all_down = "servfail"
ttl = 5
"#;
    let c = parse_ok(text);
    assert_eq!(c.path, PathBuf::from("t.toml"));
    assert_eq!(c.drain_timeout, Duration::from_secs(45));
    assert_eq!(
        c.admin.as_ref().map(|a| a.socket.clone()),
        Some("/tmp/p.sock".into())
    );
    assert_eq!(
        c.http.as_ref().map(|h| h.listen),
        Some(addr("127.0.0.1:9100"))
    );

    let smtp = &c.vips[0];
    assert_eq!(smtp.mode, VipMode::Tcp);
    assert_eq!(smtp.balance, Balance::LeastConn);
    assert_eq!(smtp.proxy_protocol, Some(ProxyVersion::V2));
    assert_eq!(smtp.protocol, MailProtocol::Smtp);
    assert_eq!(smtp.backends.len(), 3);
    assert_eq!(smtp.backends[1].weight, 2);
    assert!(smtp.backends[2].backup);
    assert_eq!(smtp.probe.kind, ProbeKind::Smtp);
    assert_eq!(smtp.probe.timing.timeout, Duration::from_millis(500));
    assert_eq!(smtp.probe.timing.fall, 2);
    assert!(smtp.probe.starttls);
    assert!(
        smtp.probe.send_proxy,
        "PROXY VIPs probe with a LOCAL header"
    );
    assert_eq!(smtp.retries, 2);
    assert_eq!(smtp.connect_timeout, Duration::from_secs(2));
    assert_eq!(smtp.idle_timeout, Duration::from_secs(31 * 60));
    assert_eq!(smtp.max_connections, Some(1000));
    assert_eq!(smtp.min_healthy, 1);
    assert_eq!(smtp.ejection.consecutive_failures, 5);
    assert_eq!(smtp.ejection.max_percent, 20);
    assert_eq!(smtp.ejection.base_time, Duration::from_secs(30));
    assert_eq!(smtp.tls, None);

    let web = &c.vips[1];
    assert_eq!(web.mode, VipMode::Https);
    assert_eq!(web.protocol, MailProtocol::None);
    assert_eq!(web.tls.as_ref().map(|t| t.certs.len()), Some(2));
    assert_eq!(web.probe.path, "/health");
    assert_eq!(web.probe.expect_status, vec![200, 204]);
    assert_eq!(web.probe.expect_body.as_deref(), Some("OK"));
    assert!(!web.probe.send_proxy);
    assert_eq!(web.http.sticky_cookie.as_deref(), Some("PORTICO"));
    assert_eq!(web.http.backend_timeout, Some(Duration::from_secs(120)));
    assert!(web.http.via);
    assert!(web.http.allow_connect);
    assert!(!c.vips[0].http.allow_connect, "off by default");
    assert_eq!(web.http.header_timeout, Duration::from_secs(10));
    assert_eq!(web.http.body_timeout, Duration::from_secs(30));
    assert!(web.access_log);
    assert!(web.accept_proxy);

    let g = c.gss.as_ref().expect("gss");
    assert_eq!(g.zone, "gslb.example.test");
    assert_eq!(g.ttl, 20);
    assert_eq!(
        g.nameservers,
        vec!["ns1.gslb.example.test", "ns2.gslb.example.test"]
    );
    assert_eq!(g.soa.mname, "ns1.gslb.example.test");
    assert_eq!(g.soa.rname, "dns.example.test");
    assert_eq!(g.soa.minimum, 60);
    assert_eq!(g.soa.ttl, 3600);
    assert_eq!(g.soa.serial, 1, "serial base default");
    assert_eq!(g.records.len(), 3);
    assert_eq!(g.records[0].fqdn, "gslb.example.test");
    assert_eq!(g.records[0].rtype, "MX");
    assert_eq!(g.records[0].rdata, "10 mx.example.test.");
    assert_eq!(g.records[0].ttl, 3600);
    assert_eq!(g.records[1].fqdn, "www.gslb.example.test");
    assert_eq!(g.records[1].ttl, 300);
    assert_eq!(g.records[1].rtype, "A");
    assert_eq!(g.records[2].rdata, "\"a  b\"");

    let dc1 = &g.sites[0];
    assert_eq!(dc1.min_up, MinUp::Percent(50));
    assert_eq!(dc1.keepalives.len(), 2);
    let lbs = &dc1.keepalives[0];
    assert_eq!(lbs.name, "http://127.0.0.1:9100/status");
    assert_eq!(lbs.address, addr("127.0.0.1:9100"));
    assert_eq!(lbs.probe.kind, ProbeKind::LbStatus);
    assert_eq!(lbs.probe.path, "/status");
    assert_eq!(lbs.probe.vips, vec!["smtp"]);
    assert_eq!(lbs.probe.timing.interval, Duration::from_secs(1));
    assert_eq!(lbs.probe.timing.rise, 3);
    let ka = &dc1.keepalives[1];
    assert_eq!(ka.name, "smtp 127.0.0.1:2525");
    assert_eq!(
        ka.probe.timing.timeout,
        Duration::from_millis(300),
        "own key wins"
    );
    assert_eq!(
        ka.probe.timing.interval,
        Duration::from_secs(1),
        "site default"
    );
    assert_eq!(ka.probe.timing.fall, 4);
    assert_eq!(g.sites[1].min_up, MinUp::Count(1));
    assert_eq!(
        g.sites[1].keepalives[0].probe.timing,
        ProbeTiming::default()
    );

    let smtp = &g.names[0];
    assert_eq!(smtp.fqdn, "smtp.gslb.example.test");
    assert_eq!(smtp.policy, Policy::Failover);
    assert_eq!(smtp.failback, Failback::Auto(Duration::from_secs(60)));
    assert_eq!(smtp.all_down, AllDown::First);
    assert_eq!(smtp.ttl, 20);
    assert_eq!(smtp.answers["dc1"].len(), 2);
    assert_eq!(smtp.clients[0].networks[1].to_string(), "192.0.2.1/32");
    assert_eq!(smtp.clients[0].sites, vec!["dc2", "dc1"]);
    assert!(smtp.weights.is_empty());
    let imap = &g.names[1];
    assert_eq!(imap.fqdn, "imap.gslb.example.test");
    assert_eq!(imap.policy, Policy::Weighted);
    assert_eq!(imap.weights["dc1"], 3);
    assert_eq!(imap.weights["dc2"], 1);
    assert_eq!(imap.failback, Failback::Manual);
    assert_eq!(imap.all_down, AllDown::Servfail);
    assert_eq!(imap.ttl, 5);
}

#[test]
fn minimal_vip_gets_defaults() {
    let c = parse_ok(VIP);
    assert_eq!(c.drain_timeout, Duration::from_secs(30));
    assert!(c.admin.is_none() && c.http.is_none() && c.gss.is_none());
    let v = &c.vips[0];
    assert_eq!(v.mode, VipMode::Tcp);
    assert_eq!(v.balance, Balance::RoundRobin);
    assert_eq!(v.protocol, MailProtocol::None);
    assert_eq!(v.probe, ProbeConfig::new(ProbeKind::Tcp));
    assert_eq!(v.http, HttpVipConfig::default());
    assert_eq!(v.backends[0].weight, 1);
    assert!(!v.backends[0].backup);
}

#[test]
fn protocol_follows_probe_kind_unless_set() {
    let c = parse_ok(&VIP.replace("backends", "probe = { kind = \"imap\" }\nbackends"));
    assert_eq!(c.vips[0].protocol, MailProtocol::Imap);
    let c = parse_ok(&VIP.replace(
        "backends",
        "probe = { kind = \"imap\" }\nprotocol = \"none\"\nbackends",
    ));
    assert_eq!(c.vips[0].protocol, MailProtocol::None);
}

#[test]
fn mapi_and_lb_status_paths_default() {
    let c = parse_ok(&VIP.replace(
        "listen = \"127.0.0.1:2525\"",
        "listen = \"127.0.0.1:8080\"\nmode = \"http\"\nprobe = { kind = \"mapi\" }",
    ));
    assert_eq!(c.vips[0].probe.path, "/mapi/emsmdb/");
    let c = parse_ok(&GSS.replace(
        "{ kind = \"tcp\", address = \"127.0.0.2:2525\" }",
        "{ kind = \"lb_status\", address = \"127.0.0.2:9100\" }",
    ));
    let ka = &c.gss.as_ref().expect("gss").sites[1].keepalives[0];
    assert_eq!(ka.probe.path, "/status");
    assert_eq!(ka.address, addr("127.0.0.2:9100"));
}

#[test]
fn single_tls_pair_maps_to_certs() {
    let c = parse_ok(&VIP.replace(
        "backends",
        "mode = \"https\"\ntls = { cert = \"/etc/portico/c.pem\", key = \"/etc/portico/k.pem\" }\nbackends",
    ));
    let tls = c.vips[0].tls.as_ref().expect("tls");
    assert_eq!(
        tls.certs,
        vec![CertPair {
            cert: "/etc/portico/c.pem".into(),
            key: "/etc/portico/k.pem".into()
        }]
    );
}

// ---- errors from toml/serde ---------------------------------------------------

#[test]
fn syntax_error_has_position() {
    expect_err(
        "[[vip]]\nname = \"a\nlisten = 1\n",
        "2:10",
        "invalid basic string",
    );
}

#[test]
fn wrong_type_has_position() {
    expect_err(
        &VIP.replace("name = \"smtp\"", "name = 5"),
        "2:8",
        "invalid type",
    );
}

#[test]
fn missing_required_key() {
    expect_err("[[vip]]\nname = \"a\"\n", "1:1", "missing field `listen`");
}

#[test]
fn every_unknown_key_and_validation_error_in_one_run() {
    let text = r#"drain_timout = "5s"
[[vip]]
name = "smtp"
listen = "127.0.0.1:2525"
balnce = "least_conn"
backends = [ { name = "mx1", address = "127.0.0.1:12525", weight = 0 } ]
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    expect_err(
        text,
        "1:1",
        "unknown field `drain_timout`; did you mean `drain_timeout`?",
    );
    expect_err(
        text,
        "5:1",
        "unknown field `balnce`; did you mean `balance`?",
    );
    expect_err(text, "6:68", "backend weight must be at least 1");
}

#[test]
fn unknown_key_with_multiline_value_stops_there() {
    // Commenting out the first line of a multi-line value would report phantom
    // syntax errors, so only the unknown key is reported.
    let text = "bogus = [\n  1,\n]\n[[vip]]\nname = 5\n";
    let errs = errors(text);
    assert_eq!(errs, vec!["1:1: unknown field `bogus`, expected one of `admin`, `http`, `drain_timeout`, `state_dir`, `vip`, `gss`, `bgp`, `cluster`".to_string()]);
}

#[test]
fn unreadable_file_is_line_one() {
    let e = load(Path::new("/nonexistent/portico.toml")).expect_err("missing file");
    assert_eq!(e.0.len(), 1);
    assert_eq!((e.0[0].line, e.0[0].col), (1, 1));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/portico.toml:1:1: cannot read"));
}

#[test]
fn load_reads_a_file() {
    let dir = std::env::temp_dir().join(format!("portico-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("x.toml");
    std::fs::write(&path, VIP).expect("write");
    let c = load(&path).expect("valid");
    assert_eq!(c.path, path);
    std::fs::write(&path, "bogus = 1\n").expect("write");
    let e = load(&path).expect_err("invalid");
    assert_eq!(e.0[0].file, path);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn empty_config_is_an_error() {
    expect_err("", "1:1", "nothing to run");
}

// ---- validation errors ----------------------------------------------------------

#[test]
fn collects_all_errors() {
    let text = r#"[[vip]]
name = "smtp"
listen = "127.0.0.1:99999"
backends = [ { name = "mx1", address = "nope", weight = 0 } ]
probe = { kind = "smtp", interval = "1s", timeout = "2s", rise = 0 }
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    expect_err(text, "3:10", "invalid listen address \"127.0.0.1:99999\"");
    expect_err(text, "4:40", "invalid backend address \"nope\"");
    expect_err(text, "4:57", "weight must be at least 1");
    expect_err(
        text,
        "5:53",
        "probe timeout (2s) must be shorter than interval (1s)",
    );
    expect_err(text, "5:66", "probe rise must be between 1 and 1000");
}

#[test]
fn bad_durations() {
    let t = VIP.replace("backends", "connect_timeout = 5\nbackends");
    expect_err(&t, "4:19", "must be a string with a unit, e.g. \"5s\"");
    let t = VIP.replace("backends", "connect_timeout = \"5\"\nbackends");
    expect_err(&t, "4:19", "has no unit");
    let t = VIP.replace("backends", "connect_timeout = \"5 parsecs\"\nbackends");
    expect_err(&t, "4:19", "invalid duration \"5 parsecs\"");
    expect_err(
        "drain_timeout = true\n",
        "1:17",
        "drain_timeout must be a duration string",
    );
}

#[test]
fn bad_enums() {
    let t = VIP.replace("backends", "mode = \"tpc\"\nbackends");
    expect_err(
        &t,
        "4:8",
        "unknown mode \"tpc\"; expected one of \"tcp\", \"http\", \"https\"",
    );
    let t = VIP.replace("backends", "balance = \"random\"\nbackends");
    expect_err(&t, "4:11", "unknown balance");
    let t = VIP.replace("backends", "proxy_protocol = \"v3\"\nbackends");
    expect_err(&t, "4:18", "unknown proxy_protocol");
    let t = VIP.replace("backends", "probe = { kind = \"ftp\" }\nbackends");
    expect_err(&t, "4:18", "unknown probe kind \"ftp\"");
    let t = VIP.replace("backends", "probe = { kind = \"lb_status\" }\nbackends");
    expect_err(&t, "4:18", "only for gss keepalives");
}

#[test]
fn duplicate_names() {
    let t = format!("{VIP}{}", VIP.replace("2525", "2526"));
    expect_err(&t, "6:8", "duplicate VIP name \"smtp\"");
    let t = VIP.replace(
        "{ name = \"mx1\", address = \"127.0.0.1:12525\" }",
        "{ name = \"mx1\", address = \"127.0.0.1:12525\" },\n  { name = \"mx1\", address = \"127.0.0.1:12526\" }",
    );
    expect_err(&t, "5:12", "duplicate backend name \"mx1\" in VIP \"smtp\"");
    let t = GSS.replace("name = \"dc2\"", "name = \"dc1\"");
    expect_err(&t, "11:8", "duplicate site name \"dc1\"");
    let name =
        "\n[[gss.name]]\nname = \"smtp\"\nsites = [\"dc1\"]\nanswers = { dc1 = [\"127.0.0.1\"] }\n";
    let t = format!(
        "{GSS}{name}{}",
        name.replace("\"smtp\"", "\"SMTP.gslb.example.test.\"")
    );
    expect_err(&t, "20:8", "duplicate gss name \"smtp.gslb.example.test\"");
}

#[test]
fn listener_conflicts() {
    let t = format!("[http]\nlisten = \"127.0.0.1:2525\"\n{VIP}");
    expect_err(
        &t,
        "5:10",
        "VIP \"smtp\" listens on 127.0.0.1:2525, which [http] already uses",
    );
    let t = format!(
        "{VIP}{}",
        VIP.replace("smtp", "s2")
            .replace("127.0.0.1:2525", "0.0.0.0:2525")
    );
    expect_err(&t, "7:10", "overlaps VIP \"smtp\"");
    let t = format!("{VIP}{}", GSS.replace("127.0.0.1:5353", "127.0.0.1:2525"));
    expect_err(&t, "6:10", "[gss] listens on 127.0.0.1:2525");
    // Different IPs on the same port are fine.
    parse_ok(&format!(
        "{VIP}{}",
        VIP.replace("\"smtp\"", "\"s2\"")
            .replace("127.0.0.1:2525", "127.0.0.2:2525")
    ));
}

#[test]
fn vip_rules() {
    let t = VIP.replace(
        "backends = [ { name = \"mx1\", address = \"127.0.0.1:12525\" } ]",
        "backends = []",
    );
    expect_err(&t, "4:12", "empty backends list");
    let t = VIP.replace(
        "backends = [ { name = \"mx1\", address = \"127.0.0.1:12525\" } ]",
        "",
    );
    expect_err(&t, "2:8", "has no backends");
    let t = VIP.replace("backends", "min_healthy = 2\nbackends");
    expect_err(
        &t,
        "4:15",
        "min_healthy (2) is larger than the number of backends (1)",
    );
    let t = VIP.replace("backends", "max_connections = 0\nbackends");
    expect_err(&t, "4:19", "max_connections must be at least 1");
    let t = VIP.replace("backends", "ejection = { max_percent = 101 }\nbackends");
    expect_err(&t, "4:28", "ejection max_percent must be between 0 and 100");
    let t = VIP.replace("backends", "ejection = { base_time = \"10m\" }\nbackends");
    expect_err(
        &t,
        "4:26",
        "max_time (5m) must not be shorter than base_time (10m)",
    );
    let t = VIP.replace("name = \"mx1\"", "name = \"mx 1\"");
    expect_err(&t, "4:23", "invalid backend name \"mx 1\"");
    let t = VIP.replace("name = \"smtp\"", "name = \"a/b\"");
    expect_err(&t, "2:8", "invalid VIP name");
}

#[test]
fn tls_rules() {
    let t = VIP.replace("backends", "mode = \"https\"\nbackends");
    expect_err(&t, "4:8", "mode = \"https\" but no tls");
    let t = VIP.replace("backends", "tls = { cert = \"c\", key = \"k\" }\nbackends");
    expect_err(&t, "4:7", "tls is only used with mode = \"https\"");
    let t = VIP.replace(
        "backends",
        "mode = \"https\"\ntls = { cert = \"c\" }\nbackends",
    );
    expect_err(&t, "5:16", "no key");
    let t = VIP.replace(
        "backends",
        "mode = \"https\"\ntls = { cert = \"c\", key = \"k\", certs = [] }\nbackends",
    );
    expect_err(&t, "5:40", "not both");
}

#[test]
fn l7_keys_on_tcp_vip() {
    let t = VIP.replace(
        "backends",
        "header_timeout = \"5s\"\nsticky = { cookie = \"S\" }\nbackends",
    );
    expect_err(
        &t,
        "4:18",
        "header_timeout applies only to mode \"http\" or \"https\"",
    );
    expect_err(&t, "5:10", "sticky applies only to mode");
    let t = VIP.replace("backends", "allow_connect = true\nbackends");
    expect_err(
        &t,
        "4:17",
        "allow_connect applies only to mode \"http\" or \"https\"",
    );
    let t = VIP.replace(
        "backends",
        "mode = \"http\"\nallow_connect = \"yes\"\nbackends",
    );
    expect_err(&t, "5:17", "invalid type");
    let t = VIP.replace("backends", "mode = \"http\"\nbackend_sni = \"x\"\nbackends");
    expect_err(
        &t,
        "5:15",
        "backend_sni only applies with backend_tls = true",
    );
}

#[test]
fn probe_rules() {
    let p = |probe: &str| VIP.replace("backends", &format!("probe = {probe}\nbackends"));
    expect_err(
        &p("{ kind = \"smtp\", timeout = \"2s\" }"),
        "4:36",
        "probe timeout (2s) must be shorter than interval (2s)",
    );
    expect_err(
        &p("{ kind = \"smtp\", fall = 0 }"),
        "4:33",
        "probe fall must be between 1 and 1000",
    );
    expect_err(
        &p("{ kind = \"smtp\", tls = true, starttls = true }"),
        "4:49",
        "tls and starttls are exclusive",
    );
    expect_err(
        &p("{ kind = \"tcp\", starttls = true }"),
        "4:36",
        "starttls applies only to smtp, imap and pop3",
    );
    expect_err(
        &p("{ kind = \"smtp\", path = \"/\" }"),
        "4:33",
        "path applies only to http, mapi and lb_status",
    );
    expect_err(
        &p("{ kind = \"imap\", expect_status = 200 }"),
        "4:42",
        "expect_status applies only",
    );
    expect_err(
        &p("{ kind = \"http\", expect_status = 999 }"),
        "4:42",
        "expect_status must be HTTP statuses",
    );
    expect_err(
        &p("{ kind = \"http\", path = \"health\" }"),
        "4:33",
        "must start with '/'",
    );
    expect_err(
        &p("{ kind = \"tcp\", address = \"127.0.0.1:1\" }"),
        "4:35",
        "unknown key `address` in a VIP probe",
    );
    expect_err(
        &p("{ kind = \"tcp\", interval = \"0s\", timeout = \"0s\" }"),
        "4:36",
        "interval must be greater than zero",
    );
    // send_proxy defaults from the VIP's PROXY setting but can be overridden.
    let c = parse_ok(&VIP.replace(
        "backends",
        "proxy_protocol = \"v1\"\nprobe = { kind = \"smtp\", send_proxy = false }\nbackends",
    ));
    assert!(!c.vips[0].probe.send_proxy);
}

#[test]
fn gss_rules() {
    expect_err(
        &GSS.replace("gslb.example.test\"", "gslb..example.test\""),
        "3:8",
        "invalid zone",
    );
    expect_err(
        &GSS.replace(
            "nameservers = [\"ns1.gslb.example.test\"]",
            "nameservers = []",
        ),
        "4:15",
        "nameservers is empty",
    );
    expect_err(
        &GSS.replace("nameservers = [\"ns1.gslb.example.test\"]", ""),
        "3:8",
        "needs nameservers",
    );
    expect_err(
        &GSS.replace(
            "[[gss.site]]\nname = \"dc1\"",
            "soa = { minimum = 90000 }\n[[gss.site]]\nname = \"dc1\"",
        ),
        "6:19",
        "soa minimum (90000) is above 86400",
    );
    let with_serial = |v: &str| {
        GSS.replace(
            "[[gss.site]]\nname = \"dc1\"",
            &format!("soa = {{ serial = {v} }}\n[[gss.site]]\nname = \"dc1\""),
        )
    };
    let g = parse_ok(&with_serial("2026112901")).gss.unwrap();
    assert_eq!(g.soa.serial, 2_026_112_901);
    for bad in ["-1", "4294967296"] {
        expect_err(
            &with_serial(bad),
            "6:18",
            &format!("soa serial must be between 0 and 4294967295, got {bad}"),
        );
    }
    expect_err(
        &GSS.replace("5353", "53x"),
        "2:10",
        "invalid listen address",
    );
}

#[test]
fn site_rules() {
    let t = GSS.replace(
        "keepalives = [ { kind = \"tcp\", address = \"127.0.0.2:2525\" } ]",
        "",
    );
    expect_err(&t, "11:8", "site \"dc2\" has no keepalives");
    let t = GSS.replace(
        "keepalives = [ { kind = \"tcp\", address = \"127.0.0.2:2525\" } ]",
        "keepalives = []",
    );
    expect_err(&t, "12:14", "empty keepalives list");
    let t = GSS.replace("name = \"dc2\"", "name = \"dc2\"\nmin_up = 2");
    expect_err(
        &t,
        "12:10",
        "min_up (2) is larger than the number of keepalives (1)",
    );
    let t = GSS.replace("name = \"dc2\"", "name = \"dc2\"\nmin_up = \"150%\"");
    expect_err(&t, "12:10", "invalid min_up \"150%\"");
    let t = GSS.replace("name = \"dc2\"", "name = \"dc2\"\nmin_up = 0");
    expect_err(&t, "12:10", "invalid min_up 0");
    let t = GSS.replace(
        "{ kind = \"tcp\", address = \"127.0.0.2:2525\" }",
        "{ kind = \"tcp\" }",
    );
    expect_err(&t, "12:16", "\"tcp\" keepalive needs address");
    let t = GSS.replace(
        "{ kind = \"tcp\", address = \"127.0.0.2:2525\" }",
        "{ address = \"127.0.0.2:2525\" }",
    );
    expect_err(&t, "12:16", "keepalive needs a kind");
    let t = GSS.replace(
        "{ kind = \"tcp\", address = \"127.0.0.2:2525\" }",
        "{ kind = \"lb_status\", url = \"https://127.0.0.2:9100/status\" }",
    );
    expect_err(&t, "12:44", "uses https, which is not supported");
    let t = GSS.replace(
        "{ kind = \"tcp\", address = \"127.0.0.2:2525\" }",
        "{ kind = \"lb_status\", url = \"http://lb2:9100/status\" }",
    );
    expect_err(&t, "12:44", "must be an IP address");
    let t = GSS.replace(
        "address = \"127.0.0.2:2525\" }",
        "address = \"127.0.0.2:2525\", vips = [\"smtp\"] }",
    );
    expect_err(&t, "12:67", "vips applies only to lb_status");
    let t = GSS.replace(
        "name = \"dc2\"",
        "name = \"dc2\"\nprobe_defaults = { interval = \"1s\", timeout = \"1s\" }",
    );
    expect_err(
        &t,
        "12:47",
        "probe timeout (1s) must be shorter than interval (1s)",
    );
    let t = GSS.replace(
        "name = \"dc2\"",
        "name = \"dc2\"\nprobe_defaults = { rise = 0 }",
    );
    expect_err(
        &t,
        "12:27",
        "probe_defaults rise must be between 1 and 1000",
    );
    // A keepalive's own timeout checked against the site's default interval.
    let t = GSS.replace(
        "name = \"dc2\"\nkeepalives = [ { kind = \"tcp\", address = \"127.0.0.2:2525\" } ]",
        "name = \"dc2\"\nprobe_defaults = { interval = \"1s\", timeout = \"500ms\" }\nkeepalives = [ { kind = \"tcp\", address = \"127.0.0.2:2525\", timeout = \"3s\" } ]",
    );
    expect_err(
        &t,
        "13:70",
        "probe timeout (3s) must be shorter than interval (1s)",
    );
}

#[test]
fn name_rules() {
    let n = |body: &str| format!("{GSS}\n[[gss.name]]\n{body}\n");
    // GSS is 12 lines, a blank line, then [[gss.name]] on 14: the body starts at 15.
    let base = "name = \"smtp\"\nsites = [\"dc1\", \"dc2\"]\nanswers = { dc1 = [\"127.0.0.1\"], dc2 = [\"127.0.0.2\"] }";
    parse_ok(&n(base));
    expect_err(
        &n(&base.replace("\"dc1\", \"dc2\"]", "\"dc1\", \"dc3\"]")),
        "16:17",
        "unknown site \"dc3\" in sites; define it with [[gss.site]]",
    );
    expect_err(
        &n(&base.replace("name = \"smtp\"", "name = \"@\"")),
        "15:8",
        "cannot be a site-selected name",
    );
    expect_err(
        &n(&base.replace("\"smtp\"", "\"smtp.example.org.\"")),
        "15:8",
        "outside the zone",
    );
    expect_err(
        &n(&base.replace(", dc2 = [\"127.0.0.2\"]", "")),
        "16:17",
        "site \"dc2\" of name \"smtp\" has no answers",
    );
    expect_err(
        &n(&base.replace("\"127.0.0.2\"", "\"127.0.0.300\"")),
        "17:41",
        "invalid address \"127.0.0.300\" in answers",
    );
    expect_err(
        &n(&base.replace("dc2 = [\"127.0.0.2\"]", "dc2 = []")),
        "17:40",
        "answers for site \"dc2\" is empty",
    );
    expect_err(
        &n(&format!("{base}\nweights = {{ dc1 = 2 }}")),
        "18:11",
        "weights apply only with policy = \"weighted\"",
    );
    expect_err(
        &n(&format!(
            "{base}\npolicy = \"weighted\"\nweights = {{ dc1 = 0 }}"
        )),
        "19:19",
        "weight of site \"dc1\" must be at least 1",
    );
    expect_err(
        &n(&format!(
            "{base}\nfailback = \"manual\"\nfailback_after = \"5m\""
        )),
        "19:18",
        "failback_after applies only with failback = \"auto\"",
    );
    expect_err(
        &n(&format!("{base}\nfailback = \"never\"")),
        "18:12",
        "unknown failback \"never\"",
    );
    expect_err(
        &n(&format!("{base}\nall_down = \"none\"")),
        "18:12",
        "unknown all_down",
    );
    expect_err(
        &n(&format!(
            "{base}\nclients = [ {{ networks = [\"10.0.0.0/33\"], sites = [\"dc2\"] }} ]"
        )),
        "18:27",
        "invalid network \"10.0.0.0/33\"",
    );
    let three = GSS.replace("[[gss.site]]\nname = \"dc2\"", "[[gss.site]]\nname = \"dc3\"\nkeepalives = [ { kind = \"tcp\", address = \"127.0.0.3:1\" } ]\n[[gss.site]]\nname = \"dc2\"");
    let t = format!("{three}\n[[gss.name]]\n{base}\nclients = [ {{ networks = [\"10.0.0.0/8\"], sites = [\"dc3\"] }} ]\n");
    expect_err(
        &t,
        "21:51",
        "client rule site \"dc3\" is not in this name's sites",
    );
    expect_err(
        &n(&format!(
            "{base}\nclients = [ {{ networks = [\"10.0.0.0/8\"], sites = [\"dc9\"] }} ]"
        )),
        "18:51",
        "unknown site \"dc9\"",
    );
}

#[test]
fn record_rules() {
    let r = |rec: &str| GSS.replace("nameservers", &format!("records = [{rec:?}]\nnameservers"));
    expect_err(&r("www A"), "4:12", "has no data after its type A");
    expect_err(&r("www.example.org. A 1.2.3.4"), "4:12", "outside the zone");
    expect_err(&r("www 300"), "4:12", "has no type");
    expect_err(&r("www 300 A-B x"), "4:12", "invalid type");
    // Data is parsed as the gss will serve it.
    expect_err(&r("www A 1.2.3"), "4:12", "invalid A data \"1.2.3\"");
    expect_err(&r("@ MX ten mx.example.test."), "4:12", "invalid MX data");
    expect_err(&r("www BOGUS x"), "4:12", "unknown record type BOGUS");
}

/// The records a DANE and service-binding zone publishes next to a site-selected
/// name are parsed at check time with the parser the gss serves them with.
#[test]
fn tlsa_svcb_https_caa_sshfp_records() {
    let r = |rec: &str| GSS.replace("nameservers", &format!("records = [{rec:?}]\nnameservers"));
    let hash = "8cb0fc6c527506a053f4f14c8464bebbd6dede2738d11468dd953d7d6a3021f1";
    for good in [
        format!("_25._tcp.mx TLSA 3 1 1 {hash}"),
        "_443._tcp.www 300 IN TLSA 2 0 2 0A1b".to_string(),
        "svc SVCB 1 . alpn=h2,h3 port=8443".to_string(),
        "@ HTTPS 1 . alpn=h2 ipv4hint=192.0.2.1".to_string(),
        "@ CAA 0 issue \"letsencrypt.org\"".to_string(),
        format!("host SSHFP 4 2 {hash}"),
    ] {
        let c = parse_ok(&r(&good));
        let g = c.gss.expect("gss");
        assert_eq!(g.records.len(), 1, "{good}");
    }
    expect_err(
        &r("_25._tcp.mx TLSA 3 1 1 xyz"),
        "4:12",
        "invalid TLSA data",
    );
    expect_err(&r("_25._tcp.mx TLSA 3 1"), "4:12", "invalid TLSA data");
    expect_err(
        &r("_25._tcp.mx TLSA three 1 1 00"),
        "4:12",
        "invalid TLSA data",
    );
    expect_err(&r("svc SVCB one ."), "4:12", "invalid SVCB data");
    expect_err(&r("@ HTTPS 1 . alpn"), "4:12", "invalid HTTPS data");
    expect_err(&r("@ CAA 0 issue"), "4:12", "invalid CAA data");
    expect_err(&r("host SSHFP 4 2 nothex"), "4:12", "invalid SSHFP data");
}

#[test]
fn lb_status_vips_checked_against_own_status_listener() {
    let t = format!(
        "[http]\nlisten = \"127.0.0.1:9100\"\n{VIP}{}",
        GSS.replace(
            "{ kind = \"tcp\", address = \"127.0.0.2:2525\" }",
            "{ kind = \"lb_status\", url = \"http://127.0.0.1:9100/status\", vips = [\"smtp\", \"smpt\"] }",
        )
    );
    let errs = errors(&t);
    assert_eq!(errs.len(), 1, "{errs:?}");
    expect_err(
        &t,
        "18:92",
        "names VIP \"smpt\", but this file's lb (status on 127.0.0.1:9100) has no such VIP",
    );
    // Another lb's status listener may name VIPs this file does not define.
    parse_ok(&t.replace("9100/status", "9200/status"));
}

/// `[gss.dnssec]`: roles, states and timing validated at their line:col; the key files
/// are opened by the loader, each problem at the `file` that names it.
#[test]
fn dnssec_rules() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/../gss/tests/testdata/dnssec");
    let ksk = format!("{keys}/Kgslb.example.test.+013+17467");
    let zsk = format!("{keys}/Kgslb.example.test.+013+33573");
    let with = |tail: &str| format!("{GSS}[gss.dnssec]\n{tail}");
    let good = with(&format!(
        "keys = [ {{ file = \"{ksk}\", role = \"ksk\" }}, {{ file = \"{zsk}.key\", role = \"zsk\" }} ]\nvalidity = \"2d\"\nrefresh = \"1d\"\njitter = \"1h\"\n"
    ));
    let c = load_text(&good, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
    let d = c.gss.unwrap().dnssec.unwrap();
    assert_eq!(d.keys.len(), 2);
    assert_eq!(d.keys[0].role, KeyRole::Ksk);
    assert_eq!(d.keys[1].state, KeyState::Active);
    assert_eq!(d.validity, Duration::from_secs(2 * 86400));
    assert_eq!(d.inception, DnssecConfig::DEFAULT_INCEPTION);
    // Line 14 is the keys line.
    let on_line = |text: &str, line: &str, fragment: &str| {
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(line) && e.contains(fragment)),
            "expected an error on {line} containing {fragment:?}, got:\n{}",
            errs.join("\n")
        );
    };
    on_line(
        &with(&format!(
            "keys = [ {{ file = \"{ksk}\", role = \"kks\" }} ]\n"
        )),
        "14:",
        "unknown dnssec key role \"kks\"",
    );
    on_line(
        &with(&format!(
            "keys = [ {{ file = \"{ksk}\", state = \"old\" }} ]\n"
        )),
        "14:",
        "unknown dnssec key state",
    );
    expect_err(
        &with(&format!(
            "keys = [ {{ file = \"{ksk}\", role = \"ksk\" }} ]\n"
        )),
        "13:1",
        "no active key signs the zone",
    );
    expect_err(
        &with(&format!(
            "keys = [ {{ file = \"{zsk}\", role = \"zsk\" }} ]\n"
        )),
        "13:1",
        "no active key signs the DNSKEY set",
    );
    expect_err(
        &with(&format!(
            "keys = [ {{ file = \"{ksk}\", state = \"published\" }} ]\n"
        )),
        "13:1",
        "no active key signs the DNSKEY set",
    );
    on_line(
        &with(&format!(
            "keys = [ {{ file = \"{ksk}\" }}, {{ file = \"{ksk}.private\" }} ]\n"
        )),
        "14:",
        "listed twice",
    );
    expect_err(&with("keys = []\n"), "14:8", "keys is empty");
    expect_err(
        &with(&format!(
            "keys = [ {{ file = \"{ksk}\" }} ]\nvalidity = \"2d\"\nrefresh = \"2d\"\n"
        )),
        "16:11",
        "must be less than validity",
    );
    expect_err(
        &with(&format!(
            "keys = [ {{ file = \"{ksk}\" }} ]\nvalidity = \"400d\"\n"
        )),
        "15:12",
        "above 365 days",
    );
    expect_err(
        &with(&format!("keys = [ {{ file = \"{ksk}\" }} ]\nrefresh = 5\n")),
        "15:11",
        "not a bare number",
    );
    on_line(
        &with(&format!("keys = [ {{ file = \"{ksk}\", bogus = 1 }} ]\n")),
        "14:",
        "bogus",
    );
    // Files: opened by the loader, errors at the file value.
    let load_errs = |text: &str| -> Vec<String> {
        match load_text(text, Path::new("t.toml")) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e
                .iter()
                .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
                .collect(),
        }
    };
    let other = format!("{keys}/Kother.example.test.+013+22472");
    for (file, want) in [
        (format!("{keys}/Kmissing.+013+00001"), "No such file"),
        (other, "belongs to other.example.test., not to the zone"),
    ] {
        let errs = load_errs(&with(&format!("keys = [ {{ file = \"{file}\" }} ]\n")));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("14:19: ") && e.contains(want)),
            "{want}: {errs:?}"
        );
    }
}

// ---- unknown keys in every table --------------------------------------------------

#[test]
fn unknown_key_in_every_table() {
    let cases: &[(&str, &str)] = &[
        ("top level", "bogus_key = 1\n"),
        ("admin", "[admin]\nsocket = \"/tmp/s\"\nbogus_key = 1\n"),
        ("http", "[http]\nlisten = \"127.0.0.1:9100\"\nbogus_key = 1\n"),
        ("vip", "[[vip]]\nname = \"a\"\nbogus_key = 1\n"),
        ("backend", "[[vip]]\nname = \"a\"\nbackends = [\n  { name = \"b\", bogus_key = 1 },\n]\n"),
        ("probe", "[[vip]]\nname = \"a\"\nprobe = { kind = \"tcp\", bogus_key = 1 }\n"),
        ("ejection", "[[vip]]\nname = \"a\"\nejection = { bogus_key = 1 }\n"),
        ("tls", "[[vip]]\nname = \"a\"\ntls = { cert = \"c\", bogus_key = 1 }\n"),
        ("tls certs", "[[vip]]\nname = \"a\"\ntls = { certs = [ { cert = \"c\", bogus_key = 1 } ] }\n"),
        ("sticky", "[[vip]]\nname = \"a\"\nsticky = { bogus_key = 1 }\n"),
        ("gss", "[gss]\nlisten = \"127.0.0.1:53\"\nbogus_key = 1\n"),
        ("soa", "[gss]\nlisten = \"127.0.0.1:53\"\nsoa = { bogus_key = 1 }\n"),
        ("soa table", "[gss]\nlisten = \"127.0.0.1:53\"\n[gss.soa]\nbogus_key = 1\n"),
        ("site", "[gss]\nlisten = \"127.0.0.1:53\"\n[[gss.site]]\nbogus_key = 1\n"),
        ("keepalive", "[gss]\nlisten = \"127.0.0.1:53\"\n[[gss.site]]\nkeepalives = [ { kind = \"tcp\", bogus_key = 1 } ]\n"),
        ("probe_defaults", "[gss]\nlisten = \"127.0.0.1:53\"\n[[gss.site]]\nprobe_defaults = { bogus_key = 1 }\n"),
        ("name", "[gss]\nlisten = \"127.0.0.1:53\"\n[[gss.name]]\nbogus_key = 1\n"),
        ("clients rule", "[gss]\nlisten = \"127.0.0.1:53\"\n[[gss.name]]\nclients = [ { networks = [], bogus_key = 1 } ]\n"),
    ];
    for (table, text) in cases {
        let line = text
            .lines()
            .position(|l| l.contains("bogus_key"))
            .map(|i| i + 1)
            .unwrap_or(0);
        let col = text
            .lines()
            .nth(line - 1)
            .and_then(|l| l.find("bogus_key"))
            .unwrap_or(0)
            + 1;
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&format!("{line}:{col}: "))
                    && e.contains("unknown field `bogus_key`")),
            "{table}: expected `bogus_key` at {line}:{col}, got {errs:?}"
        );
    }
}

// ---- shipped examples ------------------------------------------------------------

#[test]
fn example_configs_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        // `parse`, not `load`: pod.toml names certificates that exist only on a
        // production machine (tests/check.rs checks those are its only errors).
        let text = std::fs::read_to_string(&path).expect("read example");
        if let Err(e) = parse(&text, &path) {
            panic!("{} is invalid:\n{e}", path.display());
        }
        seen.push(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    for required in ["demo.toml", "pod.toml", "gss.toml"] {
        assert!(
            seen.iter().any(|s| s == required),
            "config/{required} is missing"
        );
    }
}

#[test]
fn demo_config_has_both_sites() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/demo.toml");
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.vips.len(), 8);
    assert!(c
        .vips
        .iter()
        .all(|v| v.listen.ip().is_loopback() && v.listen.port() >= 1024));
    assert!(c.vips.iter().all(|v| v.tls.is_none()));
    let g = c.gss.expect("demo runs a gss");
    assert_eq!(g.listen, addr("127.0.0.1:5353"));
    assert_eq!(g.zone, "gslb.example.test");
    let sites: Vec<_> = g.sites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(sites, ["dc1", "dc2"]);
    let names: Vec<_> = g.names.iter().map(|n| n.fqdn.as_str()).collect();
    for n in ["smtp", "imap", "webmail", "mapi", "autodiscover"] {
        assert!(
            names.contains(&format!("{n}.gslb.example.test").as_str()),
            "missing {n}"
        );
    }
}

#[test]
fn l7_edge_options() {
    let t = VIP.replace(
        "backends",
        "mode = \"https\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }\nforwarded_for = \"append\"\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\"]\nmax_headers = 50\ntls_min_version = \"1.2\"\ntls12_ciphers = [\"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\"]\nbackends",
    );
    let c = parse_ok(&t);
    let h = &c.vips[0].http;
    assert_eq!(h.forwarded_for, ForwardedFor::Append);
    assert_eq!(
        h.trusted_proxies,
        vec![
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
            "192.0.2.1/32".parse().unwrap()
        ]
    );
    assert_eq!(h.max_headers, 50);
    assert_eq!(h.tls_min_version, TlsVersion::Tls12);
    assert_eq!(
        h.tls12_ciphers.as_deref(),
        Some(&["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string()][..])
    );
    let d = parse_ok(&VIP.replace("backends", "mode = \"http\"\nbackends"));
    assert_eq!(d.vips[0].http.forwarded_for, ForwardedFor::Append);
    assert_eq!(d.vips[0].http.max_headers, DEFAULT_MAX_HEADERS);

    let t = VIP.replace(
        "backends",
        "mode = \"http\"\nforwarded_for = \"replace\"\ntrusted_proxies = [\"nope\"]\nmax_headers = 3\ntls_min_version = \"1.3\"\nbackends",
    );
    expect_err(
        &t,
        "6:19",
        "trusted_proxies only applies with forwarded_for = \"append\"",
    );
    expect_err(&t, "6:20", "invalid network \"nope\" in trusted_proxies");
    expect_err(&t, "7:15", "max_headers must be between 8 and 10000");
    expect_err(&t, "8:19", "tls_min_version applies only to mode \"https\"");
    let t = VIP.replace(
        "backends",
        "mode = \"https\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }\nforwarded_for = \"sometimes\"\ntls_min_version = \"1.3\"\ntls12_ciphers = [\"TLS_RSA_WITH_RC4_128_MD5\"]\nbackends",
    );
    expect_err(&t, "6:17", "unknown forwarded_for \"sometimes\"");
    expect_err(
        &t,
        "8:17",
        "tls12_ciphers has no effect with tls_min_version = \"1.3\"",
    );
    expect_err(
        &t,
        "8:18",
        "unknown TLS 1.2 cipher suite \"TLS_RSA_WITH_RC4_128_MD5\"",
    );
    let t = VIP.replace("backends", "max_headers = 50\nbackends");
    expect_err(
        &t,
        "4:15",
        "max_headers applies only to mode \"http\" or \"https\"",
    );

    let t = VIP.replace(
        "backends",
        "mode = \"https\"\ntls = { certs = [ { cert = \"a.pem\", key = \"a.key\" }, { cert = \"b.pem\", key = \"b.key\" } ] }\nocsp = { \"b.pem\" = \"b.ocsp\" }\nbackends",
    );
    let c = parse_ok(&t);
    assert_eq!(
        c.vips[0].http.ocsp.get(Path::new("b.pem")),
        Some(&PathBuf::from("b.ocsp"))
    );
    let t = VIP.replace(
        "backends",
        "mode = \"https\"\ntls = { cert = \"a.pem\", key = \"a.key\" }\nocsp = { \"c.pem\" = \"c.ocsp\" }\nbackends",
    );
    expect_err(
        &t,
        "6:10",
        "ocsp names \"c.pem\", which is not a cert of this VIP's tls",
    );
}

/// `load_text` errors as `LINE:COL: message`.
fn load_errors(text: &str) -> Vec<String> {
    match load_text(text, Path::new("t.toml")) {
        Ok(_) => panic!("expected errors, config was accepted:\n{text}"),
        Err(e) => e
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
            .collect(),
    }
}

fn https_vip(cert: &Path, key: &Path, ca: &Path) -> String {
    format!(
        r#"[[vip]]
name = "web"
listen = "127.0.0.1:8443"
mode = "https"
tls = {{ cert = "{}", key = "{}" }}
backend_tls = true
backend_ca = "{}"
backends = [ {{ name = "w1", address = "127.0.0.1:8080" }} ]
probe = {{ kind = "http", tls = true, ca = "{}" }}
"#,
        cert.display(),
        key.display(),
        ca.display(),
        ca.display()
    )
}

#[test]
fn load_opens_every_named_file_and_reports_each_at_its_line() {
    let pki = crate::testing::tls::TestPki::new(&["localhost"]);
    let good = https_vip(&pki.cert_path(), &pki.key_path(), &pki.ca_path());
    load_text(&good, Path::new("t.toml")).expect("real files load");
    // parse alone never opens files (the fuzzer and unit tests rely on it).
    let missing = pki.dir().join("missing.pem");
    let text = https_vip(&missing, &missing, &missing);
    parse(&text, Path::new("t.toml")).expect("parse does not open files");
    let errs = load_errors(&text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("5:16: tls cert \""), "{errs:#?}");
    assert!(errs[0].contains("missing.pem"), "{errs:#?}");
    let key_col = text.lines().nth(4).and_then(|l| l.find("key = ")).unwrap() + 7;
    assert!(
        errs[1].starts_with(&format!("5:{key_col}: tls key")),
        "{errs:#?}"
    );
    assert!(errs[2].starts_with("7:14: backend_ca"), "{errs:#?}");
    assert!(errs[3].starts_with("9:43: probe ca"), "{errs:#?}");
}

#[test]
fn load_rejects_files_that_hold_the_wrong_thing() {
    let pki = crate::testing::tls::TestPki::new(&["localhost"]);
    let other = crate::testing::tls::TestPki::new(&["localhost"]);
    let junk = pki.dir().join("junk.pem");
    std::fs::write(&junk, "not a pem file\n").expect("write");
    // A key where the certificate goes, a certificate where the key goes, junk as CA.
    let errs = load_errors(&https_vip(&pki.key_path(), &pki.cert_path(), &junk));
    assert!(
        errs.iter().any(|e| e.starts_with("5:16: tls cert")),
        "{errs:#?}"
    );
    assert!(errs.iter().any(|e| e.contains(": tls key")), "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.starts_with("7:14: backend_ca")),
        "{errs:#?}"
    );
    // Valid PEM around bytes that are no certificate.
    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let errs = load_errors(&https_vip(&garbage, &pki.key_path(), &pki.ca_path()));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].starts_with("5:16: tls cert"), "{errs:#?}");
    assert!(errs[0].contains("unusable certificate"), "{errs:#?}");
    // A key that belongs to another certificate.
    let errs = load_errors(&https_vip(
        &pki.cert_path(),
        &other.key_path(),
        &pki.ca_path(),
    ));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(errs[0].contains("does not fit certificate"), "{errs:#?}");
}

#[test]
fn backend_port_zero_is_rejected() {
    let t = VIP.replace("127.0.0.1:12525", "127.0.0.1:0");
    expect_err(&t, "4:40", "port 0");
}

#[test]
fn a_megabyte_vip_name_is_not_echoed_whole() {
    let name = "x".repeat(1 << 20);
    let t = VIP.replace("\"smtp\"", &format!("\"{name}\""));
    let errs = errors(&t);
    assert!(!errs.is_empty());
    for e in &errs {
        assert!(e.len() < 1200, "{} bytes: {}…", e.len(), &e[..100]);
        assert!(e.contains('…'), "{e}");
    }
}

#[test]
fn probe_values_the_probe_builder_would_refuse_are_errors_with_a_position() {
    let with_probe = |probe: &str| VIP.replace("backends", &format!("probe = {probe}\nbackends"));
    expect_err(
        &with_probe(r#"{ kind = "smtp", tls = true, sni = "not a name!" }"#),
        "4:44",
        "probe sni",
    );
    expect_err(
        &with_probe(r#"{ kind = "http", host = "a\u0001b" }"#),
        "4:33",
        "Host header",
    );
    expect_err(
        &with_probe(r#"{ kind = "http", tls = true, host = "bad name:443" }"#),
        "4:45",
        "set sni",
    );
    expect_err(
        &with_probe(r#"{ kind = "http", path = "/a b" }"#),
        "4:33",
        "valid request path",
    );
    parse_ok(&with_probe(
        r#"{ kind = "http", tls = true, host = "mail.example.com:443", path = "/healthz?x=1" }"#,
    ));
}

#[test]
fn one_load_reports_validation_and_file_errors_together() {
    let pki = crate::testing::tls::TestPki::new(&["localhost"]);
    let missing = pki.dir().join("missing.pem");
    let text = https_vip(&pki.cert_path(), &pki.key_path(), &missing)
        .replace("127.0.0.1:8080", "127.0.0.1:0");
    let errs = load_errors(&text);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(errs[0].starts_with("7:14: backend_ca"), "{errs:#?}");
    assert!(errs[1].contains("port 0"), "{errs:#?}");
    assert!(errs[2].starts_with("9:43: probe ca"), "{errs:#?}");
}

#[test]
fn load_opens_ocsp_response_files_at_their_line() {
    let pki = crate::testing::tls::TestPki::new(&["localhost"]);
    let cert = pki.cert_path();
    let with_ocsp = |file: &Path| {
        https_vip(&cert, &pki.key_path(), &pki.ca_path()).replace(
            "backend_tls = true",
            &format!(
                "ocsp = {{ \"{}\" = \"{}\" }}\nbackend_tls = true",
                cert.display(),
                file.display()
            ),
        )
    };
    let der = pki.dir().join("ok.ocsp");
    std::fs::write(&der, [0x30, 0x03, 0x0a, 0x01, 0x00]).expect("write");
    load_text(&with_ocsp(&der), Path::new("t.toml")).expect("a DER response loads");
    let pem = pki.dir().join("saved-as-pem.ocsp");
    std::fs::write(&pem, "-----BEGIN OCSP RESPONSE-----\n").expect("write");
    let text = with_ocsp(&pem);
    let col = text.lines().nth(5).and_then(|l| l.find("\" = \"")).unwrap() + 5;
    let errs = load_errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with(&format!("6:{col}: ocsp response file")),
        "{errs:#?}"
    );
    assert!(errs[0].contains("not a DER OCSP response"), "{errs:#?}");
    let errs = load_errors(&with_ocsp(&pki.dir().join("missing.ocsp")));
    assert!(errs[0].contains("cannot read OCSP response"), "{errs:#?}");
}

#[test]
fn a_backend_sni_the_lb_would_refuse_is_an_error_at_its_position() {
    let t = VIP.replace(
        "backends",
        "mode = \"http\"\nbackend_tls = true\nbackend_sni = \"not a name!\"\nbackends",
    );
    expect_err(&t, "6:15", "backend_sni \"not a name!\" is neither");
    let ok = VIP.replace(
        "backends",
        "mode = \"http\"\nbackend_tls = true\nbackend_sni = \"mail.example.com\"\nbackends",
    );
    parse_ok(&ok);
}

// ---- cluster ------------------------------------------------------------------

const CLUSTER: &str = r#"
[cluster]
id = "mail"
node = "gss1"
secret_file = "/etc/portico/cluster.key"
gossip_interval = "250ms"
stale_after = "3s"

[[cluster.member]]
id = "gss1"
address = "192.0.2.1:7946"

[[cluster.member]]
id = "gss2"
address = "198.51.100.1:7946"

[[cluster.member]]
id = "wit"
address = "203.0.113.1:7946"

[[cluster.member]]
id = "lb-a"
address = "203.0.113.9:7946"
vantage = false
"#;

#[test]
fn cluster_maps_to_model_with_defaults() {
    let c = parse_ok(&format!("{GSS}{CLUSTER}"));
    let cl = c.cluster.expect("cluster");
    assert_eq!(cl.id, "mail");
    assert_eq!(cl.node, "gss1");
    assert_eq!(
        cl.listen,
        addr("192.0.2.1:7946"),
        "listen defaults to the own member address"
    );
    assert_eq!(cl.gossip_interval, Duration::from_millis(250));
    assert_eq!(cl.stale_after, Duration::from_secs(3));
    assert_eq!(cl.members.len(), 4);
    assert_eq!(cl.vantage_points().count(), 3);
    let g = c.gss.expect("gss");
    assert_eq!(g.role, GssRole::Server);
    assert_eq!(g.quorum, None);

    let minimal = "[cluster]\nid = \"m\"\nnode = \"a\"\nsecret_file = \"k\"\n[[cluster.member]]\nid = \"a\"\naddress = \"127.0.0.1:7946\"\n";
    let cl = parse_ok(&format!("{GSS}{minimal}"))
        .cluster
        .expect("cluster");
    assert_eq!(cl.gossip_interval, Duration::from_millis(500));
    assert_eq!(cl.stale_after, Duration::from_secs(5));
    assert!(cl.members[0].vantage);
}

#[test]
fn witness_and_quorum_map_to_model() {
    let witness = GSS
        .replacen("listen = \"127.0.0.1:5353\"\n", "", 1)
        .replacen(
            "nameservers = [\"ns1.gslb.example.test\"]\n",
            "nameservers = [\"ns1.gslb.example.test\"]\nrole = \"witness\"\nquorum = 3\n",
            1,
        );
    let g = parse_ok(&format!("{witness}{CLUSTER}")).gss.expect("gss");
    assert_eq!(g.role, GssRole::Witness);
    assert_eq!(g.quorum, Some(3));
    // A witness opens no port, so a listen address is a mistake; a server needs one.
    let both = GSS.replacen(
        "nameservers = [\"ns1.gslb.example.test\"]\n",
        "nameservers = [\"ns1.gslb.example.test\"]\nrole = \"witness\"\n",
        1,
    );
    expect_err(
        &format!("{both}{CLUSTER}"),
        "2:10",
        "a witness answers no DNS",
    );
    let neither = GSS.replacen("listen = \"127.0.0.1:5353\"\n", "", 1);
    expect_err(&format!("{neither}{CLUSTER}"), "1:1", "[gss] needs listen");
}

#[test]
fn cluster_errors_name_line_and_column() {
    let with = |gss_extra: &str, cluster: &str| {
        format!(
            "{}{cluster}",
            GSS.replacen(
                "nameservers = [\"ns1.gslb.example.test\"]\n",
                &format!("nameservers = [\"ns1.gslb.example.test\"]\n{gss_extra}"),
                1
            )
        )
    };
    // [cluster] is line 14 (15 with one extra [gss] line).
    expect_err(
        &with("", &CLUSTER.replace("node = \"gss1\"", "node = \"gss9\"")),
        "16:8",
        "node \"gss9\" is not one of the [[cluster.member]] ids",
    );
    expect_err(
        &with(
            "",
            &CLUSTER.replace("stale_after = \"3s\"", "stale_after = \"300ms\""),
        ),
        "19:15",
        "must be at least two gossip intervals",
    );
    expect_err(
        &with("", &CLUSTER.replace("id = \"gss2\"", "id = \"gss1\"")),
        "26:6",
        "duplicate cluster member \"gss1\"",
    );
    expect_err(
        &with("", &CLUSTER.replace("198.51.100.1:7946", "0.0.0.0:7946")),
        "27:11",
        "give a concrete IP and port",
    );
    expect_err(
        &with(
            "",
            &CLUSTER.replace("198.51.100.1:7946", "gss2.example:7946"),
        ),
        "27:11",
        "invalid member address",
    );
    // 3 vantage points: 1 (decide alone) or a majority (2, 3).
    expect_err(
        &with("quorum = 4\n", CLUSTER),
        "5:10",
        "between 1 and the 3 vantage points",
    );
    expect_err(
        &with("quorum = 0\n", CLUSTER),
        "5:10",
        "between 1 and the 3 vantage points",
    );
    parse_ok(&with("quorum = 1\n", CLUSTER));
    parse_ok(&with("quorum = 2\n", CLUSTER));
    expect_err(
        &with("quorum = 2\n", ""),
        "5:10",
        "without one this gss decides alone",
    );
    expect_err(
        &with("role = \"witness\"\n", ""),
        "5:8",
        "add a [cluster] section",
    );
    expect_err(
        &with("role = \"judge\"\n", CLUSTER),
        "5:8",
        "unknown gss role \"judge\"",
    );
    expect_err(
        &with("", &CLUSTER.replace("stale_after", "stale_afterr")),
        "19:1",
        "stale_afterr",
    );
}

/// Two lb replicas of `pod1` (lb-a is this node) beside the gss members.
fn pod_cluster(pod_b: &str) -> String {
    let c = CLUSTER
        .replace("node = \"gss1\"", "node = \"lb-a\"")
        .replace("vantage = false\n", "vantage = false\npod = \"pod1\"\n");
    format!(
        "{VIP}{c}\n[[cluster.member]]\nid = \"lb-b\"\naddress = \"203.0.113.10:7946\"\nvantage = false\npod = {pod_b}\n"
    )
}

#[test]
fn cluster_pods_name_this_nodes_replicas() {
    let cl = parse_ok(&pod_cluster("\"pod1\"")).cluster.expect("cluster");
    assert_eq!(cl.pod(), Some("pod1"));
    let replicas: Vec<&str> = cl.replicas().map(|m| m.id.as_str()).collect();
    assert_eq!(replicas, ["lb-a", "lb-b"]);
    // A replica of another pod is a member but not a replica of this one.
    let cl = parse_ok(&pod_cluster("\"pod2\"")).cluster.expect("cluster");
    let replicas: Vec<&str> = cl.replicas().map(|m| m.id.as_str()).collect();
    assert_eq!(replicas, ["lb-a"]);
    // Without a pod, a node shares no backend intent.
    let cl = parse_ok(&format!("{GSS}{CLUSTER}"))
        .cluster
        .expect("cluster");
    assert_eq!(cl.pod(), None);
    assert_eq!(cl.replicas().count(), 0);
    // VIP is 4 lines, CLUSTER 25 (from its leading blank line), then the member.
    expect_err(
        &pod_cluster("\"pod 1\""),
        "35:7",
        "invalid pod name \"pod 1\"",
    );
    expect_err(&pod_cluster("1"), "35:7", "invalid type");
}

#[test]
fn state_dir_is_relative_to_the_config_file() {
    let cfg = format!("state_dir = \"state\"\n{VIP}");
    let c = parse(&cfg, Path::new("/etc/portico/portico.toml")).unwrap();
    assert_eq!(c.state_dir, Some(PathBuf::from("/etc/portico/state")));
    let c = parse(
        &cfg.replace("\"state\"", "\"/var/lib/portico\""),
        Path::new("/etc/p.toml"),
    )
    .unwrap();
    assert_eq!(c.state_dir, Some(PathBuf::from("/var/lib/portico")));
    assert_eq!(parse_ok(VIP).state_dir, None);
    expect_err(
        &format!("state_dir = \"\"\n{VIP}"),
        "1:13",
        "state_dir must not be empty",
    );
}

#[test]
fn load_checks_state_dir_at_its_line() {
    let pki = crate::testing::tls::TestPki::new(&["localhost"]);
    let dir = pki.dir();
    // Missing but creatable, and existing: both fine.
    for d in [dir.join("new/state"), dir.to_path_buf()] {
        let text = format!("state_dir = \"{}\"\n{VIP}", d.display());
        load_text(&text, Path::new("t.toml")).expect("usable state_dir");
    }
    // A file where the directory should be, or under it.
    let text = format!("state_dir = \"{}\"\n{VIP}", pki.cert_path().display());
    let errs = load_errors(&text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("1:13: state_dir \"")
            && errs[0].ends_with("exists and is not a directory"),
        "{errs:#?}"
    );
    let text = format!("state_dir = \"{}/below\"\n{VIP}", pki.cert_path().display());
    let errs = load_errors(&text);
    assert!(errs[0].contains("is not a directory"), "{errs:#?}");
}
