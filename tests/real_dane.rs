//! DANE (RFC 7672) end to end with real mail software: a sending Postfix with
//! `smtp_tls_security_level = dane` and `smtp_dns_support_level = dnssec` resolves
//! through Debian's validating `unbound`, which has the zone's trust anchor and a stub
//! zone pointing at a signing `portico run` gss. The MX host is a site-selected name;
//! its TLSA record is a static record beside it. A receiving Postfix with the matching
//! certificate listens on both sites' addresses.
//!
//! Everything runs inside one network namespace of the lab, so Postfix's resolver can
//! be pointed at the test's unbound on port 53 (`/etc/netns/NS/resolv.conf`) and the
//! MX hosts can use the real SMTP port on TEST-NET addresses.
//!
//! Checked: a message to a domain whose MX has a matching TLSA is delivered over a
//! verified TLS connection; one whose MX publishes a TLSA for another key is deferred
//! and never delivered; after the primary site fails, the moved (pre-signed) answer
//! still validates and mail reaches the secondary's address, verified again.

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::Lab;
use common::real::{read_file, Postfix, PostfixSetup};
use common::{poll, tool, Daemon, Portico, TempDir};

const ZONE: &str = "gslb.example.test";
const KSK: &str = "Kgslb.example.test.+013+17467";
const ZSK: &str = "Kgslb.example.test.+013+33573";
const DC1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
const DC2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
const GSS_PORT: u16 = 5300;

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("gss/tests/testdata/dnssec")
}

/// The KSK's DNSKEY line: the trust anchor a parent's DS would stand for.
fn anchor() -> String {
    let text = std::fs::read_to_string(keys_dir().join(format!("{KSK}.key"))).unwrap();
    text.lines()
        .find(|l| l.contains("DNSKEY"))
        .expect("a DNSKEY line")
        .to_string()
}

fn openssl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh P-256 key in `dir/NAME.key.pem` and the TLSA 3 1 1 data for it (SHA-256 of
/// its DER SubjectPublicKeyInfo), with a self-signed certificate when `cert`.
fn key_and_tlsa(dir: &Path, name: &str, cert: bool) -> String {
    let key = format!("{name}.key.pem");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    if cert {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-key",
                &key,
                "-out",
                &format!("{name}.cert.pem"),
                "-days",
                "30",
                "-subj",
                &format!("/CN=mx.{ZONE}"),
            ],
        );
    }
    let spki = format!("{name}.spki.der");
    openssl(
        dir,
        &[
            "pkey", "-in", &key, "-pubout", "-outform", "DER", "-out", &spki,
        ],
    );
    let digest = openssl(dir, &["dgst", "-sha256", "-r", &spki]);
    let hex = digest
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string();
    assert_eq!(hex.len(), 64, "{digest}");
    format!("3 1 1 {hex}")
}

fn gss_config(sock: &Path, good: &str, bad: &str) -> String {
    let keys = keys_dir();
    format!(
        r#"
[admin]
socket = "{sock}"

[gss]
listen = "127.0.0.1:{GSS_PORT}"
zone = "{ZONE}"
ttl = 1
nameservers = ["ns1.{ZONE}"]
soa = {{ minimum = 1 }}
records = [
  "ns1 A 127.0.0.1",
  "good MX 10 mx",
  "bad MX 10 mxbad",
  "mxbad A {DC1}",
  "_25._tcp.mx TLSA {good}",
  "_25._tcp.mxbad TLSA {bad}",
]

[gss.dnssec]
keys = [
  {{ file = "{ksk}", role = "ksk" }},
  {{ file = "{zsk}", role = "zsk" }},
]

[[gss.site]]
name = "dc1"
keepalives = [ {{ kind = "smtp", address = "{DC1}:25" }} ]
probe_defaults = {{ interval = "300ms", timeout = "250ms", rise = 1, fall = 2 }}

[[gss.site]]
name = "dc2"
keepalives = [ {{ kind = "smtp", address = "{DC2}:25" }} ]
probe_defaults = {{ interval = "300ms", timeout = "250ms", rise = 1, fall = 2 }}

[[gss.name]]
name = "mx"
ttl = 1
sites = ["dc1", "dc2"]
answers = {{ dc1 = ["{DC1}"], dc2 = ["{DC2}"] }}
"#,
        sock = sock.display(),
        ksk = keys.join(KSK).display(),
        zsk = keys.join(ZSK).display(),
    )
}

