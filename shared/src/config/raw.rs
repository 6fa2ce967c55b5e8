//! The config file as written: serde structs mirroring the TOML one to one.
//!
//! Every table rejects unknown keys (`deny_unknown_fields`) so a typo is an error
//! rather than a silently ignored setting, and every value that validation may
//! complain about is wrapped in [`Spanned`] so the complaint can name its line and
//! column. Values that accept more than one shape (durations, `expect_status`,
//! `min_up`) are kept as [`toml::Value`] and interpreted by `validate`, which gives
//! better messages than serde's "data did not match any variant".
//! Nothing here applies defaults or checks meaning; that is `validate`'s job.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A value with its byte range in the file.
pub(crate) type S<T> = Spanned<T>;
/// An optional value with its byte range in the file.
pub(crate) type O<T> = Option<Spanned<T>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub admin: Option<S<RawAdmin>>,
    pub http: Option<S<RawHttp>>,
    pub drain_timeout: O<toml::Value>,
    pub state_dir: O<String>,
    #[serde(default)]
    pub vip: Vec<S<RawVip>>,
    pub gss: Option<S<RawGss>>,
    pub bgp: Option<S<RawBgp>>,
    pub cluster: Option<S<RawCluster>>,
}

/// `[bgp]`: the lb's route announcements.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBgp {
    pub local_as: S<i64>,
    pub router_id: S<String>,
    pub withdraw_grace: O<toml::Value>,
    #[serde(default)]
    pub neighbor: Vec<S<RawNeighbor>>,
}

/// One `[[bgp.neighbor]]`: a router this replica peers with.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNeighbor {
    pub address: S<String>,
    pub remote_as: S<i64>,
    pub port: O<i64>,
    pub local_address: O<String>,
    pub hold_time: O<toml::Value>,
    pub password: O<String>,
    pub next_hop: O<String>,
}

/// A VIP's `announce = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAnnounce {
    pub prefixes: S<Vec<S<String>>>,
    pub communities: O<Vec<S<String>>>,
    pub as_path_prepend: O<i64>,
    pub med: O<i64>,
    pub next_hop: O<String>,
}

/// `[cluster]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub id: S<String>,
    pub node: S<String>,
    pub listen: O<String>,
    pub secret_file: S<String>,
    pub gossip_interval: O<toml::Value>,
    pub stale_after: O<toml::Value>,
    #[serde(default)]
    pub member: Vec<S<RawMember>>,
}

/// `[[cluster.member]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMember {
    pub id: S<String>,
    pub address: S<String>,
    pub vantage: O<bool>,
    pub pod: O<String>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub socket: S<String>,
}

/// `[http]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub listen: S<String>,
}

/// `[[vip]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVip {
    pub name: S<String>,
    pub listen: S<String>,
    pub mode: O<String>,
    pub balance: O<String>,
    pub proxy_protocol: O<String>,
    pub protocol: O<String>,
    pub backends: O<Vec<S<RawBackend>>>,
    pub probe: O<RawProbe>,
    pub retries: O<u32>,
    pub connect_timeout: O<toml::Value>,
    pub greeting_timeout: O<toml::Value>,
    pub idle_timeout: O<toml::Value>,
    pub max_connections: O<u32>,
    pub max_connections_per_source: O<u32>,
    pub min_healthy: O<u32>,
    pub ejection: O<RawEjection>,
    pub tls: O<RawTls>,
    pub access_log: O<bool>,
    pub accept_proxy: O<bool>,
    // L7 keys, flat on the VIP.
    pub header_timeout: O<toml::Value>,
    pub max_header_size: O<u32>,
    pub max_h2_streams: O<u32>,
    pub backend_timeout: O<toml::Value>,
    pub body_timeout: O<toml::Value>,
    pub sticky: O<RawSticky>,
    pub backend_tls: O<bool>,
    pub backend_ca: O<String>,
    pub backend_sni: O<String>,
    pub backend_tls_verify: O<bool>,
    pub via: O<bool>,
    pub allow_connect: O<bool>,
    pub forwarded_for: O<String>,
    pub trusted_proxies: O<Vec<S<String>>>,
    pub max_headers: O<u32>,
    pub tls_min_version: O<String>,
    pub tls12_ciphers: O<Vec<S<String>>>,
    pub ocsp: O<BTreeMap<S<String>, S<String>>>,
    pub announce: O<RawAnnounce>,
}

