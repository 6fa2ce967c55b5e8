//! The validated configuration model.
//!
//! Everything here has already been checked: addresses parsed, durations resolved,
//! names unique, cross-references resolved. Roles (`lb`, `gss`) consume only these
//! types, never the raw TOML structs, so a config that reaches them is known-good.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// A whole Portico configuration file: which roles run and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the file was read from, so reloads re-read the same file.
    pub path: PathBuf,
    /// Admin socket; absent means no socket (tests and `check` only).
    pub admin: Option<AdminConfig>,
    /// Status and metrics HTTP listener.
    pub http: Option<HttpConfig>,
    /// How long shutdown waits for established connections before exiting.
    pub drain_timeout: Duration,
    /// Where admin intent (drain, maint, weights, site overrides) is kept across
    /// restarts, resolved against the config file's directory; `None`: intent lasts
    /// as long as the process.
    pub state_dir: Option<PathBuf>,
    /// Load-balanced VIPs (the lb role); empty means the lb role does not run.
    pub vips: Vec<VipConfig>,
    /// The DNS global site selector role, when configured.
    pub gss: Option<GssConfig>,
    /// Route announcements of the lb's VIPs to the operator's routers.
    pub bgp: Option<BgpConfig>,
    /// Membership and authenticated state exchange with the other Portico nodes.
    pub cluster: Option<ClusterConfig>,
}

/// `[bgp]`: this replica's BGP speaker (announce-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    /// Our AS (4-octet capable).
    pub local_as: u32,
    /// BGP identifier; also told apart from the routers' by them.
    pub router_id: std::net::Ipv4Addr,
    /// How long SIGTERM waits after withdrawing every prefix before listeners close,
    /// so routers move new flows to the other replicas first.
    pub withdraw_grace: Duration,
    /// The routers, in config order.
    pub neighbors: Vec<NeighborConfig>,
}

/// One router this replica peers with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NeighborConfig {
    /// The router's address.
    pub address: IpAddr,
    /// The router's AS; an OPEN with another is refused.
    pub remote_as: u32,
    /// The router's BGP port (179).
    pub port: u16,
    /// Source address of the session: routers match neighbors by it.
    pub local_address: Option<IpAddr>,
    /// Hold time we offer (0, or at least 3 s); keepalives every third of the
    /// negotiated one.
    pub hold_time: Duration,
    /// TCP MD5 signature key (RFC 2385).
    pub password: Option<String>,
    /// Next hop of every route sent to this router, unless the VIP sets its own;
    /// default: the session's local address.
    pub next_hop: Option<IpAddr>,
}

/// A VIP's `announce`: the prefixes announced while it is up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AnnounceConfig {
    /// Host or covering prefixes of the VIP.
    pub prefixes: Vec<IpNet>,
    /// RFC 1997 communities, each `ASN:VALUE` packed as ASN << 16 | VALUE.
    pub communities: Vec<u32>,
    /// How many extra times our AS is put in front of the path (anycast backup sites).
    pub as_path_prepend: u8,
    /// MULTI_EXIT_DISC, when set.
    pub med: Option<u32>,
    /// Next hop override for this VIP's routes.
    pub next_hop: Option<IpAddr>,
}

/// `[cluster]`: who this node is, who its peers are, and how they talk.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// Shared by every member; a datagram of another cluster is dropped.
    pub id: String,
    /// This node's member id (one of `members`).
    pub node: String,
    /// UDP address the gossip socket binds (default: this node's member address).
    pub listen: SocketAddr,
    /// File holding the shared secret every datagram is authenticated with.
    pub secret_file: PathBuf,
    /// How often this node starts an exchange with a peer.
    pub gossip_interval: Duration,
    /// A member heard from longer ago than this no longer counts (its views do not vote).
    pub stale_after: Duration,
    /// Every member, this node included, in config order.
    pub members: Vec<MemberConfig>,
}

impl ClusterConfig {
    /// Members whose site views vote (gss nodes and witnesses).
    pub fn vantage_points(&self) -> impl Iterator<Item = &MemberConfig> {
        self.members.iter().filter(|m| m.vantage)
    }

