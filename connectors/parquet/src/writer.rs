//! One Parquet file being written: Arrow batches in, multipart-upload parts out.
//!
//! The encoder writes into a buffer that is handed to [`Upload::put_part`] whenever it
//! holds a part's worth, so a file never sits whole in memory: only the row group being
//! built and less than one part. A file that ends smaller than one part is written with
//! one `put_if_absent` at completion instead (no multipart upload at all).
//!
//! Encoding and compression run on tokio's blocking pool, one job of a file at a time
//! (the batches of one [`ParquetFile::write`]): `write` hands the batches over and
//! returns, so the sink decodes the next records while these are encoded (the next
//! `write`, `finish` or `abort` of the file waits for the job first). A file thus holds
//! at most one job's batches in flight, counted in [`ParquetFile::buffered`].
//!
//! Nothing becomes visible before [`ParquetFile::complete`], which the commit protocol
//! (see [`crate::unit`]) calls only after the unit's manifest exists.

use std::io::Write;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as Codec, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use plexus_connector::ConnectorError;
use plexus_connector_s3::{ObjectStore, Put, Upload};
use tokio::task::JoinHandle;

use crate::config::{Compression, ParquetSinkConfig};
use crate::error::ParquetError;

/// The zstd level: 3, zstd's own default and DuckDB's (its `COMPRESSION zstd` without
/// `COMPRESSION_LEVEL` writes the same bytes as level 3), rather than the parquet
/// crate's 1, so that files compare with what common tools write.
const ZSTD_LEVEL: i32 = 3;

/// Columns the sink adds that hold a different value in nearly every row (log and
/// source positions, event times): a dictionary never pays for them, and building one
/// up to its size limit in every row group costs more than all their other encoding.
const NO_DICTIONARY: [&str; 4] = ["__offset", "__seq", "__lsn", "__ts_ms"];

/// The writer properties every file of a sink shares.
pub(crate) fn writer_properties(config: &ParquetSinkConfig) -> WriterProperties {
    let codec = match config.compression {
        Compression::Zstd => Codec::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).unwrap_or_default()),
        Compression::Snappy => Codec::SNAPPY,
        Compression::None => Codec::UNCOMPRESSED,
    };
    NO_DICTIONARY
        .into_iter()
        .fold(WriterProperties::builder(), |builder, column| {
            builder.set_column_dictionary_enabled(ColumnPath::from(column), false)
        })
        .set_compression(codec)
        .set_max_row_group_row_count(Some(config.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(config.row_group_size.max(1)))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("plexus {}", env!("CARGO_PKG_VERSION")))
        .build()
}

type Encoder = ArrowWriter<PartBuffer>;

/// A file of one commit unit, from its first batch to its completion.
pub(crate) struct ParquetFile {
    key: String,
    /// The encoder while no job holds it; `None` once finished (or lost to a failed job).
    writer: Option<Encoder>,
    /// The batches being encoded on the blocking pool, which holds the encoder meanwhile.
    job: Option<Job>,
    upload: Option<Box<dyn Upload>>,
    part_size: usize,
    records: u64,
    uploaded: u64,
    /// What the encoder held when last seen: memory, and the encoded size of the row
    /// group being built plus the bytes not uploaded yet.
    seen: Sizes,
    /// A finished file smaller than one part: written whole at completion.
    small: Option<Bytes>,
}

struct Job {
    handle: JoinHandle<(Encoder, Result<(), ParquetError>)>,
    /// The memory of the batches being encoded.
    batch: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Sizes {
    memory: u64,
    encoded: u64,
}

impl std::fmt::Debug for ParquetFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFile")
            .field("key", &self.key)
            .field("records", &self.records)
            .field("uploaded", &self.uploaded)
            .finish_non_exhaustive()
    }
}

