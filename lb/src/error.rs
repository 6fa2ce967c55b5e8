//! Errors of the lb role. [`ProxyError`] records which leg failed and whether the
//! connection may safely be retried on another backend; the retry logic and metrics
//! read those fields, never the message. [`LbError`] covers starting and reloading.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Which leg of a proxied connection an error happened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's connection to the VIP.
    Client,
    /// Portico's connection to the backend.
    Backend,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Backend => "backend",
        })
    }
}

/// Why one proxied connection (or one attempt at it) ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The backend refused or was unreachable.
    #[error("connect to {addr}: {source}")]
    Connect {
        /// Backend address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The backend did not accept within `connect_timeout`.
    #[error("connect to {addr}: timeout after {}ms", .timeout.as_millis())]
    ConnectTimeout {
        /// Backend address.
        addr: SocketAddr,
        /// The bound that expired.
        timeout: Duration,
    },
    /// Writing the PROXY header to a freshly connected backend failed.
    #[error("PROXY header to {addr}: {source}")]
    ProxyHeader {
        /// Backend address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A backend of a server-speaks-first protocol (SMTP, IMAP, POP3) closed or
    /// reset before sending its greeting: nothing reached the client, so another
    /// backend can be tried (a dying node's listener still accepts for a moment).
    #[error("{addr} closed before its greeting{}", .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    NoGreeting {
        /// Backend address.
        addr: SocketAddr,
        /// The OS error, when it was a reset rather than a close.
        #[source]
        source: Option<io::Error>,
    },
    /// A server-speaks-first backend accepted but sent no complete greeting within
    /// `greeting_timeout` (a stopped or overloaded process; the kernel still accepts).
    #[error("{addr} sent no greeting within {}ms", .timeout.as_millis())]
    GreetingTimeout {
        /// Backend address.
        addr: SocketAddr,
        /// The bound that expired.
        timeout: Duration,
    },
    /// The backend greeted with a refusal (`421`, `* BYE`, `-ERR`) or with something
    /// that is not a greeting of the VIP's protocol.
    #[error("{addr} greeted {reply:?}")]
    BadGreeting {
        /// Backend address.
        addr: SocketAddr,
        /// The greeting's first line (clipped), or what was wrong with it.
        reply: String,
    },
    /// Reading from one leg failed.
    #[error("{side} read: {source}")]
    Read {
        /// The leg read from.
        side: Side,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing to one leg failed.
    #[error("{side} write: {source}")]
    Write {
        /// The leg written to.
        side: Side,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No traffic either way for the idle timeout.
    #[error("idle for {}s", .0.as_secs())]
    Idle(Duration),
}

impl ProxyError {
    /// The leg that failed; `None` for an idle timeout (neither leg failed).
    pub fn side(&self) -> Option<Side> {
        match self {
            ProxyError::Connect { .. }
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::ProxyHeader { .. }
            | ProxyError::NoGreeting { .. }
            | ProxyError::GreetingTimeout { .. }
            | ProxyError::BadGreeting { .. } => Some(Side::Backend),
            ProxyError::Read { side, .. } | ProxyError::Write { side, .. } => Some(*side),
            ProxyError::Idle(_) => None,
        }
    }

    /// True when no byte has been relayed yet, so another backend may be tried
    /// without the client noticing.
    pub fn retry_safe(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect { .. }
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::ProxyHeader { .. }
                | ProxyError::NoGreeting { .. }
                | ProxyError::GreetingTimeout { .. }
                | ProxyError::BadGreeting { .. }
        )
    }

    /// True for failures of the greeting phase (counted on their own as well).
    pub fn is_greeting(&self) -> bool {
        matches!(
            self,
            ProxyError::NoGreeting { .. }
                | ProxyError::GreetingTimeout { .. }
                | ProxyError::BadGreeting { .. }
        )
    }

    /// True when the failure counts against the backend for passive ejection.
    pub fn counts_against_backend(&self) -> bool {
        self.retry_safe()
    }
}

/// Starting or reloading the lb failed; nothing was changed by a failed reload.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A VIP's listen address could not be bound.
    #[error("vip {vip}: cannot listen on {addr}: {source}")]
    Bind {
        /// VIP name.
        vip: String,
        /// Configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An L7 VIP could not be set up (certificates, backend TLS).
    #[error(transparent)]
    Http(#[from] crate::http::SetupError),
    /// A backend's probe could not be built (e.g. unreadable CA file).
    #[error("vip {vip}: backend {backend}: probe: {message}")]
    Probe {
        /// VIP name.
        vip: String,
        /// Backend name.
        backend: String,
        /// Why.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_retry_safe_and_blame_the_backend() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let e = ProxyError::Connect {
            addr,
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert!(e.retry_safe() && e.counts_against_backend());
        assert_eq!(e.side(), Some(Side::Backend));
        let e = ProxyError::Read {
            side: Side::Client,
            source: io::Error::from(io::ErrorKind::ConnectionReset),
        };
        assert!(!e.retry_safe());
        assert_eq!(e.side(), Some(Side::Client));
        assert_eq!(ProxyError::Idle(Duration::from_secs(5)).side(), None);
    }
}