    /// This node's pod, when its member entry names one.
    pub fn pod(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == self.node)
            .and_then(|m| m.pod.as_deref())
    }

    /// The replicas of this node's pod, this node included, in config order (none
    /// when this node names no pod).
    pub fn replicas(&self) -> impl Iterator<Item = &MemberConfig> {
        let pod = self.pod();
        self.members
            .iter()
            .filter(move |m| pod.is_some() && m.pod.as_deref() == pod)
    }
}

/// One `[[cluster.member]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberConfig {
    /// Member id, unique in the cluster.
    pub id: String,
    /// Where its gossip socket is reached (its seed address and advertised address).
    pub address: SocketAddr,
    /// Whether its site views vote in the gss quorum (default true).
    pub vantage: bool,
    /// The lb pod it is a replica of: members of one pod share backend intent
    /// (drain, maint, ready, weight) and report their progress to each other.
    pub pod: Option<String>,
}

/// What a `[gss]` process does with its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GssRole {
    /// Probes, votes and answers DNS.
    #[default]
    Server,
    /// Probes and publishes its views to the cluster; answers no DNS.
    Witness,
}

/// The admin socket's location.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Unix socket path, created mode 0600 and removed on exit.
    pub socket: PathBuf,
}

/// The status/metrics listener.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Serves `GET /status` and `GET /metrics`.
    pub listen: SocketAddr,
}

/// How a VIP treats the bytes it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VipMode {
    /// L4: bytes are spliced between client and backend.
    Tcp,
    /// L7 plain HTTP reverse proxy.
    Http,
    /// L7 reverse proxy terminating TLS.
    Https,
}

impl VipMode {
    /// The spelling used in config, `show vips` and status.
    pub fn as_str(self) -> &'static str {
        match self {
            VipMode::Tcp => "tcp",
            VipMode::Http => "http",
            VipMode::Https => "https",
        }
    }
}

/// Backend selection algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm).
    RoundRobin,
    /// Fewest active connections relative to weight.
    LeastConn,
    /// Consistent hash of the client address: a client keeps its node.
    SourceHash,
}

/// PROXY protocol version sent to backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// Human-readable `PROXY TCP4 ...` line.
    V1,
    /// Binary header; also what probes send (as `LOCAL`).
    V2,
}

/// The application protocol a TCP VIP carries, so it can refuse politely in kind
/// when no backend is in rotation instead of resetting the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MailProtocol {
    /// `421 4.3.2 Service not available` so senders queue and retry.
    Smtp,
    /// `* BYE ...`.
    Imap,
    /// `-ERR ...`.
    Pop3,
    /// Opaque TCP: the connection is closed.
    None,
}

/// One virtual service: a listener and its pool.
#[derive(Debug, Clone, PartialEq)]
pub struct VipConfig {
    /// Unique VIP name, used in admin identifiers `VIP/BACKEND`.
    pub name: String,
    /// Address the VIP accepts clients on.
    pub listen: SocketAddr,
    /// L4 or L7.
    pub mode: VipMode,
    /// Selection algorithm.
    pub balance: Balance,
    /// PROXY header sent to backends on proxied connections.
    pub proxy_protocol: Option<ProxyVersion>,
    /// Clients are another balancer that opens each connection with a PROXY header;
    /// its source address is the client (connections without one are closed).
    pub accept_proxy: bool,
    /// Protocol spoken when refusing; defaults from the probe kind.
    pub protocol: MailProtocol,
    /// The pool, in config order.
    pub backends: Vec<BackendConfig>,
    /// Active health check applied to every backend.
    pub probe: ProbeConfig,
    /// Further backends tried after a failed connect.
    pub retries: u32,
    /// Bound on connecting to a backend.
    pub connect_timeout: Duration,
    /// Bound on a server-speaks-first backend's first greeting line (SMTP, IMAP, POP3
    /// in the clear): one that stays silent this long (a stopped process whose kernel
    /// still accepts) is a failed connect, retried elsewhere, not a hung client.
    pub greeting_timeout: Duration,
    /// A proxied connection with no traffic either way for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent client connections the VIP accepts; beyond it new ones are refused.
    pub max_connections: Option<u32>,
    /// Concurrent connections from one client address.
    pub max_connections_per_source: Option<u32>,
    /// The VIP reports `up` while at least this many backends are up and in rotation.
    pub min_healthy: usize,
    /// Passive ejection policy shared by L4 (connect failures) and L7 (5xx).
    pub ejection: EjectionConfig,
    /// Certificates for `mode = "https"`.
    pub tls: Option<TlsConfig>,
    /// L7 options (ignored for `mode = "tcp"`).
    pub http: HttpVipConfig,
    /// One `portico::access` log line per request (L7) or per connection (L4), for
    /// answering "what happened to this user's request" after the fact.
    pub access_log: bool,
    /// Route announcement of this VIP (needs `[bgp]`).
    pub announce: Option<AnnounceConfig>,
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendConfig {
    /// Unique within its VIP.
    pub name: String,
    /// Where connections and probes go.
    pub address: SocketAddr,
    /// Relative share of new connections (≥ 1).
    pub weight: u32,
    /// Standby: takes traffic only while no primary is in rotation.
    pub backup: bool,
}

/// Passive ejection: consecutive failures take a backend out for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct EjectionConfig {
    /// Consecutive failed connects (L4) or 5xx/gateway failures (L7) that eject.
    pub consecutive_failures: u32,
    /// First ejection's length; doubles on each repeat.
    pub base_time: Duration,
    /// Cap on the doubled ejection time.
    pub max_time: Duration,
    /// Never eject more than this percentage of a pool.
    pub max_percent: u32,
    /// A backend healthy for this long has its doubling reset.
    pub reset_after: Duration,
}

