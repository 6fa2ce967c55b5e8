//! DNSSEC keys in the files BIND's `dnssec-keygen` writes: `K<zone>+<alg>+<tag>.key`
//! (the DNSKEY record) and `.private` (`Private-key-format: v1.x`). The text parsers are
//! pure and fuzzed (`fuzz/fuzz_targets/dnssec_key.rs`); [`ZoneKey::from_files`] turns
//! a parsed pair into hickory-proto's signing key (ring underneath), checking that the
//! private half belongs to the public one. `portico check` and the gss load keys
//! through the same [`load`], so a key `check` accepts is one the gss can sign with.
//!
//! Only the algorithms a new zone should use are accepted: 13 (ECDSA P-256 with
//! SHA-256) and 15 (Ed25519).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use data_encoding::BASE64;
use hickory_proto::dnssec::crypto::{EcdsaSigningKey, Ed25519SigningKey};
use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::dnssec::{Algorithm, PublicKeyBuf, SigningKey};
use hickory_proto::rr::Name;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// Why a key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyFileError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, KeyFileError> {
    Err(KeyFileError(msg.into()))
}

/// DNSKEY flag: a zone key (RFC 4034 §2.1.1).
pub const FLAG_ZONE: u16 = 0x0100;
/// DNSKEY flag: secure entry point, set on KSKs and CSKs by `dnssec-keygen -f KSK`.
pub const FLAG_SEP: u16 = 0x0001;
/// DNSKEY flag: revoked (RFC 5011); a revoked key cannot sign this zone.
pub const FLAG_REVOKE: u16 = 0x0080;

/// The public half as the `.key` file states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyFile {
    /// The record owner: the zone the key belongs to.
    pub owner: Name,
    /// DNSKEY flags.
    pub flags: u16,
    /// DNSSEC algorithm number (13 or 15).
    pub algorithm: u8,
    /// The public key bytes (P-256: X‖Y, 64 bytes; Ed25519: 32 bytes).
    pub public_key: Vec<u8>,
}

/// The private half as the `.private` file states it.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKeyFile {
    /// DNSSEC algorithm number.
    pub algorithm: u8,
    /// The private scalar (P-256) or seed (Ed25519), 32 bytes.
    pub private_key: Vec<u8>,
}

impl fmt::Debug for PrivateKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKeyFile(algorithm {})", self.algorithm)
    }
}

fn check_algorithm(alg: u8) -> Result<(), KeyFileError> {
    match alg {
        13 | 15 => Ok(()),
        other => err(format!(
            "algorithm {other} is not supported; use 13 (ECDSAP256SHA256) or 15 (ED25519): dnssec-keygen -a 13 ZONE"
        )),
    }
}

fn public_len(alg: u8) -> usize {
    if alg == 13 {
        64
    } else {
        32
    }
}

/// Parses a `.key` file: comment lines (`;`) and one DNSKEY record,
/// `OWNER [TTL] [IN] DNSKEY FLAGS 3 ALG BASE64...`.
pub fn parse_public(text: &str) -> Result<PublicKeyFile, KeyFileError> {
    let mut records = text
        .lines()
        .map(|l| l.split(';').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty());
    let Some(line) = records.next() else {
        return err("no DNSKEY record in the .key file");
    };
    if records.next().is_some() {
        return err("more than one record in the .key file");
    }
    let mut tokens = line.split_ascii_whitespace();
    let owner = tokens.next().unwrap_or("");
    if !owner.ends_with('.') {
        return err(format!(
            "owner \"{owner}\" is not absolute (it must end with a dot)"
        ));
    }
    let owner = Name::from_ascii(owner)
        .map_err(|e| KeyFileError(format!("invalid owner \"{owner}\": {e}")))?;
    let mut tok = tokens.next();
    if tok.is_some_and(|t| t.chars().all(|c| c.is_ascii_digit())) {
        tok = tokens.next();
    }
    if tok.is_some_and(|t| t.eq_ignore_ascii_case("IN")) {
        tok = tokens.next();
    }
    if !tok.is_some_and(|t| t.eq_ignore_ascii_case("DNSKEY")) {
        return err("the record is not a DNSKEY");
    }
    let mut field = |what: &str| {
        tokens
            .next()
            .ok_or_else(|| KeyFileError(format!("DNSKEY has no {what}")))
    };
    let flags: u16 = field("flags")?
        .parse()
        .map_err(|_| KeyFileError("DNSKEY flags are not a number".into()))?;
    if field("protocol")? != "3" {
        return err("DNSKEY protocol must be 3");
    }
    let algorithm: u8 = field("algorithm")?
        .parse()
        .map_err(|_| KeyFileError("DNSKEY algorithm is not a number".into()))?;
    check_algorithm(algorithm)?;
    let b64: String = tokens.collect();
    let public_key = BASE64
        .decode(b64.as_bytes())
        .map_err(|e| KeyFileError(format!("DNSKEY public key is not base64: {e}")))?;
    if public_key.len() != public_len(algorithm) {
        return err(format!(
            "DNSKEY public key has {} bytes, algorithm {algorithm} needs {}",
            public_key.len(),
            public_len(algorithm)
        ));
    }
    if flags & FLAG_ZONE == 0 {
        return err("DNSKEY is not a zone key (flag 256 clear)");
    }
    if flags & FLAG_REVOKE != 0 {
        return err("DNSKEY is revoked (flag 128 set)");
    }
    Ok(PublicKeyFile {
        owner,
        flags,
        algorithm,
        public_key,
    })
}

