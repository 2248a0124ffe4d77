//! Decoding on several cores: a large slice of records is cut into consecutive runs,
//! each decoded by its own [`RowDecoder`] on its own thread, and the runs' rows are
//! handed on in record order.
//!
//! JSON tokenising is most of the sink's work and arrow-json does it on one thread, so
//! this is what lets a sink use more than one core. The runs are not concatenated (that
//! would copy every column): the caller writes them one after the other, which gives the
//! files the same rows in the same order as one decoder would.

use plexus_connector::SinkRecord;

use crate::config::Envelope;
use crate::decode::{Decoded, Rejected, RowDecoder};
use crate::error::ParquetError;
use crate::schema::TableSchema;

/// Records below which a run is not worth a thread of its own.
const MIN_RUN: usize = 1024;

/// Decoders at most, however many cores there are.
const MAX_RUNS: usize = 4;

/// The decoders of one table schema, one per run.
#[derive(Debug)]
pub(crate) struct SplitDecoder {
    decoders: Vec<RowDecoder>,
}

/// The runs' rows, in record order, and every rejected record.
#[derive(Debug)]
pub(crate) struct SplitDecoded {
    /// Rows of consecutive runs; [`Decoded::rows`] index the whole slice.
    pub runs: Vec<Decoded>,
    /// Sorted by index in the whole slice.
    pub rejected: Vec<Rejected>,
}

