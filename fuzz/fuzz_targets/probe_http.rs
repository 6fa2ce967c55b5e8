//! What HTTP and MAPI backends answer the probes: status, body and (MAPI) headers,
//! judged against what the probe expects. The first bytes pick the status and the
//! expectations; header lines (`name: value`) follow a blank line, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shared::probe::{http, mapi};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let status = u16::from_be_bytes([data[0], data[1]]);
    let expect = [u16::from(data[2]) + 100, 200];
    let rest = &data[4..];
    let (head, body) = match rest.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&rest[..i], &rest[i + 2..]),
        None => (&rest[..0], rest),
    };
    let needle = std::str::from_utf8(&body[..body.len().min(usize::from(data[3] & 15))]).ok();
    let _ = http::judge(status, body, &expect, needle);
    let mut headers = ::http::HeaderMap::new();
    for line in head.split(|&b| b == b'\n') {
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            if let (Ok(name), Ok(value)) = (
                ::http::HeaderName::from_bytes(&line[..colon]),
                ::http::HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
            ) {
                headers.append(name, value);
            }
        }
    }
    let _ = mapi::judge(status, &headers);
});
