//! Helpers for end-to-end tests of the `portico` binary: temp dirs, free loopback
//! ports, starting the binary on a config and waiting (with a bound) for it to serve,
//! admin commands, and locating real Debian tools that CI installs.

// Wall-clock time of real processes and sockets, not async code under tokio's clock.
#![allow(clippy::disallowed_types)]
// Shared by several test crates: each uses a part, and `pub` is how they reach it.
#![allow(dead_code, unreachable_pub)]

pub mod config;
pub mod lab;
pub mod real;
pub mod router;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "portico-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A loopback TCP port below the ephemeral range (32768 and up), free a moment ago and
/// not handed out again for the next 12,000 calls by any test process of this run: a
/// test making thousands of outgoing connections (which take ephemeral ports) cannot
/// take it between this call and the bind, as it can a [`free_port`], and neither can a
/// daemon of an earlier test binary that is still going away. The sequence lives in a
/// file under the temp dir, locked while a port is picked, so test binaries and their
/// children never draw from overlapping ranges.
pub fn listen_port() -> u16 {
    use std::io::{Read, Seek, Write};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let path = std::env::temp_dir().join("portico-test-listen-ports");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("open the test port sequence");
    file.lock().expect("lock the test port sequence");
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut n: u32 = text.trim().parse().unwrap_or(0);
    for _ in 0..SPAN {
        n = (n + 1) % SPAN;
        let port = (LOW + n) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = file.write_all(n.to_string().as_bytes());
            return port;
        }
    }
    panic!("no free port below 32768");
}

/// A loopback TCP port that was free a moment ago, never the same one twice in this
/// test process (the kernel may hand a just-released port out again).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = shared::sync::lock(&GIVEN);
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A port free for both UDP and TCP on 127.0.0.1 (for the gss).
pub fn free_udp_tcp_port() -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Polls `f` every 20 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `portico` process, killed on drop if still alive.
pub struct Portico {
    pub child: Child,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// The `portico` binary under test: the one cargo built for this test run, or
/// `PORTICO_BIN` when set (an installed package's binary, or the build of one
/// worktree when several share a target dir and its `debug/portico`).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("PORTICO_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_portico").to_string())
    })
}

impl Portico {
    /// Writes `config` to `dir/portico.toml` and starts `portico run` on it; waits
    /// until the admin socket answers.
    pub fn start(dir: &TempDir, config: &str) -> Portico {
        Portico::start_env(dir, config, &[])
    }

    /// As [`Portico::start`], with extra environment variables for the process.
    pub fn start_env(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> Portico {
        Portico::start_with(dir, config, env, &[])
    }

    /// As [`Portico::start`], with extra environment variables and `run` arguments.
    pub fn start_with(dir: &TempDir, config: &str, env: &[(&str, &str)], args: &[&str]) -> Portico {
        Portico::start_prefixed(dir, config, env, args, &[])
    }

    /// As [`Portico::start_with`], run through `prefix` (e.g. `ip netns exec NS`).
    pub fn start_prefixed(
        dir: &TempDir,
        config: &str,
        env: &[(&str, &str)],
        args: &[&str],
        prefix: &[String],
    ) -> Portico {
        let path = dir.path("portico.toml");
        std::fs::write(&path, config).expect("write config");
        let log = dir.path("portico.log");
        let logfile = std::fs::File::create(&log).expect("log file");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let child = cmd
            .args(["run", "--config"])
            .arg(&path)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("spawn portico");
        let mut p = Portico {
            child,
            socket: dir.path("admin.sock"),
            config: path,
            log,
        };
        let up = poll(Duration::from_secs(20), || {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("portico exited early ({status}):\n{}", p.log_text());
            }
            p.ctl_raw(&["help"]).ok().filter(|(ok, _)| *ok).map(|_| ())
        });
        assert!(up.is_some(), "portico did not come up:\n{}", p.log_text());
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `portico ctl`; returns (exit ok, stdout).
    pub fn ctl_raw(&self, args: &[&str]) -> std::io::Result<(bool, String)> {
        let out = Command::new(bin())
            .args(["ctl", "--socket"])
            .arg(&self.socket)
            .args(args)
            .output()?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// Runs `portico ctl` and expects success.
    pub fn ctl(&self, cmd: &str) -> String {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        let (ok, out) = self.ctl_raw(&args).expect("run ctl");
        assert!(ok, "`{cmd}` failed: {out}\nlog:\n{}", self.log_text());
        out
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        poll(limit, || self.child.try_wait().ok().flatten())
    }
}

impl Drop for Portico {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Finds a real tool; `None` outside CI when it is not installed (the test then
/// skips with a message), a panic under `CI=true` where `.ci/run` installs it.
pub fn tool(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Some(p);
        }
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false") {
        panic!("{name} is required under CI; .ci/run installs it");
    }
    eprintln!("skipping: {name} is not installed (apt-get install it, or run .ci/run)");
    None
}

/// A daemon (real backend, demo) started in its own process group: on drop the whole
/// group gets SIGTERM (so a master's workers exit with it: nginx workers survive a
/// SIGKILLed master and keep serving), then SIGKILL for anything left.
pub struct Daemon {
    pub child: Child,
    done: bool,
}

impl Daemon {
    pub fn spawn(cmd: &mut Command) -> Daemon {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Daemon { child, done: false }
    }

    pub fn signal_group(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on the process group we created for our own child.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), sig);
        }
    }

    /// Kills the whole group at once (a machine dying), and reaps the leader.
    pub fn kill_hard(&mut self) {
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
        self.done = true;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.signal_group(libc::SIGTERM);
        let exited = poll(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten()
        });
        self.signal_group(libc::SIGKILL);
        if exited.is_none() {
            let _ = self.child.wait();
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    poll(limit, || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .ok()
            .map(|_| ())
    })
    .is_some()
}

