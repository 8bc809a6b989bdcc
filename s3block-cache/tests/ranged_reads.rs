//! Ranged reads: a read miss of a few pages of a large raw block fetches
//! those pages (one ranged GET), never takes them for the whole block, and
//! leaves old encoded objects, sequential scans and partly written blocks
//! right. The cache runs over the object device on the store stack a mount
//! uses (`memory://`, request counting, retries), with faults injected in
//! the model test.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::model::{cases, until_ok};
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, path::Path};
use proptest::prelude::*;
use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, Geometry, KeyLayout, RequestCounters};
use s3block_store::{
    ChunkedXChaChaCodec, CodecChain, Compression, INJECT_FAULTS_ENV, ObjectBlockDevice, RetryConfig,
    StoreConfig, XChaChaCodec,
};

/// The object device over a fresh `memory://` store (faults injected per
/// `faults`, an `S3BLOCK_INJECT_FAULTS` spec) and its request counters.
fn device(geometry: Geometry, faults: Option<String>) -> (ObjectBlockDevice, Arc<RequestCounters>) {
    let (dev, counters, _) = device_and_store(geometry, faults);
    (dev, counters)
}

/// [`device`], and the store under it (to alter objects behind its back).
fn device_and_store(
    geometry: Geometry,
    faults: Option<String>,
) -> (ObjectBlockDevice, Arc<RequestCounters>, Arc<dyn ObjectStore>) {
    let env: HashMap<String, String> =
        faults.into_iter().map(|f| (INJECT_FAULTS_ENV.to_owned(), f)).collect();
    let retry = RetryConfig::default()
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(Duration::from_millis(2))
        .max_attempts(2);
    let opened = StoreConfig::new("memory://").env(env).retry(retry).open().expect("memory store");
    let counters = opened.counters.clone();
    let store = opened.store.clone();
    let dev = ObjectBlockDevice::new(opened.store, KeyLayout::new("v/", false), geometry)
        .with_counters(counters.clone());
    (dev, counters, store)
}

/// A block whose bytes differ page to page.
fn pattern(len: usize, seed: u64) -> Bytes {
    (0..len).map(|i| ((i as u64 / 4096) * 31 + i as u64 * 7 + seed * 13) as u8).collect::<Vec<u8>>().into()
}

fn cache_config(cache_size: u64, counters: &Arc<RequestCounters>) -> CacheConfig {
    CacheConfig::builder()
        .cache_size(cache_size)
        .write_delay(Duration::from_millis(1))
        .counters(counters.clone())
        .build()
}

const M: usize = 1 << 20;

/// The codecs of a volume encrypted in authenticated 64 KiB chunks, which
/// also reads whole-object encrypted blocks.
fn chunked() -> CodecChain {
    CodecChain::new()
        .with_chunked(Arc::new(ChunkedXChaChaCodec::new(&[7; 32], "vol")))
        .with_decoder(Arc::new(XChaChaCodec::new(&[7; 32], "vol")))
}

/// On a volume encrypted in chunks, a byte altered in one chunk of a
/// stored block fails the reads that fetch that chunk, through the cache,
/// with a corrupt-block error naming the block's key; the altered bytes are
/// never served or kept, while reads of the block's other chunks still
/// authenticate and succeed.
#[tokio::test]
async fn an_altered_chunk_fails_the_reads_of_it_and_only_them() {
    const SEALED: usize = (64 << 10) + 16;
    let g = Geometry::new(8 * M as u64, M as u64).expect("geometry");
    let (dev, counters, store) = device_and_store(g, None);
    let dev = dev.with_codecs(chunked());
    dev.write_block(BlockId(2), pattern(M, 2)).await.expect("write");
    let key = KeyLayout::new("v/", false).key(BlockId(2));
    let path = Path::from(key.as_str());
    let got = store.get(&path).await.expect("get");
    let attributes = got.attributes.clone();
    let mut body = got.bytes().await.expect("body").to_vec();
    assert_eq!(body.len(), 16 * SEALED, "16 chunks of 64 KiB, each with its tag");
    body[5 * SEALED + 1000] ^= 0x40;
    store
        .put_opts(&path, body.into(), PutOptions { attributes, ..Default::default() })
        .await
        .expect("put the altered object");

    let cache = BlockCache::new(dev.clone(), cache_config(16 << 20, &counters)).expect("cache");
    let altered = 2 * M as u64 + 5 * 65536 + 4096;
    for attempt in 0..2 {
        let err = cache.read_at(altered, 4096).await.expect_err("the altered chunk must not read");
        let text = err.to_string();
        assert!(text.contains("authentication failed") && text.contains(&key), "attempt {attempt}: {text}");
    }
    // The other chunks of the block authenticate on their own.
    for chunk in [0usize, 4, 6, 15] {
        let at = chunk * 65536 + 512;
        let got = cache.read_at(2 * M as u64 + at as u64, 4096).await.expect("an intact chunk reads");
        assert_eq!(&got[..], &pattern(M, 2)[at..at + 4096], "chunk {chunk}");
    }
    // A read of the whole block takes in the altered chunk: it fails too.
    assert!(cache.read_at(2 * M as u64, M).await.is_err(), "a whole-block read must fail");
    let err = dev.read_block(BlockId(2)).await.expect_err("the device reads the object whole");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    cache.close().await.expect("close");
}

