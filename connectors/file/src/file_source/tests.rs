//! The source against real files in temporary directories.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plexus_connector::{
    CollectDeadLetters, ConnectorFactory, DeadLetter, Poll, Position, Settings, Source, SourceContext, TaskMetrics,
};

use super::{FilePosition, FileSource, FileSourceConfig, Format};
use crate::FileSourceFactory;

struct Harness {
    ctx: SourceContext,
    dead: Arc<CollectDeadLetters>,
}

impl Harness {
    fn new() -> Harness {
        let dead = Arc::new(CollectDeadLetters::default());
        let ctx = SourceContext::new("files", 0, Arc::new(TaskMetrics::default()), dead.clone());
        Harness { ctx, dead }
    }

    async fn start(&self, config: FileSourceConfig, resume: Option<Position>) -> FileSource {
        let mut source = FileSource::new(config).unwrap();
        source.start(&self.ctx, resume).await.unwrap();
        source
    }

    /// Polls until the source is idle: the values read and the last position.
    async fn drain(&self, source: &mut FileSource, last: &mut Option<Position>) -> Vec<String> {
        let mut values = Vec::new();
        loop {
            match source.poll(&self.ctx).await.unwrap() {
                Poll::Batch(batch) => {
                    if let Some(last) = last {
                        assert!(batch.position > *last, "positions must increase");
                    }
                    *last = Some(batch.position);
                    for record in batch.records {
                        values.push(String::from_utf8(record.value.unwrap().to_vec()).unwrap());
                    }
                }
                Poll::Idle => return values,
                Poll::Finished => panic!("a file source never finishes"),
            }
        }
    }

    fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead.take().into_iter().map(|(_, letter)| letter).collect()
    }
}

fn config(path: &Path) -> FileSourceConfig {
    FileSourceConfig {
        poll_interval: Duration::from_millis(5),
        ..FileSourceConfig::new(path)
    }
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

fn lines(range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("{{\"n\":{i}}}\n")).collect()
}

fn values(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{{\"n\":{i}}}")).collect()
}

#[tokio::test]
async fn reads_complete_lines_and_waits_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    append(&path, "{\"a\":1}\r\n\n{\"a\":2}\n{\"a\":");
    let h = Harness::new();
    let mut source = h.start(config(&path), None).await;

    let Poll::Batch(batch) = source.poll(&h.ctx).await.unwrap() else {
        panic!("no batch")
    };
    assert_eq!(batch.records.len(), 2);
    let record = &batch.records[0];
    assert_eq!(record.value.as_deref(), Some(&b"{\"a\":1}"[..]));
    assert_eq!(record.key, None);
    assert_eq!(record.headers[0].key, "file");
    assert_eq!(
        record.headers[0].value.as_deref(),
        Some(path.as_os_str().as_encoded_bytes())
    );
    let position = FilePosition::decode(&batch.position).unwrap();
    assert_eq!(
        (position.offset, position.line),
        (18, 3),
        "after the blank line, before the partial one"
    );
    let mut last = Some(batch.position);

    assert!(
        h.drain(&mut source, &mut last).await.is_empty(),
        "the partial line waits"
    );
    append(&path, "3}\n");
    assert_eq!(h.drain(&mut source, &mut last).await, ["{\"a\":3}"]);
    append(&path, &lines(0..5));
    assert_eq!(
        h.drain(&mut source, &mut last).await,
        values(0..5),
        "tails appended data"
    );
    assert!(h.dead_letters().is_empty());
}

#[tokio::test]
async fn restarts_resume_at_the_exact_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    append(&path, &lines(0..100));
    let h = Harness::new();
    let config = FileSourceConfig {
        batch_size: 7,
        ..config(&path)
    };
    let mut seen = Vec::new();
    let mut last: Option<Position> = None;
    let mut written = 100;
    // Restart after every two batches, appending (sometimes half a line) in between.
    for round in 0..40 {
        let mut source = h.start(config.clone(), last.clone()).await;
        for _ in 0..2 {
            if let Poll::Batch(batch) = source.poll(&h.ctx).await.unwrap() {
                assert!(last.as_ref().is_none_or(|l| batch.position > *l));
                last = Some(batch.position);
                seen.extend(
                    batch
                        .records
                        .into_iter()
                        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap()),
                );
            }
        }
        if round % 3 == 0 {
            append(&path, &format!("{{\"n\":{written}"));
            append(&path, &format!("}}\n{}", lines(written + 1..written + 3)));
            written += 3;
        }
    }
    let mut source = h.start(config, last.clone()).await;
    seen.extend(h.drain(&mut source, &mut last).await);
    assert_eq!(seen, values(0..written), "no duplicates, no gaps");
    let end = FilePosition::decode(&last.unwrap()).unwrap();
    assert_eq!(end.offset, fs::metadata(&path).unwrap().len());
    assert_eq!(end.line, u64::from(written));
}

