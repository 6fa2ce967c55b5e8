//! The admin socket server: binds the Unix socket with mode 0600, reads one command
//! per line and dispatches it to the role handlers. A malformed line gets `error: ...`
//! and the connection stays usable; an over-long line closes that connection only.

use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::protocol::{self, Command, Reply, HELP, MAX_LINE};
use crate::events::EventLog;

/// Who sent a command, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The socket peer's uid, when the kernel reports it.
    pub uid: Option<u32>,
}

/// The future a handler returns; boxed so handlers of every role fit one `dyn`.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// A role's share of the admin commands.
pub trait AdminHandler: Send + Sync + 'static {
    /// Handles `cmd` if this handler owns it; `None` passes it to the next handler.
    fn handle<'a>(&'a self, cmd: &'a Command, peer: Peer) -> Option<HandlerFuture<'a>>;
}

/// Handlers tried in order; the first that owns a command answers it. Also answers
/// `help` and `show events` itself, since those belong to no role.
pub struct Dispatcher {
    events: Arc<EventLog>,
    handlers: Vec<Arc<dyn AdminHandler>>,
}

impl Dispatcher {
    /// A dispatcher over `handlers`, reading events from `events`.
    pub fn new(events: Arc<EventLog>, handlers: Vec<Arc<dyn AdminHandler>>) -> Self {
        Dispatcher { events, handlers }
    }

    /// Answers one command.
    pub async fn dispatch(&self, cmd: &Command, peer: Peer) -> Reply {
        match cmd {
            Command::Help => return Reply::Data(HELP.iter().map(|s| s.to_string()).collect()),
            Command::ShowEvents(n) => {
                return Reply::Data(self.events.last(*n).iter().map(|e| e.to_string()).collect())
            }
            _ => {}
        }
        for h in &self.handlers {
            if let Some(fut) = h.handle(cmd, peer) {
                return fut.await;
            }
        }
        let role = match cmd {
            Command::ShowSites | Command::ShowDnssec | Command::Site(..) | Command::Explain(..) => {
                "gss"
            }
            Command::Reload => "reload-capable",
            _ => "lb",
        };
        Reply::error(format!(
            "this process runs no {role} role; check its config"
        ))
    }
}

/// Binds the admin socket at `path` with mode 0600, replacing a stale socket file.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; remove it or choose another admin.socket",
                    path.display()
                ),
            ));
        }
    }
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    // Bind under a restrictive umask so the socket is never briefly world-accessible.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Removes the socket file on drop, so it disappears on every exit path, unless
/// the path is another process's socket by then (a binary upgrade's successor binds
/// the same path while this process drains).
pub struct SocketGuard {
    path: PathBuf,
    file: Option<FileId>,
}

/// What tells one socket file from another at the same path: the inode number
/// alone does not, since a number freed when this process closed its listener (the
/// upgrade socket closes at the handover) is handed to the next file created, which
/// may be the successor's socket; the change time (set when it was created) does.
type FileId = (u64, u64, i64, i64);

fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

