//! The running node's intent: the merged map, the node's clock and, when `state_dir`
//! is configured, the state file behind them. One store serves both roles of a
//! process (one file). A change is written to the file before it is applied and
//! before the admin command answers, under one lock, so the file, the running
//! state and the order of commands agree, and a write that fails leaves both
//! unchanged and answers the command with an error.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::events::EventLog;

use super::file::{self, Loaded};
use super::{merge_entry, Entry, Hlc, Intents, Key, Value};

/// Why intent could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `state_dir` cannot be created or read.
    #[error("state_dir {}: {source}", dir.display())]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The state file could not be written; nothing changed.
    #[error("cannot write the state file in {}: {source}; nothing was changed", dir.display())]
    Write {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

struct Inner {
    intents: Intents,
    hlc: Hlc,
}

/// A node's intent store.
pub struct IntentStore {
    inner: Mutex<Inner>,
    dir: Option<PathBuf>,
    /// Counts changes, so the fleet publishes a command at once instead of on its
    /// next tick.
    changed: tokio::sync::watch::Sender<u64>,
}

/// The store's map, locked: commands wait while the holder (a reload putting
/// backends in service) reads it, so none is applied to a backend being replaced.
pub struct Locked<'a>(MutexGuard<'a, Inner>);

impl std::ops::Deref for Locked<'_> {
    type Target = Intents;
    fn deref(&self) -> &Intents {
        &self.0.intents
    }
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl IntentStore {
    /// A store without a file (no `state_dir`): intent lives as long as the process.
    pub fn memory(node: impl Into<String>) -> IntentStore {
        IntentStore {
            inner: Mutex::new(Inner {
                intents: Intents::new(),
                hlc: Hlc::new(node),
            }),
            dir: None,
            changed: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Opens `dir` (created, mode 0700, when missing) and reads its state file. A
    /// corrupt or unknown-version file is moved aside, logged as a warning and
    /// recorded in `events`, and the store starts empty; that is never an error.
    /// Errors: the directory cannot be created, the file cannot be read, or the
    /// file cannot be written back (checked now, so an unwritable `state_dir` is
    /// found at start rather than at the first drain).
    pub fn open(
        dir: &Path,
        node: impl Into<String>,
        events: &EventLog,
    ) -> Result<IntentStore, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir_err = |source| StoreError::Dir {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(dir_err)?;
        let path = dir.join(file::FILE_NAME);
        let intents = match file::load(dir).map_err(dir_err)? {
            Loaded::Missing => Intents::new(),
            Loaded::Ok(m) => {
                if !m.is_empty() {
                    tracing::info!(file = %path.display(), count = m.len(), "admin intent restored");
                }
                m
            }
            Loaded::Bad { reason, kept_as } => {
                let kept = match kept_as {
                    Ok(p) => format!("kept aside as {}", p.display()),
                    Err(e) => format!("could not be moved aside ({e})"),
                };
                let msg = format!(
                    "state file {} is unusable ({reason}); it was {kept}; starting without saved admin intent",
                    path.display()
                );
                tracing::warn!("{msg}");
                events.record("state", msg);
                Intents::new()
            }
        };
        let mut hlc = Hlc::new(node);
        for e in intents.values() {
            hlc.observe(&e.stamp);
        }
        file::write(dir, &intents).map_err(|source| StoreError::Write {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(IntentStore {
            inner: Mutex::new(Inner { intents, hlc }),
            dir: Some(dir.to_path_buf()),
            changed: tokio::sync::watch::Sender::new(0),
        })
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Bumped after every change (a command recorded, a peer's entry merged in).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// The state file, when there is one.
    pub fn path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(file::FILE_NAME))
    }

    /// This node's id (the origin of the intents it records).
    pub fn node(&self) -> String {
        self.lock_inner().hlc.node().to_string()
    }

    /// The latest intent for `key`.
    pub fn get(&self, key: &Key) -> Option<Entry> {
        self.lock_inner().intents.get(key).cloned()
    }

    /// A copy of every intent.
    pub fn snapshot(&self) -> Intents {
        self.lock_inner().intents.clone()
    }

    /// Every intent, with commands held off until the guard is dropped.
    pub fn lock(&self) -> Locked<'_> {
        Locked(self.lock_inner())
    }

    /// Records `value` for `key` with a fresh timestamp: written to the state file
    /// (when there is one) first, then `apply` runs with the entry, still under the
    /// store's lock so commands apply in the order they were stamped. On a write
    /// error neither the store nor (since `apply` does not run) the running state
    /// changes.
    pub fn record<R>(
        &self,
        key: Key,
        value: Value,
        apply: impl FnOnce(&Entry) -> R,
    ) -> Result<R, StoreError> {
        let mut g = self.lock_inner();
        let entry = Entry {
            value,
            stamp: g.hlc.now(wall_ms()),
        };
        let mut next = g.intents.clone();
        next.insert(key, entry.clone());
        self.persist(&next)?;
        g.intents = next;
        let r = apply(&entry);
        self.bump();
        Ok(r)
    }

    /// Merges intents received from elsewhere (a peer): the clock observes every
    /// stamp, entries that beat the local ones are written to the state file and
    /// then handed to `apply` (key and entry), in key order. Returns how many won.
    pub fn merge_in(
        &self,
        remote: &Intents,
        mut apply: impl FnMut(&Key, &Entry),
    ) -> Result<usize, StoreError> {
        let mut g = self.lock_inner();
        for e in remote.values() {
            g.hlc.observe(&e.stamp);
        }
        let mut next = g.intents.clone();
        let won: Vec<Key> = remote
            .iter()
            .filter(|(k, e)| {
                k.accepts(&e.value) && merge_entry(&mut next, (*k).clone(), (*e).clone())
            })
            .map(|(k, _)| k.clone())
            .collect();
        if won.is_empty() {
            return Ok(0);
        }
        self.persist(&next)?;
        g.intents = next;
        for k in &won {
            if let Some(e) = g.intents.get(k) {
                apply(k, e);
            }
        }
        self.bump();
        Ok(won.len())
    }

    fn persist(&self, intents: &Intents) -> Result<(), StoreError> {
        match &self.dir {
            Some(dir) => file::write(dir, intents).map_err(|source| StoreError::Write {
                dir: dir.clone(),
                source,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{AdminIntent, SiteIntent, Timestamp};

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "portico-store-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700));
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key() -> Key {
        Key::BackendAdmin {
            vip: "smtp".into(),
            backend: "mx1".into(),
        }
    }

    const DRAIN: Value = Value::Admin {
        state: AdminIntent::Drain,
    };

    #[test]
    fn recorded_intent_is_on_disk_before_apply_and_survives_reopen() {
        let d = Dir::new("reopen");
        let events = EventLog::default();
        let s = IntentStore::open(&d.0, "n1", &events).unwrap();
        let path = s.path().unwrap();
        let on_disk_at_apply = s
            .record(key(), DRAIN, |e| {
                assert_eq!(e.origin(), "n1");
                file::parse(&std::fs::read(&path).unwrap()).unwrap()
            })
            .unwrap();
        assert_eq!(on_disk_at_apply[&key()].value, DRAIN);
        let stamp = s.get(&key()).unwrap().stamp;
        drop(s);
        let s = IntentStore::open(&d.0, "n1", &events).unwrap();
        assert_eq!(s.get(&key()).unwrap().value, DRAIN);
        // The clock carries on past what the file held, whatever the wall clock says.
        s.record(key(), DRAIN, |_| ()).unwrap();
        assert!(s.get(&key()).unwrap().stamp > stamp);
        assert!(events.last(10).is_empty(), "{:?}", events.last(10));
    }

    #[test]
    fn corrupt_file_starts_empty_with_an_event() {
        let d = Dir::new("corrupt");
        std::fs::create_dir_all(&d.0).unwrap();
        std::fs::write(d.0.join(file::FILE_NAME), b"{\"version\":1,\"int").unwrap();
        let events = EventLog::default();
        let s = IntentStore::open(&d.0, "n1", &events).unwrap();
        assert!(s.snapshot().is_empty());
        let ev = events.last(10);
        assert_eq!(ev.len(), 1);
        assert!(
            ev[0].message.contains("unusable (corrupt"),
            "{}",
            ev[0].message
        );
        assert!(
            ev[0].message.contains("intent.json.bad-"),
            "{}",
            ev[0].message
        );
        // A fresh, valid file replaced it.
        assert_eq!(
            file::parse(&std::fs::read(d.0.join(file::FILE_NAME)).unwrap()),
            Ok(Intents::new())
        );
    }

    #[test]
    fn missing_dir_is_created() {
        let d = Dir::new("missing");
        let nested = d.0.join("a/b");
        let s = IntentStore::open(&nested, "n1", &EventLog::default()).unwrap();
        assert!(nested.join(file::FILE_NAME).exists());
        s.record(key(), DRAIN, |_| ()).unwrap();
    }

    #[test]
    fn write_failure_changes_nothing_and_skips_apply() {
        // Tests run as root, who writes through mode bits: the temp file's name
        // taken by a non-empty directory makes the write fail instead.
        let d = Dir::new("ro");
        let s = IntentStore::open(&d.0, "n1", &EventLog::default()).unwrap();
        std::fs::create_dir(d.0.join(".intent.json.tmp")).unwrap();
        std::fs::write(d.0.join(".intent.json.tmp/x"), b"x").unwrap();
        let mut applied = false;
        let r = s.record(key(), DRAIN, |_| applied = true);
        assert!(matches!(r, Err(StoreError::Write { .. })), "{r:?}");
        assert!(!applied);
        assert!(s.get(&key()).is_none());
        assert!(
            file::parse(&std::fs::read(d.0.join(file::FILE_NAME)).unwrap())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unwritable_dir_fails_open() {
        let d = Dir::new("notadir");
        std::fs::write(&d.0, b"a file where the dir should be").unwrap();
        let r = IntentStore::open(&d.0, "n1", &EventLog::default());
        assert!(matches!(r, Err(StoreError::Dir { .. })), "{:?}", r.err());
        let _ = std::fs::remove_file(&d.0);
    }

    #[test]
    fn changes_are_signalled_for_records_and_winning_merges_only() {
        let d = Dir::new("changes");
        let s = IntentStore::open(&d.0, "n1", &EventLog::default()).unwrap();
        let mut rx = s.changes();
        rx.borrow_and_update();
        s.record(key(), DRAIN, |_| ()).unwrap();
        assert!(rx.has_changed().unwrap(), "a command wakes the fleet");
        rx.borrow_and_update();
        // A peer's copy of what we hold wins nothing: no wake-up.
        assert_eq!(s.merge_in(&s.snapshot(), |_, _| ()).unwrap(), 0);
        assert!(!rx.has_changed().unwrap());
        // A failed write changes nothing, so it signals nothing either.
        std::fs::create_dir(d.0.join(".intent.json.tmp")).unwrap();
        std::fs::write(d.0.join(".intent.json.tmp/x"), b"x").unwrap();
        assert!(s.record(key(), DRAIN, |_| ()).is_err());
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn merge_in_applies_only_winners() {
        let s = IntentStore::memory("n1");
        s.record(key(), DRAIN, |_| ()).unwrap();
        let local = s.get(&key()).unwrap();
        let mut remote = Intents::new();
        // Older than the local drain: loses.
        remote.insert(
            key(),
            Entry {
                value: Value::Admin {
                    state: AdminIntent::Ready,
                },
                stamp: Timestamp {
                    ms: local.stamp.ms - 1,
                    logical: 0,
                    node: "n2".into(),
                },
            },
        );
        let site = Key::Site("dc1".into());
        let far = Timestamp {
            ms: local.stamp.ms + 60_000,
            logical: 0,
            node: "n2".into(),
        };
        remote.insert(
            site.clone(),
            Entry {
                value: Value::Site {
                    state: SiteIntent::Down,
                },
                stamp: far.clone(),
            },
        );
        let mut applied = Vec::new();
        let n = s.merge_in(&remote, |k, _| applied.push(k.clone())).unwrap();
        assert_eq!(n, 1);
        assert_eq!(applied, vec![site]);
        assert_eq!(s.get(&key()).unwrap().value, DRAIN);
        // The next local stamp is after the peer's.
        s.record(key(), DRAIN, |_| ()).unwrap();
        assert!(s.get(&key()).unwrap().stamp > far);
        // Merging the same again changes nothing.
        assert_eq!(
            s.merge_in(&remote, |_, _| panic!("applied twice")).unwrap(),
            0
        );
    }
}
