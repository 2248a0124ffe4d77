//! Counters and latency histograms the log keeps as it works, read by the worker's
//! metrics endpoint. Everything is a relaxed atomic: recording costs a few nanoseconds
//! and never takes a lock on the write path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s, roughly ×2.5 apart,
/// fine enough for an fsync (tens of µs to tens of ms) and a sink's batch alike.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 10.0,
];

/// A fixed-bucket latency histogram (Prometheus' model: cumulative buckets, sum, count).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations per bucket (not cumulative); the last slot counts those above
    /// every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of a histogram, with cumulative bucket counts.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, ending with `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, bound) in LATENCY_BUCKETS.iter().chain([&f64::INFINITY]).enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            // The buckets were read one by one; the total of the buckets is the count
            // that agrees with them.
            count: cumulative,
        }
    }

    /// The value below which the given fraction of observations fall (upper bucket
    /// bound), or `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let snapshot = self.snapshot();
        if snapshot.count == 0 {
            return None;
        }
        let wanted = (q * snapshot.count as f64).ceil().max(1.0) as u64;
        snapshot
            .buckets
            .iter()
            .find(|(_, below)| *below >= wanted)
            .map(|(bound, _)| *bound)
    }
}

/// What one partition has done since the log was opened.
///
/// Appends count the batches written (records as the batch header declares them,
/// bytes as stored); a replay refused as already written is not counted. Fetches count
/// every successful read, empty ones too, with the whole batches it returned (a batch
/// that starts before the requested offset counts whole), also the log's own reads
/// (consumer groups loading their offsets, timestamp lookups).
#[derive(Debug, Default)]
pub struct PartitionStats {
    pub appended_records: AtomicU64,
    pub appended_bytes: AtomicU64,
    pub appended_batches: AtomicU64,
    pub fetched_records: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub fetches: AtomicU64,
    /// Time of each fsync of this partition's segment files by group commit, flushes
    /// and close (one observation per file); not the one-off syncs of recovery and
    /// compaction.
    pub fsync: LatencyHistogram,
    /// Bytes of segments that opening the partition read batch by batch (0 after a
    /// clean close: the indexes written at the close are trusted).
    pub opened_scanned_bytes: AtomicU64,
}

impl PartitionStats {
    pub(crate) fn appended(&self, records: u64, bytes: u64) {
        self.appended_records.fetch_add(records, Ordering::Relaxed);
        self.appended_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.appended_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fetched(&self, records: u64, bytes: u64) {
        self.fetched_records.fetch_add(records, Ordering::Relaxed);
        self.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.fetches.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_infinity() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(30));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets.first(), Some(&(0.000_05, 1)));
        assert_eq!(s.buckets.iter().find(|(b, _)| *b == 0.005).map(|(_, n)| *n), Some(2));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 3)));
        assert!((s.sum_seconds - 20.003_03).abs() < 1e-9);
        assert_eq!(h.quantile(0.5), Some(0.005));
        assert_eq!(LatencyHistogram::default().quantile(0.5), None);
    }
}
