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

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use auth::{Auth, AuthTransport, Rejected};

use crate::config::ClusterConfig;

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
    cancel: CancellationToken,
    rejected: Arc<AtomicU64>,
    started: SystemTime,
}

impl Cluster {
    /// Reads the secret, binds the gossip socket and starts gossiping with the
    /// configured members.
    pub async fn start(cfg: &ClusterConfig) -> Result<Arc<Cluster>, ClusterError> {
        let secret = load_secret(&cfg.secret_file)?;
        let members: HashSet<String> = cfg.members.iter().map(|m| m.id.clone()).collect();
        let auth = Arc::new(Auth::new(&secret, &cfg.id, &cfg.node, members));
        let rejected = Arc::new(AtomicU64::new(0));
        let transport = AuthTransport::new(auth, rejected.clone());
        let advertise = cfg
            .members
            .iter()
            .find(|m| m.id == cfg.node)
            .map(|m| m.address)
            .unwrap_or(cfg.listen);
        // A restarted node is a new generation, so peers drop what its old self said.
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
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
        let (desired, desired_rx) = watch::channel(BTreeMap::new());
        let (view_tx, view) = watch::channel(ClusterView::default());
        let cancel = CancellationToken::new();
        tokio::spawn(poll_loop(
            cfg.clone(),
            handle.chitchat(),
            desired_rx,
            view_tx,
            cancel.clone(),
        ));
        tracing::info!(node = %cfg.node, listen = %cfg.listen, members = cfg.members.len(), "cluster started");
        Ok(Arc::new(Cluster {
            cfg: cfg.clone(),
            desired,
            view,
            handle: tokio::sync::Mutex::new(Some(handle)),
            cancel,
            rejected,
            started: SystemTime::now(),
        }))
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

async fn poll_loop(
    cfg: ClusterConfig,
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    mut desired: watch::Receiver<BTreeMap<String, String>>,
    view_tx: watch::Sender<ClusterView>,
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
        }
        let want = desired.borrow_and_update().clone();
        let now = Instant::now();
        let mut cc = chitchat.lock().await;
        if want != published {
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
            published = want;
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
                        keys: published.clone(),
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
                    None => (BTreeMap::new(), None),
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
