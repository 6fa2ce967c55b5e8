//! Binary upgrade without a gap: the running process hands every listening socket
//! (VIPs, DNS UDP and TCP, the status listener, the cluster's gossip socket) to its
//! successor over a Unix socket with `SCM_RIGHTS`, together with what the successor
//! should carry over (admin state and health per backend, site overrides, the
//! node's cluster identity). The sockets are the same kernel objects, so
//! connections queued while the processes change hands wait in the backlog instead
//! of being refused.
//!
//! The conversation, on one Unix stream connection the successor opens:
//!
//! 1. successor: `HELLO 1\n`
//! 2. predecessor: a 4-byte big-endian length and a JSON [`Manifest`], then the
//!    sockets in [`Manifest::sockets`] order, up to [`FDS_PER_MESSAGE`] per message
//!    (each message one payload byte with the descriptors attached)
//! 3. successor (probes run, first verdicts in, nothing accepted yet): `READY\n`
//! 4. predecessor (has stopped accepting; it drains and exits): `OK\n`
//!
//! If the successor goes away before step 3 the predecessor never stopped: a failed
//! upgrade leaves the old process serving.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// The protocol version both sides must speak.
pub const VERSION: u32 = 1;
/// Descriptors attached to one message (the kernel's limit is 253).
pub const FDS_PER_MESSAGE: usize = 200;
/// Largest manifest accepted (a config with thousands of backends fits easily).
const MAX_MANIFEST: u32 = 16 << 20;

/// What kind of socket a handed-over descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    /// A listening TCP socket.
    Tcp,
    /// A bound UDP socket.
    Udp,
}

/// One handed-over socket: the successor finds it by the address its config asks
/// for (`configured`, which may have port 0 in tests) and the role that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketEntry {
    /// `vip`, `dns`, `status` or `cluster`.
    pub role: String,
    /// TCP listener or UDP socket.
    pub kind: SocketKind,
    /// The address in the config.
    pub configured: SocketAddr,
    /// The address it is bound to.
    pub local: SocketAddr,
}

/// A backend's state as the predecessor knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedBackend {
    /// VIP name.
    pub vip: String,
    /// Backend name.
    pub backend: String,
    /// Active-check health: `Some(true)` up, `Some(false)` down, `None` unknown.
    pub health: Option<bool>,
    /// `ready`, `drain` or `maint`.
    pub admin: String,
    /// Weight in force (the operator may have changed it).
    pub weight: u32,
}

/// A site's operator override as the predecessor knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedSite {
    /// Site name.
    pub name: String,
    /// `up`, `down`, or `None` for no override.
    pub override_state: Option<String>,
}

/// A cluster member as the predecessor last knew it, so the successor votes with
/// the same peer views until its own gossip has heard from that peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedPeer {
    /// Member id.
    pub id: String,
    /// The failure detector's verdict.
    pub alive: bool,
    /// Milliseconds since its heartbeat last advanced; `None` if never heard.
    pub age_ms: Option<u64>,
    /// Its keys as last received.
    pub keys: std::collections::BTreeMap<String, String>,
}

/// What the successor needs to go on as the same cluster member: peers see one
/// node whose heartbeat and key versions keep growing, not a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedCluster {
    /// This node's member id (the successor carries it only if its config agrees).
    pub node: String,
    /// The gossip generation the node announced itself with.
    pub generation: u64,
    /// Its heartbeat when the manifest was written.
    pub heartbeat: u64,
    /// The highest version of its keys when the manifest was written.
    pub max_version: u64,
    /// Every other member as last known.
    pub peers: Vec<CarriedPeer>,
}

/// State the successor starts from instead of from nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// Every backend of every VIP.
    pub backends: Vec<CarriedBackend>,
    /// Every site of the gss.
    pub sites: Vec<CarriedSite>,
    /// The cluster membership, with `[cluster]` (absent from older predecessors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<CarriedCluster>,
}

