//! What the S3 test server (Garage) does with the requests s3block sends,
//! through `object_store` directly: attributes on PUT, conditional create,
//! deletes, bulk delete and listing from an offset.
//!
//! The store crate relies on these facts; if a Garage upgrade changes one,
//! the test that pins it fails here first, with the behaviour named.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload,
};
use s3block_testkit::{s3_env, unique_prefix};

fn path(prefix: &str, name: &str) -> Path {
    Path::from(format!("{prefix}{name}"))
}

async fn list_all(store: &AmazonS3, prefix: &str) -> BTreeSet<String> {
    store
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list the test prefix")
}

#[tokio::test]
async fn put_with_attributes_reads_them_back() {
    let Some(env) = s3_env() else { return };
    let store = env.store();
    let prefix = unique_prefix("put_with_attributes");
    let key = path(&prefix, "00000000");

    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, AttributeValue::from("application/x-s3backer-block"));
    attributes.insert(Attribute::ContentEncoding, AttributeValue::from("deflate"));
    attributes.insert(Attribute::Metadata("s3backer-blocksize".into()), AttributeValue::from("4096"));
    attributes.insert(Attribute::Metadata("s3backer-filesize".into()), AttributeValue::from("1073741824"));
    let body = Bytes::from_static(b"block zero bytes");
    let opts = PutOptions { attributes: attributes.clone(), ..PutOptions::default() };
    store.put_opts(&key, PutPayload::from(body.clone()), opts).await.expect("PUT with attributes");

    let got = store.get(&key).await.expect("GET");
    assert_eq!(got.attributes, attributes, "attributes returned by GET");
    assert_eq!(got.bytes().await.expect("GET body"), body);

    let head = store.get_opts(&key, GetOptions::new().with_head(true)).await.expect("HEAD");
    assert_eq!(head.attributes, attributes, "attributes returned by HEAD");
    assert_eq!(head.meta.size, body.len() as u64);

    store.delete(&key).await.expect("delete");
}

#[tokio::test]
async fn get_of_missing_key_is_not_found() {
    let Some(env) = s3_env() else { return };
    let store = env.store();
    let key = path(&unique_prefix("get_missing"), "00000001");
    let err = store.get(&key).await.expect_err("GET of a missing key");
    assert!(matches!(err, object_store::Error::NotFound { .. }), "GET of a missing key gave {err:?}");
    let err = store.head(&key).await.expect_err("HEAD of a missing key");
    assert!(matches!(err, object_store::Error::NotFound { .. }), "HEAD of a missing key gave {err:?}");
}

/// Garage 2.5 ignores `If-None-Match: *` on PUT: a second create of the same
/// key succeeds and replaces the object. The mount lock must therefore be
/// advisory on Garage. If this starts failing, Garage enforces it now and the
/// store can take the lock strictly there.
#[tokio::test]
async fn create_mode_is_not_enforced_by_garage() {
    let Some(env) = s3_env() else { return };
    let store = env.store();
    let key = path(&unique_prefix("create_twice"), "s3backer-mounted");
    let create = || PutOptions::from(PutMode::Create);

    store.put_opts(&key, PutPayload::from_static(b"first\n"), create()).await.expect("first create");
    let second = store.put_opts(&key, PutPayload::from_static(b"second\n"), create()).await;
    let body = store.get(&key).await.expect("GET").bytes().await.expect("body");
    assert!(second.is_ok(), "Garage refused the second create ({second:?}): it now enforces If-None-Match");
    assert_eq!(&body[..], b"second\n", "the ignored create replaced the object");
    store.delete(&key).await.expect("delete");
}

#[tokio::test]
async fn delete_of_missing_key_succeeds() {
    let Some(env) = s3_env() else { return };
    let store = env.store();
    let key = path(&unique_prefix("delete_missing"), "0000abcd");
    store.delete(&key).await.expect("DELETE of a missing key is success on S3");
}

