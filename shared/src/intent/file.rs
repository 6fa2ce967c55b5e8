//! The state file: every intent of a node as JSON (`{"version": 1, "intents": [...]}`)
//! in `state_dir/intent.json`. Written whole and atomically (a temp file in the same
//! directory, written, fsynced, renamed over the old one, then the directory
//! fsynced), so after a crash the file is either the old or the new version, never a
//! mix, and the rename is durable before the admin command answers `ok`. A file that
//! does not parse, or is from a version this build does not know, is moved aside
//! (`intent.json.bad-UNIXTIME`) for the operator to inspect and the node starts
//! without intent: a bad file must never keep a load balancer down.
//!
//! [`parse`] is the one parser of the file (fuzzed as `state_file`); it never panics.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{merge_entry, Entry, Intents, Key, Timestamp, Value};

/// The format version this build writes and reads.
pub const VERSION: u64 = 1;

/// The state file's name inside `state_dir`.
pub const FILE_NAME: &str = "intent.json";

/// Why a state file was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, truncated, a field missing or of the wrong type, a bad key.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// Written by a build with another format.
    #[error("unknown version {0} (this build reads version {VERSION})")]
    UnknownVersion(u64),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    version: u64,
    intents: Vec<Record>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    key: Key,
    value: Value,
    stamp: Timestamp,
}

/// Only the version, read first so an unknown version is told apart from garbage.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<serde_json::Value>,
}

/// Parses a state file's bytes. Entries repeating a key are merged (latest wins), as
/// they would be from peers.
pub fn parse(bytes: &[u8]) -> Result<Intents, ParseError> {
    let corrupt = |e: serde_json::Error| ParseError::Corrupt(e.to_string());
    let head: VersionOnly = serde_json::from_slice(bytes).map_err(corrupt)?;
    match head.version.as_ref().map(serde_json::Value::as_u64) {
        Some(Some(VERSION)) => {}
        Some(Some(v)) => return Err(ParseError::UnknownVersion(v)),
        Some(None) => {
            return Err(ParseError::Corrupt(
                "\"version\" is not a non-negative integer".into(),
            ))
        }
        None => return Err(ParseError::Corrupt("no \"version\" field".into())),
    }
    let doc: Doc = serde_json::from_slice(bytes).map_err(corrupt)?;
    let mut out = Intents::new();
    for r in doc.intents {
        if !r.key.accepts(&r.value) {
            return Err(ParseError::Corrupt(format!(
                "key {} cannot hold {:?}",
                r.key, r.value
            )));
        }
        merge_entry(
            &mut out,
            r.key,
            Entry {
                value: r.value,
                stamp: r.stamp,
            },
        );
    }
    Ok(out)
}

/// The file's bytes for `intents` (keys in order, one entry per line for `diff`).
pub fn encode(intents: &Intents) -> Vec<u8> {
    let mut out = format!("{{\"version\":{VERSION},\"intents\":[");
    for (i, (key, e)) in intents.iter().enumerate() {
        let record = Record {
            key: key.clone(),
            value: e.value,
            stamp: e.stamp.clone(),
        };
        if i > 0 {
            out.push(',');
        }
        out.push_str("\n  ");
        // A record of strings and integers always serializes.
        out.push_str(&serde_json::to_string(&record).unwrap_or_default());
    }
    out.push_str("\n]}\n");
    out.into_bytes()
}

/// Writes `intents` to `dir/intent.json` atomically and durably (see the module
/// doc). On error the old file is untouched.
pub fn write(dir: &Path, intents: &Intents) -> std::io::Result<()> {
    write_atomic(dir, FILE_NAME, &encode(intents))
}

/// Replaces `dir/name` with `bytes` atomically and durably: `dir/.name.tmp` (mode
/// 0600) written and fsynced, renamed over `name`, then `dir` fsynced, so after a
/// crash the file is whole, old or new. Other state files of the process (the gss's
/// serial) use it too.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&temp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// What [`load`] found.
#[derive(Debug)]
pub enum Loaded {
    /// No state file yet.
    Missing,
    /// The file's intents.
    Ok(Intents),
    /// The file was unusable; it was moved to `kept_as` (or could not be moved, and
    /// `kept_as` is the error).
    Bad {
        /// Why it was unusable.
        reason: ParseError,
        /// Where it is now.
        kept_as: Result<PathBuf, String>,
    },
}

/// Reads `dir/intent.json`, moving an unusable one aside as
/// `intent.json.bad-UNIXTIME`. Only a read error other than "not found" is an error.
pub fn load(dir: &Path) -> std::io::Result<Loaded> {
    let path = dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    match parse(&bytes) {
        Ok(intents) => Ok(Loaded::Ok(intents)),
        Err(reason) => Ok(Loaded::Bad {
            reason,
            kept_as: keep_aside(dir, &path),
        }),
    }
}