impl ParquetFile {
    pub fn new(
        key: String,
        schema: SchemaRef,
        properties: WriterProperties,
        part_size: usize,
    ) -> Result<ParquetFile, ParquetError> {
        let writer = ArrowWriter::try_new(PartBuffer::default(), schema, Some(properties))
            .map_err(ParquetError::encode(format!("start `{key}`")))?;
        let seen = Sizes {
            memory: writer.memory_size() as u64,
            encoded: writer.in_progress_size() as u64,
        };
        Ok(ParquetFile {
            key,
            writer: Some(writer),
            job: None,
            upload: None,
            part_size,
            records: 0,
            uploaded: 0,
            seen,
            small: None,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes of the file uploaded or held so far (its final size, once finished).
    pub fn bytes(&self) -> u64 {
        self.uploaded + self.small.as_ref().map_or(0, |s| s.len() as u64)
    }

    /// Hands `batches` (in order) to the encoder, after the previous ones are encoded and
    /// a part's worth, if buffered, is uploaded.
    pub async fn write(&mut self, store: &dyn ObjectStore, batches: Vec<RecordBatch>) -> Result<(), ConnectorError> {
        self.settle(store).await?;
        let Some(mut writer) = self.writer.take() else {
            return Err(ConnectorError::fatal(format!(
                "`{}` was written to after it was finished",
                self.key
            )));
        };
        self.records += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        let batch_bytes = batches.iter().map(|b| b.get_array_memory_size() as u64).sum();
        let key = self.key.clone();
        let encode = move || {
            let result = batches
                .iter()
                .try_for_each(|batch| writer.write(batch))
                .map_err(|e| ParquetError::encode(format!("encode rows for `{key}`"))(e));
            (writer, result)
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.job = Some(Job {
                    handle: runtime.spawn_blocking(encode),
                    batch: batch_bytes,
                });
            }
            Err(_) => {
                let (writer, result) = encode();
                self.writer = Some(writer);
                result?;
            }
        }
        Ok(())
    }

    /// Step (a) of the commit protocol: the last row group and the footer are written and
    /// every byte is uploaded, except for a small file, which is kept for completion.
    pub async fn finish(&mut self, store: &dyn ObjectStore) -> Result<(), ConnectorError> {
        self.settle(store).await?;
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        let context = format!("finish `{}`", self.key);
        let close = move || {
            writer
                .finish()
                .map_err(ParquetError::encode(context))
                .map(|_| std::mem::take(&mut writer.inner_mut().0))
        };
        let rest = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime.spawn_blocking(close).await.map_err(|e| lost(&self.key, &e))??,
            Err(_) => close()?,
        };
        self.seen = Sizes::default();
        if self.upload.is_none() && rest.len() < self.part_size {
            self.small = Some(Bytes::from(rest));
        } else if !rest.is_empty() {
            self.put_part(store, rest).await?;
        }
        Ok(())
    }

    /// Step (c): makes the finished file visible, unless an object exists under its key
    /// ([`Put::Exists`]: a replay of a unit whose files were completed before).
    pub async fn complete(mut self, store: &dyn ObjectStore) -> Result<Put, ConnectorError> {
        if self.writer.is_some() || self.job.is_some() {
            return Err(ConnectorError::fatal(format!(
                "`{}` completed before it was finished",
                self.key
            )));
        }
        if let Some(body) = self.small.take() {
            return store.put_if_absent(&self.key, body).await;
        }
        match self.upload.take() {
            Some(upload) => upload.complete().await,
            None => Err(ConnectorError::fatal(format!(
                "`{}` has no content to complete",
                self.key
            ))),
        }
    }

    /// Drops the file: nothing appears under its key.
    pub async fn abort(mut self) -> Result<(), ConnectorError> {
        if let Some(job) = self.job.take() {
            // Its outcome no longer matters; only that it no longer runs.
            let _ = job.handle.await;
        }
        match self.upload.take() {
            Some(upload) => upload.abort().await,
            None => Ok(()),
        }
    }

    /// Bytes held in memory: the row group being built, the part not yet uploaded, the
    /// batches being encoded. While they are encoded, the encoder's growth is not known
    /// yet: it is counted as their size again (pages buffered before compression
    /// hold about what the columns hold), so that the budget errs on the safe side.
    pub fn buffered(&self) -> u64 {
        let job = self.job.as_ref().map_or(0, |j| 2 * j.batch);
        let writer = match &self.writer {
            Some(w) => (w.memory_size() + w.inner().0.len()) as u64,
            None => self.seen.memory,
        };
        writer + job + self.small.as_ref().map_or(0, |s| s.len() as u64)
    }

    /// The file's size as far as it is known: uploaded, buffered, and the estimated
    /// encoded size of the row group being built.
    pub fn size(&self) -> u64 {
        let writer = match &self.writer {
            Some(w) => (w.in_progress_size() + w.inner().0.len()) as u64,
            None => self.seen.encoded,
        };
        self.uploaded + writer + self.small.as_ref().map_or(0, |s| s.len() as u64)
    }

    /// Waits for the batch in flight, and uploads a part if a part's worth is buffered.
    async fn settle(&mut self, store: &dyn ObjectStore) -> Result<(), ConnectorError> {
        if let Some(job) = self.job.take() {
            let (writer, result) = job.handle.await.map_err(|e| lost(&self.key, &e))?;
            self.writer = Some(writer);
            result?;
        }
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        if writer.inner().0.len() >= self.part_size {
            let part = std::mem::take(&mut writer.inner_mut().0);
            self.put_part(store, part).await?;
        }
        if let Some(writer) = &self.writer {
            self.seen = Sizes {
                memory: (writer.memory_size() + writer.inner().0.len()) as u64,
                encoded: (writer.in_progress_size() + writer.inner().0.len()) as u64,
            };
        }
        Ok(())
    }

    async fn put_part(&mut self, store: &dyn ObjectStore, part: Vec<u8>) -> Result<(), ConnectorError> {
        let upload = match &mut self.upload {
            Some(upload) => upload,
            None => self.upload.insert(store.start_upload(&self.key).await?),
        };
        self.uploaded += part.len() as u64;
        upload.put_part(Bytes::from(part)).await
    }
}

/// An encoding job that panicked or was cancelled: the file's encoder is gone.
fn lost(key: &str, error: &tokio::task::JoinError) -> ConnectorError {
    ConnectorError::fatal(format!("the encoder of `{key}` stopped: {error}"))
}

/// Where the encoder writes; drained into parts.
#[derive(Debug, Default)]
struct PartBuffer(Vec<u8>);

impl Write for PartBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use plexus_connector_s3::LocalStore;

