//! Every gss metric in one place: its name, its description (registered once with
//! [`describe`]) and the handles the hot paths hold, so no name is spelled twice and
//! no keepalive result or fast-path answer looks its labels up again.

use std::collections::HashMap;
use std::sync::RwLock;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use metrics::{Counter, Gauge, Histogram};

/// DNS queries answered, by name label, QTYPE and RCODE.
pub const QUERIES: &str = "portico_dns_queries_total";
/// 1 while a site is up (health and override).
pub const SITE_UP: &str = "portico_gss_site_up";
/// Keepalive outcomes, by site, keepalive and result.
pub const KEEPALIVE_RESULTS: &str = "portico_gss_keepalive_results_total";
/// First failing keepalive to site down.
pub const FAILOVER_DETECTION: &str = "portico_gss_failover_detection_seconds";
/// The earliest expiry (unix seconds) among the signatures being served.
pub const SIGNATURES_EXPIRY: &str = "portico_dns_signatures_expiry_seconds";
/// A vantage point's vote on a site as this node counts it.
pub const SITE_VOTE: &str = "portico_gss_site_vote";
/// 1 while a site's state is held without a quorum.
pub const SITE_FAIL_STATIC: &str = "portico_gss_site_fail_static";

/// Registers the descriptions with the installed recorder; the gss calls it at every
/// start, so a recorder installed between two starts still gets them.
pub fn describe() {
    metrics::describe_counter!(QUERIES, "DNS queries answered");
    metrics::describe_gauge!(SITE_UP, "1 while the site is up (health and override)");
    metrics::describe_counter!(KEEPALIVE_RESULTS, "keepalive outcomes");
    metrics::describe_histogram!(
        FAILOVER_DETECTION,
        metrics::Unit::Seconds,
        "first failing keepalive to site down"
    );
    metrics::describe_gauge!(
        SIGNATURES_EXPIRY,
        metrics::Unit::Seconds,
        "earliest expiry (unix time) among the DNSSEC signatures served"
    );
    metrics::describe_gauge!(
        SITE_VOTE,
        "a vantage point's vote on a site as this node counts it: 1 up, 0 down, -1 stale or missing"
    );
    metrics::describe_gauge!(
        SITE_FAIL_STATIC,
        "1 while the site's state is held without a quorum (fail-static)"
    );
}

/// `portico_dns_signatures_expiry_seconds`.
pub fn signatures_expiry() -> Gauge {
    metrics::gauge!(SIGNATURES_EXPIRY)
}

/// The `qtype` label: the common types by name, the rest as `other` (bounded series).
pub fn qtype_label(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::AAAA => "AAAA",
        RecordType::SOA => "SOA",
        RecordType::NS => "NS",
        RecordType::ANY => "ANY",
        RecordType::MX => "MX",
        RecordType::TXT => "TXT",
        RecordType::SRV => "SRV",
        RecordType::CNAME => "CNAME",
        RecordType::PTR => "PTR",
        RecordType::CAA => "CAA",
        RecordType::HTTPS => "HTTPS",
        _ => "other",
    }
}

/// The `rcode` label.
pub fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::BADVERS => "BADVERS",
        _ => "other",
    }
}

/// The `portico_dns_queries_total` series of one answer; the fast path keeps it per
/// pre-rendered answer, the full path asks per query.
pub fn query_counter(name: &str, qtype: RecordType, rcode: ResponseCode) -> Counter {
    metrics::counter!(
        QUERIES,
        "name" => name.to_string(),
        "qtype" => qtype_label(qtype),
        "rcode" => rcode_label(rcode)
    )
}

/// The `portico_dns_queries_total` handles the full answer path has used, by name
/// label then (QTYPE, RCODE): a query whose series was seen before costs a read lock
/// and two hash lookups, no label allocation and no registry lookup. Kept per
/// rendered zone, so it is as fresh as the zone (and a test's local recorder sees
/// its own registrations).
#[derive(Debug, Default)]
pub struct QueryCounters(RwLock<HashMap<Box<str>, ByTypeAndCode>>);

/// One name's handles by (QTYPE, RCODE).
type ByTypeAndCode = HashMap<(u16, u16), Counter>;

impl QueryCounters {
    /// Counts one answered query.
    pub fn count(&self, name: &str, qtype: RecordType, rcode: ResponseCode) {
        let key = (u16::from(qtype), u16::from(rcode));
        {
            let map = shared::sync::read(&self.0);
            if let Some(c) = map.get(name).and_then(|m| m.get(&key)) {
                c.increment(1);
                return;
            }
        }
        let c = query_counter(name, qtype, rcode);
        c.increment(1);
        shared::sync::write(&self.0)
            .entry(name.into())
            .or_default()
            .insert(key, c);
    }
}

/// One keepalive's result counters, registered when its checker starts.
pub struct KeepaliveMetrics {
    ok: Counter,
    fail: Counter,
}