/// The predecessor's description of what it hands over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`VERSION`].
    pub version: u32,
    /// One entry per descriptor, in sending order.
    pub sockets: Vec<SocketEntry>,
    /// State to carry over.
    pub carried: Carried,
}

/// What went wrong in a handover, and on which side.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// Reading from or writing to the other process failed; the other side may
    /// have died. Retrying the upgrade is safe: nothing was stopped.
    #[error("handover connection: {0}")]
    Io(#[from] std::io::Error),
    /// The other side said something outside the protocol.
    #[error("handover protocol: {0}")]
    Protocol(String),
    /// The two binaries speak different handover versions.
    #[error("handover version {theirs} is not {ours}; restart instead of upgrading")]
    Version {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
}

/// Sends `manifest` and `fds` (one per [`Manifest::sockets`] entry, same order).
pub fn send(
    stream: &UnixStream,
    manifest: &Manifest,
    fds: &[BorrowedFd<'_>],
) -> Result<(), HandoverError> {
    if fds.len() != manifest.sockets.len() {
        return Err(HandoverError::Protocol(format!(
            "{} descriptors for {} manifest entries",
            fds.len(),
            manifest.sockets.len()
        )));
    }
    let json = serde_json::to_vec(manifest).map_err(|e| HandoverError::Protocol(e.to_string()))?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|l| *l <= MAX_MANIFEST)
        .ok_or_else(|| HandoverError::Protocol("manifest too large".into()))?;
    let mut w = stream;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&json)?;
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(chunk)) {
            return Err(HandoverError::Protocol(
                "descriptor batch does not fit".into(),
            ));
        }
        sendmsg(
            stream,
            &[IoSlice::new(b"F")],
            &mut control,
            SendFlags::empty(),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Receives a manifest and its descriptors (the successor's side of step 2).
pub fn receive(stream: &UnixStream) -> Result<Inherited, HandoverError> {
    let mut r = stream;
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MANIFEST {
        return Err(HandoverError::Protocol(format!("manifest of {len} bytes")));
    }
    let mut json = vec![0u8; len as usize];
    r.read_exact(&mut json)?;
    let manifest = parse_manifest(&json)?;
    let mut fds: Vec<OwnedFd> = Vec::with_capacity(manifest.sockets.len());
    while fds.len() < manifest.sockets.len() {
        let mut space =
            vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut byte = [0u8; 1];
        let got = recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        if got.bytes == 0 {
            return Err(HandoverError::Protocol(format!(
                "closed after {} of {} descriptors",
                fds.len(),
                manifest.sockets.len()
            )));
        }
        let before = fds.len();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = msg {
                fds.extend(rights);
            }
        }
        if fds.len() == before {
            return Err(HandoverError::Protocol(
                "a message without descriptors".into(),
            ));
        }
    }
    if fds.len() != manifest.sockets.len() {
        return Err(HandoverError::Protocol(format!(
            "{} descriptors for {} entries",
            fds.len(),
            manifest.sockets.len()
        )));
    }
    let entries = manifest
        .sockets
        .into_iter()
        .zip(fds.into_iter().map(Some))
        .collect();
    Ok(Inherited {
        entries: Mutex::new(entries),
        carried: manifest.carried,
    })
}

/// Parses the manifest's JSON (the bytes after its length prefix): the other side
/// is another process, so anything it sends is an error or a manifest of our
/// version, never a panic.
pub fn parse_manifest(json: &[u8]) -> Result<Manifest, HandoverError> {
    let manifest: Manifest =
        serde_json::from_slice(json).map_err(|e| HandoverError::Protocol(e.to_string()))?;
    if manifest.version != VERSION {
        return Err(HandoverError::Version {
            ours: VERSION,
            theirs: manifest.version,
        });
    }
    Ok(manifest)
}

/// Writes one protocol line (`HELLO 1`, `READY`, `OK`).
pub fn say(stream: &UnixStream, line: &str) -> Result<(), HandoverError> {
    let mut w = stream;
    w.write_all(line.as_bytes())?;
    w.write_all(b"\n")?;
    Ok(())
}

/// Reads one protocol line, bounded in length; `None` when the other side closed.
pub fn hear(stream: &UnixStream) -> Result<Option<String>, HandoverError> {
    let mut line = String::new();
    let n = BufReader::new(stream.take(128)).read_line(&mut line)?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(line.trim_end().to_string()))
}

