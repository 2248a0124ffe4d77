//! Dead letters: records a connector could not process, routed by its error policy.
//!
//! Connectors hand letters over synchronously; they wait in a small buffer that the
//! task drains into the dead-letter topic after each poll or write, before it commits
//! the batch's position or offsets, so a letter is never lost behind a commit.

use std::sync::Arc;

use parking_lot::Mutex;
use plexus_config::{ErrorPolicy, ErrorTolerance};
use plexus_connector::{ConnectorError, DeadLetter, DeadLetters};
use plexus_log::{BatchBuilder, Compression, Log};

use crate::now_ms;

/// Header names on dead-letter records.
pub const HEADER_CONNECTOR: &str = "plexus.dlq.connector";
pub const HEADER_REASON: &str = "plexus.dlq.reason";
pub const HEADER_ORIGIN: &str = "plexus.dlq.origin";

/// A connector's dead-letter queue.
#[derive(Debug)]
pub(crate) struct DeadLetterQueue {
    policy: ErrorPolicy,
    pending: Mutex<Vec<(String, DeadLetter)>>,
}

impl DeadLetterQueue {
    pub fn new(policy: ErrorPolicy) -> Arc<Self> {
        Arc::new(DeadLetterQueue {
            policy,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Appends the pending letters to the dead-letter topic.
    pub async fn drain(&self, log: &Log) -> Result<usize, ConnectorError> {
        let letters = std::mem::take(&mut *self.pending.lock());
        if letters.is_empty() {
            return Ok(0);
        }
        let partition = log.partition(&self.policy.dead_letter_topic, 0).await.map_err(|e| {
            ConnectorError::retriable(format!("open dead-letter topic `{}`", self.policy.dead_letter_topic))
                .with_source(e)
        })?;
        let mut batch = BatchBuilder::new(Compression::None);
        for (connector, letter) in &letters {
            batch.push(
                now_ms(),
                letter.key.as_deref(),
                letter.payload.as_deref(),
                &[
                    (HEADER_CONNECTOR, Some(connector.as_bytes())),
                    (HEADER_REASON, Some(letter.reason.as_bytes())),
                    (HEADER_ORIGIN, Some(letter.origin.as_bytes())),
                ],
            );
        }
        partition
            .append(&mut batch)
            .await
            .map_err(|e| ConnectorError::retriable("append to the dead-letter topic").with_source(e))?;
        Ok(letters.len())
    }
}

impl DeadLetters for DeadLetterQueue {
    fn send(&self, connector: &str, letter: DeadLetter) -> Result<(), ConnectorError> {
        match self.policy.tolerance {
            ErrorTolerance::Fail => Err(ConnectorError::fatal(format!(
                "connector `{connector}` cannot process the record at {}: {}; set `errors.tolerance = \"dead-letter\"` to send such records to `{}` instead",
                letter.origin, letter.reason, self.policy.dead_letter_topic
            ))),
            ErrorTolerance::DeadLetter => {
                tracing::warn!(connector, origin = %letter.origin, reason = %letter.reason, "Record sent to the dead-letter topic.");
                self.pending.lock().push((connector.to_owned(), letter));
                Ok(())
            }
        }
    }
}