/// Validating unbound on 127.0.0.1:53 inside the namespace, trusting only the zone's
/// anchor, with a stub zone to the gss; caches kept to a second or two so a failover
/// is seen at once.
fn unbound(lab: &Lab, dir: &TempDir) -> Option<Daemon> {
    let bin = tool("unbound")?;
    let d = dir.path("unbound");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("anchor.key"), format!("{}\n", anchor())).unwrap();
    let d = d.display();
    let conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: 53\n  username: \"\"\n  chroot: \"\"\n  \
         directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"{d}/log\"\n  \
         verbosity: 1\n  val-log-level: 2\n  num-threads: 1\n  do-not-query-localhost: no\n  \
         access-control: 127.0.0.0/8 allow\n  trust-anchor-file: \"{d}/anchor.key\"\n  \
         module-config: \"validator iterator\"\n  qname-minimisation: no\n  \
         cache-max-ttl: 2\n  cache-max-negative-ttl: 1\n  prefetch: no\n  local-zone: \"test.\" nodefault\n\
         remote-control:\n  control-enable: no\n\
         stub-zone:\n  name: \"{ZONE}\"\n  stub-addr: 127.0.0.1@{GSS_PORT}\n"
    );
    let path = dir.path("unbound/unbound.conf");
    std::fs::write(&path, conf).unwrap();
    let prefix = lab.exec_prefix("mail");
    Some(Daemon::spawn(
        Command::new(&prefix[0])
            .args(&prefix[1..])
            .arg(bin)
            .args(["-d", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    ))
}

/// `dig` inside the namespace through unbound: (flags line, answer lines).
fn dig(lab: &Lab, name: &str, rtype: &str) -> (String, String) {
    let prefix = lab.exec_prefix("mail");
    let out = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args([
            "dig",
            "@127.0.0.1",
            "+dnssec",
            "+tries=1",
            "+time=1",
            name,
            rtype,
        ])
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let flags = text
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .unwrap_or("")
        .to_string();
    (flags, text)
}

fn validated(lab: &Lab, name: &str, rtype: &str, want: &str) -> bool {
    let (flags, text) = dig(lab, name, rtype);
    flags.contains(" ad")
        && text
            .lines()
            .any(|l| !l.starts_with(';') && l.contains(want))
}

/// Hands a message to the sending Postfix with its own `sendmail` (through the
/// maildrop queue and `pickup`, as local mail would be).
fn send(lab: &Lab, sender: &Postfix, to: &str, tag: &str) {
    use std::io::Write;
    let prefix = lab.exec_prefix("mail");
    let mut child = Command::new(&prefix[0])
        .args(&prefix[1..])
        .args(["/usr/sbin/sendmail", "-C"])
        .arg(sender.root.join("conf"))
        .args(["-f", "sender@out.example.test", to])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sendmail");
    let msg = format!(
        "From: <sender@out.example.test>\r\nTo: <{to}>\r\nSubject: {tag}\r\nMessage-ID: <{tag}@out.example.test>\r\n\r\n{tag}\r\n"
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(msg.as_bytes())
        .expect("write the message");
    let out = child.wait_with_output().expect("sendmail ends");
    assert!(
        out.status.success(),
        "sendmail {to}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first line of the sender's log saying the message to `to` reached `status`.
fn outcome(log: &str, to: &str, status: &str) -> Option<String> {
    log.lines()
        .find(|l| l.contains(&format!("to=<{to}>")) && l.contains(&format!("status={status}")))
        .map(str::to_string)
}

#[test]
fn postfix_delivers_over_dane_only_when_the_tlsa_matches_also_after_a_failover() {
    for t in ["openssl", "dig", "unbound"] {
        if tool(t).is_none() {
            return;
        }
    }
    let Some(lab) = Lab::build(&[("mail", DC1)], &[]) else {
        return;
    };
    lab.add_addr("mail", DC2);
    lab.set_resolv_conf("mail", "nameserver 127.0.0.1\noptions edns0 trust-ad\n");
    let dir = TempDir::new("dane");
    let certs = dir.path("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let good = key_and_tlsa(&certs, "mx", true);
    let bad = key_and_tlsa(&certs, "other", false);
    common::real::make_traversable(&certs, &dir.0);
    common::real::chmod(&certs.join("mx.key.pem"), 0o644);

    let prefix = lab.exec_prefix("mail");
    // The receiving MTA of both sites: one Postfix on both site addresses, port 25,
    // presenting the certificate whose key the good TLSA names.
    let listen = [format!("{DC1}:25"), format!("{DC2}:25")];
    let rx_main = format!(
        "myhostname = mx.{ZONE}\ninet_interfaces = {DC1}, {DC2}\n\
         mydestination = good.{ZONE}, bad.{ZONE}\nmynetworks = 127.0.0.0/8\n\
         smtpd_tls_security_level = may\nsmtpd_tls_chain_files = {key}, {cert}\n\
         smtpd_tls_loglevel = 1\n",
        key = certs.join("mx.key.pem").display(),
        cert = certs.join("mx.cert.pem").display(),
    );
    let Some(receiver) = Postfix::start_with(
        &dir,
        "rx",
        &PostfixSetup {
            listen: &listen,
            main_cf: &rx_main,
            exec_prefix: &prefix,
        },
    ) else {
        return;
    };
    let Some(_unbound) = unbound(&lab, &dir) else {
        return;
    };
    let sock = dir.path("admin.sock");
    let gss = Portico::start_prefixed(&dir, &gss_config(&sock, &good, &bad), &[], &[], &prefix);
    // dc1's keepalive (an SMTP probe of the receiver) passing means the receiver
    // listens; then the signed answer must validate.
    let up = poll(Duration::from_secs(20), || {
        (gss.ctl("show sites")
            .lines()
            .any(|l| l.starts_with("dc1 up"))
            && validated(&lab, &format!("mx.{ZONE}"), "A", &DC1.to_string()))
        .then_some(())
    });
    assert!(
        up.is_some(),
        "mx.{ZONE} does not validate through unbound: {}\nsites:\n{}\nreceiver:\n{}",
        dig(&lab, &format!("mx.{ZONE}"), "A").1,
        gss.ctl("show sites"),
        receiver.log()
    );
    assert!(
        validated(&lab, &format!("_25._tcp.mx.{ZONE}"), "TLSA", "TLSA"),
        "{}",
        dig(&lab, &format!("_25._tcp.mx.{ZONE}"), "TLSA").1
    );

    // The sending MTA: DANE required where the DNS says so, DNSSEC from resolv.conf.
    let tx_main = "myhostname = out.example.test\nmydestination =\ninet_interfaces = 127.0.0.1\n\
         default_transport = smtp\nrelay_transport = smtp\n\
         smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n\
         smtp_host_lookup = dns\nsmtp_tls_loglevel = 1\ndnssec_probe =\n\
         smtp_connect_timeout = 5s\nqueue_run_delay = 1s\nminimal_backoff_time = 1s\n\
         maximal_backoff_time = 2s\n";
    let Some(sender) = Postfix::start_with(
        &dir,
        "tx",
        &PostfixSetup {
            listen: &[],
            main_cf: tx_main,
            exec_prefix: &prefix,
        },
    ) else {
        return;
    };
    // The master has no listener to wait for: its pickup service is ready once its
    // public FIFO exists.
    let ready = poll(Duration::from_secs(15), || {
        sender
            .root
            .join("queue/public/pickup")
            .exists()
            .then_some(())
    });
    assert!(
        ready.is_some(),
        "sending postfix did not start:\n{}",
        sender.log()
    );

    let good_rcpt = format!("user@good.{ZONE}");
    let bad_rcpt = format!("user@bad.{ZONE}");
    send(&lab, &sender, &good_rcpt, "dane-good");
    send(&lab, &sender, &bad_rcpt, "dane-bad");

    let delivered = poll(Duration::from_secs(30), || {
        outcome(&sender.log(), &good_rcpt, "sent")
    });
    let log = sender.log();
    let delivered = delivered.unwrap_or_else(|| {
        panic!(
            "not delivered to {good_rcpt}:\n{log}\nstderr:\n{}\nreceiver:\n{}",
            read_file(&sender.root.join("master.stderr")),
            receiver.log()
        )
    });
    assert!(delivered.contains(&format!("[{DC1}]:25")), "{delivered}");
    assert!(
        log.contains(&format!(
            "Verified TLS connection established to mx.{ZONE}[{DC1}]:25"
        )),
        "delivered, but not over a DANE-verified connection:\n{log}"
    );

    // The TLSA names another key: Postfix must refuse to hand the message over.
    let refused = poll(Duration::from_secs(30), || {
        outcome(
            &sender.log(),
            &bad_rcpt,
            "deferred (Server certificate not verified",
        )
    });
    let log = sender.log();
    let refused = refused.unwrap_or_else(|| panic!("no deferral for {bad_rcpt}:\n{log}"));
    assert!(
        log.contains(&format!(
            "server certificate verification failed for mxbad.{ZONE}[{DC1}]:25: num=65:no matching DANE TLSA records"
        )),
        "deferred, but not for the TLSA: {refused}\n{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains(&format!("to=<{bad_rcpt}>")) && l.contains("status=sent")),
        "delivered despite a TLSA for another key:\n{log}"
    );
    assert!(
        !read_file(&receiver.maillog).contains("dane-bad@out.example.test"),
        "the receiver accepted the message the TLSA should have stopped"
    );

    // The primary site fails: its address leaves the namespace, the gss's keepalives
    // fail, and the moved answer (signed ahead) still validates.
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.site("mail").ns,
            "addr",
            "del",
            &format!("{DC1}/32"),
            "dev",
            "lo",
        ])
        .output()
        .expect("ip addr del");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved = poll(Duration::from_secs(20), || {
        validated(&lab, &format!("mx.{ZONE}"), "A", &DC2.to_string()).then_some(())
    });
    assert!(
        moved.is_some(),
        "the answer did not move to dc2 with a validated answer: {}\n{}",
        dig(&lab, &format!("mx.{ZONE}"), "A").1,
        gss.ctl("show sites")
    );
    let after = format!("after@good.{ZONE}");
    send(&lab, &sender, &after, "dane-after-failover");
    let delivered = poll(Duration::from_secs(30), || {
        outcome(&sender.log(), &after, "sent")
    });
    let log = sender.log();
    let delivered = delivered.unwrap_or_else(|| panic!("not delivered after the failover:\n{log}"));
    assert!(delivered.contains(&format!("[{DC2}]:25")), "{delivered}");
    assert!(
        log.contains(&format!(
            "Verified TLS connection established to mx.{ZONE}[{DC2}]:25"
        )),
        "after the failover, not over a DANE-verified connection:\n{log}"
    );
}
