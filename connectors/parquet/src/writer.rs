//! One Parquet file being written: Arrow batches in, multipart-upload parts out.
//!
//! The encoder writes into a buffer that is handed to [`Upload::put_part`] whenever it
//! holds a part's worth, so a file never sits whole in memory: only the row group being
//! built and less than one part. A file that ends smaller than one part is written with
//! one `put_if_absent` at completion instead (no multipart upload at all).
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
use plexus_connector::ConnectorError;
use plexus_connector_s3::{ObjectStore, Put, Upload};

use crate::config::{Compression, ParquetSinkConfig};
use crate::error::ParquetError;

/// The writer properties every file of a sink shares.
pub(crate) fn writer_properties(config: &ParquetSinkConfig) -> WriterProperties {
    let codec = match config.compression {
        Compression::Zstd => Codec::ZSTD(ZstdLevel::default()),
        Compression::Snappy => Codec::SNAPPY,
        Compression::None => Codec::UNCOMPRESSED,
    };
    WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_row_count(Some(config.row_group_rows.max(1)))
        .set_max_row_group_bytes(Some(config.row_group_size.max(1)))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_created_by(format!("plexus {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A file of one commit unit, from its first batch to its completion.
pub(crate) struct ParquetFile {
    key: String,
    /// `None` once finished.
    writer: Option<ArrowWriter<PartBuffer>>,
    upload: Option<Box<dyn Upload>>,
    part_size: usize,
    records: u64,
    uploaded: u64,
    /// A finished file smaller than one part: written whole at completion.
    small: Option<Bytes>,
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
        Ok(ParquetFile {
            key,
            writer: Some(writer),
            upload: None,
            part_size,
            records: 0,
            uploaded: 0,
            small: None,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Encodes `batch`, and uploads a part if a part's worth is buffered.
    pub async fn write(&mut self, store: &dyn ObjectStore, batch: &RecordBatch) -> Result<(), ConnectorError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(ConnectorError::fatal(format!(
                "`{}` was written to after it was finished",
                self.key
            )));
        };
        writer
            .write(batch)
            .map_err(ParquetError::encode(format!("encode rows for `{}`", self.key)))?;
        self.records += batch.num_rows() as u64;
        if writer.inner().0.len() >= self.part_size {
            let part = std::mem::take(&mut writer.inner_mut().0);
            self.put_part(store, part).await?;
        }
        Ok(())
    }

    /// Step (a) of the commit protocol: the last row group and the footer are written and
    /// every byte is uploaded, except for a small file, which is kept for completion.
    pub async fn finish(&mut self, store: &dyn ObjectStore) -> Result<(), ConnectorError> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        writer
            .finish()
            .map_err(ParquetError::encode(format!("finish `{}`", self.key)))?;
        let rest = std::mem::take(&mut writer.inner_mut().0);
        drop(writer);
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
        if self.writer.is_some() {
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
        match self.upload.take() {
            Some(upload) => upload.abort().await,
            None => Ok(()),
        }
    }

    /// Bytes held in memory: the row group being built, the part not yet uploaded.
    pub fn buffered(&self) -> u64 {
        let writer = self.writer.as_ref().map_or(0, |w| w.memory_size() + w.inner().0.len());
        (writer + self.small.as_ref().map_or(0, Bytes::len)) as u64
    }

    /// The file's size as far as it is known: uploaded, buffered, and the estimated
    /// encoded size of the row group being built.
    pub fn size(&self) -> u64 {
        let writer = self
            .writer
            .as_ref()
            .map_or(0, |w| w.in_progress_size() + w.inner().0.len());
        self.uploaded + (writer + self.small.as_ref().map_or(0, Bytes::len)) as u64
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
