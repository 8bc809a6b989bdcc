//! Compression at the volume level, through the `Volume` handle: the
//! descriptor records the algorithm and level, blocks keep being read by
//! their own `Content-Encoding`, and descriptors written before zstd still
//! open as deflate volumes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attribute, GetOptions, ObjectStore};
use s3block_core::{BlockDevice, BlockId, Error};
use s3block_store::{
    Compression, CompressionAlgorithm, Create, OpenedStore, StoreConfig, Volume, VolumeDescriptor,
};

const BS: u64 = 64 << 10;

fn opened(dir: &tempfile::TempDir) -> OpenedStore {
    let url = format!("file://{}", dir.path().display());
    StoreConfig::new(url).env(HashMap::new()).open().expect("local store")
}

fn text_block(seed: u8) -> Bytes {
    let line = format!("block {seed}: the quick brown fox jumps over the lazy dog\n");
    line.repeat(BS as usize / line.len() + 1).into_bytes()[..BS as usize].to_vec().into()
}

async fn encoding(store: &Arc<dyn ObjectStore>, key: &str) -> (u64, Option<String>) {
    let head = store
        .get_opts(&Path::from(key), GetOptions { head: true, ..Default::default() })
        .await
        .expect("head");
    (head.meta.size, head.attributes.get(&Attribute::ContentEncoding).map(|v| v.as_ref().to_owned()))
}

async fn open(dir: &tempfile::TempDir, compression: Option<Compression>) -> Volume {
    let mut b = Volume::builder(opened(dir)).size(16 * BS).block_size(BS).create(Create::IfMissing);
    if let Some(c) = compression {
        b = b.compress(c);
    }
    b.open().await.expect("open")
}

#[tokio::test]
async fn a_zstd_volume_records_it_and_writes_zstd_whatever_the_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zstd = Compression::zstd(9).expect("level");
    let v = open(&dir, Some(zstd)).await;
    assert!(v.created());
    let d = v.descriptor().expect("descriptor");
    assert_eq!((d.compression, d.compression_algorithm), (Some(9), CompressionAlgorithm::Zstd));
    assert!(v.description().contains("zstd level 9"), "{}", v.description());
    v.device().write_block(BlockId(1), text_block(1)).await.expect("write");
    let store = v.device().store().clone();
    let key = v.device().key(BlockId(1));
    v.close().await.expect("close");
    let (size, enc) = encoding(&store, &key).await;
    assert_eq!(enc.as_deref(), Some("zstd"));
    assert!(size < BS / 20, "a text block took {size} bytes");

    // Opened without --compress: reads the zstd block, writes zstd (the descriptor's).
    let v = open(&dir, None).await;
    assert_eq!(v.device().read_block(BlockId(1)).await.expect("read"), text_block(1));
    v.device().write_block(BlockId(2), text_block(2)).await.expect("write");
    assert_eq!(encoding(&store, &v.device().key(BlockId(2))).await.1.as_deref(), Some("zstd"));
    v.close().await.expect("close");

    // The descriptor as stored names the algorithm.
    let raw = std::fs::read_to_string(dir.path().join("s3block-volume.json")).expect("descriptor");
    assert!(raw.contains("\"compression_algorithm\": \"zstd\""), "{raw}");
}

#[tokio::test]
async fn a_deflate_volume_stays_deflate_and_reads_zstd_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v = open(&dir, Some(Compression::deflate(6).expect("level"))).await;
    v.close().await.expect("close");
    // Its descriptor reads as before zstd: no algorithm field.
    let raw = std::fs::read_to_string(dir.path().join("s3block-volume.json")).expect("descriptor");
    assert!(!raw.contains("compression_algorithm"), "{raw}");

    // Asking for zstd on it changes nothing: the descriptor's deflate wins.
    let v = open(&dir, Some(Compression::zstd(3).expect("level"))).await;
    let d = v.descriptor().expect("descriptor");
    assert_eq!(d.compressed_with().expect("valid"), Some(Compression::deflate(6).expect("level")));
    v.device().write_block(BlockId(1), text_block(1)).await.expect("write");
    let store = v.device().store().clone();
    assert_eq!(encoding(&store, &v.device().key(BlockId(1))).await.1.as_deref(), Some("deflate"));

    // A zstd block put there by another program (s3backer 2.x) reads back.
    let key = v.device().key(BlockId(3));
    let zstd_device = v.device().clone().with_codecs(
        s3block_store::volume_codecs(Some(Compression::zstd(3).expect("level")), None).expect("codecs"),
    );
    zstd_device.write_block(BlockId(3), text_block(3)).await.expect("zstd write");
    assert_eq!(encoding(&store, &key).await.1.as_deref(), Some("zstd"));
    assert_eq!(v.device().read_block(BlockId(3)).await.expect("read"), text_block(3));
    v.close().await.expect("close");
}

#[test]
fn descriptors_from_before_zstd_parse_as_deflate() {
    // A descriptor as s3block wrote it before the algorithm was recorded.
    let old = r#"{
  "format": 1,
  "block_size": 65536,
  "size": 1048576,
  "compression": 6,
  "encryption": null,
  "hash_prefix": false,
  "volume_id": "0123456789abcdef0123456789abcdef",
  "created_at": "20250101T000000Z"
}"#;
    let d: VolumeDescriptor = serde_json::from_str(old).expect("old descriptor");
    assert_eq!(d.compression_algorithm, CompressionAlgorithm::Deflate);
    assert_eq!(d.compressed_with().expect("valid"), Some(Compression::deflate(6).expect("level")));
    let none: VolumeDescriptor =
        serde_json::from_str(&old.replace("\"compression\": 6", "\"compression\": null"))
            .expect("uncompressed descriptor");
    assert_eq!(none.compressed_with().expect("valid"), None);
    // Written back, a deflate descriptor is the same JSON as before.
    let again: serde_json::Value = serde_json::to_value(&d).expect("json");
    assert_eq!(again, serde_json::from_str::<serde_json::Value>(old).expect("json"));
    // A level the algorithm does not have is bad metadata, naming the descriptor.
    let bad: VolumeDescriptor = serde_json::from_str(
        &old.replace("\"compression\": 6", "\"compression\": 30, \"compression_algorithm\": \"zstd\""),
    )
    .expect("parses");
    let err = bad.compressed_with().expect_err("level 30");
    assert!(matches!(&err, Error::BadMetadata { key, .. } if key.contains("s3block-volume.json")), "{err}");
}
