//! Several volumes served by one process: the volumes under one store
//! prefix, each an ordinary volume at `PREFIX/NAME/` (its own descriptor,
//! lock, geometry, compression and encryption), their caches sharing one
//! [`CacheBudget`] (the `--cache-size` and `--max-dirty` given, with
//! `--cache-dir` the `--disk-cache-size` and `--disk-max-dirty` given, and
//! the upload slots of `--upload-concurrency`) instead of one each.
//!
//! What is shared and what is not:
//! - one budget: with `n` volumes each memory cache holds
//!   `--cache-size / n` bytes, `--max-dirty / n` of them dirty (see
//!   [`CacheBudget`] for how a volume added or removed while serving
//!   changes the shares without the total ever going above the budget);
//! - with `--cache-dir DIR`, the disk too: volume `NAME` keeps its disk
//!   cache in `DIR/NAME` (created when missing), of `--disk-cache-size / n`
//!   bytes, `--disk-max-dirty / n` of them not yet stored (default: half
//!   its share). A volume joining first shrinks the others' disk caches
//!   (their uploads drain the dirty bytes above the new share, then their
//!   oldest segments are reclaimed); one leaving lets them grow back. A
//!   join that would leave a disk cache less than its four segments is
//!   refused, naming `--disk-cache-size` and the number of volumes.
//!   `DIR/NAME` is an ordinary cache directory: a one-volume mount of the
//!   volume with `--cache-dir DIR/NAME` uses it, and the other way round
//!   (a directory holding more than the new size is reclaimed down);
//! - one set of upload slots (a volume never takes the slots the others
//!   need for one upload each): the uploads to the store take them, which
//!   with `--cache-dir` are the disk caches' (the memory caches' uploads
//!   go to the local disk);
//! - per volume: the lock (a volume that cannot be locked is refused, with
//!   the reason, and the others are served), the fence (a volume whose lock
//!   is taken by someone else stops writing; the others go on), the stats.

use std::sync::Arc;

use s3block_core::{Error, Result, format_size};
use s3block_store::{VolumeOptions, list_volumes, open_volume};

use super::args::{DEFAULT_BLOCK_SIZE, DEFAULT_DISK_CACHE_SIZE, VolumeArgs};
use super::memory::{self, BASELINE, MemoryNeed};
use super::stack::{Stack, build_stack_in};
use crate::{CacheBudget, DEFAULT_CACHE_SIZE, DEFAULT_UPLOAD_CONCURRENCY};

/// Memory a served volume costs besides its share of the cache: its store
/// client, lock, fence, stats and background tasks. Measured: a mount of
/// six volumes of 256K blocks, each with 1 MiB written (and cached), had
/// 5.8 MiB more resident than a mount of one of them, so well under 1 MiB a
/// volume besides its cached blocks; 4 MiB leaves room for a store client's
/// connections under load and its idle GET body buffers (at most 2 MiB).
pub const VOLUME_OVERHEAD: u64 = 4 << 20;

/// Checks that `name` can be a volume's name: a file name of the mount and a
/// key prefix of the store. An error naming it and why, else `Ok`.
pub fn check_volume_name(name: &str) -> std::result::Result<(), String> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 200 {
        Some("it is longer than 200 bytes")
    } else if name.starts_with('.') {
        Some("it starts with a dot")
    } else if name == "control" || name == "stats" || name.ends_with(".stats") || name.ends_with(".json") {
        Some("the mount shows a file of that name (control, stats, NAME.stats, NAME.stats.json)")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        Some("only letters, digits, '-', '_' and '.' are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(format!("volume name {name:?} is not allowed: {why}")),
        None => Ok(()),
    }
}

/// The store URL of volume `name` under `opts.store`.
pub fn volume_url(store: &str, name: &str) -> String {
    format!("{}/{name}", store.trim_end_matches('/'))
}

