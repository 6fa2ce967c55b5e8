//! Opening a probe connection: TCP connect, the optional PROXY v2 `LOCAL` header, and
//! the optional TLS handshake (implicit, or later after STARTTLS). Shared by every
//! probe so connect errors and TLS failures read the same whatever the protocol.

use std::io;
use std::net::SocketAddr;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{BuildError, ProbeError};
use crate::config::ProbeConfig;

/// Any byte stream a probe talks over: plain TCP or TLS over it.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed stream, so plain and TLS conversations share one code path.
pub(crate) type BoxIo = Box<dyn Io>;

/// What a TLS handshake needs, built once per probe.
#[derive(Clone)]
pub(crate) struct TlsParams {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl TlsParams {
    /// Builds the client config (CA or system roots, or no verification) and the name
    /// to verify: `sni`, else `host` without its port, else the target IP.
    pub(crate) fn from_config(
        cfg: &ProbeConfig,
        target: SocketAddr,
        alpn: &[&[u8]],
    ) -> Result<Self, BuildError> {
        let config = crate::tls::client_config(cfg.tls_verify, cfg.ca.as_deref(), alpn)
            .map_err(|e| BuildError(e.to_string()))?;
        let name = match (&cfg.sni, &cfg.host) {
            (Some(sni), _) => sni.clone(),
            (None, Some(host)) => strip_port(host).to_string(),
            (None, None) => target.ip().to_string(),
        };
        let name = crate::tls::server_name(&name).map_err(|e| BuildError(e.to_string()))?;
        Ok(TlsParams {
            connector: tokio_rustls::TlsConnector::from(config),
            name,
        })
    }

    /// Runs the client handshake over `io`, mapping failures to a readable reason.
    pub(crate) async fn handshake(&self, io: BoxIo) -> Result<BoxIo, ProbeError> {
        match self.connector.connect(self.name.clone(), io).await {
            Ok(tls) => Ok(Box::new(tls)),
            Err(e) => Err(tls_error(&e)),
        }
    }
}

/// `host:port` → `host`, `[v6]:port` → `v6`, anything else unchanged.
pub(crate) fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Maps a handshake I/O error to `ProbeError::Tls` with the rustls reason when present.
fn tls_error(e: &io::Error) -> ProbeError {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return ProbeError::Tls(crate::tls::describe_error(inner));
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            ProbeError::Tls("connection closed during handshake".into())
        }
        _ => ProbeError::Tls(e.to_string()),
    }
}

/// Where and how a probe connects.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The backend.
    pub(crate) target: SocketAddr,
    /// Send a PROXY v2 `LOCAL` header first.
    pub(crate) send_proxy: bool,
    /// Implicit TLS right after connecting.
    pub(crate) implicit_tls: Option<TlsParams>,
    /// The probe's protocol speaks first (HTTP), so the handshake's last ACK can
    /// ride on the first request (see [`Handshake::DelayedAck`]).
    pub(crate) client_first: bool,
}

impl Endpoint {
    /// Connects, sends the PROXY header if configured, and completes implicit TLS.
    pub(crate) async fn open(&self) -> Result<BoxIo, ProbeError> {
        let handshake = if self.send_proxy || self.implicit_tls.is_some() || self.client_first {
            Handshake::DelayedAck
        } else {
            Handshake::Full
        };
        let mut tcp = connect(self.target, handshake).await?;
        if self.send_proxy {
            tcp.write_all(crate::proxy_protocol::v2_local())
                .await
                .map_err(|e| io_error(e, "PROXY header"))?;
        }
        let io: BoxIo = Box::new(tcp);
        match &self.implicit_tls {
            Some(tls) => tls.handshake(io).await,
            None => Ok(io),
        }
    }
}

/// How a probe's TCP handshake ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// The usual three packets: for protocols where the server speaks first, which
    /// needs the connection in its accept queue to greet.
    Full,
    /// `TCP_QUICKACK` off before connecting (HAProxy's checks do the same): the last
    /// ACK waits for the first data and rides on it, or, for a connect-only check
    /// that closes with a reset at once, is never sent. The SYN-ACK already proves a
    /// listening socket with room in its queue (a full queue drops the SYN), so the
    /// check says as much as before, while the backend never creates, queues, wakes
    /// for or logs a connection it did not need: Postfix, for one, writes "connect
    /// from … lost connection" per completed check.
    DelayedAck,
}

/// TCP connect with ECONNREFUSED told apart from other failures; TCP_NODELAY on,
/// because probes are short dialogues that Nagle would only delay.
pub(crate) async fn connect(
    target: SocketAddr,
    handshake: Handshake,
) -> Result<TcpStream, ProbeError> {
    let s = connect_only(target, handshake).await?;
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// [`connect`] without TCP_NODELAY, for a check that sends nothing.
pub(crate) async fn connect_only(
    target: SocketAddr,
    handshake: Handshake,
) -> Result<TcpStream, ProbeError> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| ProbeError::Connect(e.to_string()))?;
    if handshake == Handshake::DelayedAck {
        // Best effort: a kernel without it sends the ACK, as before.
        let _ = socket2::SockRef::from(&socket).set_quickack(false);
    }
    match socket.connect(target).await {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(ProbeError::Refused),
        Err(e) => Err(ProbeError::Connect(e.to_string())),
    }
}

/// Maps a mid-conversation I/O error; a reset or EOF reads as "closed during PHASE".
pub(crate) fn io_error(e: io::Error, phase: &'static str) -> ProbeError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => ProbeError::Closed(phase),
        _ => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(tls) => ProbeError::Tls(crate::tls::describe_error(tls)),
            None => ProbeError::Io(e.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_ports() {
        assert_eq!(strip_port("mail.example.test:443"), "mail.example.test");
        assert_eq!(strip_port("mail.example.test"), "mail.example.test");
        assert_eq!(strip_port("[::1]:443"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
    }
}
