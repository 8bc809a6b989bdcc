//! Known-answer tests of the s3backer-compatible encryption, from objects
//! s3backer 1.5.4 itself wrote (see `tests/fixtures/README.md`).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, PutOptions};
use s3block_core::{BlockDevice, BlockId, Error};
use s3block_store::{
    EncryptionOptions, EncryptionScheme, GeometrySource, ObjectBlockDevice, Password, VolumeOptions,
    open_volume_with,
};

const BUCKET: &str = "s3backer-fixture";
const PREFIX: &str = "fx/";
const PASSWORD: &str = "s3block-fixture";

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/s3backer-1.5.4-aes-128-cbc")
}

/// The block as the fixture's README says it was written.
fn expected_block(n: u32) -> Vec<u8> {
    let line = format!("s3block fixture: block {n} written by s3backer 1.5.4\n");
    line.as_bytes().iter().copied().cycle().take(4096).collect()
}

/// Puts the fixture objects, with their recorded headers, into a memory store.
async fn fixture_store() -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    for name in ["00000000", "00000005"] {
        let body = std::fs::read(fixture_dir().join(format!("{name}.obj"))).expect("fixture body");
        let head: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixture_dir().join(format!("{name}.head.json"))).expect("head"),
        )
        .expect("head json");
        let mut attrs = Attributes::new();
        let text = |v: &serde_json::Value| v.as_str().expect("a string header").to_owned();
        attrs.insert(Attribute::ContentEncoding, AttributeValue::from(text(&head["ContentEncoding"])));
        attrs.insert(Attribute::ContentType, AttributeValue::from(text(&head["ContentType"])));
        for (k, v) in head["Metadata"].as_object().expect("metadata") {
            attrs.insert(Attribute::Metadata(k.clone().into()), AttributeValue::from(text(v)));
        }
        let put = PutOptions { attributes: attrs, ..Default::default() };
        store.put_opts(&Path::from(format!("{PREFIX}{name}")), body.into(), put).await.expect("put fixture");
    }
    store
}

fn options(password: &str) -> EncryptionOptions {
    EncryptionOptions::new(Password::new(password), BUCKET).scheme(EncryptionScheme::Aes128Cbc)
}

#[tokio::test]
async fn reads_blocks_s3backer_wrote() {
    let store = fixture_store().await;
    let (volume, codecs) =
        open_volume_with(store.as_ref(), PREFIX, &VolumeOptions::default(), Some(&options(PASSWORD)))
            .await
            .expect("open the s3backer volume");
    assert_eq!(volume.source, GeometrySource::Block0);
    assert_eq!((volume.geometry.block_size(), volume.geometry.size()), (4096, 1 << 20));
    let dev =
        ObjectBlockDevice::new(store.clone(), volume.layout.clone(), volume.geometry).with_codecs(codecs);
    assert_eq!(dev.read_block(BlockId(0)).await.expect("block 0").to_vec(), expected_block(0));
    assert_eq!(dev.read_block(BlockId(5)).await.expect("block 5").to_vec(), expected_block(5));
    assert!(dev.read_block(BlockId(1)).await.expect("block 1").iter().all(|&b| b == 0));

    // What s3block writes in this scheme reads back (and carries s3backer's headers).
    dev.write_block(BlockId(7), expected_block(7).into()).await.expect("write 7");
    assert_eq!(dev.read_block(BlockId(7)).await.expect("block 7").to_vec(), expected_block(7));
}

#[tokio::test]
async fn wrong_password_is_refused_at_open() {
    let store = fixture_store().await;
    let err = open_volume_with(store.as_ref(), PREFIX, &VolumeOptions::default(), Some(&options("not it")))
        .await
        .expect_err("a wrong password must be refused");
    assert!(matches!(&err, Error::WrongPassword { key, .. } if key == "fx/00000000"), "{err}");
    assert!(err.to_string().contains("wrong password"), "{err}");
    // The bucket name is part of s3backer's key.
    let mut elsewhere = options(PASSWORD);
    elsewhere.bucket = "another-bucket".into();
    let err = open_volume_with(store.as_ref(), PREFIX, &VolumeOptions::default(), Some(&elsewhere))
        .await
        .expect_err("another bucket name gives another key");
    assert!(matches!(err, Error::WrongPassword { .. }), "{err}");
}

#[tokio::test]
async fn tampered_or_moved_fixture_fails_authentication() {
    let store = fixture_store().await;
    let (volume, codecs) =
        open_volume_with(store.as_ref(), PREFIX, &VolumeOptions::default(), Some(&options(PASSWORD)))
            .await
            .expect("open");
    let dev =
        ObjectBlockDevice::new(store.clone(), volume.layout.clone(), volume.geometry).with_codecs(codecs);
    let got = store.get_opts(&Path::from("fx/00000005"), GetOptions::default()).await.expect("get");
    let attrs = got.attributes.clone();
    let body = got.bytes().await.expect("body");
    let put = PutOptions { attributes: attrs.clone(), ..Default::default() };
    store.put_opts(&Path::from("fx/00000006"), body.clone().into(), put).await.expect("copy");
    let err = dev.read_block(BlockId(6)).await.expect_err("moved");
    assert!(
        matches!(&err, Error::Corrupt { block: BlockId(6), reason, .. } if reason.contains("authentication failed")),
        "{err}"
    );
    let mut bad = body.to_vec();
    bad[40] ^= 1;
    let put = PutOptions { attributes: attrs, ..Default::default() };
    store.put_opts(&Path::from("fx/00000005"), bad.into(), put).await.expect("tamper");
    let err = dev.read_block(BlockId(5)).await.expect_err("tampered");
    assert!(
        err.to_string().contains("authentication failed") && err.to_string().contains("fx/00000005"),
        "{err}"
    );
}
