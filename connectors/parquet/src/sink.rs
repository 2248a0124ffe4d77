//! The running `parquet` sink: records in, commit units out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{RecordBatch, UInt32Array};
use parquet::file::properties::WriterProperties;
use plexus_connector::{
    ConnectorError, DeadLetter, SCHEMA_HEADER, SCHEMA_WAIT, Sink, SinkContext, SinkOffsets, SinkRecord, TopicPartition,
    async_trait,
};
use plexus_connector_s3::{ObjectMeta, ObjectStore, Put, StoreSettings, Upload};

use crate::config::ParquetSinkConfig;
use crate::decode::Decoded;
use crate::error::ParquetError;
use crate::keys::{KeyParts, Partitioner};
use crate::parallel::SplitDecoder;
use crate::schema::{DECLARED_SCHEMA_ID, TableSchema};
use crate::unit::{CommitUnit, Manifest, Replay, Written, manifest_key, manifest_prefix, parse_manifest_key};
use crate::writer::{ParquetFile, writer_properties};

/// Records per decode: bounds the decoder's tape and the batches handed to the encoder.
const CHUNK: usize = 8192;

/// Lands records as Parquet files in an object store, exactly once (see [`crate::unit`]).
pub struct ParquetSink {
    config: ParquetSinkConfig,
    store: Arc<dyn ObjectStore>,
    /// Set when the store is opened by `start` (opening is async, creation is not).
    store_settings: Option<StoreSettings>,
    properties: WriterProperties,
    partitioner: Partitioner,
    connector: String,
    schemas: HashMap<String, Schema>,
    /// Schema ids waited for in vain (see [`SCHEMA_WAIT`]).
    missing_schemas: HashSet<String>,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    durable: SinkOffsets,
    /// Topics whose leftover uploads were aborted.
    cleaned: HashSet<String>,
    /// A failure left units half finished: only a restart (and its recovery) may go on.
    broken: bool,
    /// What the units finished by this run wrote, by topic.
    written: BTreeMap<String, Written>,
}

struct Schema {
    decoder: SplitDecoder,
}

/// What the sink knows of one TP.
#[derive(Debug, Default)]
struct PartitionState {
    /// Where the next unit starts: the end of the last finished one, or the resume point.
    start: Option<i64>,
    /// The offset after every record given so far (records and flush offsets).
    next: Option<i64>,
    unit: Option<CommitUnit>,
    /// Set by `start` for a unit a crash interrupted after its manifest.
    replay: Option<Replay>,
    /// The manifest of the last finished unit, removed once the next one is complete.
    manifest: Option<String>,
}

impl std::fmt::Debug for ParquetSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSink")
            .field("store", &self.store.location())
            .field("connector", &self.connector)
            .field("partitions", &self.partitions)
            .field("durable", &self.durable)
            .finish_non_exhaustive()
    }
}

impl ParquetSink {
    /// A sink writing into `store`.
    pub fn new(config: ParquetSinkConfig, store: Arc<dyn ObjectStore>) -> ParquetSink {
        ParquetSink {
            store_settings: None,
            properties: writer_properties(&config),
            partitioner: Partitioner::new(config.partition_by.clone(), config.time_partition.clone()),
            config,
            store,
            connector: String::new(),
            schemas: HashMap::new(),
            missing_schemas: HashSet::new(),
            partitions: BTreeMap::new(),
            durable: SinkOffsets::new(),
            cleaned: HashSet::new(),
            broken: false,
            written: BTreeMap::new(),
        }
    }

    /// A sink writing into the store `settings` name, opened by [`Sink::start`].
    pub fn with_store_settings(config: ParquetSinkConfig, settings: StoreSettings) -> ParquetSink {
        let mut sink = ParquetSink::new(config, Arc::new(Unopened));
        sink.store_settings = Some(settings);
        sink
    }

    /// Bytes all open files hold in memory (what `memory_budget` limits).
    pub fn buffered(&self) -> u64 {
        self.partitions
            .values()
            .filter_map(|p| p.unit.as_ref())
            .map(CommitUnit::buffered)
            .sum()
    }