/// On a volume encrypted in chunks, a 4 KiB read of a cold 1 MiB block is
/// one ranged GET of the chunk it falls in (two when it straddles two),
/// authenticated; an object written another way is read whole.
#[tokio::test]
async fn a_4k_read_of_a_cold_encrypted_1m_block_downloads_one_chunk() {
    const SEALED: u64 = (64 << 10) + 16;
    let g = Geometry::new(8 * M as u64, M as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    let dev = dev.with_codecs(chunked());
    assert!(dev.ranged_reads());
    dev.write_block(BlockId(2), pattern(M, 2)).await.expect("write");
    let cache = BlockCache::new(dev.clone(), cache_config(16 << 20, &counters)).expect("cache");
    counters.reset();
    let at = 2 * M as u64 + 300_000;
    let got = cache.read_at(at, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 2)[300_000..304_096]);
    let c = counters.snapshot();
    assert_eq!((c.block_fetches, c.ranged_gets), (1, 1), "{c:?}");
    assert!(c.fetch_bytes_received <= (64 << 10) + 2 * 16, "{} bytes downloaded", c.fetch_bytes_received);
    assert_eq!(c.fetch_bytes_received, SEALED, "the chunk the read falls in, with its tag");
    // A read across a chunk boundary, away from the first: two chunks.
    let got = cache.read_at(2 * M as u64 + 10 * 65536 - 2048, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 2)[10 * 65536 - 2048..10 * 65536 + 2048]);
    let c = counters.snapshot();
    assert_eq!(c.ranged_gets, 2, "{c:?}");
    assert!(c.fetch_bytes_received <= 3 * SEALED, "{c:?}");
    // The device straight: a read straddling two chunks is one GET of both.
    counters.reset();
    let got = dev.read_partial(BlockId(2), 3 * 65536 - 100, 200).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 2)[3 * 65536 - 100..3 * 65536 + 100]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (1, 1, 2 * SEALED), "{c:?}");
    cache.close().await.expect("close");

    // An object of the whole-object format (an older volume's) under the
    // same key: the range is refused on its encoding, the block read whole.
    let whole = dev.clone().with_codecs(
        CodecChain::new()
            .with(Arc::new(XChaChaCodec::new(&[7; 32], "vol")))
            .with_decoder(Arc::new(ChunkedXChaChaCodec::new(&[7; 32], "vol"))),
    );
    whole.write_block(BlockId(3), pattern(M, 3)).await.expect("write");
    counters.reset();
    let got = dev.read_partial(BlockId(3), 70_000, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 3)[70_000..74_096]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets), (2, 1), "a ranged GET, then the whole object: {c:?}");
    // Compressed and chunked: whole objects, no ranges.
    let deflate = Compression::deflate(6).expect("level").codec().expect("codec");
    let compressed = dev.clone().with_codecs(
        CodecChain::new().with(deflate).with_chunked(Arc::new(ChunkedXChaChaCodec::new(&[7; 32], "vol"))),
    );
    assert!(!compressed.ranged_reads());
    compressed.write_block(BlockId(4), pattern(M, 4)).await.expect("write");
    let got = compressed.read_partial(BlockId(4), 70_000, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 4)[70_000..74_096]);
    // An absent block reads as zeros.
    assert!(dev.read_partial(BlockId(6), 1000, 4096).await.expect("read").iter().all(|&b| b == 0));
}

