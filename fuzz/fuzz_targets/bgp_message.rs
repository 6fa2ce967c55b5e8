//! What a router sends the lb's BGP speaker: the stream is cut into messages the way
//! the session does (`frame_len`), and each is decoded; nothing may panic, and a
//! framed length is always a whole, bounded message.
#![no_main]

use lb::bgp_wire::{decode, frame_len, MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    let mut rest = data;
    while let Ok(Some(len)) = frame_len(rest) {
        assert!((19..=MAX_LEN).contains(&len), "frame length {len}");
        if rest.len() < len {
            break;
        }
        let _ = decode(&rest[..len]);
        rest = &rest[len..];
    }
});
