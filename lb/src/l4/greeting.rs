//! Judging a server-speaks-first backend's greeting before a client sees it.
//!
//! An L4 VIP for SMTP, IMAP or POP3 reads the backend's whole banner as part of
//! connecting ([`super::tcp`]): a backend that accepts but never greets (a stopped
//! process whose kernel still completes handshakes) or greets with a refusal (`421
//! busy`, `* BYE`, `-ERR`) is then a failed connect, retried on another backend, and
//! the client only ever sees a good greeting. This module is the pure part: given the
//! bytes read so far, is the greeting complete, and is it a welcome? It never panics
//! on any input (it is fuzzed).

use shared::config::MailProtocol;
use shared::probe::imap::{classify_greeting, Greeting};

/// Longest greeting read: multi-line SMTP banners are a few hundred bytes; past this
/// the backend is talking nonsense.
pub const MAX_GREETING: usize = 8 * 1024;

/// What the bytes read so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The greeting has not ended yet; read more.
    Incomplete,
    /// A complete positive greeting (SMTP 2xx, IMAP `* OK`/`* PREAUTH`, POP3 `+OK`).
    Welcome,
    /// A complete refusal (SMTP 4xx/5xx, IMAP `* BYE`, POP3 `-ERR`); the first line.
    Refused(String),
    /// Not a greeting of the protocol (or longer than [`MAX_GREETING`]).
    Malformed(String),
}

/// Judges `buf`, the backend's first bytes, as a greeting of `protocol`. Opaque TCP
/// has no greeting and is always [`Verdict::Welcome`].
pub fn judge(protocol: MailProtocol, buf: &[u8]) -> Verdict {
    let verdict = match protocol {
        MailProtocol::Smtp => smtp(buf),
        MailProtocol::Imap => first_line(buf).map_or(Verdict::Incomplete, imap),
        MailProtocol::Pop3 => first_line(buf).map_or(Verdict::Incomplete, pop3),
        MailProtocol::None => Verdict::Welcome,
    };
    if verdict == Verdict::Incomplete && buf.len() >= MAX_GREETING {
        return Verdict::Malformed(format!("greeting longer than {MAX_GREETING} bytes"));
    }
    verdict
}

/// The first complete line without its line ending, if one has arrived.
fn first_line(buf: &[u8]) -> Option<&[u8]> {
    lines(buf).next()
}

/// Complete lines (LF-terminated, a CR before the LF dropped).
fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    buf[..complete]
        .split_inclusive(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\n").unwrap_or(l))
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The line as text for messages, shortened so a hostile banner cannot flood logs.
fn shown(line: &[u8]) -> String {
    shared::config::clip(&String::from_utf8_lossy(line), 120)
}

/// RFC 5321 §4.2: `NNN-text` continuation lines, then `NNN text` (or bare `NNN`).
fn smtp(buf: &[u8]) -> Verdict {
    let mut code: Option<&[u8]> = None;
    let mut first: Option<&[u8]> = None;
    for line in lines(buf) {
        first.get_or_insert(line);
        if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
            return Verdict::Malformed(shown(line));
        }
        if *code.get_or_insert(&line[..3]) != &line[..3] {
            return Verdict::Malformed(format!("mixed reply codes: {}", shown(line)));
        }
        match line.get(3) {
            Some(b'-') => continue,
            None | Some(b' ') => {}
            Some(_) => return Verdict::Malformed(shown(line)),
        }
        let first = shown(first.unwrap_or(line));
        return match line[0] {
            b'2' => Verdict::Welcome,
            b'4' | b'5' => Verdict::Refused(first),
            _ => Verdict::Malformed(first),
        };
    }
    Verdict::Incomplete
}

