//! The state file (`state_dir/intent.json`) a node reads at start: any bytes parse
//! or fail cleanly, and whatever parses survives a write and a re-read unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::intent::file;

fuzz_target!(|data: &[u8]| {
    if let Ok(intents) = file::parse(data) {
        for (key, entry) in &intents {
            assert!(key.accepts(&entry.value), "{key} holds {:?}", entry.value);
        }
        let again = file::parse(&file::encode(&intents)).expect("our own encoding parses");
        assert_eq!(again, intents);
    }
});
