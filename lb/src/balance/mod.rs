//! Backend selection algorithms, free of I/O and of the pool's runtime state so they
//! can be tested exhaustively: smooth weighted round robin (nginx's algorithm),
//! least connections relative to weight (ties broken round robin), and weighted
//! rendezvous hashing of the client address for `source_hash`.
//!
//! Every function takes the *candidate set*: backends already known to be in rotation
//! and not yet tried for this connection. Each candidate carries its index in the pool
//! (the identity returned), its weight, its active connection count and a stable key
//! derived from its name (so hashing does not depend on pool order).

mod least_conn;
mod smooth_wrr;
mod source_hash;

pub(crate) use least_conn::least_conn;
pub(crate) use smooth_wrr::SmoothWrr;
pub(crate) use source_hash::source_hash;

/// One backend eligible for this pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Index of the backend in its pool; what the pick returns.
    pub index: usize,
    /// Current weight (≥ 1; a 0 is treated as 1).
    pub weight: u32,
    /// Active connections right now (least_conn).
    pub active: u64,
    /// Stable identity for hashing: [`backend_key`] of the backend's name.
    pub key: u64,
}

/// splitmix64's finaliser: a fast, well-distributed 64-bit mix.
pub(crate) fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// FNV-1a over bytes, then mixed: stable across runs and platforms (unlike std's
/// `DefaultHasher`, which is only stable within a process).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// The hashing key of a backend, from its name (so renumbering a pool moves no one).
pub(crate) fn backend_key(name: &str) -> u64 {
    stable_hash(name.as_bytes())
}

/// The hashing key of a client: its IP address only (the port changes per connection).
pub(crate) fn client_key(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => stable_hash(&v4.octets()),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => stable_hash(&v4.octets()),
            None => stable_hash(&v6.octets()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    /// Candidates `b0`, `b1`, … with these weights and no active connections.
    pub(super) fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Candidate {
                index: i,
                weight: *w,
                active: 0,
                key: backend_key(&format!("b{i}")),
            })
            .collect()
    }

    #[test]
    fn ipv4_mapped_clients_hash_like_ipv4() {
        let v4: IpAddr = "192.0.2.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(client_key(v4), client_key(mapped));
    }
}
