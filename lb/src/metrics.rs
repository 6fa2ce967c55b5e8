//! Metric names of the lb role, recorded through the `metrics` facade (the binary
//! installs the Prometheus recorder before starting the lb, so handles resolved at
//! backend creation are live).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `portico_lb_connections_active` | gauge | vip, backend | proxied connections open now |
//! | `portico_lb_connections_total` | counter | vip, backend | connections established to the backend |
//! | `portico_lb_bytes_total` | counter | vip, backend, direction (`to_backend`/`to_client`) | bytes forwarded |
//! | `portico_lb_connect_failures_total` | counter | vip, backend | failed connects (refused, timeout, PROXY header write) |
//! | `portico_lb_greeting_failures_total` | counter | vip, backend | connects that failed on the greeting (silent past `greeting_timeout`, a refusal, garbage); also in connect failures |
//! | `portico_lb_retries_total` | counter | vip | connects retried on another backend |
//! | `portico_lb_ejections_total` | counter | vip, backend | passive ejections |
//! | `portico_lb_backend_up` | gauge | vip, backend | 1 while active checks pass |
//! | `portico_lb_refused_total` | counter | vip, reason (`no_backend`/`max_connections`/`max_per_source`) | clients answered with the protocol's refusal |
//! | `portico_lb_vip_connections_active` | gauge | vip | client connections open now |
//! | `portico_lb_accepted_total` | counter | vip, worker | client connections accepted by each data-path worker's listener (`worker="0"` when the lb runs on one runtime), refused ones included |
//! | `portico_probe_duration_seconds` | histogram | vip, backend | probe conversation time |
//! | `portico_probe_results_total` | counter | vip, backend, result (`ok`/`fail`) | probe outcomes |
//! | `portico_bgp_session_up` | gauge | neighbor | 1 while the BGP session is Established |
//! | `portico_bgp_prefix_announced` | gauge | vip, prefix | 1 while the prefix is announced |
//! | `portico_bgp_updates_sent_total` | counter | neighbor | UPDATE messages sent |

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram};

/// `portico_lb_connections_active{vip,backend}`
pub const CONNECTIONS_ACTIVE: &str = "portico_lb_connections_active";
/// `portico_lb_connections_total{vip,backend}`
pub const CONNECTIONS_TOTAL: &str = "portico_lb_connections_total";
/// `portico_lb_bytes_total{vip,backend,direction}`
pub const BYTES_TOTAL: &str = "portico_lb_bytes_total";
/// `portico_lb_connect_failures_total{vip,backend}`
pub const CONNECT_FAILURES_TOTAL: &str = "portico_lb_connect_failures_total";
/// `portico_lb_greeting_failures_total{vip,backend}`
pub const GREETING_FAILURES_TOTAL: &str = "portico_lb_greeting_failures_total";
/// `portico_lb_retries_total{vip}`
pub const RETRIES_TOTAL: &str = "portico_lb_retries_total";
/// `portico_lb_ejections_total{vip,backend}`
pub const EJECTIONS_TOTAL: &str = "portico_lb_ejections_total";
/// `portico_lb_backend_up{vip,backend}`
pub const BACKEND_UP: &str = "portico_lb_backend_up";
/// `portico_lb_refused_total{vip,reason}`
pub const REFUSED_TOTAL: &str = "portico_lb_refused_total";
/// `portico_lb_vip_connections_active{vip}`
pub const VIP_CONNECTIONS_ACTIVE: &str = "portico_lb_vip_connections_active";
/// `portico_lb_accepted_total{vip,worker}`
pub const ACCEPTED_TOTAL: &str = "portico_lb_accepted_total";
/// `portico_probe_duration_seconds{vip,backend}`
pub const PROBE_DURATION: &str = "portico_probe_duration_seconds";
/// `portico_probe_results_total{vip,backend,result}`
pub const PROBE_RESULTS: &str = "portico_probe_results_total";
/// `portico_bgp_session_up{neighbor}`
pub const BGP_SESSION_UP: &str = "portico_bgp_session_up";
/// `portico_bgp_prefix_announced{vip,prefix}`
pub const BGP_PREFIX_ANNOUNCED: &str = "portico_bgp_prefix_announced";
/// `portico_bgp_updates_sent_total{neighbor}`
pub const BGP_UPDATES_SENT: &str = "portico_bgp_updates_sent_total";

