//! The reference-model driver: a `Vec<u8>` of the whole volume against the
//! cache. The cache's own model test (over a memory device, plain and
//! failing) and the workspace test over the real store stack
//! (`tests/tests/cache_model.rs`, which includes this module by path) both
//! run their plans through it.
//!
//! Several tasks run random reads, writes (whole block, partial, zeros),
//! discards, zeroed ranges and flushes at once. Each task owns its own run of
//! blocks, so its part of the model is exact and every read is checked as it
//! completes; the tasks still share the cache, its memory, its dirty limit and
//! its uploads. After every operation the cache checks its own bookkeeping
//! ([`BlockCache::check_invariants`]: bytes accounted equal bytes held, and
//! the rest), while the other tasks and the uploads run on.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use s3block_cache::{BlockCache, CacheConfig, DiskCache, Durability, Marks, OpenState, VolumeIdentity};
use s3block_core::{BlockDevice, BlockDeviceExt, BlockId, Geometry};

use super::{geometry, pattern};

/// Block size of the model volume.
pub const BS: u64 = 512;
/// Tasks running at once, each on its own region.
pub const TASKS: usize = 3;
/// Blocks in one task's region.
pub const REGION_BLOCKS: u64 = 6;
/// Bytes in one task's region.
pub const REGION: u64 = REGION_BLOCKS * BS;
/// Two blocks past the tasks' regions that nobody writes.
pub const VOLUME_BLOCKS: u64 = TASKS as u64 * REGION_BLOCKS + 2;

/// One operation of a task, on its own region.
#[derive(Debug, Clone)]
pub enum Op {
    /// Bytes at `at` of the task's region; `fill` 0 writes zeros.
    Write {
        /// Offset in the region.
        at: u64,
        /// Length in bytes.
        len: u64,
        /// 0 for zeros, else the seed of the bytes.
        fill: u8,
    },
    /// A whole block; `fill` 0 writes zeros.
    Block {
        /// Block of the region.
        block: u64,
        /// 0 for zeros, else the seed of the bytes.
        fill: u8,
    },
    /// A read checked against the model.
    Read {
        /// Offset in the region.
        at: u64,
        /// Length in bytes.
        len: u64,
    },
    /// A discard of whole blocks.
    Discard {
        /// First block of the region.
        block: u64,
        /// Blocks discarded.
        count: u64,
    },
    /// Zeros written over a byte range.
    Zero {
        /// Offset in the region.
        at: u64,
        /// Length in bytes.
        len: u64,
    },
    /// A flush of the whole cache.
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

/// One list of fewer than `max_ops` operations per task.
pub fn plan(max_ops: usize) -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 1..max_ops), TASKS)
}

/// The model volume's geometry.
pub fn volume() -> Geometry {
    geometry(VOLUME_BLOCKS)
}

/// The cache of the model runs: 8 blocks of memory, 3 dirty, 3 uploads at
/// once, 2 fetches at once (so read-ahead, readers and the uploads of
/// partly written blocks wait for each other's), read-ahead of 4 blocks,
/// and the given write delay.
pub fn config(write_delay_ms: u64) -> CacheConfig {
    CacheConfig::builder()
        .cache_size(8 * BS)
        .max_dirty(3 * BS)
        .upload_concurrency(3)
        .fetch_concurrency(2)
        .write_delay(Duration::from_millis(write_delay_ms))
        .read_ahead(4 * BS)
        .build()
}

fn data(len: u64, at: u64, fill: u8) -> Bytes {
    if fill == 0 {
        Bytes::from(vec![0; len as usize])
    } else {
        pattern(len as usize, at * 256 + u64::from(fill))
    }
}

/// Retries an operation until it succeeds; failures are allowed only when
/// the device below is `flaky`, and only transient (injected) ones.
pub async fn until_ok<F, Fut>(what: &str, flaky: bool, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = s3block_core::Result<()>>,
{
    for _ in 0..1000 {
        match f().await {
            Ok(()) => return,
            Err(e) => assert!(flaky && e.is_transient(), "{what}: only injected failures expected: {e}"),
        }
    }
    panic!("{what} kept failing");
}

/// Runs one task's operations on its region; returns its part of the model.
async fn run_task<D: BlockDevice + 'static>(
    cache: Arc<BlockCache<D>>,
    task: usize,
    ops: Vec<Op>,
    flaky: bool,
) -> Vec<u8> {
    run_task_from(cache, task, ops, flaky, vec![0u8; REGION as usize]).await
}

