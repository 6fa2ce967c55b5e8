//! Datagram authentication for the gossip socket. chitchat has no authentication of
//! its own, and a forged view could vote a healthy site down, so every datagram is
//! framed as `"PTC1" | len | node id | HMAC-SHA256 tag | chitchat payload`, the tag
//! covering the cluster id, the sender's node id and the payload under the shared
//! secret. A frame that does not parse, names a node that is not a configured member,
//! or fails the tag (compared in constant time by `ring`) is dropped before chitchat
//! sees it. Replayed datagrams carry old versions, which chitchat's anti-entropy
//! ignores.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use ring::hmac;
use tokio::sync::watch;

/// Frame magic: Portico cluster, format 1.
const MAGIC: &[u8; 4] = b"PTC1";
/// Length of the HMAC-SHA256 tag.
const TAG_LEN: usize = 32;
/// The largest datagram read (the UDP payload limit).
const MAX_DATAGRAM: usize = 65_507;

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Too short, wrong magic or a node id that is not UTF-8.
    #[error("not a Portico cluster frame")]
    Malformed,
    /// A node id outside the configured member list.
    #[error("node {0:?} is not a configured member")]
    UnknownMember(String),
    /// The tag does not match: wrong secret, other cluster, or altered bytes.
    #[error("authentication tag does not match")]
    BadTag,
}

impl Rejected {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::UnknownMember(_) => "unknown_member",
            Rejected::BadTag => "bad_tag",
        }
    }
}

/// The keys and names one node seals and opens frames with.
pub struct Auth {
    key: hmac::Key,
    cluster_id: String,
    node: String,
    members: HashSet<String>,
}

impl Auth {
    /// `node` signs outgoing frames; frames from ids outside `members` are refused.
    pub fn new(secret: &[u8], cluster_id: &str, node: &str, members: HashSet<String>) -> Auth {
        Auth {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            cluster_id: cluster_id.to_string(),
            node: node.to_string(),
            members,
        }
    }

    fn tag(&self, node: &str, payload: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        // Length prefixes keep (cluster, node, payload) unambiguous.
        ctx.update(&(self.cluster_id.len() as u32).to_be_bytes());
        ctx.update(self.cluster_id.as_bytes());
        ctx.update(&(node.len() as u32).to_be_bytes());
        ctx.update(node.as_bytes());
        ctx.update(payload);
        ctx.sign()
    }

    /// Frames `payload` as sent by this node.
    pub fn seal(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(MAGIC);
        // Member ids are config identifiers of at most 64 bytes.
        out.push(self.node.len().min(255) as u8);
        out.extend_from_slice(&self.node.as_bytes()[..self.node.len().min(255)]);
        out.extend_from_slice(self.tag(&self.node, payload).as_ref());
        out.extend_from_slice(payload);
    }

    /// Checks a received frame; returns the sender's node id and the payload.
    pub fn open<'a>(&self, frame: &'a [u8]) -> Result<(&'a str, &'a [u8]), Rejected> {
        let rest = frame.strip_prefix(MAGIC).ok_or(Rejected::Malformed)?;
        let (&len, rest) = rest.split_first().ok_or(Rejected::Malformed)?;
        let len = usize::from(len);
        if rest.len() < len + TAG_LEN {
            return Err(Rejected::Malformed);
        }
        let (node, rest) = rest.split_at(len);
        let node = std::str::from_utf8(node).map_err(|_| Rejected::Malformed)?;
        if !self.members.contains(node) {
            return Err(Rejected::UnknownMember(node.to_string()));
        }
        let (tag, payload) = rest.split_at(TAG_LEN);
        let mut ctx_input =
            Vec::with_capacity(8 + self.cluster_id.len() + node.len() + payload.len());
        ctx_input.extend_from_slice(&(self.cluster_id.len() as u32).to_be_bytes());
        ctx_input.extend_from_slice(self.cluster_id.as_bytes());
        ctx_input.extend_from_slice(&(node.len() as u32).to_be_bytes());
        ctx_input.extend_from_slice(node.as_bytes());
        ctx_input.extend_from_slice(payload);
        hmac::verify(&self.key, &ctx_input, tag).map_err(|_| Rejected::BadTag)?;
        Ok((node, payload))
    }
}

/// chitchat's UDP transport with every datagram sealed and opened by [`Auth`].
pub struct AuthTransport {
    auth: Arc<Auth>,
    rejected: Arc<AtomicU64>,
    bound: std::sync::Mutex<Option<std::net::UdpSocket>>,
    live: Option<watch::Receiver<bool>>,
}

impl AuthTransport {
    /// `rejected` counts every dropped datagram (for `show cluster` and tests).
    pub fn new(auth: Arc<Auth>, rejected: Arc<AtomicU64>) -> AuthTransport {
        AuthTransport {
            auth,
            rejected,
            bound: std::sync::Mutex::new(None),
            live: None,
        }
    }

    /// Opens on `socket` (already bound, non-blocking) instead of binding: the
    /// gossip socket a predecessor handed over, or one bound early so its
    /// descriptor can be handed over later.
    pub fn with_socket(mut self, socket: std::net::UdpSocket) -> AuthTransport {
        self.bound = std::sync::Mutex::new(Some(socket));
        self
    }

