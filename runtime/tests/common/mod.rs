//! What the PostgreSQL end-to-end tests of `plexus run` share.

use std::path::Path;

use plexus_log::{Log, LogConfig};
use serde_json::Value;

/// Every record of `topic` (partition 0), in log order, values parsed as JSON
/// (tombstones as `None`).
pub async fn records(data: &Path, topic: &str) -> Vec<(String, Option<Value>)> {
    let log = Log::open(LogConfig::new(data)).await.unwrap();
    let mut out = Vec::new();
    if let Some(topic) = log.topic(topic) {
        let p = topic.partition(0).unwrap();
        let mut offset = 0;
        loop {
            let fetch = p.read(offset, 1 << 20).await.unwrap();
            if fetch.is_empty() {
                break;
            }
            for r in fetch.records() {
                let r = r.unwrap();
                let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                out.push((key, r.value.map(|v| serde_json::from_slice(&v).unwrap())));
            }
            offset = fetch.next_offset();
        }
    }
    log.close().await.unwrap();
    out
}
