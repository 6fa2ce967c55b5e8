//! The UDP fast path's parser and patcher ([`gss::fast::wire`]) and its table lookup
//! ([`gss::fast::answer`]) see every datagram a client sends.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn zone() -> &'static gss::Snapshot {
    static ZONE: OnceLock<gss::Snapshot> = OnceLock::new();
    ZONE.get_or_init(|| {
        let text = include_str!("dns_zone.toml");
        let cfg =
            shared::config::parse(text, Path::new("dns_zone.toml")).expect("fuzz zone config");
        gss::Snapshot::all_up(&cfg.gss.expect("[gss]")).expect("fuzz zone renders")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut key = [0u8; gss::fast::wire::KEY_MAX];
    if let Some(q) = gss::fast::wire::parse_query(data, &mut key) {
        assert!(q.question_end <= data.len());
        assert!(q.key_len <= gss::fast::wire::KEY_MAX);
        assert_eq!(data[2] & 0x80, 0, "a response is never taken as a query");
    }
    let mut out = [0u8; 4096];
    let table = zone().table().expect("all_up renders the table");
    if let Some(n) = gss::fast::answer(table, data, &mut out) {
        assert!(n <= usize::from(gss::fast::wire::MAX_EDNS_PAYLOAD));
        assert_ne!(out[2] & 0x80, 0, "answers are responses");
        assert_eq!(out[..2], data[..2], "the client's ID");
    }
});
