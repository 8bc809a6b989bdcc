//! The cache against a reference model: a `Vec<u8>` of the whole volume.
//!
//! Several tasks run random reads, writes (whole block, partial, zeros),
//! discards, zeroed ranges and flushes at once. Each task owns its own run of
//! blocks, so its part of the model is exact and every read is checked as it
//! completes; the tasks still share the cache, its memory, its dirty limit and
//! its uploads. After a final flush, the device below, read without the
//! cache, must equal the model. The same runs over a store that fails 10% of
//! requests and has latency spikes: nothing may be lost once a flush succeeds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{assert_device_equals, flush_until_ok, geometry, pattern};
use proptest::prelude::*;
use s3block_cache::testing::FlakyDevice;
use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockDeviceExt, MemoryDevice};

const BS: u64 = 512;
const TASKS: usize = 3;
const REGION_BLOCKS: u64 = 6;
const REGION: u64 = REGION_BLOCKS * BS;
/// Two blocks past the tasks' regions that nobody writes.
const VOLUME_BLOCKS: u64 = TASKS as u64 * REGION_BLOCKS + 2;

#[derive(Debug, Clone)]
enum Op {
    /// Bytes at `at` (region-relative); `fill` 0 writes zeros.
    Write {
        at: u64,
        len: u64,
        fill: u8,
    },
    /// A whole block; `fill` 0 writes zeros.
    Block {
        block: u64,
        fill: u8,
    },
    Read {
        at: u64,
        len: u64,
    },
    Discard {
        block: u64,
        count: u64,
    },
    Zero {
        at: u64,
        len: u64,
    },
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    let range = (0..REGION).prop_flat_map(|at| (Just(at), 1..=(REGION - at).min(3 * BS)));
    let fill = prop_oneof![1 => Just(0u8), 4 => 1..=255u8];
    prop_oneof![
        6 => (range.clone(), fill.clone()).prop_map(|((at, len), fill)| Op::Write { at, len, fill }),
        3 => (0..REGION_BLOCKS, fill).prop_map(|(block, fill)| Op::Block { block, fill }),
        6 => range.clone().prop_map(|(at, len)| Op::Read { at, len }),
        1 => (0..REGION_BLOCKS).prop_flat_map(|b| (Just(b), 0..=REGION_BLOCKS - b))
            .prop_map(|(block, count)| Op::Discard { block, count }),
        1 => range.prop_map(|(at, len)| Op::Zero { at, len }),
        1 => Just(Op::Flush),
    ]
}

fn plan() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 1..40), TASKS)
}

/// Runs one task's operations on its region; returns its part of the model.
async fn run_task<D: BlockDevice + 'static>(
    cache: Arc<BlockCache<D>>,
    task: usize,
    ops: Vec<Op>,
    flaky: bool,
) -> Vec<u8> {
    let base = task as u64 * REGION;
    let mut model = vec![0u8; REGION as usize];
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Write { at, len, fill } => {
                let data = if fill == 0 {
                    Bytes::from(vec![0; len as usize])
                } else {
                    pattern(len as usize, at * 256 + u64::from(fill))
                };
                cache.write_at(base + at, data.clone()).await.expect("writes go to memory");
                model[at as usize..(at + len) as usize].copy_from_slice(&data);
            }
            Op::Block { block, fill } => {
                let at = block * BS;
                let data = if fill == 0 {
                    Bytes::from(vec![0; BS as usize])
                } else {
                    pattern(BS as usize, at * 256 + u64::from(fill))
                };
                cache
                    .write_block(s3block_core::BlockId(((base + at) / BS) as u32), data.clone())
                    .await
                    .expect("writes go to memory");
                model[at as usize..(at + BS) as usize].copy_from_slice(&data);
            }
            Op::Read { at, len } => match cache.read_at(base + at, len as usize).await {
                Ok(got) => {
                    let want = &model[at as usize..(at + len) as usize];
                    if &got[..] != want {
                        let bad = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                        panic!(
                            "task {task} op {i}: read at {at}+{len} differs at +{bad}: {} != {}",
                            got[bad], want[bad]
                        );
                    }
                }
                Err(e) => assert!(flaky && e.is_transient(), "task {task} op {i}: read failed: {e}"),
            },
            Op::Discard { block, count } => {
                let first = (base / BS) + block;
                retry(flaky, || cache.discard(first..first + count)).await;
                model[(block * BS) as usize..((block + count) * BS) as usize].fill(0);
            }
            Op::Zero { at, len } => {
                retry(flaky, || cache.zero_range(base + at, len)).await;
                model[at as usize..(at + len) as usize].fill(0);
            }
            Op::Flush => {
                if let Err(e) = cache.flush().await {
                    assert!(flaky && e.is_transient(), "task {task} op {i}: flush failed: {e}");
                }
            }
        }
    }
    model
}

/// Retries an operation that may hit injected failures until it succeeds.
async fn retry<F, Fut>(flaky: bool, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = s3block_core::Result<()>>,
{
    for _ in 0..1000 {
        match f().await {
            Ok(()) => return,
            Err(e) => assert!(flaky && e.is_transient(), "unexpected failure: {e}"),
        }
    }
    panic!("kept failing");
}

fn config(write_delay_ms: u64) -> CacheConfig {
    CacheConfig::builder()
        .cache_size(8 * BS)
        .max_dirty(3 * BS)
        .upload_concurrency(3)
        .write_delay(Duration::from_millis(write_delay_ms))
        .read_ahead(4 * BS)
        .build()
}

/// Runs the plan over `lower`, flushes, and compares `check` (the device at
/// the bottom, read without the cache) with the model.
async fn run_model<D: BlockDevice + 'static>(
    lower: D,
    check: &dyn BlockDevice,
    plan: Vec<Vec<Op>>,
    cfg: CacheConfig,
    flaky: bool,
) {
    let cache = Arc::new(BlockCache::new(lower, cfg).expect("cache"));
    let tasks: Vec<_> = plan
        .into_iter()
        .enumerate()
        .map(|(t, ops)| tokio::spawn(run_task(Arc::clone(&cache), t, ops, flaky)))
        .collect();
    let mut model = Vec::new();
    for t in tasks {
        model.extend(t.await.expect("task"));
    }
    model.resize((VOLUME_BLOCKS * BS) as usize, 0);
    flush_until_ok(&cache).await;
    let s = cache.stats();
    assert_eq!((s.dirty_blocks, s.dirty_bytes), (0, 0), "{s}");
    assert!(s.resident_bytes <= s.cache_size, "{s}");
    cache.close().await.expect("close after a successful flush");
    assert_device_equals(check, &model).await;
}

/// Cases per run: `PROPTEST_CASES` when set (for a longer soak), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(64), ..ProptestConfig::default() })]

    #[test]
    fn cache_over_memory_matches_the_model(plan in plan(), delay in prop_oneof![Just(0u64), Just(2)]) {
        runtime().block_on(async {
            let mem = Arc::new(MemoryDevice::new(geometry(VOLUME_BLOCKS)));
            run_model(Arc::clone(&mem), &*mem, plan, config(delay), false).await;
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn cache_over_a_failing_store_loses_nothing(plan in plan(), seed in any::<u64>()) {
        runtime().block_on(async {
            let mem = Arc::new(MemoryDevice::new(geometry(VOLUME_BLOCKS)));
            let flaky = FlakyDevice::new(Arc::clone(&mem), 0.10, seed)
                .with_latency(Duration::from_micros(200), 0.02, Duration::from_millis(3));
            run_model(flaky, &*mem, plan, config(1), true).await;
        });
    }
}
