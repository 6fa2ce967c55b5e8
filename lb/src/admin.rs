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
//!   always the last field).

use std::sync::Arc;

use shared::admin::{AdminHandler, BackendId, Command, HandlerFuture, Peer, Reply};
use shared::intent::Value;

use crate::backend::{AdminState, Backend};
use crate::Inner;

/// The lb admin handler.
pub struct LbAdmin {
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
            .iter()
            .map(|slot| {
                let st = slot.state.load();
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
            if !slots.iter().any(|s| s.state.load().cfg.name == v) {
                return Reply::error(format!("no vip {v:?}; see show vips"));
            }
        }
        let mut lines = Vec::new();
        for slot in slots.iter() {
            let st = slot.state.load();
            if vip.is_some_and(|v| v != st.cfg.name) {
                continue;
            }
            for b in st.pool.backends() {
                lines.push(backend_line(b));
            }
        }
        Reply::Data(lines)
    }

    /// Records `value` as the backend's intent, then applies it with `apply` to the
    /// backend as it is once the record is written (a reload may have replaced it
    /// meanwhile; one removed meanwhile keeps the intent for when it comes back).
    fn record(
        &self,
        id: &BackendId,
        value: impl FnOnce(&Backend) -> Value,
        apply: impl FnOnce(&Backend),
    ) -> Reply {
        let b = match self.find(id) {
            Ok(b) => b,
            Err(r) => return r,
        };
        let key = match value(&b) {
            v @ Value::Weight { .. } => (b.weight_key(), v),
            v => (b.admin_key(), v),
        };
        let result = self.inner.intents.record(key.0, key.1, |_| {
            let now = self.inner.backend(&id.vip, &id.backend).unwrap_or(b);
            apply(&now);
        });
        match result {
            Ok(()) => Reply::Ok,
            Err(e) => {
                tracing::warn!(backend = %id, "admin command refused: {e}");
                Reply::Error(e.to_string())
            }
        }
    }

    fn find(&self, id: &BackendId) -> Result<Arc<Backend>, Reply> {
        self.inner
            .backend(&id.vip, &id.backend)
            .ok_or_else(|| Reply::error(format!("no backend \"{id}\"; see show backends")))
    }
}

/// One `show backends` line.
pub fn backend_line(b: &Backend) -> String {
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
                self.record(
                    id,
                    |_| Value::Admin {
                        state: state.intent(),
                    },
                    |b| b.set_admin(state, &who(peer)),
                )
            }
            // Refused by the backend before anything is recorded.
            Command::SetWeight(id, 0) => match self.find(id) {
                Ok(b) => match b.set_weight(0, &who(peer)) {
                    Ok(()) => Reply::Ok,
                    Err(e) => Reply::Error(e),
                },
                Err(r) => r,
            },
            Command::SetWeight(id, n) => self.record(
                id,
                |b| Value::Weight {
                    weight: *n,
                    config_weight: b.config_weight(),
                },
                |b| {
                    // n ≥ 1 was checked above, so this cannot fail.
                    let _ = b.set_weight(*n, &who(peer));
                },
            ),
            Command::WaitDrained(id, timeout) => {
                let b = match self.find(id) {
                    Ok(b) => b,
                    Err(r) => return Some(Box::pin(async move { r })),
                };
                let timeout = *timeout;
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
                match self.inner.slot(vip) {
                    None => Reply::error(format!("no vip {vip:?}; see show vips")),
                    Some(slot) if slot.state.load().cfg.announce.is_none() => {
                        Reply::error(format!(
                            "vip {vip:?} has no announce in the config; nothing to {}",
                            if withdraw { "withdraw" } else { "announce" }
                        ))
                    }
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