    /// Neither sends nor reads a datagram until `live` turns true: a successor
    /// shares the socket with its predecessor until the handover, and must not
    /// speak for the node before it has taken over the node's heartbeat.
    pub fn gated(mut self, live: watch::Receiver<bool>) -> AuthTransport {
        self.live = Some(live);
        self
    }
}

#[async_trait]
impl Transport for AuthTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let preset = crate::sync::lock(&self.bound).take();
        let socket = match preset {
            Some(s) => tokio::net::UdpSocket::from_std(s)?,
            None => tokio::net::UdpSocket::bind(listen_addr).await?,
        };
        Ok(Box::new(AuthSocket {
            socket,
            auth: self.auth.clone(),
            rejected: self.rejected.clone(),
            live: self.live.clone(),
            payload: Vec::new(),
            frame: Vec::new(),
            buf: vec![0u8; MAX_DATAGRAM].into_boxed_slice(),
        }))
    }
}

struct AuthSocket {
    socket: tokio::net::UdpSocket,
    auth: Arc<Auth>,
    rejected: Arc<AtomicU64>,
    live: Option<watch::Receiver<bool>>,
    payload: Vec<u8>,
    frame: Vec<u8>,
    buf: Box<[u8]>,
}

impl AuthSocket {
    /// Waits until the socket may be used (at once unless gated).
    async fn until_live(&mut self) {
        if let Some(live) = &mut self.live {
            // A dropped sender means the cluster is going away: nothing to wait for.
            let _ = live.wait_for(|l| *l).await;
            self.live = None;
        }
    }
}

#[async_trait]
impl Socket for AuthSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.until_live().await;
        self.payload.clear();
        msg.serialize(&mut self.payload);
        self.auth.seal(&self.payload, &mut self.frame);
        if let Err(e) = self.socket.send_to(&self.frame, to).await {
            // A peer across a cut link is unreachable; that is not a broken socket.
            tracing::debug!(%to, error = %e, "cluster: send failed");
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        self.until_live().await;
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "cluster: recv error");
                    continue;
                }
            };
            let frame = &self.buf[..len];
            let payload = match self.auth.open(frame) {
                Ok((_, payload)) => payload,
                Err(why) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("portico_cluster_rejected_datagrams_total", "reason" => why.kind())
                        .increment(1);
                    tracing::debug!(%from, reason = %why, "cluster: datagram dropped");
                    continue;
                }
            };
            let mut p = payload;
            match ChitchatMessage::deserialize(&mut p) {
                Ok(msg) => return Ok((from, msg)),
                Err(e) => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%from, error = %e, "cluster: authenticated but unparsable datagram");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: &[u8], node: &str) -> Auth {
        Auth::new(
            secret,
            "lab",
            node,
            ["a", "b"].iter().map(|s| s.to_string()).collect(),
        )
    }

    #[test]
    fn a_sealed_frame_opens_with_the_same_secret() {
        let mut f = Vec::new();
        auth(b"0123456789abcdef", "a").seal(b"hello", &mut f);
        let b = auth(b"0123456789abcdef", "b");
        assert_eq!(b.open(&f), Ok(("a", &b"hello"[..])));
    }

    /// The wire format, computed independently (Python's hmac module): "PTC1", id
    /// length, id, HMAC-SHA256(secret, be32 len "lab" | "lab" | be32 len "a" | "a" |
    /// payload), payload.
    #[test]
    fn the_frame_format_is_stable() {
        let hex = "505443310161ad84dda6f28171818fb93d54c3778de9d415c173ef2afdd91efefc915478513468656c6c6f";
        let frame: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let mut ours = Vec::new();
        auth(b"0123456789abcdef", "a").seal(b"hello", &mut ours);
        assert_eq!(ours, frame);
        assert_eq!(
            auth(b"0123456789abcdef", "b").open(&frame),
            Ok(("a", &b"hello"[..]))
        );
    }

    #[test]
    fn wrong_secret_other_cluster_altered_bytes_and_strangers_are_rejected() {
        let b = auth(b"0123456789abcdef", "b");
        let mut f = Vec::new();
        auth(b"another secret!!", "a").seal(b"hello", &mut f);
        assert_eq!(b.open(&f), Err(Rejected::BadTag));

        Auth::new(b"0123456789abcdef", "other", "a", HashSet::new()).seal(b"hello", &mut f);
        assert_eq!(b.open(&f), Err(Rejected::BadTag));

        auth(b"0123456789abcdef", "a").seal(b"hello", &mut f);
        let last = f.len() - 1;
        f[last] ^= 1;
        assert_eq!(b.open(&f), Err(Rejected::BadTag));

        // A member spoofing another's id fails the tag only if the secret differs;
        // a node id outside the list is refused before the tag is even checked.
        auth(b"0123456789abcdef", "mallory").seal(b"hello", &mut f);
        assert_eq!(b.open(&f), Err(Rejected::UnknownMember("mallory".into())));

        for junk in [&b""[..], b"PTC1", b"PTC1\x05ab", b"XXXX\x01a"] {
            assert_eq!(b.open(junk), Err(Rejected::Malformed), "{junk:?}");
        }
    }
}
