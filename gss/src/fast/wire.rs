//! Pure, allocation-free DNS wire helpers for the UDP fast path ([`crate::fastpath`]):
//! a bounds-checked parser that accepts only the plainest queries (and says "not
//! mine" for everything else, so hickory's full parser and our handler decide those),
//! and the patcher that turns a pre-rendered response into the answer to one query.
//!
//! The parser never panics and never reads out of bounds whatever the input (every
//! index is checked through `get`); it is fuzzed by this module's tests and by
//! `tests/fastpath.rs`. It works on the client's bytes in place and lower-cases the
//! question name into a caller-provided stack buffer, which is the lookup key.

/// DNS header length.
pub const HEADER: usize = 12;
/// Longest name in wire format (RFC 1035 §3.1).
pub const MAX_NAME: usize = 255;
/// Lookup key capacity: lower-cased wire name plus the 2-byte QTYPE.
pub const KEY_MAX: usize = MAX_NAME + 2;
/// Length of an OPT record without options: root name, TYPE, CLASS, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;
/// Largest UDP response sent to EDNS clients (DNS flag day 2020), as in the hickory path.
pub const MAX_EDNS_PAYLOAD: u16 = 1232;
/// Largest UDP response sent to clients without EDNS (RFC 1035 §4.2.1).
pub const MAX_PLAIN_PAYLOAD: usize = 512;

const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const DO_BIT: u16 = 0x8000;
/// Header byte 2: QR, OPCODE (4 bits), AA, TC, RD.
const QR: u8 = 0x80;
const OPCODE_MASK: u8 = 0x78;
const RD: u8 = 0x01;
/// Header byte 3: RA, Z, AD, CD, RCODE (4 bits).
const CD: u8 = 0x10;
/// Bits of byte 3 a plain query leaves clear: RA, Z and RCODE (AD and CD are common,
/// RFC 6840 §5.7). Anything else set is unusual enough to leave to hickory.
const ODD_BYTE3: u8 = 0x80 | 0x40 | 0x0f;

/// The EDNS part of a query the fast path accepts: version 0, no option other than a
/// DNS cookie (ignored), no flag other than DO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    /// Advertised UDP payload size, as sent.
    pub payload: u16,
    /// The DO bit (RFC 3225), copied into the response OPT.
    pub dnssec_ok: bool,
}

impl Opt {
    /// The response size limit for this client, as the hickory path computes it:
    /// below 512 reads as 512 (RFC 6891 §6.2.5), above 1232 is capped.
    pub fn limit(&self) -> u16 {
        self.payload
            .clamp(MAX_PLAIN_PAYLOAD as u16, MAX_EDNS_PAYLOAD)
    }
}

/// A query the fast path may answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// End of the question section (offset of the first byte after QCLASS).
    pub question_end: usize,
    /// Bytes of the lookup key written: lower-cased wire name then QTYPE.
    pub key_len: usize,
    /// QTYPE.
    pub qtype: u16,
    /// The query's OPT, if any.
    pub opt: Option<Opt>,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    let b = p.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// EDNS option code of DNS COOKIE (RFC 7873).
const OPTION_COOKIE: u16 = 10;

/// True for OPT rdata that is empty or holds exactly one well-formed COOKIE option
/// (an 8-byte client cookie, optionally with an 8–32-byte server cookie). BIND and
/// `dig` send a cookie with nearly every query; a server that does not implement
/// cookies answers as if the option were absent (RFC 7873 §5.2), which is what the
/// pre-rendered OPT (no options) does. Any other option, or a malformed cookie (which
/// needs FORMERR), goes to the full handler.
fn only_a_cookie(rdata: &[u8]) -> bool {
    match rdata {
        [] => true,
        [c0, c1, l0, l1, data @ ..] => {
            let code = u16::from_be_bytes([*c0, *c1]);
            let len = usize::from(u16::from_be_bytes([*l0, *l1]));
            code == OPTION_COOKIE && len == data.len() && (len == 8 || (16..=40).contains(&len))
        }
        _ => false,
    }
}