#[tokio::test]
async fn a_rotated_file_is_finished_then_the_new_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    append(&path, &lines(0..3));
    let h = Harness::new();
    let mut source = h.start(config(&path), None).await;
    let mut last = None;
    assert_eq!(h.drain(&mut source, &mut last).await, values(0..3));
    let before = FilePosition::decode(last.as_ref().unwrap()).unwrap();

    // The writer adds a line and its last line's end, then the file is rotated.
    append(&path, &lines(3..4));
    append(&path, "{\"n\":4}");
    fs::rename(&path, dir.path().join("app.log.1")).unwrap();
    append(&path, &lines(5..7));
    assert_eq!(h.drain(&mut source, &mut last).await, values(0..7)[3..]);
    let after = FilePosition::decode(last.as_ref().unwrap()).unwrap();
    assert_eq!(after.generation, before.generation + 1);
    assert_ne!(after.file, before.file);
    assert_eq!(after.offset, 16);

    // Deleted, then created again.
    fs::remove_file(&path).unwrap();
    assert!(h.drain(&mut source, &mut last).await.is_empty());
    append(&path, &lines(7..8));
    assert_eq!(h.drain(&mut source, &mut last).await, values(7..8));
    assert_eq!(
        FilePosition::decode(last.as_ref().unwrap()).unwrap().generation,
        before.generation + 2
    );
}

#[tokio::test]
async fn a_file_rotated_while_stopped_is_finished_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    append(&path, &lines(0..10));
    let h = Harness::new();
    let mut source = h
        .start(
            FileSourceConfig {
                batch_size: 4,
                ..config(&path)
            },
            None,
        )
        .await;
    let Poll::Batch(batch) = source.poll(&h.ctx).await.unwrap() else {
        panic!("no batch")
    };
    assert_eq!(batch.records.len(), 4);
    drop(source);

    fs::rename(&path, dir.path().join("app.log.1")).unwrap();
    append(&path, &lines(10..12));
    let mut source = h.start(config(&path), Some(batch.position.clone())).await;
    let mut last = Some(batch.position);
    assert_eq!(h.drain(&mut source, &mut last).await, values(4..12));
}

#[tokio::test]
async fn a_truncated_file_is_read_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    append(&path, &lines(0..5));
    let h = Harness::new();
    let mut source = h.start(config(&path), None).await;
    let mut last = None;
    assert_eq!(h.drain(&mut source, &mut last).await, values(0..5));
    let before = last.clone().unwrap();

    fs::write(&path, lines(100..102)).unwrap();
    assert_eq!(h.drain(&mut source, &mut last).await, values(100..102));
    let after = FilePosition::decode(last.as_ref().unwrap()).unwrap();
    assert_eq!((after.generation, after.offset, after.line), (1, 20, 2));
    assert!(last.clone().unwrap() > before);

    // Truncated while stopped.
    fs::write(&path, lines(200..201)).unwrap();
    let mut source = h.start(config(&path), last.clone()).await;
    assert_eq!(h.drain(&mut source, &mut last).await, values(200..201));
}

#[tokio::test]
async fn a_pattern_reads_its_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("part-2.jsonl"), &lines(20..22));
    append(&dir.path().join("part-1.jsonl"), &lines(0..2));
    append(
        &dir.path().join("part-10.jsonl"),
        &format!("{}{{\"n\":12}}", lines(10..12)),
    );
    append(&dir.path().join("other.txt"), "not json\n");
    fs::create_dir(dir.path().join("part-0.jsonl")).unwrap();
    let pattern = dir.path().join("part-*.jsonl");
    let h = Harness::new();
    let config = FileSourceConfig {
        batch_size: 3,
        ..config(&pattern)
    };
    let mut source = h.start(config.clone(), None).await;
    let Poll::Batch(batch) = source.poll(&h.ctx).await.unwrap() else {
        panic!("no batch")
    };
    assert_eq!(batch.records.len(), 3);
    let position = FilePosition::decode(&batch.position).unwrap();
    assert_eq!(position.path, dir.path().join("part-10.jsonl"));
    assert_eq!(position.offset, 9);
    let mut last = Some(batch.position);

    // Restart in the middle of the second file.
    let mut source = h.start(config, last.clone()).await;
    // part-10's last line has no line end, but part-2 follows, so it is complete.
    let mut read = h.drain(&mut source, &mut last).await;
    assert_eq!(read, ["{\"n\":11}", "{\"n\":12}", "{\"n\":20}", "{\"n\":21}"]);

    // The last file is tailed until a later one appears; earlier names are ignored.
    append(&dir.path().join("part-2.jsonl"), &lines(22..23));
    append(&dir.path().join("part-3.jsonl"), &lines(30..31));
    append(&dir.path().join("part-0.jsonl.jsonl"), &lines(0..1));
    read = h.drain(&mut source, &mut last).await;
    assert_eq!(read, ["{\"n\":22}", "{\"n\":30}"]);
    assert!(h.dead_letters().is_empty());
}

