//! DNSSEC keys and signing, no sockets and no zone knowledge: the keys of
//! `[gss.dnssec]` ([`KeySet`], loaded through `shared::dnssec`, hickory-proto's signing
//! keys underneath), the records they publish (DNSKEY, CDS, CDNSKEY), one RRset's
//! RRSIGs ([`KeySet::sign`]), and the re-sign schedule ([`resign_loop`]).
//!
//! Signatures are made ahead, never per query: [`crate::zone`] signs every RRset the
//! zone can answer with when a template is built (load, reload) and again when the
//! re-sign loop fires, and keeps them with the template; answers only copy them.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::dnssec::rdata::sig::SigInput;
use hickory_proto::dnssec::rdata::{DNSSECRData, CDNSKEY, CDS, DNSKEY, RRSIG};
use hickory_proto::dnssec::{DigestType, PublicKey, Verifier, TBS};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use rand::Rng;
use shared::config::{DnssecConfig, KeyRole, KeyState};
use shared::dnssec::ZoneKey;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::error::GssError;

/// One configured key, loaded.
#[derive(Debug, Clone)]
pub struct Key {
    /// The file as named in the config.
    pub file: PathBuf,
    /// The loaded key.
    pub key: ZoneKey,
    /// What it signs.
    pub role: KeyRole,
    /// Where it is in a rollover.
    pub state: KeyState,
}

/// The signature timing of `[gss.dnssec]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Lifetime of a signature.
    pub validity: Duration,
    /// Re-sign when the earliest expiry is this close.
    pub refresh: Duration,
    /// Inception backdating.
    pub inception: Duration,
    /// Random spread taken off each expiry.
    pub jitter: Duration,
}

/// The zone's keys and timing.
#[derive(Debug, Clone)]
pub struct KeySet {
    /// The apex (signer name).
    pub origin: Name,
    /// Keys in config order.
    pub keys: Vec<Key>,
    /// Signature timing.
    pub timing: Timing,
}

