//! Real daemons from Debian packages for the end-to-end tests, each in its own temp
//! dir and process group: Postfix (an `smtpd` behind PROXY v2, a sending or receiving
//! MTA, with a small SMTP client), Dovecot IMAP behind PROXY v2 and nginx webmail
//! backends.
//! Postfix and Dovecot drop privileges, so their directories must be traversable.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{free_port, tool, wait_listening, Daemon, TempDir};

/// Postfix's master and Dovecot (as set up here) need root: they switch to their
/// own users. `None` (skip) otherwise, a panic under CI, which runs as root.
pub fn need_root(what: &str) -> Option<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some(());
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("{what} needs root under CI");
    }
    eprintln!("skipping: {what} needs root");
    None
}

pub fn read_file(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

pub fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Makes every component of `p` up to the test's temp dir `base` traversable by
/// other users (Postfix and Dovecot drop privileges and must reach their files), and
/// checks, without changing them, that the directories above `base` are too.
pub fn make_traversable(p: &Path, base: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for d in p.ancestors() {
        let mode = std::fs::metadata(d).expect("stat").permissions().mode();
        if mode & 0o011 == 0o011 {
            continue;
        }
        if d.starts_with(base) {
            chmod(d, (mode & 0o7777) | 0o011);
        } else {
            panic!(
                "{} (mode {:o}) is not traversable by the postfix/dovecot users; \
                 set TMPDIR to a directory they can reach",
                d.display(),
                mode & 0o7777
            );
        }
    }
}

/// Changes a path's owner (Postfix checks that its queue and data directories belong
/// to its own user).
pub fn chown(p: &Path, user: &str, group: &str) {
    let st = Command::new("chown")
        .arg(format!("{user}:{group}"))
        .arg(p)
        .status()
        .expect("run chown");
    assert!(st.success(), "chown {user}:{group} {}", p.display());
}

/// A real Postfix: `master` in the foreground on a main.cf/master.cf written into the
/// test's temp dir, with its own queue directory, logging to a file; nothing in /etc
/// is touched.
pub struct Postfix {
    pub port: u16,
    pub maillog: PathBuf,
    pub root: PathBuf,
    group: Daemon,
}

/// The services of a test Postfix. `pickup` wakes every second: a message handed to
/// `sendmail` just as the master starts may find pickup not yet listening for the
/// nudge, and would otherwise wait for the stock 60 s wake-up.
const POSTFIX_SERVICES: &str = "\
pickup    unix  n       -       n       1       1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
postlog   unix-dgram n  -       n       -       1       postlogd
";

const QUEUE_DIRS: [&str; 14] = [
    "pid", "public", "private", "maildrop", "incoming", "active", "deferred", "bounce", "defer",
    "trace", "flush", "saved", "hold", "corrupt",
];

/// `defaults` with each `key = value` line of `overrides` in place of the default of
/// that key (new keys appended). Written once per key: Postfix warns about every
/// repeated key in every process it starts, and those warnings, sent to `postlogd`
/// through a datagram socket with a queue of 10 before it reads any, have deadlocked
/// it (`postlogd` blocked logging its own warnings into its full socket).
fn main_cf(defaults: &str, overrides: &str) -> String {
    let key = |l: &str| l.split('=').next().map(str::trim).unwrap_or("").to_string();
    let given: Vec<&str> = overrides
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut out: Vec<String> = defaults
        .lines()
        .map(|l| match given.iter().find(|g| key(g) == key(l)) {
            Some(g) => g.to_string(),
            None => l.to_string(),
        })
        .collect();
    for g in &given {
        if !defaults.lines().any(|l| key(l) == key(g)) {
            out.push(g.to_string());
        }
    }
    out.join("\n") + "\n"
}

/// What differs between the Postfix instances the tests run.
pub struct PostfixSetup<'a> {
    /// `smtpd` listeners (`ADDR:PORT`), one master.cf `inet` line each.
    pub listen: &'a [String],
    /// main.cf lines appended after the defaults (a later line overrides an earlier one).
    pub main_cf: &'a str,
    /// A command the master runs under, e.g. `ip netns exec NS`.
    pub exec_prefix: &'a [String],
}

impl Postfix {
    /// A Postfix whose `smtpd` on 127.0.0.1 requires the PROXY protocol and that
    /// delivers everything to `discard:`; `None` (skip) when it is not installed.
    pub fn start(dir: &TempDir, name: &str) -> Option<Postfix> {
        let port = free_port();
        let listen = [format!("127.0.0.1:{port}")];
        let pf = Postfix::start_with(
            dir,
            name,
            &PostfixSetup {
                listen: &listen,
                main_cf:
                    "smtpd_upstream_proxy_protocol = haproxy\nsmtpd_upstream_proxy_timeout = 10s\n",
                exec_prefix: &[],
            },
        )?;
        assert!(
            wait_listening(pf.addr(), Duration::from_secs(15)),
            "postfix {name} did not listen on {port}:\nmaillog:\n{}\nstderr:\n{}",
            pf.log(),
            read_file(&pf.root.join("master.stderr"))
        );
        Some(pf)
    }