/// One entry of a VIP's `backends`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub name: S<String>,
    pub address: S<String>,
    pub weight: O<i64>,
    pub backup: O<bool>,
}

/// A probe table: a VIP's `probe`, or a gss keepalive (which adds `address`,
/// `url` and `vips`; validation rejects those on VIP probes).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbe {
    pub kind: O<String>,
    pub interval: O<toml::Value>,
    pub timeout: O<toml::Value>,
    pub rise: O<i64>,
    pub fall: O<i64>,
    pub tls: O<bool>,
    pub starttls: O<bool>,
    pub tls_verify: O<bool>,
    pub ca: O<String>,
    pub sni: O<String>,
    pub path: O<String>,
    pub host: O<String>,
    pub expect_status: O<toml::Value>,
    pub expect_body: O<String>,
    pub send_proxy: O<bool>,
    pub helo: O<String>,
    // Keepalive-only keys.
    pub address: O<String>,
    pub url: O<String>,
    pub vips: O<Vec<S<String>>>,
}

/// A VIP's `ejection` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEjection {
    pub consecutive_failures: O<i64>,
    pub base_time: O<toml::Value>,
    pub max_time: O<toml::Value>,
    pub max_percent: O<i64>,
    pub reset_after: O<toml::Value>,
}

/// A VIP's `tls`: either one `cert`/`key` pair or a `certs` list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub cert: O<String>,
    pub key: O<String>,
    pub certs: O<Vec<S<RawCertPair>>>,
}

/// One entry of `tls.certs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertPair {
    pub cert: S<String>,
    pub key: S<String>,
}

/// A VIP's `sticky` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    pub cookie: S<String>,
}

/// `[gss]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGss {
    pub listen: O<String>,
    pub zone: S<String>,
    pub ttl: O<i64>,
    pub nameservers: O<Vec<S<String>>>,
    pub soa: O<RawSoa>,
    #[serde(default)]
    pub site: Vec<S<RawSite>>,
    #[serde(default)]
    pub name: Vec<S<RawName>>,
    pub records: O<Vec<S<String>>>,
    pub server_id: O<String>,
    pub server_version: O<String>,
    pub dnssec: O<RawDnssec>,
    pub role: O<String>,
    pub quorum: O<i64>,
}

/// `[gss.dnssec]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnssec {
    pub keys: O<Vec<S<RawDnssecKey>>>,
    pub validity: O<toml::Value>,
    pub refresh: O<toml::Value>,
    pub inception: O<toml::Value>,
    pub jitter: O<toml::Value>,
}

/// One entry of `[gss.dnssec] keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDnssecKey {
    pub file: S<String>,
    pub role: O<String>,
    pub state: O<String>,
}

/// `[gss.soa]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSoa {
    pub serial: O<i64>,
    pub mname: O<String>,
    pub rname: O<String>,
    pub refresh: O<i64>,
    pub retry: O<i64>,
    pub expire: O<i64>,
    pub minimum: O<i64>,
    pub ttl: O<i64>,
}

/// `[[gss.site]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSite {
    pub name: S<String>,
    pub min_up: O<toml::Value>,
    pub keepalives: O<Vec<S<RawProbe>>>,
    pub probe_defaults: O<RawProbeDefaults>,
}

/// A site's `probe_defaults`: timing shared by its keepalives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProbeDefaults {
    pub interval: O<toml::Value>,
    pub timeout: O<toml::Value>,
    pub rise: O<i64>,
    pub fall: O<i64>,
}

/// A name's `answers`: site → addresses, each with its span.
pub(crate) type RawAnswers = BTreeMap<S<String>, S<Vec<S<String>>>>;

/// `[[gss.name]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawName {
    pub name: S<String>,
    pub policy: O<String>,
    pub sites: O<Vec<S<String>>>,
    pub weights: O<BTreeMap<S<String>, S<i64>>>,
    pub answers: O<RawAnswers>,
    pub failback: O<String>,
    pub failback_after: O<toml::Value>,
    pub all_down: O<String>,
    pub clients: O<Vec<S<RawClientRule>>>,
    pub ttl: O<i64>,
}

/// One entry of a name's `clients`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientRule {
    pub networks: S<Vec<S<String>>>,
    pub sites: S<Vec<S<String>>>,
}
