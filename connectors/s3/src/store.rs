//! The object-store interface the sinks write through.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use plexus_connector::ConnectorError;

/// The smallest part of a multipart upload, except the last (S3's limit).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// What a write that must not overwrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The object did not exist and now holds what was written.
    Created,
    /// An object already existed under the key and was left as it was; what was
    /// written is discarded.
    Exists,
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key relative to the store's prefix.
    pub key: String,
    /// The object's length in bytes.
    pub size: u64,
}

/// A bucket under a prefix, or a local directory. Keys are relative to the prefix and
/// use `/` as separator. Errors are [`ConnectorError`]s of the right kind: settings
/// that cannot work (wrong credentials, a missing bucket) are fatal and say what to
/// fix; a server that is busy or gone is retriable, after the store's own retries.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Where the objects go, as a user wrote it: `s3://bucket/prefix`, `file:///data/export`.
    fn location(&self) -> String;

    /// Writes a small object in one request, unless an object exists under `key`.
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<Put, ConnectorError>;

    /// Starts writing an object in parts; nothing is visible under `key` until
    /// [`Upload::complete`].
    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, ConnectorError>;

    /// The object's content, or `None` if there is none under `key`.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, ConnectorError>;

    /// Every complete object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ConnectorError>;

    /// Aborts the uploads under `prefix` that were started and never completed nor
    /// aborted (a crashed writer leaves them, and S3 keeps their parts and bills for
    /// them); returns how many.
    async fn abort_uploads(&self, prefix: &str) -> Result<usize, ConnectorError>;

    /// Removes an object; no error if there is none.
    async fn delete(&self, key: &str) -> Result<(), ConnectorError>;
}

/// An object being written in parts.
#[async_trait]
pub trait Upload: Send + fmt::Debug {
    /// Appends the next part. Every part but the last must hold at least
    /// [`MIN_PART_SIZE`] bytes. May return before the part is stored (parts upload in
    /// the background, a bounded number at a time); [`Upload::complete`] waits for all.
    async fn put_part(&mut self, part: Bytes) -> Result<(), ConnectorError>;

    /// Makes the object visible under its key, unless an object already exists there:
    /// then the upload is aborted and the existing object left as it was.
    async fn complete(self: Box<Self>) -> Result<Put, ConnectorError>;

    /// Drops what was uploaded; nothing appears under the key.
    async fn abort(self: Box<Self>) -> Result<(), ConnectorError>;

    /// Bytes handed to [`Upload::put_part`] so far.
    fn bytes(&self) -> u64;
}
