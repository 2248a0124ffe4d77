#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The behaviour every object store must show, written once and run against each
//! backend (`tests/local.rs`, `tests/s3.rs`).

use std::sync::Arc;

/// The scenarios as tests of one backend: in the invoking file, `store().await` gives
/// a guard that keeps the backend alive and the store.
macro_rules! scenario_tests {
    () => {
        scenario_tests!(
            put_if_absent_keeps_the_first_content,
            complete_never_replaces,
            abort_leaves_nothing,
            list_is_sorted_and_complete,
            abort_uploads_removes_what_a_crash_left,
            zero_part_upload_is_an_empty_object,
            misuse_is_refused
        );
    };
    ($($name:ident),+) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (_guard, store) = store().await;
                scenarios::$name(store).await;
            }
        )+
    };
}

use bytes::Bytes;
use plexus_connector_s3::{MIN_PART_SIZE, ObjectMeta, ObjectStore, Put};

/// `len` bytes that differ from part to part and from position to position, so a
/// part out of place or a shifted byte shows.
pub fn pattern(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(u32::from(seed)) as u8 ^ seed)
        .collect::<Vec<u8>>()
        .into()
}

fn keys(objects: &[ObjectMeta]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

/// A second small write of a key changes nothing: the first content stays.
pub async fn put_if_absent_keeps_the_first_content(store: Arc<dyn ObjectStore>) {
    assert_eq!(store.get("small/a.json").await.unwrap(), None);
    let put = store
        .put_if_absent("small/a.json", Bytes::from_static(b"first"))
        .await
        .unwrap();
    assert_eq!(put, Put::Created);
    let put = store
        .put_if_absent("small/a.json", Bytes::from_static(b"second, longer"))
        .await
        .unwrap();
    assert_eq!(put, Put::Exists);
    assert_eq!(store.get("small/a.json").await.unwrap().as_deref(), Some(&b"first"[..]));
    assert_eq!(
        store.list("small/").await.unwrap(),
        vec![ObjectMeta {
            key: "small/a.json".into(),
            size: 5
        }]
    );
    store.delete("small/a.json").await.unwrap();
    assert_eq!(store.get("small/a.json").await.unwrap(), None);
    store.delete("small/a.json").await.unwrap();
    assert_eq!(
        store
            .put_if_absent("small/a.json", Bytes::from_static(b"again"))
            .await
            .unwrap(),
        Put::Created
    );
}

/// Three full parts and a small last one read back byte for byte, and nothing is
/// visible before the completion. Returns the content written under `multi/big.bin`.
pub async fn multipart_reads_back_identical(store: Arc<dyn ObjectStore>) -> Bytes {
    let parts = [
        pattern(1, MIN_PART_SIZE),
        pattern(2, MIN_PART_SIZE),
        pattern(3, MIN_PART_SIZE + 17),
        pattern(4, 12_345),
    ];
    let mut upload = store.start_upload("multi/big.bin").await.unwrap();
    let mut expected = Vec::new();
    for part in &parts {
        upload.put_part(part.clone()).await.unwrap();
        expected.extend_from_slice(part);
    }
    assert_eq!(upload.bytes(), expected.len() as u64);
    assert_eq!(
        store.get("multi/big.bin").await.unwrap(),
        None,
        "visible before complete"
    );
    assert!(store.list("multi/").await.unwrap().is_empty(), "listed before complete");
    assert_eq!(upload.complete().await.unwrap(), Put::Created);
    let read = store.get("multi/big.bin").await.unwrap().expect("the object");
    assert_eq!(read.len(), expected.len());
    assert!(read == expected, "content differs");
    assert_eq!(
        store.list("multi/").await.unwrap(),
        vec![ObjectMeta {
            key: "multi/big.bin".into(),
            size: expected.len() as u64
        }]
    );
    Bytes::from(expected)
}

/// A completion under an existing key reports it and leaves the first object; of two
/// uploads racing for one key, exactly one wins.
pub async fn complete_never_replaces(store: Arc<dyn ObjectStore>) {
    store
        .put_if_absent("race/one.bin", Bytes::from_static(b"original"))
        .await
        .unwrap();
    let mut upload = store.start_upload("race/one.bin").await.unwrap();
    upload.put_part(pattern(5, MIN_PART_SIZE)).await.unwrap();
    upload.put_part(pattern(6, 100)).await.unwrap();
    assert_eq!(upload.complete().await.unwrap(), Put::Exists);
    assert_eq!(
        store.get("race/one.bin").await.unwrap().as_deref(),
        Some(&b"original"[..])
    );

    // Two writers of one key, both with their parts stored, complete at once.
    let mut first = store.start_upload("race/two.bin").await.unwrap();
    let mut second = store.start_upload("race/two.bin").await.unwrap();
    first.put_part(pattern(7, 1000)).await.unwrap();
    second.put_part(pattern(8, 2000)).await.unwrap();
    let (a, b) = tokio::join!(first.complete(), second.complete());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        matches!((a, b), (Put::Created, Put::Exists) | (Put::Exists, Put::Created)),
        "both uploads saw {a:?} and {b:?}"
    );
    let winner = if a == Put::Created {
        pattern(7, 1000)
    } else {
        pattern(8, 2000)
    };
    assert_eq!(store.get("race/two.bin").await.unwrap(), Some(winner));
    // A multipart completion over a small object, too.
    let mut late = store.start_upload("race/two.bin").await.unwrap();
    late.put_part(pattern(9, 10)).await.unwrap();
    assert_eq!(late.complete().await.unwrap(), Put::Exists);
    // Nothing of the refused uploads is left.
    assert_eq!(store.abort_uploads("race/").await.unwrap(), 0);
}