impl KeepaliveMetrics {
    /// The series of keepalive `keepalive` of `site`.
    pub fn new(site: &str, keepalive: &str) -> KeepaliveMetrics {
        let series = |result: &'static str| {
            metrics::counter!(
                KEEPALIVE_RESULTS,
                "site" => site.to_string(),
                "keepalive" => keepalive.to_string(),
                "result" => result
            )
        };
        KeepaliveMetrics {
            ok: series("ok"),
            fail: series("fail"),
        }
    }

    /// Counts one result.
    pub fn record(&self, ok: bool) {
        if ok { &self.ok } else { &self.fail }.increment(1);
    }
}

/// A site's gauge.
pub struct SiteMetrics {
    up: Gauge,
}

impl SiteMetrics {
    /// The series of site `site`.
    pub fn new(site: &str) -> SiteMetrics {
        SiteMetrics {
            up: metrics::gauge!(SITE_UP, "site" => site.to_string()),
        }
    }

    /// Sets the gauge.
    pub fn set_up(&self, up: bool) {
        self.up.set(if up { 1.0 } else { 0.0 });
    }
}

/// The failover detection histogram.
pub fn failover_detection() -> Histogram {
    metrics::histogram!(FAILOVER_DETECTION)
}

/// A vantage point's vote on a site as this node counts it: 1 up, 0 down, -1 stale
/// or missing (`voter` is the member id; this node's own vote included).
pub fn set_vote(site: &str, voter: &str, vote: i8) {
    metrics::gauge!(SITE_VOTE, "site" => site.to_string(), "voter" => voter.to_string())
        .set(f64::from(vote));
}

/// 1 while a site's state is held without a quorum (fail-static).
pub fn set_fail_static(site: &str, on: bool) {
    metrics::gauge!(SITE_FAIL_STATIC, "site" => site.to_string()).set(if on { 1.0 } else { 0.0 });
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::testing::metrics::CountingRecorder;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Records the names described to it and counts counter registrations.
    #[derive(Default)]
    struct Described(Mutex<Vec<String>>, AtomicUsize);

    impl Described {
        fn add(&self, k: metrics::KeyName) {
            shared::sync::lock(&self.0).push(k.as_str().to_string());
        }
    }

    impl metrics::Recorder for Described {
        fn describe_counter(
            &self,
            k: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
            self.add(k);
        }
        fn describe_gauge(
            &self,
            k: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
            self.add(k);
        }
        fn describe_histogram(
            &self,
            k: metrics::KeyName,
            _: Option<metrics::Unit>,
            _: metrics::SharedString,
        ) {
            self.add(k);
        }
        fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> Counter {
            self.1.fetch_add(1, Ordering::SeqCst);
            Counter::noop()
        }
        fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn the_full_path_registers_each_query_series_once() {
        let rec = Described::default();
        let counters = QueryCounters::default();
        metrics::with_local_recorder(&rec, || {
            for _ in 0..5 {
                counters.count("smtp.example", RecordType::A, ResponseCode::NoError);
            }
            counters.count("smtp.example", RecordType::MX, ResponseCode::NoError);
            counters.count("nxdomain", RecordType::A, ResponseCode::NXDomain);
        });
        assert_eq!(
            rec.1.load(Ordering::SeqCst),
            3,
            "one registration per series"
        );
        let counting = CountingRecorder::default();
        let counters = QueryCounters::default();
        metrics::with_local_recorder(&counting, || {
            for _ in 0..3 {
                counters.count("smtp.example", RecordType::A, ResponseCode::NoError);
            }
        });
        assert_eq!(
            counting.sum(QUERIES, &[("name", "smtp.example"), ("rcode", "NOERROR")]),
            3
        );
    }

    #[test]
    fn every_metric_is_described() {
        let rec = Described::default();
        metrics::with_local_recorder(&rec, describe);
        let mut got = rec.0.into_inner().unwrap_or_else(|p| p.into_inner());
        assert_eq!(rec.1.into_inner(), 0, "describing registers nothing");
        got.sort();
        let mut want = vec![
            QUERIES,
            SITE_UP,
            KEEPALIVE_RESULTS,
            FAILOVER_DETECTION,
            SIGNATURES_EXPIRY,
            SITE_VOTE,
            SITE_FAIL_STATIC,
        ];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn keepalive_results_count_under_their_labels() {
        let rec = CountingRecorder::default();
        metrics::with_local_recorder(&rec, || {
            let k = KeepaliveMetrics::new("dc1", "tcp 127.0.0.1:25");
            k.record(true);
            k.record(true);
            k.record(false);
        });
        assert_eq!(
            rec.sum(KEEPALIVE_RESULTS, &[("site", "dc1"), ("result", "ok")]),
            2
        );
        assert_eq!(
            rec.sum(
                KEEPALIVE_RESULTS,
                &[("keepalive", "tcp 127.0.0.1:25"), ("result", "fail")]
            ),
            1
        );
    }
}
