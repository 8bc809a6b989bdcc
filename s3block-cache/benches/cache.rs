//! Benchmarks of the block cache over the memory store: the hit path, the
//! write-back path, 4K writes into large blocks, and how upload concurrency
//! pays off when each store request takes a few milliseconds.
//!
//! Run with `cargo bench -p s3block-cache`; figures are printed, not asserted.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use s3block_cache::testing::FlakyDevice;
use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockId, Geometry, MemoryDevice};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn data(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect()
}

fn cache_over_memory(
    rt: &Runtime,
    block_size: u64,
    blocks: u64,
    cache_size: u64,
) -> BlockCache<Arc<MemoryDevice>> {
    let _guard = rt.enter();
    let geometry = Geometry::with_blocks(blocks, block_size).expect("geometry");
    let config = CacheConfig::builder().cache_size(cache_size).write_delay(Duration::ZERO).build();
    BlockCache::new(Arc::new(MemoryDevice::new(geometry)), config).expect("cache")
}

fn hit_path(c: &mut Criterion) {
    let rt = runtime();
    let cache = cache_over_memory(&rt, 64 << 10, 256, 32 << 20);
    rt.block_on(async {
        for b in 0..64 {
            cache.write_block(BlockId(b), data(64 << 10, b as u8)).await.expect("write");
        }
        cache.flush().await.expect("flush");
    });
    let mut group = c.benchmark_group("hit");
    group.throughput(Throughput::Elements(1));
    group.bench_function("read_block 64K", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(cache.read_block(BlockId((i % 64) as u32)).await.expect("read"));
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("read_partial 4K of 64K", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(cache.read_partial(BlockId((i % 64) as u32), 8192, 4096).await.expect("read"));
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("zero block", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(
                        cache.read_partial(BlockId(200 + (i % 50) as u32), 0, 4096).await.expect("read"),
                    );
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(cache.close()).expect("close");
}

fn write_back_path(c: &mut Criterion) {
    let rt = runtime();
    let block = 64usize << 10;
    let cache = cache_over_memory(&rt, block as u64, 1024, 16 << 20);
    let payload = data(block, 7);
    let mut group = c.benchmark_group("write-back");
    group.throughput(Throughput::Bytes(block as u64));
    group.bench_function("write_block 64K then flush", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    cache.write_block(BlockId((i % 1024) as u32), payload.clone()).await.expect("write");
                }
                cache.flush().await.expect("flush");
                start.elapsed()
            })
        })
    });
    group.throughput(Throughput::Bytes(4096));
    let small = data(4096, 3);
    group.bench_function("write_partial 4K into 64K blocks then flush", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let offset = ((i % 16) * 4096) as u32;
                    cache
                        .write_partial(BlockId((i / 16 % 1024) as u32), offset, small.clone())
                        .await
                        .expect("write");
                }
                cache.flush().await.expect("flush");
                start.elapsed()
            })
        })
    });
    group.finish();
    rt.block_on(cache.close()).expect("close");
}

/// Flushing 64 dirty blocks when each PUT takes about 2 ms: how the time
/// falls with the number of uploads in flight (the basis of the default).
fn upload_concurrency(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("flush 64 blocks, 2 ms per request");
    group.sample_size(10);
    for concurrency in [1usize, 4, 8, 16] {
        let cache = {
            let _guard = rt.enter();
            let geometry = Geometry::with_blocks(64, 64 << 10).expect("geometry");
            let slow = FlakyDevice::new(MemoryDevice::new(geometry), 0.0, 1).with_latency(
                Duration::from_millis(4),
                0.0,
                Duration::ZERO,
            );
            let config = CacheConfig::builder()
                .cache_size(8 << 20)
                .upload_concurrency(concurrency)
                .write_delay(Duration::from_secs(60))
                .build();
            BlockCache::new(slow, config).expect("cache")
        };
        let payload = data(64 << 10, 9);
        group.bench_function(format!("{concurrency} uploads"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        for blk in 0..64 {
                            cache.write_block(BlockId(blk), payload.clone()).await.expect("write");
                        }
                        let start = Instant::now();
                        cache.flush().await.expect("flush");
                        total += start.elapsed();
                    }
                    total
                })
            })
        });
        rt.block_on(cache.close()).expect("close");
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = hit_path, write_back_path, upload_concurrency }
criterion_main!(benches);
