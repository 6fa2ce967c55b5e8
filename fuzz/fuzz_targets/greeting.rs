//! The greeting an L4 mail VIP reads from a backend before relaying: every prefix of
//! the input is judged in every protocol, as the bytes arrive in pieces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lb::greeting::{judge, Verdict, MAX_GREETING};
use shared::config::MailProtocol;

fuzz_target!(|data: &[u8]| {
    for p in [MailProtocol::Smtp, MailProtocol::Imap, MailProtocol::Pop3] {
        let whole = judge(p, data);
        if data.len() >= MAX_GREETING {
            assert_ne!(whole, Verdict::Incomplete, "reads are bounded");
        }
        if let Some(cut) = data.iter().position(|&b| b == b'\n') {
            // Once a verdict is reached, more bytes never reopen it.
            let early = judge(p, &data[..=cut]);
            if early != Verdict::Incomplete {
                assert_eq!(early, whole);
            }
        }
    }
});
