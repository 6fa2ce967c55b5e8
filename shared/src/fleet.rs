//! Replicated admin intent: the replicas of one lb pod (and the gss nodes, for site
//! overrides) share what operators asked for over the cluster layer, and report how
//! far each of them has applied it.
//!
//! Each node publishes every intent entry it holds (not only those it issued) as a
//! cluster key `intent/KEY` whose value is the entry (value, HLC stamp, origin): a
//! replica that was down during a drain learns it from any member that is up, even
//! when the replica the operator used is gone. Every peer's entries go through
//! [`IntentStore::merge_in`], the path of a restore: latest stamp per key wins, the
//! clock observes the peer's stamp, the winner is written to the state file, then
//! applied. Health is never shared, only intent.
//!
//! Who takes what ([`Scope`]): backend intent (`backend/...`) only from members of
//! this node's pod (`[[cluster.member]] pod`), since two pods may name their VIPs
//! alike; site overrides from every member; a VIP's route (`vip/...`) from no one,
//! since withdrawing is what one replica does to leave the routers' ECMP set. Keys of non-members never
//! arrive: the cluster layer drops their datagrams before chitchat reads them.
//!
//! Progress: each replica publishes per backend `applied/VIP/BACKEND` ([`Applied`]:
//! its admin state and weight, the stamps of the intents they carry out, its open
//! sessions). [`tally`] counts them for `show backends`, `wait drained` and the
//! acknowledgement of a command ([`Tally::command_reply`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, ClusterView};
use crate::config::ClusterConfig;
use crate::intent::{merge_entry, AdminIntent, Entry, IntentStore, Intents, Key, Timestamp, Value};

/// Prefix of the cluster keys holding intent entries.
pub const INTENT_PREFIX: &str = "intent/";
/// Prefix of the cluster keys holding a replica's progress per backend.
pub const APPLIED_PREFIX: &str = "applied/";

/// Which intent this node shares, and with whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    node: String,
    pod: Option<String>,
    /// Every member's pod.
    pods: BTreeMap<String, Option<String>>,
    /// This pod's replicas, this node included, in config order.
    replicas: Vec<String>,
}

impl Scope {
    /// The scope of this node in `cfg`.
    pub fn new(cfg: &ClusterConfig) -> Scope {
        Scope {
            node: cfg.node.clone(),
            pod: cfg.pod().map(str::to_string),
            pods: cfg
                .members
                .iter()
                .map(|m| (m.id.clone(), m.pod.clone()))
                .collect(),
            replicas: cfg.replicas().map(|m| m.id.clone()).collect(),
        }
    }

    /// This node's member id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// This node's pod.
    pub fn pod(&self) -> Option<&str> {
        self.pod.as_deref()
    }

    /// The replicas of this node's pod, this node included (empty without a pod).
    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }

    /// Whether this pod has a replica besides this node.
    pub fn has_peers(&self) -> bool {
        self.replicas.len() > 1
    }

    /// Whether this node publishes `key`: site overrides always, backend intent
    /// only as a replica of a pod, a VIP's route never (`withdraw VIP` takes this
    /// one replica out of the routers' ECMP set; shared, it would take the VIP off
    /// the network).
    pub fn shares(&self, key: &Key) -> bool {
        match key {
            Key::Site(_) => true,
            Key::BackendAdmin { .. } | Key::BackendWeight { .. } => self.pod.is_some(),
            Key::Vip(_) => false,
        }
    }

    /// Whether this node takes `key` as published by `member`.
    pub fn takes_from(&self, member: &str, key: &Key) -> bool {
        let Some(their_pod) = self.pods.get(member) else {
            return false;
        };
        match key {
            Key::Site(_) => true,
            Key::BackendAdmin { .. } | Key::BackendWeight { .. } => {
                self.pod.is_some() && their_pod.as_deref() == self.pod.as_deref()
            }
            Key::Vip(_) => false,
        }
    }
}