impl SocketGuard {
    /// Guards the socket just bound at `path`.
    pub fn new(path: PathBuf) -> SocketGuard {
        let file = file_id(&path);
        SocketGuard { path, file }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let now = file_id(&self.path);
        if now.is_some() && now == self.file {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Connections counted against the limit: all but those waiting in `wait drained`.
pub const MAX_CONNECTIONS: usize = 32;
/// Pending `wait drained` commands; one more is refused at once instead of queueing.
pub const MAX_WAITS: usize = 64;
/// A connection with no command in progress is closed after this long.
pub const IDLE: Duration = Duration::from_secs(30);
/// Bound on delivering one reply to a peer that does not read.
const WRITE: Duration = Duration::from_secs(10);

/// The open connections, so the operator always gets in: when [`MAX_CONNECTIONS`] are
/// open, the one idle the longest (no command in progress, nothing but an open socket
/// or a half-typed line) is closed to make room. Commands answer at once except
/// `wait drained`, and waiting connections are not counted (they have their own
/// limit), so idle connections, however many a stuck script leaves open, can never
/// lock anyone out. The socket is mode 0600, so every peer is its owner or root and a
/// limit per uid would protect no one from anyone.
#[derive(Default)]
struct Registry {
    inner: std::sync::Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next_id: u64,
    /// Bumped on every idle transition; the lowest stamp is the longest idle.
    clock: u64,
    conns: std::collections::HashMap<u64, Slot>,
}

struct Slot {
    /// `Some(stamp)` while no command is in progress.
    idle_since: Option<u64>,
    /// In `wait drained`: not counted, not evictable.
    waiting: bool,
    /// Fired to close the connection for a newcomer.
    evict: CancellationToken,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a new connection, evicting the longest-idle one at the limit; `None`
    /// when every counted connection is busy with a command.
    fn admit(self: &Arc<Self>) -> Option<Registered> {
        let mut r = self.lock();
        let counted = r.conns.values().filter(|s| !s.waiting).count();
        if counted >= MAX_CONNECTIONS {
            let oldest = r
                .conns
                .iter()
                .filter(|(_, s)| !s.waiting)
                .filter_map(|(id, s)| s.idle_since.map(|t| (t, *id)))
                .min()?;
            if let Some(slot) = r.conns.remove(&oldest.1) {
                slot.evict.cancel();
            }
        }
        r.next_id += 1;
        r.clock += 1;
        let (id, stamp) = (r.next_id, r.clock);
        let evict = CancellationToken::new();
        r.conns.insert(
            id,
            Slot {
                idle_since: Some(stamp),
                waiting: false,
                evict: evict.clone(),
            },
        );
        Some(Registered {
            registry: Arc::clone(self),
            id,
            evict,
        })
    }
}

/// A connection's entry in the [`Registry`]; removed on drop.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
    evict: CancellationToken,
}

impl Registered {
    fn set_idle(&self, idle: bool) {
        let mut r = self.registry.lock();
        r.clock += 1;
        let stamp = r.clock;
        if let Some(slot) = r.conns.get_mut(&self.id) {
            slot.idle_since = idle.then_some(stamp);
        }
    }

    fn set_waiting(&self, waiting: bool) {
        if let Some(slot) = self.registry.lock().conns.get_mut(&self.id) {
            slot.waiting = waiting;
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().conns.remove(&self.id);
    }
}

/// Accepts admin connections until `cancel` fires.
pub async fn serve(listener: UnixListener, dispatcher: Arc<Dispatcher>, cancel: CancellationToken) {
    let registry = Arc::new(Registry::default());
    let waits = Arc::new(Semaphore::new(MAX_WAITS));
    loop {
        let stream = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("admin socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(registered) = registry.admit() else {
            tokio::spawn(async move {
                let mut s = stream;
                let reply = Reply::error("every admin connection is busy with a command; retry");
                let _ = tokio::time::timeout(WRITE, s.write_all(reply.render().as_bytes())).await;
            });
            continue;
        };
        let dispatcher = dispatcher.clone();
        let cancel = cancel.clone();
        let waits = waits.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = connection(stream, &dispatcher, &registered, &waits) => {
                    if let Err(e) = r {
                        tracing::debug!("admin connection: {e}");
                    }
                }
            }
        });
    }
}