#[tokio::test]
async fn a_4k_read_of_a_cold_1m_block_downloads_no_more_than_64k() {
    let g = Geometry::new(8 * M as u64, M as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    dev.write_block(BlockId(2), pattern(M, 2)).await.expect("write");
    let cache = BlockCache::new(dev, cache_config(16 << 20, &counters)).expect("cache");
    counters.reset();
    let at = 2 * M as u64 + 300_000;
    let got = cache.read_at(at, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 2)[300_000..304_096]);
    let c = counters.snapshot();
    assert_eq!((c.block_fetches, c.ranged_gets), (1, 1), "{c:?}");
    assert!(c.fetch_bytes_received <= 64 << 10, "{} bytes downloaded", c.fetch_bytes_received);
    assert_eq!(c.fetch_bytes_received, 65536, "the 64 KiB granule the read falls in");
    // The same pages again: a hit, no request.
    cache.read_at(at + 10, 100).await.expect("read");
    assert_eq!(counters.snapshot().gets, 1);
    assert_eq!(cache.stats().hits, 1);
    // Other bytes of the block, away from those pages: a second miss
    // fetches its granule too, and both stay cached.
    let got = cache.read_at(2 * M as u64, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 2)[..4096]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (2, 2, 2 * 65536));
    for at in [2 * M as u64 + 60_000, at] {
        let got = cache.read_at(at, 4096).await.expect("read");
        let off = (at - 2 * M as u64) as usize;
        assert_eq!(&got[..], &pattern(M, 2)[off..off + 4096]);
    }
    assert_eq!(counters.snapshot().gets, 2, "both granules are hits");
    // A read that starts where fetched pages end, but not where the last
    // read ended: random, its granule alone.
    let got = cache.read_at(2 * M as u64 + 5 * 65536, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 2)[5 * 65536..5 * 65536 + 4096]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (3, 3, 3 * 65536));
    // A read right after the last one, past fetched pages: the reads turn
    // sequential, the block comes whole.
    cache.read_at(2 * M as u64 + 61440, 4096).await.expect("read");
    let got = cache.read_at(2 * M as u64 + 65536, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 2)[65536..69632]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (4, 3, 3 * 65536 + M as u64));
    // From now on the whole block is cached.
    cache.read_at(3 * M as u64 - 4096, 4096).await.expect("read");
    assert_eq!(counters.snapshot().gets, 4);
    // An absent block reads as zeros.
    assert!(cache.read_at(5 * M as u64 + 12_345, 4096).await.expect("read").iter().all(|&b| b == 0));
    assert_eq!(cache.stats().misses, 5);
    cache.close().await.expect("close");
}