fn rrsig_of(record: &Record) -> Option<&RRSIG> {
    match &record.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

/// The expiry (unix seconds) of an RRSIG record, if it is one.
pub fn expiry_of(record: &Record) -> Option<u32> {
    rrsig_of(record).map(|s| s.input().sig_expiration.get())
}

impl KeySet {
    /// Loads every key of `cfg` for the zone `origin`.
    pub fn load(cfg: &DnssecConfig, origin: &Name) -> Result<KeySet, GssError> {
        let mut keys: Vec<Key> = Vec::with_capacity(cfg.keys.len());
        for k in &cfg.keys {
            let key = shared::dnssec::load(&k.file, origin)
                .map_err(|e| GssError::Config(format!("dnssec key {}: {e}", k.file.display())))?;
            if keys.iter().any(|o| o.key.tag == key.tag) {
                return Err(GssError::Config(format!(
                    "dnssec key {}: another key has the same tag {}",
                    k.file.display(),
                    key.tag
                )));
            }
            keys.push(Key {
                file: k.file.clone(),
                key,
                role: k.role,
                state: k.state,
            });
        }
        Ok(KeySet {
            origin: origin.clone(),
            keys,
            timing: Timing {
                validity: cfg.validity,
                refresh: cfg.refresh,
                inception: cfg.inception,
                jitter: cfg.jitter,
            },
        })
    }

    /// The DNSKEY RRset: every configured key, whatever its state (published keys
    /// are there to be cached before they sign, retired ones until the signatures
    /// they made have expired from caches).
    pub fn dnskeys(&self, ttl: u32) -> Vec<Record> {
        self.keys
            .iter()
            .map(|k| {
                Record::from_rdata(
                    self.origin.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::DNSKEY(k.key.dnskey.clone())),
                )
            })
            .collect()
    }

    /// The keys the parent's DS set should point at (RFC 7344): KSKs and CSKs that
    /// are published or active; retired ones are left out so the parent drops them.
    fn entry_keys(&self) -> impl Iterator<Item = &Key> {
        self.keys
            .iter()
            .filter(|k| k.role.signs_keys() && k.state != KeyState::Retired)
    }

    /// CDS (SHA-256 digests) of the entry keys.
    pub fn cds(&self, ttl: u32) -> Vec<Record> {
        self.entry_keys()
            .filter_map(|k| {
                let digest = k
                    .key
                    .dnskey
                    .to_digest(&self.origin, DigestType::SHA256)
                    .ok()?;
                Some(Record::from_rdata(
                    self.origin.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::CDS(CDS::new(
                        k.key.tag,
                        Some(k.key.dnskey.algorithm()),
                        DigestType::SHA256,
                        digest.as_ref().to_vec(),
                    ))),
                ))
            })
            .collect()
    }

    /// CDNSKEY of the entry keys.
    pub fn cdnskey(&self, ttl: u32) -> Vec<Record> {
        self.entry_keys()
            .map(|k| {
                let d: &DNSKEY = &k.key.dnskey;
                Record::from_rdata(
                    self.origin.clone(),
                    ttl,
                    RData::DNSSEC(DNSSECRData::CDNSKEY(CDNSKEY::with_flags(
                        d.flags(),
                        Some(d.algorithm()),
                        d.public_key().public_bytes().to_vec(),
                    ))),
                )
            })
            .collect()
    }

    /// The DS records for the parent (SHA-256), as `show dnssec` prints them.
    pub fn ds_lines(&self) -> Vec<String> {
        self.cds(0)
            .iter()
            .map(|r| format!("{} IN DS {}", r.name, r.data))
            .collect()
    }

    /// RRSIGs over `rrset` (one owner, one type, one TTL) made at `unix` seconds, one
    /// per active key whose role signs this type. Expiry is `validity` ahead minus
    /// a random part of `jitter`, so one zone's signatures do not all expire at once;
    /// inception is backdated by `inception`.
    pub fn sign(&self, rrset: &[Record], unix: u64) -> Vec<Record> {
        let Some(first) = rrset.first() else {
            return Vec::new();
        };
        let rtype = first.record_type();
        let key_set = matches!(
            rtype,
            RecordType::DNSKEY | RecordType::CDS | RecordType::CDNSKEY
        );
        let t = &self.timing;
        let jitter = t.jitter.as_secs();
        let spread = if jitter == 0 {
            0
        } else {
            rand::thread_rng().gen_range(0..=jitter)
        };
        let expiration = unix
            .saturating_add(t.validity.as_secs())
            .saturating_sub(spread);
        let inception = unix.saturating_sub(t.inception.as_secs());
        let mut out = Vec::new();
        for k in &self.keys {
            let signs = if key_set {
                k.role.signs_keys()
            } else {
                k.role.signs_zone()
            };
            if k.state != KeyState::Active || !signs {
                continue;
            }
            let input = SigInput {
                type_covered: rtype,
                algorithm: k.key.signer.algorithm(),
                num_labels: first.name.num_labels(),
                original_ttl: first.ttl,
                sig_expiration: SerialNumber::new(expiration as u32),
                sig_inception: SerialNumber::new(inception as u32),
                key_tag: k.key.tag,
                signer_name: self.origin.clone(),
            };
            let signature = TBS::from_input(&first.name, DNSClass::IN, &input, rrset.iter())
                .map_err(|e| e.to_string())
                .and_then(|tbs| k.key.signer.sign(&tbs).map_err(|e| e.to_string()));
            match signature {
                Ok(sig) => out.push(Record::from_rdata(
                    first.name.clone(),
                    first.ttl,
                    RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, sig))),
                )),
                Err(e) => {
                    tracing::error!(owner = %first.name, %rtype, tag = k.key.tag, error = %e, "dnssec: signing failed");
                }
            }
        }
        out
    }
}

/// Shortest wait between two re-signs, whatever the timing says, so a clock far
/// ahead of the signatures cannot make the loop spin.
pub const MIN_RESIGN_GAP: Duration = Duration::from_secs(1);

/// How long until signatures whose earliest expiry is `earliest` (unix seconds) are
/// due to be re-made at `now`: `refresh` before that expiry, at least
/// [`MIN_RESIGN_GAP`].
pub fn resign_delay(earliest: u64, refresh: Duration, now: u64) -> Duration {
    Duration::from_secs(
        earliest
            .saturating_sub(refresh.as_secs())
            .saturating_sub(now),
    )
    .max(MIN_RESIGN_GAP)
}