#[tokio::test]
async fn bulk_delete_of_1500_keys() {
    let Some(env) = s3_env() else { return };
    let store: Arc<AmazonS3> = env.store();
    let prefix = unique_prefix("bulk_delete");
    let keys: Vec<Path> = (0..1500u32).map(|i| path(&prefix, &format!("{i:08x}"))).collect();

    stream::iter(keys.clone())
        .map(|key| {
            let store = Arc::clone(&store);
            async move { store.put(&key, PutPayload::from_static(b"x")).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await
        .expect("PUT 1500 keys");
    assert_eq!(list_all(&store, &prefix).await.len(), 1500);

    // One missing key in the batch: S3 reports it deleted, not an error.
    let mut to_delete = keys.clone();
    to_delete.push(path(&prefix, "ffffffff"));
    let deleted: Vec<Path> = store
        .delete_stream(stream::iter(to_delete.into_iter().map(Ok)).boxed())
        .try_collect()
        .await
        .expect("bulk delete");
    assert_eq!(deleted.len(), 1501);
    assert!(list_all(&store, &prefix).await.is_empty(), "objects left after bulk delete");
}

#[tokio::test]
async fn list_with_offset_starts_after_the_offset() {
    let Some(env) = s3_env() else { return };
    let store = env.store();
    let prefix = unique_prefix("list_offset");
    for i in 0..10u32 {
        store.put(&path(&prefix, &format!("{i:08x}")), PutPayload::from_static(b"y")).await.expect("PUT");
    }
    let listed: Vec<String> = store
        .list_with_offset(Some(&Path::from(prefix.as_str())), &path(&prefix, "00000004"))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list_with_offset");
    let expected: Vec<String> = (5..10u32).map(|i| format!("{prefix}{i:08x}")).collect();
    let listed_sorted: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(listed.len(), expected.len(), "listed {listed:?}");
    assert_eq!(listed_sorted, expected.into_iter().collect());
    assert_eq!(list_all(&store, &prefix).await.len(), 10);

    let all: Vec<Path> = (0..10u32).map(|i| path(&prefix, &format!("{i:08x}"))).collect();
    store
        .delete_stream(stream::iter(all.into_iter().map(Ok)).boxed())
        .try_collect::<Vec<_>>()
        .await
        .expect("cleanup");
}

#[tokio::test]
async fn wrong_secret_is_refused_at_once() {
    let Some(env) = s3_env() else { return };
    let mut bad = env.clone();
    bad.secret_access_key = format!("{}x", env.secret_access_key);
    let store = bad.store();
    let key = path(&unique_prefix("wrong_secret"), "00000000");
    let err = store.put(&key, PutPayload::from_static(b"z")).await.expect_err("PUT with a wrong secret");
    // Garage answers 403 AccessDenied "Invalid signature", without retries.
    assert!(
        matches!(err, object_store::Error::PermissionDenied { .. }),
        "PUT with a wrong secret gave {err:?}"
    );
}

/// A missing bucket is reported as `NotFound`, like a missing object; only
/// the S3 error code in the message (`NoSuchBucket`) tells them apart. The
/// store must therefore check the bucket when it opens a volume, or a read
/// of a missing bucket would look like a volume of zeros.
#[tokio::test]
async fn missing_bucket_is_not_found_with_no_such_bucket() {
    let Some(env) = s3_env() else { return };
    let store = env.with_bucket("s3block-no-such-bucket").store();
    let key = path(&unique_prefix("missing_bucket"), "00000000");
    let put = store.put(&key, PutPayload::from_static(b"z")).await.expect_err("PUT into a missing bucket");
    let get = store.get(&key).await.expect_err("GET from a missing bucket");
    for (what, err) in [("PUT", put), ("GET", get)] {
        assert!(
            matches!(err, object_store::Error::NotFound { .. }) && err.to_string().contains("NoSuchBucket"),
            "{what} into a missing bucket gave {err:?}"
        );
    }
}

/// Garage 2.5 also ignores `If-Match` on PUT: `PutMode::Update` with an ETag
/// that does not match still replaces the object. No compare-and-swap is
/// possible on Garage.
#[tokio::test]
async fn update_mode_is_not_enforced_by_garage() {
    let Some(env) = s3_env() else { return };
    let store = env.store();
    let key = path(&unique_prefix("update_stale"), "s3block-volume.json");
    let first = store.put(&key, PutPayload::from_static(b"v1")).await.expect("first PUT");
    let stale = object_store::UpdateVersion {
        e_tag: Some("\"00000000000000000000000000000000\"".to_owned()),
        version: None,
    };
    assert_ne!(first.e_tag, stale.e_tag);
    let result =
        store.put_opts(&key, PutPayload::from_static(b"v2"), PutOptions::from(PutMode::Update(stale))).await;
    let body = store.get(&key).await.expect("GET").bytes().await.expect("body");
    assert!(
        result.is_ok() && &body[..] == b"v2",
        "Garage honoured If-Match ({result:?}, body {body:?}): it now enforces it"
    );
    store.delete(&key).await.expect("delete");
}
