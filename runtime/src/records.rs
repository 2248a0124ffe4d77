//! The records a sink reads back from the log (to dead-letter a change it kept only the
//! origin of).

use async_trait::async_trait;
use std::sync::Arc;

use plexus_connector::{ConnectorError, Header, Records, SinkRecord};
use plexus_log::{Log, LogError, StoredRecord};

use crate::task::log_error;

/// Bytes read to find one record: the stored batch that holds it is read whole, so
/// this is only where the read starts small.
const FETCH_BYTES: usize = 64 << 10;

/// Records of the log, read one at a time.
#[derive(Debug)]
pub(crate) struct LogRecords {
    log: Log,
}

impl LogRecords {
    pub(crate) fn new(log: Log) -> LogRecords {
        LogRecords { log }
    }
}

#[async_trait]
impl Records for LogRecords {
    async fn get(&self, topic: &str, partition: u32, offset: i64) -> Result<Option<SinkRecord>, ConnectorError> {
        // Looked up, not opened: a topic deleted since is not created again.
        let Some(part) = self
            .log
            .topic(topic)
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition).cloned())
        else {
            return Ok(None);
        };
        let fetch = match part.read(offset, FETCH_BYTES).await {
            Ok(fetch) => fetch,
            Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
            Err(e) => return Err(log_error(e)),
        };
        for record in fetch.records() {
            let record = record.map_err(|e| ConnectorError::fatal(format!("decode a record of `{topic}`: {e}")))?;
            if record.offset == offset {
                return Ok(Some(sink_record(Arc::from(topic), partition, record)));
            }
            if record.offset > offset {
                break;
            }
        }
        Ok(None)
    }
}

/// A record read from the log, as sinks take it.
pub(crate) fn sink_record(topic: Arc<str>, partition: u32, record: StoredRecord) -> SinkRecord {
    SinkRecord {
        topic,
        partition,
        offset: record.offset,
        timestamp: record.timestamp,
        key: record.key,
        value: record.value,
        headers: record
            .headers
            .into_iter()
            .map(|h| Header {
                key: h.key.into(),
                value: h.value,
            })
            .collect(),
    }
}