/// Parses a `.private` file: `Private-key-format: v1.x`, `Algorithm: N (...)`,
/// `PrivateKey: BASE64`; other fields (timing metadata) are ignored.
pub fn parse_private(text: &str) -> Result<PrivateKeyFile, KeyFileError> {
    let (mut format, mut algorithm, mut key) = (None, None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "Private-key-format" => format = Some(v),
            "Algorithm" => algorithm = Some(v),
            "PrivateKey" => key = Some(v),
            _ => {}
        }
    }
    match format {
        Some(f) if f.starts_with("v1.") => {}
        Some(f) => return err(format!("unknown Private-key-format \"{f}\"")),
        None => return err("no Private-key-format line: not a BIND .private file"),
    }
    let Some(algorithm) = algorithm else {
        return err("no Algorithm line in the .private file");
    };
    let algorithm: u8 = algorithm
        .split_ascii_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| KeyFileError(format!("invalid Algorithm \"{algorithm}\"")))?;
    check_algorithm(algorithm)?;
    let Some(key) = key else {
        return err("no PrivateKey line in the .private file");
    };
    let private_key = BASE64
        .decode(key.as_bytes())
        .map_err(|e| KeyFileError(format!("PrivateKey is not base64: {e}")))?;
    if private_key.len() != 32 {
        return err(format!(
            "PrivateKey has {} bytes, algorithm {algorithm} needs 32",
            private_key.len()
        ));
    }
    Ok(PrivateKeyFile {
        algorithm,
        private_key,
    })
}

/// A zone key ready to sign: the DNSKEY it publishes and hickory's signing key.
#[derive(Clone)]
pub struct ZoneKey {
    /// The zone the key belongs to.
    pub owner: Name,
    /// The DNSKEY record data.
    pub dnskey: DNSKEY,
    /// The key tag (RFC 4034 appendix B), as in the file name.
    pub tag: u16,
    /// The signing half.
    pub signer: Arc<dyn SigningKey>,
}

impl fmt::Debug for ZoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ZoneKey({} {} tag {})",
            self.owner,
            u8::from(self.signer.algorithm()),
            self.tag
        )
    }
}

impl ZoneKey {
    /// Pairs the halves; fails when they disagree (algorithm, or a private key whose
    /// public key is not the `.key` file's).
    pub fn from_files(
        public: &PublicKeyFile,
        private: &PrivateKeyFile,
    ) -> Result<ZoneKey, KeyFileError> {
        if public.algorithm != private.algorithm {
            return err(format!(
                ".key says algorithm {}, .private says {}",
                public.algorithm, private.algorithm
            ));
        }
        let mismatch = |_| {
            KeyFileError("the private key does not belong to the .key file's public key".into())
        };
        let (signer, algorithm): (Arc<dyn SigningKey>, Algorithm) = if public.algorithm == 13 {
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&public.public_key);
            let pair = EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &private.private_key,
                &point,
                &SystemRandom::new(),
            )
            .map_err(mismatch)?;
            (
                Arc::new(EcdsaSigningKey::from_ecdsa(
                    pair,
                    Algorithm::ECDSAP256SHA256,
                )),
                Algorithm::ECDSAP256SHA256,
            )
        } else {
            let pair =
                Ed25519KeyPair::from_seed_and_public_key(&private.private_key, &public.public_key)
                    .map_err(mismatch)?;
            (
                Arc::new(Ed25519SigningKey::from_ed25519(pair)),
                Algorithm::ED25519,
            )
        };
        let dnskey = DNSKEY::with_flags(
            public.flags,
            PublicKeyBuf::new(public.public_key.clone(), algorithm),
        );
        let tag = dnskey
            .calculate_key_tag()
            .map_err(|e| KeyFileError(format!("key tag: {e}")))?;
        Ok(ZoneKey {
            owner: public.owner.clone(),
            dnskey,
            tag,
            signer,
        })
    }

    /// Whether the key has the SEP flag (made with `dnssec-keygen -f KSK`).
    pub fn is_sep(&self) -> bool {
        self.dnskey.flags() & FLAG_SEP != 0
    }
}

