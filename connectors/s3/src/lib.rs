//! `plexus-connector-s3`: where the file-writing sinks put their objects.
//!
//! [`ObjectStore`] is the one interface: an S3 bucket (or an S3-compatible server) under
//! a prefix, or a local directory that behaves the same way. Objects are written once:
//! a completion never replaces an object that exists ([`Put::Exists`]), which is what
//! makes a sink's replay after a crash unable to duplicate or change a file.
//!
//! A sink includes [`fields`] in its [`plexus_connector::ConfigSchema`], reads them
//! with [`StoreSettings::from_settings`] and calls [`open`]:
//!
//! ```no_run
//! # async fn example(settings: &plexus_connector::Settings) -> Result<(), plexus_connector::ConnectorError> {
//! use plexus_connector_s3::{Put, StoreSettings};
//!
//! let store = plexus_connector_s3::open(&StoreSettings::from_settings(settings)?).await?;
//! // Uploads a crashed run left behind.
//! store.abort_uploads("orders/").await?;
//! let mut upload = store.start_upload("orders/part-00000.parquet").await?;
//! upload.put_part(bytes::Bytes::from(vec![0u8; 8 << 20])).await?;
//! match upload.complete().await? {
//!     Put::Created => {}
//!     Put::Exists => { /* written by an earlier run: left as it was */ }
//! }
//! # Ok(())
//! # }
//! ```

mod key;
mod local;
mod parts;
mod s3;
mod settings;
mod store;

use std::sync::Arc;

use plexus_connector::ConnectorError;

pub use local::LocalStore;
pub use s3::S3Store;
pub use settings::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_UPLOAD_CONCURRENCY, StoreSettings,
    StoreUrl, fields,
};
pub use store::{MIN_PART_SIZE, ObjectMeta, ObjectStore, Put, Upload};

/// Opens the store `settings.url` names. For S3, checks that the bucket exists and
/// the credentials are accepted; for a directory, creates it if missing and checks it
/// is writable. Errors are fatal when the settings must change (a missing bucket,
/// refused credentials), retriable when the server could not be reached.
pub async fn open(settings: &StoreSettings) -> Result<Arc<dyn ObjectStore>, ConnectorError> {
    settings.validate()?;
    let url = StoreUrl::parse(&settings.url)
        .map_err(|e| ConnectorError::config(format!("object store setting `url` {e}")))?;
    Ok(match url {
        StoreUrl::S3 { bucket, prefix } => Arc::new(S3Store::open(settings, &bucket, &prefix).await?),
        StoreUrl::Local { root } => Arc::new(LocalStore::open(root).await?),
    })
}
