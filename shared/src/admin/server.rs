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
            Command::ShowSites | Command::Site(..) | Command::Explain(..) => "gss",
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

/// Removes the socket file on drop, so it disappears on every exit path.
pub struct SocketGuard(pub PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const MAX_CONNECTIONS: usize = 32;
const IDLE: Duration = Duration::from_secs(300);

/// Accepts admin connections until `cancel` fires.
pub async fn serve(listener: UnixListener, dispatcher: Arc<Dispatcher>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let mut s = stream;
                let _ = s
                    .write_all(
                        Reply::error("too many admin connections; retry")
                            .render()
                            .as_bytes(),
                    )
                    .await;
            });
            continue;
        };
        let dispatcher = dispatcher.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                _ = cancel.cancelled() => {}
                r = connection(stream, &dispatcher) => {
                    if let Err(e) = r {
                        tracing::debug!("admin connection: {e}");
                    }
                }
            }
        });
    }
}

async fn connection(stream: UnixStream, dispatcher: &Dispatcher) -> io::Result<()> {
    let peer = Peer {
        uid: stream.peer_cred().ok().map(|c| c.uid()),
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::with_capacity(128);
    loop {
        buf.clear();
        let n = match tokio::time::timeout(
            IDLE,
            (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut buf),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE {
            let reply = Reply::error(format!("line longer than {MAX_LINE} bytes; closing"));
            write.write_all(reply.render().as_bytes()).await?;
            return Ok(());
        }
        let reply = match std::str::from_utf8(&buf) {
            Err(_) => Reply::error("command is not UTF-8 text"),
            Ok(line) => match protocol::parse(line) {
                Err(e) => Reply::Error(e),
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
        write.write_all(reply.render().as_bytes()).await?;
    }
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

    struct Lb;
    impl AdminHandler for Lb {
        fn handle<'a>(&'a self, cmd: &'a Command, _peer: Peer) -> Option<HandlerFuture<'a>> {
            match cmd {
                Command::ShowVips => Some(Box::pin(async { Reply::Data(vec!["smtp up".into()]) })),
                _ => None,
            }
        }
    }

    async fn start() -> (tempdir::Dir, CancellationToken) {
        let dir = tempdir::Dir::new();
        let listener = bind(&dir.sock()).expect("bind");
        let events = Arc::new(EventLog::new(10));
        events.record("smtp/mx1", "down: connection refused");
        let d = Arc::new(Dispatcher::new(events, vec![Arc::new(Lb)]));
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, d, cancel.clone()));
        (dir, cancel)
    }

    mod tempdir {
        use std::path::PathBuf;
        pub struct Dir(pub PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "portico-admin-{}-{}",
                    std::process::id(),
                    rand::random::<u64>()
                ));
                std::fs::create_dir_all(&p).expect("tempdir");
                Dir(p)
            }
            pub fn sock(&self) -> PathBuf {
                self.0.join("admin.sock")
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
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
