//! The functions' CloudWatch metrics, written as Embedded Metric Format (EMF) lines on stdout:
//! CloudWatch Logs turns each such JSON line into metric data points, so no PutMetricData call
//! (no latency, no IAM grant, no failure path) sits in an invocation.
//!
//! A [`Metrics`] recorder is built once per container and borrowed by what decides outcomes (the
//! sync engine, the batch, connect and test); each invocation ends with [`Metrics::flush`], which
//! writes what that invocation recorded and clears it. Lambda runs one invocation at a time per
//! container, so a container-wide recorder drained at the end of every invocation is a
//! per-invocation one.
//!
//! Why not the `metrics_cloudwatch_embedded` crate (measured: the README's "Metrics, dashboard,
//! alarms and logs" has the figures; its cost is small): it records through the `metrics`
//! facade's one process-wide recorder, so the engines that tests run side by side in one process
//! would share one set of counters; its label values are run-time strings; it writes one
//! dimension set per line. Here label values are `&'static str`: only values written in the code
//! can become a dimension, so a tenant id (read at run time) cannot, by construction. The format
//! is small enough to own: one JSON object per dimension set.
//!
//! Names are [`Metric`]'s, one list ([`Metric::ALL`]) that the template's alarms and dashboard are
//! checked against.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "TeleAgent/Bitrix24";
/// The dimension every metric carries: which function wrote it (its crate name, not the deployed
/// function's generated name, so dashboards and alarms can name it).
pub const FUNCTION_DIMENSION: &str = "Function";
/// EMF allows at most 100 values per metric in one line.
const MAX_VALUES_PER_LINE: usize = 100;

/// The functions that write metrics, as their `Function` dimension.
pub mod function {
    pub const LEAD_SYNC: &str = "lead-sync";
    pub const CONNECT: &str = "bitrix-connect";
    pub const TEST: &str = "bitrix-test";
    /// Every value the `Function` dimension takes.
    pub const ALL: &[&str] = &[LEAD_SYNC, CONNECT, TEST];
}

/// The unit CloudWatch stores a metric with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

macro_rules! metrics {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, $unit:ident, $label:expr;)*) => {
        /// Every metric the functions write: name, unit and the one extra dimension it may carry.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Metric {
            $($(#[$doc])* $variant,)*
        }

        impl Metric {
            /// Every metric, in one list (written by the macro from the variants themselves).
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)*];

            /// The CloudWatch metric name.
            pub fn name(self) -> &'static str {
                match self { $(Metric::$variant => $name,)* }
            }

            pub fn unit(self) -> Unit {
                match self { $(Metric::$variant => Unit::$unit,)* }
            }

            /// The extra dimension's name (`Outcome`, `Class`), if the metric has one.
            pub fn label(self) -> Option<&'static str> {
                match self { $(Metric::$variant => $label,)* }
            }
        }
    };
}

metrics! {
    /// Lead events taken from the queue (valid or not; replay requests are not events).
    EventsReceived = "EventsReceived", Count, None;
    /// New leads (also one created by an earlier attempt that crashed before linking it).
    LeadsCreated = "LeadsCreated", Count, None;
    /// Existing leads changed, or adopted from the portal and linked.
    LeadsUpdated = "LeadsUpdated", Count, None;
    /// Events that only added notes (a timeline comment or a COMMENTS line).
    NotesAdded = "NotesAdded", Count, None;
    /// Events that changed nothing (the lead already shows it).
    EventsUnchanged = "EventsUnchanged", Count, None;
    /// Events delivered again after they were done (acknowledged, nothing sent).
    EventsDuplicate = "EventsDuplicate", Count, None;
    /// Events kept in `PARKED#` until the portal works again.
    EventsParked = "EventsParked", Count, None;
    /// Events sent to the back of their group after waiting through their receives.
    EventsRequeued = "EventsRequeued", Count, None;
    /// Events put on the dead-letter queue (invalid, or data Bitrix24 refused).
    EventsDeadLettered = "EventsDeadLettered", Count, None;
    /// Events retried later (rate limits, a failing portal, the operator's side).
    EventsRetried = "EventsRetried", Count, None;
    /// Events of tenants never connected (or disconnected): acknowledged, not kept.
    EventsSkippedNotConnected = "EventsSkippedNotConnected", Count, None;
    /// Bitrix24 `tools/call` requests by how they ended (`ok`, `rate_limited`, `transient`,
    /// `auth`, `data`).
    BitrixCalls = "BitrixCalls", Count, Some("Outcome");
    /// Waits for a rate limit: each sleep for the portal's shared request budget, and each
    /// retry delay of an event held back by a rate limit.
    RateLimitWaitMs = "RateLimitWaitMs", Milliseconds, None;
    /// From the event's `occurred_at` to its lead written in Bitrix24.
    LeadLatencyMs = "LeadLatencyMs", Milliseconds, None;
    /// connect and test answers by class (`ok`, or what failed).
    ConnectResults = "ConnectResults", Count, Some("Class");
    /// Integrations turned to `error`, by whose side failed (`tenant`: the token or the
    /// portal's tools; `operator`: what our side stores or configures).
    IntegrationsErrored = "IntegrationsErrored", Count, Some("Class");
}

