//! The block cache against a reference model, over the real store stack:
//! `BlockCache<ObjectBlockDevice>` on `RetryStore<FaultStore<..>>`, the
//! fault store failing 10% of requests (server errors and timeouts) with
//! latency spikes. The retry layer gives up after two attempts here, so some
//! failures reach the cache and its own retrying of uploads is exercised too.
//!
//! Three tasks run random reads, writes (whole block, partial, zeros),
//! discards, zeroed ranges and flushes at once, each on its own run of
//! blocks so its part of the model is exact. After a flush succeeds, the
//! objects, read by a new device without the cache and without faults, must
//! equal the model: nothing written is lost. Runs over memory (many cases)
//! and over Garage (a few).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::memory::InMemory;
use proptest::prelude::*;
use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, Geometry, KeyLayout, RequestCounters};
use s3block_store::{FaultConfig, FaultStore, ObjectBlockDevice, RetryConfig, RetryStore, StoreConfig};
use s3block_tests::{s3_env, unique_prefix};

const BS: u64 = 512;
const TASKS: usize = 3;
const REGION_BLOCKS: u64 = 6;
const REGION: u64 = REGION_BLOCKS * BS;
/// Two blocks past the tasks' regions that nobody writes.
const VOLUME_BLOCKS: u64 = TASKS as u64 * REGION_BLOCKS + 2;

#[derive(Debug, Clone)]
enum Op {
    /// Bytes at `at` of the task's region; `fill` 0 writes zeros.
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

fn plan(max_ops: usize) -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 1..max_ops), TASKS)
}

fn geometry() -> Geometry {
    Geometry::with_blocks(VOLUME_BLOCKS, BS).expect("a valid test geometry")
}

/// `len` non-zero bytes derived from `seed`.
fn pattern(len: u64, seed: u64) -> Bytes {
    (0..len).map(|i| ((seed.wrapping_mul(31).wrapping_add(i * 13)) % 251) as u8 + 1).collect()
}

fn data(len: u64, at: u64, fill: u8) -> Bytes {
    if fill == 0 { Bytes::from(vec![0; len as usize]) } else { pattern(len, at * 256 + u64::from(fill)) }
}

/// Retries an operation until it succeeds; only injected (transient)
/// failures are allowed.
async fn until_ok<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = s3block_core::Result<()>>,
{
    for _ in 0..1000 {
        match f().await {
            Ok(()) => return,
            Err(e) => assert!(e.is_transient(), "{what}: only injected failures expected: {e}"),
        }
    }
    panic!("{what} kept failing");
}

type Cache = Arc<BlockCache<ObjectBlockDevice>>;

/// Runs one task's operations on its region; returns its part of the model.
async fn run_task(cache: Cache, task: usize, ops: Vec<Op>) -> Vec<u8> {
    let base = task as u64 * REGION;
    let mut model = vec![0u8; REGION as usize];
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Write { at, len, fill } => {
                let d = data(len, at, fill);
                cache.write_at(base + at, d.clone()).await.expect("writes go to memory");
                model[at as usize..(at + len) as usize].copy_from_slice(&d);
            }
            Op::Block { block, fill } => {
                let d = data(BS, block * BS, fill);
                let id = BlockId(((base + block * BS) / BS) as u32);
                cache.write_block(id, d.clone()).await.expect("writes go to memory");
                model[(block * BS) as usize..((block + 1) * BS) as usize].copy_from_slice(&d);
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
                Err(e) => assert!(e.is_transient(), "task {task} op {i}: read failed: {e}"),
            },
            Op::Discard { block, count } => {
                let first = base / BS + block;
                until_ok("discard", || cache.discard(first..first + count)).await;
                model[(block * BS) as usize..((block + count) * BS) as usize].fill(0);
            }
            Op::Zero { at, len } => {
                until_ok("zero range", || cache.zero_range(base + at, len)).await;
                model[at as usize..(at + len) as usize].fill(0);
            }
            Op::Flush => {
                if let Err(e) = cache.flush().await {
                    assert!(e.is_transient(), "task {task} op {i}: flush failed: {e}");
                }
            }
        }
    }
    model
}

/// The device stack of a mount over `store`, with faults injected between
/// the store and the retry layer.
fn faulty_device(store: Arc<dyn ObjectStore>, prefix: &str, seed: u64) -> ObjectBlockDevice {
    let faults = FaultConfig {
        latency: Duration::from_micros(100),
        spike_rate: 0.02,
        spike: Duration::from_millis(5),
        ..FaultConfig::errors(0.10)
    };
    let retry = RetryConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        max_attempts: 2,
        seed: Some(seed),
        ..RetryConfig::default()
    };
    let counters = Arc::new(RequestCounters::default());
    let stack = RetryStore::new(FaultStore::new(store, faults, seed), retry, counters.clone());
    ObjectBlockDevice::new(Arc::new(stack), KeyLayout::new(prefix, false), geometry()).with_counters(counters)
}

async fn run_model(store: Arc<dyn ObjectStore>, prefix: &str, plan: Vec<Vec<Op>>, seed: u64) {
    let config = CacheConfig::builder()
        .cache_size(8 * BS)
        .max_dirty(3 * BS)
        .upload_concurrency(3)
        .write_delay(Duration::from_millis(1))
        .read_ahead(4 * BS)
        .build();
    let cache = Arc::new(BlockCache::new(faulty_device(store.clone(), prefix, seed), config).expect("cache"));
    let tasks: Vec<_> = plan
        .into_iter()
        .enumerate()
        .map(|(t, ops)| tokio::spawn(run_task(Arc::clone(&cache), t, ops)))
        .collect();
    let mut model = Vec::new();
    for t in tasks {
        model.extend(t.await.expect("task"));
    }
    model.resize((VOLUME_BLOCKS * BS) as usize, 0);
    until_ok("final flush", || cache.flush()).await;
    let stats = cache.stats();
    assert_eq!((stats.dirty_blocks, stats.dirty_bytes), (0, 0), "{stats}");
    cache.close().await.expect("close after a successful flush");

    // Reopened without the cache and without faults.
    let plain = ObjectBlockDevice::new(store, KeyLayout::new(prefix, false), geometry());
    for b in 0..VOLUME_BLOCKS {
        let got = plain.read_block(BlockId(b as u32)).await.expect("read the stored block");
        let want = &model[(b * BS) as usize..((b + 1) * BS) as usize];
        if &got[..] != want {
            let at = got.iter().zip(want).position(|(x, y)| x != y).unwrap_or(0);
            panic!("block {b} as stored differs from the model at byte {at}: {} != {}", got[at], want[at]);
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Cases per run: `PROPTEST_CASES` when set (for a longer soak), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    #[test]
    fn cache_over_the_faulty_store_stack_loses_nothing(plan in plan(40), seed in any::<u64>()) {
        runtime().block_on(run_model(Arc::new(InMemory::new()), "vol/", plan, seed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3), ..ProptestConfig::default() })]

    #[test]
    fn cache_over_faulty_garage_loses_nothing(plan in plan(25), seed in any::<u64>()) {
        let Some(env) = s3_env() else { return Ok(()) };
        let opened = StoreConfig::new(format!("s3://{}", env.bucket))
            .endpoint(&env.endpoint)
            .region(&env.region)
            .access_key_id(&env.access_key_id)
            .secret_access_key(&env.secret_access_key)
            .open()
            .expect("the Garage store opens");
        let prefix = unique_prefix("cache_model");
        runtime().block_on(run_model(opened.store, &prefix, plan, seed));
    }
}