/// Each read miss that could have fetched a part and fetched the whole
/// block instead is counted under the rule that chose it, in the stats and
/// in the stats file's text; the ranged ones are not.
#[tokio::test]
async fn whole_block_misses_are_counted_by_the_rule_that_chose_them() {
    const G: usize = 64 << 10;
    let g = Geometry::new(16 * M as u64, M as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    for b in 0..16 {
        dev.write_block(BlockId(b), pattern(M, b.into())).await.expect("write");
    }
    // Writes stay dirty for the test's length.
    let config = cache_config(64 << 20, &counters).to_builder().write_delay(Duration::from_secs(600)).build();
    let cache = BlockCache::new(dev, config).expect("cache");
    counters.reset();
    let read = |at: usize, len: usize| {
        let cache = &cache;
        async move {
            let got = cache.read_at(at as u64, len).await.expect("read");
            let (block, off) = (at / M, at % M);
            assert_eq!(&got[..], &pattern(M, block as u64)[off..off + len], "at {at}");
        }
    };
    let whole = |cache: &BlockCache<_>| {
        let w = cache.stats().whole_block;
        [w.written, w.in_flight, w.large, w.sequential, w.next_block, w.dense]
    };
    // A random page: ranged, not counted.
    read(4096, 4096).await;
    assert_eq!(whole(&cache), [0; 6]);
    // Half of block 2 in one read: more than a quarter.
    read(2 * M, M / 2).await;
    assert_eq!(whole(&cache), [0, 0, 1, 0, 0, 0]);
    // Block 5: a page at a granule's end, then the page after it.
    read(5 * M + G - 4096, 4096).await;
    read(5 * M + G, 4096).await;
    assert_eq!(whole(&cache), [0, 0, 1, 1, 0, 0]);
    // A page of block 7, then one of block 8 elsewhere than its start: a
    // random read on the next block by chance, ranged.
    read(7 * M + 500_000, 4096).await;
    read(8 * M + 300_000, 4096).await;
    assert_eq!(whole(&cache), [0, 0, 1, 1, 0, 0]);
    // The last page of block 6, then the first of block 7 (the granule
    // fetched above is elsewhere): a scan going on.
    read(7 * M - 4096, 4096).await;
    read(7 * M, 4096).await;
    assert_eq!(whole(&cache), [0, 0, 1, 1, 1, 0]);
    // Block 10 written in places, then read elsewhere.
    cache.write_at(10 * M as u64, Bytes::from_static(b"written")).await.expect("write");
    let got = cache.read_at(10 * M as u64 + 500_000, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 10)[500_000..504_096]);
    assert_eq!(whole(&cache), [1, 0, 1, 1, 1, 0]);
    // Block 12: eight scattered granules, then a ninth: dense.
    for granule in (1..16).step_by(2) {
        read(12 * M + granule * G + 1000, 4096).await;
    }
    assert_eq!(whole(&cache), [1, 0, 1, 1, 1, 0]);
    read(12 * M + 100, 4096).await;
    assert_eq!(whole(&cache), [1, 0, 1, 1, 1, 1]);
    // Two reads of block 14 at once: the first fetches its granule, the
    // second finds that fetch in flight.
    tokio::join!(read(14 * M + 100_000, 4096), read(14 * M + 700_000, 4096));
    assert_eq!(whole(&cache), [1, 1, 1, 1, 1, 1]);
    let stats = cache.stats();
    let c = counters.snapshot();
    // Ranged: blocks 0, 5, 7, 8, 6, 12 (eight) and 14; the rest whole.
    assert_eq!(c.ranged_gets, 14, "{c:?}");
    assert_eq!(c.block_fetches, 14 + 6, "{c:?}");
    assert_eq!(stats.misses, 14 + 6, "{stats:?}");
    let text = stats.to_string();
    assert!(
        text.contains(
            "6 of the misses waited for the whole block, not a part: 1 written, 1 in flight, 1 large, 1 sequential, \
             1 next block, 1 dense"
        ),
        "{text}"
    );
    cache.reset_stats();
    assert_eq!(whole(&cache), [0; 6]);
    cache.close().await.expect("close");
}

#[tokio::test]
async fn scattered_reads_of_a_block_fetch_granules_until_half_of_it_is_asked_for() {
    const G: u64 = 64 << 10;
    let g = Geometry::new(4 * M as u64, M as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    dev.write_block(BlockId(3), pattern(M, 3)).await.expect("write");
    let cache = BlockCache::new(dev, cache_config(16 << 20, &counters)).expect("cache");
    counters.reset();
    let base = 3 * M as u64;
    // Every other granule, none next to one fetched before: eight granules,
    // half the block, each its own ranged GET.
    for (n, granule) in (1..16).step_by(2).enumerate() {
        let off = granule * G + 1000;
        let got = cache.read_at(base + off, 4096).await.expect("read");
        assert_eq!(&got[..], &pattern(M, 3)[off as usize..off as usize + 4096]);
        let c = counters.snapshot();
        assert_eq!((c.gets, c.ranged_gets), (n as u64 + 1, n as u64 + 1), "granule {granule}: {c:?}");
    }
    assert_eq!(counters.snapshot().fetch_bytes_received, 8 * G);
    // All of them hits now.
    for granule in (1..16).step_by(2) {
        cache.read_at(base + granule * G, 4096).await.expect("read");
    }
    assert_eq!(counters.snapshot().gets, 8);
    // A ninth granule would be more than half: the block comes whole and
    // answers everything after.
    let got = cache.read_at(base + 100, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 3)[100..4196]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (9, 8, 8 * G + M as u64), "{c:?}");
    let got = cache.read_at(base, M).await.expect("read");
    assert_eq!(got, pattern(M, 3));
    assert_eq!(counters.snapshot().gets, 9);
    cache.close().await.expect("close");
}

