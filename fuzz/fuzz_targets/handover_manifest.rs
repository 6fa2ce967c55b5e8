//! The upgrade socket's manifest comes from another process: whatever bytes arrive
//! where the length-prefixed manifest and its descriptors should be, the successor
//! gets a manifest or an error, never a panic or a hang.
#![no_main]

use std::io::Write;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use shared::handover;

fuzz_target!(|data: &[u8]| {
    // Everything must fit the socket buffer: nothing reads while we write.
    if data.len() > 100_000 {
        return;
    }
    if data.len() >= 4 {
        if let Ok(m) = handover::parse_manifest(&data[4..]) {
            assert_eq!(m.version, handover::VERSION);
        }
    }
    let Ok((mut theirs, ours)) = UnixStream::pair() else {
        return;
    };
    if theirs.write_all(data).is_err() {
        return;
    }
    drop(theirs);
    // No descriptor travels with these bytes: only a manifest listing no socket
    // can be accepted, and then nothing is left untaken.
    if let Ok(got) = handover::receive(&ours) {
        assert!(got.untaken().is_empty());
    }
});
