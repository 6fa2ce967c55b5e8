//! The protocol a connection speaks is decided once, before hyper reads it: ALPN `h2`
//! means HTTP/2 only (HTTP/1.1 bytes get a GOAWAY), `http/1.1` or no ALPN means
//! HTTP/1 only (an HTTP/2 preface is refused), and an invalid HTTP/2 preface, over
//! TLS or in plain text, gets a GOAWAY (h2spec 3.5 #2). The TLS edge: an ECDSA and an
//! RSA certificate for one name, chosen by the client's signature schemes; the
//! minimum TLS version and the TLS 1.2 cipher list; an OCSP response stapled from a
//! file and re-read by `reload_certs`.

mod http_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http_support::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use shared::testing::tls::TestPki;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(5);
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame, as a client sends after its preface.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
/// GOAWAY frame header (8-byte payload, type 7, stream 0).
const GOAWAY_HEAD: &[u8] = &[0, 0, 8, 7, 0, 0, 0, 0, 0];

/// A client that accepts any certificate and offers only `schemes` (all when empty)
/// and only `versions`; it keeps the OCSP response the server stapled.
#[derive(Debug, Default)]
struct Offer(Vec<SignatureScheme>, std::sync::Mutex<Vec<u8>>);

impl ServerCertVerifier for Offer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        ocsp: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *shared::sync::lock(&self.1) = ocsp.to_vec();
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        if self.0.is_empty() {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        } else {
            self.0.clone()
        }
    }
}

fn client(
    alpn: &[&[u8]],
    schemes: &[SignatureScheme],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    client_with(
        Arc::new(Offer(schemes.to_vec(), Default::default())),
        alpn,
        versions,
    )
}

fn client_with(
    verifier: Arc<Offer>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}

async fn tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("mail.example.test").expect("name");
    tokio::time::timeout(
        LIMIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// Writes `bytes` and reads until the peer closes; panics if it does not within
/// [`LIMIT`].
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: &[u8]) -> Vec<u8> {
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the proxy closes the connection");
    out
}

/// Whether `out` holds a GOAWAY with PROTOCOL_ERROR (after an optional SETTINGS).
fn is_goaway(out: &[u8]) -> bool {
    out.windows(17)
        .any(|w| w.starts_with(GOAWAY_HEAD) && w[13..17] == [0, 0, 0, 1])
}

async fn https_proxy(pki: &TestPki) -> (TestBackend, Proxy) {
    let b = text_backend("ok").await;
    let cfg = vip_config(
        "https",
        &[("web1", b.addr)],
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            pki.cert_path().display(),
            pki.key_path().display()
        ),
    );
    let p = start(&cfg).await;
    (b, p)
}

