//! The UDP fast path's parser and patcher ([`gss::wire`]) and its table lookup
//! ([`gss::fastpath::answer`]) see every datagram a client sends.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn zone() -> &'static gss::answers::Zone {
    static ZONE: OnceLock<gss::answers::Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let text = include_str!("dns_zone.toml");
        let cfg =
            shared::config::parse(text, Path::new("dns_zone.toml")).expect("fuzz zone config");
        gss::answers::render_all_up(&cfg.gss.expect("[gss]")).expect("fuzz zone renders")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut key = [0u8; gss::wire::KEY_MAX];
    if let Some(q) = gss::wire::parse_query(data, &mut key) {
        assert!(q.question_end <= data.len());
        assert!(q.key_len <= gss::wire::KEY_MAX);
        assert_eq!(data[2] & 0x80, 0, "a response is never taken as a query");
    }
    let mut out = [0u8; 4096];
    if let Some(n) = gss::fastpath::answer(zone(), data, &mut out) {
        assert!(n <= usize::from(gss::wire::MAX_EDNS_PAYLOAD));
        assert_ne!(out[2] & 0x80, 0, "answers are responses");
        assert_eq!(out[..2], data[..2], "the client's ID");
    }
});