    /// Files open now, over all partitions.
    pub fn open_files(&self) -> usize {
        self.partitions
            .values()
            .filter_map(|p| p.unit.as_ref())
            .map(CommitUnit::file_count)
            .sum()
    }

    /// What the units this sink finished wrote, by topic: files, rows and bytes made
    /// visible (counted once their unit is complete; a replay counts the files it
    /// completes or finds complete).
    pub fn written(&self) -> &BTreeMap<String, Written> {
        &self.written
    }

    /// Resolves the schemas that `records` name and are not known yet.
    async fn load_schemas(&mut self, ctx: &SinkContext, records: &[SinkRecord]) -> Result<(), ConnectorError> {
        let mut missing: Vec<String> = Vec::new();
        for record in records {
            if let Some(id) = schema_id(record)
                && !self.schemas.contains_key(id)
                && !missing.iter().any(|m| m == id)
            {
                missing.push(id.to_owned());
            }
        }
        if !self.schemas.contains_key(DECLARED_SCHEMA_ID)
            && let Some(table) = &self.config.columns
        {
            self.add_schema(Arc::clone(table))?;
        }
        for id in missing {
            // A missing schema is waited for before its records go to the dead letters
            // (an id waited for in vain is only looked up again).
            let wait = if self.missing_schemas.contains(&id) {
                Duration::ZERO
            } else {
                SCHEMA_WAIT
            };
            let Some(document) = ctx.wait_for_schema(&id, wait).await? else {
                self.missing_schemas.insert(id);
                continue;
            };
            match TableSchema::from_document(&id, &document) {
                Ok(table) => self.add_schema(Arc::new(table))?,
                Err(e) => {
                    tracing::warn!(connector = %self.connector, schema = %id, error = %e, "Unusable schema; its records go to the dead letters.")
                }
            }
        }
        Ok(())
    }

    fn add_schema(&mut self, table: Arc<TableSchema>) -> Result<(), ParquetError> {
        let decoder = SplitDecoder::for_machine(&table, self.config.envelope)?;
        self.schemas.insert(table.id.clone(), Schema { decoder });
        Ok(())
    }

    /// Writes the records of one TP, in offset order, cutting units where they must end.
    async fn write_partition(
        &mut self,
        ctx: &SinkContext,
        tp: &TopicPartition,
        records: &[&SinkRecord],
    ) -> Result<(), ConnectorError> {
        let mut i = 0;
        while i < records.len() {
            let state = self.partitions.entry(tp.clone()).or_default();
            // Records before what was already given (a redelivery) are dropped.
            if let Some(next) = state.next
                && records[i].offset < next
            {
                i += 1;
                continue;
            }
            let offset = records[i].offset;
            if state.unit.is_none()
                && let Some(replay) = state.replay.take_if(|r| offset >= r.manifest.end)
            {
                // The log no longer holds the records of the interrupted unit (retention
                // or compaction removed them): its missing files cannot be made again.
                tracing::warn!(connector = %self.connector, topic = %tp.topic, partition = tp.partition, start = replay.manifest.start, end = replay.manifest.end, "The records of an interrupted unit are gone from the log; its missing files cannot be recreated.");
                state.start = Some(replay.manifest.end);
            }
            if let Some(unit) = &state.unit {
                let end = match &unit.replay {
                    Some(replay) if offset >= replay.manifest.end => Some(replay.manifest.end),
                    Some(_) => None,
                    None => unit.full(&self.config).map(|_| offset),
                };
                if let Some(end) = end {
                    self.finish_unit(tp, end).await?;
                    continue;
                }
            }
            let state = self.partitions.entry(tp.clone()).or_default();
            let unit = match &mut state.unit {
                Some(unit) => unit,
                None => {
                    let start = state.start.unwrap_or(offset);
                    state.unit.insert(CommitUnit::new(start, state.replay.take()))
                }
            };
            // The segment ends where the unit must: a replay's end, the record limit.
            let limit = match &unit.replay {
                Some(replay) => records[i..].partition_point(|r| r.offset < replay.manifest.end),
                None => {
                    let room = self.config.rotate_records.saturating_sub(unit.records).max(1);
                    usize::try_from(room).unwrap_or(usize::MAX)
                }
            };
            let end = i + limit.min(CHUNK).min(records.len() - i);
            let end = end.max(i + 1);
            self.write_segment(ctx, tp, &records[i..end]).await?;
            i = end;
        }
        Ok(())
    }