/// Describes every metric (help text) for the exporter; call once after installing it.
pub fn describe() {
    metrics::describe_gauge!(CONNECTIONS_ACTIVE, "Proxied connections open now");
    metrics::describe_counter!(CONNECTIONS_TOTAL, "Connections established to the backend");
    metrics::describe_gauge!(BGP_SESSION_UP, "1 while the BGP session is Established");
    metrics::describe_gauge!(BGP_PREFIX_ANNOUNCED, "1 while the prefix is announced");
    metrics::describe_counter!(BGP_UPDATES_SENT, "BGP UPDATE messages sent");
    metrics::describe_counter!(BYTES_TOTAL, "Bytes forwarded");
    metrics::describe_counter!(CONNECT_FAILURES_TOTAL, "Failed connects to the backend");
    metrics::describe_counter!(
        GREETING_FAILURES_TOTAL,
        "Backend connects that failed on the greeting"
    );
    metrics::describe_counter!(RETRIES_TOTAL, "Connects retried on another backend");
    metrics::describe_counter!(EJECTIONS_TOTAL, "Passive ejections");
    metrics::describe_gauge!(BACKEND_UP, "1 while active checks pass");
    metrics::describe_counter!(
        REFUSED_TOTAL,
        "Clients answered with the protocol's refusal"
    );
    metrics::describe_gauge!(VIP_CONNECTIONS_ACTIVE, "Client connections open now");
    metrics::describe_counter!(
        ACCEPTED_TOTAL,
        "Client connections accepted, by data-path worker"
    );
    metrics::describe_histogram!(
        PROBE_DURATION,
        metrics::Unit::Seconds,
        "Probe conversation time"
    );
    metrics::describe_counter!(PROBE_RESULTS, "Probe outcomes");
}

/// One backend's metric handles, resolved once so the hot path does no label
/// lookups (the L7 ones lazily, so a series appears when it first counts).
pub(crate) struct BackendMetrics {
    pub active: Gauge,
    pub connections: Counter,
    pub bytes_to_backend: Counter,
    pub bytes_to_client: Counter,
    pub connect_failures: Counter,
    pub greeting_failures: Counter,
    pub ejections: Counter,
    pub up: Gauge,
    pub probe_duration: Histogram,
    pub probe_ok: Counter,
    pub probe_fail: Counter,
    pub http: HttpCounters,
}

impl BackendMetrics {
    pub(crate) fn new(vip: &str, backend: &str) -> Self {
        let (v, b) = (vip.to_string(), backend.to_string());
        BackendMetrics {
            active: metrics::gauge!(CONNECTIONS_ACTIVE, "vip" => v.clone(), "backend" => b.clone()),
            connections: metrics::counter!(CONNECTIONS_TOTAL, "vip" => v.clone(), "backend" => b.clone()),
            bytes_to_backend: metrics::counter!(BYTES_TOTAL, "vip" => v.clone(), "backend" => b.clone(), "direction" => "to_backend"),
            bytes_to_client: metrics::counter!(BYTES_TOTAL, "vip" => v.clone(), "backend" => b.clone(), "direction" => "to_client"),
            connect_failures: metrics::counter!(CONNECT_FAILURES_TOTAL, "vip" => v.clone(), "backend" => b.clone()),
            greeting_failures: metrics::counter!(GREETING_FAILURES_TOTAL, "vip" => v.clone(), "backend" => b.clone()),
            ejections: metrics::counter!(EJECTIONS_TOTAL, "vip" => v.clone(), "backend" => b.clone()),
            up: metrics::gauge!(BACKEND_UP, "vip" => v.clone(), "backend" => b.clone()),
            probe_duration: metrics::histogram!(PROBE_DURATION, "vip" => v.clone(), "backend" => b.clone()),
            probe_ok: metrics::counter!(PROBE_RESULTS, "vip" => v.clone(), "backend" => b.clone(), "result" => "ok"),
            probe_fail: metrics::counter!(PROBE_RESULTS, "vip" => v, "backend" => b, "result" => "fail"),
            http: HttpCounters::default(),
        }
    }
}

/// A counter handle resolved on first use and kept: the `metrics::counter!` macro
/// hashes and compares every label on each call, too much for a per-request path.
/// Resolving lazily keeps the exported series exactly as before (a series appears
/// when it first counts).
#[derive(Default)]
pub(crate) struct LazyCounter(OnceLock<metrics::Counter>);

impl LazyCounter {
    pub(crate) fn increment(&self, make: impl FnOnce() -> metrics::Counter) {
        self.0.get_or_init(make).increment(1);
    }
}

/// The L7 counters of one backend, by status class and by error kind (index orders
/// are the HTTP proxy's), resolved when first counted.
#[derive(Default)]
pub(crate) struct HttpCounters {
    pub responses: [LazyCounter; 5],
    pub errors: [LazyCounter; 4],
}

impl std::fmt::Debug for HttpCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCounters").finish_non_exhaustive()
    }
}
