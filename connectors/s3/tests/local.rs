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

/// A worker killed between creating an upload's key file and writing it leaves the
/// key file empty: the next abort removes it whatever its prefix, and leaves the
/// uploads of others alone.
#[tokio::test]
async fn an_empty_key_file_a_kill_left_is_removed() {
    let (dir, store) = store().await;
    let uploads = dir.path().join("store/.uploads");
    // An id of another process: time, process id, count.
    std::fs::write(uploads.join("18ea65fcaa6f651b-2ddf-24.key"), b"").unwrap();
    let mut live = store.start_upload("other/live.bin").await.unwrap();
    live.put_part(scenarios::pattern(2, 10)).await.unwrap();
    assert_eq!(store.abort_uploads("mine/").await.unwrap(), 1);
    let left: Vec<String> = std::fs::read_dir(&uploads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 2, "the live upload's data and key files stay: {left:?}");
    assert!(!left.iter().any(|n| n.starts_with("18ea65fcaa6f651b-")), "{left:?}");
    assert_eq!(live.complete().await.unwrap(), Put::Created);
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0);
}
