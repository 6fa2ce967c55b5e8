//! Everything the fast path hands over (and every TCP message) goes through
//! hickory-proto's parser and [`gss::respond::answer_message`].
#![no_main]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;

use gss::respond::{answer_message, Protocol};
use libfuzzer_sys::fuzz_target;

fn zone() -> &'static gss::zone::Zone {
    static ZONE: OnceLock<gss::zone::Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let text = include_str!("dns_zone.toml");
        let cfg =
            shared::config::parse(text, Path::new("dns_zone.toml")).expect("fuzz zone config");
        gss::zone::render_all_up(&cfg.gss.expect("[gss]")).expect("fuzz zone renders")
    })
}

fuzz_target!(|data: &[u8]| {
    let src: SocketAddr = ([127, 0, 0, 1], 5353).into();
    for (protocol, limit) in [(Protocol::Udp, 1232), (Protocol::Tcp, 65535)] {
        if let Some(resp) = answer_message(zone(), data, src, protocol) {
            assert_eq!(data[2] & 0x80, 0, "QR=1 is never answered");
            assert!(resp.len() >= 12 && resp.len() <= limit);
            assert_ne!(resp[2] & 0x80, 0, "answers are responses");
        }
    }
});
