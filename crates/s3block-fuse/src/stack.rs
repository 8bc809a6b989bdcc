//! Building the device stack a mount runs on, from the options.
//!
//! THE ONE PLACE THAT KNOWS THE LAYERS:
//!
//! 1. open the store named by the URL, with the shared store options
//!    ([`StoreArgs`](s3block_store::StoreArgs));
//! 2. open the volume: its geometry comes from the descriptor, else from
//!    block 0's s3backer metadata; options that contradict it are refused,
//!    naming both values. A volume that does not exist is created when
//!    `--size` is given (as s3backer users mount a fresh bucket), except on
//!    a read-only mount;
//! 3. take the mount lock, unless read-only (see below);
//! 4. an [`ObjectBlockDevice`] (with the deflate codec under `--compress`,
//!    or when the volume was created compressed), under a [`BlockCache`];
//!    with `--list-blocks` the stored blocks are listed first and handed to
//!    the cache, so reads of absent blocks cost no request (a new volume
//!    needs no listing: all its blocks are absent).
//!
//! **Read-only mounts take no lock.** They write nothing to the bucket (so
//! read-only credentials suffice) and may run beside the read-write mount
//! of another host, for example to copy files out; they then read blocks as
//! that mount stores them, which a filesystem may find inconsistent. When
//! the volume is locked, the log says by whom.
//!
//! Anything that fails after the lock is taken releases it before the
//! error is returned, so a failed start leaves no lock behind.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use s3block_cache::{BlockCache, CacheConfig, DEFAULT_CACHE_SIZE};
use s3block_core::{BlockDevice, BlockId, Error, Geometry, KeyLayout, Result, format_size};
use s3block_store::{
    CodecChain, Deflate, GeometrySource, LockMode, LockOptions, MountLock, ObjectBlockDevice, OpenedStore,
    StoreKind, VolumeOptions, create_volume, open_volume, read_lock,
};

use crate::options::{DEFAULT_BLOCK_SIZE, Options};
use crate::stats::{Stats, StatsSource};

/// The hook run last at a clean exit: closes the cache, then releases the
/// mount lock.
pub type ReleaseHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send>;

/// What a mount serves: the device, its statistics, and the exit hook.
pub struct Stack {
    /// The top of the stack (the cache, over the store).
    pub device: Arc<dyn BlockDevice>,
    /// Text for the stats file.
    pub stats: Arc<dyn StatsSource>,
    /// Closes the cache and releases the mount lock; called once every
    /// block is stored.
    pub release: ReleaseHook,
    /// One line naming the volume, for the log.
    pub description: String,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("device", &self.device).field("description", &self.description).finish()
    }
}

/// The volume found (or to be made) under the store's prefix.
struct Found {
    geometry: Geometry,
    layout: KeyLayout,
    /// Deflate level recorded when the volume was created.
    compression: Option<u32>,
    /// Whether it must be created (nothing stored yet).
    create: bool,
}

/// Builds the stack for `opts.store`. Errors name the option, URL, key or
/// lock holder at fault.
pub async fn build_stack(opts: &Options) -> Result<Stack> {
    let url = opts.store.as_str();
    if !matches!(url.split_once("://").map(|(s, _)| s), Some("s3" | "file" | "memory")) {
        return Err(Error::Config(format!(
            "store {url:?}: expected s3://bucket[/prefix], file:///dir or memory://"
        )));
    }
    let opened = opts.store_args.to_config(url).open()?;
    let found = find_volume(opts, &opened).await?;
    let lock = if opts.read_only {
        if let Some(holder) = read_lock(opened.store.as_ref(), &opened.prefix).await? {
            tracing::warn!(
                "the volume is mounted by {} since {}; this read-only mount takes no lock and reads \
                 blocks as that mount stores them",
                holder.host,
                holder.since
            );
        }
        None
    } else {
        Some(MountLock::acquire(opened.store.clone(), &opened.prefix, LockOptions::default()).await?)
    };
    match assemble(opts, &opened, &found).await {
        Ok((cache, stats, description)) => {
            let lock_note = match lock.as_ref().map(MountLock::mode) {
                None => ", read-only, no lock",
                Some(LockMode::Enforced) => "",
                Some(LockMode::Advisory) => ", advisory lock",
            };
            let closing = cache.clone();
            let release: ReleaseHook = Box::new(move || {
                Box::pin(async move {
                    closing.close().await?;
                    if let Some(lock) = lock {
                        lock.release().await?;
                    }
                    Ok(())
                })
            });
            Ok(Stack { device: cache, stats, release, description: format!("{description}{lock_note}") })
        }
        Err(e) => {
            if let Some(lock) = lock
                && let Err(release) = lock.release().await
            {
                tracing::warn!("could not release the mount lock after a failed start: {release}");
            }
            Err(e)
        }
    }
}

