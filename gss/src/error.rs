//! The gss's errors, below every other module so each can return them.

use std::net::SocketAddr;

/// Why the gss could not start or reload.
#[derive(Debug, thiserror::Error)]
pub enum GssError {
    /// The gss part of the config cannot be served (bad static rdata, names outside
    /// the zone...).
    #[error("gss config: {0}")]
    Config(String),
    /// A keepalive probe could not be built.
    #[error("site {site}: keepalive {keepalive}: {reason}")]
    Probe {
        /// Site name.
        site: String,
        /// Keepalive display name.
        keepalive: String,
        /// The probe builder's reason.
        reason: String,
    },
    /// The DNS port could not be bound.
    #[error("gss cannot listen on {0}: {1}")]
    Bind(SocketAddr, String),
}

/// Why an operator override was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    /// No site has this name.
    #[error("no site {0:?}; `show sites` lists them")]
    UnknownSite(String),
    /// The override could not be recorded (the state file); nothing changed.
    #[error("{0}")]
    Intent(String),
}
