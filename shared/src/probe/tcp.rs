//! The `tcp` probe: connect (PROXY v2 `LOCAL` header first when configured, TLS
//! handshake when `tls = true`). A plain connect-only check is half-open, as
//! HAProxy's are: the backend's SYN-ACK is the answer, the handshake's last ACK is
//! held back ([`Handshake::DelayedAck`]) and the socket closes with a reset, so the
//! backend's kernel drops the embryonic connection and its application never sees
//! the check. The reset also leaves no socket in TIME_WAIT on the prober (probing
//! 1,000 backends every second would otherwise hold some 60,000 of them). A check
//! that sent a PROXY header or spoke TLS closes cleanly (FIN, TLS close_notify).

use tokio::io::AsyncWriteExt;

use super::conn::{self, Endpoint, Handshake};
use super::{Probe, ProbeFuture};

/// Connect-only check.
pub struct TcpProbe {
    endpoint: Endpoint,
}

impl TcpProbe {
    pub(crate) fn new(endpoint: Endpoint) -> Self {
        TcpProbe { endpoint }
    }
}

impl Probe for TcpProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            if !self.endpoint.send_proxy && self.endpoint.implicit_tls.is_none() {
                // Nothing is sent, so no TCP_NODELAY either.
                let s = conn::connect_only(self.endpoint.target, Handshake::DelayedAck).await?;
                let _ = s.set_zero_linger();
                return Ok(());
            }
            let mut io = self.endpoint.open().await?;
            let _ = io.shutdown().await;
            Ok(())
        })
    }
}