/// What one metric holds until the flush.
#[derive(Debug, Clone, PartialEq)]
enum Data {
    Count(u64),
    Values(Vec<f64>),
}

type Key = (Metric, Option<&'static str>);
/// The extra dimension of one EMF line: its name and value (none for the plain metrics).
type Dim = Option<(&'static str, &'static str)>;

/// The recorder. Cheap to clone (shared behind an `Arc`); [`Metrics::off`] records nothing
/// (tests that run functions in process and do not read metrics).
#[derive(Clone, Default)]
pub struct Metrics {
    data: Option<Arc<Mutex<BTreeMap<Key, Data>>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("on", &self.data.is_some())
            .finish()
    }
}

impl Metrics {
    /// A recorder that keeps what it is given until [`Metrics::flush`].
    pub fn new() -> Self {
        Self {
            data: Some(Arc::default()),
        }
    }

    /// A recorder that drops everything.
    pub fn off() -> Self {
        Self { data: None }
    }

    fn with(&self, f: impl FnOnce(&mut BTreeMap<Key, Data>)) {
        if let Some(data) = &self.data {
            f(&mut data.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Adds `n` to a metric without an extra dimension.
    pub fn count(&self, metric: Metric, n: u64) {
        self.add((metric, None), n);
    }

    /// Adds `n` to a metric under its extra dimension's `value` (a word from the code).
    pub fn count_as(&self, metric: Metric, value: &'static str, n: u64) {
        self.add((metric, metric.label().map(|_| value)), n);
    }

    fn add(&self, key: Key, n: u64) {
        self.with(|d| match d.entry(key).or_insert(Data::Count(0)) {
            Data::Count(c) => *c += n,
            Data::Values(_) => {}
        });
    }

    /// Records one duration sample (milliseconds) of a `Milliseconds` metric.
    pub fn observe(&self, metric: Metric, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        self.with(|data| {
            if let Data::Values(v) = data
                .entry((metric, None))
                .or_insert_with(|| Data::Values(Vec::new()))
            {
                v.push((ms * 1000.0).round() / 1000.0);
            }
        });
    }

    /// Writes what was recorded since the last flush to stdout, one EMF line per dimension set,
    /// and clears it. A write error is logged, never raised: metrics never fail an invocation.
    pub fn flush(&self, function: &'static str) {
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let mut buf = Vec::new();
        self.flush_to(function, i64::try_from(now_ms).unwrap_or(0), &mut buf);
        if buf.is_empty() {
            return;
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "metric lines not written");
        }
    }

    /// The same into `out` with the given timestamp (epoch milliseconds).
    pub fn flush_to(&self, function: &'static str, timestamp_ms: i64, out: &mut Vec<u8>) {
        let mut taken = BTreeMap::new();
        self.with(|d| taken = std::mem::take(d));
        // One document per extra-dimension value (none for the plain metrics).
        let mut docs: BTreeMap<Dim, Vec<(Metric, Data)>> = BTreeMap::new();
        for ((metric, value), data) in taken {
            let dim = metric.label().zip(value);
            docs.entry(dim).or_default().push((metric, data));
        }
        for (dim, metrics) in docs {
            for line in emf_lines(function, dim, &metrics, timestamp_ms) {
                out.extend_from_slice(line.to_string().as_bytes());
                out.push(b'\n');
            }
        }
    }
}

/// The EMF objects for one dimension set: one, or more when a metric has over 100 samples.
fn emf_lines(
    function: &str,
    dim: Option<(&str, &str)>,
    metrics: &[(Metric, Data)],
    timestamp_ms: i64,
) -> Vec<Value> {
    let chunks = metrics
        .iter()
        .map(|(_, d)| match d {
            Data::Values(v) => v.len().div_ceil(MAX_VALUES_PER_LINE),
            Data::Count(_) => 1,
        })
        .max()
        .unwrap_or(0);
    let mut dimensions = vec![json!([FUNCTION_DIMENSION])];
    if let Some((name, _)) = dim {
        dimensions.push(json!([FUNCTION_DIMENSION, name]));
    }
    (0..chunks)
        .filter_map(|i| {
            let mut doc = Map::new();
            let mut defs = Vec::new();
            for (metric, data) in metrics {
                let value = match data {
                    Data::Count(c) if i == 0 => json!(c),
                    Data::Values(v) => {
                        let part: Vec<f64> = v
                            .iter()
                            .skip(i * MAX_VALUES_PER_LINE)
                            .take(MAX_VALUES_PER_LINE)
                            .copied()
                            .collect();
                        if part.is_empty() {
                            continue;
                        }
                        json!(part)
                    }
                    Data::Count(_) => continue,
                };
                defs.push(json!({"Name": metric.name(), "Unit": metric.unit().as_str()}));
                doc.insert(metric.name().to_owned(), value);
            }
            if defs.is_empty() {
                return None;
            }
            doc.insert(FUNCTION_DIMENSION.to_owned(), json!(function));
            if let Some((name, value)) = dim {
                doc.insert(name.to_owned(), json!(value));
            }
            doc.insert(
                "_aws".to_owned(),
                json!({
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": NAMESPACE,
                        "Dimensions": dimensions,
                        "Metrics": defs,
                    }],
                }),
            );
            Some(Value::Object(doc))
        })
        .collect()
}

