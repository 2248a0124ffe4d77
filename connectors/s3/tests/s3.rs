#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The object-store scenarios against a real S3 server (SeaweedFS, started per test on
//! loopback with authentication on), and what only S3 has: credentials, buckets,
//! servers that go away.

#[macro_use]
mod scenarios;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plexus_config::Secret;
use plexus_connector_s3::{MIN_PART_SIZE, ObjectStore, Put, StoreSettings};
use plexus_tests::seaweed::SeaweedFs;

const BUCKET: &str = "plexus-test";

fn settings(server: &SeaweedFs, url: &str) -> StoreSettings {
    let mut settings = StoreSettings::new(url);
    settings.endpoint = Some(server.endpoint());
    settings.path_style = true;
    settings.access_key_id = Some(server.access_key_id().to_owned());
    settings.secret_access_key = Some(Secret::new(server.secret_access_key()));
    settings
}

/// A server with the test bucket, and a store on it under a prefix.
async fn store() -> (SeaweedFs, Arc<dyn ObjectStore>) {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let mut settings = settings(&server, &format!("s3://{BUCKET}/under/a/prefix"));
    // Listings cross several pages with few objects.
    settings.list_page_size = 7;
    let store = plexus_connector_s3::open(&settings).await.unwrap();
    (server, store)
}

/// Reads an object through the filer's HTTP API with Python: neither the store nor
/// an S3 client.
fn read_through_filer(server: &SeaweedFs, key: &str) -> Vec<u8> {
    let python = plexus_tests::python::python().unwrap();
    let url = format!("{}/buckets/{BUCKET}/{key}", server.filer_endpoint());
    let output = Command::new(python)
        .args([
            "-c",
            "import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1]).read())",
        ])
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

scenario_tests!();

#[tokio::test]
async fn multipart_reads_back_identical() {
    let (server, store) = store().await;
    assert_eq!(store.location(), format!("s3://{BUCKET}/under/a/prefix/"));
    let expected = scenarios::multipart_reads_back_identical(store).await;
    let read = read_through_filer(&server, "under/a/prefix/multi/big.bin");
    assert_eq!(read.len(), expected.len());
    assert!(read == expected, "the filer serves other bytes");
}

#[tokio::test]
async fn listing_crosses_s3s_thousand_key_pages() {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let store = plexus_connector_s3::open(&settings(&server, &format!("s3://{BUCKET}")))
        .await
        .unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            for i in (worker..1003).step_by(8) {
                let put = store
                    .put_if_absent(&format!("many/{i:05}"), Bytes::from(i.to_string()))
                    .await
                    .unwrap();
                assert_eq!(put, Put::Created);
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap();
    }
    let listed = store.list("many/").await.unwrap();
    assert_eq!(listed.len(), 1003);
    for (i, object) in listed.iter().enumerate() {
        assert_eq!(object.key, format!("many/{i:05}"));
        assert_eq!(object.size, i.to_string().len() as u64);
    }
}

#[tokio::test]
async fn a_wrong_secret_is_fatal_and_names_the_key_not_the_secret() {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let mut settings = settings(&server, &format!("s3://{BUCKET}/x"));
    let wrong = "wrong-secret-0123456789abcdef";
    settings.secret_access_key = Some(Secret::new(wrong));
    let error = plexus_connector_s3::open(&settings).await.unwrap_err();
    eprintln!("wrong secret: {error}");
    assert!(!error.is_retriable(), "{error}");
    let message = error.message();
    assert!(message.contains(server.access_key_id()), "{message}");
    assert!(message.contains("secret_access_key"), "{message}");
    assert!(!message.contains(wrong), "{message}");
    assert!(!format!("{error:?}").contains(wrong), "{error:?}");

    // An unknown key id, too.
    let mut settings = settings.clone();
    settings.access_key_id = Some("NOSUCHKEY123".into());
    settings.secret_access_key = Some(Secret::new(server.secret_access_key()));
    let error = plexus_connector_s3::open(&settings).await.unwrap_err();
    assert!(!error.is_retriable(), "{error}");
    assert!(error.message().contains("NOSUCHKEY123"), "{error}");
    assert!(!error.message().contains(server.secret_access_key()), "{error}");
}

#[tokio::test]
async fn a_missing_bucket_is_fatal_and_named() {
    let server = SeaweedFs::start().unwrap();
    let error = plexus_connector_s3::open(&settings(&server, "s3://no-such-bucket/x"))
        .await
        .unwrap_err();
    eprintln!("missing bucket: {error}");
    assert!(!error.is_retriable(), "{error}");
    assert!(error.message().contains("`no-such-bucket` does not exist"), "{error}");
    assert!(error.message().contains(&server.endpoint()), "{error}");
}

#[tokio::test]
async fn nothing_listening_is_retriable_and_names_the_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut settings = StoreSettings::new(format!("s3://{BUCKET}"));
    settings.endpoint = Some(format!("http://127.0.0.1:{port}"));
    settings.path_style = true;
    settings.access_key_id = Some("AKID".into());
    settings.secret_access_key = Some(Secret::new("secret"));
    let started = Instant::now();
    let error = plexus_connector_s3::open(&settings).await.unwrap_err();
    eprintln!("nothing listening, after {:?}: {error}", started.elapsed());
    assert!(error.is_retriable(), "{error}");
    assert!(error.message().contains(&format!("127.0.0.1:{port}")), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_server_killed_mid_upload_gives_a_retriable_error_in_bounded_time() {
    let (mut server, store) = store().await;
    let mut upload = store.start_upload("killed/x.bin").await.unwrap();
    // With two parts in flight at most, the third waits until the first is stored.
    for seed in 1..4 {
        upload.put_part(scenarios::pattern(seed, MIN_PART_SIZE)).await.unwrap();
    }
    server.kill();
    let started = Instant::now();
    let mut result = Ok(());
    for seed in 4..8 {
        result = upload.put_part(scenarios::pattern(seed, MIN_PART_SIZE)).await;
        if result.is_err() {
            break;
        }
    }
    let error = match result {
        Err(error) => error,
        Ok(()) => upload.complete().await.unwrap_err(),
    };
    let elapsed = started.elapsed();
    assert!(error.is_retriable(), "{error}");
    assert!(error.message().contains(&server.endpoint()), "{error}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    eprintln!("retriable error after {elapsed:?}: {error}");
}

#[tokio::test]
async fn a_frozen_server_gives_a_retriable_error_within_the_timeouts() {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    let mut settings = settings(&server, &format!("s3://{BUCKET}/frozen"));
    settings.request_timeout = Duration::from_secs(3);
    settings.max_attempts = 2;
    let store = plexus_connector_s3::open(&settings).await.unwrap();
    let mut upload = store.start_upload("x.bin").await.unwrap();
    upload.put_part(scenarios::pattern(1, MIN_PART_SIZE)).await.unwrap();
    let mut server = server;
    server.freeze().unwrap();
    let started = Instant::now();
    let mut result = Ok(());
    for seed in 2..6 {
        result = upload.put_part(scenarios::pattern(seed, MIN_PART_SIZE)).await;
        if result.is_err() {
            break;
        }
    }
    let error = match result {
        Err(error) => error,
        Ok(()) => upload.complete().await.unwrap_err(),
    };
    let elapsed = started.elapsed();
    eprintln!("frozen server: retriable error after {elapsed:?}: {error}");
    assert!(error.is_retriable(), "{error}");
    // Two attempts of at most 3 s each, a backoff, and the parts queued before.
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}