/// `opts` for volume `name` under `opts.store`.
pub fn volume_args(opts: &VolumeArgs, name: &str) -> VolumeArgs {
    let mut one = opts.clone();
    one.store = volume_url(&opts.store, name);
    // The geometry is each volume's own; `--size` and `--block-size` only
    // apply to the volumes created by `create NAME SIZE [BLOCK_SIZE]`.
    (one.size, one.block_size) = (None, None);
    // Each volume's disk cache in a directory of its own.
    one.cache_dir = opts.cache_dir.as_ref().map(|dir| dir.join(name));
    one
}

/// Refuses options that several volumes in one process do not support.
pub fn check_several(opts: &VolumeArgs) -> std::result::Result<(), String> {
    if opts.size.is_some() {
        return Err("--size: with several volumes, create one with `s3block create MOUNTPOINT/NAME --size \
                    SIZE` (or `s3block create STORE/NAME`) instead"
            .into());
    }
    Ok(())
}

/// The one budget of a process serving several volumes with `opts`:
/// `--cache-size` (default 64M), `--max-dirty` (default half of it),
/// `--upload-concurrency` upload slots (default
/// [`DEFAULT_UPLOAD_CONCURRENCY`]), and with `--cache-dir` a disk total of
/// `--disk-cache-size` (default [`DEFAULT_DISK_CACHE_SIZE`]) with
/// `--disk-max-dirty` when given.
pub fn budget_of(opts: &VolumeArgs) -> Arc<CacheBudget> {
    let block = opts.block_size.and_then(|b| u32::try_from(b).ok()).unwrap_or(DEFAULT_BLOCK_SIZE);
    let cache = opts.cache_bytes(block).unwrap_or(DEFAULT_CACHE_SIZE);
    let dirty = opts.max_dirty_bytes(block).unwrap_or(cache / 2);
    // The volumes' block sizes differ: the slots do not scale with one.
    let slots = opts.upload_concurrency.map_or(DEFAULT_UPLOAD_CONCURRENCY, |n| n as usize);
    match opts.cache_dir {
        Some(_) => {
            let disk = opts.disk_cache_size.unwrap_or(DEFAULT_DISK_CACHE_SIZE);
            CacheBudget::with_disk(cache, dirty, slots, disk, opts.disk_max_dirty)
        }
        None => CacheBudget::new(cache, dirty, slots),
    }
}

/// Checks the memory the volumes opened with `opts`, with blocks of
/// `block_sizes` bytes (one a volume), need (the one budget, each disk
/// cache's index, the upload slots' blocks, the connections of the uploads
/// and of each volume's fetches, the process and [`VOLUME_OVERHEAD`] per
/// volume) against this process's limit.
pub fn check_memory(
    opts: &VolumeArgs,
    budget: &CacheBudget,
    block_sizes: &[u64],
) -> std::result::Result<(), String> {
    match memory::limit_at(std::path::Path::new("/")) {
        Some(limit) => check_memory_under(opts, budget, block_sizes, &limit),
        None => Ok(()),
    }
}

/// [`check_memory`] against `limit`.
pub fn check_memory_under(
    opts: &VolumeArgs,
    budget: &CacheBudget,
    block_sizes: &[u64],
    limit: &memory::MemoryLimit,
) -> std::result::Result<(), String> {
    let volumes = block_sizes.len() as u64;
    let largest = block_sizes.iter().copied().max().unwrap_or(0);
    // Each disk cache's index, for its share and its block size.
    let disk_index = match budget.disk_size() {
        Some(total) => block_sizes.iter().map(|&bs| memory::disk_index(total / volumes.max(1), bs)).sum(),
        None => 0,
    };
    // The smallest block size holds the most blocks in the shared cache.
    let smallest = block_sizes.iter().copied().min().unwrap_or(u64::MAX);
    // One set of upload slots; each volume's cache fetches on its own.
    let requests = (budget.upload_slots() as u64).saturating_add(
        block_sizes.iter().map(|&bs| memory::fetches(opts, u32::try_from(bs).unwrap_or(u32::MAX))).sum(),
    );
    let need = MemoryNeed {
        cache: budget.cache_size(),
        cache_index: memory::cache_index(budget.cache_size(), smallest),
        disk_index,
        in_flight: (budget.upload_slots() as u64).saturating_mul(largest),
        requests: memory::request_state(requests),
        baseline: BASELINE.saturating_add(VOLUME_OVERHEAD.saturating_mul(volumes)),
    };
    memory::check(&need, limit)
}

