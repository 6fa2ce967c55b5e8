//! Operator intent, role-agnostic: what an operator asked for (drain a backend, set
//! its weight, withdraw a VIP, force a site down), as opposed to what health found.
//! Intent outlives the process ([`file`]: the state file in `state_dir`) and is
//! built to be shared by a fleet: every entry carries a hybrid-logical-clock
//! [`Timestamp`] naming its origin node, and [`merge`] keeps the latest entry per
//! [`Key`], a pure function that is commutative, associative and idempotent, so
//! replicas that exchange entries in any order and any number of times agree. The
//! running store ([`store::IntentStore`]) is what the roles record into and restore
//! from; a transport between nodes only has to feed [`store::IntentStore::merge_in`].
//!
//! A backend's admin state and its weight are two keys, not one: a `drain` on one
//! replica and a `set weight` on another in the same second must both survive,
//! which a single last-writer-wins value per backend would not allow.

pub mod file;
pub mod hlc;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use hlc::{Hlc, Timestamp};
pub use store::{IntentStore, StoreError};

/// What an intent is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `backend/VIP/BACKEND/admin`: ready, drain or maint.
    BackendAdmin {
        /// The VIP's name.
        vip: String,
        /// The backend's name within the VIP.
        backend: String,
    },
    /// `backend/VIP/BACKEND/weight`: an operator's weight.
    BackendWeight {
        /// The VIP's name.
        vip: String,
        /// The backend's name within the VIP.
        backend: String,
    },
    /// `vip/VIP`: announced or withdrawn (BGP).
    Vip(String),
    /// `site/SITE`: a gss site override.
    Site(String),
}

/// A key component: what config names allow, and never a `/` (the separator).
fn valid_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && !s.contains('/') && !s.chars().any(char::is_whitespace)
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::BackendAdmin { vip, backend } => write!(f, "backend/{vip}/{backend}/admin"),
            Key::BackendWeight { vip, backend } => write!(f, "backend/{vip}/{backend}/weight"),
            Key::Vip(v) => write!(f, "vip/{v}"),
            Key::Site(s) => write!(f, "site/{s}"),
        }
    }
}

/// Why a key does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid intent key {0:?}: expected backend/VIP/BACKEND/admin, backend/VIP/BACKEND/weight, vip/VIP or site/SITE")]
pub struct KeyError(pub String);

impl FromStr for Key {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Key, KeyError> {
        let parts: Vec<&str> = s.split('/').collect();
        let key = match parts.as_slice() {
            ["backend", vip, backend, attr] if valid_part(vip) && valid_part(backend) => {
                let (vip, backend) = (vip.to_string(), backend.to_string());
                match *attr {
                    "admin" => Key::BackendAdmin { vip, backend },
                    "weight" => Key::BackendWeight { vip, backend },
                    _ => return Err(KeyError(s.to_string())),
                }
            }
            ["vip", vip] if valid_part(vip) => Key::Vip(vip.to_string()),
            ["site", site] if valid_part(site) => Key::Site(site.to_string()),
            _ => return Err(KeyError(s.to_string())),
        };
        Ok(key)
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A backend's admin state as an operator set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminIntent {
    /// In rotation when healthy.
    Ready,
    /// No new connections; established ones continue.
    Drain,
    /// Out of rotation and not probed.
    Maint,
}

/// A VIP's route as an operator set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VipIntent {
    /// Announced while healthy (the default).
    Announced,
    /// Withdrawn by the operator whatever the health.
    Withdrawn,
}

/// A gss site override as an operator set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteIntent {
    /// Health decides (the override was released).
    Auto,
    /// Forced up.
    Up,
    /// Forced down.
    Down,
}

