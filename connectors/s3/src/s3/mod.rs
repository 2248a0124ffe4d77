//! A bucket under a prefix, on AWS S3 or an S3-compatible server (aws-sdk-s3).
//!
//! Writes never replace an object: PutObject and CompleteMultipartUpload carry
//! `If-None-Match: *`, and the server answers 412 Precondition Failed when the key
//! exists ([`Put::Exists`]). On AWS S3 the check is atomic with the write, so two
//! writers of one key cannot both win. SeaweedFS checks before completing a multipart
//! upload, not atomically with it: conditional writes of one key are therefore also
//! serialised within the process (see `completion_lock`), and writers of one key in
//! different processes racing to complete within milliseconds can both succeed there.
//!
//! A write whose response is lost is retried by the SDK; if the first attempt had
//! succeeded, the retry meets the object it created and reports [`Put::Exists`]. For a
//! sink that names files deterministically this is the same outcome: the object under
//! the key holds what it wrote.
//!
//! Requests are retried by the SDK (standard mode: exponential backoff with jitter,
//! `max_attempts` in all) on throttling, 5xx answers, timeouts and lost connections;
//! `connect_timeout` and `request_timeout` bound every attempt, so a server that goes
//! away mid-upload gives a retriable error in bounded time.

mod completion_lock;
mod error;
mod upload;

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, ProvideCredentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use bytes::Bytes;
use plexus_connector::ConnectorError;
use tracing::{debug, info};

use self::completion_lock::CompletionLock;
use self::error::{S3Error, Target, classify, no_such_upload, put_precondition_failed};
use self::upload::S3Upload;
use crate::key::{check_key, check_prefix};
use crate::{ObjectMeta, ObjectStore, Put, StoreSettings, Upload};

/// A bucket under a prefix.
#[derive(Debug)]
pub struct S3Store {
    client: Client,
    target: Arc<Target>,
    /// Empty or ending with `/`.
    prefix: String,
    upload_concurrency: usize,
    list_page_size: i32,
}

impl S3Store {
    /// Connects to `bucket` and checks it is there and the credentials are accepted
    /// (HeadBucket).
    pub async fn open(settings: &StoreSettings, bucket: &str, prefix: &str) -> Result<S3Store, ConnectorError> {
        let (config, credentials) = client_config(settings).await?;
        let endpoint = match (&settings.endpoint, config.region()) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some(region)) => format!("AWS S3 (region {region})"),
            (None, None) => "AWS S3".to_owned(),
        };
        let store = S3Store {
            client: Client::from_conf(config),
            target: Arc::new(Target {
                bucket: bucket.to_owned(),
                endpoint,
                credentials,
            }),
            prefix: prefix.to_owned(),
            upload_concurrency: settings.upload_concurrency.max(1),
            list_page_size: i32::from(settings.list_page_size.clamp(1, 1000)),
        };
        store
            .client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| store.error(&format!("check bucket `{bucket}`"), e))?;
        info!(location = %store.location(), endpoint = %store.target.endpoint, "Object store opened.");
        Ok(store)
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn error<E>(&self, what: &str, error: S3Error<E>) -> ConnectorError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(&self.target, what, error)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.target.bucket, self.prefix)
    }

    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<Put, ConnectorError> {
        check_key(key)?;
        put_object_if_absent(&self.client, &self.target, &self.full_key(key), key, body).await
    }

    async fn start_upload(&self, key: &str) -> Result<Box<dyn Upload>, ConnectorError> {
        check_key(key)?;
        let full_key = self.full_key(key);
        let output = self
            .client
            .create_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| self.error(&format!("start the upload of `{key}`"), e))?;
        let upload_id = output
            .upload_id()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                ConnectorError::retriable(format!(
                    "start the upload of `{key}`: {} answered without an upload id",
                    self.target.endpoint
                ))
            })?
            .to_owned();
        debug!(key = %full_key, upload_id = %upload_id, "Upload started.");
        Ok(Box::new(S3Upload::new(
            self.client.clone(),
            Arc::clone(&self.target),
            full_key,
            key.to_owned(),
            upload_id,
            self.upload_concurrency,
        )))
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, ConnectorError> {
        check_key(key)?;
        let what = format!("read `{key}`");
        let output = match self
            .client
            .get_object()
            .bucket(&self.target.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(self.error(&what, e)),
        };
        let body = output.body.collect().await.map_err(|e| {
            ConnectorError::retriable(format!(
                "{what}: the connection to {} failed mid-body",
                self.target.endpoint
            ))
            .with_source(e)
        })?;
        Ok(Some(body.into_bytes()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ConnectorError> {
        check_prefix(prefix)?;
        let full_prefix = self.full_key(prefix);
        let what = format!("list `{prefix}`");
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.target.bucket)
                .prefix(&full_prefix)
                .max_keys(self.list_page_size)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.error(&what, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                // A "directory" marker some servers list is not an object a sink wrote.
                if key.is_empty() || key.ends_with('/') {
                    continue;
                }
                let size = object.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0);
                objects.push(ObjectMeta {
                    key: key.to_owned(),
                    size,
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            let next = page.next_continuation_token().map(str::to_owned);
            if next.is_none() || next == token {
                return Err(ConnectorError::retriable(format!(
                    "{what}: {} said the listing goes on but gave no new continuation token",
                    self.target.endpoint
                )));
            }
            token = next;
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn abort_uploads(&self, prefix: &str) -> Result<usize, ConnectorError> {
        check_prefix(prefix)?;
        let full_prefix = self.full_key(prefix);
        let what = format!("list the uploads under `{prefix}`");
        let mut leftovers = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.target.bucket)
                .prefix(&full_prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| self.error(&what, e))?;
            for upload in page.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    leftovers.push((key.to_owned(), id.to_owned()));
                }
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            let next = (
                page.next_key_marker().map(str::to_owned),
                page.next_upload_id_marker().map(str::to_owned),
            );
            if next.0.is_none() || next == (key_marker.clone(), id_marker.clone()) {
                return Err(ConnectorError::retriable(format!(
                    "{what}: {} said the listing goes on but gave no new marker",
                    self.target.endpoint
                )));
            }
            (key_marker, id_marker) = next;
        }
        let mut aborted = 0;
        for (key, upload_id) in leftovers {
            match self
                .client
                .abort_multipart_upload()
                .bucket(&self.target.bucket)
                .key(&key)
                .upload_id(&upload_id)
                .send()
                .await
            {
                Ok(_) => {
                    info!(key = %key, upload_id = %upload_id, "Aborted a leftover upload.");
                    aborted += 1;
                }
                // Completed or aborted by someone else meanwhile.
                Err(e) if no_such_upload(&e) => {}
                Err(e) => return Err(self.error(&format!("abort the leftover upload of `{key}`"), e)),
            }
        }
        Ok(aborted)
    }

    async fn delete(&self, key: &str) -> Result<(), ConnectorError> {
        check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.target.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error(&format!("delete `{key}`"), e))?;
        Ok(())
    }
}

