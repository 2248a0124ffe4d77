#![allow(clippy::unwrap_used, clippy::expect_used)]
//! What the store relies on from the server, checked with the bare SDK (not the
//! store): `If-None-Match: *` on PutObject and CompleteMultipartUpload refuses to
//! replace an object, and PutObject does so atomically when writers race.
//!
//! SeaweedFS 4.48 honours the header on both, but checks it before completing a
//! multipart upload rather than atomically with it (two racing completions from
//! separate clients both won in about one round of four when we tried), so the store
//! serialises completions within the process (`src/s3/completion_lock.rs`).

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use plexus_tests::seaweed::SeaweedFs;

const BUCKET: &str = "conditional";

fn client(server: &SeaweedFs) -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .endpoint_url(server.endpoint())
        .region(Region::from_static("us-east-1"))
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            server.access_key_id(),
            server.secret_access_key(),
            None,
            None,
            "test",
        ))
        .build();
    Client::from_conf(config)
}

fn server() -> SeaweedFs {
    let server = SeaweedFs::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    server
}

/// Whether a conditional write succeeded (`true`) or met an existing object (`false`).
fn outcome<E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug, O>(
    result: Result<O, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            assert_eq!(status, Some(412), "{e:?}");
            false
        }
    }
}

async fn put(client: &Client, key: &str, body: &'static [u8]) -> bool {
    outcome(
        client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from_static(body))
            .send()
            .await,
    )
}

/// Starts an upload of `key` with one part holding `body`; returns its id and part.
async fn upload_with_part(client: &Client, key: &str, body: &'static [u8]) -> (String, CompletedPart) {
    let upload = client
        .create_multipart_upload()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap().to_owned();
    let part = client
        .upload_part()
        .bucket(BUCKET)
        .key(key)
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from_static(body))
        .send()
        .await
        .unwrap();
    let part = CompletedPart::builder()
        .part_number(1)
        .e_tag(part.e_tag().unwrap())
        .build();
    (id, part)
}

async fn complete(client: &Client, key: &str, id: &str, part: CompletedPart) -> bool {
    outcome(
        client
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .upload_id(id)
            .multipart_upload(CompletedMultipartUpload::builder().parts(part).build())
            .if_none_match("*")
            .send()
            .await,
    )
}

async fn content(client: &Client, key: &str) -> Vec<u8> {
    let object = client.get_object().bucket(BUCKET).key(key).send().await.unwrap();
    object.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test]
async fn put_object_and_complete_refuse_an_existing_key() {
    let server = server();
    let client = client(&server);
    assert!(put(&client, "put", b"first").await);
    assert!(!put(&client, "put", b"second").await, "PutObject replaced the object");
    assert_eq!(content(&client, "put").await, b"first");

    let (id, part) = upload_with_part(&client, "put", b"from an upload").await;
    assert!(
        !complete(&client, "put", &id, part).await,
        "CompleteMultipartUpload replaced a PutObject"
    );
    assert_eq!(content(&client, "put").await, b"first");

    let (id, part) = upload_with_part(&client, "mpu", b"first upload").await;
    assert!(complete(&client, "mpu", &id, part).await);
    let (id, part) = upload_with_part(&client, "mpu", b"second upload").await;
    assert!(
        !complete(&client, "mpu", &id, part).await,
        "CompleteMultipartUpload replaced an upload"
    );
    assert!(!put(&client, "mpu", b"a put").await, "PutObject replaced an upload");
    assert_eq!(content(&client, "mpu").await, b"first upload");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_put_objects_have_one_winner() {
    let server = server();
    let (a, b) = (client(&server), client(&server));
    for round in 0..50 {
        let key = format!("race-{round}");
        let (first, second) = tokio::join!(put(&a, &key, b"a"), put(&b, &key, b"b"));
        assert!(first ^ second, "round {round}: PutObject outcomes {first} and {second}");
        let expected: &[u8] = if first { b"a" } else { b"b" };
        assert_eq!(content(&a, &key).await, expected);
    }
}