/// While the cache's misses keep coming back for blocks it evicted (its
/// readers' working set is larger than it), a block read densely is still
/// fetched a granule at a time: the whole block would be evicted again
/// before the rest of it is read, and would refetch what is held. Once the
/// misses are of other blocks again, dense reads fetch the whole block.
#[tokio::test]
async fn dense_reads_fetch_granules_while_the_cache_evicts_what_it_reads_again() {
    const G: u64 = 64 << 10;
    let g = Geometry::new(256 * M as u64, M as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    let written: Vec<u32> = (0..24).chain([30, 31]).collect();
    for &b in &written {
        dev.write_block(BlockId(b), pattern(M, u64::from(b))).await.expect("write");
    }
    // Room for 16 granules.
    let cache = BlockCache::new(dev, cache_config(M as u64, &counters)).expect("cache");
    counters.reset();
    let read = |block: u32, off: u64| {
        let cache = &cache;
        async move {
            let got = cache.read_at(u64::from(block) * M as u64 + off, 4096).await.expect("read");
            assert_eq!(
                &got[..],
                &pattern(M, u64::from(block))[off as usize..off as usize + 4096],
                "block {block}"
            );
        }
    };
    // Three rounds over 24 blocks, one granule each, in an order with no
    // two neighbours in a row: from the second round on, every miss is of a
    // block evicted to make room for the others.
    for _ in 0..3 {
        for i in 0..24 {
            read(i * 5 % 24, 0).await;
        }
    }
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (72, 72, 72 * G), "{c:?}");
    // Block 30, read densely: nine scattered granules, more than half of
    // it, each fetched alone.
    counters.reset();
    for granule in (1..16).step_by(2).chain([0]) {
        read(30, granule * G + 100).await;
    }
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (9, 9, 9 * G), "{c:?}");
    // Misses of blocks never evicted (absent ones, which read as zeros):
    // the cache is no longer thrashing.
    for i in 0..96 {
        let block: u64 = 100 + i * 5 % 96;
        let got = cache.read_at(block * M as u64, 4096).await.expect("read");
        assert!(got.iter().all(|&b| b == 0), "block {block}");
    }
    // Block 31, read the same way: the ninth granule brings the block.
    counters.reset();
    for granule in (1..16).step_by(2).chain([0]) {
        read(31, granule * G + 100).await;
    }
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (9, 8, 8 * G + M as u64), "{c:?}");
    let got = cache.read_at(31 * M as u64, M).await.expect("read");
    assert_eq!(got, pattern(M, 31));
    assert_eq!(counters.snapshot().gets, 9, "the block is whole in the cache");
    cache.close().await.expect("close");
}

/// Under 256 KiB blocks a 64 KiB granule is more than a quarter of a
/// block: every miss fetches its block whole, and none is counted as a
/// rule's choice.
#[tokio::test]
async fn small_blocks_are_fetched_whole_and_not_counted_as_a_rule() {
    let bs = 128usize << 10;
    let g = Geometry::new(8 * bs as u64, bs as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    dev.write_block(BlockId(2), pattern(bs, 2)).await.expect("write");
    let cache = BlockCache::new(dev, cache_config(16 << 20, &counters)).expect("cache");
    counters.reset();
    let got = cache.read_at(2 * bs as u64 + 8192, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(bs, 2)[8192..12288]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (1, 0, bs as u64), "{c:?}");
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.whole_block.total()), (1, 0), "{stats:?}");
    cache.close().await.expect("close");
}

#[tokio::test]
async fn ranged_reads_off_fetches_whole_blocks() {
    let g = Geometry::new(4 * M as u64, M as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    dev.write_block(BlockId(1), pattern(M, 1)).await.expect("write");
    let config = cache_config(16 << 20, &counters).to_builder().ranged_reads(false).build();
    let cache = BlockCache::new(dev, config).expect("cache");
    counters.reset();
    let got = cache.read_at(M as u64 + 8192, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(M, 1)[8192..12288]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets, c.fetch_bytes_received), (1, 0, M as u64));
    cache.close().await.expect("close");
}