/// Runs one task's operations on its region, which holds `model` at the
/// start; returns its part of the model.
async fn run_task_from<D: BlockDevice + 'static>(
    cache: Arc<BlockCache<D>>,
    task: usize,
    ops: Vec<Op>,
    flaky: bool,
    mut model: Vec<u8>,
) -> Vec<u8> {
    let base = task as u64 * REGION;
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
                Err(e) => assert!(flaky && e.is_transient(), "task {task} op {i}: read failed: {e}"),
            },
            Op::Discard { block, count } => {
                let first = base / BS + block;
                until_ok("discard", flaky, || cache.discard(first..first + count)).await;
                model[(block * BS) as usize..((block + count) * BS) as usize].fill(0);
            }
            Op::Zero { at, len } => {
                until_ok("zero range", flaky, || cache.zero_range(base + at, len)).await;
                model[at as usize..(at + len) as usize].fill(0);
            }
            Op::Flush => {
                if let Err(e) = cache.flush().await {
                    assert!(flaky && e.is_transient(), "task {task} op {i}: flush failed: {e}");
                }
            }
        }
        check(&cache, &format!("task {task} after op {i}"));
    }
    model
}

/// Panics when the cache's bookkeeping is broken (see
/// [`BlockCache::check_invariants`]), naming `when`.
pub fn check<D: BlockDevice + 'static>(cache: &BlockCache<D>, when: &str) {
    if let Err(broken) = cache.check_invariants() {
        panic!("{when}: the cache's bookkeeping is broken: {broken}\n{}", cache.stats());
    }
}

/// Runs the plan through a cache over `lower` (failures allowed when
/// `flaky`), flushes until a flush succeeds and closes the cache; checks that
/// nothing is left dirty and the cache kept to its memory. Returns the model
/// of the whole volume, for the caller to compare with the device at the
/// bottom read without the cache.
pub async fn run_model<D: BlockDevice + 'static>(
    lower: D,
    plan: Vec<Vec<Op>>,
    cfg: CacheConfig,
    flaky: bool,
) -> Vec<u8> {
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
    until_ok("final flush", flaky, || cache.flush()).await;
    check(&cache, "after the final flush");
    let s = cache.stats();
    assert_eq!((s.dirty_blocks, s.dirty_bytes), (0, 0), "{s}");
    assert!(s.resident_bytes <= s.cache_size, "{s}");
    cache.close().await.expect("close after a successful flush");
    check(&cache, "after close");
    model
}

/// Runs the plan through `BlockCache<DiskCache<lower>>` with the disk tier
/// in `dir`, in `phases` phases: at the end of each but the last, the RAM
/// cache is flushed (so the model is exact: with `Local` durability the
/// disk tier holds the data, uploads still running) and both tiers are
/// dropped as in a crash, without close; the next phase reopens the
/// directory (the tier recovers its dirty entries) and goes on. At the end
/// everything is flushed and closed; returns the model of the whole volume
/// for the caller to compare with the device at the bottom.
pub async fn run_model_with_disk<L: BlockDevice + Clone + 'static>(
    lower: L,
    plan: Vec<Vec<Op>>,
    cfg: CacheConfig,
    dir: &std::path::Path,
    durability: Durability,
    phases: usize,
    flaky: bool,
) -> Vec<u8> {
    let mut regions: Vec<Vec<u8>> = vec![vec![0u8; REGION as usize]; plan.len()];
    let mut plans: Vec<std::vec::IntoIter<Op>> = plan.into_iter().map(Vec::into_iter).collect();
    let sizes: Vec<usize> = plans.iter().map(|p| p.len().div_ceil(phases.max(1))).collect();
    for phase in 0..phases.max(1) {
        let last = phase + 1 == phases.max(1);
        let id = VolumeIdentity { volume: "model".into(), geometry: lower.geometry() };
        let config = super::disk::disk_config(dir, super::disk::SMALL, durability);
        let marks = Marks { found: None, new: format!("mount {phase}") };
        let (disk, report) =
            DiskCache::open(lower.clone(), config, id, marks).await.expect("the disk tier opens");
        if phase > 0 {
            assert_eq!(report.state, OpenState::Recovered, "phase {phase}: {report}");
            assert!(report.corrupt.is_empty(), "phase {phase}: {report}");
        }
        let disk = Arc::new(disk);
        let cache = Arc::new(BlockCache::new(Arc::clone(&disk), cfg.clone()).expect("cache"));
        let tasks: Vec<_> = plans
            .iter_mut()
            .zip(&sizes)
            .enumerate()
            .map(|(t, (ops, n))| {
                let ops: Vec<Op> = ops.take(*n).collect();
                tokio::spawn(run_task_from(Arc::clone(&cache), t, ops, flaky, regions[t].clone()))
            })
            .collect();
        for (t, task) in tasks.into_iter().enumerate() {
            regions[t] = task.await.expect("task");
        }
        until_ok("flush", flaky, || cache.flush()).await;
        check(&cache, &format!("phase {phase} after the flush"));
        if last {
            cache.close().await.expect("close after a successful flush");
            until_ok("disk tier close", flaky, || disk.close()).await;
            let s = disk.stats();
            assert_eq!((s.dirty_entries, s.dirty_bytes), (0, 0), "{s:?}");
        } else {
            // A crash: both tiers stop where they are.
            disk.simulate_crash();
            drop(cache);
        }
    }
    let mut model: Vec<u8> = regions.concat();
    model.resize((VOLUME_BLOCKS * BS) as usize, 0);
    model
}

/// Cases per run: `PROPTEST_CASES` when set (for a longer soak), else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A two-thread runtime for one case.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}
