//! DNSSEC key files are operator input (`[gss.dnssec] keys`): the `.key` and
//! `.private` parsers, and pairing what they accept into a signing key, must refuse
//! garbage without panicking. The input is split at the first NUL into the two files.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (public, private) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let (Ok(public), Ok(private)) = (std::str::from_utf8(public), std::str::from_utf8(private))
    else {
        return;
    };
    let p = shared::dnssec::parse_public(public);
    let s = shared::dnssec::parse_private(private);
    if let (Ok(p), Ok(s)) = (p, s) {
        let _ = shared::dnssec::ZoneKey::from_files(&p, &s);
    }
});