/// What an operator asked for; which variant goes with which [`Key`] is checked by
/// [`Key::accepts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Value {
    /// For [`Key::BackendAdmin`].
    Admin {
        /// The state.
        state: AdminIntent,
    },
    /// For [`Key::BackendWeight`]. `config_weight` is the config's own weight for the
    /// backend when the operator set `weight`: the operator's weight holds until the
    /// config's weight changes (then the config wins, on reload as after a restart).
    Weight {
        /// The operator's weight (≥ 1).
        weight: u32,
        /// The config's weight at the time.
        config_weight: u32,
    },
    /// For [`Key::Vip`].
    Vip {
        /// The state.
        state: VipIntent,
    },
    /// For [`Key::Site`].
    Site {
        /// The override.
        state: SiteIntent,
    },
}

impl Key {
    /// Whether `value` is the kind of value this key holds.
    pub fn accepts(&self, value: &Value) -> bool {
        match (self, value) {
            (Key::BackendAdmin { .. }, Value::Admin { .. }) => true,
            (Key::BackendWeight { .. }, Value::Weight { weight, .. }) => *weight >= 1,
            (Key::Vip(_), Value::Vip { .. }) => true,
            (Key::Site(_), Value::Site { .. }) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Admin { state } => write!(f, "{}", as_str(state)),
            Value::Weight { weight, .. } => write!(f, "weight {weight}"),
            Value::Vip { state } => write!(f, "{}", as_str(state)),
            Value::Site { state } => write!(f, "override {}", as_str(state)),
        }
    }
}

/// The serde spelling of a unit variant.
fn as_str<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One intent: the value and when (and where) it was set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// What was asked for.
    pub value: Value,
    /// When, on which node.
    pub stamp: Timestamp,
}

impl Entry {
    /// The node the intent was set on.
    pub fn origin(&self) -> &str {
        &self.stamp.node
    }

    /// Whether this entry wins over `other` for the same key: the later stamp, and
    /// for equal stamps (only a buggy or hostile node issues two) the larger value,
    /// so the choice is the same on every node whatever the order of arrival.
    pub fn beats(&self, other: &Entry) -> bool {
        (&self.stamp, &self.value) > (&other.stamp, &other.value)
    }
}

/// Every key's latest intent.
pub type Intents = BTreeMap<Key, Entry>;

/// Puts `entry` for `key` into `into` when it beats what is there; true when it did.
pub fn merge_entry(into: &mut Intents, key: Key, entry: Entry) -> bool {
    match into.get(&key) {
        Some(old) if !entry.beats(old) => false,
        _ => {
            into.insert(key, entry);
            true
        }
    }
}