/// Opens the volume's geometry, or decides to create it.
async fn find_volume(opts: &Options, opened: &OpenedStore) -> Result<Found> {
    // Without a size, opening fails exactly when nothing is stored; the size
    // is checked here, so a new volume's geometry uses s3block's defaults.
    let wanted = VolumeOptions {
        size: None,
        block_size: opts.block_size,
        hash_prefix: opts.hash_prefix.then_some(true),
        compression: None,
    };
    let mismatch = |what: &'static str, stored: String, requested: String| {
        Error::Config(format!(
            "{what} mismatch: the volume at {} was created with {what} {stored}, but {requested} was \
             requested ({}); leave the option out to use the volume's own",
            opts.store,
            option_of(what)
        ))
    };
    let volume = match open_volume(opened.store.as_ref(), &opened.prefix, &wanted).await {
        Ok(volume) => Some(volume),
        Err(Error::Config(_)) if opts.size.is_some() => None,
        Err(Error::Config(_)) => {
            return Err(Error::Config(format!(
                "no volume at {} (key prefix {:?}: no s3block descriptor, no s3backer block 0); give \
                 --size (e.g. --size=30G) to create one, or check the URL and --prefix",
                opts.store, opened.prefix
            )));
        }
        Err(Error::Mismatch { what, stored, requested }) => return Err(mismatch(what, stored, requested)),
        Err(other) => return Err(other),
    };
    let Some(volume) = volume else {
        // (A memory volume is new every time; making it touches no bucket.)
        if opts.read_only && opened.kind != StoreKind::Memory {
            return Err(Error::Config(format!(
                "no volume at {} (key prefix {:?}); a read-only mount does not create one: mount it \
                 read-write with --size once, or create it with `s3block create`",
                opts.store, opened.prefix
            )));
        }
        let size = opts.size.unwrap_or_default();
        let block_size = opts.block_size.unwrap_or(u64::from(DEFAULT_BLOCK_SIZE));
        let geometry = Geometry::new(size, block_size)
            .map_err(|e| Error::Config(format!("--size/--block-size: {e}")))?;
        return Ok(Found {
            geometry,
            layout: KeyLayout::new(&opened.prefix, opts.hash_prefix),
            compression: None,
            create: true,
        });
    };
    let size = volume.geometry.size();
    if let Some(requested) = opts.size
        && requested != size
    {
        let show = |v: u64| format!("{} ({v} bytes)", format_size(v));
        return Err(mismatch("size", show(size), show(requested)));
    }
    let compression = match &volume.source {
        GeometrySource::Descriptor(d) => d.compression,
        _ => None,
    };
    Ok(Found { geometry: volume.geometry, layout: volume.layout, compression, create: false })
}

fn option_of(what: &str) -> &'static str {
    match what {
        "block size" => "--block-size",
        "size" => "--size",
        "hash prefix" => "--hash-prefix",
        _ => "an option",
    }
}

type Cache = BlockCache<ObjectBlockDevice>;