/// The volumes under `opts.store`: each sub-prefix holding an s3block
/// descriptor or an s3backer block 0, by name, sorted. Sub-prefixes whose
/// names are not allowed ([`check_volume_name`]) are skipped with a warning.
pub async fn discover(opts: &VolumeArgs) -> Result<Vec<String>> {
    let opened = opts.store_args.to_config(&opts.store).open()?;
    let mut names = list_volumes(opened.store.as_ref(), &opened.prefix).await?;
    names.retain(|name| match check_volume_name(name) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!("{}: skipped: {why}", volume_url(&opts.store, name));
            false
        }
    });
    Ok(names)
}

/// Whether volume `name` exists under `opts.store`.
pub async fn exists(opts: &VolumeArgs, name: &str) -> Result<bool> {
    let opened = opts.store_args.to_config(&volume_url(&opts.store, name)).open()?;
    match open_volume(opened.store.as_ref(), &opened.prefix, &VolumeOptions::default()).await {
        Ok(_) => Ok(true),
        Err(Error::NoVolume { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens volume `name` under `opts.store` in `budget`: its lock taken, its
/// cache given its share. With `create`, the volume (`size`, and the block
/// size given or the default) is made first; an existing one is refused.
pub async fn open_in(
    opts: &VolumeArgs,
    name: &str,
    budget: &Arc<CacheBudget>,
    create: Option<(u64, Option<u64>)>,
    prompt: impl FnMut(&str) -> std::io::Result<String> + Send + 'static,
) -> Result<Stack> {
    check_volume_name(name).map_err(Error::Config)?;
    let mut one = volume_args(opts, name);
    if let Some((size, block_size)) = create {
        if exists(opts, name).await? {
            return Err(Error::Config(format!("a volume named {name:?} exists already at {}", one.store)));
        }
        let block_size = block_size.unwrap_or(u64::from(DEFAULT_BLOCK_SIZE));
        let n = budget.members() + 1;
        if let Err(e) = budget.share_of(n, block_size) {
            return Err(Error::Config(if budget.max_dirty() / n as u64 >= block_size {
                // The memory fits: the disk share does not.
                format!("no room for a volume of {} blocks: {e}", format_size(block_size))
            } else {
                format!(
                    "no room for a volume of {} blocks: the cache budget ({}) shared by {n} volume(s) would \
                     leave less than a block each",
                    format_size(block_size),
                    format_size(budget.cache_size()),
                )
            }));
        }
        (one.size, one.block_size) = (Some(size), Some(block_size));
    }
    if let Some(dir) = &opts.cache_dir {
        // DIR, then each volume's DIR/NAME when its disk cache opens.
        crate::disk::create_cache_dir(dir)?;
    }
    build_stack_in(&one, prompt, Some(budget)).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;
    use s3block_core::BlockDeviceExt;

    #[derive(Debug, Parser)]
    struct Frontend {
        #[command(flatten)]
        volume: VolumeArgs,
    }

    fn opts(args: &[&str]) -> VolumeArgs {
        let mut full = vec!["frontend"];
        full.extend_from_slice(args);
        Frontend::try_parse_from(full).unwrap().volume
    }

    #[test]
    fn names_must_be_plain_file_names_and_errors_name_them() {
        for good in ["db", "vol-1", "a_b.c", "V2"] {
            check_volume_name(good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            (".hidden", "dot"),
            ("a/b", "only letters"),
            ("control", "a file of that name"),
            ("x.stats", "a file of that name"),
            ("x.json", "a file of that name"),
            ("é", "only letters"),
        ] {
            let e = check_volume_name(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")) && e.contains(why), "{e}");
        }
    }

    #[test]
    fn each_volume_is_under_the_store_with_its_own_geometry_and_one_budget() {
        let o = opts(&["--cache-size=32M", "--max-dirty=8M", "--upload-concurrency=3", "s3://b/vols/"]);
        let one = volume_args(&o, "db");
        assert_eq!(one.store, "s3://b/vols/db");
        assert_eq!((one.size, one.block_size), (None, None));
        let budget = budget_of(&o);
        assert_eq!((budget.cache_size(), budget.max_dirty(), budget.upload_slots()), (32 << 20, 8 << 20, 3));
        let budget = budget_of(&opts(&["file:///v"]));
        assert_eq!((budget.cache_size(), budget.max_dirty()), (DEFAULT_CACHE_SIZE, DEFAULT_CACHE_SIZE / 2));
        // A disk cache each, in DIR/NAME, sharing the disk total.
        let o = opts(&["--cache-dir=/tmp/c", "--disk-cache-size=96M", "--disk-max-dirty=30M", "memory://"]);
        check_several(&o).unwrap();
        assert_eq!(volume_args(&o, "db").cache_dir.unwrap(), std::path::Path::new("/tmp/c/db"));
        let budget = budget_of(&o);
        assert_eq!((budget.disk_size(), budget.disk_dirty()), (Some(96 << 20), Some(30 << 20)));
        let share = budget.share_of(3, 64 << 10).unwrap();
        assert_eq!((share.disk_size, share.disk_dirty), (Some(32 << 20), Some(10 << 20)));
        let budget = budget_of(&opts(&["--cache-dir=/tmp/c", "memory://"]));
        assert_eq!((budget.disk_size(), budget.disk_dirty()), (Some(DEFAULT_DISK_CACHE_SIZE), None));
        assert_eq!(budget_of(&opts(&["memory://"])).disk_size(), None);
        let e = check_several(&opts(&["--size=1G", "memory://"])).unwrap_err();
        assert!(e.contains("--size") && e.contains("s3block create"), "{e}");
    }

    #[test]
    fn the_memory_check_counts_one_budget_and_each_volume() {
        let budget = CacheBudget::new(64 << 20, 32 << 20, 8);
        let limit = |mib: u64| memory::MemoryLimit { bytes: mib << 20, source: "the test".into() };
        // 64M + 8 x 1M uploads + 20M + 3 x 4M = 104M, and the connections
        // of 8 uploads and 3 x 32 fetches beyond the baseline's 96: 320K.
        check_memory_under(&opts(&["memory://"]), &budget, &[1 << 20; 3], &limit(128)).unwrap();
        let e = check_memory_under(&opts(&["memory://"]), &budget, &[1 << 20; 3], &limit(100)).unwrap_err();
        assert!(e.contains("the test"), "{e}");
        // One budget, not one per volume: ten volumes still fit in 160M.
        check_memory_under(&opts(&["memory://"]), &budget, &[1 << 20; 10], &limit(160)).unwrap();
        // Each disk cache's index counts, for its share and block size: a
        // third of 3G is 262,144 blocks of 4K (6M of index at 24 bytes a
        // block) or 1,024 of 1M (24K).
        let disks = CacheBudget::with_disk(64 << 20, 32 << 20, 8, 3 << 30, None);
        let sizes = [4 << 10, 4 << 10, 1 << 20];
        // 64M + 3.19M (the cache's bookkeeping, counted at the smallest
        // block size: 16,384 blocks of 4K, 12,288 beyond the baseline's, at
        // 272 bytes) + 8M + 20M + 12M + 12.02M + 7.81M (the connections of
        // 8 uploads and 128 + 128 + 32 fetches, 200 beyond the baseline's,
        // at 40K) = 127.02M.
        let e = check_memory_under(&opts(&["memory://"]), &disks, &sizes, &limit(127)).unwrap_err();
        assert!(e.contains("the disk cache's index 12"), "{e}");
        assert!(e.contains("the cache 64M and its bookkeeping 3264K"), "{e}");
        assert!(e.contains("8000K of connections for the requests in flight beyond the first 96"), "{e}");
        check_memory_under(&opts(&["memory://"]), &disks, &sizes, &limit(128)).unwrap();
        // An explicit fetch count is each volume's: 3 x 8 fetches and 8
        // uploads are within the baseline's.
        let few = opts(&["--fetch-concurrency=8", "memory://"]);
        check_memory_under(&few, &disks, &sizes, &limit(120)).unwrap();
    }

    #[tokio::test]
    async fn the_volumes_under_a_prefix_are_found_and_opened_in_one_budget() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let o = opts(&["--cache-size=4M", &url]);
        let budget = budget_of(&o);
        let no_prompt = |_: &str| -> std::io::Result<String> { Err(std::io::Error::other("no terminal")) };
        let a = open_in(&o, "a", &budget, Some((1 << 20, Some(64 << 10))), no_prompt).await.unwrap();
        let b = open_in(&o, "b", &budget, Some((1 << 20, None)), no_prompt).await.unwrap();
        let err = open_in(&o, "a", &budget, Some((1 << 20, None)), no_prompt).await.err().unwrap();
        assert!(err.to_string().contains("exists already"), "{err}");
        assert_eq!(budget.members(), 2);
        assert_eq!(discover(&o).await.unwrap(), ["a", "b"]);
        (a.release)().await.unwrap();
        (b.release)().await.unwrap();
        assert_eq!(budget.members(), 0);
    }

    /// With `--cache-dir DIR`, each volume's disk cache is `DIR/NAME` (DIR
    /// created), of its share of `--disk-cache-size`; a join that would
    /// leave less than four segments each is refused naming the option and
    /// the count; and `DIR/NAME` then serves a one-volume mount, warm.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_volume_keeps_its_disk_cache_share_in_a_directory_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let url = format!("file://{}", store.display());
        let caches = dir.path().join("caches");
        let cache_dir = format!("--cache-dir={}", caches.display());
        let o = opts(&["--cache-size=4M", &cache_dir, "--disk-cache-size=48M", &url]);
        let budget = budget_of(&o);
        let no_prompt = |_: &str| -> std::io::Result<String> { Err(std::io::Error::other("no terminal")) };
        let mut stacks = Vec::new();
        for name in ["a", "b", "c"] {
            stacks
                .push(open_in(&o, name, &budget, Some((4 << 20, Some(64 << 10))), no_prompt).await.unwrap());
        }
        let disk_size = |stack: &Stack| -> u64 {
            let json: serde_json::Value = serde_json::from_str(&stack.stats.render_json()).unwrap();
            json["disk"]["size_bytes"].as_u64().unwrap()
        };
        for (stack, name) in stacks.iter().zip(["a", "b", "c"]) {
            assert!(caches.join(name).join("state").is_file(), "{name}");
            assert_eq!(disk_size(stack), 16 << 20);
        }
        stacks[0].device.write_at(0, bytes::Bytes::from_static(b"kept on disk")).await.unwrap();
        let err = open_in(&o, "d", &budget, Some((4 << 20, Some(64 << 10))), no_prompt).await.err().unwrap();
        let err = err.to_string();
        assert!(err.contains("--disk-cache-size 48M") && err.contains("4 volume(s)"), "{err}");
        // One leaves: the others grow back to half each.
        (stacks.pop().unwrap().release)().await.unwrap();
        for stack in &stacks {
            assert_eq!(disk_size(stack), 24 << 20);
        }
        for stack in stacks {
            (stack.release)().await.unwrap();
        }
        // DIR/a serves a one-volume mount of a, warm.
        let alone = format!("--cache-dir={}", caches.join("a").display());
        let one = super::super::stack::build_stack(&opts(&[&alone, &volume_url(&url, "a")])).await.unwrap();
        assert_eq!(&one.device.read_at(0, 12).await.unwrap()[..], b"kept on disk");
        let stats: serde_json::Value = serde_json::from_str(&one.stats.render_json()).unwrap();
        assert_eq!(stats["requests"]["block_fetches"].as_u64(), Some(0), "{stats}");
        (one.release)().await.unwrap();
    }
}
