//! The metrics a real worker renders while a datagen source fills the log and a discard
//! sink reads one of its topics, checked against the log itself.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use plexus_log::Log;
use plexus_runtime::{Registry, Worker, metrics};

const SOURCE: &str = "shop";
const SINK: &str = "orders-out";

/// One sample line of the text format: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a scrape (comment lines skipped); panics on a line it cannot read.
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("unreadable sample line `{line}`")))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value: value.parse().ok()?,
    })
}

/// `key="value",key="va\"lue"` with the text format's escapes.
fn parse_labels(mut text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (at, '"') => break at,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_owned(), value);
        text = rest[end + 1..].strip_prefix(',').unwrap_or(&rest[end + 1..]);
    }
    Some(labels)
}

/// The samples named `name` whose labels include `labels`.
fn find<'s>(samples: &'s [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'s Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// The value of the one sample named `name` with `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(samples, name, labels).as_slice() {
        [one] => one.value,
        other => panic!("expected one `{name}` {labels:?}, found {other:?}"),
    }
}

fn render(worker: &Worker) -> (String, Vec<Sample>) {
    let text = metrics::render(worker).unwrap();
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    let samples = parse(&text);
    (text, samples)
}

/// Counters (and histogram sums, counts and buckets) never go down, and no series
/// disappears.
fn assert_no_counter_decreased(before: &[Sample], after: &[Sample]) {
    let monotonic = ["_total", "_count", "_sum", "_bucket"];
    for old in before.iter().filter(|s| monotonic.iter().any(|m| s.name.ends_with(m))) {
        let new = after
            .iter()
            .find(|s| s.name == old.name && s.labels == old.labels)
            .unwrap_or_else(|| panic!("{} {:?} disappeared", old.name, old.labels));
        assert!(
            new.value >= old.value,
            "{} {:?} went down from {} to {}",
            old.name,
            old.labels,
            old.value,
            new.value
        );
    }
}

/// Records in the log's `shop.*` topics, read back record by record.
async fn records_in_log(log: &Log) -> (u64, BTreeMap<String, u64>) {
    let mut total = 0;
    let mut per_topic = BTreeMap::new();
    // The source's records: its three tables' changes and their three schemas.
    for name in log
        .topic_names()
        .into_iter()
        .filter(|n| n.starts_with("shop.") || n == "__schemas")
    {
        let topic = log.topic(&name).unwrap();
        let mut count = 0u64;
        for partition in topic.partitions() {
            let mut offset = partition.start_offset();
            loop {
                let fetch = partition.read(offset, 1 << 20).await.unwrap();
                if fetch.is_empty() {
                    break;
                }
                for record in fetch.records() {
                    record.unwrap();
                    count += 1;
                }
                offset = fetch.next_offset();
            }
        }
        total += count;
        per_topic.insert(name, count);
    }
    (total, per_topic)
}