/// The cluster key of an intent.
pub fn cluster_key(key: &Key) -> String {
    format!("{INTENT_PREFIX}{key}")
}

/// This node's intents as cluster keys and values.
pub fn encode(intents: &Intents, scope: &Scope) -> BTreeMap<String, String> {
    intents
        .iter()
        .filter(|(k, _)| scope.shares(k))
        .filter_map(|(k, e)| Some((cluster_key(k), serde_json::to_string(e).ok()?)))
        .collect()
}

/// Every peer's intents this node takes in, the latest per key. A key or value that
/// does not parse (a newer version's node) or does not fit its key is skipped.
pub fn collect(view: &ClusterView, scope: &Scope) -> Intents {
    let mut out = Intents::new();
    for m in view.members.iter().filter(|m| !m.is_self) {
        let keys = m
            .keys
            .range(INTENT_PREFIX.to_string()..)
            .take_while(|(k, _)| k.starts_with(INTENT_PREFIX));
        for (k, v) in keys {
            let Ok(key) = k[INTENT_PREFIX.len()..].parse::<Key>() else {
                continue;
            };
            if !scope.takes_from(&m.id, &key) {
                continue;
            }
            let Ok(entry) = serde_json::from_str::<Entry>(v) else {
                continue;
            };
            if key.accepts(&entry.value) {
                merge_entry(&mut out, key, entry);
            }
        }
    }
    out
}

/// What one replica has applied for one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applied {
    /// Its admin state.
    pub admin: AdminIntent,
    /// The stamp of the admin intent that state carries out (`None`: no command
    /// set it, or the state differs from the intent).
    pub admin_at: Option<Timestamp>,
    /// Its weight.
    pub weight: u32,
    /// The stamp of the weight intent in force.
    pub weight_at: Option<Timestamp>,
    /// Sessions (L4) or requests (L7) open on it.
    pub active: u64,
}

impl Applied {
    /// A backend's progress from its running state and the intents recorded for
    /// it: an intent counts as applied only while the running state matches it.
    pub fn here(
        admin: AdminIntent,
        weight: u32,
        active: u64,
        admin_intent: Option<&Entry>,
        weight_intent: Option<&Entry>,
    ) -> Applied {
        let admin_at = admin_intent
            .filter(|e| e.value == Value::Admin { state: admin })
            .map(|e| e.stamp.clone());
        let weight_at = weight_intent
            .filter(|e| matches!(e.value, Value::Weight { weight: w, .. } if w == weight))
            .map(|e| e.stamp.clone());
        Applied {
            admin,
            admin_at,
            weight,
            weight_at,
            active,
        }
    }
}

/// The cluster key of a backend's progress.
pub fn applied_key(vip: &str, backend: &str) -> String {
    format!("{APPLIED_PREFIX}{vip}/{backend}")
}

/// One replica as this node sees it, for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Member id.
    pub id: String,
    /// Heard from within `stale_after` (this node always).
    pub reachable: bool,
    /// What it reports for the backend (`None`: nothing, e.g. it has no such backend).
    pub applied: Option<Applied>,
}

/// Every replica of this pod for `vip/backend`: this node from `local`, the peers
/// from their published progress.
pub fn replicas(
    view: &ClusterView,
    scope: &Scope,
    now: Instant,
    stale_after: Duration,
    vip: &str,
    backend: &str,
    local: Option<Applied>,
) -> Vec<Replica> {
    let key = applied_key(vip, backend);
    scope
        .replicas
        .iter()
        .map(|id| {
            if *id == scope.node {
                return Replica {
                    id: id.clone(),
                    reachable: true,
                    applied: local.clone(),
                };
            }
            let m = view.member(id);
            Replica {
                id: id.clone(),
                reachable: m
                    .is_some_and(|m| m.alive && m.age(now).is_some_and(|a| a <= stale_after)),
                applied: m
                    .and_then(|m| m.keys.get(&key))
                    .and_then(|v| serde_json::from_str(v).ok()),
            }
        })
        .collect()
}