/// An aborted upload leaves no object and nothing to clean up.
pub async fn abort_leaves_nothing(store: Arc<dyn ObjectStore>) {
    let mut upload = store.start_upload("aborted/x.bin").await.unwrap();
    upload.put_part(pattern(10, MIN_PART_SIZE)).await.unwrap();
    upload.put_part(pattern(11, 10)).await.unwrap();
    upload.abort().await.unwrap();
    assert_eq!(store.get("aborted/x.bin").await.unwrap(), None);
    assert!(store.list("").await.unwrap().is_empty());
    assert_eq!(store.abort_uploads("").await.unwrap(), 0);
    // The key is free for the next writer.
    let upload = store.start_upload("aborted/x.bin").await.unwrap();
    assert_eq!(upload.complete().await.unwrap(), Put::Created);
}

/// Listing returns exactly the keys under a prefix, in key order, across pages (the
/// S3 test lowers the page size below the number of objects).
pub async fn list_is_sorted_and_complete(store: Arc<dyn ObjectStore>) {
    let mut written = Vec::new();
    // Written out of order; nested, sibling-prefixed and dotted names.
    for i in (0..24).rev() {
        let key = match i % 4 {
            0 => format!("list/a/{i:03}.bin"),
            1 => format!("list/a/deep/er/{i:03}.bin"),
            2 => format!("list/ab-{i:03}"),
            _ => format!("list/b.{i:03}"),
        };
        store.put_if_absent(&key, pattern(i as u8, i)).await.unwrap();
        written.push((key, i as u64));
    }
    store
        .put_if_absent("elsewhere/z", Bytes::from_static(b"z"))
        .await
        .unwrap();
    written.sort();
    let all = store.list("list/").await.unwrap();
    let expected: Vec<ObjectMeta> = written
        .iter()
        .map(|(key, size)| ObjectMeta {
            key: key.clone(),
            size: *size,
        })
        .collect();
    assert_eq!(all, expected);
    let under_a = store.list("list/a/").await.unwrap();
    assert_eq!(under_a.len(), 12);
    assert!(keys(&under_a).iter().all(|k| k.starts_with("list/a/")));
    // A prefix that ends mid-name matches like S3's: by string.
    let a_names = store.list("list/a").await.unwrap();
    assert_eq!(a_names.len(), 18, "{:?}", keys(&a_names));
    assert_eq!(
        keys(&store.list("list/a/deep/er/001").await.unwrap()),
        ["list/a/deep/er/001.bin"]
    );
    assert!(store.list("list/c").await.unwrap().is_empty());
    assert!(store.list("nothing/").await.unwrap().is_empty());
    let everything = store.list("").await.unwrap();
    assert_eq!(everything.len(), 25);
    assert!(keys(&everything).windows(2).all(|w| w[0] < w[1]), "not sorted");
}

