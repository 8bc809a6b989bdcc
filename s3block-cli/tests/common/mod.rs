//! Helpers shared by the CLI's store tests (local stores in `volumes.rs`,
//! Garage in `garage.rs`): block contents, raw objects, and the bad-object
//! check of `verify` run on each store.

#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, ObjectStore, PutOptions};
use s3block_cli::LayoutArgs;
use s3block_cli::maint::verify_blocks;
use s3block_cli::target::Target;
use s3block_cli::volume::open;
use s3block_core::{BlockDevice, BlockId};

/// A pattern that differs per byte and per block, with zero blocks between.
pub fn fill(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i / 7) as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Stores an object as is, with `encoding` as its Content-Encoding.
pub async fn put(store: &dyn ObjectStore, key: &str, body: Vec<u8>, encoding: Option<&str>) {
    let mut attributes = Attributes::new();
    if let Some(e) = encoding {
        attributes.insert(Attribute::ContentEncoding, AttributeValue::from(e.to_owned()));
    }
    store
        .put_opts(&Path::from(key), body.into(), PutOptions { attributes, ..Default::default() })
        .await
        .expect("store the test object");
}

/// On a volume of 4K blocks: writes the `good` blocks (none of 1, 2, 3),
/// stores block 1 truncated, block 2 as garbage marked deflate and block 3
/// with an unknown Content-Encoding, and checks that `verify_blocks`
/// checks them all and names exactly blocks 1 to 3, their keys and what is
/// wrong. Returns the keys of blocks 1, 2 and 3.
pub async fn plant_bad_blocks_and_verify(t: &Target, good: &[u32]) -> [String; 3] {
    let v = open(t, &LayoutArgs::default()).await.expect("open the volume");
    for (i, &b) in good.iter().enumerate() {
        v.device
            .write_block(BlockId(b), Bytes::from(fill(4096, 3 + i as u8)))
            .await
            .expect("write a good block");
    }
    let key = |b| v.volume.layout.key(BlockId(b));
    let store = t.store.as_ref();
    put(store, &key(1), fill(100, 1), None).await; // truncated
    put(store, &key(2), b"definitely not zlib".to_vec(), Some("deflate")).await; // garbage
    put(store, &key(3), fill(4096, 2), Some("br")).await; // wrong Content-Encoding
    let report = verify_blocks(t, &LayoutArgs::default(), 4, true).await.expect("verify runs");
    assert_eq!(report.checked, good.len() as u64 + 3);
    let bad: Vec<(u32, &str)> = report.bad.iter().map(|b| (b.block, b.key.as_str())).collect();
    assert_eq!(bad, vec![(1, key(1).as_str()), (2, key(2).as_str()), (3, key(3).as_str())]);
    assert!(report.bad[0].reason.contains("100 bytes"), "{:?}", report.bad[0]);
    assert!(report.bad[1].reason.contains("decompress"), "{:?}", report.bad[1]);
    assert!(report.bad[2].reason.contains("br"), "{:?}", report.bad[2]);
    [key(1), key(2), key(3)]
}
