//! One neighbor's session task: connect (from `local_address`, with the TCP MD5 key
//! when `password` is set), exchange OPENs, then keep the router's view equal to the
//! routes the speaker publishes: announce what is new or changed, withdraw what went.
//! ROUTE-REFRESH is answered by sending everything again; received UPDATEs only
//! restart the hold timer. Any error sends the NOTIFICATION the FSM names, closes the
//! connection and reconnects after the FSM's backoff; nothing here can end the
//! process. The task ends only when its token is cancelled (shutdown, or the neighbor
//! left the config), with a Cease NOTIFICATION.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::Rng;
use shared::config::NeighborConfig;
use shared::events::EventLog;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::announce::Routes;
use super::fsm::{Fsm, Notify, PeerOpen, State, Timer};
use super::wire::{self, Message, Peering};
use crate::metrics as m;
use crate::sync::lock;

/// Bound on the TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on one write: a router that stops reading is a failed session.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who we peer with and as whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Neighbor {
    /// The router.
    pub cfg: NeighborConfig,
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
}

impl Neighbor {
    /// `ADDRESS:PORT`, the label of metrics, events and `show bgp`.
    pub(crate) fn label(&self) -> String {
        SocketAddr::new(self.cfg.address, self.cfg.port).to_string()
    }
}

/// What `show bgp` and the shutdown read of a session.
#[derive(Debug)]
pub(crate) struct SessionStatus {
    inner: Mutex<StatusInner>,
    /// UPDATEs sent over the session's lifetime.
    pub updates_sent: AtomicU64,
    /// How many prefixes the router holds from us (0 when not established).
    advertised: watch::Sender<usize>,
}

#[derive(Debug)]
struct StatusInner {
    state: State,
    since: Option<Instant>,
    last_error: Option<String>,
}

/// A copy of a session's status.
#[derive(Debug, Clone)]
pub struct StatusView {
    /// FSM state.
    pub state: State,
    /// How long it has been established.
    pub uptime: Option<Duration>,
    /// Why the last session ended, if one did.
    pub last_error: Option<String>,
    /// UPDATEs sent.
    pub updates_sent: u64,
    /// Prefixes the router holds from us.
    pub advertised: usize,
}

impl Default for SessionStatus {
    fn default() -> Self {
        SessionStatus {
            inner: Mutex::new(StatusInner {
                state: State::Idle,
                since: None,
                last_error: None,
            }),
            updates_sent: AtomicU64::new(0),
            advertised: watch::Sender::new(0),
        }
    }
}

impl SessionStatus {
    /// A copy for display.
    pub(crate) fn view(&self) -> StatusView {
        let s = lock(&self.inner);
        StatusView {
            state: s.state,
            uptime: s.since.map(|t| t.elapsed()),
            last_error: s.last_error.clone(),
            updates_sent: self.updates_sent.load(Ordering::Relaxed),
            advertised: *self.advertised.borrow(),
        }
    }

