//! The multi-site lab: each site a Linux network namespace with its own address from
//! a TEST-NET range on `lo`, joined to the others by direct veth links with host
//! routes, so a test can cut, flap or squeeze the path between two sites, or kill
//! a whole site, while every process keeps its own loopback and its own clock.
//!
//! Namespace names carry the test process id and a counter, so tests run in parallel.
//! Everything is deleted on drop (also when a test panics). Without root the lab is
//! skipped; under `CI=true` failing to build it fails the test.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static NEXT_LAB: AtomicUsize = AtomicUsize::new(0);

/// One site: a namespace and the address its services listen on.
pub struct Site {
    /// Logical name (`dc1`).
    pub name: String,
    /// Namespace name (unique per lab).
    pub ns: String,
    /// The site's address (on its `lo`).
    pub addr: Ipv4Addr,
}

/// A veth pair between two sites; `dev` is the interface name on both ends.
struct Link {
    a: usize,
    b: usize,
}

/// A built lab; deleted on drop.
pub struct Lab {
    pub sites: Vec<Site>,
    links: Vec<Link>,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The interface in `from`'s namespace that leads to site `to`.
fn dev(to: &str) -> String {
    format!("to-{to}")
}

impl Lab {
    /// Builds sites with these names and addresses, fully meshed with direct links
    /// (`links` lists which pairs, by index). `None` (skip) without root; a panic
    /// under CI when the lab cannot be built.
    pub fn build(sites: &[(&str, Ipv4Addr)], links: &[(usize, usize)]) -> Option<Lab> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            if in_ci() {
                panic!("the netns lab needs root under CI");
            }
            eprintln!("skipping: the netns lab needs root");
            return None;
        }
        let id = NEXT_LAB.fetch_add(1, Ordering::SeqCst);
        let mut lab = Lab {
            sites: sites
                .iter()
                .map(|(name, addr)| Site {
                    name: name.to_string(),
                    ns: format!("ptc{}-{id}-{name}", std::process::id()),
                    addr: *addr,
                })
                .collect(),
            links: Vec::new(),
        };
        match lab.setup(links) {
            Ok(()) => Some(lab),
            Err(e) if in_ci() => panic!("cannot build the netns lab: {e}"),
            Err(e) => {
                eprintln!("skipping: cannot build the netns lab: {e}");
                None
            }
        }
    }

    fn setup(&mut self, links: &[(usize, usize)]) -> Result<(), String> {
        for s in &self.sites {
            run(&["ip", "netns", "add", &s.ns])?;
            run(&["ip", "-n", &s.ns, "link", "set", "lo", "up"])?;
            // A new namespace's unix datagram queues hold 10 messages: too few for
            // daemons that log through one (Postfix's postlogd) while they start.
            run(&[
                "ip",
                "netns",
                "exec",
                &s.ns,
                "sysctl",
                "-qw",
                "net.unix.max_dgram_qlen=512",
            ])?;
            run(&[
                "ip",
                "-n",
                &s.ns,
                "addr",
                "add",
                &format!("{}/32", s.addr),
                "dev",
                "lo",
            ])?;
        }
        for &(a, b) in links {
            let (sa, sb) = (&self.sites[a], &self.sites[b]);
            run(&[
                "ip",
                "link",
                "add",
                &dev(&sb.name),
                "netns",
                &sa.ns,
                "type",
                "veth",
                "peer",
                "name",
                &dev(&sa.name),
                "netns",
                &sb.ns,
            ])?;
            self.links.push(Link { a, b });
            for (me, other) in [(sa, sb), (sb, sa)] {
                run(&["ip", "-n", &me.ns, "link", "set", &dev(&other.name), "up"])?;
                run(&[
                    "ip",
                    "-n",
                    &me.ns,
                    "route",
                    "add",
                    &format!("{}/32", other.addr),
                    "dev",
                    &dev(&other.name),
                    "src",
                    &me.addr.to_string(),
                ])?;
            }
        }
        Ok(())
    }

    /// The site called `name`.
    pub fn site(&self, name: &str) -> &Site {
        self.sites
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no site {name} in the lab"))
    }

    fn set_link(&self, a: &str, b: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        for (me, other) in [(a, b), (b, a)] {
            run(&[
                "ip",
                "-n",
                &self.site(me).ns,
                "link",
                "set",
                &dev(other),
                state,
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        }
        if up {
            // Bringing a device up again drops its routes; put them back.
            for (me, other) in [(a, b), (b, a)] {
                let (m, o) = (self.site(me), self.site(other));
                let _ = run(&[
                    "ip",
                    "-n",
                    &m.ns,
                    "route",
                    "replace",
                    &format!("{}/32", o.addr),
                    "dev",
                    &dev(other),
                    "src",
                    &m.addr.to_string(),
                ]);
            }
        }
    }

    /// Cuts the link between sites `a` and `b` (both ends down).
    pub fn cut(&self, a: &str, b: &str) {
        self.set_link(a, b, false);
    }

    /// Restores the link between `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) {
        self.set_link(a, b, true);
    }

    /// Flaps the link: down for `down`, up for `up`, `times` times (bounded).
    pub fn flap(&self, a: &str, b: &str, down: Duration, up: Duration, times: usize) {
        for _ in 0..times {
            self.cut(a, b);
            std::thread::sleep(down);
            self.heal(a, b);
            std::thread::sleep(up);
        }
    }

    /// Squeezes the link to `rate` (tc tbf, e.g. "8kbit") in both directions.
    pub fn squeeze(&self, a: &str, b: &str, rate: &str) {
        for (me, other) in [(a, b), (b, a)] {
            run(&[
                "tc",
                "-n",
                &self.site(me).ns,
                "qdisc",
                "replace",
                "dev",
                &dev(other),
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                "2kbit",
                "latency",
                "50ms",
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Removes a squeeze.
    pub fn unsqueeze(&self, a: &str, b: &str) {
        for (me, other) in [(a, b), (b, a)] {
            let _ = run(&[
                "tc",
                "-n",
                &self.site(me).ns,
                "qdisc",
                "del",
                "dev",
                &dev(other),
                "root",
            ]);
        }
    }

    /// Kills a whole site as far as the others can tell: every link of it down.
    pub fn kill_site(&self, name: &str) {
        let i = self
            .sites
            .iter()
            .position(|s| s.name == name)
            .unwrap_or_else(|| panic!("no site {name}"));
        for l in self.links.iter().filter(|l| l.a == i || l.b == i) {
            let other = if l.a == i { l.b } else { l.a };
            self.cut(name, &self.sites[other].name);
        }
    }

    /// The command prefix that runs a program inside site `name`'s namespace.
    pub fn exec_prefix(&self, name: &str) -> Vec<String> {
        vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            self.site(name).ns.clone(),
        ]
    }

    /// Adds another address to site `name`'s `lo` (a second service address).
    pub fn add_addr(&self, name: &str, addr: Ipv4Addr) {
        let ns = &self.site(name).ns;
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "lo",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Gives programs run through [`Lab::exec_prefix`] in site `name` their own
    /// /etc/resolv.conf (`ip netns exec` bind-mounts /etc/netns/NS/resolv.conf over
    /// it), so real mail software resolves through a resolver the test runs there.
    pub fn set_resolv_conf(&self, name: &str, text: &str) {
        let dir = std::path::Path::new("/etc/netns").join(&self.site(name).ns);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        std::fs::write(dir.join("resolv.conf"), text).expect("write resolv.conf");
    }

    /// A UDP socket bound inside site `name`'s namespace (a socket keeps the
    /// namespace it was created in, so the test's threads can use it directly).
    pub fn udp_socket(&self, name: &str) -> UdpSocket {
        let path = format!("/var/run/netns/{}", self.site(name).ns);
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            use std::os::fd::AsRawFd;
            // SAFETY: setns(2) on a namespace fd we hold open; it only changes this
            // short-lived thread's network namespace.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).expect("bind in namespace")
        })
        .join()
        .expect("namespace thread")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &self.sites {
            let _ = run(&["ip", "netns", "delete", &s.ns]);
            let _ = std::fs::remove_dir_all(std::path::Path::new("/etc/netns").join(&s.ns));
        }
    }
}
