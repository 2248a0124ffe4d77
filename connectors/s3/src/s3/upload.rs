//! A multipart upload: parts go up in background tasks, at most `concurrency` at a
//! time, and the completion is conditional (`If-None-Match: *`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use plexus_connector::ConnectorError;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::completion_lock::CompletionLock;
use super::error::{Target, classify, complete_precondition_failed, no_such_upload};
use super::put_object_if_absent;
use crate::parts::PartSequence;
use crate::{Put, Upload};

/// How long a clean-up abort after a failure may take: the error it follows matters
/// more, and `abort_uploads` finds whatever is left.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(5);

type PartTask = JoinHandle<Result<CompletedPart, ConnectorError>>;

/// One multipart upload in progress.
#[derive(Debug)]
pub(super) struct S3Upload {
    client: Client,
    target: Arc<Target>,
    /// The key in the bucket, prefix included.
    key: String,
    /// The key relative to the store's prefix, for messages.
    shown: String,
    upload_id: String,
    concurrency: usize,
    parts: PartSequence,
    /// Oldest first.
    in_flight: VecDeque<PartTask>,
    stored: Vec<CompletedPart>,
    /// A part failed: completing would make an object with a hole.
    failed: bool,
    /// Completed or aborted: nothing left to clean up on drop.
    finished: bool,
}

impl S3Upload {
    pub(super) fn new(
        client: Client,
        target: Arc<Target>,
        key: String,
        shown: String,
        upload_id: String,
        concurrency: usize,
    ) -> S3Upload {
        S3Upload {
            client,
            target,
            key,
            shown,
            upload_id,
            concurrency: concurrency.max(1),
            parts: PartSequence::default(),
            in_flight: VecDeque::new(),
            stored: Vec::new(),
            failed: false,
            finished: false,
        }
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn put_part(&mut self, part: Bytes) -> Result<(), ConnectorError> {
        self.check_usable()?;
        if part.is_empty() {
            return Ok(());
        }
        let number = self.parts.next(&self.shown, part.len())?;
        while self.in_flight.len() >= self.concurrency {
            self.wait_oldest().await?;
        }
        let task = tokio::spawn(upload_part(
            self.client.clone(),
            Arc::clone(&self.target),
            self.key.clone(),
            self.shown.clone(),
            self.upload_id.clone(),
            number,
            part,
        ));
        self.in_flight.push_back(task);
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<Put, ConnectorError> {
        if let Err(error) = self.check_usable() {
            self.cleanup().await;
            return Err(error);
        }
        while !self.in_flight.is_empty() {
            if let Err(error) = self.wait_oldest().await {
                self.cleanup().await;
                return Err(error);
            }
        }
        if self.stored.is_empty() {
            // S3 completes no upload without a part: an empty object is one PutObject,
            // just as conditional.
            let put = put_object_if_absent(&self.client, &self.target, &self.key, &self.shown, Bytes::new()).await;
            self.cleanup().await;
            return put;
        }
        self.stored.sort_by_key(|p| p.part_number());
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(std::mem::take(&mut self.stored)))
            .build();
        let lock = CompletionLock::acquire(&self.target.endpoint, &self.target.bucket, &self.key).await;
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(parts)
            .if_none_match("*")
            .send()
            .await;
        drop(lock);
        match result {
            Ok(_) => {
                self.finished = true;
                debug!(key = %self.key, bytes = self.parts.bytes(), parts = self.parts.count(), "Upload completed.");
                Ok(Put::Created)
            }
            Err(e) if complete_precondition_failed(&e) => {
                debug!(key = %self.key, "Upload not completed: the key exists.");
                self.cleanup().await;
                Ok(Put::Exists)
            }
            Err(e) => {
                let error = classify(&self.target, &format!("complete the upload of `{}`", self.shown), e);
                self.cleanup().await;
                Err(error)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), ConnectorError> {
        self.stop_parts().await;
        self.finished = true;
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if no_such_upload(&e) => Ok(()),
            Err(e) => Err(classify(
                &self.target,
                &format!("abort the upload of `{}`", self.shown),
                e,
            )),
        }
    }

    fn bytes(&self) -> u64 {
        self.parts.bytes()
    }
}

impl S3Upload {
    fn check_usable(&self) -> Result<(), ConnectorError> {
        if self.failed {
            return Err(ConnectorError::fatal(format!(
                "upload of `{}`: a part failed earlier; abort the upload and start again",
                self.shown
            )));
        }
        Ok(())
    }

    /// Waits for the oldest part in flight; a failure marks the whole upload failed.
    async fn wait_oldest(&mut self) -> Result<(), ConnectorError> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let result = match task.await {
            Ok(result) => result,
            Err(e) => Err(ConnectorError::retriable(format!(
                "upload of `{}`: a part's task ended abnormally: {e}",
                self.shown
            ))),
        };
        match result {
            Ok(part) => {
                self.stored.push(part);
                Ok(())
            }
            Err(error) => {
                self.failed = true;
                Err(error)
            }
        }
    }

    /// Cancels the parts in flight and waits until they are gone, so none lands after
    /// an abort.
    async fn stop_parts(&mut self) {
        for task in &self.in_flight {
            task.abort();
        }
        while let Some(task) = self.in_flight.pop_front() {
            let _ = task.await;
        }
    }

    /// After a failure or a refused completion: drops the upload on the server, once
    /// and briefly. What is left is for [`crate::ObjectStore::abort_uploads`].
    async fn cleanup(&mut self) {
        self.stop_parts().await;
        self.finished = true;
        let abort = self
            .client
            .abort_multipart_upload()
            .bucket(&self.target.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::new().retry_config(RetryConfig::disabled()))
            .send();
        match tokio::time::timeout(CLEANUP_TIMEOUT, abort).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if no_such_upload(&e) => {}
            Ok(Err(e)) => warn!(
                key = %self.key,
                upload_id = %self.upload_id,
                error = %super::error::chain(&e),
                "Could not abort the upload; abort_uploads will."
            ),
            Err(_) => {
                warn!(key = %self.key, upload_id = %self.upload_id, "Aborting the upload timed out; abort_uploads will.")
            }
        }
    }
}

impl Drop for S3Upload {
    /// A dropped upload stops sending parts; the upload itself stays on the server
    /// (a drop cannot wait for a request) until `abort_uploads`.
    fn drop(&mut self) {
        for task in &self.in_flight {
            task.abort();
        }
        if !self.finished {
            debug!(key = %self.key, upload_id = %self.upload_id, "Upload dropped unfinished; abort_uploads removes it.");
        }
    }
}

async fn upload_part(
    client: Client,
    target: Arc<Target>,
    key: String,
    shown: String,
    upload_id: String,
    number: i32,
    body: Bytes,
) -> Result<CompletedPart, ConnectorError> {
    let output = client
        .upload_part()
        .bucket(&target.bucket)
        .key(&key)
        .upload_id(&upload_id)
        .part_number(number)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| classify(&target, &format!("upload part {number} of `{shown}`"), e))?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(output.e_tag().map(str::to_owned))
        .build())
}
