//! The status page (`GET /ui`) and the short history it charts (`GET /ui/history`).
//!
//! The page is one self-contained HTML file compiled into the binary: no build step, no
//! CDN, so it works on an air-gapped host. It polls the REST API and this module's
//! [`History`], which samples every connector's cumulative counters and every topic's
//! size at a fixed interval; the page turns differences of consecutive samples into
//! rates, so the worker keeps no per-page state.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use plexus_config::ConnectorKind;
use serde_json::{Value, json};

use crate::Worker;

/// The status page: inline CSS and JavaScript, no external resources.
pub const INDEX_HTML: &str = include_str!("index.html");

/// The last samples of the worker's connectors and topics, shared by the sampling task
/// and the handler that serves them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct History {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    interval: Duration,
    keep: usize,
    samples: Mutex<VecDeque<Sample>>,
}

/// The worker at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When, in ms since the Unix epoch.
    pub t: i64,
    pub connectors: BTreeMap<String, ConnectorSample>,
    pub topics: BTreeMap<String, TopicSample>,
}

/// One connector's state and cumulative counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorSample {
    /// As the REST API spells it: `RUNNING`, `FAILED`, ...
    pub state: &'static str,
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    /// A sink: records not yet committed, over all partitions it reads. A source: bytes
    /// its system holds that it has not read yet. `None` when unknown.
    pub lag: Option<u64>,
}

/// One topic's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSample {
    /// Bytes of all segments of all partitions.
    pub bytes: u64,
    /// Records still in the log (end minus start offset, over all partitions).
    pub records: u64,
}

impl History {
    /// Samples the worker every `interval`, keeping the last `keep` samples. The
    /// sampling task ends when the worker is dropped (it holds only a [`Weak`]) or when
    /// every clone of the returned `History` is. Must be called within a Tokio runtime.
    pub fn spawn(worker: &Arc<Worker>, interval: Duration, keep: usize) -> History {
        let history = History::new(interval, keep);
        let worker = Arc::downgrade(worker);
        let inner = Arc::downgrade(&history.inner);
        tokio::spawn(sample_every(worker, inner, interval));
        history
    }

    /// An empty history that nothing samples; [`History::push`] fills it.
    pub fn new(interval: Duration, keep: usize) -> History {
        History {
            inner: Arc::new(Inner {
                interval,
                keep: keep.max(1),
                samples: Mutex::new(VecDeque::with_capacity(keep.max(1))),
            }),
        }
    }

    /// Adds a sample, dropping the oldest beyond `keep`.
    pub fn push(&self, sample: Sample) {
        let mut samples = self.inner.samples.lock();
        samples.push_back(sample);
        while samples.len() > self.inner.keep {
            samples.pop_front();
        }
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.inner.samples.lock().iter().cloned().collect()
    }

    /// `{"interval_ms": 2000, "samples": [{"t": unix_ms, "connectors": {"NAME":
    /// {"state", "records_in", "records_out", "bytes_in", "lag"}}, "topics": {"NAME":
    /// {"bytes", "records"}}}]}`, oldest sample first.
    pub fn to_json(&self) -> Value {
        let samples: Vec<Value> = self.inner.samples.lock().iter().map(Sample::to_json).collect();
        json!({
            "interval_ms": u64::try_from(self.inner.interval.as_millis()).unwrap_or(u64::MAX),
            "samples": samples,
        })
    }
}

impl Sample {
    /// Reads the worker's connectors and topics now.
    pub fn take(worker: &Worker) -> Sample {
        let log = worker.log();
        let mut connectors = BTreeMap::new();
        for view in worker.connectors() {
            let metrics = &view.metrics;
            let lag = match view.kind {
                ConnectorKind::Sink => Some(crate::lag::sink_lag(log, &view.name, &view.topics)),
                ConnectorKind::Source => u64::try_from(metrics.source_lag_bytes.load(Relaxed)).ok(),
            };
            let sample = ConnectorSample {
                state: view.state.as_str(),
                records_in: metrics.records.load(Relaxed),
                records_out: metrics.records_out.load(Relaxed),
                bytes_in: metrics.bytes.load(Relaxed),
                lag,
            };
            connectors.insert(view.name, sample);
        }
        let mut topics = BTreeMap::new();
        for name in log.topic_names() {
            let Some(topic) = log.topic(&name) else { continue };
            let mut size = TopicSample { bytes: 0, records: 0 };
            for partition in topic.partitions() {
                size.bytes += partition.size_bytes();
                size.records += offsets_between(partition.start_offset(), partition.end_offset());
            }
            topics.insert(name, size);
        }
        Sample {
            t: crate::now_ms(),
            connectors,
            topics,
        }
    }

