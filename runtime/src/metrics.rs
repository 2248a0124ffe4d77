//! The worker's metrics in the OpenMetrics text format, for `GET /metrics` (Prometheus
//! scrapes it).
//!
//! Nothing is kept here between scrapes: [`render`] reads the live counters of the
//! connectors and of the log's partitions, hands them to a `prometheus-client` registry
//! through a [`Collector`], and lets the crate encode them. Every series is prefixed
//! `plexus_`; a connector has one task today, labelled `task="0"`.

use std::fmt::{self, Write as _};
use std::sync::atomic::Ordering::Relaxed;

use plexus_config::ConnectorKind;
use plexus_log::{HistogramSnapshot, Partition};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::{TaskState, Worker};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric of the worker, encoded at call time.
pub fn render(worker: &Worker) -> Result<String, fmt::Error> {
    Scrape::read(worker).encode()
}

/// The label of the one task each connector runs today.
const TASK: &str = "0";

/// The values of one scrape, read from the worker at once.
#[derive(Debug, Clone, Default)]
struct Scrape {
    worker_id: String,
    connectors: Vec<ConnectorSample>,
    sink_lags: Vec<SinkLag>,
    partitions: Vec<PartitionSample>,
}

#[derive(Debug, Clone)]
struct ConnectorSample {
    name: String,
    type_name: String,
    kind: ConnectorKind,
    state: TaskState,
    restarts: u32,
    records_in: u64,
    records_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    errors: u64,
    dead_lettered: u64,
    /// `None` when the source cannot tell (and for sinks).
    source_lag_bytes: Option<i64>,
    source_lag_ms: Option<i64>,
    /// Rows read by a snapshot and the rows it expects; `None` without a snapshot.
    snapshot_rows: Option<i64>,
    snapshot_rows_total: Option<i64>,
    batch: HistogramSnapshot,
}

/// How far one sink is behind one partition it reads.
#[derive(Debug, Clone)]
struct SinkLag {
    connector: String,
    topic: String,
    partition: String,
    records: i64,
}

#[derive(Debug, Clone)]
struct PartitionSample {
    topic: String,
    partition: String,
    bytes: u64,
    segments: usize,
    start_offset: i64,
    end_offset: i64,
    appended_records: u64,
    appended_bytes: u64,
    appended_batches: u64,
    fetched_records: u64,
    fetched_bytes: u64,
    fetches: u64,
    fsync: HistogramSnapshot,
}

impl Scrape {
    fn read(worker: &Worker) -> Scrape {
        let log = worker.log();
        let mut scrape = Scrape {
            worker_id: worker.id().to_owned(),
            ..Scrape::default()
        };
        for view in worker.connectors() {
            let metrics = &view.metrics;
            // Negative means the source does not know.
            let known = |v: i64| (v >= 0).then_some(v);
            if view.kind == ConnectorKind::Sink {
                for topic in view.topics.iter().filter_map(|name| log.topic(name)) {
                    for partition in topic.partitions() {
                        let records = crate::lag::partition_lag(log, &view.name, topic.name(), partition);
                        scrape.sink_lags.push(SinkLag {
                            connector: view.name.clone(),
                            topic: topic.name().to_owned(),
                            partition: partition.id().to_string(),
                            records: i64::try_from(records).unwrap_or(i64::MAX),
                        });
                    }
                }
            }
            scrape.connectors.push(ConnectorSample {
                type_name: view.type_name.clone(),
                kind: view.kind,
                state: view.state,
                restarts: view.restarts,
                records_in: metrics.records.load(Relaxed),
                records_out: metrics.records_out.load(Relaxed),
                bytes_in: metrics.bytes.load(Relaxed),
                bytes_out: metrics.bytes_out.load(Relaxed),
                errors: metrics.errors.load(Relaxed),
                dead_lettered: metrics.dead_lettered.load(Relaxed),
                source_lag_bytes: known(metrics.source_lag_bytes.load(Relaxed)),
                source_lag_ms: known(metrics.source_lag_ms.load(Relaxed)),
                snapshot_rows: known(metrics.snapshot_rows.load(Relaxed)),
                snapshot_rows_total: known(metrics.snapshot_rows_total.load(Relaxed)),
                batch: view.batch_latency.snapshot(),
                name: view.name,
            });
        }
        for name in log.topic_names() {
            let Some(topic) = log.topic(&name) else {
                continue; // deleted since listed
            };
            for partition in topic.partitions() {
                scrape.partitions.push(PartitionSample::read(&name, partition));
            }
        }
        scrape
    }