/// TLS termination certificates; the first pair is the default when SNI matches none.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    /// Certificate/key pairs, chosen by SNI against each certificate's names.
    pub certs: Vec<CertPair>,
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq)]
pub struct CertPair {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// L7 proxy options.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpVipConfig {
    /// Slowloris guard: the whole request head must arrive within this.
    pub header_timeout: Duration,
    /// Largest accepted request head in bytes.
    pub max_header_size: usize,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_h2_streams: u32,
    /// Bound on waiting for a backend's response head once the request body has been
    /// sent (a slow upload is not the backend's fault); `None` waits (long-poll).
    pub backend_timeout: Option<Duration>,
    /// Longest pause inside a request body upload (nginx's `client_body_timeout`): a
    /// client that stalls mid-body would otherwise hold a backend connection forever.
    pub body_timeout: Duration,
    /// Cookie stickiness, when set.
    pub sticky_cookie: Option<String>,
    /// Speak TLS to backends.
    pub backend_tls: bool,
    /// CA bundle for backend TLS (system roots otherwise).
    pub backend_ca: Option<PathBuf>,
    /// SNI/verification name for backend TLS.
    pub backend_sni: Option<String>,
    /// Verify backend certificates.
    pub backend_tls_verify: bool,
    /// Add a `Via` header.
    pub via: bool,
    /// Tunnel `CONNECT` requests to a backend (an HTTP proxy or an RPC-over-HTTP
    /// gateway that expects them) instead of refusing them with 405.
    pub allow_connect: bool,
    /// What becomes of the `X-Forwarded-For`/`Forwarded` chain a request brings.
    pub forwarded_for: ForwardedFor,
    /// With [`ForwardedFor::Append`], the peers whose chain is kept; empty trusts
    /// every peer.
    pub trusted_proxies: Vec<IpNet>,
    /// Most header lines in a request head (431 beyond).
    pub max_headers: usize,
    /// Oldest TLS version offered to clients of an HTTPS VIP.
    pub tls_min_version: TlsVersion,
    /// TLS 1.2 cipher suites offered (rustls names, in preference order); `None`
    /// offers rustls' defaults.
    pub tls12_ciphers: Option<Vec<String>>,
    /// DER OCSP responses to staple, by the certificate file they belong to.
    pub ocsp: BTreeMap<PathBuf, PathBuf>,
}

/// `forwarded_for`: whether a request's forwarding chain is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedFor {
    /// Append the client to the chain (behind trusted proxies only, when
    /// `trusted_proxies` is set).
    Append,
    /// Drop the chain and start a new one with the client: for VIPs facing the
    /// Internet, where a client could otherwise forge its address for the backend.
    Replace,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// The default `max_headers`: hyper's own limit, which keeps its header parsing on