/// Creates the volume if needed; builds the device, the cache and the stats.
async fn assemble(
    opts: &Options,
    opened: &OpenedStore,
    found: &Found,
) -> Result<(Arc<Cache>, Arc<dyn StatsSource>, String)> {
    let geometry = found.geometry;
    let block_size = u64::from(geometry.block_size());
    let compression = opts.compress.or(found.compression);
    let mut codecs = CodecChain::new();
    if let Some(level) = compression {
        codecs = codecs.with(Arc::new(Deflate::new(level)?));
    }
    let device = ObjectBlockDevice::new(opened.store.clone(), found.layout.clone(), geometry)
        .with_codecs(codecs)
        .with_counters(opened.counters.clone())
        .with_list_plan(opened.list_plan);

    let known: Option<Vec<BlockId>> = if found.create {
        Some(Vec::new())
    } else if opts.list_blocks {
        let started = Instant::now();
        let stored = device.list_blocks().await?;
        tracing::info!(
            "listed {} stored blocks ({} in objects) in {:.1}s",
            stored.len(),
            format_size(stored.iter().map(|b| b.size).sum()),
            started.elapsed().as_secs_f32()
        );
        Some(stored.into_iter().map(|b| b.block).collect())
    } else {
        None
    };

    let mut config = CacheConfig::builder()
        .cache_size(opts.cache_bytes(geometry.block_size()).unwrap_or(DEFAULT_CACHE_SIZE));
    if let Some(bytes) = opts.max_dirty {
        config = config.max_dirty(bytes);
    }
    if let Some(n) = opts.upload_concurrency {
        config = config.upload_concurrency(n as usize);
    }
    if let Some(bytes) = opts.read_ahead {
        config = config.read_ahead(bytes);
    }
    let bad_cache = |e: Error| {
        Error::Config(format!(
            "cache options (--cache-size/--blockCacheSize, --max-dirty, --upload-concurrency): {e}"
        ))
    };
    let cache = Arc::new(
        match known {
            Some(stored) => BlockCache::with_known_blocks(device, config.build(), stored),
            None => BlockCache::new(device, config.build()),
        }
        .map_err(bad_cache)?,
    );

    if found.create {
        let new = VolumeOptions {
            size: Some(geometry.size()),
            block_size: Some(block_size),
            hash_prefix: Some(opts.hash_prefix),
            compression: opts.compress,
        };
        // The cache holds nothing yet; closing it only stops its task.
        let created = create_volume(opened.store.as_ref(), &opened.prefix, &new).await;
        let d = match created {
            Ok(d) => d,
            Err(e) => {
                let _ = cache.close().await;
                return Err(e);
            }
        };
        tracing::info!(
            "created a new volume at {} (key prefix {:?}): {} in blocks of {}{}, id {}",
            opts.store,
            opened.prefix,
            format_size(d.size),
            format_size(d.block_size),
            d.compression.map(|l| format!(", deflate level {l}")).unwrap_or_default(),
            d.volume_id
        );
    }

    let shown = cache.clone();
    let reset = cache.clone();
    let stats = Stats::new()
        .with_section("cache", move || shown.stats().to_string(), move || reset.reset_stats())
        .with_requests(opened.counters.clone());
    let description = format!(
        "{}{} in blocks of {}{}",
        if found.create { "a new volume of " } else { "" },
        format_size(geometry.size()),
        format_size(block_size),
        compression.map(|l| format!(", deflate level {l}")).unwrap_or_default(),
    );
    Ok((cache, Arc::new(stats), description))
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3block_core::{BlockDeviceExt, Bytes};

    fn opts(args: &[&str]) -> Options {
        let mut full = vec!["s3block-fuse"];
        full.extend_from_slice(args);
        Options::parse_from_args(full).unwrap()
    }

    #[tokio::test]
    async fn memory_volume_is_created_with_the_default_block_size() {
        let stack = build_stack(&opts(&["--size=64M", "memory://", "/m"])).await.unwrap();
        let g = stack.device.geometry();
        assert_eq!((g.size(), g.block_size()), (64 << 20, DEFAULT_BLOCK_SIZE));
        assert!(stack.description.contains("new volume"), "{}", stack.description);
        let text = stack.stats.render();
        assert!(text.contains("[cache]") && text.contains("[store requests]"), "{text}");
        (stack.release)().await.unwrap();
    }

    #[tokio::test]
    async fn bad_urls_and_missing_sizes_are_named() {
        let err = build_stack(&opts(&["memory://", "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("--size"), "{err}");
        let err = build_stack(&opts(&["--size=1000", "memory://", "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("--size") && err.contains("multiple"), "{err}");
        let err = build_stack(&opts(&["ftp://x", "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("ftp://x") && err.contains("s3://"), "{err}");
    }

    #[tokio::test]
    async fn a_local_volume_is_created_then_detected_locked_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let first =
            build_stack(&opts(&["--size=4M", "--block-size=64K", "--compress", &url, "/m"])).await.unwrap();
        first.device.write_at(70_000, Bytes::from_static(b"kept")).await.unwrap();

        // Held: a second read-write mount is refused, naming the holder.
        let err = build_stack(&opts(&[&url, "/m"])).await.unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert!(err.to_string().contains(&s3block_store::hostname()), "{err}");
        // A read-only mount takes no lock and starts anyway.
        let ro = build_stack(&opts(&["--read-only", &url, "/m"])).await.unwrap();
        (ro.release)().await.unwrap();

        first.device.flush().await.unwrap();
        (first.release)().await.unwrap();

        // Geometry and compression come from the volume; contradictions are refused.
        let again = build_stack(&opts(&[&url, "/m"])).await.unwrap();
        let g = again.device.geometry();
        assert_eq!((g.size(), g.block_size()), (4 << 20, 64 << 10));
        assert!(again.description.contains("deflate"), "{}", again.description);
        assert_eq!(&again.device.read_at(70_000, 4).await.unwrap()[..], b"kept");
        (again.release)().await.unwrap();
        let err = build_stack(&opts(&["--block-size=128K", &url, "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("64K") && err.contains("128K") && err.contains("--block-size"), "{err}");
        let err = build_stack(&opts(&["--size=8M", &url, "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("4M") && err.contains("8M"), "{err}");
        // The failed starts left no lock behind.
        let last = build_stack(&opts(&["--list-blocks", &url, "/m"])).await.unwrap();
        assert!(last.stats.render().contains("zero blocks: 63 known"), "{}", last.stats.render());
        (last.release)().await.unwrap();
    }

    #[tokio::test]
    async fn read_only_does_not_create_and_cache_options_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let err =
            build_stack(&opts(&["--read-only", "--size=4M", &url, "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("read-only") && err.contains(&url), "{err}");
        let err =
            build_stack(&opts(&["--size=4M", "--cache-size=4K", &url, "/m"])).await.unwrap_err().to_string();
        assert!(err.contains("--cache-size"), "{err}");
        // The refused start released its lock: the next one gets it.
        let ok = build_stack(&opts(&["--size=4M", &url, "/m"])).await.unwrap();
        (ok.release)().await.unwrap();
    }
}
