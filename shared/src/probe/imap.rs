//! The `imap` probe: `* OK`/`* PREAUTH` greeting, `a1 CAPABILITY` → `a1 OK`, then
//! `a2 LOGOUT` → `* BYE` + `a2 OK`. With STARTTLS: CAPABILITY must list it,
//! `a2 STARTTLS` → OK → handshake → `a3 CAPABILITY`, `a4 LOGOUT` (RFC 9051 §6.2.1).
//! Implicit TLS (IMAPS, port 993) happens before the greeting.
//!
//! Parsing ([`classify_greeting`], [`tagged_status`], [`lists_starttls`]) is pure.

use super::conn::{BoxIo, Endpoint, TlsParams};
use super::lines::{LineConn, MAX_LINES};
use super::{Probe, ProbeError, ProbeFuture};

/// What an IMAP server said first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// `* OK`: ready, not authenticated.
    Ok,
    /// `* PREAUTH`: ready and already authenticated.
    Preauth,
    /// `* BYE`: refused.
    Bye,
    /// Anything else.
    Other,
}

/// Classifies a greeting line (case-insensitive keywords).
pub fn classify_greeting(line: &str) -> Greeting {
    let mut words = line.split_ascii_whitespace();
    if words.next() != Some("*") {
        return Greeting::Other;
    }
    match words.next() {
        Some(w) if w.eq_ignore_ascii_case("OK") => Greeting::Ok,
        Some(w) if w.eq_ignore_ascii_case("PREAUTH") => Greeting::Preauth,
        Some(w) if w.eq_ignore_ascii_case("BYE") => Greeting::Bye,
        _ => Greeting::Other,
    }
}

/// A tagged completion result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok,
    /// Failure.
    No,
    /// Protocol error.
    Bad,
}

/// If `line` is the tagged completion for `tag`, its status (`None` for untagged or
/// other tags; an unknown status word reads as `Bad`).
pub fn tagged_status(line: &str, tag: &str) -> Option<Status> {
    let rest = line.strip_prefix(tag)?.strip_prefix(' ')?;
    let word = rest.split_ascii_whitespace().next().unwrap_or("");
    Some(if word.eq_ignore_ascii_case("OK") {
        Status::Ok
    } else if word.eq_ignore_ascii_case("NO") {
        Status::No
    } else {
        Status::Bad
    })
}

/// True when any line advertises the `STARTTLS` capability: an untagged
/// `* CAPABILITY ...` line or a `[CAPABILITY ...]` response code.
pub fn lists_starttls<S: AsRef<str>>(lines: &[S]) -> bool {
    lines.iter().any(|l| {
        let l = l.as_ref();
        let upper = l.to_ascii_uppercase();
        let caps = if let Some(rest) = upper.strip_prefix("* CAPABILITY ") {
            rest
        } else if let Some(i) = upper.find("[CAPABILITY ") {
            let rest = &upper[i + "[CAPABILITY ".len()..];
            rest.split(']').next().unwrap_or("")
        } else {
            return false;
        };
        caps.split_ascii_whitespace().any(|c| c == "STARTTLS")
    })
}

/// Reads until the completion for `tag`; returns the untagged lines and the tagged one.
async fn read_tagged<S>(
    conn: &mut LineConn<S>,
    tag: &str,
    phase: &'static str,
) -> Result<(Vec<String>, String, Status), ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut untagged = Vec::new();
    loop {
        let line = conn.read_line(phase).await?;
        if let Some(status) = tagged_status(&line, tag) {
            return Ok((untagged, line, status));
        }
        if untagged.len() >= MAX_LINES {
            return Err(ProbeError::Protocol(format!(
                "{phase}: more than {MAX_LINES} lines without completion"
            )));
        }
        untagged.push(line);
    }
}

/// Greeting, CAPABILITY, optional STARTTLS, LOGOUT.
pub struct ImapProbe {
    endpoint: Endpoint,
    starttls: Option<TlsParams>,
}

impl ImapProbe {
    pub(crate) fn new(endpoint: Endpoint, starttls: Option<TlsParams>) -> Self {
        ImapProbe { endpoint, starttls }
    }

    async fn command(
        conn: &mut LineConn<BoxIo>,
        tag: &str,
        command: &'static str,
    ) -> Result<Vec<String>, ProbeError> {
        conn.send(format!("{tag} {command}\r\n").as_bytes(), command)
            .await?;
        let (untagged, line, status) = read_tagged(conn, tag, command).await?;
        if status != Status::Ok {
            return Err(ProbeError::Reply {
                command,
                reply: line,
            });
        }
        Ok(untagged)
    }

