//! In-process fake SMTP/IMAP/POP3/HTTP/MAPI servers for tests of every crate: each can
//! be told to answer well, refuse, hang, send a bad greeting or die mid-session.
//!
//! A [`FakeServer`] binds `127.0.0.1:0` and serves one [`FakeKind`] with one
//! [`Behaviour`] (changeable at run time) and a set of [`FakeOptions`] (TLS, PROXY
//! header, banner, HTTP status). It counts what happened so tests can assert on it
//! (accepted connections, sessions that ended politely with QUIT/LOGOUT, messages,
//! the last PROXY header) and lets tests await a condition with a bound instead of
//! sleeping ([`FakeServer::wait_until`]).
//!
//! ```no_run
//! # async fn demo() {
//! use shared::testing::{Behaviour, FakeKind, FakeOptions, FakeServer};
//! let mx1 = FakeServer::start(FakeKind::Smtp, Behaviour::Good).await;
//! let mx2 = FakeServer::start_with(
//!     FakeKind::Smtp,
//!     Behaviour::Good,
//!     FakeOptions::new().banner("mx2").expect_proxy(),
//! )
//! .await;
//! mx1.set_behaviour(Behaviour::BadGreeting); // 554 5.3.2 busy from now on
//! mx2.stop(); // killed backend: port refuses, live sessions cut
//! # }
//! ```

pub mod metrics;
mod sessions;
pub mod tls;

use crate::sync::lock;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ProbeKind;
use crate::probe::{Probe, ProbeError, ProbeFuture};
use crate::proxy_protocol::Header;

/// Which protocol a fake speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeKind {
    /// `220 BANNER ESMTP`; EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, VRFY, STARTTLS, QUIT.
    Smtp,
    /// `* OK BANNER ready`; CAPABILITY, NOOP, LOGIN, STARTTLS, LOGOUT.
    Imap,
    /// `+OK BANNER ready`; CAPA, USER, PASS, STAT, NOOP, STLS, QUIT.
    Pop3,
    /// HTTP/1.1: any request gets the configured status, body = banner.
    Http,
    /// MAPI over HTTP: `X-RequestType: PING` POSTs get `X-ResponseCode: 0`.
    Mapi,
    /// Opaque TCP: echoes every byte back (for proxying tests).
    Echo,
}

impl FakeKind {
    /// The fake that speaks what a probe of `kind` expects (HTTP for `lb_status`, an
    /// echo server for plain TCP), so a config's backends can be faked from its probes.
    pub fn for_probe(kind: ProbeKind) -> FakeKind {
        match kind {
            ProbeKind::Smtp => FakeKind::Smtp,
            ProbeKind::Imap => FakeKind::Imap,
            ProbeKind::Pop3 => FakeKind::Pop3,
            ProbeKind::Http | ProbeKind::LbStatus => FakeKind::Http,
            ProbeKind::Mapi => FakeKind::Mapi,
            ProbeKind::Tcp => FakeKind::Echo,
        }
    }
}

/// A probe whose verdict the test sets through the shared flag (`true` passes,
/// `false` fails as `connection refused`), for health logic tested without sockets.
pub struct SwitchProbe(pub Arc<AtomicBool>);

impl Probe for SwitchProbe {
    fn check(&self) -> ProbeFuture<'_> {
        let ok = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err(ProbeError::Refused)
            }
        })
    }
}

/// How a fake treats new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Behaviour {
    /// Speaks the protocol correctly.
    #[default]
    Good,
    /// The listener is closed: connecting gets ECONNREFUSED (the port stays reserved).
    Refuse,
    /// Accepts and never says anything.
    Hang,
    /// A refusal in kind: SMTP `554 5.3.2 busy`, IMAP `* BYE busy`, POP3 `-ERR busy`,
    /// HTTP 503, MAPI 200 with `X-ResponseCode: 9`; Echo closes at once.
    BadGreeting,
    /// Greets, then closes after reading the first command (HTTP: after the request).
    DieMidSession,
}

