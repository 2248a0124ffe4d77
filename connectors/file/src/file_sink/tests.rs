//! The sink against real directories.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use plexus_connector::{
    CollectDeadLetters, ConnectorFactory, Settings, Sink, SinkContext, SinkOffsets, SinkRecord, TaskMetrics,
};

use super::{FileSink, FileSinkConfig};
use crate::FileSinkFactory;

fn ctx() -> (SinkContext, Arc<CollectDeadLetters>) {
    let dead = Arc::new(CollectDeadLetters::default());
    (
        SinkContext::new("export", 0, Arc::new(TaskMetrics::default()), dead.clone()),
        dead,
    )
}

fn record(topic: &str, partition: u32, offset: i64, value: Option<&str>) -> SinkRecord {
    SinkRecord {
        topic: Arc::from(topic),
        partition,
        offset,
        timestamp: 0,
        key: Some(Bytes::from(format!("k{offset}"))),
        value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        headers: Default::default(),
    }
}

/// The files of the directory, by name, with their contents.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                fs::read_to_string(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn records_are_written_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (ctx, dead) = ctx();
    let mut sink = FileSink::new(FileSinkConfig::new(&out));
    assert_eq!(sink.start(&ctx).await.unwrap(), None);
    let records = vec![
        record("orders", 0, 10, Some(r#"{"id":1}"#)),
        record("orders", 0, 11, None),
        record("orders", 0, 12, Some("not json")),
        record("orders", 0, 13, Some("{\n  \"id\": 2,\r\n  \"s\": \"a b\"\n}")),
        record("orders", 0, 14, Some("\"text\"")),
        record("orders/eu", 3, 7, Some("[1]")),
    ];
    sink.write(&ctx, records).await.unwrap();
    sink.flush(&ctx, &SinkOffsets::new()).await.unwrap();
    assert_eq!(
        files(&out),
        [
            (
                "export-orders-0-00000000000000000010.jsonl".to_owned(),
                "{\"id\":1}\n{   \"id\": 2,    \"s\": \"a b\" }\n\"text\"\n".to_owned()
            ),
            (
                "export-orders_eu-3-00000000000000000007.jsonl".to_owned(),
                "[1]\n".to_owned()
            ),
        ]
    );
    for (_, content) in files(&out) {
        for line in content.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
    let dead = dead.take();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1.origin, "orders/0@12");
    assert!(dead[0].1.reason.starts_with("invalid JSON"), "{}", dead[0].1.reason);
    assert_eq!(dead[0].1.key.as_deref(), Some(&b"k12"[..]));
    sink.stop().await.unwrap();
}

#[tokio::test]
async fn files_roll_by_size_with_deterministic_names() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _) = ctx();
        let config = FileSinkConfig {
            file_prefix: Some("part".into()),
            roll_size: 40,
            ..FileSinkConfig::new(dir.path())
        };
        let mut sink = FileSink::new(config);
        sink.start(&ctx).await.unwrap();
        // Values of 11 bytes plus a line end: three per file.
        for chunk in (0..10).collect::<Vec<i64>>().chunks(4) {
            let records = chunk
                .iter()
                .map(|o| record("t", 0, *o, Some(&format!("{{\"n\":{}}}", 10_000 + o))))
                .collect();
            sink.write(&ctx, records).await.unwrap();
        }
        sink.write(&ctx, vec![record("t", 0, 10, Some(&format!("\"{}\"", "x".repeat(60))))])
            .await
            .unwrap();
        sink.write(&ctx, vec![record("t", 0, 11, Some("1"))]).await.unwrap();
        sink.stop().await.unwrap();
        runs.push(files(dir.path()));
    }
    assert_eq!(runs[0], runs[1], "the same records make the same files");
    let names: Vec<&str> = runs[0].iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "part-t-0-00000000000000000000.jsonl",
            "part-t-0-00000000000000000003.jsonl",
            "part-t-0-00000000000000000006.jsonl",
            "part-t-0-00000000000000000009.jsonl",
            "part-t-0-00000000000000000010.jsonl",
            "part-t-0-00000000000000000011.jsonl",
        ]
    );
    assert!(
        runs[0]
            .iter()
            .all(|(_, content)| content.len() <= 40 || content.lines().count() == 1)
    );
    let all: String = runs[0].iter().map(|(_, content)| content.as_str()).collect();
    let expected: String = (0..10)
        .map(|o| format!("{{\"n\":{}}}\n", 10_000 + o))
        .chain([format!("\"{}\"\n", "x".repeat(60)), "1\n".into()])
        .collect();
    assert_eq!(all, expected);
}

#[tokio::test]
async fn files_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _) = ctx();
    let config = FileSinkConfig {
        roll_interval: Duration::from_millis(100),
        ..FileSinkConfig::new(dir.path())
    };
    let mut sink = FileSink::new(config);
    sink.start(&ctx).await.unwrap();
    sink.write(&ctx, vec![record("t", 0, 0, Some("0")), record("t", 0, 1, Some("1"))])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A flush closes the old file; the next record starts a new one.
    sink.flush(&ctx, &SinkOffsets::new()).await.unwrap();
    assert_eq!(files(dir.path()).len(), 1);
    sink.write(&ctx, vec![record("t", 0, 2, Some("2"))]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A write into an old file rolls it too.
    sink.write(&ctx, vec![record("t", 0, 3, Some("3"))]).await.unwrap();
    sink.flush(&ctx, &SinkOffsets::new()).await.unwrap();
    let names: Vec<(String, String)> = files(dir.path());
    assert_eq!(
        names,
        [
            ("export-t-0-00000000000000000000.jsonl".to_owned(), "0\n1\n".to_owned()),
            ("export-t-0-00000000000000000002.jsonl".to_owned(), "2\n".to_owned()),
            ("export-t-0-00000000000000000003.jsonl".to_owned(), "3\n".to_owned()),
        ]
    );
}

#[tokio::test]
async fn the_factory_reads_settings() {
    let dir = tempfile::tempdir().unwrap();
    let factory = FileSinkFactory::new();
    assert_eq!(factory.type_name(), "file-sink");
    assert!(factory.schema().fields.iter().all(|f| !f.doc.is_empty()));
    let mut settings = Settings::new();
    assert!(factory.create_sink(&settings).is_err(), "path is required");
    settings.insert("path", dir.path().join("x").to_string_lossy().into_owned());
    settings.insert("file_prefix", "a/b");
    assert!(factory.create_sink(&settings).is_err());
    settings.insert("file_prefix", "p");
    settings.insert("roll_size", plexus_config::ByteSize::b(10));
    let (ctx, _) = ctx();
    let mut sink = factory.create_sink(&settings).unwrap();
    sink.start(&ctx).await.unwrap();
    sink.write(&ctx, vec![record("t", 1, 5, Some("{}"))]).await.unwrap();
    sink.stop().await.unwrap();
    assert_eq!(
        files(&dir.path().join("x")),
        [("p-t-1-00000000000000000005.jsonl".to_owned(), "{}\n".to_owned())]
    );
}