/// The re-sign loop the supervisor runs: waits until the current signatures (the
/// earliest expiry and the refresh margin `current` reports, `None` for an unsigned
/// zone) are due, then has `sign` re-make them at the time `clock` (unix seconds)
/// gives. `wake` is notified when a reload replaced the signatures, so the wait
/// starts over from the new ones. Ends when `cancel` fires or `sign` returns `false`.
pub async fn resign_loop<C, Cur, S, F>(
    clock: C,
    current: Cur,
    mut sign: S,
    wake: &Notify,
    cancel: CancellationToken,
) where
    C: Fn() -> u64,
    Cur: Fn() -> Option<(u64, Duration)>,
    S: FnMut(u64) -> F,
    F: Future<Output = bool>,
{
    loop {
        let due = current().map(|(earliest, refresh)| resign_delay(earliest, refresh, clock()));
        let woken = wake.notified();
        tokio::pin!(woken);
        let fire = async {
            match due {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = &mut woken => continue,
            _ = fire => {
                if !sign(clock()).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use tokio::time::Instant;

    #[test]
    fn delay_is_refresh_before_the_earliest_expiry() {
        let h = Duration::from_secs(3600);
        assert_eq!(resign_delay(10_000 + 3 * 3600, h, 10_000), 2 * h);
        assert_eq!(resign_delay(10_000, h, 10_000), MIN_RESIGN_GAP, "overdue");
        assert_eq!(resign_delay(0, h, u64::MAX), MIN_RESIGN_GAP);
    }

    /// On tokio's paused clock, over 60 simulated days of 1-day signatures with a
    /// 6-hour refresh and 2 hours of jitter: every re-sign happens before the
    /// signatures it replaces expire (at least refresh ahead), never more than once
    /// per due time, and a reload's new signatures restart the wait.
    #[tokio::test(start_paused = true)]
    async fn signatures_are_remade_before_they_expire() {
        let start = Instant::now();
        let base = 1_800_000_000u64;
        let clock = move || base + start.elapsed().as_secs();
        let timing = Timing {
            validity: Duration::from_secs(86400),
            refresh: Duration::from_secs(6 * 3600),
            inception: Duration::from_secs(3600),
            jitter: Duration::from_secs(2 * 3600),
        };
        let sign_at = move |unix: u64, n: u64| {
            // The earliest of many jittered expiries: within jitter of the full validity.
            unix + timing.validity.as_secs() - (n * 1237) % timing.jitter.as_secs()
        };
        let earliest = Rc::new(RefCell::new(sign_at(clock(), 0)));
        let made: Rc<RefCell<Vec<(u64, u64)>>> = Rc::default();
        let wake = Rc::new(Notify::new());
        let cancel = CancellationToken::new();
        let task = {
            let (earliest, made, wake, cancel) =
                (earliest.clone(), made.clone(), wake.clone(), cancel.clone());
            async move {
                let current = || Some((*earliest.borrow(), timing.refresh));
                let sign = |unix: u64| {
                    let (earliest, made) = (earliest.clone(), made.clone());
                    async move {
                        let old = *earliest.borrow();
                        made.borrow_mut().push((unix, old));
                        let n = made.borrow().len() as u64;
                        *earliest.borrow_mut() = sign_at(unix, n);
                        true
                    }
                };
                resign_loop(clock, current, sign, &wake, cancel).await
            }
        };
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let handle = tokio::task::spawn_local(task);
                tokio::time::sleep(Duration::from_secs(30 * 86400)).await;
                // A reload at day 30 brings signatures that expire in 2 days.
                *earliest.borrow_mut() = clock() + 2 * 86400;
                wake.notify_one();
                tokio::time::sleep(Duration::from_secs(30 * 86400)).await;
                cancel.cancel();
                handle.await.unwrap();
            })
            .await;
        let made = made.borrow();
        // About one re-sign per (validity - jitter - refresh) = 16 to 18 hours.
        assert!((75..=95).contains(&made.len()), "{} re-signs", made.len());
        for w in made.windows(2) {
            assert!(w[1].0 > w[0].0, "one re-sign per due time");
        }
        for (unix, replaced_expiry) in made.iter() {
            assert!(
                unix + timing.refresh.as_secs() <= *replaced_expiry,
                "re-signed at {unix}, {}s before expiry {replaced_expiry}",
                replaced_expiry - unix
            );
        }
        // The reload's signatures (expiring 2 days on) were re-made 6 h before expiry.
        let reload_at = base + 30 * 86400;
        let after = made.iter().find(|(u, _)| *u > reload_at).unwrap();
        assert_eq!(after.1, reload_at + 2 * 86400);
        assert_eq!(after.0, reload_at + 2 * 86400 - 6 * 3600);
    }
}