    /// Waits until the router holds none of our prefixes (or the session is down).
    pub(crate) async fn wait_withdrawn(&self) {
        let mut rx = self.advertised.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn set_state(&self, state: State) {
        let mut s = lock(&self.inner);
        s.state = state;
        s.since = (state == State::Established).then(Instant::now);
    }

    fn failed(&self, reason: &str) {
        let mut s = lock(&self.inner);
        s.state = State::Idle;
        s.since = None;
        s.last_error = Some(reason.to_string());
    }
}

/// Runs the neighbor's session until `cancel`, reconnecting with backoff.
pub(crate) async fn run(
    n: Neighbor,
    mut routes: watch::Receiver<Arc<Routes>>,
    status: Arc<SessionStatus>,
    cancel: CancellationToken,
    events: Arc<EventLog>,
) {
    let label = n.label();
    let up = metrics::gauge!(m::BGP_SESSION_UP, "neighbor" => label.clone());
    let subject = format!("bgp {label}");
    let mut fsm = Fsm::new(n.cfg.hold_time);
    loop {
        let end = session(&n, &mut fsm, &mut routes, &status, &cancel, &events).await;
        up.set(0.0);
        status.advertised.send_replace(0);
        let reason = match end {
            End::Cancelled => {
                status.set_state(State::Idle);
                return;
            }
            End::Failed(reason) => reason,
        };
        let was_up = fsm.state() == State::Established;
        status.failed(&reason);
        let delay = fsm.reset(rand::thread_rng().gen_range(0.75..1.25));
        if was_up {
            events.record(&subject, format!("session down: {reason}"));
        } else {
            tracing::info!(neighbor = %label, "bgp: {reason}; retry in {delay:?}");
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

enum End {
    Cancelled,
    Failed(String),
}

/// Sets the TCP MD5 signature key for `peer` on the socket (RFC 2385): the kernel
/// signs every segment and drops unsigned ones, as routers configured with a
/// password expect.
fn set_md5(sock: &TcpSocket, peer: SocketAddr, key: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `struct tcp_md5sig` of linux/tcp.h.
    #[repr(C)]
    struct TcpMd5Sig {
        addr: libc::sockaddr_storage,
        flags: u8,
        prefixlen: u8,
        keylen: u16,
        ifindex: libc::c_int,
        key: [u8; 80],
    }
    let key = key.as_bytes();
    if key.is_empty() || key.len() > 80 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key must be 1 to 80 bytes",
        ));
    }
    // SAFETY: all-zero is a valid value of this plain C struct.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    let sa = socket2::SockAddr::from(peer);
    let sa_len = (sa.len() as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: copies `sa_len` bytes of a valid sockaddr into the storage, which is at
    // least that large.
    unsafe {
        std::ptr::copy_nonoverlapping(
            sa.as_ptr().cast::<u8>(),
            std::ptr::addr_of_mut!(sig.addr).cast::<u8>(),
            sa_len,
        );
    }
    sig.keylen = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    // SAFETY: passes a pointer to a live, correctly sized struct to setsockopt.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::addr_of!(sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

async fn connect(cfg: &NeighborConfig) -> io::Result<TcpStream> {
    let peer = SocketAddr::new(cfg.address, cfg.port);
    let sock = if peer.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(local) = cfg.local_address {
        sock.bind(SocketAddr::new(local, 0))?;
    }
    if let Some(pw) = &cfg.password {
        set_md5(&sock, peer, pw)?;
    }
    let stream = sock.connect(peer).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn send(wr: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err(format!("write: blocked for {WRITE_TIMEOUT:?}")),
    }
}

/// One connection's worth of session: what it has announced and how.
struct Conn<'a> {
    n: &'a Neighbor,
    status: &'a SessionStatus,
    wr: OwnedWriteHalf,
    local_ip: IpAddr,
    peering: Peering,
    advertised: Routes,
    updates: metrics::Counter,
    /// Something went out since the last look (an UPDATE restarts the keepalive timer).
    sent: bool,
}

impl Conn<'_> {
    async fn notify(&mut self, n: &Notify) -> End {
        // Best effort: the connection is closed right after either way.
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.wr.write_all(&wire::notification(n.code, n.subcode)),
        )
        .await;
        End::Failed(format!(
            "sent NOTIFICATION {}/{}: {}",
            n.code, n.subcode, n.reason
        ))
    }

    /// The VIP's `next_hop`, else the neighbor's, else the session's local address:
    /// the first of the prefix's family (a dual-stack VIP names one next hop per
    /// family across the two levels).
    fn next_hop(&self, prefix: &ipnet::IpNet, attrs: &wire::RouteAttrs) -> Option<IpAddr> {
        [attrs.next_hop, self.n.cfg.next_hop, Some(self.local_ip)]
            .into_iter()
            .flatten()
            .find(|nh| nh.is_ipv4() == matches!(prefix, ipnet::IpNet::V4(_)))
    }

    async fn update(&mut self, bytes: Option<Bytes>) -> Result<(), String> {
        if let Some(b) = bytes {
            send(&mut self.wr, &b).await?;
            self.updates.increment(1);
            self.status.updates_sent.fetch_add(1, Ordering::Relaxed);
            self.sent = true;
        }
        Ok(())
    }

    /// Makes the router's view equal `want`; `again` re-sends what it already has
    /// (ROUTE-REFRESH).
    async fn sync(&mut self, want: &Routes, again: bool) -> Result<(), String> {
        let gone: Vec<_> = self
            .advertised
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            self.update(wire::withdraw(p, self.peering)).await?;
            self.advertised.remove(&p);
            self.status.advertised.send_replace(self.advertised.len());
        }
        for (p, attrs) in want {
            if !again && self.advertised.get(p) == Some(attrs) {
                continue;
            }
            let update = self
                .next_hop(p, attrs)
                .and_then(|nh| wire::announce(*p, attrs, nh, self.peering));
            match update {
                Some(b) => {
                    self.update(Some(b)).await?;
                    self.advertised.insert(*p, attrs.clone());
                    self.status.advertised.send_replace(self.advertised.len());
                }
                None => tracing::warn!(
                    neighbor = %self.n.label(),
                    "bgp: {p} not announced: no next hop of its address family; set next_hop"
                ),
            }
        }
        Ok(())
    }
}

