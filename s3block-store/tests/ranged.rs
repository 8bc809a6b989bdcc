//! Ranged reads of raw blocks (`read_partial` on the object device): one
//! GET of the bytes asked for on the local directory and in memory, zeros
//! for an absent block, and the whole object, decoded, for an old object
//! that carries a `Content-Encoding`.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use s3block_core::{BlockDevice, BlockId, Geometry, KeyLayout, RequestCounters};
use s3block_store::{CodecChain, Compression, CountingStore, Create, ObjectBlockDevice, StoreConfig, Volume};

const BS: u64 = 1 << 20;

/// A block whose every byte says where it is.
fn pattern(seed: u8) -> Bytes {
    (0..BS as usize).map(|i| (i / 4096) as u8 ^ (i as u8).wrapping_mul(7) ^ seed).collect::<Vec<_>>().into()
}

fn device(
    store: Arc<dyn ObjectStore>,
    counters: &Arc<RequestCounters>,
    codecs: CodecChain,
) -> ObjectBlockDevice {
    let counted: Arc<dyn ObjectStore> = Arc::new(CountingStore::new(store, counters.clone()));
    ObjectBlockDevice::new(counted, KeyLayout::new("v/", false), Geometry::new(8 * BS, BS).expect("geometry"))
        .with_counters(counters.clone())
        .with_codecs(codecs)
}

#[tokio::test]
async fn a_4k_read_of_a_raw_block_downloads_4k_in_one_ranged_get() {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let counters = Arc::new(RequestCounters::default());
    let dev = device(mem, &counters, CodecChain::new());
    assert!(dev.writes_raw());
    dev.write_block(BlockId(3), pattern(3)).await.expect("write");
    counters.reset();
    let got = dev.read_partial(BlockId(3), 4096 * 17 + 100, 5000).await.expect("read");
    assert_eq!(&got[..], &pattern(3)[4096 * 17 + 100..4096 * 17 + 5100]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.bytes_received, c.fetch_bytes_received), (1, 1, 5000, 5000));
    // An absent block reads as zeros, still in one request.
    let zeros = dev.read_partial(BlockId(5), 8192, 4096).await.expect("read");
    assert!(zeros.iter().all(|&b| b == 0) && zeros.len() == 4096);
    assert_eq!(counters.snapshot().gets, 2);
    // A read of the whole block is a plain GET.
    dev.read_partial(BlockId(3), 0, BS as usize).await.expect("read");
    assert_eq!(counters.snapshot().ranged_gets, 2);
}

#[tokio::test]
async fn an_old_compressed_object_is_read_whole_and_decoded() {
    let mem: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let counters = Arc::new(RequestCounters::default());
    let deflate = CodecChain::new().with(Compression::deflate(6).expect("level").codec().expect("codec"));
    let old = device(mem.clone(), &counters, deflate);
    assert!(!old.writes_raw());
    old.write_block(BlockId(2), pattern(2)).await.expect("write");
    // The volume now writes raw; the block is still compressed.
    let raw = device(mem, &counters, CodecChain::new());
    counters.reset();
    let got = raw.read_partial(BlockId(2), 4096 * 200, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(2)[4096 * 200..4096 * 201]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets), (2, 1), "a ranged GET, then the whole object");
    // A compressed volume never asks for a range.
    let old = device(
        Arc::new(InMemory::new()),
        &counters,
        CodecChain::new().with(Compression::deflate(6).expect("level").codec().expect("codec")),
    );
    old.write_block(BlockId(1), pattern(1)).await.expect("write");
    counters.reset();
    let got = old.read_partial(BlockId(1), 4096, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(1)[4096..8192]);
    assert_eq!((counters.snapshot().gets, counters.snapshot().ranged_gets), (1, 0));
}

/// The local directory keeps attributes in a sidecar; a range of a raw
/// block is still a range of the block, and only it is received.
#[tokio::test]
async fn the_local_directory_serves_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("file://{}", dir.path().display());
    let opened = StoreConfig::new(url).env(HashMap::new()).open().expect("local store");
    let v = Volume::builder(opened)
        .size(8 * BS)
        .block_size(BS)
        .create(Create::IfMissing)
        .open()
        .await
        .expect("open");
    let dev = v.device().clone();
    dev.write_block(BlockId(4), pattern(4)).await.expect("write");
    dev.counters().reset();
    let got = dev.read_partial(BlockId(4), 4096 * 255, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(4)[4096 * 255..]);
    let c = dev.counters().snapshot();
    assert_eq!((c.gets, c.ranged_gets), (1, 1));
    assert!(c.bytes_received <= 64 << 10, "{} bytes received", c.bytes_received);
    v.close().await.expect("close");
}
