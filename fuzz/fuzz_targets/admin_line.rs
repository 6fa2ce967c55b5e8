//! Admin command lines come from any local user allowed to open the socket.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = shared::admin::protocol::parse(line);
    }
});
