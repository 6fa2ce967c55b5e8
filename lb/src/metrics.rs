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
//! | `portico_probe_duration_seconds` | histogram | vip, backend | probe conversation time |
//! | `portico_probe_results_total` | counter | vip, backend, result (`ok`/`fail`) | probe outcomes |

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
/// `portico_probe_duration_seconds{vip,backend}`
pub const PROBE_DURATION: &str = "portico_probe_duration_seconds";
/// `portico_probe_results_total{vip,backend,result}`
pub const PROBE_RESULTS: &str = "portico_probe_results_total";

/// Describes every metric (help text) for the exporter; call once after installing it.
pub fn describe() {
    metrics::describe_gauge!(CONNECTIONS_ACTIVE, "Proxied connections open now");
    metrics::describe_counter!(CONNECTIONS_TOTAL, "Connections established to the backend");
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
    metrics::describe_histogram!(
        PROBE_DURATION,
        metrics::Unit::Seconds,
        "Probe conversation time"
    );
    metrics::describe_counter!(PROBE_RESULTS, "Probe outcomes");
}