/// the stack.
pub const DEFAULT_MAX_HEADERS: usize = 100;

impl Default for HttpVipConfig {
    fn default() -> Self {
        HttpVipConfig {
            header_timeout: Duration::from_secs(10),
            max_header_size: 64 * 1024,
            max_h2_streams: 100,
            backend_timeout: None,
            body_timeout: Duration::from_secs(60),
            sticky_cookie: None,
            backend_tls: false,
            backend_ca: None,
            backend_sni: None,
            backend_tls_verify: true,
            via: false,
            allow_connect: false,
            forwarded_for: ForwardedFor::Append,
            trusted_proxies: Vec::new(),
            max_headers: DEFAULT_MAX_HEADERS,
            tls_min_version: TlsVersion::Tls12,
            tls12_ciphers: None,
            ocsp: BTreeMap::new(),
        }
    }
}

/// Which conversation a probe holds with its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Connect only.
    Tcp,
    /// Greeting, EHLO, QUIT (optionally STARTTLS / implicit TLS).
    Smtp,
    /// Greeting, CAPABILITY, LOGOUT.
    Imap,
    /// Greeting, QUIT.
    Pop3,
    /// GET with expected status.
    Http,
    /// MAPI-over-HTTP PING.
    Mapi,
    /// A Portico lb's `/status`: passes while the named VIPs are up.
    LbStatus,
}

impl ProbeKind {
    /// The spelling used in config and output.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Smtp => "smtp",
            ProbeKind::Imap => "imap",
            ProbeKind::Pop3 => "pop3",
            ProbeKind::Http => "http",
            ProbeKind::Mapi => "mapi",
            ProbeKind::LbStatus => "lb_status",
        }
    }
}

/// Probe cadence and hysteresis; shared by lb probes and gss keepalives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    /// Time between probes (jittered by ±10 %).
    pub interval: Duration,
    /// A probe not finished by then fails with `timeout after ...`.
    pub timeout: Duration,
    /// Consecutive successes to go up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
}

