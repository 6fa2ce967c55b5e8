//! Active health probes: one small type per protocol behind the [`Probe`] trait.
//!
//! Each protocol file keeps its parsing (pure functions over received lines, unit-
//! tested and fuzzable) apart from its I/O. Every conversation ends politely
//! (`QUIT`/`LOGOUT`) so probes do not fill mail servers' logs with dropped sessions.
//! The caller ([`crate::health`]) applies the timeout, so a probe need not.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::{ProbeConfig, ProbeKind};

pub(crate) mod conn;
pub mod http;
pub mod imap;
pub mod lb_status;
pub mod lines;
pub mod mapi;
pub mod pop3;
pub mod smtp;
pub mod tcp;

/// Why a probe failed; `Display` is the operator-facing reason shown by
/// `show backends` (e.g. `connection refused`, `greeting "554 5.3.2 busy"`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The whole conversation exceeded the probe timeout.
    #[error("timeout after {}", humantime::format_duration(*.0))]
    Timeout(std::time::Duration),
    /// The target actively refused the TCP connection.
    #[error("connection refused")]
    Refused,
    /// Another connect-time error (unreachable, reset...).
    #[error("connect: {0}")]
    Connect(String),
    /// The peer closed before the conversation completed.
    #[error("connection closed during {0}")]
    Closed(&'static str),
    /// An I/O error mid-conversation.
    #[error("io: {0}")]
    Io(String),
    /// The greeting was not the expected positive one.
    #[error("greeting {0:?}")]
    Greeting(String),
    /// A reply to a command was negative or malformed.
    #[error("{command} answered {reply:?}")]
    Reply {
        /// The command sent (`EHLO`, `CAPABILITY`, ...).
        command: &'static str,
        /// The (first line of the) reply.
        reply: String,
    },
    /// STARTTLS was asked for but the server does not offer it.
    #[error("STARTTLS not offered")]
    NoStartTls,
    /// TLS handshake or verification failure.
    #[error("tls: {0}")]
    Tls(String),
    /// HTTP status not among the expected.
    #[error("http status {0}")]
    Status(u16),
    /// HTTP body lacked the expected substring.
    #[error("body does not contain {0:?}")]
    Body(String),
    /// MAPI PING answered with a non-zero `X-ResponseCode` (or none).
    #[error("mapi X-ResponseCode {0}")]
    MapiCode(String),
    /// lb_status: a named VIP is down or missing.
    #[error("lb status: {0}")]
    LbStatus(String),
    /// Malformed protocol data.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Building a probe failed (e.g. CA file unreadable); reported at config load.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// The boxed future a probe returns; boxed so probes of every kind fit one `dyn`.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ProbeError>> + Send + 'a>>;

/// One health check conversation with one target.
pub trait Probe: Send + Sync + 'static {
    /// Runs one conversation; `Ok` means healthy. Never applies its own timeout.
    fn check(&self) -> ProbeFuture<'_>;
}

/// Builds the probe `cfg` describes, aimed at `target`.
///
/// TLS material (CA bundle or system roots, server name) is prepared here, once, so a
/// bad CA file is a config-load error and checks do not re-read it.
pub fn build(cfg: &ProbeConfig, target: SocketAddr) -> Result<Arc<dyn Probe>, BuildError> {
    if cfg.tls && cfg.starttls {
        return Err(BuildError(
            "tls (implicit TLS) and starttls are mutually exclusive".into(),
        ));
    }
    let http_like = matches!(
        cfg.kind,
        ProbeKind::Http | ProbeKind::Mapi | ProbeKind::LbStatus
    );
    if cfg.starttls
        && !matches!(
            cfg.kind,
            ProbeKind::Smtp | ProbeKind::Imap | ProbeKind::Pop3
        )
    {
        return Err(BuildError(format!(
            "starttls is not available for {} probes",
            cfg.kind.as_str()
        )));
    }
    let alpn: &[&[u8]] = if http_like { &[b"http/1.1"] } else { &[] };
    let tls = if cfg.tls || cfg.starttls {
        Some(conn::TlsParams::from_config(cfg, target, alpn)?)
    } else {
        None
    };
    let (implicit_tls, starttls) = if cfg.starttls {
        (None, tls)
    } else {
        (tls, None)
    };
    let endpoint = conn::Endpoint {
        target,
        send_proxy: cfg.send_proxy,
        implicit_tls,
        client_first: http_like,
    };
    Ok(match cfg.kind {
        ProbeKind::Tcp => Arc::new(tcp::TcpProbe::new(endpoint)),
        ProbeKind::Smtp => Arc::new(smtp::SmtpProbe::new(endpoint, starttls, &cfg.helo)),
        ProbeKind::Imap => Arc::new(imap::ImapProbe::new(endpoint, starttls)),
        ProbeKind::Pop3 => Arc::new(pop3::Pop3Probe::new(endpoint, starttls)),
        ProbeKind::Http => Arc::new(http::HttpProbe::new(endpoint, cfg).map_err(BuildError)?),
        ProbeKind::Mapi => Arc::new(mapi::MapiProbe::new(endpoint, cfg).map_err(BuildError)?),
        ProbeKind::LbStatus => {
            Arc::new(lb_status::LbStatusProbe::new(endpoint, cfg).map_err(BuildError)?)
        }
    })
}