    fn encode(self) -> Result<String, fmt::Error> {
        let mut registry = Registry::with_prefix("plexus");
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

impl ConnectorSample {
    fn labels(&self) -> [(&'static str, Escaped<'_>); 1] {
        [("connector", Escaped(&self.name))]
    }

    fn task_labels(&self) -> [(&'static str, Escaped<'_>); 4] {
        [
            ("connector", Escaped(&self.name)),
            ("task", Escaped(TASK)),
            ("type", Escaped(&self.type_name)),
            ("kind", Escaped(kind_name(self.kind))),
        ]
    }
}

impl PartitionSample {
    fn labels(&self) -> [(&'static str, Escaped<'_>); 2] {
        [("topic", Escaped(&self.topic)), ("partition", Escaped(&self.partition))]
    }

    fn read(topic: &str, partition: &Partition) -> PartitionSample {
        let stats = partition.stats();
        PartitionSample {
            topic: topic.to_owned(),
            partition: partition.id().to_string(),
            bytes: partition.size_bytes(),
            segments: partition.segment_count(),
            start_offset: partition.start_offset(),
            end_offset: partition.end_offset(),
            appended_records: stats.appended_records.load(Relaxed),
            appended_bytes: stats.appended_bytes.load(Relaxed),
            appended_batches: stats.appended_batches.load(Relaxed),
            fetched_records: stats.fetched_records.load(Relaxed),
            fetched_bytes: stats.fetched_bytes.load(Relaxed),
            fetches: stats.fetches.load(Relaxed),
            fsync: stats.fsync.snapshot(),
        }
    }
}

/// The counters of a connector's task: name, help, value.
type ConnectorCounter = (&'static str, &'static str, fn(&ConnectorSample) -> u64);

const CONNECTOR_COUNTERS: [ConnectorCounter; 6] = [
    (
        "connector_records_in",
        "Records the task received: a source from its system, a sink from the log.",
        |c| c.records_in,
    ),
    (
        "connector_records_out",
        "Records the task delivered: a source appended to the log (replays not counted), a sink flushed to its destination.",
        |c| c.records_out,
    ),
    ("connector_bytes_in", "Bytes of the records the task received.", |c| {
        c.bytes_in
    }),
    ("connector_bytes_out", "Bytes of the records the task delivered.", |c| {
        c.bytes_out
    }),
    ("connector_errors", "Errors the task counted.", |c| c.errors),
    (
        "connector_dead_lettered",
        "Records the task sent to its dead-letter topic.",
        |c| c.dead_lettered,
    ),
];

/// The gauges of a partition: name, help, unit, value.
type PartitionGauge = (&'static str, &'static str, Option<Unit>, fn(&PartitionSample) -> i64);

const PARTITION_GAUGES: [PartitionGauge; 4] = [
    (
        "topic",
        "Bytes of the partition's segments on disk.",
        Some(Unit::Bytes),
        |p| saturating_i64(p.bytes),
    ),
    ("topic_segments", "Segment files of the partition.", None, |p| {
        saturating_i64(p.segments as u64)
    }),
    (
        "topic_start_offset",
        "The partition's first offset still in the log.",
        None,
        |p| p.start_offset,
    ),
    (
        "topic_end_offset",
        "One past the partition's last offset readers can see.",
        None,
        |p| p.end_offset,
    ),
];

/// The counters of a partition: name, help, value.
type PartitionCounter = (&'static str, &'static str, fn(&PartitionSample) -> u64);

const PARTITION_COUNTERS: [PartitionCounter; 6] = [
    (
        "topic_appended_records",
        "Records appended to the partition since the worker started.",
        |p| p.appended_records,
    ),
    (
        "topic_appended_bytes",
        "Bytes of the batches appended to the partition since the worker started.",
        |p| p.appended_bytes,
    ),
    (
        "topic_appended_batches",
        "Batches appended to the partition since the worker started.",
        |p| p.appended_batches,
    ),
    (
        "topic_fetched_records",
        "Records in the batches read from the partition since the worker started (whole batches).",
        |p| p.fetched_records,
    ),
    (
        "topic_fetched_bytes",
        "Bytes of the batches read from the partition since the worker started.",
        |p| p.fetched_bytes,
    ),
    (
        "topic_fetches",
        "Reads of the partition since the worker started, empty ones included.",
        |p| p.fetches,
    ),
];

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let info = Info::new([
            ("worker_id", Escaped(&self.worker_id)),
            ("version", Escaped(env!("CARGO_PKG_VERSION"))),
        ]);
        let help = "The worker's identity and version.";
        info.encode(encoder.encode_descriptor("worker", help, None, info.metric_type())?)?;
        self.encode_connectors(&mut encoder)?;
        self.encode_partitions(&mut encoder)
    }
}