    async fn run(&self) -> Result<(), ProbeError> {
        let mut conn = LineConn::new(self.endpoint.open().await?);
        let greeting = conn.read_line("greeting").await?;
        let kind = classify_greeting(&greeting);
        if !matches!(kind, Greeting::Ok | Greeting::Preauth) {
            conn.shutdown().await;
            return Err(ProbeError::Greeting(greeting));
        }
        let result = self.converse(&mut conn, kind).await;
        if result.is_err() {
            // Best-effort goodbye; the server may already have closed.
            conn.send_quietly(b"z9 LOGOUT\r\n").await;
            conn.shutdown().await;
        }
        result
    }

    async fn converse(
        &self,
        conn: &mut LineConn<BoxIo>,
        greeting: Greeting,
    ) -> Result<(), ProbeError> {
        let caps = Self::command(conn, "a1", "CAPABILITY").await?;
        let mut logout_tag = "a2";
        if let Some(tls) = &self.starttls {
            // STARTTLS is only valid in the not-authenticated state (not after PREAUTH).
            if greeting == Greeting::Preauth || !lists_starttls(&caps) {
                return Err(ProbeError::NoStartTls);
            }
            Self::command(conn, "a2", "STARTTLS").await?;
            let plain = std::mem::replace(conn, LineConn::new(Box::new(tokio::io::empty())));
            *conn = LineConn::new(tls.handshake(plain.into_inner()?).await?);
            Self::command(conn, "a3", "CAPABILITY").await?;
            logout_tag = "a4";
        }
        conn.send(format!("{logout_tag} LOGOUT\r\n").as_bytes(), "LOGOUT")
            .await?;
        let (untagged, line, status) = read_tagged(conn, logout_tag, "LOGOUT").await?;
        conn.shutdown().await;
        if status != Status::Ok
            || !untagged
                .iter()
                .any(|l| classify_greeting(l) == Greeting::Bye)
        {
            return Err(ProbeError::Reply {
                command: "LOGOUT",
                reply: line,
            });
        }
        Ok(())
    }
}

impl Probe for ImapProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greetings() {
        assert_eq!(classify_greeting("* OK Dovecot ready."), Greeting::Ok);
        assert_eq!(
            classify_greeting("* ok [CAPABILITY IMAP4rev1] hi"),
            Greeting::Ok
        );
        assert_eq!(classify_greeting("* PREAUTH welcome"), Greeting::Preauth);
        assert_eq!(classify_greeting("* BYE busy"), Greeting::Bye);
        assert_eq!(classify_greeting("+OK pop3"), Greeting::Other);
        assert_eq!(classify_greeting(""), Greeting::Other);
        assert_eq!(classify_greeting("*"), Greeting::Other);
        assert_eq!(classify_greeting("*OK"), Greeting::Other);
    }

    #[test]
    fn tagged() {
        assert_eq!(tagged_status("a1 OK done", "a1"), Some(Status::Ok));
        assert_eq!(tagged_status("a1 no way", "a1"), Some(Status::No));
        assert_eq!(tagged_status("a1 BAD what", "a1"), Some(Status::Bad));
        assert_eq!(tagged_status("a1", "a1"), None);
        assert_eq!(tagged_status("a1 ", "a1"), Some(Status::Bad));
        assert_eq!(tagged_status("a10 OK", "a1"), None);
        assert_eq!(tagged_status("* OK", "a1"), None);
    }

    #[test]
    fn starttls_capability() {
        assert!(lists_starttls(&[
            "* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN"
        ]));
        assert!(lists_starttls(&[
            "* OK [CAPABILITY IMAP4rev1 starttls] ready"
        ]));
        assert!(!lists_starttls(&["* CAPABILITY IMAP4rev1 LOGINDISABLED"]));
        assert!(!lists_starttls(&["* OK STARTTLS is great"]));
        assert!(!lists_starttls::<&str>(&[]));
        assert!(!lists_starttls(&["* OK [CAPABILITY"]));
    }

    #[test]
    fn no_panic_on_arbitrary_lines() {
        let samples = [
            "",
            "*",
            "* ",
            "a1",
            "a1 ",
            "[CAPABILITY",
            "* OK [CAPABILITY ]",
            "\u{e9}[CAPABILITY \u{e9}",
            "* CAPABILITY",
            "ÿ* BYE",
            "a1 \u{0}",
        ];
        for line in samples {
            let _ = classify_greeting(line);
            let _ = tagged_status(line, "a1");
            let _ = lists_starttls(&[line]);
        }
    }
}
