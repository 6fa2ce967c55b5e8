//! The `smtp` probe: the whole (possibly multi-line) `220` greeting, `EHLO` → `250`,
//! optionally `STARTTLS` → `220` → handshake → `EHLO` again (RFC 3207), then `QUIT`.
//! Implicit TLS (SMTPS, port 465) happens before the greeting.
//!
//! Reply parsing ([`parse_reply`], [`ehlo_offers_starttls`]) is pure and total: any
//! input gives a value or an error, never a panic.

use super::conn::{BoxIo, Endpoint, TlsParams};
use super::lines::{LineConn, MAX_LINES};
use super::{Probe, ProbeError, ProbeFuture};

/// A complete SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code shared by every line.
    pub code: u16,
    /// The text of each line (after `NNN-` / `NNN `), in order.
    pub texts: Vec<String>,
    /// The first line verbatim, for failure reasons.
    pub first_line: String,
}

/// Why reply lines do not form an SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// No lines at all.
    #[error("empty reply")]
    Empty,
    /// A line not starting with three digits and a separator.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    /// Lines of one reply with different codes.
    #[error("mixed reply codes in {0:?}")]
    MixedCodes(String),
    /// A continuation (`NNN-`) as the last line, or a final line before the end.
    #[error("reply not terminated properly")]
    Unterminated,
}

/// Splits one reply line into `(code, is_last, text)`.
pub fn parse_line(line: &str) -> Result<(u16, bool, &str), ReplyError> {
    let bytes = line.as_bytes();
    if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
        return Err(ReplyError::Malformed(line.to_string()));
    }
    let code = u16::from(bytes[0] - b'0') * 100
        + u16::from(bytes[1] - b'0') * 10
        + u16::from(bytes[2] - b'0');
    // ASCII digits checked above, so index 3 is a char boundary.
    match bytes.get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(ReplyError::Malformed(line.to_string())),
    }
}

/// Parses the lines of one complete reply (all continuation lines, then a final one).
pub fn parse_reply<S: AsRef<str>>(lines: &[S]) -> Result<Reply, ReplyError> {
    let first_line = lines.first().ok_or(ReplyError::Empty)?.as_ref().to_string();
    let mut code = None;
    let mut texts = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let (c, last, text) = parse_line(line.as_ref())?;
        if *code.get_or_insert(c) != c {
            return Err(ReplyError::MixedCodes(line.as_ref().to_string()));
        }
        if last != (i + 1 == lines.len()) {
            return Err(ReplyError::Unterminated);
        }
        texts.push(text.to_string());
    }
    Ok(Reply {
        code: code.unwrap_or(0),
        texts,
        first_line,
    })
}

/// True when an EHLO reply lists the `STARTTLS` extension on any line (servers order
/// extensions freely; the first line is the greeting name and is skipped).
pub fn ehlo_offers_starttls(reply: &Reply) -> bool {
    reply.texts.iter().skip(1).any(|t| {
        t.split_ascii_whitespace()
            .next()
            .is_some_and(|kw| kw.eq_ignore_ascii_case("STARTTLS"))
    })
}

/// Reads lines until a final reply line, bounded by [`MAX_LINES`].
pub(crate) async fn read_reply<S>(
    conn: &mut LineConn<S>,
    phase: &'static str,
) -> Result<Reply, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut lines = Vec::new();
    loop {
        let line = conn.read_line(phase).await?;
        let (_, last, _) =
            parse_line(&line).map_err(|e| ProbeError::Protocol(format!("{phase}: {e}")))?;
        lines.push(line);
        if last {
            break;
        }
        if lines.len() >= MAX_LINES {
            return Err(ProbeError::Protocol(format!(
                "{phase}: reply longer than {MAX_LINES} lines"
            )));
        }
    }
    parse_reply(&lines).map_err(|e| ProbeError::Protocol(format!("{phase}: {e}")))
}

/// Greeting, EHLO, optional STARTTLS, QUIT.
pub struct SmtpProbe {
    endpoint: Endpoint,
    starttls: Option<TlsParams>,
    ehlo: Vec<u8>,
}

impl SmtpProbe {
    pub(crate) fn new(endpoint: Endpoint, starttls: Option<TlsParams>, helo: &str) -> Self {
        SmtpProbe {
            endpoint,
            starttls,
            ehlo: format!("EHLO {helo}\r\n").into_bytes(),
        }
    }

