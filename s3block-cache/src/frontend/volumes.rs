//! Several volumes served by one process: the volumes under one store
//! prefix, each an ordinary volume at `PREFIX/NAME/` (its own descriptor,
//! lock, geometry, compression and encryption), their memory caches sharing
//! one [`CacheBudget`] (the `--cache-size` and `--max-dirty` given, and the
//! upload slots of `--upload-concurrency`) instead of one each.
//!
//! What is shared and what is not:
//! - one budget: with `n` volumes each cache holds `--cache-size / n`
//!   bytes, `--max-dirty / n` of them dirty (see [`CacheBudget`] for how a
//!   volume added or removed while serving changes the shares without the
//!   total ever going above the budget);
//! - one set of upload slots (a volume never takes the slots the others
//!   need for one upload each);
//! - per volume: the lock (a volume that cannot be locked is refused, with
//!   the reason, and the others are served), the fence (a volume whose lock
//!   is taken by someone else stops writing; the others go on), the stats;
//! - no disk cache: `--cache-dir` is refused with several volumes.

use std::sync::Arc;

use s3block_core::{Error, Result, format_size};
use s3block_store::{VolumeOptions, list_volumes, open_volume};

use super::args::{DEFAULT_BLOCK_SIZE, VolumeArgs};
use super::memory::{self, BASELINE, MemoryNeed};
use super::stack::{Stack, build_stack_in};
use crate::{CacheBudget, DEFAULT_CACHE_SIZE, DEFAULT_UPLOAD_CONCURRENCY};

/// Memory a served volume costs besides its share of the cache: its store
/// client, lock, fence, stats and background tasks. Measured: a mount of
/// six volumes of 256K blocks, each with 1 MiB written (and cached), had
/// 5.8 MiB more resident than a mount of one of them, so well under 1 MiB a
/// volume besides its cached blocks; 4 MiB leaves room for a store client's
/// connections under load.
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
    one
}

/// Refuses options that several volumes in one process do not support.
pub fn check_several(opts: &VolumeArgs) -> std::result::Result<(), String> {
    if let Some(dir) = &opts.cache_dir {
        return Err(format!(
            "--cache-dir {}: a disk cache serves one volume; mount the volumes one by one to give each \
             its own, or leave --cache-dir out",
            dir.display()
        ));
    }
    if opts.size.is_some() {
        return Err("--size: with several volumes, create one with `s3block create MOUNTPOINT/NAME --size \
                    SIZE` (or `s3block create STORE/NAME`) instead"
            .into());
    }
    Ok(())
}

/// The one budget of a process serving several volumes with `opts`:
/// `--cache-size` (default 64M), `--max-dirty` (default half of it), and
/// `--upload-concurrency` upload slots (default
/// [`DEFAULT_UPLOAD_CONCURRENCY`]).
pub fn budget_of(opts: &VolumeArgs) -> Arc<CacheBudget> {
    let block = opts.block_size.and_then(|b| u32::try_from(b).ok()).unwrap_or(DEFAULT_BLOCK_SIZE);
    let cache = opts.cache_bytes(block).unwrap_or(DEFAULT_CACHE_SIZE);
    let dirty = opts.max_dirty_bytes(block).unwrap_or(cache / 2);
    // The volumes' block sizes differ: the slots do not scale with one.
    let slots = opts.upload_concurrency.map_or(DEFAULT_UPLOAD_CONCURRENCY, |n| n as usize);
    CacheBudget::new(cache, dirty, slots)
}

/// Checks the memory `volumes` volumes with blocks of at most `block_size`
/// bytes need (the one budget, the upload slots' blocks, the process and
/// [`VOLUME_OVERHEAD`] per volume) against this process's limit.
pub fn check_memory(
    budget: &CacheBudget,
    volumes: usize,
    block_size: u64,
) -> std::result::Result<(), String> {
    match memory::limit_at(std::path::Path::new("/")) {
        Some(limit) => check_memory_under(budget, volumes, block_size, &limit),
        None => Ok(()),
    }
}

/// [`check_memory`] against `limit`.
pub fn check_memory_under(
    budget: &CacheBudget,
    volumes: usize,
    block_size: u64,
    limit: &memory::MemoryLimit,
) -> std::result::Result<(), String> {
    let need = MemoryNeed {
        cache: budget.cache_size(),
        disk_index: 0,
        in_flight: (budget.upload_slots() as u64).saturating_mul(block_size),
        baseline: BASELINE.saturating_add(VOLUME_OVERHEAD.saturating_mul(volumes as u64)),
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
        if budget.share_of(budget.members() + 1, block_size).is_err() {
            return Err(Error::Config(format!(
                "no room for a volume of {} blocks: the cache budget ({}) shared by {} volume(s) would leave \
                 less than a block each",
                format_size(block_size),
                format_size(budget.cache_size()),
                budget.members() + 1
            )));
        }
        (one.size, one.block_size) = (Some(size), Some(block_size));
    }
    build_stack_in(&one, prompt, Some(budget)).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

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
        let e = check_several(&opts(&["--cache-dir=/tmp/c", "memory://"])).unwrap_err();
        assert!(e.contains("--cache-dir /tmp/c"), "{e}");
        let e = check_several(&opts(&["--size=1G", "memory://"])).unwrap_err();
        assert!(e.contains("--size") && e.contains("s3block create"), "{e}");
    }

    #[test]
    fn the_memory_check_counts_one_budget_and_each_volume() {
        let budget = CacheBudget::new(64 << 20, 32 << 20, 8);
        let limit = |mib: u64| memory::MemoryLimit { bytes: mib << 20, source: "the test".into() };
        // 64M + 8 x 1M uploads + 20M + 3 x 4M = 104M.
        check_memory_under(&budget, 3, 1 << 20, &limit(128)).unwrap();
        let e = check_memory_under(&budget, 3, 1 << 20, &limit(100)).unwrap_err();
        assert!(e.contains("the test"), "{e}");
        // One budget, not one per volume: ten volumes still fit in 160M.
        check_memory_under(&budget, 10, 1 << 20, &limit(160)).unwrap();
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
}