async fn session(
    n: &Neighbor,
    fsm: &mut Fsm,
    routes: &mut watch::Receiver<Arc<Routes>>,
    status: &SessionStatus,
    cancel: &CancellationToken,
    events: &EventLog,
) -> End {
    fsm.connecting();
    status.set_state(State::Connect);
    let stream = tokio::select! {
        _ = cancel.cancelled() => return End::Cancelled,
        r = tokio::time::timeout(CONNECT_TIMEOUT, connect(&n.cfg)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return End::Failed(format!("connect: {e}")),
            Err(_) => return End::Failed(format!("connect: no answer in {CONNECT_TIMEOUT:?}")),
        },
    };
    let local_ip = match stream.local_addr() {
        Ok(a) => a.ip(),
        Err(e) => return End::Failed(format!("local address: {e}")),
    };
    let (mut rd, wr) = stream.into_split();
    let label = n.label();
    let mut c = Conn {
        n,
        status,
        wr,
        local_ip,
        peering: Peering {
            local_as: n.local_as,
            ibgp: n.local_as == n.cfg.remote_as,
            four_octet: true,
        },
        advertised: BTreeMap::new(),
        updates: metrics::counter!(m::BGP_UPDATES_SENT, "neighbor" => label.clone()),
        sent: false,
    };
    if let Err(e) = send(
        &mut c.wr,
        &wire::open(n.local_as, fsm.local_hold_secs(), n.router_id),
    )
    .await
    {
        return End::Failed(e);
    }
    fsm.open_sent(Instant::now());
    status.set_state(State::OpenSent);
    let mut buf = BytesMut::with_capacity(wire::MAX_LEN);
    loop {
        let deadline = fsm.next_deadline();
        let established = fsm.state() == State::Established;
        tokio::select! {
            _ = cancel.cancelled() => {
                c.notify(&Notify::admin_shutdown()).await;
                return End::Cancelled;
            }
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return End::Failed("connection closed by the router".into()),
                Err(e) => return End::Failed(format!("read: {e}")),
                Ok(_) => {
                    while let Some(msg) = match next_message(&mut buf) {
                        Ok(m) => m,
                        Err(e) => {
                            let notify = Notify { code: e.code, subcode: e.subcode, reason: e.detail };
                            return c.notify(&notify).await;
                        }
                    } {
                        let now = Instant::now();
                        let step = match msg {
                            Message::Open(o) => {
                                let peer = PeerOpen {
                                    version: o.version,
                                    asn: wire::open_as(&o),
                                    hold: o.hold_time,
                                    id: o.bgp_identifier,
                                };
                                match fsm.open_received(peer, n.cfg.remote_as, now) {
                                    Ok(()) => {
                                        c.peering.four_octet = wire::open_four_octet(&o);
                                        status.set_state(State::OpenConfirm);
                                        // Our KEEPALIVE goes before anything else: the
                                        // router's KEEPALIVE may sit in the same read,
                                        // and an UPDATE must not reach a router that is
                                        // still in OpenConfirm (FRR resets on that).
                                        if let Err(e) = send(&mut c.wr, &wire::keepalive()).await {
                                            return End::Failed(e);
                                        }
                                        fsm.sent(Instant::now());
                                        Ok(false)
                                    }
                                    Err(e) => Err(e),
                                }
                            }
                            Message::Keepalive => {
                                let before = fsm.state();
                                fsm.keepalive_received(now).map(|()| before == State::OpenConfirm)
                            }
                            Message::Update(_) => fsm.update_received(now).map(|()| false),
                            Message::RouteRefresh(_) => match fsm.update_received(now) {
                                Ok(()) => {
                                    let want = Arc::clone(&routes.borrow());
                                    if let Err(e) = c.sync(&want, true).await {
                                        return End::Failed(e);
                                    }
                                    Ok(false)
                                }
                                Err(e) => Err(e),
                            },
                            Message::Notification(nm) => {
                                return End::Failed(format!(
                                    "router sent NOTIFICATION {}/{}: {}",
                                    nm.code.as_u8(),
                                    nm.subcode,
                                    rustbgpd_wire::notification::description(nm.code, nm.subcode)
                                ));
                            }
                            _ => Ok(false),
                        };
                        match step {
                            Err(notify) => return c.notify(&notify).await,
                            Ok(true) => {
                                status.set_state(State::Established);
                                metrics::gauge!(m::BGP_SESSION_UP, "neighbor" => label.clone()).set(1.0);
                                events.record(format!("bgp {label}"), "session established");
                                let want = Arc::clone(&routes.borrow_and_update());
                                if let Err(e) = c.sync(&want, false).await {
                                    return End::Failed(e);
                                }
                                c.sent = true;
                            }
                            Ok(false) => {}
                        }
                    }
                }
            },
            _ = sleep_until(deadline), if deadline.is_some() => {
                match fsm.poll(Instant::now()) {
                    Some(Timer::HoldExpired) => return c.notify(&fsm.hold_expired()).await,
                    Some(Timer::SendKeepalive) => {
                        if let Err(e) = send(&mut c.wr, &wire::keepalive()).await {
                            return End::Failed(e);
                        }
                        fsm.sent(Instant::now());
                    }
                    None => {}
                }
            }
            r = routes.changed(), if established => {
                if r.is_err() {
                    c.notify(&Notify::admin_shutdown()).await;
                    return End::Cancelled;
                }
                let want = Arc::clone(&routes.borrow_and_update());
                if let Err(e) = c.sync(&want, false).await {
                    return End::Failed(e);
                }
            }
        }
        if std::mem::take(&mut c.sent) {
            fsm.sent(Instant::now());
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Takes the next whole message off `buf`, if one is there.
fn next_message(buf: &mut BytesMut) -> Result<Option<Message>, wire::WireError> {
    let Some(len) = wire::frame_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    let frame = buf.split_to(len);
    wire::decode(&frame).map(Some)
}
