//! Test PKI generated at run time with rcgen: a CA and a server certificate it signs
//! (optionally already expired), as rustls configs and as PEM files for code that reads
//! paths from config (`ca = "..."`, `tls = { cert, key }`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throw-away CA and one server certificate, with PEM copies in a temp directory that
/// is removed on drop.
pub struct TestPki {
    /// The CA certificate (DER).
    pub ca_cert: CertificateDer<'static>,
    /// The server certificate (DER), signed by the CA.
    pub cert: CertificateDer<'static>,
    /// PKCS#8 DER of the server key.
    key_der: Vec<u8>,
    /// PEM of the CA certificate.
    pub ca_pem: String,
    /// PEM of the server certificate.
    pub cert_pem: String,
    /// PEM of the server key.
    pub key_pem: String,
    dir: PathBuf,
}

impl TestPki {
    /// A CA and a currently valid server certificate for `names` (DNS names or IPs,
    /// e.g. `["localhost", "127.0.0.1"]`).
    pub fn new(names: &[&str]) -> TestPki {
        Self::generate(names, false)
    }

    /// Same, but the server certificate expired years ago (for `tls: certificate expired`).
    pub fn expired(names: &[&str]) -> TestPki {
        Self::generate(names, true)
    }

    fn generate(names: &[&str], expired: bool) -> TestPki {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("Portico test CA {id}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca_params.self_signed(&ca_key).expect("CA cert");

        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "localhost".into()),
        );
        if expired {
            params.not_before = rcgen::date_time_ymd(2015, 1, 1);
            params.not_after = rcgen::date_time_ymd(2016, 1, 1);
        }
        let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");

        // Distinct CA names, so a wrong CA reads as "unknown issuer", not a bad signature.
        let dir = std::env::temp_dir().join(format!("portico-testpki-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = TestPki {
            ca_cert: ca.der().clone(),
            cert: cert.der().clone(),
            key_der: key.serialize_der(),
            ca_pem: ca.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            dir,
        };
        std::fs::write(pki.ca_path(), &pki.ca_pem).expect("write ca.pem");
        std::fs::write(pki.cert_path(), &pki.cert_pem).expect("write cert.pem");
        std::fs::write(pki.key_path(), &pki.key_pem).expect("write key.pem");
        pki
    }

    /// The server key as rustls wants it.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// PEM file of the CA (for `ca = ...` in probe configs).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// PEM file of the server certificate.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// PEM file of the server key.
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// The temp directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server config presenting the server certificate (chain: leaf, CA), no ALPN.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server_config_alpn(&[])
    }

    /// A server config offering `alpn` protocols.
    pub fn server_config_alpn(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        crate::tls::server_config(
            vec![self.cert.clone(), self.ca_cert.clone()],
            self.key(),
            alpn,
        )
        .expect("server config")
    }

    /// A client config trusting only this CA.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        crate::tls::client_config(true, Some(&self.ca_path()), &[]).expect("client config")
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