/// The successor's view of what it received: sockets to take by address, and the
/// state to start from.
#[derive(Debug)]
pub struct Inherited {
    entries: Mutex<Vec<(SocketEntry, Option<OwnedFd>)>>,
    /// State the predecessor carried over.
    pub carried: Carried,
}

impl Inherited {
    /// Nothing inherited (a plain start).
    pub fn none() -> Inherited {
        Inherited {
            entries: Mutex::new(Vec::new()),
            carried: Carried::default(),
        }
    }

    fn take(&self, role: &str, kind: SocketKind, configured: SocketAddr) -> Vec<OwnedFd> {
        let mut entries = crate::sync::lock(&self.entries);
        entries
            .iter_mut()
            .filter(|(e, _)| e.role == role && e.kind == kind && e.configured == configured)
            .filter_map(|(_, fd)| fd.take())
            .collect()
    }

    /// The listening socket `role` had on `configured`, if it was handed over.
    pub fn take_tcp(&self, role: &str, configured: SocketAddr) -> Option<std::net::TcpListener> {
        let fd = self
            .take(role, SocketKind::Tcp, configured)
            .into_iter()
            .next()?;
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true).ok()?;
        Some(l)
    }

    /// Every listening socket `role` had on `configured`, in the order they were
    /// handed over (several with `SO_REUSEPORT`: an lb VIP has one per data-path
    /// worker). All are taken: one left behind would close, resetting the clients
    /// the kernel queued on it.
    pub fn take_tcp_all(&self, role: &str, configured: SocketAddr) -> Vec<std::net::TcpListener> {
        self.take(role, SocketKind::Tcp, configured)
            .into_iter()
            .map(std::net::TcpListener::from)
            .filter(|l| l.set_nonblocking(true).is_ok())
            .collect()
    }

    /// The UDP sockets `role` had on `configured` (several with `SO_REUSEPORT`).
    pub fn take_udp(&self, role: &str, configured: SocketAddr) -> Vec<std::net::UdpSocket> {
        self.take(role, SocketKind::Udp, configured)
            .into_iter()
            .map(std::net::UdpSocket::from)
            .filter(|s| s.set_nonblocking(true).is_ok())
            .collect()
    }

    /// Sockets handed over that no role took (their config changed with the
    /// upgrade); they close when this is dropped.
    pub fn untaken(&self) -> Vec<SocketEntry> {
        let entries = crate::sync::lock(&self.entries);
        entries
            .iter()
            .filter(|(_, fd)| fd.is_some())
            .map(|(e, _)| e.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn entry(role: &str, kind: SocketKind, addr: SocketAddr) -> SocketEntry {
        SocketEntry {
            role: role.into(),
            kind,
            configured: addr,
            local: addr,
        }
    }

    #[test]
    fn listening_sockets_cross_to_the_other_side_and_keep_their_queue() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let (ta, ua) = (tcp.local_addr().expect("a"), udp.local_addr().expect("a"));
        // A client queued before the handover is accepted after it.
        let queued = std::net::TcpStream::connect(ta).expect("connect");
        let manifest = Manifest {
            version: VERSION,
            sockets: vec![
                entry("vip", SocketKind::Tcp, ta),
                entry("dns", SocketKind::Udp, ua),
            ],
            carried: Carried {
                backends: vec![CarriedBackend {
                    vip: "smtp".into(),
                    backend: "mx1".into(),
                    health: Some(true),
                    admin: "drain".into(),
                    weight: 3,
                }],
                sites: vec![],
                cluster: None,
            },
        };
        let (old, new) = UnixStream::pair().expect("pair");
        send(&old, &manifest, &[tcp.as_fd(), udp.as_fd()]).expect("send");
        drop((tcp, udp));
        let got = receive(&new).expect("receive");
        assert_eq!(got.carried, manifest.carried);
        assert!(got.take_tcp("dns", ta).is_none(), "found by role");
        let l = got.take_tcp("vip", ta).expect("the listener");
        l.set_nonblocking(false).expect("blocking");
        let (_s, peer) = l.accept().expect("the queued client");
        assert_eq!(peer, queued.local_addr().expect("addr"));
        assert!(got.take_tcp("vip", ta).is_none(), "taken once");
        let u = got.take_udp("dns", ua);
        assert_eq!(u.len(), 1);
        assert!(got.untaken().is_empty());
    }

    #[test]
    fn more_sockets_than_one_message_holds() {
        let socks: Vec<std::net::UdpSocket> = (0..FDS_PER_MESSAGE + 5)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let manifest = Manifest {
            version: VERSION,
            sockets: socks
                .iter()
                .map(|s| entry("dns", SocketKind::Udp, s.local_addr().expect("a")))
                .collect(),
            carried: Carried::default(),
        };
        let (old, new) = UnixStream::pair().expect("pair");
        let fds: Vec<BorrowedFd<'_>> = socks.iter().map(|s| s.as_fd()).collect();
        let sender = std::thread::scope(|scope| {
            let h = scope.spawn(|| send(&old, &manifest, &fds));
            let got = receive(&new);
            (h.join().expect("join"), got)
        });
        sender.0.expect("sent");
        let got = sender.1.expect("received");
        assert_eq!(got.untaken().len(), FDS_PER_MESSAGE + 5);
    }

    #[test]
    fn a_manifest_without_cluster_state_parses_and_cluster_state_round_trips() {
        let older = br#"{"version":1,"sockets":[],"carried":{"backends":[],"sites":[]}}"#;
        assert_eq!(
            parse_manifest(older).expect("older manifest").carried,
            Carried::default()
        );
        let m = Manifest {
            version: VERSION,
            sockets: vec![],
            carried: Carried {
                cluster: Some(CarriedCluster {
                    node: "b".into(),
                    generation: 1_700_000_000_000,
                    heartbeat: 42,
                    max_version: 7,
                    peers: vec![CarriedPeer {
                        id: "a".into(),
                        alive: true,
                        age_ms: Some(120),
                        keys: [("view/dc1".to_string(), "{}".to_string())].into(),
                    }],
                }),
                ..Carried::default()
            },
        };
        let json = serde_json::to_vec(&m).expect("json");
        assert_eq!(parse_manifest(&json).expect("parses"), m);
    }

    #[test]
    fn garbage_and_other_versions_are_refused() {
        let (a, b) = UnixStream::pair().expect("pair");
        (&a).write_all(&5u32.to_be_bytes()).expect("w");
        (&a).write_all(b"nope!").expect("w");
        assert!(matches!(receive(&b), Err(HandoverError::Protocol(_))));

        let (a, b) = UnixStream::pair().expect("pair");
        let m = Manifest {
            version: VERSION + 1,
            sockets: vec![],
            carried: Carried::default(),
        };
        send(&a, &m, &[]).expect("send");
        assert!(matches!(receive(&b), Err(HandoverError::Version { .. })));

        let (a, b) = UnixStream::pair().expect("pair");
        (&a).write_all(&u32::MAX.to_be_bytes()).expect("w");
        assert!(matches!(receive(&b), Err(HandoverError::Protocol(_))));
        drop(a);
        let (a, b) = UnixStream::pair().expect("pair");
        drop(a);
        assert!(matches!(receive(&b), Err(HandoverError::Io(_))));
        assert!(hear(&b).expect("eof").is_none());
    }
}