/// How far the pod has applied one intent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tally {
    /// Replicas of the pod, this node included.
    pub total: usize,
    /// Those that report the intent applied.
    pub applied: Vec<String>,
    /// Those not heard from within `stale_after`.
    pub unreachable: Vec<String>,
    /// Reachable ones that do not report it (yet).
    pub pending: Vec<String>,
    /// Sessions open on the backend over every reachable replica that reports.
    pub sessions: u64,
    /// Per replica, its sessions (`None`: unreachable or silent).
    pub per: Vec<(String, Option<u64>)>,
}

/// Counts `replicas` against the intent for `key` stamped `stamp` (`None`: no
/// intent, so every replica that reports counts as applied).
pub fn tally(replicas: &[Replica], key: &Key, stamp: Option<&Timestamp>) -> Tally {
    let mut t = Tally {
        total: replicas.len(),
        ..Tally::default()
    };
    for r in replicas {
        let reported = r.applied.as_ref().filter(|_| r.reachable);
        t.per.push((r.id.clone(), reported.map(|a| a.active)));
        if !r.reachable {
            t.unreachable.push(r.id.clone());
            continue;
        }
        let Some(a) = reported else {
            t.pending.push(r.id.clone());
            continue;
        };
        t.sessions += a.active;
        let at = match key {
            Key::BackendWeight { .. } => a.weight_at.as_ref(),
            _ => a.admin_at.as_ref(),
        };
        let done = match stamp {
            None => true,
            Some(s) => at.is_some_and(|at| at >= s),
        };
        if done {
            t.applied.push(r.id.clone());
        } else {
            t.pending.push(r.id.clone());
        }
    }
    t
}

impl Tally {
    /// Every replica reached and applied it.
    pub fn complete(&self) -> bool {
        self.unreachable.is_empty() && self.pending.is_empty()
    }

    /// Every reachable replica applied it and has no session left.
    pub fn drained(&self) -> bool {
        self.pending.is_empty() && self.sessions == 0
    }

    /// The `show backends` suffix: `fleet drain 3/4 applied, 37 sessions (lb1 20,
    /// lb2 17, lb3 0, lb4 unreachable)`.
    pub fn show(&self, intent: &str) -> String {
        let per: Vec<String> = self
            .per
            .iter()
            .map(|(id, n)| match n {
                Some(n) => format!("{id} {n}"),
                None if self.unreachable.contains(id) => format!("{id} unreachable"),
                None => format!("{id} ?"),
            })
            .collect();
        format!(
            "fleet {intent} {}/{} applied, {} sessions ({})",
            self.applied.len(),
            self.total,
            self.sessions,
            per.join(", ")
        )
    }

    /// The reply to a command once acknowledgements were awaited: `None` (plain
    /// `ok`) when every replica applied it, else `ok (applied on 2/4; 2 unreachable,
    /// will apply on contact)`, naming reachable replicas that did not confirm in
    /// time apart.
    pub fn command_reply(&self) -> Option<String> {
        if self.complete() {
            return None;
        }
        let mut parts = vec![format!("applied on {}/{}", self.applied.len(), self.total)];
        if !self.unreachable.is_empty() {
            parts.push(format!(
                "{} unreachable, will apply on contact",
                self.unreachable.len()
            ));
        }
        if !self.pending.is_empty() {
            parts.push(format!(
                "{} not confirmed yet: {}",
                self.pending.len(),
                self.pending.join(" ")
            ));
        }
        Some(format!("ok ({})", parts.join("; ")))
    }

    /// The reply of `wait drained` once [`Tally::drained`]: plain `ok` when every
    /// replica was counted, else which ones were not.
    pub fn drained_reply(&self) -> Option<String> {
        if self.unreachable.is_empty() {
            return None;
        }
        Some(format!(
            "ok (drained on {}/{}; {} unreachable: {}, their sessions unknown)",
            self.total - self.unreachable.len(),
            self.total,
            self.unreachable.len(),
            self.unreachable.join(" ")
        ))
    }
}

