//! A metrics recorder for tests that counts every counter by series, so a test can
//! assert that traffic moved the right counter with the right labels without running
//! the Prometheus exporter. Gauges and histograms are ignored.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One counter series: its name, labels and value.
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: Arc<AtomicU64>,
}

/// Counters by series id `name{k=v,k=v}` (labels in registration order).
#[derive(Default)]
pub struct CountingRecorder(Mutex<HashMap<String, Series>>);

impl CountingRecorder {
    /// The process-wide recorder, installed on first call. Handles registered before
    /// that (by code that ran earlier in the same test binary) are no-ops, so each test
    /// filters by its own labels.
    pub fn global() -> &'static CountingRecorder {
        static REC: std::sync::OnceLock<&'static CountingRecorder> = std::sync::OnceLock::new();
        REC.get_or_init(|| {
            let rec: &'static CountingRecorder = Box::leak(Box::default());
            // Only fails when another recorder is already installed, which tests that
            // use this one never do; their counts would then read zero and fail loudly.
            let _ = metrics::set_global_recorder(rec);
            rec
        })
    }

    /// Every series and its value, by id `name{k=v,k=v}`.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        let map = crate::sync::lock(&self.0);
        map.iter()
            .map(|(id, s)| (id.clone(), s.value.load(Ordering::SeqCst)))
            .collect()
    }

    /// The sum over the series named `name` that carry every pair in `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let map = crate::sync::lock(&self.0);
        map.values()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value.load(Ordering::SeqCst))
            .sum()
    }
}

impl metrics::Recorder for CountingRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<(String, String)> = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let id = format!("{}{{{}}}", key.name(), pairs.join(","));
        let mut map = crate::sync::lock(&self.0);
        let series = map.entry(id).or_insert_with(|| Series {
            name: key.name().to_string(),
            labels,
            value: Arc::new(AtomicU64::new(0)),
        });
        metrics::Counter::from_arc(series.value.clone())
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}