/// Totals read back from EMF lines mixed with other log lines: per metric (`BitrixCalls`) and
/// per metric and extra-dimension value (`BitrixCalls.ok`), counts summed and samples counted.
/// For local runs and tests, which read what the functions wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Sum of a count metric, or the number of samples of a `Milliseconds` one.
    pub sums: BTreeMap<String, f64>,
    /// The largest sample of each `Milliseconds` metric.
    pub max: BTreeMap<String, f64>,
}

impl Totals {
    /// Adds every EMF line in `text` that is in [`NAMESPACE`] and, if `function` is given, of
    /// that function. Other lines are ignored.
    pub fn add_lines(&mut self, text: &str, function: Option<&str>) {
        for line in text.lines() {
            let Some(start) = line.find('{') else {
                continue;
            };
            let Ok(doc) = serde_json::from_str::<Value>(&line[start..]) else {
                continue;
            };
            self.add_doc(&doc, function);
        }
    }

    fn add_doc(&mut self, doc: &Value, function: Option<&str>) {
        let Some(defs) = doc.pointer("/_aws/CloudWatchMetrics/0") else {
            return;
        };
        if defs["Namespace"] != NAMESPACE || function.is_some_and(|f| doc[FUNCTION_DIMENSION] != f)
        {
            return;
        }
        for def in defs["Metrics"].as_array().into_iter().flatten() {
            let Some(name) = def["Name"].as_str() else {
                continue;
            };
            let label = Metric::ALL
                .iter()
                .find(|m| m.name() == name)
                .and_then(|m| m.label())
                .and_then(|l| doc[l].as_str());
            let (sum, max) = match &doc[name] {
                Value::Array(v) => {
                    let v: Vec<f64> = v.iter().filter_map(Value::as_f64).collect();
                    (v.len() as f64, v.iter().copied().reduce(f64::max))
                }
                other => (other.as_f64().unwrap_or(0.0), None),
            };
            let mut keys = vec![name.to_owned()];
            if let Some(l) = label {
                keys.push(format!("{name}.{l}"));
            }
            for key in keys {
                *self.sums.entry(key.clone()).or_default() += sum;
                if let Some(m) = max {
                    let e = self.max.entry(key).or_insert(m);
                    *e = e.max(m);
                }
            }
        }
    }