/// Applies a peer's winning entry to the running roles.
pub type ApplyHook = Box<dyn Fn(&Key, &Entry) + Send + Sync>;

/// This node's progress per backend: (VIP, backend, progress).
pub type ProgressHook = Box<dyn Fn() -> Vec<(String, String, Applied)> + Send + Sync>;

/// What the roles give the fleet loop.
pub struct Hooks {
    /// Called under the store's lock, as a restore is: it must not call the store.
    pub apply: ApplyHook,
    /// Read on every round of the loop.
    pub progress: ProgressHook,
}

/// The fleet of this node: its cluster, scope and intent store.
pub struct Fleet {
    cluster: Arc<Cluster>,
    scope: Scope,
    store: Arc<IntentStore>,
}

impl Fleet {
    /// The fleet over a running cluster.
    pub fn new(cluster: Arc<Cluster>, store: Arc<IntentStore>) -> Arc<Fleet> {
        Arc::new(Fleet {
            scope: Scope::new(cluster.config()),
            cluster,
            store,
        })
    }

    /// Who shares what.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The store it replicates.
    pub fn store(&self) -> &Arc<IntentStore> {
        &self.store
    }

    /// Every member as last seen, refreshed a few times per gossip interval.
    pub fn watch(&self) -> watch::Receiver<ClusterView> {
        self.cluster.watch()
    }

    /// A member heard from longer ago than this is unreachable.
    pub fn stale_after(&self) -> Duration {
        self.cluster.config().stale_after
    }

    /// How long a command waits for its replicas' acknowledgements: an entry's way
    /// out and the progress's way back take a gossip round each, plus a few
    /// refreshes; never less than two seconds so a loaded machine still confirms.
    /// Only a reachable replica that stays silent makes a command wait this long.
    pub fn ack_wait(&self) -> Duration {
        (self.cluster.config().gossip_interval * 4).max(Duration::from_secs(2))
    }

    /// The replicas of `vip/backend` in `view` (see [`replicas`]).
    pub fn replicas(
        &self,
        view: &ClusterView,
        vip: &str,
        backend: &str,
        local: Option<Applied>,
    ) -> Vec<Replica> {
        replicas(
            view,
            &self.scope,
            Instant::now(),
            self.stale_after(),
            vip,
            backend,
            local,
        )
    }