impl Default for ProbeTiming {
    fn default() -> Self {
        ProbeTiming {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// A fully resolved probe definition (the target address is supplied separately).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// Protocol of the conversation.
    pub kind: ProbeKind,
    /// Cadence and hysteresis.
    pub timing: ProbeTiming,
    /// Implicit TLS (SMTPS 465, IMAPS 993, POP3S 995, HTTPS).
    pub tls: bool,
    /// Upgrade with STARTTLS (SMTP, IMAP, POP3 `STLS`) and complete a handshake.
    pub starttls: bool,
    /// Verify the backend certificate; `false` only for labs.
    pub tls_verify: bool,
    /// CA bundle used instead of the system roots.
    pub ca: Option<PathBuf>,
    /// TLS server name; defaults to `host`, then the target IP.
    pub sni: Option<String>,
    /// HTTP/MAPI/lb_status path.
    pub path: String,
    /// HTTP `Host` header; defaults to the target address.
    pub host: Option<String>,
    /// Accepted HTTP statuses.
    pub expect_status: Vec<u16>,
    /// Substring the HTTP body must contain.
    pub expect_body: Option<String>,
    /// Send a PROXY v2 `LOCAL` header first (backends expecting PROXY reject probes without it).
    pub send_proxy: bool,
    /// Name sent in `EHLO`.
    pub helo: String,
    /// `lb_status`: VIPs that must be up; empty means all.
    pub vips: Vec<String>,
}

impl ProbeConfig {
    /// A probe of `kind` with every option at its default, for tests and fallbacks.
    pub fn new(kind: ProbeKind) -> Self {
        ProbeConfig {
            kind,
            timing: ProbeTiming::default(),
            tls: false,
            starttls: false,
            tls_verify: true,
            ca: None,
            sni: None,
            path: match kind {
                ProbeKind::Mapi => "/mapi/emsmdb/".to_string(),
                ProbeKind::LbStatus => "/status".to_string(),
                _ => "/".to_string(),
            },
            host: None,
            expect_status: vec![200],
            expect_body: None,
            send_proxy: false,
            helo: "portico.invalid".to_string(),
            vips: Vec::new(),
        }
    }
}

/// The gss role.
#[derive(Debug, Clone, PartialEq)]
pub struct GssConfig {
    /// UDP and TCP address (`0.0.0.0:0` for a witness, which opens no port).
    pub listen: SocketAddr,
    /// Apex of the delegated zone, lower case, without trailing dot.
    pub zone: String,
    /// TTL of site-selected answers.
    pub ttl: u32,
    /// Apex NS names (fully qualified, no trailing dot).
    pub nameservers: Vec<String>,
    /// SOA fields.
    pub soa: SoaConfig,
    /// Sites in config order.
    pub sites: Vec<SiteConfig>,
    /// Site-selected names.
    pub names: Vec<NameConfig>,
    /// Static records served as-is.
    pub records: Vec<StaticRecord>,
    /// Answer to CHAOS TXT `id.server` and `hostname.bind` (RFC 4892), which
    /// operators ask to tell which name server answered; `None` refuses them.
    pub server_id: Option<String>,
    /// Answer to CHAOS TXT `version.server` and `version.bind`; `None` refuses them.
    pub server_version: Option<String>,
    /// `[gss.dnssec]`: the zone is signed when present.
    pub dnssec: Option<DnssecConfig>,
    /// `server` (default) or `witness` (probes and publishes views only).
    pub role: GssRole,
    /// Vantage points that must agree to declare a site down or up; `None` is a
    /// majority of the cluster's vantage points. Without a `[cluster]` it is 1.
    pub quorum: Option<u32>,
}

/// How the gss signs its zone (`[gss.dnssec]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DnssecConfig {
    /// Keys in config order.
    pub keys: Vec<DnssecKeyConfig>,
    /// Lifetime of a signature from the moment it is made.
    pub validity: Duration,
    /// Signatures are re-made when the earliest expiry is this close.
    pub refresh: Duration,
    /// How far inception is backdated (clock skew of validators).
    pub inception: Duration,
    /// Up to this much is taken off each RRset's expiry at random, so expiries spread.
    pub jitter: Duration,
}

impl DnssecConfig {
    /// Defaults: 14 days of validity, re-signed with 7 days left, inception one hour
    /// back, expiry spread over one day.
    pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(14 * 86400);
    /// See [`DnssecConfig::DEFAULT_VALIDITY`].
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(7 * 86400);
    /// See [`DnssecConfig::DEFAULT_VALIDITY`].
    pub const DEFAULT_INCEPTION: Duration = Duration::from_secs(3600);
    /// See [`DnssecConfig::DEFAULT_VALIDITY`].
    pub const DEFAULT_JITTER: Duration = Duration::from_secs(86400);
}

/// One key of `[gss.dnssec]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DnssecKeyConfig {
    /// The key's files: `Kzone.+alg+tag` (or either file's full name).
    pub file: PathBuf,
    /// What it signs.
    pub role: KeyRole,
    /// Where it is in its life.
    pub state: KeyState,
}

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRole {
    /// Combined signing key: the DNSKEY set and the zone.
    Csk,
    /// Key-signing key: the DNSKEY set (the parent's DS points at it).
    Ksk,
    /// Zone-signing key: every other RRset.
    Zsk,
}

impl KeyRole {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyRole::Csk => "csk",
            KeyRole::Ksk => "ksk",
            KeyRole::Zsk => "zsk",
        }
    }

    /// Whether it signs the DNSKEY, CDS and CDNSKEY sets.
    pub fn signs_keys(self) -> bool {
        matches!(self, KeyRole::Csk | KeyRole::Ksk)
    }

    /// Whether it signs the zone's other RRsets.
    pub fn signs_zone(self) -> bool {
        matches!(self, KeyRole::Csk | KeyRole::Zsk)
    }
}

/// A key's state in a rollover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// In the DNSKEY set (and, for a KSK/CSK, in CDS/CDNSKEY), signing nothing yet.
    Published,
    /// In the DNSKEY set and signing.
    Active,
    /// Still in the DNSKEY set so cached signatures stay valid, signing nothing.
    Retired,
}

impl KeyState {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Published => "published",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        }
    }
}

