//! HTTP header rewriting reads every request and response head a client or backend
//! sends: hop-by-hop stripping, forwarding headers, Host validation, cookie joining
//! and the sticky cookie, transfer codings. The input's first byte picks the
//! options; the rest is `name: value` lines. Beyond not panicking, the rewrites must
//! hold their promises: no hop-by-hop header survives, one Cookie line after joining,
//! the sticky cookie is gone after its removal, a replaced forwarding chain is ours.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use lb::http::headers;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut h = HeaderMap::new();
    for line in rest.split(|&c| c == b'\n') {
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(name, value);
    }

    for v in h.get_all(http::header::HOST) {
        if headers::valid_host(v.as_bytes()) {
            assert!(!v.as_bytes().contains(&b'@') && !v.as_bytes().contains(&b'/'));
        }
    }
    let _ = headers::transfer_coding(&h);
    let _ = headers::accepts_trailers(&h);
    let upgrade = flags & 1 == 1 && headers::is_upgrade(&h);

    headers::strip_hop_by_hop(&mut h, upgrade);
    for name in ["keep-alive", "proxy-connection", "transfer-encoding", "trailer"] {
        assert!(!h.contains_key(name), "{name} survived");
    }
    if !upgrade {
        assert!(!h.contains_key("upgrade") && !h.contains_key("connection"));
    }

    headers::join_cookies(&mut h);
    assert!(h.get_all(http::header::COOKIE).iter().count() <= 1);
    let _ = headers::cookie(&h, "PORTICO");
    headers::remove_cookie(&mut h, "PORTICO");
    assert_eq!(headers::cookie(&h, "PORTICO"), None);

    let ip = if flags & 2 == 2 {
        std::net::IpAddr::from([192, 0, 2, 9])
    } else {
        std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])
    };
    let host = h
        .get(http::header::HOST)
        .filter(|v| headers::valid_host(v.as_bytes()))
        .cloned();
    let append = flags & 4 == 4;
    headers::Forwarding::new(ip, "https").apply(&mut h, host.as_ref(), append);
    if !append {
        let xff: Vec<_> = h.get_all(headers::X_FORWARDED_FOR).iter().collect();
        assert_eq!(xff.len(), 1);
    }
    headers::add_via(&mut h, http::Version::HTTP_2);
});
