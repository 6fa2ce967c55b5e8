//! TLS termination for `mode = "https"` VIPs: several certificate/key pairs per VIP
//! chosen by SNI, the first pair being the default, swapped atomically on reload.
//!
//! Each pair's names are read from the leaf certificate's subjectAltName DNS entries
//! (exact names and `*.example.com` wildcards, matching one label as RFC 6125 says).
//! A handshake whose SNI matches no name — or that sends none, as IP-literal clients
//! do — gets the default pair. Several pairs may serve one name (an ECDSA and an RSA
//! certificate): among the pairs that match, the first whose key can sign with a
//! signature scheme the client offered is chosen, so old RSA-only clients and modern
//! ECDSA clients both get a certificate they can verify. The TLS versions and TLS 1.2
//! suites offered come from `tls_min_version` and `tls12_ciphers`. A pair may staple
//! an OCSP response read from a file (`ocsp`), re-read with the certificates. [`CertStore::reload`] re-reads every file and swaps
//! the whole set only if all of them load, so a bad file on reload keeps the old
//! certificates serving; handshakes after the swap see the new set while established
//! connections keep the session they negotiated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls::SupportedCipherSuite;
use shared::config::{CertPair, HttpVipConfig, TlsConfig, TlsVersion};
use shared::tls::{load_certs, load_key, provider, TlsError};

use crate::error::CertError;

/// One loaded pair and the names it serves (lower case; wildcards as `*.suffix`).
#[derive(Debug)]
struct Entry {
    names: Vec<String>,
    key: Arc<CertifiedKey>,
}

/// OCSP response files by the certificate file they staple to (`ocsp`).
pub type OcspFiles = BTreeMap<PathBuf, PathBuf>;

/// The certificates of one VIP's settings, shared by its resolver and
/// [`crate::Lb::reload_certs`]. The files it names are fixed (a config reload builds a
/// new store); what they hold may be re-read in place.
#[derive(Debug)]
pub struct CertStore {
    pairs: Vec<CertPair>,
    ocsp: OcspFiles,
    entries: ArcSwap<Vec<Entry>>,
}

/// Reads the DER OCSP response to staple (see [`shared::tls::load_ocsp`]).
fn load_ocsp(path: &Path) -> Result<Vec<u8>, CertError> {
    shared::tls::load_ocsp(path).map_err(|e| CertError::Pair {
        path: path.to_path_buf(),
        reason: match e {
            shared::tls::TlsError::File { reason, .. } => reason,
            other => other.to_string(),
        },
    })
}

fn load_pair(pair: &CertPair, ocsp: &OcspFiles) -> Result<Entry, CertError> {
    let chain = load_certs(&pair.cert)?;
    let key = load_key(&pair.key)?;
    let bad = |reason: String| CertError::Pair {
        path: pair.cert.clone(),
        reason,
    };
    let mut names = Vec::new();
    {
        let leaf = chain.first().ok_or_else(|| bad("empty chain".into()))?;
        let parsed = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| bad(format!("unparsable certificate: {e}")))?;
        for n in parsed.valid_dns_names() {
            names.push(n.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    let mut certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| bad(format!("key does not match certificate: {e}")))?;
    if let Some(file) = ocsp.get(&pair.cert) {
        certified.ocsp = Some(load_ocsp(file)?);
    }
    Ok(Entry {
        names,
        key: Arc::new(certified),
    })
}

fn load_all(pairs: &[CertPair], ocsp: &OcspFiles) -> Result<Vec<Entry>, CertError> {
    if pairs.is_empty() {
        return Err(CertError::Empty);
    }
    pairs.iter().map(|p| load_pair(p, ocsp)).collect()
}

/// True when a certificate name (`mail.example.com` or `*.example.com`) covers `sni`.
pub fn name_matches(pattern: &str, sni: &str) -> bool {
    if let Some(suffix) = pattern.strip_prefix("*.") {
        match sni.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == suffix,
            None => false,
        }
    } else {
        pattern == sni
    }
}