/// SOA fields. The served serial is the gss's own (it counts answer changes); the
/// config only gives its floor.
#[derive(Debug, Clone, PartialEq)]
pub struct SoaConfig {
    /// The serial base: the first serial a gss with no saved serial serves, and a
    /// floor the served serial jumps to when it is newer (RFC 1982) than it.
    pub serial: u32,
    /// Primary master name (default: first nameserver).
    pub mname: String,
    /// Responsible mailbox in domain form (default `hostmaster.ZONE`).
    pub rname: String,
    /// SOA refresh.
    pub refresh: u32,
    /// SOA retry.
    pub retry: u32,
    /// SOA expire.
    pub expire: u32,
    /// Negative-caching TTL; kept small so failover is not cached negatively.
    pub minimum: u32,
    /// TTL of the SOA and NS records.
    pub ttl: u32,
}

impl SoaConfig {
    /// The SOA a `[gss]` without a `soa` table gets: `mname` as given (the validator
    /// passes the first nameserver), `hostmaster.ZONE`, and the documented timers.
    pub fn defaults(zone: &str, mname: String) -> SoaConfig {
        SoaConfig {
            serial: 1,
            mname,
            rname: format!("hostmaster.{zone}"),
            refresh: 3600,
            retry: 600,
            expire: 86400,
            minimum: 30,
            ttl: 3600,
        }
    }
}

/// How many keepalives must pass for a site to be up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinUp {
    /// An absolute count.
    Count(u32),
    /// A percentage of the site's keepalives (rounded up).
    Percent(u32),
}

/// One data center and the checks that establish its health.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// Unique site name.
    pub name: String,
    /// Aggregation threshold.
    pub min_up: MinUp,
    /// At least one.
    pub keepalives: Vec<KeepaliveConfig>,
}

/// One keepalive: a probe aimed at a site's VIP or lb.
#[derive(Debug, Clone, PartialEq)]
pub struct KeepaliveConfig {
    /// Display name, e.g. `smtp 127.0.0.1:2525` or the lb_status URL.
    pub name: String,
    /// Where the probe connects (for `lb_status`, the URL's host:port).
    pub address: SocketAddr,
    /// The probe with the site's `probe_defaults` merged in.
    pub probe: ProbeConfig,
}

/// Site-selection policy of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// First healthy site in order.
    Failover,
    /// Answers split across healthy sites by weight.
    Weighted,
}

/// When clients return to a recovered preferred site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failback {
    /// After the site has been continuously up for this long.
    Auto(Duration),
    /// Only after an operator runs `site auto SITE`.
    Manual,
}

/// Behaviour when every site of a name is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllDown {
    /// Fail open: answer with the first site's addresses.
    First,
    /// Answer SERVFAIL.
    Servfail,
}

/// Source-address rule: clients in `networks` get `sites` as their order.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientRule {
    /// Client (or ECS) networks the rule matches.
    pub networks: Vec<IpNet>,
    /// Site order for those clients.
    pub sites: Vec<String>,
}

/// A site-selected name.
#[derive(Debug, Clone, PartialEq)]
pub struct NameConfig {
    /// Owner name, lower case, fully qualified without trailing dot.
    pub fqdn: String,
    /// Selection policy.
    pub policy: Policy,
    /// Default site order.
    pub sites: Vec<String>,
    /// Weights for `weighted` (site → weight, default 1).
    pub weights: BTreeMap<String, u32>,
    /// Addresses per site.
    pub answers: BTreeMap<String, Vec<IpAddr>>,
    /// Failback behaviour.
    pub failback: Failback,
    /// All-down behaviour.
    pub all_down: AllDown,
    /// Per-client site orders, first match wins.
    pub clients: Vec<ClientRule>,
    /// TTL override for this name.
    pub ttl: u32,
}

/// A static record, validated for syntax of name, TTL and type; rdata is
/// presentation format parsed by the gss.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticRecord {
    /// Owner, lower case, fully qualified without trailing dot.
    pub fqdn: String,
    /// Record TTL.
    pub ttl: u32,
    /// Record type mnemonic, upper case (`A`, `MX`, `TXT`, ...).
    pub rtype: String,
    /// Presentation-format rdata.
    pub rdata: String,
}