/// Options of a fake beyond its behaviour; build with the chaining methods.
#[derive(Clone, Default)]
pub struct FakeOptions {
    /// Offer STARTTLS (SMTP `STARTTLS`, IMAP `STARTTLS`, POP3 `STLS`) with this config.
    pub starttls: Option<Arc<rustls::ServerConfig>>,
    /// Speak TLS from the first byte (SMTPS/IMAPS/POP3S/HTTPS) with this config.
    pub implicit_tls: Option<Arc<rustls::ServerConfig>>,
    /// Require a PROXY v1/v2 header first; connections without one are dropped
    /// (as Postfix and Dovecot do).
    pub expect_proxy: bool,
    /// Status of `Good` HTTP answers (default 200); also used by MAPI when set.
    pub http_status: Option<u16>,
    /// Name shown in greetings and HTTP bodies (default `fake-PORT`), so tests can tell
    /// which backend answered.
    pub banner: Option<String>,
}

impl std::fmt::Debug for FakeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOptions")
            .field("starttls", &self.starttls.is_some())
            .field("implicit_tls", &self.implicit_tls.is_some())
            .field("expect_proxy", &self.expect_proxy)
            .field("http_status", &self.http_status)
            .field("banner", &self.banner)
            .finish()
    }
}

impl FakeOptions {
    /// No TLS, no PROXY header, status 200, default banner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Offers STARTTLS with `config`.
    pub fn starttls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.starttls = Some(config);
        self
    }

    /// Speaks TLS from the start with `config`.
    pub fn implicit_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.implicit_tls = Some(config);
        self
    }

    /// Requires a PROXY header before the protocol.
    pub fn expect_proxy(mut self) -> Self {
        self.expect_proxy = true;
        self
    }

    /// Status of good HTTP answers.
    pub fn http_status(mut self, status: u16) -> Self {
        self.http_status = Some(status);
        self
    }

    /// Name in greetings and bodies.
    pub fn banner(mut self, banner: impl Into<String>) -> Self {
        self.banner = Some(banner.into());
        self
    }
}

/// What the fake saw of the last HTTP request (for L7 proxy tests).
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Method.
    pub method: http::Method,
    /// Request target as received.
    pub uri: http::Uri,
    /// Request headers.
    pub headers: http::HeaderMap,
}

/// Counters and records shared with the session tasks.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) connections: AtomicUsize,
    pub(crate) completed: AtomicUsize,
    pub(crate) active: AtomicUsize,
    pub(crate) messages: AtomicUsize,
    pub(crate) requests: AtomicUsize,
    pub(crate) last_proxy: Mutex<Option<Header>>,
    pub(crate) last_request: Mutex<Option<RequestInfo>>,
    pub(crate) changed: Notify,
}