/// Blocks written compressed or encrypted by an earlier configuration are
/// read whole and decoded, whatever ranged reads ask for.
#[tokio::test]
async fn old_compressed_and_encrypted_objects_read_right_with_ranged_reads_on() {
    let g = Geometry::new(8 * (256 << 10), 256 << 10).expect("geometry");
    let (raw, counters) = device(g, None);
    let deflate = Compression::deflate(6).expect("level").codec().expect("codec");
    let old = raw.clone().with_codecs(CodecChain::new().with(deflate));
    old.write_block(BlockId(1), pattern(256 << 10, 1)).await.expect("write");
    let sealed =
        raw.clone().with_codecs(CodecChain::new().with(Arc::new(XChaChaCodec::new(&[7; 32], "vol"))));
    sealed.write_block(BlockId(2), pattern(256 << 10, 2)).await.expect("write");
    // A volume that writes compressed reads whole blocks and keeps them:
    // two reads far apart in one block are one GET.
    let cache = BlockCache::new(old.clone(), cache_config(16 << 20, &counters)).expect("cache");
    counters.reset();
    for at in [4096, 200_000] {
        let got = cache.read_at((256 << 10) + at, 4096).await.expect("read");
        assert_eq!(&got[..], &pattern(256 << 10, 1)[at as usize..at as usize + 4096]);
    }
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets), (1, 0), "one whole GET on a compressing volume: {c:?}");
    cache.close().await.expect("close");
    // A volume that writes raw now meets an old compressed block.
    let cache = BlockCache::new(raw, cache_config(16 << 20, &counters)).expect("cache");
    counters.reset();
    let got = cache.read_at((256 << 10) + 70_000, 5000).await.expect("read");
    assert_eq!(&got[..], &pattern(256 << 10, 1)[70_000..75_000]);
    let c = counters.snapshot();
    assert_eq!((c.gets, c.ranged_gets), (2, 1), "a ranged GET, then the whole object: {c:?}");
    cache.close().await.expect("close");
    // An encrypted object read with its key: the device writes encoded, so
    // it never asks for a range; the bytes are right.
    let cache = BlockCache::new(sealed, cache_config(16 << 20, &counters)).expect("cache");
    counters.reset();
    let got = cache.read_at(2 * (256 << 10) + 4096, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(256 << 10, 2)[4096..8192]);
    assert_eq!((counters.snapshot().gets, counters.snapshot().ranged_gets), (1, 0));
    // The whole block it paid for is kept: a read elsewhere in it is a hit.
    let got = cache.read_at(2 * (256 << 10) + 200_000, 4096).await.expect("read");
    assert_eq!(&got[..], &pattern(256 << 10, 2)[200_000..204_096]);
    assert_eq!(
        (counters.snapshot().gets, counters.snapshot().ranged_gets),
        (1, 0),
        "a second GET of one block"
    );
    cache.close().await.expect("close");
}

