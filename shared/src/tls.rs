//! rustls client configurations shared by probes and backend TLS: system roots, a
//! configured CA bundle, or (labs only) no verification.