/// A threaded TCP echo server on 127.0.0.1; the listener closes when dropped
/// (established sessions keep echoing until their client closes).
pub struct Echo {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Echo {
    pub fn start() -> Echo {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = s.read(&mut buf) {
                                if n == 0 || s.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo { addr, stop }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One echo round trip on an established stream.
pub fn echo_roundtrip(stream: &mut std::net::TcpStream, msg: &[u8]) -> bool {
    use std::io::{Read, Write};
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(msg).is_err() {
        return false;
    }
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got).is_ok() && got == msg
}

/// Sends `request` (a whole HTTP/1.1 request with `Connection: close`) to
/// 127.0.0.1:`port` from a thread and returns everything read until the close, so a
/// test can act (release a held backend, reload) while the request is in flight.
pub fn request_in_flight(port: u16, request: &'static [u8]) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    })
}

/// A minimal blocking HTTP/1.0 GET; returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// Asks `server` for `name`'s A records over UDP; `None` on timeout.
pub fn query_a(server: SocketAddr, name: &str) -> Option<Vec<std::net::Ipv4Addr>> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    let bytes = msg.to_vec().ok()?;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    exchange_a(&sock, server, &bytes)
}

/// Asks `server` for `name`'s A records over TCP (one query per connection); the
/// error says which step failed.
pub fn query_a_tcp(server: SocketAddr, name: &str) -> Result<Vec<std::net::Ipv4Addr>, String> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::io::{Read, Write};
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    let qname = Name::from_ascii(name).map_err(|e| e.to_string())?;
    msg.add_query(Query::query(qname, RecordType::A));
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let mut s = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    s.write_all(&framed).map_err(|e| format!("write: {e}"))?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)
        .map_err(|e| format!("read length: {e}"))?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)
        .map_err(|e| format!("read message: {e}"))?;
    if buf.get(..2) != bytes.get(..2) {
        return Err("reply to another query".into());
    }
    let reply = Message::from_vec(&buf).map_err(|e| format!("parse: {e}"))?;
    Ok(sorted_a(&reply))
}

/// The A records of an answer, sorted.
fn sorted_a(reply: &hickory_proto::op::Message) -> Vec<std::net::Ipv4Addr> {
    use hickory_proto::rr::RData;
    let mut v: Vec<_> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// As [`query_a`], through `sock` (e.g. one bound inside a lab namespace), waiting
/// at most `wait` for the reply.
pub fn query_a_via(
    sock: &std::net::UdpSocket,
    server: SocketAddr,
    name: &str,
    wait: Duration,
) -> Option<Vec<std::net::Ipv4Addr>> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::A));
    let bytes = msg.to_vec().ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    exchange_a(sock, server, &bytes)
}

fn exchange_a(
    sock: &std::net::UdpSocket,
    server: SocketAddr,
    bytes: &[u8],
) -> Option<Vec<std::net::Ipv4Addr>> {
    use hickory_proto::op::Message;
    sock.send_to(bytes, server).ok()?;
    let mut buf = [0u8; 4096];
    // Skip late replies to earlier queries (a bounded number).
    let sent_id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let mut n = sock.recv(&mut buf).ok()?;
    for _ in 0..8 {
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == sent_id {
            break;
        }
        n = sock.recv(&mut buf).ok()?;
    }
    let reply = Message::from_vec(&buf[..n]).ok()?;
    Some(sorted_a(&reply))
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7)
        & 0xffff) as u16
}

/// An HTTP backend that holds every request until released: a long request (long-poll,
/// big upload) in flight, for reload and shutdown tests.
pub struct SlowHttp {
    pub addr: SocketAddr,
    /// Receives one message per request whose head has arrived.
    pub arrived: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

impl SlowHttp {
    pub fn start() -> SlowHttp {
        use std::io::{Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind slow http");
        let addr = listener.local_addr().expect("addr");
        let (arrived_tx, arrived) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(std::sync::Mutex::new(release_rx));
        std::thread::spawn(move || {
            for mut s in listener.incoming().map_while(Result::ok) {
                let arrived_tx = arrived_tx.clone();
                let release_rx = release_rx.clone();
                std::thread::spawn(move || {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = arrived_tx.send(());
                    let released = release_rx
                        .lock()
                        .map(|rx| rx.recv_timeout(Duration::from_secs(30)).is_ok())
                        .unwrap_or(false);
                    if released {
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow",
                        );
                    }
                });
            }
        });
        SlowHttp {
            addr,
            arrived,
            release,
        }
    }

    /// Lets one held request answer `200 slow`.
    pub fn release_one(&self) {
        let _ = self.release.send(());
    }
}

/// A `[gss]` section listening on `dns` with one site, `dc1`, kept alive by a TCP
/// keepalive to `keepalive` (200 ms probes, fall 2), and the site-selected `name`
/// answering `answer` there: the smallest gss most end-to-end tests need.
pub fn one_site_gss(dns: u16, keepalive: SocketAddr, name: &str, answer: &str) -> String {
    format!(
        r#"
[gss]
listen = "127.0.0.1:{dns}"
zone = "gslb.example.test"
nameservers = ["ns1.gslb.example.test"]

[[gss.site]]
name = "dc1"
keepalives = [ {{ kind = "tcp", address = "{keepalive}" }} ]
probe_defaults = {{ interval = "200ms", timeout = "150ms", rise = 1, fall = 2 }}

[[gss.name]]
name = "{name}"
sites = ["dc1"]
answers = {{ dc1 = ["{answer}"] }}
"#
    )
}