/// Parses `pkt` as a plain query: QR=0, OPCODE QUERY, one question of class IN with
/// an uncompressed name, no answer or authority records, at most one additional
/// record which must be an OPT of version 0 with no option but a DNS cookie, and
/// nothing after it.
/// Writes the lower-cased wire name followed by QTYPE into `key`. `None` means "not
/// for the fast path": malformed, or well-formed but needing the full handler.
pub fn parse_query(pkt: &[u8], key: &mut [u8; KEY_MAX]) -> Option<Query> {
    let h = pkt.get(..HEADER)?;
    if h[2] & (QR | OPCODE_MASK) != 0 || h[3] & ODD_BYTE3 != 0 {
        return None;
    }
    let qd = u16::from_be_bytes([h[4], h[5]]);
    let an = u16::from_be_bytes([h[6], h[7]]);
    let ns = u16::from_be_bytes([h[8], h[9]]);
    let ar = u16::from_be_bytes([h[10], h[11]]);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    // Name: length-prefixed labels up to the root label; no compression pointers
    // (nothing precedes the question to point at) and no extended label types.
    let mut at = HEADER;
    let mut k = 0usize;
    loop {
        let len = usize::from(*pkt.get(at)?);
        if len & 0xc0 != 0 {
            return None;
        }
        let label = pkt.get(at..at + 1 + len)?;
        if k + label.len() > MAX_NAME {
            return None;
        }
        for (dst, src) in key[k..k + label.len()].iter_mut().zip(label) {
            *dst = src.to_ascii_lowercase();
        }
        k += label.len();
        at += label.len();
        if len == 0 {
            break;
        }
    }
    let qtype = u16_at(pkt, at)?;
    let qclass = u16_at(pkt, at + 2)?;
    if qclass != CLASS_IN {
        return None;
    }
    key[k..k + 2].copy_from_slice(&qtype.to_be_bytes());
    let question_end = at + 4;
    let opt = if ar == 1 {
        // OPT: root owner, TYPE 41, CLASS = payload, TTL = ext-rcode, version, flags.
        let rr = pkt.get(question_end..question_end + OPT_LEN)?;
        if rr[0] != 0 || u16::from_be_bytes([rr[1], rr[2]]) != TYPE_OPT {
            return None;
        }
        let payload = u16::from_be_bytes([rr[3], rr[4]]);
        let (ext_rcode, version) = (rr[5], rr[6]);
        let flags = u16::from_be_bytes([rr[7], rr[8]]);
        let rdlen = usize::from(u16::from_be_bytes([rr[9], rr[10]]));
        if ext_rcode != 0 || version != 0 || flags & !DO_BIT != 0 {
            return None;
        }
        let rdata = pkt.get(question_end + OPT_LEN..question_end + OPT_LEN + rdlen)?;
        if !only_a_cookie(rdata) {
            return None;
        }
        Some((
            Opt {
                payload,
                dnssec_ok: flags & DO_BIT != 0,
            },
            OPT_LEN + rdlen,
        ))
    } else {
        None
    };
    let end = question_end + opt.map_or(0, |(_, len)| len);
    let opt = opt.map(|(o, _)| o);
    if end != pkt.len() {
        return None;
    }
    Some(Query {
        question_end,
        key_len: k + 2,
        qtype,
        opt,
    })
}

/// Checks that `tmpl` is a response the patcher can use for a query of question
/// length `question_len`: a header, then a question of that length, and (when
/// `with_opt`) an option-less OPT as its last 11 bytes. Run at render time.
pub fn template_ok(tmpl: &[u8], question_len: usize, with_opt: bool) -> bool {
    if tmpl.len() < HEADER + question_len + if with_opt { OPT_LEN } else { 0 } {
        return false;
    }
    if u16::from_be_bytes([tmpl[4], tmpl[5]]) != 1 || tmpl[2] & QR == 0 {
        return false;
    }
    let ar = u16::from_be_bytes([tmpl[10], tmpl[11]]);
    if !with_opt {
        return ar == 0;
    }
    let o = &tmpl[tmpl.len() - OPT_LEN..];
    ar == 1
        && o[0] == 0
        && u16::from_be_bytes([o[1], o[2]]) == TYPE_OPT
        && o[5] == 0
        && o[6] == 0
        && u16::from_be_bytes([o[7], o[8]]) == 0
        && u16::from_be_bytes([o[9], o[10]]) == 0
}