#[tokio::test]
async fn csv_rows_become_json_objects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    append(
        &path,
        "id,name,city\r\n1,\"Lovelace, Ada\",London\r\n2,Grace,\"New \"\"York\"\"\"\n3,short\n4,Émile,Paris\n",
    );
    let h = Harness::new();
    let config = FileSourceConfig {
        format: Format::Csv,
        batch_size: 1,
        ..config(&path)
    };
    let mut source = h.start(config.clone(), None).await;
    let Poll::Batch(batch) = source.poll(&h.ctx).await.unwrap() else {
        panic!("no batch")
    };
    let first = String::from_utf8(batch.records[0].value.clone().unwrap().to_vec()).unwrap();
    assert_eq!(first, r#"{"id":"1","name":"Lovelace, Ada","city":"London"}"#);

    // A restart after the header re-reads it.
    let mut last = Some(batch.position.clone());
    let mut source = h.start(config, last.clone()).await;
    let rest = h.drain(&mut source, &mut last).await;
    assert_eq!(
        rest,
        [
            r#"{"id":"2","name":"Grace","city":"New \"York\""}"#,
            r#"{"id":"4","name":"Émile","city":"Paris"}"#
        ]
    );
    for value in &rest {
        serde_json::from_str::<serde_json::Value>(value).unwrap();
    }
    let dead = h.dead_letters();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].origin, format!("{}:4", path.display()));
    assert_eq!(dead[0].reason, "the row has 2 fields but the header has 3");
    assert_eq!(dead[0].payload.as_deref(), Some(&b"3,short"[..]));

    // Without a header: arrays.
    let path = dir.path().join("raw.csv");
    append(&path, "a,b\n");
    let mut source = h
        .start(
            FileSourceConfig {
                format: Format::Csv,
                csv_header: false,
                ..super::tests::config(&path)
            },
            None,
        )
        .await;
    assert_eq!(h.drain(&mut source, &mut None).await, [r#"["a","b"]"#]);
}

#[tokio::test]
async fn bad_json_goes_to_the_dead_letters_with_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    append(&path, "{\"ok\":1}\n{\"broken\" 2}\n{\"ok\":2}\n[1,2\n");
    let h = Harness::new();
    let mut source = h.start(config(&path), None).await;
    let mut last = None;
    assert_eq!(h.drain(&mut source, &mut last).await, ["{\"ok\":1}", "{\"ok\":2}"]);
    let dead = h.dead_letters();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].origin, format!("{}:2", path.display()));
    assert_eq!(dead[0].reason, "invalid JSON at column 11: expected `:`");
    assert_eq!(dead[0].payload.as_deref(), Some(&b"{\"broken\" 2}"[..]));
    assert_eq!(dead[1].origin, format!("{}:4", path.display()));
    assert!(
        dead[1].reason.starts_with("invalid JSON at column"),
        "{}",
        dead[1].reason
    );

    // A poll that only rejects lines still moves the position, so they are not read again.
    append(&path, "nope\n");
    let Poll::Batch(batch) = source.poll(&h.ctx).await.unwrap() else {
        panic!("no batch")
    };
    assert!(batch.records.is_empty());
    assert_eq!(FilePosition::decode(&batch.position).unwrap().line, 5);
    assert_eq!(h.dead_letters()[0].origin, format!("{}:5", path.display()));
    let mut source = h.start(super::tests::config(&path), Some(batch.position)).await;
    assert!(h.drain(&mut source, &mut None).await.is_empty());
    assert!(h.dead_letters().is_empty());
}

#[tokio::test]
async fn the_factory_validates_settings() {
    let factory = FileSourceFactory::new();
    assert_eq!(factory.type_name(), "file-source");
    assert!(factory.schema().fields.iter().all(|f| !f.doc.is_empty()));
    let mut settings = Settings::new();
    assert!(factory.create_source(&settings).is_err(), "path is required");
    settings.insert("path", "logs/*/x.jsonl");
    assert!(factory.create_source(&settings).is_err(), "no wildcards in directories");
    settings.insert("path", "logs/x-*.csv");
    settings.insert("format", "csv");
    settings.insert("poll_interval", plexus_config::Duration::from_millis(10));
    assert!(factory.create_source(&settings).is_ok());

    // A position of another file set is refused.
    let h = Harness::new();
    let position = FilePosition {
        path: PathBuf::from("elsewhere/y.json"),
        generation: 0,
        offset: 0,
        line: 0,
        file: Default::default(),
    };
    let mut source = factory.create_source(&settings).unwrap();
    let error = source.start(&h.ctx, Some(position.encode())).await.err().unwrap();
    assert!(!error.is_retriable());
    assert!(error.message().contains("path"), "{}", error.message());
}
