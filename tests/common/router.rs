//! Real routers for the route-announcement tests: BIRD 2 (Debian `bird2`) and FRR's
//! `bgpd` (Debian `frr`), each started by the test in its own temp dir on loopback
//! and an unprivileged port, passive, one `protocol bgp` per Portico replica (BIRD
//! matches a neighbor by the session's source address, so each replica speaks from
//! its own 127.0.0.N). See NOTES.md, "BGP with a real router in tests", with one
//! correction found with BIRD 2.0.12 here: BIRD drops a static route for 127.0.0.0/8
//! as bogus (host scope), so a next hop of 127.0.0.N never resolves and its path is
//! `unreachable` (held, but never best over another). Tests that need BIRD to choose
//! between paths give each replica a `next_hop` in [`NEXT_HOP_NET`], which a static
//! route via "lo" resolves.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{listen_port, poll, tool, Daemon, TempDir};

/// The router's AS in every test.
pub const ROUTER_AS: u32 = 65000;

/// Next hops that BIRD resolves (TEST-NET-3, routed to "lo" by a static route).
pub const NEXT_HOP_NET: &str = "203.0.113.0/24";

/// One Portico replica as the router knows it.
#[derive(Clone, Debug)]
pub struct BirdPeer {
    /// `protocol bgp` name, e.g. `r1`.
    pub name: String,
    /// The replica's session source address, 127.0.0.N.
    pub addr: String,
    /// The replica's AS.
    pub asn: u32,
    /// TCP MD5 key, if the session is signed.
    pub password: Option<String>,
}

impl BirdPeer {
    pub fn new(name: &str, addr: &str, asn: u32) -> BirdPeer {
        BirdPeer {
            name: name.into(),
            addr: addr.into(),
            asn,
            password: None,
        }
    }
}

/// A running BIRD listening on 127.0.0.1:`port`.
pub struct Bird {
    pub port: u16,
    pub ctl: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    pid: PathBuf,
    bin: PathBuf,
    birdc: PathBuf,
    daemon: Option<Daemon>,
}

impl Bird {
    /// Starts BIRD with one passive `protocol bgp` per peer; `None` (skip) when BIRD
    /// is not installed outside CI.
    pub fn start(dir: &TempDir, peers: &[BirdPeer]) -> Option<Bird> {
        let bin = tool("bird")?;
        let birdc = tool("birdc")?;
        let port = listen_port();
        let conf = dir.path("bird.conf");
        let log = dir.path("bird.log");
        let mut text = format!(
            r#"router id 127.0.0.1;
log "{log}" all;
protocol device {{ }}
protocol static loopnet {{ ipv4; route {NEXT_HOP_NET} via "lo"; }}
"#,
            log = log.display()
        );
        for p in peers {
            let password = p
                .password
                .as_ref()
                .map(|pw| format!("password \"{pw}\";"))
                .unwrap_or_default();
            text.push_str(&format!(
                r#"protocol bgp {name} {{
  local 127.0.0.1 port {port} as {router_as};
  neighbor {addr} as {asn};
  multihop 2; passive on; hold time 9; {password}
  ipv4 {{ import all; export none; igp table master4; }};
  ipv6 {{ import all; export none; }};
}}
"#,
                name = p.name,
                router_as = ROUTER_AS,
                addr = p.addr,
                asn = p.asn,
            ));
        }
        std::fs::write(&conf, text).expect("write bird.conf");
        let mut bird = Bird {
            port,
            ctl: dir.path("bird.ctl"),
            conf,
            log,
            pid: dir.path("bird.pid"),
            bin,
            birdc,
            daemon: None,
        };
        bird.spawn();
        Some(bird)
    }

    fn spawn(&mut self) {
        let daemon = Daemon::spawn(
            Command::new(&self.bin)
                .arg("-f")
                .arg("-c")
                .arg(&self.conf)
                .arg("-s")
                .arg(&self.ctl)
                .arg("-P")
                .arg(&self.pid)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        self.daemon = Some(daemon);
        let up = poll(Duration::from_secs(10), || {
            self.birdc(&["show", "status"])
                .filter(|s| s.contains("Daemon is up"))
        });
        assert!(up.is_some(), "bird did not come up:\n{}", self.log_text());
    }

    /// Kills BIRD at once (a router crash).
    pub fn kill(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.kill_hard();
        }
        let _ = std::fs::remove_file(&self.ctl);
    }

    /// Starts it again on the same port and config.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `birdc -s CTL ARGS`; `None` when it fails to talk to BIRD.
    pub fn birdc(&self, args: &[&str]) -> Option<String> {
        let out = Command::new(&self.birdc)
            .arg("-s")
            .arg(&self.ctl)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `show route for PREFIX all`.
    pub fn route(&self, prefix: &str) -> String {
        self.birdc(&["show", "route", "for", prefix, "all"])
            .unwrap_or_default()
    }

    /// The paths BIRD holds for exactly `prefix` (not a covering route such as the
    /// static 127.0.0.0/8), each as its block of `show route ... all` lines.
    pub fn paths(&self, prefix: &str) -> Vec<Path> {
        let text = self.route(prefix);
        let mut paths: Vec<Path> = Vec::new();
        let mut in_prefix = false;
        const TYPES: [&str; 4] = ["unicast", "unreachable", "blackhole", "prohibited"];
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            // A path's head: `PREFIX TYPE [PROTO ...` or, for further paths of the
            // same prefix, blanks then `TYPE [PROTO ...`.
            let head = line.starts_with(char::is_whitespace);
            let starts_path = match words.as_slice() {
                [t, p, ..] if head && TYPES.contains(t) && p.starts_with('[') => true,
                [_, t, p, ..] if !head && TYPES.contains(t) && p.starts_with('[') => true,
                _ => false,
            };
            if starts_path {
                if !head {
                    in_prefix = words[0] == prefix;
                }
                if in_prefix {
                    paths.push(Path {
                        head: line.to_string(),
                        attrs: Vec::new(),
                    });
                }
            } else if in_prefix {
                if let Some(p) = paths.last_mut() {
                    p.attrs.push(line.trim().to_string());
                }
            }
        }
        paths
    }

    /// The state of `protocol bgp NAME` (`Established`, `Active`, ...).
    pub fn protocol(&self, name: &str) -> String {
        self.birdc(&["show", "protocols", name]).unwrap_or_default()
    }
}