#[tokio::test]
async fn a_sequential_scan_fetches_whole_blocks() {
    let bs = 256usize << 10;
    // Eight blocks, all stored: read-ahead stops at the end.
    let g = Geometry::new(8 * bs as u64, bs as u64).expect("geometry");
    for read_ahead in [0, 4 * bs as u64] {
        let (dev, counters) = device(g, None);
        for b in 0..8 {
            dev.write_block(BlockId(b), pattern(bs, b.into())).await.expect("write");
        }
        let config = cache_config(16 << 20, &counters).to_builder().read_ahead(read_ahead).build();
        let cache = BlockCache::new(dev, config).expect("cache");
        counters.reset();
        for at in (0..8 * bs).step_by(4096) {
            let got = cache.read_at(at as u64, 4096).await.expect("read");
            assert_eq!(&got[..], &pattern(bs, (at / bs) as u64)[at % bs..at % bs + 4096]);
        }
        let c = counters.snapshot();
        // The first read of the first block cannot know it starts a scan:
        // one page, then the block whole; every other block whole.
        assert_eq!(c.ranged_gets, 1, "read-ahead {read_ahead}: {c:?}");
        assert_eq!(c.block_fetches + c.read_ahead_fetches, 9, "read-ahead {read_ahead}: {c:?}");
        assert!(c.bytes_received <= 8 * bs as u64 + 65536, "read-ahead {read_ahead}: {c:?}");
        cache.close().await.expect("close");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_from_the_start_of_a_large_block_reads_ahead_before_the_next_block() {
    // 1 MiB blocks read in 128 KiB, as the kernel reads a file on the mount.
    let g = Geometry::new(8 * M as u64, M as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    for b in 0..8 {
        dev.write_block(BlockId(b), pattern(M, b.into())).await.expect("write");
    }
    let cache = BlockCache::new(dev, cache_config(16 << 20, &counters)).expect("cache");
    counters.reset();
    let step = 128 << 10;
    // Three reads in a row inside block 0 (the default trigger is two
    // sequential reads before read-ahead, and the first is not one).
    for at in (0..3 * step).step_by(step) {
        let got = cache.read_at(at as u64, step).await.expect("read");
        assert_eq!(&got[..], &pattern(M, 0)[at..at + step]);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counters.snapshot().read_ahead_fetches < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let c = counters.snapshot();
    // Blocks 1 and 2 are asked for while the reader is still in block 0.
    assert_eq!(c.read_ahead_fetches, 2, "{c:?}");
    for at in (3 * step..3 * M).step_by(step) {
        let got = cache.read_at(at as u64, step).await.expect("read");
        assert_eq!(&got[..], &pattern(M, (at / M) as u64)[at % M..at % M + step], "at {at}");
    }
    let c = counters.snapshot();
    // The reader waited for two fetches, both in block 0: one ranged GET
    // (the first read cannot know a scan starts), then the block whole.
    // Every later block came ahead of it.
    assert_eq!((c.ranged_gets, c.block_fetches), (1, 2), "{c:?}");
    cache.close().await.expect("close");
}

/// A partly written block whose other pages were fetched in part: its
/// upload fetches the whole block and stores it right.
#[tokio::test]
async fn a_write_into_a_block_read_in_part_uploads_the_whole_block() {
    let bs = 256usize << 10;
    let g = Geometry::new(4 * bs as u64, bs as u64).expect("geometry");
    let (dev, counters) = device(g, None);
    dev.write_block(BlockId(1), pattern(bs, 1)).await.expect("write");
    let cache = BlockCache::new(dev.clone(), cache_config(16 << 20, &counters)).expect("cache");
    cache.read_at(bs as u64 + 8192, 4096).await.expect("read");
    cache.write_at(bs as u64 + 100_000, Bytes::from(vec![9u8; 3000])).await.expect("write");
    cache.write_at(bs as u64 + 8192 + 10, Bytes::from(vec![8u8; 10])).await.expect("write");
    cache.flush().await.expect("flush");
    let mut want = pattern(bs, 1).to_vec();
    want[100_000..103_000].fill(9);
    want[8202..8212].fill(8);
    assert!(dev.read_block(BlockId(1)).await.expect("read") == want, "the stored block differs");
    assert_eq!(&cache.read_block(BlockId(1)).await.expect("read")[..], &want[..]);
    cache.close().await.expect("close");
}

/// One step of the model test, on a volume of [`BLOCKS`] blocks of [`BS`].
#[derive(Debug, Clone)]
enum Op {
    /// Bytes at `at` of the volume, checked against the model.
    Read { at: u64, len: u64 },
    /// Bytes written at `at`; seed 0 writes zeros.
    Write { at: u64, len: u64, seed: u8 },
    /// A whole block written.
    Block { block: u64, seed: u8 },
    /// A flush.
    Flush,
    /// Whole blocks read, one after the other (a scan that evicts).
    Scan { block: u64, count: u64 },
}

/// The smallest block size ranged reads apply to (a 64 KiB granule is a
/// quarter of it).
const BS: u64 = 256 << 10;
const BLOCKS: u64 = 12;

fn op() -> impl Strategy<Value = Op> {
    let size = BS * BLOCKS;
    let small = (0..size).prop_flat_map(move |at| (Just(at), 1..=(size - at).min(3 * 4096 + 100)));
    prop_oneof![
        8 => small.clone().prop_map(|(at, len)| Op::Read { at, len }),
        4 => (small, 0..=255u8).prop_map(|((at, len), seed)| Op::Write { at, len, seed }),
        1 => (0..BLOCKS, 1..=255u8).prop_map(|(block, seed)| Op::Block { block, seed }),
        1 => Just(Op::Flush),
        1 => (0..BLOCKS).prop_flat_map(|b| (Just(b), 1..=(BLOCKS - b).min(4)))
            .prop_map(|(block, count)| Op::Scan { block, count }),
    ]
}

fn fill(len: u64, at: u64, seed: u8) -> Bytes {
    if seed == 0 { Bytes::from(vec![0; len as usize]) } else { pattern(len as usize, at + u64::from(seed)) }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(32), ..ProptestConfig::default() })]

    /// Random reads of ranges, partial and whole writes, scans that evict
    /// and flushes, over a store that fails 10% of requests, with blocks
    /// stored raw, compressed (an older configuration) and absent at the
    /// start, or encrypted in chunks, compressed and encrypted, and absent,
    /// with one to three fetches at once (reads, read-ahead and the
    /// uploads of partly written blocks wait for each other's slots):
    /// every read equals the model, and after the last flush so do the
    /// stored blocks.
    #[test]
    fn ranged_reads_match_the_model_over_a_failing_store(
        ops in prop::collection::vec(op(), 1..60),
        seed in any::<u64>(),
        read_ahead in any::<bool>(),
        encrypted in any::<bool>(),
        fetch_slots in 1usize..=3,
    ) {
        runtime().block_on(async move {
            let g = Geometry::new(BS * BLOCKS, BS).expect("geometry");
            let spec = format!("seed={seed},error_rate=0.1");
            let (dev, counters) = device(g, Some(spec));
            let mut model = vec![0u8; (BS * BLOCKS) as usize];
            // Blocks 0..4 raw (or encrypted in chunks), 4..6 compressed
            // (and encrypted), the rest absent.
            let deflate = Compression::deflate(1).expect("level").codec().expect("codec");
            let (dev, old) = if encrypted {
                let codec = Arc::new(ChunkedXChaChaCodec::new(&[9; 32], "model"));
                (
                    dev.clone().with_codecs(CodecChain::new().with_chunked(codec.clone())),
                    dev.with_codecs(CodecChain::new().with(deflate).with_chunked(codec)),
                )
            } else {
                (dev.clone(), dev.with_codecs(CodecChain::new().with(deflate)))
            };
            assert!(dev.ranged_reads());
            for b in 0..6u64 {
                let data = pattern(BS as usize, 100 + b);
                let target = if b < 4 { &dev } else { &old };
                until_ok("write", true, || target.write_block(BlockId(b as u32), data.clone())).await;
                model[(b * BS) as usize..((b + 1) * BS) as usize].copy_from_slice(&data);
            }
            let config = CacheConfig::builder()
                .cache_size(4 * BS)
                .max_dirty(2 * BS)
                .upload_concurrency(2)
                .fetch_concurrency(fetch_slots)
                .write_delay(Duration::from_millis(1))
                .read_ahead(if read_ahead { 2 * BS } else { 0 })
                .counters(counters.clone())
                .build();
            let cache = BlockCache::new(dev.clone(), config).expect("cache");
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Read { at, len } => match cache.read_at(at, len as usize).await {
                        Ok(got) => {
                            let want = &model[at as usize..(at + len) as usize];
                            if &got[..] != want {
                                let bad = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                                panic!("op {i}: read at {at}+{len} differs at +{bad}");
                            }
                        }
                        Err(e) => assert!(e.is_transient(), "op {i}: read failed: {e}"),
                    },
                    Op::Write { at, len, seed } => {
                        let d = fill(len, at, seed);
                        cache.write_at(at, d.clone()).await.expect("writes go to memory");
                        model[at as usize..(at + len) as usize].copy_from_slice(&d);
                    }
                    Op::Block { block, seed } => {
                        let d = fill(BS, block * BS, seed);
                        cache.write_block(BlockId(block as u32), d.clone()).await.expect("writes go to memory");
                        model[(block * BS) as usize..((block + 1) * BS) as usize].copy_from_slice(&d);
                    }
                    Op::Flush => {
                        if let Err(e) = cache.flush().await {
                            assert!(e.is_transient(), "op {i}: flush failed: {e}");
                        }
                    }
                    Op::Scan { block, count } => {
                        for b in block..block + count {
                            if let Ok(got) = cache.read_block(BlockId(b as u32)).await {
                                assert!(
                                    got[..] == model[(b * BS) as usize..((b + 1) * BS) as usize],
                                    "op {i}: block {b} differs"
                                );
                            }
                        }
                    }
                }
                if let Err(broken) = cache.check_invariants() {
                    panic!("after op {i}: the cache's bookkeeping is broken: {broken}");
                }
            }
            until_ok("flush", true, || cache.flush()).await;
            until_ok("close", true, || cache.close()).await;
            for b in 0..BLOCKS {
                let mut stored = None;
                for _ in 0..100 {
                    if let Ok(d) = dev.read_block(BlockId(b as u32)).await {
                        stored = Some(d);
                        break;
                    }
                }
                let stored = stored.expect("the block reads at last");
                assert!(stored[..] == model[(b * BS) as usize..((b + 1) * BS) as usize], "stored block {b} differs");
            }
        });
    }
}