#[tokio::test]
async fn alpn_h2_accepts_only_http2() {
    let pki = TestPki::new(&["mail.example.test"]);
    let (b, p) = https_proxy(&pki).await;
    let s = tls(p.addr, client(&[b"h2"], &[], &[&rustls::version::TLS13]))
        .await
        .expect("tls");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let out = exchange(
        s,
        b"GET / HTTP/1.1\r\nHost: mail.example.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(is_goaway(&out), "{:?}", String::from_utf8_lossy(&out));
    assert!(!out.starts_with(b"HTTP/1.1"));

    let s = tls(p.addr, client(&[b"h2"], &[], &[&rustls::version::TLS13]))
        .await
        .expect("tls");
    let out = exchange(s, b"INVALID CONNECTION PREFACE\r\n\r\n").await;
    assert!(is_goaway(&out), "{out:?}");

    // A real HTTP/2 client is served.
    let s = tls(p.addr, client(&[b"h2"], &[], &[&rustls::version::TLS13]))
        .await
        .expect("tls");
    let mut c = h2_conn(s).await;
    let resp = c
        .send_request(
            http::Request::get("https://mail.example.test/")
                .body(body(""))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(collect(resp).await.text(), "ok");
    assert_eq!(b.hits(), 1);
}

#[tokio::test]
async fn alpn_http11_or_none_refuses_http2() {
    let pki = TestPki::new(&["mail.example.test"]);
    let (b, p) = https_proxy(&pki).await;
    for alpn in [&[&b"http/1.1"[..]][..], &[][..]] {
        let s = tls(p.addr, client(alpn, &[], &[&rustls::version::TLS13]))
            .await
            .expect("tls");
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(SETTINGS);
        let out = exchange(s, &hello).await;
        // HTTP/1 never answers with frames: no SETTINGS from the server.
        assert!(
            out.is_empty() || out.starts_with(b"HTTP/1.1 "),
            "{alpn:?}: {out:?}"
        );
    }
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn plain_invalid_preface_gets_goaway() {
    let b = text_backend("ok").await;
    let p = start(&vip_config("http", &[("web1", b.addr)], "")).await;
    let s = TcpStream::connect(p.addr).await.expect("connect");
    let out = exchange(s, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await;
    assert!(is_goaway(&out), "{:?}", String::from_utf8_lossy(&out));
    // Prior knowledge and HTTP/1 still work on the same listener.
    assert_eq!(get(p.addr, "/", &[]).await.text(), "ok");
    let mut c = h2_conn(TcpStream::connect(p.addr).await.expect("connect")).await;
    let resp = c
        .send_request(
            http::Request::get("http://a.example/")
                .body(body(""))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(collect(resp).await.text(), "ok");
}

/// An RSA key and self-signed certificate for `name` made by openssl (rcgen with
/// ring cannot generate RSA keys); `None` when openssl is missing outside CI.
fn rsa_pair(dir: &Path, name: &str) -> Option<(PathBuf, PathBuf)> {
    let (cert, key) = (dir.join("rsa-cert.pem"), dir.join("rsa-key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={name}")])
        .args(["-addext", &format!("subjectAltName=DNS:{name}")])
        .output();
    match status {
        Ok(o) if o.status.success() => Some((cert, key)),
        Ok(o) => panic!("openssl failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "openssl is needed in CI: {e}"
            );
            eprintln!("skipping: openssl not found ({e})");
            None
        }
    }
}

#[tokio::test]
async fn ecdsa_and_rsa_for_one_name_chosen_by_signature_schemes() {
    let ecdsa = TestPki::new(&["mail.example.test"]);
    let dir = std::env::temp_dir().join(format!("portico-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let Some((rsa_cert, rsa_key)) = rsa_pair(&dir, "mail.example.test") else {
        return;
    };
    let rsa_leaf = shared::tls::load_certs(&rsa_cert).expect("rsa cert")[0].clone();
    let b = text_backend("ok").await;
    let rsa_only = [
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let ecdsa_only = [SignatureScheme::ECDSA_NISTP256_SHA256];
    for order in [[0, 1], [1, 0]] {
        let pairs = [
            (ecdsa.cert_path(), ecdsa.key_path()),
            (rsa_cert.clone(), rsa_key.clone()),
        ];
        let list = order
            .iter()
            .map(|&i| {
                format!(
                    "{{ cert = \"{}\", key = \"{}\" }}",
                    pairs[i].0.display(),
                    pairs[i].1.display()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let cfg = vip_config(
            "https",
            &[("web1", b.addr)],
            &format!("tls = {{ certs = [{list}] }}"),
        );
        let p = start(&cfg).await;
        for (schemes, want) in [(&rsa_only[..], &rsa_leaf), (&ecdsa_only[..], &ecdsa.cert)] {
            for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
                let s = tls(p.addr, client(&[b"http/1.1"], schemes, &[version]))
                    .await
                    .unwrap_or_else(|e| panic!("{order:?} {schemes:?} {version:?}: {e}"));
                let leaf = &s.get_ref().1.peer_certificates().expect("certs")[0];
                assert_eq!(leaf, want, "{order:?} {schemes:?} {version:?}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_min_version_and_tls12_cipher_list() {
    let pki = TestPki::new(&["mail.example.test"]);
    let b = text_backend("ok").await;
    let tls_line = format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        pki.cert_path().display(),
        pki.key_path().display()
    );
    let cfg = vip_config(
        "https",
        &[("web1", b.addr)],
        &format!("{tls_line}\ntls_min_version = \"1.3\""),
    );
    let p = start(&cfg).await;
    assert!(
        tls(p.addr, client(&[], &[], &[&rustls::version::TLS12]))
            .await
            .is_err(),
        "TLS 1.2 is refused"
    );
    tls(p.addr, client(&[], &[], &[&rustls::version::TLS13]))
        .await
        .expect("TLS 1.3 is served");

    let want = "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256";
    let cfg = vip_config(
        "https",
        &[("web1", b.addr)],
        &format!("{tls_line}\ntls12_ciphers = [\"{want}\"]"),
    );
    let p = start(&cfg).await;
    let s = tls(p.addr, client(&[], &[], &[&rustls::version::TLS12]))
        .await
        .expect("TLS 1.2 with the listed suite");
    let suite = s.get_ref().1.negotiated_cipher_suite().expect("suite");
    assert_eq!(suite.suite().as_str(), Some(want));
}

#[tokio::test]
async fn ocsp_response_is_stapled_and_reread_on_reload() {
    let pki = TestPki::new(&["mail.example.test"]);
    let dir = std::env::temp_dir().join(format!("portico-ocsp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ocsp = dir.join("mail.ocsp");
    // A DER OCSPResponse: SEQUENCE { responseStatus ENUMERATED }.
    let first = [0x30, 0x03, 0x0a, 0x01, 0x00];
    std::fs::write(&ocsp, first).expect("write");
    let b = text_backend("ok").await;
    let cert = pki.cert_path();
    let cfg = vip_config(
        "https",
        &[("web1", b.addr)],
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}\nocsp = {{ \"{}\" = \"{}\" }}",
            cert.display(),
            pki.key_path().display(),
            cert.display(),
            ocsp.display()
        ),
    );
    let p = start(&cfg).await;
    let stapled = |version: &'static rustls::SupportedProtocolVersion| {
        let addr = p.addr;
        async move {
            let v = Arc::new(Offer::default());
            tls(addr, client_with(Arc::clone(&v), &[], &[version]))
                .await
                .expect("tls");
            let got = v.1.lock().unwrap_or_else(|e| e.into_inner()).clone();
            got
        }
    };
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        assert_eq!(stapled(version).await, first, "{version:?}");
    }
    let second = [0x30, 0x03, 0x0a, 0x01, 0x01];
    std::fs::write(&ocsp, second).expect("write");
    p.lb.reload_certs(&cfg.name).expect("reload");
    assert_eq!(stapled(&rustls::version::TLS13).await, second);

    // A file that is not DER is refused and the served response stays.
    std::fs::write(&ocsp, b"-----BEGIN OCSP-----").expect("write");
    assert!(p.lb.reload_certs(&cfg.name).is_err());
    assert_eq!(stapled(&rustls::version::TLS13).await, second);
    let _ = std::fs::remove_dir_all(&dir);
}
