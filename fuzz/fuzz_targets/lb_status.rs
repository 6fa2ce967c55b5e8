//! The `/status` document a gss `lb_status` keepalive fetches from a remote lb.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let wanted = ["smtp".to_string(), "imap".to_string()];
    let _ = shared::probe::lb_status::judge(data, &[]);
    let _ = shared::probe::lb_status::judge(data, &wanted);
});