#[tokio::test]
async fn metrics_follow_a_source_and_a_sink_through_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::builtin();
    let text = format!(
        "[worker]\ndata_dir = \"{}\"\n\n\
         [[connector]]\nname = \"{SOURCE}\"\ntype = \"datagen\"\ntopic = \"shop.{{table}}\"\nsettings = {{ count = 5000 }}\n\n\
         [[connector]]\nname = \"{SINK}\"\ntype = \"discard\"\ntopics = [\"shop.orders\"]\n",
        dir.path().join("data").display()
    );
    let config = plexus_config::Config::load_str(&[(PathBuf::from("metrics.toml"), text)], &registry, &|_| None)
        .unwrap_or_else(|p| panic!("{p}"));
    let worker = Worker::start(&config, registry).await.unwrap();
    assert!(metrics::CONTENT_TYPE.starts_with("application/openmetrics-text"));

    // Scrape while the source runs until it has finished and the sink has caught up;
    // every scrape is compared with the one before.
    let (_, mut previous) = render(&worker);
    let mut scrapes = 1;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (text, samples) = loop {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let (text, samples) = render(&worker);
        scrapes += 1;
        assert_no_counter_decreased(&previous, &samples);
        let finished = find(
            &samples,
            "plexus_connector_state",
            &[("connector", SOURCE), ("state", "FINISHED")],
        )
        .first()
        .is_some_and(|s| s.value == 1.0);
        let lags = find(
            &samples,
            "plexus_sink_lag_records",
            &[("connector", SINK), ("topic", "shop.orders")],
        );
        if finished && !lags.is_empty() && lags.iter().all(|s| s.value == 0.0) {
            break (text, samples);
        }
        assert!(
            Instant::now() < deadline,
            "the source did not finish or the sink did not catch up:\n{text}"
        );
        previous = samples;
    };
    assert!(scrapes >= 2, "counters were compared across scrapes");

    let log = worker.log();
    let (in_log, per_topic) = records_in_log(log).await;
    assert!(in_log >= 5000, "{per_topic:?}");
    assert_eq!(per_topic.len(), 4, "{per_topic:?}");
    assert_eq!(per_topic["__schemas"], 3, "{per_topic:?}");
    let source = [
        ("connector", SOURCE),
        ("task", "0"),
        ("type", "datagen"),
        ("kind", "source"),
    ];
    assert_eq!(
        value(&samples, "plexus_connector_records_in_total", &source),
        in_log as f64,
        "{text}"
    );
    assert_eq!(
        value(&samples, "plexus_connector_records_out_total", &source),
        in_log as f64
    );
    assert!(value(&samples, "plexus_connector_bytes_in_total", &source) > 0.0);
    assert_eq!(
        value(
            &samples,
            "plexus_connector_state",
            &[("connector", SOURCE), ("state", "RUNNING")]
        ),
        0.0
    );
    let sink = [
        ("connector", SINK),
        ("task", "0"),
        ("type", "discard"),
        ("kind", "sink"),
    ];
    let sink_in = value(&samples, "plexus_connector_records_in_total", &sink);
    assert!(sink_in > 0.0, "{text}");
    assert_eq!(
        value(
            &samples,
            "plexus_connector_state",
            &[("connector", SINK), ("state", "RUNNING")]
        ),
        1.0
    );
    assert_eq!(
        find(&samples, "plexus_connector_state", &[("connector", SINK)]).len(),
        6,
        "one series per state"
    );
    for connector in [SOURCE, SINK] {
        let batches = value(
            &samples,
            "plexus_connector_batch_seconds_count",
            &[("connector", connector), ("task", "0")],
        );
        assert!(batches > 0.0, "{connector}: {text}");
        let inf = value(
            &samples,
            "plexus_connector_batch_seconds_bucket",
            &[("connector", connector), ("le", "+Inf")],
        );
        assert_eq!(inf, batches, "the +Inf bucket holds every batch");
    }
    assert!(
        find(&samples, "plexus_source_lag_bytes", &[]).is_empty(),
        "datagen cannot tell its lag"
    );

    // Per partition: what the metrics say is what the log holds.
    let orders = log.topic("shop.orders").unwrap();
    let mut orders_end = 0;
    for partition in orders.partitions() {
        let id = partition.id().to_string();
        let series = [("topic", "shop.orders"), ("partition", id.as_str())];
        let end = partition.end_offset();
        orders_end += end;
        assert_eq!(value(&samples, "plexus_topic_end_offset", &series), end as f64);
        assert_eq!(
            value(&samples, "plexus_topic_appended_records_total", &series),
            end as f64,
            "{text}"
        );
        assert_eq!(
            value(&samples, "plexus_topic_bytes", &series),
            partition.size_bytes() as f64
        );
        assert!(value(&samples, "plexus_topic_fetched_records_total", &series) >= end as f64);
        assert!(value(&samples, "plexus_topic_segments", &series) >= 1.0);
        value(&samples, "plexus_log_fsync_seconds_count", &series);
        let lag = [
            ("connector", SINK),
            ("topic", "shop.orders"),
            ("partition", id.as_str()),
        ];
        assert_eq!(value(&samples, "plexus_sink_lag_records", &lag), 0.0);
    }
    assert_eq!(orders_end as u64, per_topic["shop.orders"]);
    assert_eq!(sink_in, orders_end as f64, "the sink read every record once");
    assert_eq!(
        find(&samples, "plexus_sink_lag_records", &[("connector", SINK)]).len(),
        orders.partitions().len(),
        "lag only for the topics the sink reads"
    );
    for name in log.topic_names() {
        assert!(
            !find(&samples, "plexus_log_fsync_seconds_sum", &[("topic", &name)]).is_empty(),
            "{name} has an fsync histogram: {text}"
        );
    }
    let info = value(&samples, "plexus_worker_info", &[("worker_id", worker.id())]);
    assert_eq!(info, 1.0);

    worker.shutdown().await.unwrap();
}

#[test]
fn the_parser_reads_escapes_and_labels() {
    let samples =
        parse("# HELP x y\nplexus_a_total{connector=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 3\nplexus_b 1.5\n# EOF\n");
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].labels["connector"], "a\"b\\c\nd");
    assert_eq!(samples[0].labels["le"], "+Inf");
    assert_eq!(samples[0].value, 3.0);
    assert!(samples[1].labels.is_empty());
    assert_eq!(samples[1].value, 1.5);
}