impl Scrape {
    fn encode_connectors(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let connectors = &self.connectors;
        for (name, help, value) in CONNECTOR_COUNTERS {
            let samples = connectors
                .iter()
                .map(|c| (c.task_labels(), ConstCounter::new(value(c))));
            family(e, name, help, None, samples)?;
        }
        family(
            e,
            "connector_batch",
            "Time of one batch: a source appending a polled batch to the log, a sink writing a batch to its destination.",
            Some(Unit::Seconds),
            connectors.iter().map(|c| {
                let labels = [("connector", Escaped(&c.name)), ("task", Escaped(TASK))];
                (labels, Histogram::from(&c.batch))
            }),
        )?;
        family(
            e,
            "connector_restarts",
            "Times the connector's task was restarted after a failure.",
            None,
            connectors
                .iter()
                .map(|c| (c.labels(), ConstCounter::new(u64::from(c.restarts)))),
        )?;
        family(
            e,
            "connector_state",
            "1 for the state the connector's task is in, 0 for the others.",
            None,
            connectors.iter().flat_map(|c| {
                TaskState::ALL.into_iter().map(move |state| {
                    let labels = [("connector", Escaped(&c.name)), ("state", Escaped(state.as_str()))];
                    (labels, ConstGauge::new(i64::from(state == c.state)))
                })
            }),
        )?;
        family(
            e,
            "sink_lag_records",
            "Records a sink has still to read from a partition: its end offset minus the sink's committed offset.",
            None,
            self.sink_lags.iter().map(|lag| {
                let labels = [
                    ("connector", Escaped(&lag.connector)),
                    ("topic", Escaped(&lag.topic)),
                    ("partition", Escaped(&lag.partition)),
                ];
                (labels, ConstGauge::new(lag.records))
            }),
        )?;
        family(
            e,
            "source_lag",
            "How far a source is behind its system in bytes (a replication slot's unconfirmed WAL, a file's unread tail); only when the source can tell.",
            Some(Unit::Bytes),
            connectors
                .iter()
                .filter_map(|c| Some((c.labels(), ConstGauge::new(c.source_lag_bytes?)))),
        )?;
        family(
            e,
            "source_lag",
            "How far a source is behind its system in time (now minus the commit time of the newest change seen); only when the source can tell.",
            Some(Unit::Seconds),
            connectors
                .iter()
                .filter_map(|c| Some((c.labels(), ConstGauge::new(c.source_lag_ms? as f64 / 1000.0)))),
        )?;
        family(
            e,
            "snapshot_rows",
            "Rows a source's snapshot has read so far.",
            None,
            connectors
                .iter()
                .filter_map(|c| Some((c.labels(), ConstGauge::new(c.snapshot_rows?)))),
        )?;
        family(
            e,
            "snapshot_rows_expected",
            "Rows a source's snapshot expects to read in all (the planner's estimate, or the rows read when more).",
            None,
            connectors
                .iter()
                .filter_map(|c| Some((c.labels(), ConstGauge::new(c.snapshot_rows_total?)))),
        )
    }