/// One path of `show route ... all`.
#[derive(Debug, Clone)]
pub struct Path {
    /// `PREFIX unicast [PROTO TIME] * (100) [AS65010i]`
    pub head: String,
    /// `via ...`, `BGP.as_path: ...`, ...
    pub attrs: Vec<String>,
}

impl Path {
    /// The `protocol bgp` it came from.
    pub fn protocol(&self) -> &str {
        self.head
            .split('[')
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or("")
    }

    /// BIRD's best path is marked `*`.
    pub fn best(&self) -> bool {
        self.head.contains("] * ")
    }

    /// The value of attribute `name` (e.g. `BGP.next_hop`).
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running FRR `bgpd` on 127.0.0.1:`port`, alone (no zebra: `-Z -n`), passive
/// towards its peers, queried with `vtysh` over its own socket directory.
pub struct Frr {
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
    _daemon: Daemon,
}

impl Frr {
    /// Starts bgpd with one passive eBGP neighbor per `(address, asn)`; `None` (skip)
    /// when FRR is not installed outside CI.
    pub fn start(dir: &TempDir, peers: &[(&str, u32)]) -> Option<Frr> {
        let bin = ["/usr/lib/frr/bgpd", "/usr/sbin/bgpd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| tool("bgpd"))?;
        tool("vtysh")?;
        let root = dir.path("frr");
        std::fs::create_dir_all(&root).expect("frr dir");
        let log = root.join("bgpd.log");
        let mut conf = format!(
            "frr defaults traditional\nhostname rtr\nlog file {} informational\n!\nrouter bgp {ROUTER_AS}\n bgp router-id 127.0.0.1\n no bgp ebgp-requires-policy\n",
            log.display()
        );
        for (addr, asn) in peers {
            conf.push_str(&format!(
                " neighbor {addr} remote-as {asn}\n neighbor {addr} passive\n neighbor {addr} ebgp-multihop 2\n"
            ));
        }
        conf.push_str(" address-family ipv4 unicast\n");
        for (addr, _) in peers {
            conf.push_str(&format!("  neighbor {addr} activate\n"));
        }
        conf.push_str(" exit-address-family\n!\n");
        let conf_path = root.join("bgpd.conf");
        std::fs::write(&conf_path, conf).expect("write bgpd.conf");
        let port = listen_port();
        let daemon = Daemon::spawn(
            Command::new(bin)
                .arg("-f")
                .arg(&conf_path)
                .args(["-p", &port.to_string(), "-l", "127.0.0.1", "-Z", "-S", "-n"])
                .arg("-i")
                .arg(root.join("bgpd.pid"))
                .arg("--vty_socket")
                .arg(&root)
                .args(["-A", "127.0.0.1", "-P", "0"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let frr = Frr {
            port,
            dir: root,
            log,
            _daemon: daemon,
        };
        let up = poll(Duration::from_secs(10), || {
            frr.vtysh("show bgp summary")
                .filter(|s| s.contains("local AS number"))
        });
        assert!(up.is_some(), "bgpd did not come up:\n{}", frr.log_text());
        Some(frr)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One `vtysh -c COMMAND` against this bgpd.
    pub fn vtysh(&self, command: &str) -> Option<String> {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(&self.dir)
            .args(["-d", "bgpd", "-c", command])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