/// The `.key` and `.private` paths of a key named in the config: the common prefix
/// (`Kzone.+013+12345`), or either file.
pub fn key_paths(named: &Path) -> (PathBuf, PathBuf) {
    let s = named.to_string_lossy();
    let base = s
        .strip_suffix(".key")
        .or_else(|| s.strip_suffix(".private"))
        .unwrap_or(&s);
    (
        PathBuf::from(format!("{base}.key")),
        PathBuf::from(format!("{base}.private")),
    )
}

/// Reads and pairs both files of the key `named`, which must belong to `zone`
/// (fully qualified).
pub fn load(named: &Path, zone: &Name) -> Result<ZoneKey, KeyFileError> {
    let (key, private) = key_paths(named);
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| KeyFileError(format!("{}: {e}", p.display())))
    };
    let public =
        parse_public(&read(&key)?).map_err(|e| KeyFileError(format!("{}: {e}", key.display())))?;
    let secret = parse_private(&read(&private)?)
        .map_err(|e| KeyFileError(format!("{}: {e}", private.display())))?;
    if public.owner != *zone {
        return err(format!(
            "{}: the key belongs to {}, not to the zone {zone}",
            key.display(),
            public.owner
        ));
    }
    ZoneKey::from_files(&public, &secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256_KEY: &str = "; This is a key-signing key, keyid 42258, for gslb.example.test.\n\
gslb.example.test. IN DNSKEY 257 3 13 FWH2j6YUdunRUUugC9KZyNGBDWx+etz///65RBY6MeB8e7yJzL9qXCOq K8Gk6NmQnH0GbXjspmPRQ9Md62Ppuw==\n";
    const P256_PRIVATE: &str = "Private-key-format: v1.3\nAlgorithm: 13 (ECDSAP256SHA256)\nPrivateKey: snEa0WVQPqhmquui9owbELcYoiiexoKSVO85UAHMnr8=\nCreated: 20261129190649\n";
    const ED_KEY: &str =
        "gslb.example.test. IN DNSKEY 256 3 15 GoTyKhW+rwwJFW4hj8ltMTp/sULrNma1pATRT5y4fTw=\n";
    const ED_PRIVATE: &str = "Private-key-format: v1.3\nAlgorithm: 15 (ED25519)\nPrivateKey: KvkimX7h9ApId/MF8lUioG+lAhFqcI4QwyP9mvS/3wM=\n";

    #[test]
    fn dnssec_keygen_files_load_with_their_tags() {
        let k = ZoneKey::from_files(
            &parse_public(P256_KEY).unwrap(),
            &parse_private(P256_PRIVATE).unwrap(),
        )
        .unwrap();
        assert_eq!(k.tag, 42258, "the tag in dnssec-keygen's file name");
        assert!(k.is_sep());
        let k = ZoneKey::from_files(
            &parse_public(ED_KEY).unwrap(),
            &parse_private(ED_PRIVATE).unwrap(),
        )
        .unwrap();
        assert_eq!(k.tag, 5810);
        assert!(!k.is_sep());
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let e = |r: Result<PublicKeyFile, KeyFileError>| r.unwrap_err().0;
        assert!(e(parse_public("")).contains("no DNSKEY"));
        assert!(e(parse_public(&P256_KEY.replace(" 13 ", " 8 "))).contains("algorithm 8"));
        assert!(e(parse_public(&P256_KEY.replace("DNSKEY", "DS"))).contains("not a DNSKEY"));
        assert!(e(parse_public(&P256_KEY.replace("test. IN", "test IN"))).contains("absolute"));
        assert!(e(parse_public(&P256_KEY.replace("Ppuw==", "P!uw=="))).contains("base64"));
        assert!(e(parse_public(&P256_KEY.replace(" 257 ", " 385 "))).contains("revoked"));
        let p = |r: Result<PrivateKeyFile, KeyFileError>| r.unwrap_err().0;
        assert!(p(parse_private("PrivateKey: AAAA")).contains("Private-key-format"));
        assert!(p(parse_private(
            &P256_PRIVATE.replace("PrivateKey: snEa", "PrivateKey: ")
        ))
        .contains("bytes"));
        // Halves of two different keys.
        let wrong = ZoneKey::from_files(
            &parse_public(P256_KEY).unwrap(),
            &parse_private(&P256_PRIVATE.replace("snEa0", "snEa1")).unwrap(),
        );
        assert!(wrong.unwrap_err().0.contains("does not belong"));
        let mixed = ZoneKey::from_files(
            &parse_public(ED_KEY).unwrap(),
            &parse_private(P256_PRIVATE).unwrap(),
        );
        assert!(mixed.unwrap_err().0.contains("algorithm"));
    }

    #[test]
    fn key_paths_accept_the_prefix_or_either_file() {
        for named in [
            "/k/Kz.+013+00001",
            "/k/Kz.+013+00001.key",
            "/k/Kz.+013+00001.private",
        ] {
            let (k, p) = key_paths(Path::new(named));
            assert_eq!(k, Path::new("/k/Kz.+013+00001.key"));
            assert_eq!(p, Path::new("/k/Kz.+013+00001.private"));
        }
    }
}
