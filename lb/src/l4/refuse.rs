//! What a mail VIP says instead of resetting the connection when it cannot serve:
//! no backend in rotation, every connect failed, or a connection limit was hit. Each
//! protocol gets its own temporary-failure greeting so clients retry later (SMTP
//! senders queue on 421) instead of reporting a hard error.

use shared::config::MailProtocol;

/// The bytes sent before closing, or `None` for opaque TCP (just close).
pub(crate) fn refusal(protocol: MailProtocol) -> Option<&'static [u8]> {
    match protocol {
        MailProtocol::Smtp => Some(b"421 4.3.2 Service not available, try again later\r\n"),
        MailProtocol::Imap => Some(b"* BYE Service not available, try again later\r\n"),
        MailProtocol::Pop3 => Some(b"-ERR Service not available, try again later\r\n"),
        MailProtocol::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_refuses_in_kind() {
        let s = |p| refusal(p).map(|b| String::from_utf8_lossy(b).into_owned());
        assert_eq!(
            s(MailProtocol::Smtp).as_deref(),
            Some("421 4.3.2 Service not available, try again later\r\n")
        );
        assert!(
            s(MailProtocol::Imap).is_some_and(|l| l.starts_with("* BYE ") && l.ends_with("\r\n"))
        );
        assert!(
            s(MailProtocol::Pop3).is_some_and(|l| l.starts_with("-ERR ") && l.ends_with("\r\n"))
        );
        assert_eq!(refusal(MailProtocol::None), None);
    }
}