    use super::*;

    fn batches() -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("__offset", DataType::Int64, false),
            Field::new("status", DataType::Utf8, true),
        ]));
        (0..20)
            .map(|b| {
                let offsets = Int64Array::from_iter_values((0..500).map(|i| b * 500 + i));
                let status = StringArray::from_iter((0..500).map(|i| (i % 7 != 0).then(|| format!("s{}", i % 5))));
                RecordBatch::try_new(Arc::clone(&schema), vec![Arc::new(offsets), Arc::new(status)]).unwrap()
            })
            .collect()
    }

    /// Encodes `batches`, `per_write` at a time; returns what the file holds and how many
    /// writes left a job in flight.
    async fn encode(store: &dyn ObjectStore, batches: &[RecordBatch], per_write: usize) -> (Vec<RecordBatch>, u64) {
        let properties = writer_properties(&ParquetSinkConfig {
            row_group_rows: 3000,
            ..ParquetSinkConfig::default()
        });
        let mut file = ParquetFile::new("f.parquet".into(), batches[0].schema(), properties, 8 << 20).unwrap();
        let mut in_flight = 0;
        for chunk in batches.chunks(per_write) {
            file.write(store, chunk.to_vec()).await.unwrap();
            if file.job.is_some() {
                let bytes: usize = chunk.iter().map(RecordBatch::get_array_memory_size).sum();
                assert!(file.buffered() >= 2 * bytes as u64);
                in_flight += 1;
            }
        }
        file.finish(store).await.unwrap();
        assert_eq!(file.records(), 10_000);
        let body = file.small.clone().unwrap();
        assert_eq!(file.bytes(), body.len() as u64);
        let reader = ParquetRecordBatchReaderBuilder::try_new(body).unwrap().build().unwrap();
        (reader.map(Result::unwrap).collect(), in_flight)
    }

    #[tokio::test]
    async fn pipelined_encoding_keeps_every_row_in_order_and_counts_batches_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).await.unwrap();
        let batches = batches();
        let expected = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
        for per_write in [1, 3] {
            let (pipelined, in_flight) = encode(&store, &batches, per_write).await;
            let writes = batches.len().div_ceil(per_write) as u64;
            assert_eq!(in_flight, writes, "every write is encoded off the caller");
            let pipelined = arrow_select::concat::concat_batches(&expected.schema(), &pipelined).unwrap();
            assert_eq!(pipelined, expected, "{per_write} batches per write");
        }
    }
}