impl SplitDecoder {
    /// Decoders for up to `threads` runs (at least one).
    pub fn new(table: &TableSchema, envelope: Envelope, threads: usize) -> Result<SplitDecoder, ParquetError> {
        let decoders = (0..threads.clamp(1, MAX_RUNS))
            .map(|_| RowDecoder::new(table, envelope))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SplitDecoder { decoders })
    }

    /// Decoders for twice as many runs as the machine has cores (up to [`MAX_RUNS`]).
    /// The runs share the cores with the encoder and the runtime's reads, so one run
    /// falls behind now and then and the others wait for it at the end of the slice:
    /// smaller runs even that out (measured: the export about 6% faster with four runs
    /// than with two on two cores).
    pub fn for_machine(table: &TableSchema, envelope: Envelope) -> Result<SplitDecoder, ParquetError> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        SplitDecoder::new(table, envelope, cores.saturating_mul(2))
    }

    /// The schema of the rows (the same for every decoder).
    pub fn output_schema(&self) -> Option<&arrow_schema::SchemaRef> {
        self.decoders.first().map(RowDecoder::output_schema)
    }

    /// Decodes `records` (none of them a tombstone), in runs of at least [`MIN_RUN`].
    pub fn decode(&mut self, records: &[&SinkRecord]) -> Result<SplitDecoded, ParquetError> {
        let runs = (records.len() / MIN_RUN).clamp(1, self.decoders.len());
        let per_run = records.len().div_ceil(runs).max(1);
        let mut outcomes = if runs == 1 {
            match self.decoders.first_mut() {
                Some(decoder) => vec![decoder.decode(records)],
                None => Vec::new(),
            }
        } else {
            let (first, others) = self.decoders.split_at_mut(1);
            let mut chunks = records.chunks(per_run);
            let head = chunks.next().unwrap_or_default();
            std::thread::scope(|scope| {
                let spawned: Vec<_> = others
                    .iter_mut()
                    .zip(chunks)
                    .map(|(decoder, chunk)| scope.spawn(move || decoder.decode(chunk)))
                    .collect();
                let mut outcomes = Vec::with_capacity(runs);
                outcomes.push(first.first_mut().map_or(Ok((None, Vec::new())), |d| d.decode(head)));
                for thread in spawned {
                    outcomes.push(
                        thread
                            .join()
                            .unwrap_or_else(|_| Err(ParquetError::Internal("a decoding thread panicked".into()))),
                    );
                }
                outcomes
            })
        };
        let mut decoded = SplitDecoded {
            runs: Vec::with_capacity(outcomes.len()),
            rejected: Vec::new(),
        };
        for (run, outcome) in outcomes.drain(..).enumerate() {
            let base = run * per_run;
            let (rows, rejected) = outcome?;
            decoded.rejected.extend(rejected.into_iter().map(|mut r| {
                r.index += base;
                r
            }));
            if let Some(mut rows) = rows {
                for row in &mut rows.rows {
                    *row += base;
                }
                decoded.runs.push(rows);
            }
        }
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::RecordBatch;
    use bytes::Bytes;

    use super::*;

    fn table() -> TableSchema {
        TableSchema::from_document(
            "orders",
            br#"{"columns":[{"name":"id","arrow":"Int64"},{"name":"price","arrow":"Decimal128(10, 2)"},
                {"name":"status","arrow":"Utf8"},{"name":"at","arrow":"Timestamp(Microsecond, Some(\"UTC\"))"}]}"#,
        )
        .unwrap()
    }

    fn records(n: usize) -> Vec<SinkRecord> {
        (0..n)
            .map(|i| {
                let row = |status: &str| {
                    format!(
                        r#"{{"id":{i},"price":"{}.{:02}","status":"{status}","at":"2026-01-01T00:00:{:02}.5Z"}}"#,
                        i % 300,
                        i % 100,
                        i % 60
                    )
                };
                let value = match i % 97 {
                    // A bad record now and then, in every run.
                    13 => r#"{"after":{"id":"not a number"},"op":"c","ts_ms":1}"#.to_owned(),
                    50 => "not json".to_owned(),
                    5 => format!(r#"{{"before":{},"after":null,"op":"d","ts_ms":{i}}}"#, row("gone")),
                    _ => format!(
                        r#"{{"before":{},"after":{},"source":{{"seq":{i}}},"op":"u","ts_ms":{i}}}"#,
                        row("old"),
                        row("new")
                    ),
                };
                SinkRecord {
                    topic: Arc::from("orders"),
                    partition: 1,
                    offset: i as i64 + 100,
                    timestamp: 0,
                    key: None,
                    value: Some(Bytes::from(value)),
                    headers: Default::default(),
                }
            })
            .collect()
    }

    fn concat(runs: &[Decoded]) -> RecordBatch {
        let schema = runs[0].batch.schema();
        arrow_select::concat::concat_batches(&schema, runs.iter().map(|d| &d.batch)).unwrap()
    }

    #[test]
    fn runs_give_the_rows_and_rejections_of_one_decoder_in_order() {
        let records = records(5000);
        let refs: Vec<&SinkRecord> = records.iter().collect();
        let (one, one_rejected) = RowDecoder::new(&table(), Envelope::Flatten)
            .unwrap()
            .decode(&refs)
            .unwrap();
        let one = one.unwrap();
        for threads in [1, 2, 3, 4] {
            let mut split = SplitDecoder::new(&table(), Envelope::Flatten, threads).unwrap();
            let decoded = split.decode(&refs).unwrap();
            assert_eq!(decoded.runs.len(), threads.min(5000 / MIN_RUN));
            assert_eq!(concat(&decoded.runs), one.batch, "{threads} threads");
            let rows: Vec<usize> = decoded.runs.iter().flat_map(|d| d.rows.iter().copied()).collect();
            assert_eq!(rows, one.rows, "{threads} threads");
            assert_eq!(decoded.rejected, one_rejected, "{threads} threads");
            let bad = (0..5000).filter(|i| i % 97 == 13 || i % 97 == 50).count();
            assert_eq!(decoded.rejected.len(), bad);
        }
    }

    #[test]
    fn small_slices_take_one_run_and_decoders_are_reused() {
        let mut split = SplitDecoder::new(&table(), Envelope::Flatten, 2).unwrap();
        let records = records(3000);
        let refs: Vec<&SinkRecord> = records.iter().collect();
        for slice in [&refs[..10], &refs[..MIN_RUN * 2 - 1], &refs[..], &refs[..1]] {
            let decoded = split.decode(slice).unwrap();
            let runs = if slice.len() >= 2 * MIN_RUN { 2 } else { 1 };
            assert_eq!(decoded.runs.len(), runs);
            let rows: usize = decoded.runs.iter().map(|d| d.batch.num_rows()).sum();
            assert_eq!(rows + decoded.rejected.len(), slice.len());
        }
        let decoded = split.decode(&[]).unwrap();
        assert!(decoded.runs.is_empty() && decoded.rejected.is_empty());
    }
}