async fn connection(
    stream: UnixStream,
    dispatcher: &Dispatcher,
    registered: &Registered,
    waits: &Arc<Semaphore>,
) -> io::Result<()> {
    let peer = Peer {
        uid: stream.peer_cred().ok().map(|c| c.uid()),
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::with_capacity(128);
    loop {
        buf.clear();
        registered.set_idle(true);
        let mut limited = (&mut reader).take(MAX_LINE as u64 + 1);
        let line = limited.read_until(b'\n', &mut buf);
        let n = tokio::select! {
            _ = registered.evict.cancelled() => {
                let reply = Reply::error("closed to make room for another admin connection");
                let _ = tokio::time::timeout(WRITE, write.write_all(reply.render().as_bytes())).await;
                return Ok(());
            }
            r = tokio::time::timeout(IDLE, line) => match r {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            },
        };
        registered.set_idle(false);
        if n == 0 {
            return Ok(());
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
            let reply = Reply::error(format!("line longer than {MAX_LINE} bytes; closing"));
            send(&mut write, &reply).await?;
            return Ok(());
        }
        let reply = match std::str::from_utf8(&buf) {
            Err(_) => Reply::error("command is not UTF-8 text"),
            Ok(line) => match protocol::parse(line) {
                Err(e) => Reply::Error(e),
                Ok(cmd @ Command::WaitDrained(..)) => {
                    // Waits may last long; they have their own limit and do not count
                    // against (or get evicted by) the general one.
                    match waits.clone().try_acquire_owned() {
                        Ok(_permit) => {
                            registered.set_waiting(true);
                            let reply = dispatcher.dispatch(&cmd, peer).await;
                            registered.set_waiting(false);
                            reply
                        }
                        Err(_) => Reply::error(format!(
                            "{MAX_WAITS} wait drained commands are already pending; retry later"
                        )),
                    }
                }
                Ok(cmd) => {
                    let reply = dispatcher.dispatch(&cmd, peer).await;
                    if cmd.changes_state() {
                        let uid = peer.uid.map_or_else(|| "?".to_string(), |u| u.to_string());
                        let outcome = match &reply {
                            Reply::Error(e) => format!("error: {e}"),
                            _ => "ok".to_string(),
                        };
                        tracing::info!(uid = %uid, command = %line.trim(), outcome = %outcome, "admin command");
                    }
                    reply
                }
            },
        };
        send(&mut write, &reply).await?;
    }
}

/// Writes one reply within [`WRITE`]; a peer that stops reading loses its connection.
async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    tokio::time::timeout(WRITE, write.write_all(reply.render().as_bytes()))
        .await
        .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "reply not read")))
}