/// Writes the answer to `query` (parsed as `q`) into `out` from the pre-rendered
/// response `tmpl`, returning its length: the client's ID, RD and CD bits, the
/// question bytes exactly as sent (RFC 4343: case preserved), and for EDNS the
/// client's DO bit in the response OPT. `None` when `out` is too
/// small or the template does not match the query's shape (never for templates that
/// passed [`template_ok`] for this question length).
pub fn patch(tmpl: &[u8], query: &[u8], q: &Query, out: &mut [u8]) -> Option<usize> {
    let n = tmpl.len();
    let dst = out.get_mut(..n)?;
    let question = query.get(HEADER..q.question_end)?;
    let qid = query.get(..HEADER)?;
    dst.copy_from_slice(tmpl);
    dst.get_mut(HEADER..q.question_end)?
        .copy_from_slice(question);
    dst[0] = qid[0];
    dst[1] = qid[1];
    dst[2] = (dst[2] & !RD) | (qid[2] & RD);
    dst[3] = (dst[3] & !CD) | (qid[3] & CD);
    if let Some(opt) = q.opt {
        // The payload field stays the template's: our own size (RFC 6891 §6.2.3).
        let o = dst.get_mut(n.checked_sub(OPT_LEN)?..)?;
        let flags = if opt.dnssec_ok { DO_BIT } else { 0 };
        o[7..9].copy_from_slice(&flags.to_be_bytes());
    }
    Some(n)
}

