//! Config text comes from operators, but `portico check` is also what they run on a
//! file of unknown provenance; the loader must answer every input with a config or
//! errors. `parse` opens no file, so the fuzzer never touches the disk.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = shared::config::parse(text, std::path::Path::new("fuzz.toml")) {
            for e in errors.iter() {
                assert!(e.line >= 1 && e.col >= 1, "positions are 1-based");
                assert!(
                    e.message.chars().count() <= shared::config::MAX_MESSAGE,
                    "messages are clipped"
                );
            }
        }
    }
});
