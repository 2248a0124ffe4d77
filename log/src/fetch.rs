//! The result of a read: whole batches, zero-copy, with a record decoder.

use crate::batch::{Batch, BatchError, StoredRecord};

/// Batches read from a partition starting at a requested offset.
///
/// The first batch may begin before the requested offset (batches are never split);
/// [`Fetch::records`] skips those earlier records. Each batch's bytes are the exact
/// Kafka record batch v2 found on disk, suitable for serving to a Kafka client as is.
#[derive(Debug, Clone)]
pub struct Fetch {
    offset: i64,
    batches: Vec<Batch>,
    bytes: usize,
    log_start_offset: i64,
    end_offset: i64,
}

impl Fetch {
    pub(crate) fn new(offset: i64, batches: Vec<Batch>, bytes: usize, log_start_offset: i64, end_offset: i64) -> Self {
        Fetch {
            offset,
            batches,
            bytes,
            log_start_offset,
            end_offset,
        }
    }

    /// The offset the read started at.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    pub fn batches(&self) -> &[Batch] {
        &self.batches
    }

    pub fn into_batches(self) -> Vec<Batch> {
        self.batches
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Total bytes of the returned batches.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The partition's first offset at the time of the read.
    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The partition's end offset (what a consumer may read up to) at the time of the read.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// Where the next read should start.
    pub fn next_offset(&self) -> i64 {
        self.batches
            .last()
            .map_or(self.offset, |b| (b.last_offset() + 1).max(self.offset))
    }

    /// The records at or after the requested offset, in order.
    pub fn records(&self) -> impl Iterator<Item = Result<StoredRecord, BatchError>> + '_ {
        let from = self.offset;
        self.batches
            .iter()
            .flat_map(|batch| match batch.records() {
                Ok(records) => Box::new(records) as Box<dyn Iterator<Item = _>>,
                Err(err) => Box::new(std::iter::once(Err(err))),
            })
            .filter(move |r: &Result<StoredRecord, BatchError>| r.as_ref().map_or(true, |r| r.offset >= from))
    }
}
