#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The object-store scenarios on a local directory, and what only a directory has:
//! files a plain reader sees, uploads waiting in `.uploads`.

#[macro_use]
mod scenarios;

use std::sync::Arc;

use plexus_connector_s3::{ObjectStore, Put, StoreSettings};

async fn store() -> (tempfile::TempDir, Arc<dyn ObjectStore>) {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet, given as a file url.
    let url = format!("file://{}/store", dir.path().display());
    let store = plexus_connector_s3::open(&StoreSettings::new(url)).await.unwrap();
    (dir, store)
}

scenario_tests!();

#[tokio::test]
async fn multipart_reads_back_identical() {
    let (dir, store) = store().await;
    let expected = scenarios::multipart_reads_back_identical(store.clone()).await;
    // Read by the file system, not the store.
    let on_disk = std::fs::read(dir.path().join("store/multi/big.bin")).unwrap();
    assert!(on_disk == expected);
    assert_eq!(std::fs::read_dir(dir.path().join("store/.uploads")).unwrap().count(), 0);
}

#[tokio::test]
async fn a_plain_path_is_a_directory_and_uploads_wait_out_of_sight() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("plain");
    let store = plexus_connector_s3::open(&StoreSettings::new(root.display().to_string()))
        .await
        .unwrap();
    assert_eq!(store.location(), format!("file://{}", root.display()));
    let mut upload = store.start_upload("x/y.bin").await.unwrap();
    upload.put_part(scenarios::pattern(1, 10)).await.unwrap();
    assert!(
        !root.join("x").exists(),
        "the target directory appeared before complete"
    );
    assert_eq!(
        std::fs::read_dir(root.join(".uploads")).unwrap().count(),
        2,
        "data and key files"
    );
    assert!(store.list("").await.unwrap().is_empty(), ".uploads is listed");
    assert_eq!(upload.complete().await.unwrap(), Put::Created);
    assert_eq!(std::fs::read(root.join("x/y.bin")).unwrap(), scenarios::pattern(1, 10));
    assert_eq!(std::fs::read_dir(root.join(".uploads")).unwrap().count(), 0);
}

#[tokio::test]
async fn an_unwritable_directory_is_a_fatal_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let error = plexus_connector_s3::open(&StoreSettings::new(file.join("below").display().to_string()))
        .await
        .unwrap_err();
    assert!(!error.is_retriable(), "{error}");
    assert!(error.message().contains("a-file"), "{error}");
}
