//! Binary upgrade without a gap (`portico run --upgrade-from SOCKET`, or SIGUSR2 to
//! the running process, which starts its own successor that way): the running
//! process (the predecessor) listens on `ADMIN_SOCKET.upgrade`; the successor
//! connects, receives every listening socket and the state to carry over
//! ([`shared::handover`]), starts its probes, and only once they have spoken says
//! READY. The predecessor then stops accepting, answers OK, and drains as on SIGTERM
//! (without withdrawing routes or telling systemd it stops: the service goes on);
//! the successor opens its listeners, starts gossiping as the same cluster member
//! (the predecessor stopped at the handover), binds the admin socket and tells
//! systemd it is the main process now. Until READY nothing has changed for the predecessor: a
//! successor that fails to start leaves it serving.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shared::handover::{self, Inherited, Manifest};

/// How long either side waits for the other's next step. The successor's first
/// probe round is bounded well below this.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

/// The upgrade socket of a process whose admin socket is `admin`.
pub(crate) fn socket_path(admin: &Path) -> PathBuf {
    let mut p = admin.as_os_str().to_owned();
    p.push(".upgrade");
    PathBuf::from(p)
}

/// The successor's end of the conversation, between receiving the sockets and
/// taking over.
pub(crate) struct Predecessor {
    conn: UnixStream,
}

/// Connects to a running predecessor and receives its sockets and state.
pub(crate) async fn connect(path: &Path) -> anyhow::Result<(Predecessor, Arc<Inherited>)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let conn = UnixStream::connect(&path)
            .with_context(|| format!("connecting to the running process at {}", path.display()))?;
        conn.set_read_timeout(Some(STEP_TIMEOUT))?;
        conn.set_write_timeout(Some(STEP_TIMEOUT))?;
        handover::say(&conn, &format!("HELLO {}", handover::VERSION))?;
        let inherited = handover::receive(&conn).context("receiving the sockets")?;
        Ok((Predecessor { conn }, Arc::new(inherited)))
    })
    .await
    .context("handover task")?
}

impl Predecessor {
    /// Says READY and waits for the predecessor to have stopped accepting. An error
    /// means it did not confirm (it may have died): the caller takes over anyway,
    /// since it holds every listener.
    pub(crate) async fn take_over(self) -> anyhow::Result<()> {
        tokio::task::spawn_blocking(move || {
            handover::say(&self.conn, "READY")?;
            match handover::hear(&self.conn)? {
                Some(l) if l == "OK" => Ok(()),
                Some(other) => anyhow::bail!("the running process answered {other:?}"),
                None => anyhow::bail!("the running process closed the handover"),
            }
        })
        .await
        .context("handover task")?
    }
}

/// The predecessor's side, after a successor said HELLO: sends `manifest` and
/// `fds`, then waits for READY. `Ok(true)`: the successor is ready (answer with
/// [`confirm`] once accepting stopped); `Ok(false)`: it went away first.
pub(crate) fn offer(
    conn: &UnixStream,
    manifest: &Manifest,
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> Result<bool, handover::HandoverError> {
    conn.set_read_timeout(Some(STEP_TIMEOUT))?;
    conn.set_write_timeout(Some(STEP_TIMEOUT))?;
    match handover::hear(conn)? {
        Some(hello) if hello == format!("HELLO {}", handover::VERSION) => {}
        Some(other) => {
            return Err(handover::HandoverError::Protocol(format!(
                "expected HELLO {}, got {other:?}",
                handover::VERSION
            )))
        }
        None => return Ok(false),
    }
    handover::send(conn, manifest, fds)?;
    Ok(matches!(handover::hear(conn), Ok(Some(l)) if l == "READY"))
}

/// Tells the successor the predecessor has stopped accepting.
pub(crate) fn confirm(conn: &UnixStream) -> Result<(), handover::HandoverError> {
    handover::say(conn, "OK")
}

/// Starts this binary (the path it was started from, which after a package upgrade
/// holds the new version) as the successor of this process, detached into its own
/// process group; its output goes where this process's goes.
pub(crate) fn spawn_successor(
    exe: &Path,
    config: &Path,
    socket: &Path,
    log_json: bool,
) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .arg("--upgrade-from")
        .arg(socket)
        .process_group(0);
    if log_json {
        cmd.args(["--log-format", "json"]);
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    // Reap it when it exits (it outlives us in the normal case).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(pid)
}