/// RFC 9051 §7.1: `* OK` or `* PREAUTH` greet, `* BYE` refuses.
fn imap(line: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(line);
    match classify_greeting(&text) {
        Greeting::Ok | Greeting::Preauth => Verdict::Welcome,
        Greeting::Bye => Verdict::Refused(shown(line)),
        Greeting::Other => Verdict::Malformed(shown(line)),
    }
}

/// RFC 1939 §4: `+OK` greets, `-ERR` refuses.
fn pop3(line: &[u8]) -> Verdict {
    let starts = |p: &[u8]| line.len() >= p.len() && line[..p.len()].eq_ignore_ascii_case(p);
    if starts(b"+OK") {
        Verdict::Welcome
    } else if starts(b"-ERR") {
        Verdict::Refused(shown(line))
    } else {
        Verdict::Malformed(shown(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_waits_for_the_last_line_of_a_multi_line_banner() {
        let s = |b: &[u8]| judge(MailProtocol::Smtp, b);
        assert_eq!(s(b""), Verdict::Incomplete);
        assert_eq!(s(b"220 mx1 ESMTP"), Verdict::Incomplete);
        assert_eq!(s(b"220 mx1 ESMTP\r\n"), Verdict::Welcome);
        assert_eq!(s(b"220\n"), Verdict::Welcome);
        assert_eq!(s(b"220-mx1 ESMTP\r\n"), Verdict::Incomplete);
        assert_eq!(s(b"220-mx1 ESMTP\r\n220-policy\r\n"), Verdict::Incomplete);
        assert_eq!(s(b"220-mx1 ESMTP\r\n220 ready\r\n"), Verdict::Welcome);
        assert_eq!(
            s(b"421 4.3.2 busy\r\n"),
            Verdict::Refused("421 4.3.2 busy".into())
        );
        assert_eq!(
            s(b"554-no\r\n554 go away\r\n"),
            Verdict::Refused("554-no".into())
        );
        assert!(matches!(s(b"EHLO\r\n"), Verdict::Malformed(_)));
        assert!(matches!(s(b"220-a\r\n250 b\r\n"), Verdict::Malformed(_)));
        assert!(matches!(s(b"220x\r\n"), Verdict::Malformed(_)));
        assert!(matches!(s(b"120 hello\r\n"), Verdict::Malformed(_)));
    }

    #[test]
    fn imap_and_pop3_judge_the_first_line() {
        let i = |b: &[u8]| judge(MailProtocol::Imap, b);
        assert_eq!(i(b"* OK [CAPABILITY IMAP4rev1] ready"), Verdict::Incomplete);
        assert_eq!(i(b"* OK ready\r\n"), Verdict::Welcome);
        assert_eq!(i(b"* PREAUTH hi\r\n"), Verdict::Welcome);
        assert!(matches!(i(b"* BYE busy\r\n"), Verdict::Refused(_)));
        assert!(matches!(i(b"+OK\r\n"), Verdict::Malformed(_)));
        let p = |b: &[u8]| judge(MailProtocol::Pop3, b);
        assert_eq!(p(b"+OK"), Verdict::Incomplete);
        assert_eq!(p(b"+OK Dovecot ready.\r\n"), Verdict::Welcome);
        assert_eq!(p(b"-ERR busy\r\n"), Verdict::Refused("-ERR busy".into()));
        assert!(matches!(p(b"* OK\r\n"), Verdict::Malformed(_)));
        assert_eq!(judge(MailProtocol::None, b""), Verdict::Welcome);
    }

    #[test]
    fn an_endless_banner_is_malformed() {
        let mut buf = b"220-".to_vec();
        buf.resize(MAX_GREETING, b'x');
        assert!(matches!(
            judge(MailProtocol::Smtp, &buf),
            Verdict::Malformed(_)
        ));
        let long = vec![b'\xff'; MAX_GREETING * 2];
        for p in [MailProtocol::Smtp, MailProtocol::Imap, MailProtocol::Pop3] {
            assert!(matches!(judge(p, &long), Verdict::Malformed(_)));
        }
    }
}
