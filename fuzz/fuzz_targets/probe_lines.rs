//! What SMTP, IMAP and POP3 backends send the probes: the line framing and every
//! reply parser, over the lines framed from the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::probe::{imap, lines, pop3, smtp};

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let mut got = Vec::new();
    while let Ok(Some(line)) = lines::take_line(&mut buf, lines::MAX_LINE, "fuzz") {
        got.push(line);
        if got.len() >= lines::MAX_LINES {
            break;
        }
    }
    for line in &got {
        let _ = smtp::parse_line(line);
        let _ = imap::classify_greeting(line);
        let _ = imap::tagged_status(line, "a1");
        let _ = pop3::is_ok(line);
    }
    if let Ok(reply) = smtp::parse_reply(&got) {
        let _ = smtp::ehlo_offers_starttls(&reply);
    }
    let _ = imap::lists_starttls(&got);
});
