//! The `tcp` probe: connect (PROXY v2 `LOCAL` header first when configured, TLS
//! handshake when `tls = true`) and close cleanly with a FIN, never a reset.

use tokio::io::AsyncWriteExt;

use super::conn::Endpoint;
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
            let mut io = self.endpoint.open().await?;
            let _ = io.shutdown().await;
            Ok(())
        })
    }
}