    /// Starts the master under `dir/name` as `setup` says, without waiting for its
    /// listeners (the caller knows where they are reachable from). The default main.cf
    /// accepts mail for example.test from loopback and discards it; `setup.main_cf`
    /// overrides any of it.
    pub fn start_with(dir: &TempDir, name: &str, setup: &PostfixSetup) -> Option<Postfix> {
        let master = PathBuf::from("/usr/lib/postfix/sbin/master");
        if !master.exists() {
            // tool() panics under CI, skips otherwise.
            tool("postfix")?;
            panic!("postfix is installed but {} is missing", master.display());
        }
        need_root("postfix")?;
        let root = dir.path(name);
        let conf = root.join("conf");
        let data = root.join("data");
        let queue = root.join("queue");
        for d in [&root, &conf, &data, &queue] {
            std::fs::create_dir_all(d).unwrap();
            chmod(d, 0o755);
        }
        make_traversable(&root, &dir.0);
        chown(&data, "postfix", "root");
        chmod(&data, 0o700);
        for q in QUEUE_DIRS {
            let p = queue.join(q);
            std::fs::create_dir_all(&p).unwrap();
            match q {
                "pid" => chmod(&p, 0o755),
                "public" | "maildrop" => {
                    chown(&p, "postfix", "postdrop");
                    chmod(&p, 0o730);
                }
                _ => {
                    chown(&p, "postfix", "root");
                    chmod(&p, 0o700);
                }
            }
        }
        let maillog = root.join("maillog");
        std::fs::write(
            conf.join("main.cf"),
            main_cf(
                &format!(
                    "\
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = {name}.example.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination = example.test
mynetworks = 127.0.0.0/8
local_recipient_maps =
local_transport = discard:
default_transport = discard:
relay_transport = discard:
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
maillog_file = {maillog}
maillog_file_prefixes = {prefix}
compatibility_level = 3.6
",
                    queue = queue.display(),
                    data = data.display(),
                    maillog = maillog.display(),
                    prefix = dir.0.display(),
                ),
                setup.main_cf,
            ),
        )
        .unwrap();
        let inet: String = setup
            .listen
            .iter()
            .map(|l| format!("{l} inet n - n - - smtpd\n"))
            .collect();
        std::fs::write(conf.join("master.cf"), format!("{inet}{POSTFIX_SERVICES}")).unwrap();
        let port = setup
            .listen
            .first()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let stderr = std::fs::File::create(root.join("master.stderr")).unwrap();
        let mut cmd = match setup.exec_prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&master);
                c
            }
            None => Command::new(&master),
        };
        let group = Daemon::spawn(
            cmd.arg("-d")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(stderr),
        );
        Some(Postfix {
            port,
            maillog,
            root,
            group,
        })
    }

    /// The first listener, on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        read_file(&self.maillog)
    }

    pub fn kill_hard(&mut self) {
        self.group.kill_hard();
    }
}

/// A real HAProxy in the foreground on `config` (written to `dir/haproxy.cfg`), once
/// it listens on 127.0.0.1:`front`; `None` (skip) when it is not installed.
pub fn haproxy(dir: &TempDir, config: &str, front: u16) -> Option<Daemon> {
    let bin = tool("haproxy")?;
    let cfg = dir.path("haproxy.cfg");
    std::fs::write(&cfg, config).expect("write haproxy.cfg");
    let d = Daemon::spawn(
        Command::new(bin)
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], front)),
            Duration::from_secs(10)
        ),
        "haproxy did not listen on {front}"
    );
    Some(d)
}

/// A real Dovecot IMAP server on 127.0.0.1:`port` that requires the PROXY protocol
/// (`haproxy = yes`, trusted from 127.0.0.0/8) and logs `rip=` per login; any user
/// logs in with password `secret`.
pub struct Dovecot {
    pub port: u16,
    pub log: PathBuf,
    _group: Daemon,
}

