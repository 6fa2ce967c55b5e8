//! The `pop3` probe: `+OK` greeting, optionally `STLS` → `+OK` → handshake (RFC 2595),
//! then `QUIT` → `+OK`. Implicit TLS (POP3S, port 995) happens before the greeting.

use super::conn::{Endpoint, TlsParams};
use super::lines::LineConn;
use super::{Probe, ProbeError, ProbeFuture};

/// True for a positive POP3 status line (`+OK`, case-insensitive, alone or with text).
pub fn is_ok(line: &str) -> bool {
    let word = line.split_ascii_whitespace().next().unwrap_or("");
    word.eq_ignore_ascii_case("+OK")
}

/// Greeting, optional STLS, QUIT.
pub struct Pop3Probe {
    endpoint: Endpoint,
    starttls: Option<TlsParams>,
}

impl Pop3Probe {
    pub(crate) fn new(endpoint: Endpoint, starttls: Option<TlsParams>) -> Self {
        Pop3Probe { endpoint, starttls }
    }

    async fn run(&self) -> Result<(), ProbeError> {
        let mut conn = LineConn::new(self.endpoint.open().await?);
        let greeting = conn.read_line("greeting").await?;
        if !is_ok(&greeting) {
            conn.shutdown().await;
            return Err(ProbeError::Greeting(greeting));
        }
        if let Some(tls) = &self.starttls {
            conn.send(b"STLS\r\n", "STLS").await?;
            let reply = conn.read_line("STLS").await?;
            if !is_ok(&reply) {
                conn.send_quietly(b"QUIT\r\n").await;
                conn.shutdown().await;
                return Err(ProbeError::NoStartTls);
            }
            conn = LineConn::new(tls.handshake(conn.into_inner()?).await?);
        }
        conn.send(b"QUIT\r\n", "QUIT").await?;
        let reply = conn.read_line("QUIT").await?;
        conn.shutdown().await;
        if !is_ok(&reply) {
            return Err(ProbeError::Reply {
                command: "QUIT",
                reply,
            });
        }
        Ok(())
    }
}

impl Probe for Pop3Probe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(is_ok("+OK Dovecot ready."));
        assert!(is_ok("+ok"));
        assert!(!is_ok("-ERR busy"));
        assert!(!is_ok("+OKAY"));
        assert!(!is_ok(""));
    }
}