    /// Decodes a segment (all in the current unit of `tp`) and writes its rows.
    async fn write_segment(
        &mut self,
        ctx: &SinkContext,
        tp: &TopicPartition,
        records: &[&SinkRecord],
    ) -> Result<(), ConnectorError> {
        // Group by schema, keeping order within each.
        let mut groups: Vec<(Option<&str>, Vec<&SinkRecord>)> = Vec::new();
        for &record in records {
            if record.value.is_none() {
                continue; // A tombstone: nothing to land.
            }
            let id = schema_id(record).or(self.config.columns.as_ref().map(|_| DECLARED_SCHEMA_ID));
            match groups.iter_mut().find(|(g, _)| *g == id) {
                Some((_, group)) => group.push(record),
                None => {
                    let mut group = Vec::with_capacity(records.len());
                    group.push(record);
                    groups.push((id, group));
                }
            }
        }
        for (id, group) in groups {
            let Some(id) = id.filter(|id| self.schemas.contains_key(*id)) else {
                let reason = match id {
                    Some(id) => format!("schema `{id}` is not registered or cannot be used"),
                    None => format!("no `{SCHEMA_HEADER}` header, and no `columns` setting declares a schema"),
                };
                for record in group {
                    dead_letter(ctx, record, &reason)?;
                }
                continue;
            };
            let Some(schema) = self.schemas.get_mut(id) else {
                continue;
            };
            let decoded = off_the_runtime(|| schema.decoder.decode(&group))?;
            for rejected in decoded.rejected {
                dead_letter(
                    ctx,
                    group[rejected.index],
                    &format!("schema `{id}`: {}", rejected.reason),
                )?;
            }
            let Some(output) = schema.decoder.output_schema().map(Arc::clone) else {
                continue;
            };
            self.write_rows(tp, id, &output, &group, decoded.runs).await?;
        }
        let state = self.partitions.entry(tp.clone()).or_default();
        if let (Some(unit), Some(last)) = (&mut state.unit, records.last()) {
            unit.records += records.len() as u64;
            unit.last_record = Instant::now();
            state.next = Some(state.next.map_or(last.offset + 1, |n| n.max(last.offset + 1)));
        }
        Ok(())
    }

    /// Writes the decoded runs of `group` to the files of their partition paths. Each
    /// file is handed all its rows of the runs at once, so that their encoding runs in
    /// one job while the next records are decoded (one job per run would wait for the
    /// previous run's encoding here).
    async fn write_rows(
        &mut self,
        tp: &TopicPartition,
        id: &str,
        output: &arrow_schema::SchemaRef,
        group: &[&SinkRecord],
        runs: Vec<Decoded>,
    ) -> Result<(), ConnectorError> {
        let unit = self
            .partitions
            .get_mut(tp)
            .and_then(|s| s.unit.as_mut())
            .ok_or_else(|| ConnectorError::fatal("a segment was written without an open unit"))?;
        // By partition path, in the order the paths first appear.
        let mut batches: Vec<(String, Vec<RecordBatch>)> = Vec::new();
        for decoded in runs {
            let splits = self
                .partitioner
                .split(&decoded.batch, |row| group[decoded.rows[row]].timestamp);
            let whole = splits.len() == 1;
            for (path, rows) in splits {
                let batch = if whole {
                    decoded.batch.clone()
                } else {
                    arrow_select::take::take_record_batch(&decoded.batch, &UInt32Array::from(rows.clone()))
                        .map_err(ParquetError::arrow("split rows by partition path"))?
                };
                let first_offset = group[decoded.rows[rows[0] as usize]].offset;
                let (properties, part_size, template) =
                    (&self.properties, self.config.part_size, &self.config.key_template);
                unit.file(&path, id, || {
                    let key = template.render(KeyParts {
                        topic: &tp.topic,
                        partition: tp.partition,
                        first_offset,
                        path: &path,
                        schema: id,
                    });
                    ParquetFile::new(key, Arc::clone(output), properties.clone(), part_size)
                })?;
                match batches.iter_mut().find(|(p, _)| *p == path) {
                    Some((_, list)) => list.push(batch),
                    None => batches.push((path, vec![batch])),
                }
            }
        }
        for (path, list) in batches {
            let file = unit
                .file_mut(&path, id)
                .ok_or_else(|| ConnectorError::fatal(format!("no open file for partition path `{path}`")))?;
            file.write(self.store.as_ref(), list).await?;
        }
        Ok(())
    }

