//! EDNS details hickory's parser does not check or build: the RFC 7871 §6 validity
//! of Client Subnet options (read from the raw message, since hickory keeps neither
//! the address length nor the bits past the prefix), and extended DNS errors
//! (RFC 8914) for REFUSED and SERVFAIL.

use hickory_proto::rr::rdata::opt::EdnsOption;

const TYPE_OPT: u16 = 41;
const OPTION_ECS: u16 = 8;
/// EDNS option code of an extended DNS error (RFC 8914 §2).
pub const OPTION_EDE: u16 = 15;

/// RFC 8914 §4 info-codes we send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ede {
    /// 0, Other (with a text saying why).
    Other,
    /// 18, Prohibited: zone transfers.
    Prohibited,
    /// 20, Not Authoritative: names outside the zone, unconfigured CHAOS names.
    NotAuthoritative,
    /// 21, Not Supported: classes other than IN and CH.
    NotSupported,
}

impl Ede {
    fn code(self) -> u16 {
        match self {
            Ede::Other => 0,
            Ede::Prohibited => 18,
            Ede::NotAuthoritative => 20,
            Ede::NotSupported => 21,
        }
    }
}

/// The EDE option with `text` as EXTRA-TEXT.
pub fn ede(code: Ede, text: &str) -> EdnsOption {
    let mut data = code.code().to_be_bytes().to_vec();
    data.extend_from_slice(text.as_bytes());
    EdnsOption::Unknown(OPTION_EDE, data)
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    let b = p.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Offset just past the (possibly compressed) name at `at`.
fn skip_name(p: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *p.get(at)?;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => at += 1 + usize::from(len),
            0xc0 => {
                p.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

/// The rdata of the first OPT record of `msg`, if the message is walkable.
fn opt_rdata(msg: &[u8]) -> Option<&[u8]> {
    let qd = u16_at(msg, 4)?;
    let rrs = u32::from(u16_at(msg, 6)?) + u32::from(u16_at(msg, 8)?) + u32::from(u16_at(msg, 10)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    for _ in 0..rrs {
        at = skip_name(msg, at)?;
        let rtype = u16_at(msg, at)?;
        let rdlen = usize::from(u16_at(msg, at + 8)?);
        let start = at + 10;
        let rdata = msg.get(start..start + rdlen)?;
        if rtype == TYPE_OPT {
            return Some(rdata);
        }
        at = start + rdlen;
    }
    None
}

/// Whether one ECS option body breaks RFC 7871 §6: unknown family, a source prefix
/// longer than the family's address, an ADDRESS longer or shorter than the prefix
/// needs, or non-zero bits past the prefix. (A non-zero SCOPE in a query is ignored,
/// as §7.1.1 allows.)
pub fn ecs_malformed(body: &[u8]) -> bool {
    let [f0, f1, source, _scope, addr @ ..] = body else {
        return true;
    };
    let max = match u16::from_be_bytes([*f0, *f1]) {
        1 => 32,
        2 => 128,
        _ => return true,
    };
    let source = usize::from(*source);
    if source > max || addr.len() != source.div_ceil(8) {
        return true;
    }
    let spare = addr.len() * 8 - source;
    spare > 0 && addr.last().is_some_and(|b| b & ((1u8 << spare) - 1) != 0)
}

/// Whether the message carries an ECS option that is malformed (FORMERR, RFC 7871
/// §6). A message that cannot be walked is hickory's parser's business.
pub fn has_malformed_ecs(msg: &[u8]) -> bool {
    let Some(mut rdata) = opt_rdata(msg) else {
        return false;
    };
    while let [c0, c1, l0, l1, rest @ ..] = rdata {
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        let Some(body) = rest.get(..len) else {
            return false;
        };
        if u16::from_be_bytes([*c0, *c1]) == OPTION_ECS && ecs_malformed(body) {
            return true;
        }
        rdata = &rest[len..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecs_validity_per_rfc7871_section_6() {
        assert!(!ecs_malformed(&[0, 1, 24, 0, 192, 0, 2]));
        assert!(!ecs_malformed(&[0, 1, 0, 0]));
        assert!(!ecs_malformed(&[0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0]));
        assert!(!ecs_malformed(&[0, 1, 20, 0, 192, 0, 0x20]));
        assert!(
            ecs_malformed(&[0, 1, 20, 0, 192, 0, 0x21]),
            "bit past the prefix"
        );
        assert!(
            ecs_malformed(&[0, 1, 24, 0, 192, 0, 2, 0]),
            "address too long"
        );
        assert!(ecs_malformed(&[0, 1, 24, 0, 192, 0]), "address too short");
        assert!(
            ecs_malformed(&[0, 1, 33, 0, 1, 2, 3, 4, 5]),
            "prefix over 32"
        );
        assert!(ecs_malformed(&[0, 3, 0, 0]), "unknown family");
        assert!(ecs_malformed(&[0, 1, 0]), "cut short");
    }
}