    fn encode_partitions(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let partitions = &self.partitions;
        for (name, help, unit, value) in PARTITION_GAUGES {
            let samples = partitions.iter().map(|p| (p.labels(), ConstGauge::new(value(p))));
            family(e, name, help, unit, samples)?;
        }
        for (name, help, value) in PARTITION_COUNTERS {
            let samples = partitions.iter().map(|p| (p.labels(), ConstCounter::new(value(p))));
            family(e, name, help, None, samples)?;
        }
        family(
            e,
            "log_fsync",
            "Time of one fsync of a partition's segment file (group commit, flush, close).",
            Some(Unit::Seconds),
            partitions.iter().map(|p| (p.labels(), Histogram::from(&p.fsync))),
        )
    }
}

/// Encodes one metric family: its HELP and TYPE (and UNIT, whose name the crate appends
/// to `name`), then one sample per label set. A family without samples is left out.
fn family<L, M>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (L, M)>,
) -> Result<(), fmt::Error>
where
    L: EncodeLabelSet,
    M: EncodeMetric,
{
    let mut samples = samples.into_iter().peekable();
    let Some((_, first)) = samples.peek() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), first.metric_type())?;
    for (labels, value) in samples {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn kind_name(kind: ConnectorKind) -> &'static str {
    match kind {
        ConnectorKind::Source => "source",
        ConnectorKind::Sink => "sink",
    }
}

/// Gauges are signed in `prometheus-client`; a `u64` above `i64::MAX` would fail the
/// whole scrape.
fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A label value, escaped as the text format requires (`prometheus-client` 0.24 writes
/// label values verbatim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Escaped<'a>(&'a str);

impl EncodeLabelValue for Escaped<'_> {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        let mut rest = self.0;
        while let Some(at) = rest.find(['\\', '"', '\n']) {
            let (plain, special) = rest.split_at(at);
            encoder.write_str(plain)?;
            let mut chars = special.chars();
            encoder.write_str(match chars.next() {
                Some('\\') => "\\\\",
                Some('"') => "\\\"",
                _ => "\\n",
            })?;
            rest = chars.as_str();
        }
        encoder.write_str(rest)
    }
}

