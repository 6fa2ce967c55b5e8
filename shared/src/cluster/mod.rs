//! The cluster layer: membership, failure detection and authenticated exchange of
//! small per-node key/value state between Portico nodes, on `chitchat` (scuttlebutt
//! anti-entropy over UDP, phi-accrual failure detection).
//!
//! It knows no role. A node publishes its own keys ([`Cluster::publish`]); every
//! node sees every live member's keys with the time they were last heard from
//! ([`Cluster::watch`]). Keys are namespaced by their user (`view/<site>` for the
//! gss; `intent/...` and `applied/...` for the fleet, see [`crate::fleet`]), and each
//! node writes only its own keys, so there are no write conflicts to resolve.
//!
//! "Last contact" is measured here, on this node's monotonic clock: the moment a
//! member's heartbeat (bumped by chitchat on every gossip round it takes part in)
//! was last seen to advance. A frozen or partitioned member's contact ages even
//! while chitchat still holds its last keys, which is what lets a voter's views go
//! stale.

mod auth;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::os::fd::{AsFd, OwnedFd};

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use auth::{Auth, AuthTransport, Rejected};

use crate::config::ClusterConfig;
use crate::handover::{CarriedCluster, CarriedPeer, SocketEntry, SocketKind};

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET: usize = 16;

/// Why the cluster layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The secret file is unreadable or too short.
    #[error("cluster secret {path}: {reason}")]
    Secret {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The gossip socket could not be opened.
    #[error("cluster: cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        reason: String,
    },
}

impl ClusterError {
    /// The reason without the path (for `portico check`, which names the file itself).
    pub fn reason(&self) -> String {
        match self {
            ClusterError::Secret { reason, .. } | ClusterError::Listen { reason, .. } => {
                reason.clone()
            }
        }
    }
}

