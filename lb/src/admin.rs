//! The lb's share of the admin socket: `show vips`, `show backends [VIP]`, `drain`,
//! `ready`, `maint`, `set weight`, `wait drained`. Other commands return `None` so the
//! dispatcher passes them on. Every state change goes to the event log (and thereby
//! the tracing log) with the peer's uid, and is recorded as intent (the state file,
//! when `state_dir` is set) before it is applied and before the reply: a command
//! whose intent cannot be written is answered with an error and changes nothing.
//!
//! Output formats (space-separated, one line per item):
//! - `show vips`: `NAME LISTEN MODE up|down HEALTHY/TOTAL ACTIVE ANNOUNCE`, where
//!   ANNOUNCE is `announced`, `withdrawn` (see `show bgp` for why) or `-` (no
//!   `announce` on the VIP)
//! - `show bgp`: `neighbor ADDR:PORT as AS STATE up UPTIME prefixes N updates N
//!   last_error TEXT` per router, then `prefix PREFIX vip VIP announced|withdrawn
//!   REASON` per prefix
//! - `show backends`: `VIP/BACKEND ADDRESS STATE ADMIN WEIGHT ACTIVE CHECKS`, where
//!   CHECKS is `pending`, `ok` or `fail:REASON` (the reason may contain spaces; it is
//!   always the last field). When this node's pod has other replicas (`[cluster]`,
//!   `pod`), each line goes on with ` | fleet INTENT A/N applied, S sessions (ID
//!   N, ...)`: the intent in force, how many replicas applied it, and the sessions
//!   still open on each.
//!
//! With other replicas, `drain`, `ready`, `maint` and `set weight` wait (bounded by
//! [`shared::fleet::Fleet::ack_wait`]) for every reachable replica to report the
//! command applied; any replica unreachable or silent turns `ok` into `ok (applied
//! on A/N; ...)`. `wait drained` waits for every reachable replica's sessions.

use std::sync::Arc;

use shared::admin::{AdminHandler, BackendId, Command, HandlerFuture, Peer, Reply};
use shared::cluster::ClusterView;
use shared::fleet::{tally, Applied, Fleet, Tally};
use shared::intent::{AdminIntent, Intents, Key, Timestamp, Value};
use tokio::time::Instant;

use crate::backend::{AdminState, Backend};
use crate::Inner;

/// The lb admin handler.
pub(crate) struct LbAdmin {
    inner: Arc<Inner>,
}