    async fn ehlo(&self, conn: &mut LineConn<BoxIo>) -> Result<Reply, ProbeError> {
        conn.send(&self.ehlo, "EHLO").await?;
        let reply = read_reply(conn, "EHLO").await?;
        if reply.code != 250 {
            quit_quietly(conn).await;
            return Err(ProbeError::Reply {
                command: "EHLO",
                reply: reply.first_line,
            });
        }
        Ok(reply)
    }

    async fn run(&self) -> Result<(), ProbeError> {
        let mut conn = LineConn::new(self.endpoint.open().await?);
        let greeting = read_reply(&mut conn, "greeting").await?;
        if greeting.code != 220 {
            // RFC 5321 §3.1: after a 554 greeting the server waits for QUIT.
            quit_quietly(&mut conn).await;
            return Err(ProbeError::Greeting(greeting.first_line));
        }
        let reply = self.ehlo(&mut conn).await?;
        if let Some(tls) = &self.starttls {
            if !ehlo_offers_starttls(&reply) {
                quit_quietly(&mut conn).await;
                return Err(ProbeError::NoStartTls);
            }
            conn.send(b"STARTTLS\r\n", "STARTTLS").await?;
            let reply = read_reply(&mut conn, "STARTTLS").await?;
            if reply.code != 220 {
                quit_quietly(&mut conn).await;
                return Err(ProbeError::Reply {
                    command: "STARTTLS",
                    reply: reply.first_line,
                });
            }
            conn = LineConn::new(tls.handshake(conn.into_inner()?).await?);
            self.ehlo(&mut conn).await?;
        }
        conn.send(b"QUIT\r\n", "QUIT").await?;
        let reply = read_reply(&mut conn, "QUIT").await?;
        conn.shutdown().await;
        if reply.code != 221 {
            return Err(ProbeError::Reply {
                command: "QUIT",
                reply: reply.first_line,
            });
        }
        Ok(())
    }
}

/// The polite goodbye after a failure: send QUIT, do not wait for the answer.
async fn quit_quietly(conn: &mut LineConn<BoxIo>) {
    conn.send_quietly(b"QUIT\r\n").await;
    conn.shutdown().await;
}

impl Probe for SmtpProbe {
    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_greeting() {
        let r = parse_reply(&["220-mx1.example.test ESMTP", "220-no UCE", "220 ready"]).unwrap();
        assert_eq!(r.code, 220);
        assert_eq!(r.texts, vec!["mx1.example.test ESMTP", "no UCE", "ready"]);
        assert_eq!(r.first_line, "220-mx1.example.test ESMTP");
    }

    #[test]
    fn bare_code_is_a_final_line() {
        assert_eq!(parse_reply(&["250"]).unwrap().code, 250);
        assert_eq!(parse_line("354").unwrap(), (354, true, ""));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_reply::<&str>(&[]), Err(ReplyError::Empty));
        assert!(matches!(
            parse_reply(&["22 hi"]),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(&["220xhi"]),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(&["220-a", "250 b"]),
            Err(ReplyError::MixedCodes(_))
        ));
        assert_eq!(parse_reply(&["220-a"]), Err(ReplyError::Unterminated));
        assert_eq!(
            parse_reply(&["220 a", "220 b"]),
            Err(ReplyError::Unterminated)
        );
        assert!(parse_line("२२० x").is_err(), "non-ASCII digits");
        assert!(parse_line("").is_err());
    }

    #[test]
    fn starttls_anywhere_in_ehlo() {
        let offers = |lines: &[&str]| ehlo_offers_starttls(&parse_reply(lines).unwrap());
        assert!(offers(&[
            "250-mx",
            "250-PIPELINING",
            "250-STARTTLS",
            "250 8BITMIME"
        ]));
        assert!(offers(&["250-mx", "250 starttls"]));
        assert!(!offers(&["250-mx", "250-PIPELINING", "250 8BITMIME"]));
        assert!(
            !offers(&["250 STARTTLS"]),
            "the first line is the server name"
        );
        assert!(!offers(&["250-mx", "250 STARTTLSX"]));
    }

    #[test]
    fn no_panic_on_arbitrary_lines() {
        let samples = [
            "",
            "2",
            "25",
            "250",
            "250-",
            "250 ",
            "2500",
            "ÿÿÿ",
            "25\u{e9}",
            "9999 x",
            "000-\u{0}",
        ];
        for a in samples {
            let _ = parse_line(a);
            for b in samples {
                let _ = parse_reply(&[a, b]);
            }
        }
    }
}