    /// A metric's total (0 when it was never written).
    pub fn get(&self, key: &str) -> f64 {
        self.sums.get(key).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(m: &Metrics) -> Vec<Value> {
        let mut out = Vec::new();
        m.flush_to(function::LEAD_SYNC, 1_700_000_000_000, &mut out);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn one_line_per_dimension_set_with_the_emf_envelope() {
        let m = Metrics::new();
        m.count(Metric::EventsReceived, 8);
        m.count(Metric::LeadsCreated, 3);
        m.count(Metric::LeadsCreated, 1);
        m.count_as(Metric::BitrixCalls, "ok", 5);
        m.count_as(Metric::BitrixCalls, "rate_limited", 1);
        m.observe(Metric::LeadLatencyMs, Duration::from_millis(1500));
        let docs = lines(&m);
        assert_eq!(
            docs.len(),
            3,
            "plain, Outcome=ok, Outcome=rate_limited: {docs:?}"
        );
        let plain = &docs[0];
        assert_eq!(plain["EventsReceived"], 8);
        assert_eq!(plain["LeadsCreated"], 4);
        assert_eq!(plain["LeadLatencyMs"], json!([1500.0]));
        assert_eq!(plain["Function"], "lead-sync");
        let aws = &plain["_aws"];
        assert_eq!(aws["Timestamp"], 1_700_000_000_000_i64);
        assert_eq!(aws["CloudWatchMetrics"][0]["Namespace"], NAMESPACE);
        assert_eq!(
            aws["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"]])
        );
        let defs = &aws["CloudWatchMetrics"][0]["Metrics"];
        assert!(
            defs.as_array()
                .unwrap()
                .contains(&json!({"Name": "LeadLatencyMs", "Unit": "Milliseconds"}))
        );
        let ok = &docs[1];
        assert_eq!(ok["BitrixCalls"], 5);
        assert_eq!(ok["Outcome"], "ok");
        assert_eq!(
            ok["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"], ["Function", "Outcome"]]),
            "also under Function alone, for totals"
        );
        assert_eq!(docs[2]["Outcome"], "rate_limited");
    }

    #[test]
    fn a_flush_drains_so_each_invocation_writes_its_own_figures() {
        let m = Metrics::new();
        m.count(Metric::EventsParked, 2);
        assert_eq!(lines(&m).len(), 1);
        assert!(lines(&m).is_empty(), "nothing recorded since: no line");
        m.count(Metric::EventsParked, 1);
        assert_eq!(lines(&m)[0]["EventsParked"], 1);
    }

    #[test]
    fn more_than_100_samples_are_split_over_lines() {
        let m = Metrics::new();
        for i in 0..250 {
            m.observe(Metric::LeadLatencyMs, Duration::from_millis(i));
        }
        m.count(Metric::EventsReceived, 250);
        let docs = lines(&m);
        let sizes: Vec<usize> = docs
            .iter()
            .map(|d| d["LeadLatencyMs"].as_array().map_or(0, Vec::len))
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        let counted: Vec<&Value> = docs.iter().map(|d| &d["EventsReceived"]).collect();
        assert_eq!(
            counted,
            vec![&json!(250), &Value::Null, &Value::Null],
            "counted once"
        );
    }

    #[test]
    fn off_records_nothing_and_a_label_needs_a_labelled_metric() {
        let off = Metrics::off();
        off.count(Metric::EventsReceived, 1);
        assert!(lines(&off).is_empty());
        let m = Metrics::new();
        m.count_as(Metric::EventsReceived, "ignored", 1);
        let docs = lines(&m);
        assert_eq!(docs.len(), 1);
        assert!(docs[0].get("Outcome").is_none() && docs[0].get("ignored").is_none());
    }

    #[test]
    fn totals_read_back_what_was_written_among_other_log_lines() {
        let m = Metrics::new();
        m.count(Metric::EventsReceived, 8);
        m.count_as(Metric::BitrixCalls, "ok", 5);
        m.count_as(Metric::BitrixCalls, "data", 1);
        m.observe(Metric::LeadLatencyMs, Duration::from_millis(20));
        m.observe(Metric::LeadLatencyMs, Duration::from_millis(90));
        let mut out = b"{\"level\":\"INFO\",\"fields\":{\"message\":\"event synced\"}}\n".to_vec();
        m.flush_to(function::LEAD_SYNC, 0, &mut out);
        let text = String::from_utf8(out).unwrap();
        let mut t = Totals::default();
        t.add_lines(&text, Some(function::LEAD_SYNC));
        assert_eq!(t.get("EventsReceived"), 8.0);
        assert_eq!(t.get("BitrixCalls"), 6.0);
        assert_eq!(t.get("BitrixCalls.ok"), 5.0);
        assert_eq!(t.get("LeadLatencyMs"), 2.0, "samples counted");
        assert_eq!(t.max.get("LeadLatencyMs"), Some(&90.0));
        let mut other = Totals::default();
        other.add_lines(&text, Some(function::CONNECT));
        assert_eq!(other, Totals::default(), "another function's lines only");
    }

    #[test]
    fn names_are_unique_and_labels_are_the_two_dimensions() {
        let mut names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
        for m in Metric::ALL {
            assert!(
                matches!(m.label(), None | Some("Outcome") | Some("Class")),
                "{m:?}"
            );
        }
    }
}
