//! `plexus-log`: the central, durable, partitioned log of plexus.
//!
//! Every connector reads and writes this log. It stores Kafka **record batch v2** in
//! segment files (so a Kafka client can later be served by copying bytes), keeps sparse
//! offset and time indexes, recovers from crashes by checking the tail batch by batch,
//! and offers what exactly-once delivery needs: producer positions stored atomically with
//! the data, and consumer-group offsets stored durably.
//!
//! ```no_run
//! # async fn demo() -> Result<(), plexus_log::LogError> {
//! use plexus_log::{BatchBuilder, Compression, Log, LogConfig, TopicConfig};
//!
//! let log = Log::open(LogConfig::new("./data")).await?;
//! let topic = log.create_topic("orders", TopicConfig { partitions: 3, ..TopicConfig::default() }).await?;
//! let partition = topic.partition(0)?;
//!
//! let mut batch = BatchBuilder::new(Compression::Zstd);
//! batch.push(1_700_000_000_000, Some(b"order-1"), Some(br#"{"total": 12.5}"#), &[]);
//! let outcome = partition.append(&mut batch).await?;
//!
//! let fetch = partition.read(0, 1 << 20).await?;
//! for record in fetch.records() {
//!     let record = record?;
//!     println!("{} {:?}", record.offset, record.value);
//! }
//! # Ok(()) }
//! ```
//!
//! Durability is chosen per topic with [`FsyncPolicy`]; its documentation says what each
//! policy survives.

pub mod batch;
mod config;
mod error;
mod fetch;
mod fsutil;
mod groups;
mod index;
mod log;
mod partition;
mod position;
mod segment;
mod stats;

pub use batch::{Batch, BatchBuilder, BatchError, Compression, Header, Record, StoredRecord};
pub use config::{CleanupPolicy, FsyncPolicy, LogConfig, TopicConfig};
pub use error::{LogError, Result};
pub use fetch::Fetch;
pub use groups::{CommittedOffset, ConsumerGroups, GROUPS_TOPIC};
pub use log::{Log, Topic};
pub use partition::{AppendOutcome, CompactionReport, Partition, RetentionReport, seal_with_position};
pub use position::{POSITION_HEADER, Position, ProducerEntry, ProducerId};
pub use stats::{HistogramSnapshot, LATENCY_BUCKETS, LatencyHistogram, PartitionStats};
