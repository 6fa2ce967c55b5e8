//! The files a config names (TLS certificates and keys, CA bundles), opened and parsed
//! by the loader itself so `portico check`, `run` and a reload all find a missing or
//! broken file before anything starts, and report it at the line that names it. The
//! checks use the very functions the roles load these files with ([`crate::tls`]), so
//! `check` cannot pass a file `run` then refuses.
//!
//! Validation only records the references ([`FileRefs`]); [`FileRefs::check`] does the
//! I/O, so [`super::parse`] stays free of it (it is what the fuzzer drives).

use std::ops::Range;
use std::path::{Path, PathBuf};

use rustls::sign::CertifiedKey;

use super::error::{Collector, ConfigErrors};

/// What a named file must contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A PEM certificate chain, leaf first (`tls.cert`).
    CertChain,
    /// A PEM private key (`tls.key`).
    Key,
    /// A PEM bundle with at least one usable CA certificate (`backend_ca`, probe `ca`).
    CaBundle,
    /// A DER OCSP response to staple (`ocsp`).
    OcspResponse,
    /// A shared secret (`cluster.secret_file`).
    Secret,
    /// A directory the process writes its state file into (`state_dir`): an
    /// existing writable directory, or one that can be created.
    StateDir,
}

/// One file reference: where the config names it and what it must hold.
#[derive(Debug, Clone)]
struct FileRef {
    path: PathBuf,
    span: Range<usize>,
    what: &'static str,
    kind: FileKind,
}

/// Every file a config names, in config order, plus which cert and key belong together.
#[derive(Debug, Default)]
pub(crate) struct FileRefs {
    files: Vec<FileRef>,
    /// DNSSEC keys (`[gss.dnssec]`) with the zone they must belong to.
    dnssec: Vec<(PathBuf, Range<usize>, String)>,
    /// Indices into `files` of a certificate chain and its key.
    pairs: Vec<(usize, usize)>,
}

impl FileRefs {
    /// Records a reference; returns its index for [`FileRefs::pair`].
    pub(crate) fn add(
        &mut self,
        path: &Path,
        span: Range<usize>,
        what: &'static str,
        kind: FileKind,
    ) -> usize {
        self.files.push(FileRef {
            path: path.to_path_buf(),
            span,
            what,
            kind,
        });
        self.files.len() - 1
    }

    /// Records a DNSSEC key (both of its files) that must belong to `zone`.
    pub(crate) fn dnssec_key(&mut self, named: &Path, span: Range<usize>, zone: &str) {
        self.dnssec
            .push((named.to_path_buf(), span, zone.to_string()));
    }

    /// Records that the key at `key` must match the certificate at `cert`.
    pub(crate) fn pair(&mut self, cert: usize, key: usize) {
        self.pairs.push((cert, key));
    }

    /// Opens and parses every file; each problem is reported at the value naming it.
    pub(crate) fn check(&self, text: &str, config: &Path) -> Result<(), ConfigErrors> {
        let mut c = Collector::new(text, config);
        let mut ok = vec![true; self.files.len()];
        for (i, f) in self.files.iter().enumerate() {
            if let Err(reason) = check_file(&f.path, f.kind) {
                ok[i] = false;
                c.err(
                    f.span.clone(),
                    format!("{} \"{}\": {reason}", f.what, f.path.display()),
                );
            }
        }
        for &(cert, key) in &self.pairs {
            if !(ok[cert] && ok[key]) {
                continue;
            }
            let (cert, key) = (&self.files[cert], &self.files[key]);
            match check_pair(&cert.path, &key.path) {
                Ok(()) => {}
                Err(PairError::Mismatch(reason)) => c.err(
                    key.span.clone(),
                    format!(
                        "tls key \"{}\" does not fit certificate \"{}\": {reason}",
                        key.path.display(),
                        cert.path.display()
                    ),
                ),
                Err(PairError::Certificate(reason)) => c.err(
                    cert.span.clone(),
                    format!(
                        "tls cert \"{}\": unusable certificate: {reason}",
                        cert.path.display()
                    ),
                ),
            }
        }
        let mut tags = Vec::new();
        for (named, span, zone) in &self.dnssec {
            let zone = match hickory_proto::rr::Name::from_ascii(format!("{zone}.")) {
                Ok(z) => z,
                Err(_) => continue,
            };
            match crate::dnssec::load(named, &zone) {
                Ok(k) if tags.contains(&k.tag) => c.err(
                    span.clone(),
                    format!(
                        "dnssec key \"{}\": another key has the same tag {}; generate a new key",
                        named.display(),
                        k.tag
                    ),
                ),
                Ok(k) => tags.push(k.tag),
                Err(e) => c.err(
                    span.clone(),
                    format!("dnssec key \"{}\": {e}", named.display()),
                ),
            }
        }
        if c.has_errors() {
            Err(c.finish())
        } else {
            Ok(())
        }
    }
}

/// The reason a file is unusable, without its path (the caller names it).
fn check_file(path: &Path, kind: FileKind) -> Result<(), String> {
    let reason = |e: crate::tls::TlsError| match e {
        crate::tls::TlsError::File { reason, .. } => reason,
        other => other.to_string(),
    };
    match kind {
        FileKind::CertChain => crate::tls::load_certs(path).map(drop).map_err(reason),
        FileKind::Key => crate::tls::load_key(path).map(drop).map_err(reason),
        FileKind::CaBundle => crate::tls::client_config(true, Some(path), &[])
            .map(drop)
            .map_err(reason),
        FileKind::OcspResponse => crate::tls::load_ocsp(path).map(drop).map_err(reason),
        FileKind::Secret => crate::cluster::load_secret(path)
            .map(drop)
            .map_err(|e| e.reason()),
        FileKind::StateDir => check_state_dir(path),
    }
}

/// A `state_dir` is usable when it is a directory this user may write, or when it
/// is missing and its nearest existing ancestor is such a directory (`run` creates
/// it). Checked the way `run` will use it, so a typo'd or read-only path is found
/// by `check`, not at the first drain.
fn check_state_dir(path: &Path) -> Result<(), String> {
    let writable = |p: &Path| {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c) = std::ffi::CString::new(p.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: access(2) only reads the NUL-terminated path we own.
        unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
    };
    let mut p = path;
    loop {
        match std::fs::metadata(p) {
            Ok(m) if !m.is_dir() && p == path => return Err("exists and is not a directory".into()),
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "cannot be created: {} is not a directory",
                    p.display()
                ))
            }
            Ok(_) if writable(p) => return Ok(()),
            Ok(_) if p == path => return Err("is not writable by this user".into()),
            Ok(_) => {
                return Err(format!(
                    "does not exist and cannot be created: {} is not writable by this user",
                    p.display()
                ))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match p.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Why a certificate and key cannot be served together.
enum PairError {
    /// The key is not the certificate's.
    Mismatch(String),
    /// The leaf certificate itself cannot be parsed.
    Certificate(String),
}

/// The same check rustls makes when the lb loads the pair: the leaf certificate
/// parses and the key's public half is the leaf's.
fn check_pair(cert: &Path, key: &Path) -> Result<(), PairError> {
    let chain = crate::tls::load_certs(cert).map_err(|e| PairError::Certificate(e.to_string()))?;
    let key = crate::tls::load_key(key).map_err(|e| PairError::Mismatch(e.to_string()))?;
    CertifiedKey::from_der(chain, key, &crate::tls::provider())
        .map(drop)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => PairError::Mismatch(e.to_string()),
            other => PairError::Certificate(other.to_string()),
        })
}