fn keep_aside(dir: &Path, path: &Path) -> Result<PathBuf, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut target = dir.join(format!("{FILE_NAME}.bad-{now}"));
    let mut n = 1;
    while target.exists() && n < 100 {
        target = dir.join(format!("{FILE_NAME}.bad-{now}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(|e| e.to_string())?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{AdminIntent, SiteIntent, VipIntent};

    fn sample() -> Intents {
        let mut m = Intents::new();
        let stamp = |ms| Timestamp {
            ms,
            logical: 2,
            node: "lb-1".into(),
        };
        m.insert(
            Key::BackendAdmin {
                vip: "smtp".into(),
                backend: "mx1".into(),
            },
            Entry {
                value: Value::Admin {
                    state: AdminIntent::Drain,
                },
                stamp: stamp(1_700_000_000_000),
            },
        );
        m.insert(
            Key::BackendWeight {
                vip: "smtp".into(),
                backend: "mx1".into(),
            },
            Entry {
                value: Value::Weight {
                    weight: 7,
                    config_weight: 1,
                },
                stamp: stamp(1_700_000_000_001),
            },
        );
        m.insert(
            Key::Vip("smtp".into()),
            Entry {
                value: Value::Vip {
                    state: VipIntent::Withdrawn,
                },
                stamp: stamp(1_700_000_000_002),
            },
        );
        m.insert(
            Key::Site("dc1".into()),
            Entry {
                value: Value::Site {
                    state: SiteIntent::Down,
                },
                stamp: stamp(1_700_000_000_003),
            },
        );
        m
    }

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "portico-intent-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn round_trips_every_key_kind() {
        let m = sample();
        let bytes = encode(&m);
        assert_eq!(parse(&bytes), Ok(m));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("{\"version\":1,"), "{text}");
        assert!(text.contains("\"key\":\"vip/smtp\""), "{text}");
        assert!(
            text.contains("\"key\":\"backend/smtp/mx1/admin\""),
            "{text}"
        );
        assert_eq!(parse(&encode(&Intents::new())), Ok(Intents::new()));
    }

    #[test]
    fn corrupt_truncated_and_unknown_versions_are_told_apart() {
        let good = encode(&sample());
        for cut in [0, 1, good.len() / 2, good.len() - 3] {
            assert!(
                matches!(parse(&good[..cut]), Err(ParseError::Corrupt(_))),
                "truncated at {cut}"
            );
        }
        assert!(matches!(
            parse(b"\xff\xfe garbage"),
            Err(ParseError::Corrupt(_))
        ));
        assert!(matches!(parse(b"[]"), Err(ParseError::Corrupt(_))));
        assert!(matches!(
            parse(br#"{"intents":[]}"#),
            Err(ParseError::Corrupt(_))
        ));
        assert!(matches!(
            parse(br#"{"version":"1","intents":[]}"#),
            Err(ParseError::Corrupt(_))
        ));
        assert_eq!(
            parse(br#"{"version":2,"intents":"whatever the future holds"}"#),
            Err(ParseError::UnknownVersion(2))
        );
        // A key holding another key's kind of value.
        let mixed = br#"{"version":1,"intents":[{"key":"site/dc1","value":{"kind":"admin","state":"drain"},"stamp":{"ms":1,"logical":0,"node":"a"}}]}"#;
        assert!(matches!(parse(mixed), Err(ParseError::Corrupt(_))));
        let unknown_field = br#"{"version":1,"intents":[],"extra":1}"#;
        assert!(matches!(parse(unknown_field), Err(ParseError::Corrupt(_))));
    }

    #[test]
    fn repeated_keys_merge_latest_wins() {
        let text = br#"{"version":1,"intents":[
 {"key":"site/dc1","value":{"kind":"site","state":"down"},"stamp":{"ms":5,"logical":0,"node":"a"}},
 {"key":"site/dc1","value":{"kind":"site","state":"auto"},"stamp":{"ms":4,"logical":9,"node":"b"}}]}"#;
        let m = parse(text).unwrap();
        assert_eq!(
            m[&Key::Site("dc1".into())].value,
            Value::Site {
                state: SiteIntent::Down
            }
        );
    }

    #[test]
    fn write_then_load() {
        let d = Dir::new("rw");
        assert!(matches!(load(&d.0).unwrap(), Loaded::Missing));
        write(&d.0, &sample()).unwrap();
        match load(&d.0).unwrap() {
            Loaded::Ok(m) => assert_eq!(m, sample()),
            other => panic!("{other:?}"),
        }
        assert!(
            !d.0.join(".intent.json.tmp").exists(),
            "temp file renamed away"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.0.join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_files_are_kept_aside() {
        for (content, version) in [
            (&b"{\"version\":1,\"intents\":[{\"ke"[..], false),
            (&b"{\"version\":99,\"intents\":[]}"[..], true),
        ] {
            let d = Dir::new("bad");
            std::fs::write(d.0.join(FILE_NAME), content).unwrap();
            match load(&d.0).unwrap() {
                Loaded::Bad { reason, kept_as } => {
                    assert_eq!(
                        matches!(reason, ParseError::UnknownVersion(99)),
                        version,
                        "{reason}"
                    );
                    let kept = kept_as.unwrap();
                    assert!(
                        kept.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with("intent.json.bad-"),
                        "{kept:?}"
                    );
                    assert_eq!(std::fs::read(&kept).unwrap(), content);
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(load(&d.0).unwrap(), Loaded::Missing));
        }
    }

    #[test]
    fn missing_dir_is_a_write_error_and_leaves_nothing() {
        let d = Dir::new("gone");
        let gone = d.0.join("not-there");
        assert!(write(&gone, &sample()).is_err());
        assert!(!gone.exists());
        assert!(matches!(load(&gone).unwrap(), Loaded::Missing));
    }
}