/// Sends one command and returns the reply text (without the final blank line).
pub async fn request(path: &Path, command: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path).await?;
    stream.write_all(command.trim().as_bytes()).await?;
    stream.write_all(b"\n").await?;
    let mut reader = BufReader::new(stream);
    let mut out = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            break;
        }
        if line == "\n" {
            break;
        }
        out.push_str(&line);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers `show vips`; `wait drained` never finishes (a backend that never
    /// drains) and is counted in `waiting` once it started.
    #[derive(Default)]
    struct Lb {
        waiting: std::sync::atomic::AtomicUsize,
        started: tokio::sync::Notify,
    }
    impl AdminHandler for Lb {
        fn handle<'a>(&'a self, cmd: &'a Command, _peer: Peer) -> Option<HandlerFuture<'a>> {
            match cmd {
                Command::ShowVips => Some(Box::pin(async { Reply::Data(vec!["smtp up".into()]) })),
                Command::WaitDrained(..) => Some(Box::pin(async {
                    self.waiting
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    self.started.notify_waiters();
                    std::future::pending::<Reply>().await
                })),
                _ => None,
            }
        }
    }

    async fn start() -> (tempdir::Dir, CancellationToken) {
        let (dir, cancel, _) = start_lb().await;
        (dir, cancel)
    }

    async fn start_lb() -> (tempdir::Dir, CancellationToken, Arc<Lb>) {
        let dir = tempdir::Dir::new();
        let listener = bind(&dir.sock()).expect("bind");
        let events = Arc::new(EventLog::new(10));
        events.record("smtp/mx1", "down: connection refused");
        let lb = Arc::new(Lb::default());
        let d = Arc::new(Dispatcher::new(events, vec![lb.clone()]));
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, d, cancel.clone()));
        (dir, cancel, lb)
    }

    /// Reads one reply (up to its blank line) or `None` at EOF.
    async fn reply(r: &mut BufReader<UnixStream>) -> Option<String> {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            if line == "\n" {
                return Some(out);
            }
            out.push_str(&line);
        }
    }

    mod tempdir {
        use std::path::PathBuf;
        pub(super) struct Dir(pub(super) PathBuf);
        impl Dir {
            pub(super) fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "portico-admin-{}-{}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&p).expect("tempdir");
                Dir(p)
            }
            pub(super) fn sock(&self) -> PathBuf {
                self.0.join("admin.sock")
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// Idle connections and pending waits, each up to its limit and past it, never
    /// keep the operator out: the longest-idle connection makes room for a new one,
    /// waits are not counted, and a wait past their own limit is refused at once.
    #[tokio::test]
    async fn the_operator_always_gets_in() {
        let (dir, cancel, lb) = start_lb().await;
        let mut waiting = Vec::new();
        for i in 0..MAX_WAITS {
            let mut s = UnixStream::connect(dir.sock()).await.expect("connect");
            let started = lb.started.notified();
            s.write_all(b"wait drained smtp/mx1 3600\n")
                .await
                .expect("w");
            tokio::time::timeout(Duration::from_secs(10), started)
                .await
                .expect("the wait started");
            assert_eq!(lb.waiting.load(std::sync::atomic::Ordering::SeqCst), i + 1);
            waiting.push(s);
        }
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(BufReader::new(
                UnixStream::connect(dir.sock()).await.expect("connect"),
            ));
        }
        // One more wait: refused at once, not queued.
        let refused = request(&dir.sock(), "wait drained smtp/mx1 3600").await;
        assert!(
            refused
                .as_deref()
                .is_ok_and(|r| r.contains("already pending")),
            "{refused:?}"
        );
        // The operator's command is answered ...
        assert_eq!(
            request(&dir.sock(), "show vips").await.expect("answered"),
            "smtp up\n"
        );
        // ... because the longest-idle connection was closed, with a reason.
        let first = reply(&mut idle[0]).await.expect("a reason");
        assert!(first.contains("make room"), "{first}");
        assert_eq!(reply(&mut idle[0]).await, None);
        // The others stay usable, and the waits still wait.
        let last = idle.last_mut().expect("idle");
        last.get_mut().write_all(b"show vips\n").await.expect("w");
        assert_eq!(reply(last).await.as_deref(), Some("smtp up\n"));
        assert_eq!(
            lb.waiting.load(std::sync::atomic::Ordering::SeqCst),
            MAX_WAITS
        );
        cancel.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_after_the_idle_timeout() {
        let (dir, cancel) = start().await;
        let mut c = BufReader::new(UnixStream::connect(dir.sock()).await.expect("connect"));
        c.get_mut().write_all(b"show vips\n").await.expect("w");
        assert_eq!(reply(&mut c).await.as_deref(), Some("smtp up\n"));
        let since = tokio::time::Instant::now();
        assert_eq!(reply(&mut c).await, None, "closed while idle");
        let idle = since.elapsed();
        assert!(
            idle >= IDLE && idle < IDLE + Duration::from_secs(1),
            "closed after {idle:?}"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn socket_is_private_and_answers() {
        let (dir, cancel) = start().await;
        let mode = std::fs::metadata(dir.sock())
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            request(&dir.sock(), "show vips").await.unwrap(),
            "smtp up\n"
        );
        let events = request(&dir.sock(), "show events").await.unwrap();
        assert!(
            events.contains("smtp/mx1 down: connection refused"),
            "{events}"
        );
        let no_gss = request(&dir.sock(), "show sites").await.unwrap();
        assert!(
            no_gss.starts_with("error: ") && no_gss.contains("gss"),
            "{no_gss}"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn garbage_gets_errors_and_the_connection_stays_usable() {
        let (dir, cancel) = start().await;
        let stream = UnixStream::connect(dir.sock()).await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        w.write_all(b"bogus\n\xff\xfe\nshow vips\n").await.unwrap();
        let mut lines = Vec::new();
        while lines.len() < 6 {
            let mut l = String::new();
            assert!(r.read_line(&mut l).await.unwrap() > 0, "closed early");
            lines.push(l);
        }
        assert!(lines[0].starts_with("error: unknown command"), "{lines:?}");
        assert_eq!(lines[1], "\n");
        assert!(lines[2].starts_with("error: ") && lines[2].contains("UTF-8"));
        assert_eq!(lines[4], "smtp up\n");
        // An over-long line closes only this connection.
        w.write_all(&vec![b'x'; MAX_LINE * 4]).await.unwrap();
        let mut rest = String::new();
        r.read_line(&mut rest).await.unwrap();
        assert!(rest.starts_with("error: line longer"), "{rest}");
        // The server closed this connection: the next read sees EOF or a reset.
        let mut tail = String::new();
        r.read_line(&mut tail).await.unwrap();
        assert_eq!(tail, "\n");
        tail.clear();
        assert!(matches!(r.read_line(&mut tail).await, Ok(0) | Err(_)));
        assert_eq!(
            request(&dir.sock(), "show vips").await.unwrap(),
            "smtp up\n"
        );
        cancel.cancel();
    }
}