    /// Finishes the unit of `tp` at `end` and records it as durable.
    async fn finish_unit(&mut self, tp: &TopicPartition, end: i64) -> Result<(), ConnectorError> {
        let Some(state) = self.partitions.get_mut(tp) else {
            return Ok(());
        };
        let Some(unit) = state.unit.take() else {
            return Ok(());
        };
        let key = manifest_key(&self.connector, tp, unit.start);
        self.broken = true;
        let manifest = unit.finish(self.store.as_ref(), &key, end).await?;
        self.broken = false;
        state.start = Some(end);
        state.next = Some(state.next.map_or(end, |n| n.max(end)));
        if let Some((manifest, written)) = manifest {
            tracing::info!(connector = %self.connector, topic = %tp.topic, partition = tp.partition, start = manifest.start, end, files = written.files, rows = written.rows, bytes = written.bytes, "Files complete.");
            self.written.entry(tp.topic.clone()).or_default().add(written);
            if let Some(previous) = state.manifest.replace(key)
                && previous != manifest_key(&self.connector, tp, manifest.start)
            {
                self.store.delete(&previous).await?;
            }
        }
        self.durable.insert(tp.clone(), end);
        Ok(())
    }

    /// Finishes the units whose rotation is due, and the replays that are complete.
    async fn rotate_due(&mut self) -> Result<(), ConnectorError> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (tp, state) in &self.partitions {
            let Some(unit) = &state.unit else { continue };
            match &unit.replay {
                Some(replay) => {
                    if state.next.is_some_and(|n| n >= replay.manifest.end) {
                        due.push((tp.clone(), replay.manifest.end));
                    }
                }
                None => {
                    if let (Some(_), Some(next)) = (unit.due(&self.config, now), state.next) {
                        due.push((tp.clone(), next));
                    }
                }
            }
        }
        for (tp, end) in due {
            self.finish_unit(&tp, end).await?;
        }
        Ok(())
    }

    /// Finishes the units holding the most memory until all hold at most the budget.
    async fn enforce_budget(&mut self) -> Result<(), ConnectorError> {
        loop {
            let mut total = 0;
            let mut largest: Option<(u64, TopicPartition, i64)> = None;
            for (tp, state) in &self.partitions {
                let Some(unit) = &state.unit else { continue };
                let buffered = unit.buffered();
                total += buffered;
                // A replay must end exactly at its manifest's end: it cannot be cut short.
                let end = match &unit.replay {
                    Some(replay) if state.next.is_some_and(|n| n >= replay.manifest.end) => Some(replay.manifest.end),
                    Some(_) => None,
                    None => state.next,
                };
                if let Some(end) = end
                    && largest.as_ref().is_none_or(|(b, _, _)| buffered > *b)
                {
                    largest = Some((buffered, tp.clone(), end));
                }
            }
            match largest {
                Some((_, tp, end)) if total > self.config.memory_budget => self.finish_unit(&tp, end).await?,
                _ => return Ok(()),
            }
        }
    }

    /// TPs without an open unit have everything they were given durable.
    fn advance_idle_partitions(&mut self) {
        for (tp, state) in &self.partitions {
            if state.unit.is_none()
                && state.replay.is_none()
                && let Some(next) = state.next
            {
                let durable = self.durable.entry(tp.clone()).or_insert(next);
                *durable = (*durable).max(next);
            }
        }
    }

    /// Aborts the uploads a crashed run left for `topic`, once per topic and run.
    async fn clean_topic(&mut self, topic: &str) -> Result<(), ConnectorError> {
        if self.cleaned.contains(topic) {
            return Ok(());
        }
        let prefix = self.config.key_template.fixed_prefix(topic);
        let aborted = self.store.abort_uploads(&prefix).await?;
        if aborted > 0 {
            tracing::info!(connector = %self.connector, prefix = %prefix, aborted, "Aborted uploads left by an earlier run.");
        }
        self.cleaned.insert(topic.to_owned());
        Ok(())
    }

    fn check(&self) -> Result<(), ConnectorError> {
        if self.broken {
            return Err(ConnectorError::retriable(
                "an earlier failure left files half finished; the sink must restart to recover",
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for ParquetSink {
    /// Reads the manifests: each TP resumes after its last complete unit, or replays the
    /// unit a crash interrupted (see [`crate::unit`]).
    async fn start(&mut self, ctx: &SinkContext) -> Result<Option<SinkOffsets>, ConnectorError> {
        self.connector = ctx.name().to_owned();
        if let Some(settings) = self.store_settings.take() {
            self.store = plexus_connector_s3::open(&settings).await?;
        }
        let prefix = manifest_prefix(&self.connector);
        // A manifest write a crash interrupted leaves nothing visible, but may leave
        // what the store holds for it.
        self.store.abort_uploads(&prefix).await?;
        let mut manifests: BTreeMap<TopicPartition, Vec<(i64, String)>> = BTreeMap::new();
        for object in self.store.list(&prefix).await? {
            if let Some((tp, start)) = parse_manifest_key(&prefix, &object.key) {
                manifests.entry(tp).or_default().push((start, object.key));
            }
        }
        let mut resume = SinkOffsets::new();
        for (tp, mut units) in manifests {
            units.sort();
            let Some((_, key)) = units.pop() else { continue };
            let body = self.store.get(&key).await?.unwrap_or_default();
            let manifest: Manifest = serde_json::from_slice(&body).map_err(|e| {
                ParquetError::Inconsistent(format!(
                    "manifest `{key}` in {} cannot be read ({e}); remove it only if its files are gone too",
                    self.store.location()
                ))
            })?;
            // Units finish in order: the latest manifest's predecessors are complete.
            for (_, older) in units {
                self.store.delete(&older).await?;
            }
            let mut missing = 0;
            for file in &manifest.files {
                if !self.store.list(file).await?.iter().any(|o| &o.key == file) {
                    missing += 1;
                }
            }
            let state = self.partitions.entry(tp.clone()).or_default();
            if missing == 0 {
                state.start = Some(manifest.end);
                state.next = Some(manifest.end);
                state.manifest = Some(key);
                resume.insert(tp.clone(), manifest.end);
            } else {
                tracing::info!(connector = %self.connector, topic = %tp.topic, partition = tp.partition, start = manifest.start, end = manifest.end, missing, "Completing the files of a unit a crash interrupted.");
                state.start = Some(manifest.start);
                state.next = Some(manifest.start);
                state.manifest = Some(key);
                resume.insert(tp.clone(), manifest.start);
                state.replay = Some(Replay { manifest });
            }
        }
        for (tp, offset) in &resume {
            self.durable.insert(tp.clone(), *offset);
        }
        Ok(if resume.is_empty() { None } else { Some(resume) })
    }

    async fn write(&mut self, ctx: &SinkContext, records: Vec<SinkRecord>) -> Result<(), ConnectorError> {
        self.check()?;
        self.load_schemas(ctx, &records).await?;
        // The runtime hands over one TP's fetch at a time: one group, allocated once.
        let mut by_partition: Vec<(TopicPartition, Vec<&SinkRecord>)> = Vec::new();
        for record in &records {
            let same = |tp: &TopicPartition| tp.partition == record.partition && *tp.topic == *record.topic;
            match by_partition.last_mut() {
                Some((tp, group)) if same(tp) => group.push(record),
                _ => match by_partition.iter_mut().find(|(tp, _)| same(tp)) {
                    Some((_, group)) => group.push(record),
                    None => {
                        let mut group = Vec::with_capacity(records.len());
                        group.push(record);
                        let tp = TopicPartition {
                            topic: record.topic.to_string(),
                            partition: record.partition,
                        };
                        by_partition.push((tp, group));
                    }
                },
            }
        }
        for (tp, group) in by_partition {
            self.clean_topic(&tp.topic).await?;
            self.write_partition(ctx, &tp, &group).await?;
            self.enforce_budget().await?;
        }
        self.rotate_due().await
    }

    async fn flush(&mut self, _ctx: &SinkContext, offsets: &SinkOffsets) -> Result<(), ConnectorError> {
        self.check()?;
        for (tp, &next) in offsets {
            let state = self.partitions.entry(tp.clone()).or_default();
            state.next = Some(state.next.map_or(next, |n| n.max(next)));
        }
        self.rotate_due().await?;
        self.enforce_budget().await?;
        self.advance_idle_partitions();
        Ok(())
    }

    fn durable_offsets(&self) -> Option<SinkOffsets> {
        Some(self.durable.clone())
    }

    /// Finishes every open unit, except a replay that has not reached its end (its
    /// files are dropped; the next run replays it again).
    async fn stop(&mut self) -> Result<(), ConnectorError> {
        self.check()?;
        let tps: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        for tp in tps {
            let Some(state) = self.partitions.get_mut(&tp) else {
                continue;
            };
            let Some(unit) = &state.unit else { continue };
            let end = match &unit.replay {
                Some(replay) if state.next.is_some_and(|n| n >= replay.manifest.end) => Some(replay.manifest.end),
                Some(_) => None,
                None => state.next,
            };
            match end {
                Some(end) => self.finish_unit(&tp, end).await?,
                None => {
                    if let Some(unit) = state.unit.take() {
                        unit.abort().await?;
                    }
                }
            }
        }
        self.advance_idle_partitions();
        self.log_summary();
        Ok(())
    }
}

impl ParquetSink {
    /// Logs what this run wrote, per topic and in all (the end of a bulk export).
    fn log_summary(&self) {
        let mut total = Written::default();
        for (topic, written) in &self.written {
            tracing::info!(connector = %self.connector, topic = %topic, files = written.files, rows = written.rows, bytes = written.bytes, "Written to {}.", self.store.location());
            total.add(*written);
        }
        tracing::info!(connector = %self.connector, topics = self.written.len(), files = total.files, rows = total.rows, bytes = total.bytes, location = %self.store.location(), "Parquet sink stopped.");
    }
}

/// Runs `work` (CPU-bound, milliseconds) where it does not stall the runtime: on a
/// multi-threaded runtime, the worker thread hands its other tasks to another thread
/// first. Without that, the task the runtime spawns to read the next records ahead sits
/// in this worker's queue until the sink awaits something, and the read only starts
/// once the sink has finished decoding.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// The schema id a record names in its header.
fn schema_id(record: &SinkRecord) -> Option<&str> {
    record
        .headers
        .iter()
        .find(|h| h.key == SCHEMA_HEADER)
        .and_then(|h| h.value.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
}

fn dead_letter(ctx: &SinkContext, record: &SinkRecord, reason: &str) -> Result<(), ConnectorError> {
    let origin = format!("{}/{}@{}", record.topic, record.partition, record.offset);
    ctx.dead_letter(DeadLetter {
        key: record.key.clone(),
        payload: record.value.clone(),
        reason: format!("{origin}: {reason}"),
        origin,
    })
}

/// The store of a sink before [`Sink::start`] opened the real one.
#[derive(Debug)]
struct Unopened;

#[async_trait]
impl ObjectStore for Unopened {
    fn location(&self) -> String {
        "(not opened yet)".into()
    }

    async fn put_if_absent(&self, _key: &str, _body: bytes::Bytes) -> Result<Put, ConnectorError> {
        Err(unopened())
    }

    async fn start_upload(&self, _key: &str) -> Result<Box<dyn Upload>, ConnectorError> {
        Err(unopened())
    }

    async fn get(&self, _key: &str) -> Result<Option<bytes::Bytes>, ConnectorError> {
        Err(unopened())
    }

    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectMeta>, ConnectorError> {
        Err(unopened())
    }

    async fn abort_uploads(&self, _prefix: &str) -> Result<usize, ConnectorError> {
        Err(unopened())
    }

    async fn delete(&self, _key: &str) -> Result<(), ConnectorError> {
        Err(unopened())
    }
}

fn unopened() -> ConnectorError {
    ConnectorError::fatal("the object store is opened by `start`, which was not called")
}
