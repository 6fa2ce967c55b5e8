//! rustls client configurations shared by probes and backend TLS: system roots, a
//! configured CA bundle, or (labs only) no verification; plus the PEM helpers the lb's
//! TLS termination reuses.
//!
//! Every configuration is built with an explicit `ring` provider, so nothing depends on
//! a process-global default provider being installed. Configurations are meant to be
//! built once (at config load) and shared: loading system roots is not cheap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A server name that is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every Portico TLS configuration uses (`ring`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration: verification against `ca` (a PEM bundle) when given, else
/// the system roots; `verify = false` accepts any certificate (lab use only) while still
/// checking handshake signatures. `alpn` lists the protocols to offer (e.g. `http/1.1`).
pub fn client_config(
    verify: bool,
    ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = if verify {
        let roots = match ca {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let certs = load_certs(path)?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsError::File {
                        path: path.to_path_buf(),
                        reason: "no usable CA certificate".into(),
                    });
                }
                Arc::new(roots)
            }
            None => system_roots(),
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The system trust store, loaded once per process (it reads many files). Unreadable
/// entries are skipped; an empty store makes every verified handshake fail with
/// "unknown certificate issuer", which is the honest answer.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::debug!(error = %e, "skipping unreadable system root");
            }
            roots.add_parsable_certificates(loaded.certs);
            Arc::new(roots)
        })
        .clone()
}

/// Parses a TLS server name (DNS name or IP address, IPv6 optionally in brackets).
pub fn server_name(s: &str) -> Result<ServerName<'static>, TlsError> {
    let trimmed = s.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(trimmed.to_string()).map_err(|_| TlsError::ServerName(s.to_string()))
}

/// Reads every certificate of a PEM file (a chain, leaf first, or a CA bundle).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(file_err("no certificate found".into()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Reads a DER OCSP response to staple. Its freshness is the operator's job (a cron
/// job fetching it, then a reload); a file that is not DER at all (a PEM or an error
/// page saved by mistake) is refused rather than sent to clients. `portico check` and
/// the lb both read it through here, so they cannot disagree.
pub fn load_ocsp(path: &Path) -> Result<Vec<u8>, TlsError> {
    let bad = |reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let der = std::fs::read(path).map_err(|e| bad(format!("cannot read OCSP response: {e}")))?;
    if der.len() < 2 || der[0] != 0x30 {
        return Err(bad("not a DER OCSP response".into()));
    }
    Ok(der)
}

/// A server configuration for one certificate chain, with the same provider and
/// protocol versions as the clients; used by fakes and simple TLS listeners.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Turns a rustls handshake error into the short reason operators read
/// (`certificate expired`, `unknown certificate issuer`, ...).
pub fn describe_error(err: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "certificate expired".into(),
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not yet valid".into(),
            C::UnknownIssuer => "unknown certificate issuer".into(),
            C::NotValidForName => "certificate not valid for the server name".into(),
            C::NotValidForNameContext { expected, .. } => {
                format!("certificate not valid for {:?}", expected.to_str())
            }
            C::Revoked => "certificate revoked".into(),
            C::BadSignature => "bad certificate signature".into(),
            other => format!("invalid certificate: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => format!("server sent alert {alert:?}"),
        other => other.to_string(),
    }
}

/// Accepts any server certificate (lab use, `tls_verify = false`) but still checks the
/// handshake signatures, so the session is at least bound to the presented key.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("mx1.example.test"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("not a name!").is_err());
    }

    #[test]
    fn configs_build_without_global_provider() {
        let c = client_config(false, None, &[b"http/1.1"]).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(client_config(true, None, &[]).is_ok());
        let missing = client_config(true, Some(Path::new("/nonexistent/ca.pem")), &[]);
        assert!(matches!(missing, Err(TlsError::File { .. })));
    }

    #[test]
    fn error_reasons_are_readable() {
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(describe_error(&e), "certificate expired");
        let e = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(describe_error(&e), "unknown certificate issuer");
    }
}