/// A histogram read from a [`plexus_log::LatencyHistogram`], in the form
/// [`MetricEncoder::encode_histogram`] takes: counts per bucket (it adds them up
/// itself) and `f64::MAX` for the `+Inf` bucket.
#[derive(Debug)]
struct Histogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl From<&HistogramSnapshot> for Histogram {
    fn from(snapshot: &HistogramSnapshot) -> Self {
        let mut below = 0;
        let buckets = snapshot
            .buckets
            .iter()
            .map(|&(bound, cumulative)| {
                let in_bucket = cumulative.saturating_sub(below);
                below = cumulative;
                (if bound.is_finite() { bound } else { f64::MAX }, in_bucket)
            })
            .collect();
        Histogram {
            sum: snapshot.sum_seconds,
            count: snapshot.count,
            buckets,
        }
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use plexus_log::LatencyHistogram;

    use super::*;

    fn connector(name: &str, kind: ConnectorKind, state: TaskState) -> ConnectorSample {
        ConnectorSample {
            name: name.to_owned(),
            type_name: "datagen".to_owned(),
            kind,
            state,
            restarts: 2,
            records_in: 10,
            records_out: 9,
            bytes_in: 1000,
            bytes_out: 900,
            errors: 1,
            dead_lettered: 1,
            source_lag_bytes: None,
            source_lag_ms: None,
            snapshot_rows: None,
            snapshot_rows_total: None,
            batch: LatencyHistogram::default().snapshot(),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn counters_states_and_info_are_encoded_with_help_and_type() {
        let mut source = connector("gen", ConnectorKind::Source, TaskState::Failed);
        source.source_lag_bytes = Some(4096);
        source.source_lag_ms = Some(1500);
        let scrape = Scrape {
            worker_id: "host:8083".to_owned(),
            connectors: vec![source, connector("out", ConnectorKind::Sink, TaskState::Running)],
            ..Scrape::default()
        };
        let text = scrape.encode().unwrap();
        let lines = lines(&text);
        let has = |line: &str| lines.contains(&line);
        assert!(
            has(
                "# HELP plexus_connector_records_in Records the task received: a source from its system, a sink from the log."
            ),
            "{text}"
        );
        assert!(has("# TYPE plexus_connector_records_in counter"), "{text}");
        assert!(
            has(r#"plexus_connector_records_in_total{connector="gen",task="0",type="datagen",kind="source"} 10"#),
            "{text}"
        );
        assert!(has(
            r#"plexus_connector_bytes_out_total{connector="out",task="0",type="datagen",kind="sink"} 900"#
        ));
        assert!(has(r#"plexus_connector_restarts_total{connector="gen"} 2"#));
        assert!(has(r#"plexus_connector_state{connector="gen",state="FAILED"} 1"#));
        assert!(has(r#"plexus_connector_state{connector="gen",state="RUNNING"} 0"#));
        assert_eq!(
            text.matches("plexus_connector_state{").count(),
            12,
            "six states per connector"
        );
        assert!(has("# TYPE plexus_source_lag_bytes gauge"));
        assert!(has("# UNIT plexus_source_lag_bytes bytes"));
        assert!(has(r#"plexus_source_lag_bytes{connector="gen"} 4096"#));
        assert!(has(r#"plexus_source_lag_seconds{connector="gen"} 1.5"#), "{text}");
        assert!(
            !text.contains(r#"plexus_source_lag_bytes{connector="out"}"#),
            "unknown lag is left out"
        );
        assert!(
            !text.contains("plexus_sink_lag_records"),
            "a family without samples is left out"
        );
        assert!(
            has(&format!(
                r#"plexus_worker_info{{worker_id="host:8083",version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert_eq!(lines.last(), Some(&"# EOF"));
    }

    #[test]
    fn histograms_have_cumulative_buckets_ending_with_inf() {
        let fsync = LatencyHistogram::default();
        fsync.observe(Duration::from_micros(30));
        fsync.observe(Duration::from_millis(3));
        fsync.observe(Duration::from_secs(20));
        let scrape = Scrape {
            partitions: vec![PartitionSample {
                topic: "shop.orders".to_owned(),
                partition: "0".to_owned(),
                bytes: 4096,
                segments: 1,
                start_offset: 0,
                end_offset: 7,
                appended_records: 7,
                appended_bytes: 4096,
                appended_batches: 2,
                fetched_records: 0,
                fetched_bytes: 0,
                fetches: 0,
                fsync: fsync.snapshot(),
            }],
            ..Scrape::default()
        };
        let text = scrape.encode().unwrap();
        let lines = lines(&text);
        let has = |line: &str| lines.contains(&line);
        let series = r#"topic="shop.orders",partition="0""#;
        assert!(has("# TYPE plexus_log_fsync_seconds histogram"), "{text}");
        assert!(has(&format!("plexus_log_fsync_seconds_count{{{series}}} 3")), "{text}");
        assert!(
            has(&format!(
                r#"plexus_log_fsync_seconds_bucket{{le="0.00005",{series}}} 1"#
            )),
            "{text}"
        );
        assert!(
            has(&format!(r#"plexus_log_fsync_seconds_bucket{{le="0.005",{series}}} 2"#)),
            "{text}"
        );
        assert!(
            has(&format!(r#"plexus_log_fsync_seconds_bucket{{le="10.0",{series}}} 2"#)),
            "{text}"
        );
        assert!(
            has(&format!(r#"plexus_log_fsync_seconds_bucket{{le="+Inf",{series}}} 3"#)),
            "{text}"
        );
        let sum = lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("plexus_log_fsync_seconds_sum{{{series}}} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!((sum - 20.00303).abs() < 1e-6, "{sum}");
        assert!(has(&format!("plexus_topic_bytes{{{series}}} 4096")));
        assert!(has(&format!("plexus_topic_end_offset{{{series}}} 7")));
        assert!(has(&format!("plexus_topic_appended_records_total{{{series}}} 7")));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut sink = connector("a\"b\\c\nd", ConnectorKind::Sink, TaskState::Running);
        sink.type_name = "plain".to_owned();
        let scrape = Scrape {
            connectors: vec![sink],
            ..Scrape::default()
        };
        let text = scrape.encode().unwrap();
        assert!(
            text.contains(r#"plexus_connector_restarts_total{connector="a\"b\\c\nd"} 2"#),
            "{text}"
        );
    }
}