/// PutObject with `If-None-Match: *`. `key` is the full key, `shown` the one for
/// messages.
async fn put_object_if_absent(
    client: &Client,
    target: &Target,
    key: &str,
    shown: &str,
    body: Bytes,
) -> Result<Put, ConnectorError> {
    let _lock = CompletionLock::acquire(&target.endpoint, &target.bucket, key).await;
    match client
        .put_object()
        .bucket(&target.bucket)
        .key(key)
        .if_none_match("*")
        .body(ByteStream::from(body))
        .send()
        .await
    {
        Ok(_) => Ok(Put::Created),
        Err(e) if put_precondition_failed(&e) => Ok(Put::Exists),
        Err(e) => Err(classify(target, &format!("write `{shown}`"), e)),
    }
}

/// The client's configuration, and how its credentials are named in messages.
async fn client_config(settings: &StoreSettings) -> Result<(aws_sdk_s3::Config, String), ConnectorError> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(settings.connect_timeout)
        .read_timeout(settings.request_timeout)
        .operation_attempt_timeout(settings.request_timeout)
        .build();
    let retries = RetryConfig::standard().with_max_attempts(settings.max_attempts.max(1));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(retries);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    } else if settings.endpoint.is_some() {
        loader = loader.region(Region::from_static("us-east-1"));
    }
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let from_settings = match (&settings.access_key_id, &settings.secret_access_key) {
        (Some(id), Some(secret)) => {
            let token = settings.session_token.as_ref().map(|t| t.expose().to_owned());
            loader = loader.credentials_provider(Credentials::new(id, secret.expose(), token, None, "plexus settings"));
            true
        }
        _ => false,
    };
    let sdk_config = loader.load().await;
    if sdk_config.region().is_none() {
        return Err(ConnectorError::config(
            "object store: no region for the bucket: set `region` (or AWS_REGION, or a region in the AWS profile)",
        ));
    }
    let provider = sdk_config.credentials_provider().ok_or_else(|| {
        ConnectorError::config("object store: no credentials: set `access_key_id` and `secret_access_key`")
    })?;
    // Resolved now, so that a missing key is reported at start and messages can name it.
    let credentials = provider.provide_credentials().await.map_err(|e| match e {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            ConnectorError::config(format!(
                "object store: no usable AWS credentials ({}): set `access_key_id` and `secret_access_key`, or \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws",
                error::chain(&e)
            ))
            .with_source(e)
        }
        other => ConnectorError::retriable(format!(
            "object store: loading the AWS credentials failed: {}",
            error::chain(&other)
        ))
        .with_source(other),
    })?;
    let shown = if from_settings {
        format!("access_key_id `{}`", credentials.access_key_id())
    } else {
        format!(
            "access key `{}` (from the AWS environment or profile)",
            credentials.access_key_id()
        )
    };
    let config = aws_sdk_s3::config::Builder::from(&sdk_config)
        .force_path_style(settings.path_style)
        .build();
    Ok((config, shown))
}
