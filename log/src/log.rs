//! The embedded log: a locked data directory of topics, each with its partitions.
//!
//! ```text
//! data_dir/
//!   .lock                               held (flock) while a process has the log open
//!   topics/<topic>/topic.json           the topic's settings
//!   topics/<topic>/<partition>/
//!     00000000000000000000.log          record batches (Kafka record batch v2)
//!     00000000000000000000.index        sparse offset index (sealed segments)
//!     00000000000000000000.timeindex    sparse time index (sealed segments)
//!     00000000000000004096.producers    producer positions as of that segment's start
//!     recovery-point                    everything before this offset was fsynced
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::config::{CleanupPolicy, FsyncPolicy, LogConfig, TopicConfig};
use crate::error::{IoContext, LogError, Result};
use crate::fsutil;
use crate::groups::{ConsumerGroups, GROUPS_TOPIC};
use crate::partition::{Partition, now_ms};

/// A topic: a name, its settings, and its partitions.
#[derive(Debug)]
pub struct Topic {
    name: String,
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    pub fn partition(&self, id: u32) -> Result<&Arc<Partition>> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| LogError::UnknownPartition {
                topic: self.name.clone(),
                partition: id,
                partitions: self.partitions.len() as u32,
            })
    }
}

/// The embedded log. Cheap to clone; all clones share one open data directory.
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LogConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    groups: ConsumerGroups,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Held until the log is closed or dropped; closing the file releases the lock.
    lock: parking_lot::Mutex<Option<File>>,
}

#[derive(Serialize, Deserialize)]
struct TopicMetadata {
    name: String,
    config: TopicConfig,
}

impl Log {
    /// Opens (creating if needed) the log in `config.data_dir`, recovering every
    /// partition, and starts background retention, compaction and interval flushes.
    pub async fn open(config: LogConfig) -> Result<Log> {
        let opened = tokio::task::spawn_blocking(move || Inner::open(config))
            .await
            .map_err(|e| LogError::io("open", "data directory", std::io::Error::other(e.to_string())))??;
        let log = Log {
            inner: Arc::new(opened),
        };
        log.start_background();
        Ok(log)
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// Creates a topic; fails if it exists.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>> {
        let inner = Arc::clone(&self.inner);
        let name = name.to_owned();
        let topic = tokio::task::spawn_blocking(move || inner.create_topic(&name, config))
            .await
            .map_err(|e| LogError::io("create topic", "data directory", std::io::Error::other(e.to_string())))??;
        self.start_flusher(&topic);
        Ok(topic)
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.inner.topics.read().get(name).cloned()
    }

    /// Topic names in order (internal topics, starting with `__`, included).
    pub fn topic_names(&self) -> Vec<String> {
        self.inner.topics.read().keys().cloned().collect()
    }

    /// A partition of an existing topic, or of a topic created now with the default
    /// settings when `auto_create_topics` is on.
    pub async fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let found = match self.topic(topic) {
            Some(found) => found,
            None if self.inner.config.auto_create_topics => {
                match self.create_topic(topic, self.inner.config.default_topic.clone()).await {
                    Ok(created) => created,
                    // Another task created it meanwhile.
                    Err(LogError::TopicExists(_)) => {
                        self.topic(topic).ok_or_else(|| LogError::UnknownTopic(topic.into()))?
                    }
                    Err(err) => return Err(err),
                }
            }
            None => return Err(LogError::UnknownTopic(topic.to_owned())),
        };
        found.partition(partition).cloned()
    }

    /// Committed consumer-group offsets.
    pub fn groups(&self) -> &ConsumerGroups {
        &self.inner.groups
    }

    /// Runs retention (delete topics) and compaction (compacted topics) once, now.
    pub async fn run_cleanup(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.cleanup())
            .await
            .map_err(|e| LogError::io("clean up", "data directory", std::io::Error::other(e.to_string())))?
    }

    /// Flushes every partition, records recovery points, stops background work and
    /// releases the data directory.
    /// Dropping the log without closing is safe too; the next open scans more.
    pub async fn close(self) -> Result<()> {
        for task in self.inner.tasks.lock().drain(..) {
            task.abort();
        }
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let topics: Vec<_> = inner.topics.read().values().cloned().collect();
            for topic in topics {
                for partition in topic.partitions() {
                    partition.close_blocking()?;
                }
            }
            // Another process may open the directory now, even while clones of this
            // handle live on (a worker that shut down but is still referenced).
            inner.lock.lock().take();
            Ok(())
        })
        .await
        .map_err(|e| LogError::io("close", "data directory", std::io::Error::other(e.to_string())))?
    }

    fn start_background(&self) {
        let weak = Arc::downgrade(&self.inner);
        let interval = self.inner.config.cleanup_interval;
        let cleanup = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let done = tokio::task::spawn_blocking(move || inner.cleanup()).await;
                if let Ok(Err(err)) = done {
                    tracing::warn!(error = %err, "Background cleanup failed; retrying at the next interval.");
                }
            }
        });
        self.inner.tasks.lock().push(cleanup);
        let topics: Vec<_> = self.inner.topics.read().values().cloned().collect();
        for topic in topics {
            self.start_flusher(&topic);
        }
    }

    /// For topics with an interval fsync policy, a task that flushes every interval.
    fn start_flusher(&self, topic: &Arc<Topic>) {
        let FsyncPolicy::Interval { interval } = topic.config().fsync else {
            return;
        };
        let weak: Weak<Topic> = Arc::downgrade(topic);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(topic) = weak.upgrade() else { return };
                for partition in topic.partitions() {
                    if let Err(err) = partition.flush().await {
                        tracing::error!(topic = %topic.name(), partition = partition.id(), error = %err, "Interval flush failed.");
                    }
                }
            }
        });
        self.inner.tasks.lock().push(task);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