impl Stats {
    pub(crate) fn bump(&self, counter: &AtomicUsize) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub(crate) fn drop_one(&self, counter: &AtomicUsize) {
        counter.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// Everything a session needs, snapshotted at accept time.
#[derive(Clone)]
pub(crate) struct SessionCtx {
    pub(crate) kind: FakeKind,
    pub(crate) behaviour: Behaviour,
    pub(crate) options: FakeOptions,
    pub(crate) banner: String,
    pub(crate) stats: Arc<Stats>,
}

/// The listening side: either accepting, or a bound-but-not-listening socket that
/// keeps the port reserved while refusing connections.
enum Listening {
    /// `fd` is a duplicate of the listener's descriptor, owned here so shutting the
    /// socket down never touches a descriptor number the process reused.
    Accepting {
        fd: OwnedFd,
        task: JoinHandle<()>,
    },
    Refusing(TcpSocket),
    Released,
}

struct State {
    behaviour: Behaviour,
    options: FakeOptions,
    listening: Listening,
    sessions: CancellationToken,
}

/// An in-process fake backend on `127.0.0.1`; see the module docs.
pub struct FakeServer {
    kind: FakeKind,
    addr: SocketAddr,
    stats: Arc<Stats>,
    state: Arc<Mutex<State>>,
}

impl FakeServer {
    /// Starts a fake of `kind` with default options.
    pub async fn start(kind: FakeKind, behaviour: Behaviour) -> FakeServer {
        Self::start_with(kind, behaviour, FakeOptions::default()).await
    }

    /// Starts a fake of `kind` with `options`.
    pub async fn start_with(
        kind: FakeKind,
        behaviour: Behaviour,
        options: FakeOptions,
    ) -> FakeServer {
        let socket = reserve(SocketAddr::from(([127, 0, 0, 1], 0))).expect("fake bind");
        Self::on_socket(socket, kind, behaviour, options)
    }

    /// Starts a fake of `kind` on a fixed `addr` (the demo's backends), reporting a
    /// port already in use as an error instead of panicking.
    pub async fn try_start_at(
        addr: SocketAddr,
        kind: FakeKind,
        behaviour: Behaviour,
        options: FakeOptions,
    ) -> std::io::Result<FakeServer> {
        let socket = reserve(addr)?;
        socket.local_addr()?;
        Ok(Self::on_socket(socket, kind, behaviour, options))
    }

    fn on_socket(
        socket: TcpSocket,
        kind: FakeKind,
        behaviour: Behaviour,
        options: FakeOptions,
    ) -> FakeServer {
        let addr = socket.local_addr().expect("fake local addr");
        let server = FakeServer {
            kind,
            addr,
            stats: Arc::new(Stats::default()),
            state: Arc::new(Mutex::new(State {
                behaviour,
                options,
                listening: Listening::Refusing(socket),
                sessions: CancellationToken::new(),
            })),
        };
        server.apply(&mut server.lock());
        server
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The protocol it speaks.
    pub fn kind(&self) -> FakeKind {
        self.kind
    }

    /// The current behaviour.
    pub fn behaviour(&self) -> Behaviour {
        self.lock().behaviour
    }

    /// Changes the behaviour for new connections (live sessions keep theirs).
    /// `Refuse` closes the listener at once; any other behaviour reopens it.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        let mut st = self.lock();
        st.behaviour = behaviour;
        self.apply(&mut st);
    }

    /// Replaces the options for new connections.
    pub fn set_options(&self, options: FakeOptions) {
        self.lock().options = options;
    }

    /// A killed backend: the port refuses connections and live sessions are cut.
    /// `set_behaviour(Behaviour::Good)` brings it back on the same port.
    pub fn stop(&self) {
        self.set_behaviour(Behaviour::Refuse);
        self.kill_sessions();
    }

    /// Cuts every live session (connections are closed without a goodbye).
    pub fn kill_sessions(&self) {
        let mut st = self.lock();
        st.sessions.cancel();
        st.sessions = CancellationToken::new();
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// Sessions that ended politely: QUIT/LOGOUT for mail kinds, an answered request for
    /// HTTP/MAPI, a client-side close for Echo.
    pub fn sessions_completed(&self) -> usize {
        self.stats.completed.load(Ordering::SeqCst)
    }

    /// Sessions currently open.
    pub fn active_sessions(&self) -> usize {
        self.stats.active.load(Ordering::SeqCst)
    }

    /// SMTP messages accepted with `250` after `DATA`.
    pub fn messages(&self) -> usize {
        self.stats.messages.load(Ordering::SeqCst)
    }

    /// HTTP/MAPI requests received.
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// The PROXY header of the last connection that sent one (with `expect_proxy`).
    pub fn last_proxy_header(&self) -> Option<Header> {
        lock(&self.stats.last_proxy).clone()
    }

    /// The last HTTP/MAPI request received.
    pub fn last_request(&self) -> Option<RequestInfo> {
        lock(&self.stats.last_request).clone()
    }

    /// Waits until `cond(self)` holds, re-checking whenever a counter changes, for at
    /// most `timeout`; returns whether it held. Use instead of sleeping.
    pub async fn wait_until(&self, timeout: Duration, cond: impl Fn(&FakeServer) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.stats.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return cond(self);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Brings the listening side in line with the behaviour.
    fn apply(&self, st: &mut State) {
        let want_listen = st.behaviour != Behaviour::Refuse;
        match (&st.listening, want_listen) {
            (Listening::Accepting { .. }, true) | (Listening::Refusing(_), false) => {}
            (Listening::Accepting { .. }, false) => {
                if let Listening::Accepting { fd, task } =
                    std::mem::replace(&mut st.listening, Listening::Released)
                {
                    close_listener(fd, &task);
                }
                st.listening = Listening::Refusing(reserve(self.addr).expect("fake rebind"));
            }
            (Listening::Refusing(_), true) | (Listening::Released, true) => {
                let socket = match std::mem::replace(&mut st.listening, Listening::Released) {
                    Listening::Refusing(s) => s,
                    _ => reserve(self.addr).expect("fake rebind"),
                };
                let listener = socket.listen(1024).expect("fake listen");
                let fd = listener
                    .as_fd()
                    .try_clone_to_owned()
                    .expect("dup listener fd");
                let task = tokio::spawn(accept_loop(
                    listener,
                    self.kind,
                    self.addr,
                    Arc::clone(&self.state),
                    Arc::clone(&self.stats),
                ));
                st.listening = Listening::Accepting { fd, task };
            }
            (Listening::Released, false) => {
                st.listening = Listening::Refusing(reserve(self.addr).expect("fake rebind"));
            }
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let mut st = self.lock();
        if let Listening::Accepting { fd, task } =
            std::mem::replace(&mut st.listening, Listening::Released)
        {
            close_listener(fd, &task);
        }
        st.sessions.cancel();
    }
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServer")
            .field("kind", &self.kind)
            .field("addr", &self.addr)
            .finish()
    }
}

/// A bound, non-listening socket: keeps the port ours while connects are refused.
fn reserve(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Stops a listening socket synchronously: `shutdown(2)` on a listening socket makes
/// Linux drop it from the listen table (new SYNs are reset) and wakes the accept task,
/// which then exits and closes its descriptor; the task is also aborted. `fd` (our
/// duplicate) is closed on return.
fn close_listener(fd: OwnedFd, task: &JoinHandle<()>) {
    // SAFETY: `fd` is an open descriptor we own for the duration of the call.
    unsafe {
        libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR);
    }
    task.abort();
}

async fn accept_loop(
    listener: TcpListener,
    kind: FakeKind,
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stats: Arc<Stats>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(_) => {
                // EMFILE and friends: back off briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (ctx, token) = {
            let st = lock(&state);
            let banner = st
                .options
                .banner
                .clone()
                .unwrap_or_else(|| format!("fake-{}", addr.port()));
            let ctx = SessionCtx {
                kind,
                behaviour: st.behaviour,
                options: st.options.clone(),
                banner,
                stats: Arc::clone(&stats),
            };
            (ctx, st.sessions.clone())
        };
        stats.bump(&stats.connections);
        stats.bump(&stats.active);
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = sessions::serve(stream, &ctx) => {}
            }
            ctx.stats.drop_one(&ctx.stats.active);
        });
    }
}

/// Listening TCP sockets on `port` in this network namespace, from
/// `/proc/net/tcp{,6}` (state `0A`): a VIP has one per data-path worker of its
/// process, so tests of the workers and of upgrades count them.
pub fn listening_sockets(port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|text| {
            text.lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.len() > 3 && f[1].ends_with(&port) && f[3] == "0A"
                })
                .count()
        })
        .sum()
}
