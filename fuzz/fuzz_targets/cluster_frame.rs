//! Cluster datagrams come from anyone who can reach the gossip port: the frame check
//! (magic, member id, HMAC tag) runs before chitchat parses a byte.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shared::cluster::Auth;

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        Auth::new(
            b"fuzz-secret-0123456789",
            "lab",
            "b",
            ["a", "b"].iter().map(|s| s.to_string()).collect(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok((node, payload)) = auth().open(data) {
        // Only a member's id with the right tag gets through, and the payload is
        // the frame's tail.
        assert!(node == "a" || node == "b");
        assert!(data.ends_with(payload));
    }
});