impl Inner {
    fn open(config: LogConfig) -> Result<Inner> {
        let dir = &config.data_dir;
        fs::create_dir_all(dir).ctx("create data directory", dir)?;
        let lock = lock_data_dir(dir)?;
        let topics_dir = dir.join("topics");
        fs::create_dir_all(&topics_dir).ctx("create directory", &topics_dir)?;
        let mut topics = BTreeMap::new();
        for entry in fs::read_dir(&topics_dir).ctx("list topics in", &topics_dir)? {
            let entry = entry.ctx("list topics in", &topics_dir)?;
            let meta_path = entry.path().join("topic.json");
            if !meta_path.exists() {
                continue;
            }
            let bytes = fs::read(&meta_path).ctx("read", &meta_path)?;
            let meta: TopicMetadata = serde_json::from_slice(&bytes).map_err(|e| LogError::BadMetadata {
                path: meta_path.clone(),
                reason: e.to_string(),
            })?;
            let topic = open_topic(&entry.path(), &meta.name, meta.config)?;
            topics.insert(meta.name, Arc::new(topic));
        }
        if !topics.contains_key(GROUPS_TOPIC) {
            let topic = create_topic_files(dir, GROUPS_TOPIC, TopicConfig::compacted())?;
            topics.insert(GROUPS_TOPIC.to_owned(), Arc::new(topic));
        }
        let groups_partition = Arc::clone(&topics[GROUPS_TOPIC].partitions()[0]);
        let groups = ConsumerGroups::load(groups_partition)?;
        tracing::info!(data_dir = %dir.display(), topics = topics.len(), "Log opened.");
        Ok(Inner {
            config,
            topics: RwLock::new(topics),
            groups,
            tasks: Mutex::new(Vec::new()),
            lock: parking_lot::Mutex::new(Some(lock)),
        })
    }

    fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        config.validate(name)?;
        let mut topics = self.topics.write();
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_owned()));
        }
        let topic = Arc::new(create_topic_files(&self.config.data_dir, name, config)?);
        topics.insert(name.to_owned(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions = topic.partitions.len(), "Topic created.");
        Ok(topic)
    }

    fn cleanup(&self) -> Result<()> {
        let topics: Vec<_> = self.topics.read().values().cloned().collect();
        let now = now_ms();
        for topic in topics {
            for partition in topic.partitions() {
                match topic.config().cleanup_policy {
                    CleanupPolicy::Delete => {
                        partition.enforce_retention(now)?;
                    }
                    CleanupPolicy::Compact => {
                        partition.compact(now)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn create_topic_files(data_dir: &Path, name: &str, config: TopicConfig) -> Result<Topic> {
    let dir = topic_dir(data_dir, name);
    fs::create_dir_all(&dir).ctx("create topic directory", &dir)?;
    let meta = TopicMetadata {
        name: name.to_owned(),
        config: config.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| LogError::BadMetadata {
        path: dir.join("topic.json"),
        reason: e.to_string(),
    })?;
    let topic = open_topic(&dir, name, config)?;
    // Written last: a topic without its metadata file is ignored (and overwritten) on open.
    fsutil::write_atomic(&dir.join("topic.json"), &bytes)?;
    Ok(topic)
}

fn open_topic(dir: &Path, name: &str, config: TopicConfig) -> Result<Topic> {
    let partitions = (0..config.partitions)
        .map(|id| Partition::open(name, id, &dir.join(id.to_string()), config.clone()).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    Ok(Topic {
        name: name.to_owned(),
        config,
        partitions,
    })
}

fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("topics").join(name)
}

/// Kafka's rule: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn validate_topic_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 249 {
        Some("it is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not allowed")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        Some("only letters, digits, `.`, `_` and `-` are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(LogError::InvalidTopicName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Takes an exclusive lock on `data_dir/.lock` and writes our pid into it.
fn lock_data_dir(dir: &Path) -> Result<File> {
    let path = dir.join(".lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .ctx("open lock file", &path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            tracing::error!(lock = %path.display(), holder = holder.trim(), "Data directory is locked.");
            return Err(LogError::DataDirLocked {
                path: dir.to_owned(),
                lock: path,
            });
        }
        Err(fs::TryLockError::Error(err)) => return Err(LogError::io("lock", path, err)),
    }
    file.set_len(0).ctx("write lock file", &path)?;
    file.rewind().ctx("write lock file", &path)?;
    writeln!(file, "pid {}", std::process::id()).ctx("write lock file", &path)?;
    Ok(file)
}
