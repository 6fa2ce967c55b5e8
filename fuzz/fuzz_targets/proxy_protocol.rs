//! PROXY v1/v2 headers arrive from whatever sits in front of an `accept_proxy` VIP.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_, used))) = shared::proxy_protocol::parse(data) {
        assert!(used <= data.len(), "consumed past the input");
    }
});