impl Dovecot {
    pub fn start(dir: &TempDir, name: &str) -> Option<Dovecot> {
        let bin = tool("dovecot")?;
        need_root("dovecot")?;
        let root = dir.path(name);
        std::fs::create_dir_all(&root).unwrap();
        make_traversable(&root, &dir.0);
        let home = root.join("home");
        std::fs::create_dir_all(&home).unwrap();
        chmod(&home, 0o777);
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("state")).unwrap();
        let log = root.join("dovecot.log");
        let port = free_port();
        let conf = root.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                r#"
protocols = imap
listen = 127.0.0.1
base_dir = {run}
state_dir = {state}
instance_name = {name}
log_path = {log}
info_log_path = {log}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
haproxy_trusted_networks = 127.0.0.0/8
login_log_format_elements = user=<%u> method=%m rip=%r lip=%l mpid=%e %c session=<%{{session}}>
passdb {{
  driver = static
  args = password=secret
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={home}/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imap_haproxy {{
    port = {port}
    haproxy = yes
  }}
}}
service anvil {{
  chroot =
}}
"#,
                run = root.join("run").display(),
                state = root.join("state").display(),
                log = log.display(),
                home = home.display(),
            ),
        )
        .unwrap();
        let group = Daemon::spawn(
            Command::new(bin)
                .arg("-F")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            wait_listening(
                SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_secs(15)
            ),
            "dovecot {name} did not start: {}",
            read_file(&log)
        );
        Some(Dovecot {
            port,
            log,
            _group: group,
        })
    }

    pub fn log(&self) -> String {
        read_file(&self.log)
    }

    pub fn logged_in(&self, user: &str) -> bool {
        self.log()
            .lines()
            .any(|l| l.contains(&format!("Login: user=<{user}>")))
    }

    /// Lines imap-login wrote about connections (logins and disconnects), probes
    /// included.
    pub fn connection_lines(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("imap-login:"))
            .count()
    }
}

/// A real nginx serving `NAME` at `/`, `ok` at `/health` and, at `/headers`,
/// `NAME|X-Forwarded-For|X-Forwarded-Proto|X-Forwarded-Host|Forwarded` as received.
pub struct Nginx {
    pub port: u16,
    pub daemon: Daemon,
}

pub fn nginx(dir: &TempDir, name: &str) -> Option<Nginx> {
    let bin = tool("nginx")?;
    let root = dir.path(name);
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    make_traversable(&root, &dir.0);
    let port = free_port();
    let conf = format!(
        r#"
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {root}/access.log;
  client_body_temp_path {root}/tmp/body;
  proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fastcgi;
  uwsgi_temp_path {root}/tmp/uwsgi;
  scgi_temp_path {root}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    location = /health {{ return 200 "ok\n"; }}
    location = /headers {{
      return 200 "{name}|$http_x_forwarded_for|$http_x_forwarded_proto|$http_x_forwarded_host|$http_forwarded\n";
    }}
    location / {{ return 200 "{name}\n"; }}
  }}
}}
"#,
        root = root.display()
    );
    let path = root.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let group = Daemon::spawn(
        Command::new(bin)
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10)
        ),
        "nginx {name}: {}",
        read_file(&root.join("error.log"))
    );
    Some(Nginx {
        port,
        daemon: group,
    })
}

/// Reads one (possibly multi-line) SMTP reply; returns its last line.
pub fn smtp_reply(r: &mut impl BufRead) -> Result<String, String> {
    loop {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return Err("connection closed".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(line.trim_end().to_string());
        }
    }
}

pub fn tcp_from(local: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((local, 0)).into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    Ok(s)
}

/// One full SMTP session (EHLO, MAIL, RCPT, DATA, QUIT) from `local` through `vip`.
pub fn smtp_session(local: [u8; 4], vip: SocketAddr, id: usize) -> Result<(), String> {
    let stream = tcp_from(local, vip).map_err(|e| format!("connect: {e}"))?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let mut step = |send: Option<String>, want: &str| -> Result<(), String> {
        if let Some(s) = &send {
            w.write_all(s.as_bytes())
                .map_err(|e| format!("write {s:?}: {e}"))?;
        }
        let reply = smtp_reply(&mut r).map_err(|e| format!("after {send:?}: {e}"))?;
        if reply.starts_with(want) {
            Ok(())
        } else {
            Err(format!("after {send:?}: {reply}"))
        }
    };
    step(None, "220")?;
    step(Some("EHLO load.example.test\r\n".into()), "250")?;
    step(
        Some(format!("MAIL FROM:<load{id}@example.test>\r\n")),
        "250",
    )?;
    step(Some("RCPT TO:<rcpt@example.test>\r\n".into()), "250")?;
    step(Some("DATA\r\n".into()), "354")?;
    step(
        Some(format!(
            "From: <load{id}@example.test>\r\nTo: <rcpt@example.test>\r\nSubject: load {id}\r\n\r\nsession {id}\r\n.\r\n"
        )),
        "250",
    )?;
    step(Some("QUIT\r\n".into()), "221")
}