impl CertStore {
    /// Loads every pair of `cfg` (with its OCSP response from `ocsp`); all must load.
    pub fn load(cfg: &TlsConfig, ocsp: &OcspFiles) -> Result<Arc<CertStore>, CertError> {
        let entries = load_all(&cfg.certs, ocsp)?;
        for e in &entries {
            tracing::debug!(names = ?e.names, "certificate loaded");
        }
        Ok(Arc::new(CertStore {
            pairs: cfg.certs.clone(),
            ocsp: ocsp.clone(),
            entries: ArcSwap::from_pointee(entries),
        }))
    }

    /// Re-reads the files, OCSP responses included, and serves the new set to new
    /// handshakes; on any error nothing changes and the error is returned.
    pub fn reload(&self) -> Result<(), CertError> {
        let entries = load_all(&self.pairs, &self.ocsp)?;
        self.entries.store(Arc::new(entries));
        Ok(())
    }

    /// The certificate for `sni` (exact name first, then wildcard, then the default)
    /// that can sign with one of the client's `schemes`: several pairs may serve one
    /// name (an ECDSA and an RSA certificate), and each client gets one it can
    /// verify. Within a group the configured order is the preference; when none of a
    /// group fits, its first pair is offered and the handshake fails as it must.
    pub fn pick(
        &self,
        sni: Option<&str>,
        schemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let entries = self.entries.load();
        let fits = |e: &&Entry| e.key.key.choose_scheme(schemes).is_some();
        let best = |group: &mut dyn Iterator<Item = &Entry>| -> Option<Arc<CertifiedKey>> {
            let mut first = None;
            for e in group {
                if fits(&e) {
                    return Some(Arc::clone(&e.key));
                }
                first.get_or_insert_with(|| Arc::clone(&e.key));
            }
            first
        };
        if let Some(sni) = sni {
            let sni = sni.trim_end_matches('.').to_ascii_lowercase();
            let exact = best(&mut entries.iter().filter(|e| e.names.contains(&sni)));
            if exact.is_some() {
                return exact;
            }
            let wild = best(&mut entries.iter().filter(|e| {
                e.names
                    .iter()
                    .any(|n| n.starts_with("*.") && name_matches(n, &sni))
            }));
            if wild.is_some() {
                return wild;
            }
        }
        // The default: the first pair, or the first pair serving its names that the
        // client can verify.
        let default = entries.first()?;
        best(&mut entries.iter().filter(|e| e.names == default.names))
    }

    /// The certificate files currently served.
    pub fn files(&self) -> Vec<(PathBuf, PathBuf)> {
        self.pairs
            .iter()
            .map(|p| (p.cert.clone(), p.key.clone()))
            .collect()
    }
}

/// rustls' hook into the store.
#[derive(Debug)]
struct Resolver(Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name(), hello.signature_schemes())
    }
}

/// The server configuration of an HTTPS VIP: TLS 1.3 and (unless
/// `tls_min_version = "1.3"`) TLS 1.2 with the `ring` provider, its TLS 1.2 suites
/// narrowed to `tls12_ciphers` when set (TLS 1.3 suites are all kept: each is
/// strong), ALPN `h2` then `http/1.1`, session tickets for cheap resumption, and
/// certificates from `store` (so renewed certificates need no new configuration).
/// With the configuration it replaces (`old`, a reload), the ticket keys and the
/// session cache carry over: clients resume across reloads.
pub fn server_config(
    store: &Arc<CertStore>,
    http: &HttpVipConfig,
    old: Option<&rustls::ServerConfig>,
) -> Result<Arc<rustls::ServerConfig>, CertError> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(names) = &http.tls12_ciphers {
        let all = rustls::crypto::ring::ALL_CIPHER_SUITES;
        let mut suites: Vec<SupportedCipherSuite> = all
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for name in names {
            if let Some(s) = all.iter().find(|s| {
                s.version() == &rustls::version::TLS12 && s.suite().as_str() == Some(name.as_str())
            }) {
                suites.push(*s);
            }
        }
        provider.cipher_suites = suites;
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match http.tls_min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .map_err(TlsError::from)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(Arc::clone(store))));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    match old {
        Some(old) => {
            config.ticketer = Arc::clone(&old.ticketer);
            config.session_storage = Arc::clone(&old.session_storage);
        }
        None => {
            if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
                config.ticketer = ticketer;
            }
        }
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(name_matches("*.example.com", "mail.example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("mail.example.com", "mail.example.com"));
        assert!(!name_matches("mail.example.com", "web.example.com"));
    }
}