/// The largest response this query may get over UDP.
pub fn size_limit(q: &Query) -> usize {
    match q.opt {
        Some(o) => usize::from(o.limit()),
        None => MAX_PLAIN_PAYLOAD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` (dotted, no trailing dot) with optional OPT.
    pub(crate) fn query(
        id: u16,
        flags: [u8; 2],
        name: &str,
        qtype: u16,
        opt: Option<(u16, u16)>,
    ) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&flags);
        p.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
        for l in name.split('.').filter(|l| !l.is_empty()) {
            p.push(l.len() as u8);
            p.extend_from_slice(l.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        if let Some((payload, flags)) = opt {
            p.extend_from_slice(&[0, 0, 41]);
            p.extend_from_slice(&payload.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&flags.to_be_bytes());
            p.extend_from_slice(&[0, 0]);
        }
        p
    }

    #[test]
    fn parses_and_lowercases_the_name_into_the_key() {
        let p = query(7, [1, 0], "SmTp.Example.TEST", 1, None);
        let mut key = [0u8; KEY_MAX];
        let q = parse_query(&p, &mut key).unwrap();
        assert_eq!(
            &key[..q.key_len],
            b"\x04smtp\x07example\x04test\x00\x00\x01"
        );
        assert_eq!(q.qtype, 1);
        assert_eq!(q.question_end, p.len());
        assert_eq!(q.opt, None);
    }

    #[test]
    fn edns_payload_and_do() {
        let mut key = [0u8; KEY_MAX];
        let p = query(7, [0, 0], "a.test", 28, Some((4096, 0x8000)));
        let q = parse_query(&p, &mut key).unwrap();
        assert_eq!(
            q.opt,
            Some(Opt {
                payload: 4096,
                dnssec_ok: true
            })
        );
        assert_eq!(size_limit(&q), 1232);
        let p = query(7, [0, 0], "a.test", 28, Some((100, 0)));
        let q = parse_query(&p, &mut key).unwrap();
        assert_eq!(size_limit(&q), 512, "payload below 512 reads as 512");
        let p = query(7, [0, 0], "a.test", 28, None);
        assert_eq!(size_limit(&parse_query(&p, &mut key).unwrap()), 512);
    }

    #[test]
    fn hands_over_everything_unusual() {
        let mut key = [0u8; KEY_MAX];
        let ok = query(7, [1, 0x20], "a.test", 1, Some((1232, 0)));
        assert!(parse_query(&ok, &mut key).is_some(), "AD set is fine");
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut m = ok.clone();
        m[2] |= 0x80;
        cases.push(("QR=1", m));
        let mut m = ok.clone();
        m[2] |= 2 << 3;
        cases.push(("opcode STATUS", m));
        let mut m = ok.clone();
        m[3] |= 0x40;
        cases.push(("Z bit", m));
        let mut m = ok.clone();
        m[5] = 2;
        cases.push(("QDCOUNT 2", m));
        let mut m = ok.clone();
        m[5] = 0;
        cases.push(("QDCOUNT 0", m));
        let mut m = ok.clone();
        m[7] = 1;
        cases.push(("ANCOUNT 1", m));
        let mut m = ok.clone();
        m[11] = 2;
        cases.push(("ARCOUNT 2", m));
        let n = ok.len();
        let mut m = ok.clone();
        m[n - 5] = 1;
        cases.push(("EDNS version 1", m));
        let mut m = ok.clone();
        m[n - 4] = 0x40;
        cases.push(("unknown EDNS flag", m));
        let mut m = ok.clone();
        m[n - 1] = 4;
        m.extend_from_slice(&[0, 10, 0, 0]);
        cases.push(("a malformed (empty) cookie", m));
        let mut m = ok.clone();
        m[n - 1] = 12;
        m.extend_from_slice(&[0, 8, 0, 8, 0, 1, 24, 0, 10, 0, 0, 0]);
        cases.push(("an ECS option", m));
        let mut m = ok.clone();
        m[n - 1] = 24;
        m.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        m.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        cases.push(("two cookies", m));
        let mut m = ok.clone();
        m[n - 1] = 12;
        m.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3]);
        cases.push(("a cookie cut short", m));
        let mut m = ok.clone();
        m.push(0);
        cases.push(("trailing byte", m));
        cases.push(("class CH", {
            let mut m = query(7, [0, 0], "a.test", 16, None);
            let l = m.len();
            m[l - 1] = 3;
            m
        }));
        cases.push(("pointer in name", {
            let mut m = query(7, [0, 0], "a.test", 1, None);
            m[12] = 0xc0;
            m
        }));
        cases.push(("cut short", ok[..ok.len() - 12].to_vec()));
        cases.push(("header only", ok[..12].to_vec()));
        for (what, m) in cases {
            assert_eq!(parse_query(&m, &mut key), None, "{what}");
        }
        // A 256-byte name is too long.
        let long = ["abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0"; 4].join(".");
        assert!(parse_query(&query(1, [0, 0], &long, 1, None), &mut key).is_none());
    }

    #[test]
    fn patch_copies_id_rd_cd_question_and_opt_fields() {
        // A fake template: response header (QR, AA), lower-case question, one A record,
        // OPT with payload 1232.
        let mut tmpl = query(0, [0x84, 0x00], "a.test", 1, Some((1232, 0)));
        tmpl[7] = 1; // ANCOUNT
        let opt = tmpl.split_off(tmpl.len() - OPT_LEN);
        tmpl.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 20, 0, 4, 127, 0, 0, 1]);
        tmpl.extend_from_slice(&opt);
        let qlen = 1 + 1 + 1 + 4 + 1 + 4;
        assert!(template_ok(&tmpl, qlen, true));
        assert!(!template_ok(&tmpl, qlen, false));
        let query_bytes = query(0xbeef, [0x01, 0x10], "A.TeSt", 1, Some((4096, 0x8000)));
        let mut key = [0u8; KEY_MAX];
        let q = parse_query(&query_bytes, &mut key).unwrap();
        let mut out = [0u8; 600];
        let n = patch(&tmpl, &query_bytes, &q, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!(&r[..2], &[0xbe, 0xef]);
        assert_eq!(r[2], 0x85, "QR AA kept, RD copied");
        assert_eq!(r[3], 0x10, "CD copied");
        assert_eq!(&r[12..q.question_end], &query_bytes[12..q.question_end]);
        let o = &r[n - OPT_LEN..];
        assert_eq!(
            u16::from_be_bytes([o[3], o[4]]),
            1232,
            "our own payload size"
        );
        assert_eq!(o[7], 0x80, "DO copied");
        // Without RD/CD/DO and a small payload.
        let query_bytes = query(1, [0, 0], "a.test", 1, Some((600, 0)));
        let q = parse_query(&query_bytes, &mut key).unwrap();
        let n = patch(&tmpl, &query_bytes, &q, &mut out).unwrap();
        assert_eq!(out[2], 0x84);
        assert_eq!(out[3], 0);
        assert_eq!(
            u16::from_be_bytes([out[n - 8], out[n - 7]]),
            1232,
            "the client's 600 is not echoed (RFC 6891 §6.2.3)"
        );
        assert_eq!(out[n - 4], 0);
        // Too small an output buffer is refused, not a panic.
        assert!(patch(&tmpl, &query_bytes, &q, &mut out[..10]).is_none());
    }

    /// A query carrying `option` bytes in its OPT rdata.
    fn with_option(option: &[u8]) -> Vec<u8> {
        let mut p = query(0x0102, [0x01, 0x00], "a.test", 1, Some((1232, 0)));
        let n = p.len();
        p[n - 2..].copy_from_slice(&(option.len() as u16).to_be_bytes());
        p.extend_from_slice(option);
        p
    }

    #[test]
    fn dns_cookies_stay_on_the_fast_path_and_are_not_echoed() {
        let mut key = [0u8; KEY_MAX];
        let client_only = [0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut with_server = vec![0, 10, 0, 24];
        with_server.extend_from_slice(&[9u8; 24]);
        for option in [&client_only[..], &with_server[..]] {
            let bytes = with_option(option);
            let q = parse_query(&bytes, &mut key).expect("cookie query accepted");
            assert_eq!(q.opt.map(|o| o.payload), Some(1232));
            // The response comes from an option-less OPT template: no cookie echoed.
            let mut tmpl = query(0, [0x84, 0x00], "a.test", 1, Some((1232, 0)));
            tmpl[7] = 0;
            let mut out = [0u8; 600];
            let n = patch(&tmpl, &bytes, &q, &mut out).expect("patched");
            assert_eq!(n, tmpl.len(), "no option bytes copied into the answer");
            assert_eq!(&out[n - 2..n], &[0, 0], "response OPT has no rdata");
        }
        // Server cookie longer than 32 bytes (total 41) is malformed: FORMERR is hickory's.
        let mut too_long = vec![0, 10, 0, 41];
        too_long.extend_from_slice(&[1u8; 41]);
        assert!(parse_query(&with_option(&too_long), &mut key).is_none());
    }

    /// Cheap deterministic generator (no test-only dependency needed).
    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn random_and_mutated_packets_never_panic() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut key = [0u8; KEY_MAX];
        let seeds = [
            query(1, [1, 0], "smtp.gslb.example.test", 1, None),
            query(
                2,
                [1, 0],
                "smtp.gslb.example.test",
                28,
                Some((1232, 0x8000)),
            ),
        ];
        let mut out = [0u8; 2048];
        for i in 0..200_000 {
            let mut p = if i % 2 == 0 {
                let len = (xorshift(&mut s) % 80) as usize;
                (0..len)
                    .map(|_| xorshift(&mut s) as u8)
                    .collect::<Vec<u8>>()
            } else {
                seeds[i % seeds.len()].clone()
            };
            for _ in 0..(xorshift(&mut s) % 4) {
                if p.is_empty() {
                    break;
                }
                let at = (xorshift(&mut s) as usize) % p.len();
                match xorshift(&mut s) % 3 {
                    0 => p[at] = xorshift(&mut s) as u8,
                    1 => p.truncate(at),
                    _ => p.insert(at, xorshift(&mut s) as u8),
                }
            }
            if let Some(q) = parse_query(&p, &mut key) {
                assert!(q.question_end <= p.len() && q.key_len <= KEY_MAX);
                let tmpl = seeds[1].clone();
                let _ = patch(&tmpl, &p, &q, &mut out);
            }
        }
    }
}