impl LbAdmin {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        LbAdmin { inner }
    }

    fn show_vips(&self) -> Reply {
        let lines = self
            .inner
            .vips
            .load()
            .with_states()
            .map(|(slot, st)| {
                let status = st.status();
                format!(
                    "{} {} {} {} {}/{} {} {}",
                    st.cfg.name,
                    slot.local,
                    st.cfg.mode.as_str(),
                    if status.up { "up" } else { "down" },
                    status.healthy,
                    status.total,
                    slot.active(),
                    self.inner.bgp.vip_state(&st.cfg.name)
                )
            })
            .collect();
        Reply::Data(lines)
    }

    fn show_backends(&self, vip: Option<&str>) -> Reply {
        let slots = self.inner.vips.load();
        if let Some(v) = vip {
            if !slots.with_states().any(|(_, st)| st.cfg.name == v) {
                return Reply::error(format!("no vip {v:?}; see show vips"));
            }
        }
        let fleet = self.inner.fleet.as_ref().map(|f| {
            let view = f.watch().borrow().clone();
            (f, view, self.inner.intents.snapshot())
        });
        let mut lines = Vec::new();
        for (_, st) in slots.with_states() {
            if vip.is_some_and(|v| v != st.cfg.name) {
                continue;
            }
            for b in st.pool.backends() {
                let mut line = backend_line(b);
                if let Some((f, view, intents)) = &fleet {
                    let key = b.admin_key();
                    let intent = intents.get(&key);
                    let word = match intent.map(|e| e.value) {
                        Some(Value::Admin { state }) => admin_word(state),
                        _ => b.admin().as_str(),
                    };
                    let local = applied(b, intents);
                    let rs = f.replicas(view, b.vip(), b.name(), Some(local));
                    let t = tally(&rs, &key, intent.map(|e| &e.stamp));
                    line.push_str(" | ");
                    line.push_str(&t.show(word));
                }
                lines.push(line);
            }
        }
        Reply::Data(lines)
    }

    /// How far the pod has applied `key` (stamped `stamp`) on `id`, in `view`.
    fn fleet_tally(
        &self,
        fleet: &Fleet,
        view: &ClusterView,
        id: &BackendId,
        key: &Key,
        stamp: Option<&Timestamp>,
    ) -> Tally {
        let local = self
            .inner
            .backend(&id.vip, &id.backend)
            .map(|b| applied(&b, &self.inner.intents.snapshot()));
        tally(
            &fleet.replicas(view, &id.vip, &id.backend, local),
            key,
            stamp,
        )
    }

    /// The reply to a recorded command: with other replicas, once every reachable
    /// one reports it applied, or after [`Fleet::ack_wait`], whichever is first.
    async fn confirm(&self, id: &BackendId, recorded: Result<(Key, Timestamp), Reply>) -> Reply {
        let (key, stamp) = match recorded {
            Ok(r) => r,
            Err(r) => return r,
        };
        let Some(fleet) = &self.inner.fleet else {
            return Reply::Ok;
        };
        let deadline = Instant::now() + fleet.ack_wait();
        let mut rx = fleet.watch();
        loop {
            let view = rx.borrow_and_update().clone();
            let t = self.fleet_tally(fleet, &view, id, &key, Some(&stamp));
            if t.pending.is_empty() || Instant::now() >= deadline {
                return match t.command_reply() {
                    None => Reply::Ok,
                    Some(line) => {
                        tracing::info!(backend = %id, "{line}");
                        Reply::Data(vec![line])
                    }
                };
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Reply::Ok },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// `wait drained` across the pod: until every reachable replica has applied the
    /// drain (or maint) in force and has no session left on the backend.
    async fn wait_fleet(
        &self,
        fleet: &Fleet,
        id: &BackendId,
        timeout: std::time::Duration,
    ) -> Reply {
        let deadline = Instant::now() + timeout;
        let mut rx = fleet.watch();
        let key = Key::BackendAdmin {
            vip: id.vip.clone(),
            backend: id.backend.clone(),
        };
        loop {
            let intent = self.inner.intents.get(&key).filter(|e| {
                !matches!(
                    e.value,
                    Value::Admin {
                        state: AdminIntent::Ready
                    }
                )
            });
            let view = rx.borrow_and_update().clone();
            let t = self.fleet_tally(fleet, &view, id, &key, intent.as_ref().map(|e| &e.stamp));
            if t.drained() {
                return match t.drained_reply() {
                    None => Reply::Ok,
                    Some(line) => Reply::Data(vec![line]),
                };
            }
            if Instant::now() >= deadline {
                let word = match intent.map(|e| e.value) {
                    Some(Value::Admin { state }) => admin_word(state),
                    _ => "ready",
                };
                tracing::info!(backend = %id, "wait drained: timeout ({})", t.show(word));
                return Reply::error(format!("timeout ({})", t.show(word)));
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Reply::error("timeout") },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Records `value` as the backend's intent, then applies it with `apply` to the
    /// backend as it is once the record is written (a reload may have replaced it
    /// meanwhile; one removed meanwhile keeps the intent for when it comes back).
    fn record(
        &self,
        id: &BackendId,
        value: impl FnOnce(&Backend) -> Value,
        apply: impl FnOnce(&Backend),
    ) -> Result<(Key, Timestamp), Reply> {
        let b = self.find(id)?;
        let key = match value(&b) {
            v @ Value::Weight { .. } => (b.weight_key(), v),
            v => (b.admin_key(), v),
        };
        let recorded = key.0.clone();
        let result = self.inner.intents.record(key.0, key.1, |e| {
            let now = self.inner.backend(&id.vip, &id.backend).unwrap_or(b);
            apply(&now);
            e.stamp.clone()
        });
        match result {
            Ok(stamp) => Ok((recorded, stamp)),
            Err(e) => {
                tracing::warn!(backend = %id, "admin command refused: {e}");
                Err(Reply::Error(e.to_string()))
            }
        }
    }

    fn find(&self, id: &BackendId) -> Result<Arc<Backend>, Reply> {
        self.inner
            .backend(&id.vip, &id.backend)
            .ok_or_else(|| Reply::error(format!("no backend \"{id}\"; see show backends")))
    }
}

/// A backend's progress here: its running state against the intents recorded for it.
pub(crate) fn applied(b: &Backend, intents: &Intents) -> Applied {
    Applied::here(
        b.admin().intent(),
        b.weight(),
        b.active(),
        intents.get(&b.admin_key()),
        intents.get(&b.weight_key()),
    )
}

fn admin_word(state: AdminIntent) -> &'static str {
    match state {
        AdminIntent::Ready => "ready",
        AdminIntent::Drain => "drain",
        AdminIntent::Maint => "maint",
    }
}

/// One `show backends` line.
pub(crate) fn backend_line(b: &Backend) -> String {
    format!(
        "{} {} {} {} {} {} {}",
        b.id(),
        b.address(),
        b.state_str(),
        b.admin().as_str(),
        b.weight(),
        b.active(),
        b.last_check()
    )
}

fn who(peer: Peer) -> String {
    match peer.uid {
        Some(uid) => format!("admin uid {uid}"),
        None => "admin".to_string(),
    }
}

impl AdminHandler for LbAdmin {
    fn handle<'a>(&'a self, cmd: &'a Command, peer: Peer) -> Option<HandlerFuture<'a>> {
        let reply = match cmd {
            Command::ShowVips => self.show_vips(),
            Command::ShowBackends(vip) => self.show_backends(vip.as_deref()),
            Command::Drain(id) | Command::Ready(id) | Command::Maint(id) => {
                let state = match cmd {
                    Command::Drain(_) => AdminState::Drain,
                    Command::Ready(_) => AdminState::Ready,
                    _ => AdminState::Maint,
                };
                let recorded = self.record(
                    id,
                    |_| Value::Admin {
                        state: state.intent(),
                    },
                    |b| b.set_admin(state, &who(peer)),
                );
                return Some(Box::pin(self.confirm(id, recorded)));
            }
            // Refused by the backend before anything is recorded.
            Command::SetWeight(id, 0) => match self.find(id) {
                Ok(b) => match b.set_weight(0, &who(peer)) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error(e),
                },
                Err(r) => r,
            },
            Command::SetWeight(id, n) => {
                let recorded = self.record(
                    id,
                    |b| Value::Weight {
                        weight: *n,
                        config_weight: b.config_weight(),
                    },
                    |b| {
                        // n ≥ 1 was checked above, so this cannot fail.
                        let _ = b.set_weight(*n, &who(peer));
                    },
                );
                return Some(Box::pin(self.confirm(id, recorded)));
            }
            Command::WaitDrained(id, timeout) => {
                let b = match self.find(id) {
                    Ok(b) => b,
                    Err(r) => return Some(Box::pin(async move { r })),
                };
                let timeout = *timeout;
                if let Some(fleet) = &self.inner.fleet {
                    return Some(Box::pin(self.wait_fleet(fleet, id, timeout)));
                }
                return Some(Box::pin(async move {
                    if b.wait_drained(timeout).await {
                        Reply::Ok
                    } else {
                        tracing::info!(backend = %b.id(), active = b.active(), "wait drained: timeout");
                        Reply::error("timeout")
                    }
                }));
            }
            Command::ShowBgp => Reply::Data(self.inner.bgp.show()),
            Command::WithdrawVip(vip) | Command::AnnounceVip(vip) => {
                let withdraw = matches!(cmd, Command::WithdrawVip(_));
                match self.inner.slot(vip).and_then(|slot| slot.state()) {
                    None => Reply::error(format!("no vip {vip:?}; see show vips")),
                    Some(st) if st.cfg.announce.is_none() => Reply::error(format!(
                        "vip {vip:?} has no announce in the config; nothing to {}",
                        if withdraw { "withdraw" } else { "announce" }
                    )),
                    Some(_) => {
                        let intent = &self.inner.bgp.intent;
                        let changed = if withdraw {
                            intent.withdraw(vip)
                        } else {
                            intent.announce(vip)
                        };
                        if changed {
                            self.inner.events.record(
                                format!("vip {vip}"),
                                format!(
                                    "{} by {}",
                                    if withdraw { "withdraw" } else { "announce" },
                                    who(peer)
                                ),
                            );
                        }
                        self.inner.bgp.wake();
                        Reply::Ok
                    }
                }
            }
            _ => return None,
        };
        Some(Box::pin(async move { reply }))
    }
}