/// Reads a shared secret: the file's bytes without a trailing newline, at least
/// [`MIN_SECRET`] of them.
pub fn load_secret(path: &Path) -> Result<Vec<u8>, ClusterError> {
    let err = |reason: String| ClusterError::Secret {
        path: path.display().to_string(),
        reason,
    };
    let mut bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET {
        return Err(err(format!(
            "secret is {} bytes; use at least {MIN_SECRET} (e.g. `openssl rand -hex 32 > FILE`)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// What this node knows of one member.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberView {
    /// Member id.
    pub id: String,
    /// Configured address.
    pub address: SocketAddr,
    /// This node.
    pub is_self: bool,
    /// The failure detector's verdict (this node is always alive).
    pub alive: bool,
    /// When its heartbeat last advanced, on this node's clock; `None` if never heard.
    pub last_contact: Option<Instant>,
    /// Its keys as last received (this node: as published).
    pub keys: BTreeMap<String, String>,
}

impl MemberView {
    /// Time since last contact (zero for this node, `None` if never heard).
    pub fn age(&self, now: Instant) -> Option<Duration> {
        if self.is_self {
            return Some(Duration::ZERO);
        }
        self.last_contact.map(|t| now.saturating_duration_since(t))
    }
}

/// Every configured member, in config order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterView {
    /// Members, this node included.
    pub members: Vec<MemberView>,
}

impl ClusterView {
    /// The member with this id.
    pub fn member(&self, id: &str) -> Option<&MemberView> {
        self.members.iter().find(|m| m.id == id)
    }
}

/// A running cluster membership.
pub struct Cluster {
    cfg: ClusterConfig,
    desired: watch::Sender<BTreeMap<String, String>>,
    view: watch::Receiver<ClusterView>,
    handle: tokio::sync::Mutex<Option<ChitchatHandle>>,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    /// A second descriptor of the gossip socket, for a successor.
    socket: OwnedFd,
    local: SocketAddr,
    generation: u64,
    /// False while a successor waits to take over: it neither gossips nor pushes
    /// keys until [`Cluster::resume`].
    live: watch::Sender<bool>,
    cancel: CancellationToken,
    rejected: Arc<AtomicU64>,
    started: SystemTime,
}

/// How far above the predecessor's heartbeat and key versions (as of the manifest)
/// a successor starts: the predecessor keeps gossiping until the handover, a few
/// increments per second at most, and peers only compare these numbers.
const RESUME_MARGIN: u64 = 1_000_000;

impl Cluster {
    /// Reads the secret, binds the gossip socket and starts gossiping with the
    /// configured members.
    pub async fn start(cfg: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        Cluster::start_with(cfg, None, None).await
    }

    /// As [`Cluster::start`], for a successor after a binary upgrade: `socket` is
    /// the gossip socket handed over, `carried` the node's identity and what it
    /// knew of its peers. With both, the node keeps its gossip identity and stays
    /// silent until [`Cluster::resume`], voting meanwhile with the carried peer
    /// views; without, it starts as a new generation.
    pub async fn start_with(
        cfg: &ClusterConfig,
        socket: Option<std::net::UdpSocket>,
        carried: Option<&CarriedCluster>,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let secret = load_secret(&cfg.secret_file)?;
        let members: HashSet<String> = cfg.members.iter().map(|m| m.id.clone()).collect();
        let auth = Arc::new(Auth::new(&secret, &cfg.id, &cfg.node, members));
        let rejected = Arc::new(AtomicU64::new(0));
        let listen_err = |e: std::io::Error| ClusterError::Listen {
            addr: cfg.listen,
            reason: e.to_string(),
        };
        let carried = carried.filter(|c| socket.is_some() && c.node == cfg.node);
        let socket = match socket {
            Some(s) => s,
            None => {
                let s = std::net::UdpSocket::bind(cfg.listen).map_err(listen_err)?;
                s.set_nonblocking(true).map_err(listen_err)?;
                s
            }
        };
        let local = socket.local_addr().map_err(listen_err)?;
        let dup = socket.as_fd().try_clone_to_owned().map_err(listen_err)?;
        let (live, live_rx) = watch::channel(carried.is_none());
        let transport = AuthTransport::new(auth, rejected.clone())
            .with_socket(socket)
            .gated(live_rx.clone());
        let advertise = cfg
            .members
            .iter()
            .find(|m| m.id == cfg.node)
            .map(|m| m.address)
            .unwrap_or(cfg.listen);
        // A restarted node is a new generation, so peers drop what its old self
        // said; an upgraded one is the same node and keeps its generation.
        let generation = match carried {
            Some(c) => c.generation,
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        let chitchat_cfg = ChitchatConfig {
            chitchat_id: ChitchatId::new(cfg.node.clone(), generation, advertise),
            cluster_id: cfg.id.clone(),
            gossip_interval: cfg.gossip_interval,
            listen_addr: cfg.listen,
            seed_nodes: cfg
                .members
                .iter()
                .filter(|m| m.id != cfg.node)
                .map(|m| m.address.to_string())
                .collect(),
            failure_detector_config: FailureDetectorConfig {
                initial_interval: cfg.gossip_interval,
                max_interval: cfg.stale_after.max(cfg.gossip_interval * 4),
                dead_node_grace_period: Duration::from_secs(3600),
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let handle = spawn_chitchat(chitchat_cfg, Vec::new(), &transport)
            .await
            .map_err(|e| ClusterError::Listen {
                addr: cfg.listen,
                reason: format!("{e:#}"),
            })?;
        let chitchat = handle.chitchat();
        if let Some(c) = carried {
            // Before any datagram (the socket is gated): from its first gossip on,
            // peers see this node's heartbeat and versions go on growing.
            let mut cc = chitchat.lock().await;
            let me = cc.self_node_state();
            if let Ok(hb) = serde_json::from_value::<chitchat::Heartbeat>(serde_json::Value::from(
                c.heartbeat.saturating_add(RESUME_MARGIN),
            )) {
                me.try_set_heartbeat(hb);
            }
            let floor = c.max_version.saturating_add(RESUME_MARGIN);
            if me.max_version() < floor {
                me.set_max_version(floor);
            }
        }
        let now = Instant::now();
        let fallback: Vec<MemberView> = carried
            .map(|c| {
                c.peers
                    .iter()
                    .filter_map(|p| {
                        let m = cfg
                            .members
                            .iter()
                            .find(|m| m.id == p.id && m.id != cfg.node)?;
                        Some(MemberView {
                            id: p.id.clone(),
                            address: m.address,
                            is_self: false,
                            alive: p.alive,
                            last_contact: p
                                .age_ms
                                .and_then(|a| now.checked_sub(Duration::from_millis(a))),
                            keys: p.keys.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (desired, desired_rx) = watch::channel(BTreeMap::new());
        let (view_tx, view) = watch::channel(ClusterView::default());
        let cancel = CancellationToken::new();
        tokio::spawn(poll_loop(
            cfg.clone(),
            chitchat.clone(),
            desired_rx,
            view_tx,
            live_rx,
            fallback,
            cancel.clone(),
        ));
        tracing::info!(node = %cfg.node, listen = %cfg.listen, members = cfg.members.len(), carried = carried.is_some(), "cluster started");
        Ok(Arc::new(Cluster {
            cfg: cfg.clone(),
            desired,
            view,
            handle: tokio::sync::Mutex::new(Some(handle)),
            chitchat,
            socket: dup,
            local,
            generation,
            live,
            cancel,
            rejected,
            started: SystemTime::now(),
        }))
    }

    /// A successor has taken over: gossip starts (as the same node, if it carried
    /// the identity) and the published keys go out.
    pub fn resume(&self) {
        self.live.send_replace(true);
    }

    /// The gossip socket for a successor: its handover entry and a descriptor.
    pub fn handover_socket(&self) -> std::io::Result<(SocketEntry, OwnedFd)> {
        Ok((
            SocketEntry {
                role: "cluster".to_string(),
                kind: SocketKind::Udp,
                configured: self.cfg.listen,
                local: self.local,
            },
            self.socket.try_clone()?,
        ))
    }

    /// What a successor needs to go on as this node.
    pub async fn carry(&self) -> CarriedCluster {
        let (heartbeat, max_version) = {
            let mut cc = self.chitchat.lock().await;
            let me = cc.self_node_state();
            (u64::from(me.heartbeat()), me.max_version())
        };
        let now = Instant::now();
        let peers = self
            .view
            .borrow()
            .members
            .iter()
            .filter(|m| !m.is_self)
            .map(|m| CarriedPeer {
                id: m.id.clone(),
                alive: m.alive,
                age_ms: m.age(now).map(|a| a.as_millis() as u64),
                keys: m.keys.clone(),
            })
            .collect();
        CarriedCluster {
            node: self.cfg.node.clone(),
            generation: self.generation,
            heartbeat,
            max_version,
            peers,
        }
    }

    /// The config it runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// Sets one of this node's keys; peers see it within a gossip round or two.
    pub fn publish(&self, key: &str, value: String) {
        self.desired.send_if_modified(|keys| {
            if keys.get(key) == Some(&value) {
                return false;
            }
            keys.insert(key.to_string(), value);
            true
        });
    }

    /// Replaces every one of this node's keys that starts with `prefix` by `keys`
    /// (full keys, each starting with `prefix`): keys no longer given are deleted.
    pub fn publish_prefix(&self, prefix: &str, keys: BTreeMap<String, String>) {
        self.desired.send_if_modified(|mine| {
            let old: BTreeMap<&String, &String> =
                mine.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
            let new: BTreeMap<&String, &String> = keys.iter().collect();
            if old == new {
                return false;
            }
            mine.retain(|k, _| !k.starts_with(prefix));
            mine.extend(keys.into_iter().filter(|(k, _)| k.starts_with(prefix)));
            true
        });
    }

    /// What this node knows of every member, refreshed a few times per gossip interval.
    pub fn watch(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Datagrams dropped by authentication so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// `show cluster` lines: one per member (id, address, state, last contact), then
    /// the count of rejected datagrams.
    pub fn show(&self) -> Vec<String> {
        let now = Instant::now();
        let view = self.view.borrow().clone();
        let mut lines: Vec<String> = view
            .members
            .iter()
            .map(|m| {
                let state = if m.is_self {
                    "self"
                } else if m.last_contact.is_none() {
                    "unknown"
                } else if m.alive {
                    "alive"
                } else {
                    "dead"
                };
                let contact = match m.age(now) {
                    _ if m.is_self => "-".to_string(),
                    Some(a) => format!("{:.1}s ago", a.as_secs_f64()),
                    None => "never".to_string(),
                };
                let pod = self
                    .cfg
                    .members
                    .iter()
                    .find(|c| c.id == m.id)
                    .and_then(|c| c.pod.as_deref())
                    .map(|p| format!(" pod {p}"))
                    .unwrap_or_default();
                format!(
                    "{} {} {} last_contact {} keys {}{pod}",
                    m.id,
                    m.address,
                    state,
                    contact,
                    m.keys.len()
                )
            })
            .collect();
        lines.push(format!(
            "cluster {} node {} stale_after {} rejected_datagrams {} up since {}",
            self.cfg.id,
            self.cfg.node,
            humantime::format_duration(self.cfg.stale_after),
            self.rejected(),
            humantime::format_rfc3339_seconds(self.started)
        ));
        lines
    }

    /// Stops gossiping.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        if let Some(h) = self.handle.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), h.shutdown()).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Ok(mut h) = self.handle.try_lock() {
            if let Some(h) = h.take() {
                h.abort();
            }
        }
    }
}

/// How often the keys are pushed into chitchat and the view rebuilt.
fn poll_period(cfg: &ClusterConfig) -> Duration {
    (cfg.gossip_interval / 4).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

/// Pushes the desired keys into chitchat (once live) and rebuilds the view. A
/// member chitchat has not heard of yet shows as in `fallback` (what a predecessor
/// knew of it), so a successor's votes do not drop out while its gossip starts.
async fn poll_loop(
    cfg: ClusterConfig,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    mut desired: watch::Receiver<BTreeMap<String, String>>,
    view_tx: watch::Sender<ClusterView>,
    mut live: watch::Receiver<bool>,
    fallback: Vec<MemberView>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(poll_period(&cfg));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Per member: (generation, heartbeat) last seen and when it advanced.
    let mut seen: HashMap<String, ((u64, u64), Instant)> = HashMap::new();
    let mut published: BTreeMap<String, String> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            r = desired.changed() => if r.is_err() { return },
            r = live.changed() => if r.is_err() { return },
        }
        let is_live = *live.borrow_and_update();
        let want = desired.borrow_and_update().clone();
        let now = Instant::now();
        let mut cc = chitchat.lock().await;
        if is_live && want != published {
            let me = cc.self_node_state();
            for (k, v) in &want {
                if published.get(k) != Some(v) {
                    me.set(k, v);
                }
            }
            for k in published.keys() {
                if !want.contains_key(k) {
                    me.delete(k);
                }
            }
            published = want.clone();
        }
        let live: HashSet<String> = cc.live_nodes().map(|id| id.node_id.clone()).collect();
        // The newest generation of each configured member.
        let mut latest: HashMap<&str, (&ChitchatId, &chitchat::NodeState)> = HashMap::new();
        for (id, state) in cc.node_states() {
            let Some(m) = cfg.members.iter().find(|m| m.id == id.node_id) else {
                continue;
            };
            if m.id == cfg.node {
                continue;
            }
            match latest.get(m.id.as_str()) {
                Some((old, _)) if old.generation_id >= id.generation_id => {}
                _ => {
                    latest.insert(m.id.as_str(), (id, state));
                }
            }
        }
        let members = cfg
            .members
            .iter()
            .map(|m| {
                if m.id == cfg.node {
                    return MemberView {
                        id: m.id.clone(),
                        address: m.address,
                        is_self: true,
                        alive: true,
                        last_contact: Some(now),
                        keys: want.clone(),
                    };
                }
                let (keys, last_contact) = match latest.get(m.id.as_str()) {
                    Some((id, state)) => {
                        let hb = (id.generation_id, u64::from(state.heartbeat()));
                        let entry = seen.entry(m.id.clone()).or_insert((hb, now));
                        if entry.0 != hb {
                            *entry = (hb, now);
                        }
                        let keys = state
                            .key_values()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        (keys, Some(entry.1))
                    }
                    None => {
                        if let Some(f) = fallback.iter().find(|f| f.id == m.id) {
                            return f.clone();
                        }
                        (BTreeMap::new(), None)
                    }
                };
                MemberView {
                    id: m.id.clone(),
                    address: m.address,
                    is_self: false,
                    alive: live.contains(&m.id) && last_contact.is_some(),
                    last_contact,
                    keys,
                }
            })
            .collect();
        drop(cc);
        view_tx.send_replace(ClusterView { members });
    }
}
