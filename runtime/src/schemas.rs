//! The schemas sinks look up: read from the log's `__schemas` topic, cached.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use plexus_connector::{ConnectorError, SCHEMAS_TOPIC, Schemas};
use plexus_log::Log;
use tokio::sync::Mutex;

use crate::task::log_error;

/// Bytes read from `__schemas` at a time.
const FETCH_BYTES: usize = 1 << 20;

/// Schemas registered in the log. A lookup that misses reads what was appended to
/// `__schemas` since the last one: sources register a version before the first record
/// that names it, so a sink that sees a new id finds it there.
#[derive(Debug)]
pub(crate) struct LogSchemas {
    log: Log,
    state: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    documents: HashMap<String, Bytes>,
    /// The next offset to read, per partition of `__schemas`.
    next: HashMap<u32, i64>,
}

impl LogSchemas {
    pub(crate) fn new(log: Log) -> LogSchemas {
        LogSchemas {
            log,
            state: Mutex::new(Cache::default()),
        }
    }
}

#[async_trait]
impl Schemas for LogSchemas {
    async fn get(&self, id: &str) -> Result<Option<Bytes>, ConnectorError> {
        let mut cache = self.state.lock().await;
        if let Some(document) = cache.documents.get(id) {
            return Ok(Some(document.clone()));
        }
        let Some(topic) = self.log.topic(SCHEMAS_TOPIC) else {
            return Ok(None);
        };
        for partition in topic.partitions() {
            let mut next = cache
                .next
                .get(&partition.id())
                .copied()
                .unwrap_or_else(|| partition.start_offset())
                .max(partition.start_offset());
            while next < partition.end_offset() {
                let fetch = partition.read(next, FETCH_BYTES).await.map_err(log_error)?;
                for record in fetch.records() {
                    let record = record
                        .map_err(|e| ConnectorError::fatal(format!("decode a record of `{SCHEMAS_TOPIC}`: {e}")))?;
                    let (Some(key), Some(value)) = (record.key, record.value) else {
                        continue;
                    };
                    if let Ok(key) = std::str::from_utf8(&key) {
                        cache.documents.insert(key.to_owned(), value);
                    }
                }
                if fetch.next_offset() <= next {
                    break;
                }
                next = fetch.next_offset();
            }
            cache.next.insert(partition.id(), next);
        }
        Ok(cache.documents.get(id).cloned())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use plexus_log::{BatchBuilder, Compression, LogConfig, TopicConfig};

    use super::*;

    async fn register(log: &Log, id: &str, document: &str) {
        let partition = log.partition(SCHEMAS_TOPIC, 0).await.unwrap();
        let mut batch = BatchBuilder::new(Compression::None);
        batch.push(0, Some(id.as_bytes()), Some(document.as_bytes()), &[]);
        partition.append(&mut batch).await.unwrap();
    }

    #[tokio::test]
    async fn finds_versions_registered_before_and_after_the_first_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(LogConfig::new(dir.path())).await.unwrap();
        let schemas = LogSchemas::new(log.clone());
        // No topic yet: nothing known, no error.
        assert_eq!(schemas.get("a").await.unwrap(), None);

        log.create_topic(SCHEMAS_TOPIC, TopicConfig::default()).await.unwrap();
        register(&log, "a", r#"{"id":"a"}"#).await;
        assert_eq!(schemas.get("a").await.unwrap().as_deref(), Some(&br#"{"id":"a"}"#[..]));
        assert_eq!(schemas.get("b").await.unwrap(), None);

        // Registered after a miss: the next lookup reads on from where the last stopped.
        register(&log, "b", r#"{"id":"b"}"#).await;
        assert_eq!(schemas.get("b").await.unwrap().as_deref(), Some(&br#"{"id":"b"}"#[..]));
        assert_eq!(schemas.get("a").await.unwrap().as_deref(), Some(&br#"{"id":"a"}"#[..]));
    }
}