/// Uploads dropped without completing (a crash) are found under their prefix and
/// removed; others are left.
pub async fn abort_uploads_removes_what_a_crash_left(store: Arc<dyn ObjectStore>) {
    for (key, seed) in [("crash/t1/a.bin", 20), ("crash/t2/b.bin", 21), ("kept/c.bin", 22)] {
        let mut upload = store.start_upload(key).await.unwrap();
        upload.put_part(pattern(seed, MIN_PART_SIZE)).await.unwrap();
        upload.put_part(pattern(seed, 10)).await.unwrap();
        // Dropped, as a crashed writer would leave it.
        drop(upload);
    }
    let mut live = store.start_upload("crash/live.bin").await.unwrap();
    drop(store.start_upload("crash/empty.bin").await.unwrap());
    assert_eq!(store.abort_uploads("crash/t").await.unwrap(), 2);
    assert_eq!(store.abort_uploads("crash/t").await.unwrap(), 0);
    assert_eq!(store.abort_uploads("kept/").await.unwrap(), 1);
    // `crash/live.bin` is an upload like the others: abort_uploads takes it too, which
    // is why a writer cleans up before starting its own uploads.
    assert_eq!(store.abort_uploads("").await.unwrap(), 2);
    live.put_part(pattern(23, 10)).await.ok();
    assert!(live.complete().await.is_err(), "an aborted upload completed");
    assert!(store.list("").await.unwrap().is_empty());
}

/// An upload without parts completes as an empty object, and only once.
pub async fn zero_part_upload_is_an_empty_object(store: Arc<dyn ObjectStore>) {
    let upload = store.start_upload("empty/nothing.bin").await.unwrap();
    assert_eq!(upload.bytes(), 0);
    assert_eq!(upload.complete().await.unwrap(), Put::Created);
    assert_eq!(store.get("empty/nothing.bin").await.unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(keys(&store.list("empty/").await.unwrap()), ["empty/nothing.bin"]);
    let mut upload = store.start_upload("empty/nothing.bin").await.unwrap();
    upload.put_part(Bytes::new()).await.unwrap();
    assert_eq!(upload.complete().await.unwrap(), Put::Exists);
    assert_eq!(store.abort_uploads("").await.unwrap(), 0);
}

/// Only the last part may be small, and bad keys are refused: both fatal, before any
/// I/O.
pub async fn misuse_is_refused(store: Arc<dyn ObjectStore>) {
    let mut upload = store.start_upload("misuse/x.bin").await.unwrap();
    upload.put_part(pattern(30, 100)).await.unwrap();
    let error = upload.put_part(pattern(31, MIN_PART_SIZE)).await.unwrap_err();
    assert!(!error.is_retriable());
    assert!(error.message().contains("part 1 holds 100 bytes"), "{error}");
    upload.abort().await.unwrap();
    for key in ["", "/abs", "a//b", "../up", "dir/"] {
        let error = store.put_if_absent(key, Bytes::from_static(b"x")).await.unwrap_err();
        assert!(!error.is_retriable(), "{key:?}: {error}");
        assert!(store.start_upload(key).await.is_err(), "{key:?}");
    }
    assert!(store.list("").await.unwrap().is_empty());
}