/// The latest entry per key of `a` and `b`. Commutative, associative and
/// idempotent (tested), so nodes converge whatever order entries reach them in.
pub fn merge(a: &Intents, b: &Intents) -> Intents {
    let mut out = a.clone();
    for (k, e) in b {
        merge_entry(&mut out, k.clone(), e.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(ms: u64, logical: u32, node: &str) -> Timestamp {
        Timestamp {
            ms,
            logical,
            node: node.into(),
        }
    }

    fn admin(vip: &str, b: &str) -> Key {
        Key::BackendAdmin {
            vip: vip.into(),
            backend: b.into(),
        }
    }

    fn e(value: Value, ms: u64, logical: u32, node: &str) -> Entry {
        Entry {
            value,
            stamp: stamp(ms, logical, node),
        }
    }

    const DRAIN: Value = Value::Admin {
        state: AdminIntent::Drain,
    };
    const READY: Value = Value::Admin {
        state: AdminIntent::Ready,
    };

    #[test]
    fn keys_round_trip_and_reject_garbage() {
        for k in [
            admin("smtp", "mx1"),
            Key::BackendWeight {
                vip: "smtp".into(),
                backend: "mx.1".into(),
            },
            Key::Vip("imap".into()),
            Key::Site("dc1".into()),
        ] {
            assert_eq!(k.to_string().parse::<Key>(), Ok(k));
        }
        assert_eq!(admin("smtp", "mx1").to_string(), "backend/smtp/mx1/admin");
        for bad in [
            "",
            "backend/smtp/mx1",
            "backend/smtp/mx1/colour",
            "backend//mx1/admin",
            "vip/",
            "vip/a/b",
            "site/a b",
            "nonsense/x",
        ] {
            assert!(bad.parse::<Key>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn keys_only_take_their_own_kind_of_value() {
        assert!(admin("a", "b").accepts(&DRAIN));
        assert!(!Key::Site("dc1".into()).accepts(&DRAIN));
        assert!(Key::Vip("a".into()).accepts(&Value::Vip {
            state: VipIntent::Withdrawn
        }));
        let w0 = Value::Weight {
            weight: 0,
            config_weight: 1,
        };
        assert!(!Key::BackendWeight {
            vip: "a".into(),
            backend: "b".into()
        }
        .accepts(&w0));
    }

    #[test]
    fn latest_stamp_wins() {
        let mut m = Intents::new();
        assert!(merge_entry(&mut m, admin("a", "b"), e(DRAIN, 10, 0, "n1")));
        assert!(!merge_entry(&mut m, admin("a", "b"), e(READY, 9, 5, "n2")));
        assert_eq!(m[&admin("a", "b")].value, DRAIN);
        assert!(merge_entry(&mut m, admin("a", "b"), e(READY, 10, 0, "n2")));
        assert_eq!(m[&admin("a", "b")].value, READY);
        assert_eq!(m[&admin("a", "b")].origin(), "n2");
    }

    /// A small fixed universe of entries whose every combination is checked.
    fn samples() -> Vec<Intents> {
        let entries = [
            (admin("a", "b"), e(DRAIN, 10, 0, "n1")),
            (admin("a", "b"), e(READY, 10, 0, "n2")),
            (admin("a", "b"), e(READY, 10, 0, "n1")),
            (
                admin("a", "b"),
                e(
                    Value::Admin {
                        state: AdminIntent::Maint,
                    },
                    11,
                    0,
                    "n3",
                ),
            ),
            (
                Key::Vip("a".into()),
                e(
                    Value::Vip {
                        state: VipIntent::Withdrawn,
                    },
                    5,
                    1,
                    "n2",
                ),
            ),
            (
                Key::Site("dc1".into()),
                e(
                    Value::Site {
                        state: SiteIntent::Down,
                    },
                    7,
                    0,
                    "n1",
                ),
            ),
            (
                Key::Site("dc1".into()),
                e(
                    Value::Site {
                        state: SiteIntent::Auto,
                    },
                    7,
                    0,
                    "n1",
                ),
            ),
        ];
        let mut sets = vec![Intents::new()];
        for mask in 1u32..(1 << entries.len()) {
            let mut m = Intents::new();
            for (i, (k, v)) in entries.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    merge_entry(&mut m, k.clone(), v.clone());
                }
            }
            sets.push(m);
        }
        sets.dedup();
        sets
    }

    #[test]
    fn merge_is_commutative_idempotent_and_associative() {
        let s = samples();
        assert!(s.len() > 10);
        for a in &s {
            assert_eq!(&merge(a, a), a, "idempotent");
            for b in &s {
                let ab = merge(a, b);
                assert_eq!(ab, merge(b, a), "commutative");
                assert_eq!(merge(&ab, b), ab, "absorbs what it merged");
            }
        }
        // Associativity over a stride of the triples (all of them is 10^6 merges).
        for a in s.iter().step_by(3) {
            for b in s.iter().step_by(5) {
                for c in s.iter().step_by(7) {
                    assert_eq!(merge(&merge(a, b), c), merge(a, &merge(b, c)));
                }
            }
        }
    }

    #[test]
    fn values_print_for_events() {
        assert_eq!(DRAIN.to_string(), "drain");
        assert_eq!(
            Value::Site {
                state: SiteIntent::Down
            }
            .to_string(),
            "override down"
        );
    }
}