    /// Runs until `cancel`: on every refresh of the cluster view and every change of
    /// the store, takes in the peers' intents, publishes this node's, and (as a
    /// replica) its progress.
    pub async fn run(self: Arc<Self>, hooks: Hooks, cancel: CancellationToken) {
        let mut view_rx = self.cluster.watch();
        let mut changes = self.store.changes();
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = view_rx.changed() => if r.is_err() { return },
                r = changes.changed() => if r.is_err() { return },
            }
            changes.borrow_and_update();
            let view = view_rx.borrow_and_update().clone();
            let remote = collect(&view, &self.scope);
            if !remote.is_empty() {
                match self.store.merge_in(&remote, |k, e| (hooks.apply)(k, e)) {
                    Ok(_) => last_error = None,
                    Err(e) => {
                        let msg = e.to_string();
                        if last_error.as_ref() != Some(&msg) {
                            tracing::warn!("peers' admin intent not taken in: {msg}");
                            last_error = Some(msg);
                        }
                    }
                }
            }
            self.cluster
                .publish_prefix(INTENT_PREFIX, encode(&self.store.snapshot(), &self.scope));
            if self.scope.pod.is_some() {
                let progress = (hooks.progress)()
                    .into_iter()
                    .filter_map(|(vip, backend, a)| {
                        Some((applied_key(&vip, &backend), serde_json::to_string(&a).ok()?))
                    })
                    .collect();
                self.cluster.publish_prefix(APPLIED_PREFIX, progress);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::MemberView;
    use crate::config::MemberConfig;
    use crate::intent::SiteIntent;

    fn cfg(node: &str) -> ClusterConfig {
        let member = |id: &str, pod: Option<&str>| MemberConfig {
            id: id.into(),
            address: "127.0.0.1:1".parse().unwrap(),
            vantage: pod.is_none(),
            pod: pod.map(str::to_string),
        };
        ClusterConfig {
            id: "c".into(),
            node: node.into(),
            listen: "127.0.0.1:1".parse().unwrap(),
            secret_file: "k".into(),
            gossip_interval: Duration::from_millis(100),
            stale_after: Duration::from_secs(1),
            members: vec![
                member("lb1", Some("pod1")),
                member("lb2", Some("pod1")),
                member("lb3", Some("pod1")),
                member("other", Some("pod2")),
                member("gss1", None),
            ],
        }
    }

    fn stamp(ms: u64, node: &str) -> Timestamp {
        Timestamp {
            ms,
            logical: 0,
            node: node.into(),
        }
    }

    fn admin_key() -> Key {
        Key::BackendAdmin {
            vip: "smtp".into(),
            backend: "mx1".into(),
        }
    }

    fn entry(state: AdminIntent, ms: u64, node: &str) -> Entry {
        Entry {
            value: Value::Admin { state },
            stamp: stamp(ms, node),
        }
    }

    fn member(id: &str, keys: &[(String, String)], contact: Option<Instant>) -> MemberView {
        MemberView {
            id: id.into(),
            address: "127.0.0.1:1".parse().unwrap(),
            is_self: false,
            alive: contact.is_some(),
            last_contact: contact,
            keys: keys.iter().cloned().collect(),
        }
    }

    fn published(e: &Entry) -> (String, String) {
        (cluster_key(&admin_key()), serde_json::to_string(e).unwrap())
    }

    #[test]
    fn scope_shares_backend_intent_within_the_pod_and_sites_with_all() {
        let s = Scope::new(&cfg("lb1"));
        assert_eq!(s.replicas(), ["lb1", "lb2", "lb3"]);
        assert!(s.has_peers());
        assert!(s.takes_from("lb2", &admin_key()));
        assert!(!s.takes_from("other", &admin_key()), "another pod");
        assert!(!s.takes_from("gss1", &admin_key()), "no pod");
        assert!(!s.takes_from("stranger", &Key::Site("dc1".into())));
        assert!(s.takes_from("gss1", &Key::Site("dc1".into())));
        // A VIP's route stays with its replica.
        assert!(!s.shares(&Key::Vip("smtp".into())));
        assert!(!s.takes_from("lb2", &Key::Vip("smtp".into())));
        // A gss node shares and takes only site overrides.
        let g = Scope::new(&cfg("gss1"));
        assert!(g.replicas().is_empty());
        assert!(!g.shares(&admin_key()));
        assert!(g.shares(&Key::Site("dc1".into())));
        assert!(!g.takes_from("lb1", &admin_key()));
        assert!(g.takes_from("lb1", &Key::Site("dc1".into())));
    }

    #[test]
    fn collect_keeps_the_latest_entry_per_key_from_those_it_takes() {
        let s = Scope::new(&cfg("lb1"));
        let now = Instant::now();
        let drain = entry(AdminIntent::Drain, 10, "lb2");
        let ready = entry(AdminIntent::Ready, 20, "lb3");
        let foreign = entry(AdminIntent::Maint, 30, "other");
        let site = Entry {
            value: Value::Site {
                state: SiteIntent::Down,
            },
            stamp: stamp(5, "gss1"),
        };
        let view = ClusterView {
            members: vec![
                member("lb2", &[published(&drain)], Some(now)),
                member("lb3", &[published(&ready)], Some(now)),
                member("other", &[published(&foreign)], Some(now)),
                member(
                    "gss1",
                    &[
                        (
                            "intent/site/dc1".into(),
                            serde_json::to_string(&site).unwrap(),
                        ),
                        ("intent/site/dc2".into(), "garbage".into()),
                        ("intent/nonsense".into(), "{}".into()),
                        // A value that does not fit its key.
                        (
                            "intent/site/dc3".into(),
                            serde_json::to_string(&drain).unwrap(),
                        ),
                        ("view/dc1".into(), "{}".into()),
                    ],
                    Some(now),
                ),
            ],
        };
        let got = collect(&view, &s);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[&admin_key()], ready, "the later of lb2's and lb3's");
        assert_eq!(got[&Key::Site("dc1".into())], site);
    }