    pub fn to_json(&self) -> Value {
        let connectors: serde_json::Map<String, Value> = self
            .connectors
            .iter()
            .map(|(name, c)| {
                let value = json!({
                    "state": c.state,
                    "records_in": c.records_in,
                    "records_out": c.records_out,
                    "bytes_in": c.bytes_in,
                    "lag": c.lag,
                });
                (name.clone(), value)
            })
            .collect();
        let topics: serde_json::Map<String, Value> = self
            .topics
            .iter()
            .map(|(name, t)| (name.clone(), json!({"bytes": t.bytes, "records": t.records})))
            .collect();
        json!({"t": self.t, "connectors": connectors, "topics": topics})
    }
}

async fn sample_every(worker: Weak<Worker>, history: Weak<Inner>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let (Some(worker), Some(inner)) = (worker.upgrade(), history.upgrade()) else {
            return;
        };
        let sample = Sample::take(&worker);
        // Let go of the worker before sleeping, so dropping it ends this task.
        drop(worker);
        History { inner }.push(sample);
    }
}

/// `end - start`, floored at 0.
fn offsets_between(start: i64, end: i64) -> u64 {
    u64::try_from(end.saturating_sub(start)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn sample(t: i64, records: u64) -> Sample {
        Sample {
            t,
            connectors: BTreeMap::from([
                (
                    "gen".to_owned(),
                    ConnectorSample {
                        state: "RUNNING",
                        records_in: records,
                        records_out: records,
                        bytes_in: records * 100,
                        lag: None,
                    },
                ),
                (
                    "out".to_owned(),
                    ConnectorSample {
                        state: "FAILED",
                        records_in: 7,
                        records_out: 5,
                        bytes_in: 700,
                        lag: Some(3),
                    },
                ),
            ]),
            topics: BTreeMap::from([("shop.orders".to_owned(), TopicSample { bytes: 4096, records })]),
        }
    }

    #[test]
    fn the_json_has_the_shape_the_page_reads() {
        let history = History::new(Duration::from_secs(2), 10);
        history.push(sample(1_000, 10));
        assert_eq!(
            history.to_json(),
            json!({
                "interval_ms": 2000,
                "samples": [{
                    "t": 1000,
                    "connectors": {
                        "gen": {"state": "RUNNING", "records_in": 10, "records_out": 10, "bytes_in": 1000, "lag": null},
                        "out": {"state": "FAILED", "records_in": 7, "records_out": 5, "bytes_in": 700, "lag": 3},
                    },
                    "topics": {"shop.orders": {"bytes": 4096, "records": 10}},
                }],
            })
        );
    }

    #[test]
    fn only_the_last_samples_are_kept_oldest_first() {
        let history = History::new(Duration::from_millis(500), 3);
        for i in 0..5 {
            history.push(sample(i, i as u64));
        }
        let times: Vec<i64> = history.samples().iter().map(|s| s.t).collect();
        assert_eq!(times, [2, 3, 4]);
        let json = history.to_json();
        assert_eq!(json["interval_ms"], 500);
        assert_eq!(json["samples"].as_array().unwrap().len(), 3);
        assert_eq!(json["samples"][0]["t"], 2);
    }

    #[test]
    fn offsets_between_never_goes_negative() {
        assert_eq!(offsets_between(10, 25), 15);
        assert_eq!(offsets_between(30, 25), 0);
        assert_eq!(offsets_between(0, 0), 0);
    }
}