    #[test]
    fn encode_round_trips_through_collect() {
        let s = Scope::new(&cfg("lb2"));
        let mut mine = Intents::new();
        mine.insert(admin_key(), entry(AdminIntent::Drain, 10, "lb2"));
        let keys: Vec<(String, String)> = encode(&mine, &s).into_iter().collect();
        let view = ClusterView {
            members: vec![member("lb2", &keys, Some(Instant::now()))],
        };
        assert_eq!(collect(&view, &Scope::new(&cfg("lb1"))), mine);
        // A gss node publishes no backend intent.
        assert!(encode(&mine, &Scope::new(&cfg("gss1"))).is_empty());
    }

    fn applied(admin: AdminIntent, at: Option<Timestamp>, active: u64) -> Applied {
        Applied {
            admin,
            admin_at: at,
            weight: 1,
            weight_at: None,
            active,
        }
    }

    #[test]
    fn applied_here_counts_an_intent_only_while_the_state_matches() {
        let drain = entry(AdminIntent::Drain, 10, "lb1");
        let a = Applied::here(AdminIntent::Drain, 1, 3, Some(&drain), None);
        assert_eq!(a.admin_at, Some(stamp(10, "lb1")));
        assert_eq!(a.active, 3);
        // Recorded but not (yet) in force: not applied.
        let a = Applied::here(AdminIntent::Ready, 1, 0, Some(&drain), None);
        assert_eq!(a.admin_at, None);
        // A stale weight (config changed since) is not in force either.
        let w = Entry {
            value: Value::Weight {
                weight: 5,
                config_weight: 1,
            },
            stamp: stamp(11, "lb1"),
        };
        assert_eq!(
            Applied::here(AdminIntent::Ready, 5, 0, None, Some(&w)).weight_at,
            Some(stamp(11, "lb1"))
        );
        assert_eq!(
            Applied::here(AdminIntent::Ready, 2, 0, None, Some(&w)).weight_at,
            None
        );
    }

    #[test]
    fn replicas_reads_peers_progress_and_reachability() {
        let s = Scope::new(&cfg("lb1"));
        let now = Instant::now();
        let a = applied(AdminIntent::Drain, Some(stamp(10, "lb1")), 4);
        let key = applied_key("smtp", "mx1");
        let view = ClusterView {
            members: vec![
                member(
                    "lb2",
                    &[(key.clone(), serde_json::to_string(&a).unwrap())],
                    Some(now),
                ),
                // Heard from too long ago.
                member(
                    "lb3",
                    &[(key, serde_json::to_string(&a).unwrap())],
                    Some(now - Duration::from_secs(5)),
                ),
            ],
        };
        let local = applied(AdminIntent::Drain, Some(stamp(10, "lb1")), 1);
        let r = replicas(
            &view,
            &s,
            now,
            Duration::from_secs(1),
            "smtp",
            "mx1",
            Some(local.clone()),
        );
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].id.as_str(), r[0].reachable), ("lb1", true));
        assert_eq!(r[0].applied, Some(local));
        assert_eq!((r[1].reachable, r[1].applied.as_ref()), (true, Some(&a)));
        assert!(!r[2].reachable);
    }

    fn replica(id: &str, reachable: bool, a: Option<Applied>) -> Replica {
        Replica {
            id: id.into(),
            reachable,
            applied: a,
        }
    }

    #[test]
    fn tally_counts_applied_unreachable_pending_and_sessions() {
        let at = stamp(10, "lb1");
        let rs = [
            replica(
                "lb1",
                true,
                Some(applied(AdminIntent::Drain, Some(at.clone()), 20)),
            ),
            replica(
                "lb2",
                true,
                Some(applied(AdminIntent::Drain, Some(stamp(12, "lb2")), 17)),
            ),
            // Still on an older intent.
            replica("lb3", true, Some(applied(AdminIntent::Ready, None, 0))),
            replica("lb4", false, Some(applied(AdminIntent::Ready, None, 9))),
        ];
        let t = tally(&rs, &admin_key(), Some(&at));
        assert_eq!(t.total, 4);
        assert_eq!(t.applied, ["lb1", "lb2"]);
        assert_eq!(t.pending, ["lb3"]);
        assert_eq!(t.unreachable, ["lb4"]);
        assert_eq!(
            t.sessions, 37,
            "an unreachable replica's last report is not counted"
        );
        assert!(!t.complete() && !t.drained());
        assert_eq!(
            t.show("drain"),
            "fleet drain 2/4 applied, 37 sessions (lb1 20, lb2 17, lb3 0, lb4 unreachable)"
        );
        assert_eq!(
            t.command_reply().as_deref(),
            Some("ok (applied on 2/4; 1 unreachable, will apply on contact; 1 not confirmed yet: lb3)")
        );
    }

    #[test]
    fn every_replica_applied_is_the_plain_ok() {
        let at = stamp(10, "lb1");
        let done = |n| Some(applied(AdminIntent::Drain, Some(at.clone()), n));
        let rs = [replica("lb1", true, done(0)), replica("lb2", true, done(0))];
        let t = tally(&rs, &admin_key(), Some(&at));
        assert!(t.complete() && t.drained());
        assert_eq!(t.command_reply(), None);
        assert_eq!(t.drained_reply(), None);
        // One down: the degraded reply, as the issue spells it.
        let rs = [
            replica("lb1", true, done(0)),
            replica("lb2", true, done(0)),
            replica("lb3", false, None),
            replica("lb4", false, None),
        ];
        let t = tally(&rs, &admin_key(), Some(&at));
        assert_eq!(
            t.command_reply().as_deref(),
            Some("ok (applied on 2/4; 2 unreachable, will apply on contact)")
        );
        assert!(t.drained(), "the reachable ones are drained");
        assert_eq!(
            t.drained_reply().as_deref(),
            Some("ok (drained on 2/4; 2 unreachable: lb3 lb4, their sessions unknown)")
        );
    }

    #[test]
    fn without_an_intent_reporting_is_enough_and_silence_is_pending() {
        let rs = [
            replica("lb1", true, Some(applied(AdminIntent::Ready, None, 0))),
            replica("lb2", true, None),
        ];
        let t = tally(&rs, &admin_key(), None);
        assert_eq!(t.applied, ["lb1"]);
        assert_eq!(t.pending, ["lb2"]);
        assert!(
            !t.drained(),
            "a replica that says nothing may hold sessions"
        );
        assert_eq!(
            t.show("ready"),
            "fleet ready 1/2 applied, 0 sessions (lb1 0, lb2 ?)"
        );
    }

    #[test]
    fn weight_intents_are_counted_on_the_weight_stamp() {
        let at = stamp(10, "lb1");
        let mut a = applied(AdminIntent::Drain, Some(stamp(99, "lb1")), 0);
        let key = Key::BackendWeight {
            vip: "smtp".into(),
            backend: "mx1".into(),
        };
        let t = tally(&[replica("lb1", true, Some(a.clone()))], &key, Some(&at));
        assert_eq!(t.pending, ["lb1"]);
        a.weight_at = Some(at.clone());
        let t = tally(&[replica("lb1", true, Some(a))], &key, Some(&at));
        assert_eq!(t.applied, ["lb1"]);
    }
}
