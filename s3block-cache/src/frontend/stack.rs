//! Building the device stack a frontend serves, from the shared options.
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
//! 3. unlock an encrypted volume: its descriptor says it is encrypted (or
//!    `--encrypt`, for a volume s3backer made, or to create one); the
//!    password comes from `--password-file`, `S3BLOCK_PASSWORD` or a prompt,
//!    and a wrong one fails here, before anything is mounted, with "wrong
//!    password" (never as EIO on a later read);
//! 4. take the mount lock, unless read-only (see below);
//! 5. an [`ObjectBlockDevice`] (with the codec `--compress` names,
//!    or when the volume was created compressed, then the cipher), under a
//!    [`BlockCache`];
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

use s3block_core::{BlockDevice, BlockId, Error, Geometry, MemoryDevice, Result, format_size};
use s3block_store::{Create, ObjectBlockDevice, Volume};

use super::args::{DEFAULT_BLOCK_SIZE, VolumeArgs};
use super::stats::{Stats, StatsSource};
use crate::{BlockCache, CacheConfig, DEFAULT_CACHE_SIZE};

/// The hook run last at a clean exit: closes the cache, then releases the
/// mount lock.
pub type ReleaseHook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Result<()>> + Send>> + Send>;

/// What a frontend serves: the device, its statistics, and the exit hook.
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

/// Asks for the password on the terminal, without echo (an error when
/// standard input is not a terminal).
pub fn terminal_prompt(text: &str) -> std::io::Result<String> {
    s3block_store::StoreArgs::terminal_prompt(|t: &str| rpassword::prompt_password(t))(text)
}

/// Builds the stack for `opts.store`, asking for a password on the terminal
/// when one is needed and not given. Errors name the option, URL, key or
/// lock holder at fault.
pub async fn build_stack(opts: &VolumeArgs) -> Result<Stack> {
    build_stack_with(opts, terminal_prompt).await
}

/// [`build_stack`], with `prompt` asked for a password that neither
/// `--password-file` nor `S3BLOCK_PASSWORD` gives.
pub async fn build_stack_with(
    opts: &VolumeArgs,
    prompt: impl FnMut(&str) -> std::io::Result<String> + Send + 'static,
) -> Result<Stack> {
    let url = opts.store.as_str();
    if !matches!(url.split_once("://").map(|(s, _)| s), Some("s3" | "file" | "memory")) {
        return Err(Error::Config(format!(
            "store {url:?}: expected s3://bucket[/prefix], file:///dir or memory://"
        )));
    }
    let opened = opts.store_args.to_config(url).open()?;
    let prefix = opened.prefix.clone();
    // Refuse bad cache options before a new volume is written.
    if let Some(size) = opts.size
        && let Ok(geometry) = Geometry::new(size, opts.block_size.unwrap_or(u64::from(DEFAULT_BLOCK_SIZE)))
    {
        BlockCache::new(MemoryDevice::new(geometry), cache_config(opts, geometry))
            .map_err(bad_cache)?
            .close()
            .await?;
    }
    let mut builder = Volume::builder(opened)
        .name(url)
        .read_only(opts.read_only)
        .create(if opts.size.is_some() { Create::IfMissing } else { Create::Never })
        .prompt(prompt);
    if let Some(size) = opts.size {
        builder = builder.size(size);
    }
    if let Some(block_size) = opts.block_size {
        builder = builder.block_size(block_size);
    }
    if opts.hash_prefix {
        builder = builder.hash_prefix(true);
    }
    let compression = opts.compression.compression()?;
    if let Some(compression) = compression {
        builder = builder.compress(compression);
    }
    if let Some(scheme) = opts.store_args.encrypt {
        builder = builder.encrypt(scheme);
    }
    if let Some(source) = opts.store_args.password_source() {
        builder = builder.password(source);
    }
    let volume = builder.open().await.map_err(|e| with_options(opts, &prefix, e))?;
    if !volume.created()
        && let (Some(Ok(Some(stored))), Some(asked)) =
            (volume.descriptor().map(|d| d.compressed_with()), compression)
        && stored != asked
    {
        tracing::warn!("--compress ({asked}) ignored: the volume records {stored}");
    }
    match assemble(opts, &volume).await {
        Ok((cache, stats)) => {
            // An advisory lock is said once, by the lock's own warning.
            let lock_note = if volume.lock_mode().is_none() { ", read-only, no lock" } else { "" };
            let description = format!(
                "{}{}{lock_note}",
                if volume.created() { "a new volume of " } else { "" },
                volume.description()
            );
            let closing = cache.clone();
            let release: ReleaseHook = Box::new(move || {
                Box::pin(async move {
                    closing.close().await?;
                    volume.close().await
                })
            });
            Ok(Stack { device: cache, stats, release, description })
        }
        Err(e) => {
            if let Err(release) = volume.close().await {
                tracing::warn!("could not release the mount lock after a failed start: {release}");
            }
            Err(e)
        }
    }
}

/// The library's error with the mount's option names and what to do.
fn with_options(opts: &VolumeArgs, prefix: &str, e: Error) -> Error {
    match e {
        Error::NoVolume { .. } if opts.read_only && opts.size.is_some() => Error::Config(format!(
            "no volume at {} (key prefix {prefix:?}); a read-only mount does not create one: mount it \
             read-write with --size once, or create it with `s3block create`",
            opts.store
        )),
        Error::NoVolume { .. } => Error::Config(format!(
            "no volume at {} (key prefix {prefix:?}: no s3block descriptor, no s3backer block 0); give \
             --size (e.g. --size=30G) to create one, or check the URL and --prefix",
            opts.store
        )),
        Error::Mismatch { what, stored, requested } => Error::Config(format!(
            "{what} mismatch: the volume at {} was created with {what} {stored}, but {requested} was \
             requested ({}); leave the option out to use the volume's own",
            opts.store,
            option_of(what)
        )),
        Error::InvalidGeometry(why) if opts.size.is_some() => {
            Error::Config(format!("--size/--block-size: invalid geometry: {why}"))
        }
        other => other,
    }
}

fn option_of(what: &str) -> &'static str {
    match what {
        "block size" => "--block-size",
        "size" => "--size",
        "hash prefix" => "--hash-prefix",
        "encryption" => "--encrypt",
        _ => "an option",
    }
}

type Cache = BlockCache<ObjectBlockDevice>;

/// The cache over the volume's device (told which blocks are stored when
/// that is known), and the stats.
async fn assemble(opts: &VolumeArgs, volume: &Volume) -> Result<(Arc<Cache>, Arc<dyn StatsSource>)> {
    let geometry = volume.geometry();
    let device = volume.device().clone();
    let known: Option<Vec<BlockId>> = if volume.created() {
        // A new volume needs no listing: all its blocks are absent.
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
    let config = cache_config(opts, geometry);
    let cache = Arc::new(
        match known {
            Some(stored) => BlockCache::with_known_blocks(device, config, stored),
            None => BlockCache::new(device, config),
        }
        .map_err(bad_cache)?,
    );
    let shown = cache.clone();
    let reset = cache.clone();
    let stats = Stats::new()
        .with_cache(move || shown.stats(), move || reset.reset_stats())
        .with_requests(volume.store().counters.clone());
    Ok((cache, Arc::new(stats)))
}

fn cache_config(opts: &VolumeArgs, geometry: Geometry) -> CacheConfig {
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
    config.build()
}

fn bad_cache(e: Error) -> Error {
    Error::Config(format!(
        "cache options (--cache-size/--blockCacheSize, --max-dirty, --upload-concurrency): {e}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;
    use s3block_core::{BlockDeviceExt, Bytes};

    /// A frontend with nothing of its own.
    #[derive(Debug, Parser)]
    struct Frontend {
        #[command(flatten)]
        volume: VolumeArgs,
    }

    /// The options of `args` (the frontends' own, such as a mount point, left out).
    fn opts(args: &[&str]) -> VolumeArgs {
        let mut full = vec!["frontend"];
        full.extend(args.iter().copied().filter(|a| *a != "/m"));
        let volume = Frontend::try_parse_from(full).unwrap().volume;
        volume.check().unwrap();
        volume
    }

    #[tokio::test]
    async fn memory_volume_is_created_with_the_default_block_size() {
        let stack = build_stack(&opts(&["--size=64M", "memory://", "/m"])).await.unwrap();
        let g = stack.device.geometry();
        assert_eq!((g.size(), g.block_size()), (64 << 20, 256 * 1024), "the default block size is 256K");
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
        assert!(last.stats.render().contains("known zero      63 blocks"), "{}", last.stats.render());
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

    #[tokio::test]
    async fn an_encrypted_volume_needs_its_password_before_anything_is_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        let url = format!("file://{}", vol.display());
        let (right, wrong) = (dir.path().join("right"), dir.path().join("wrong"));
        std::fs::write(&right, "correct horse\n").unwrap();
        std::fs::write(&wrong, "battery staple\n").unwrap();
        let pw = |p: &std::path::Path| format!("--password-file={}", p.display());
        let no_prompt = |_: &str| -> std::io::Result<String> { Err(std::io::Error::other("no terminal")) };

        let first = build_stack_with(
            &opts(&["--size=1M", "--block-size=64K", "--encrypt", &pw(&right), &url, "/m"]),
            no_prompt,
        )
        .await
        .unwrap();
        assert!(first.description.contains("xchacha20poly1305"), "{}", first.description);
        first.device.write_at(65_536, Bytes::from_static(b"secret words")).await.unwrap();
        first.device.flush().await.unwrap();
        (first.release)().await.unwrap();
        // The object holds no plaintext.
        let object = std::fs::read(vol.join("00000001")).unwrap();
        assert!(!object.windows(6).any(|w| w == b"secret"));

        // Wrong password: refused at start, naming it, and no lock left behind.
        let err = build_stack_with(&opts(&[&pw(&wrong), &url, "/m"]), no_prompt).await.unwrap_err();
        assert!(matches!(err, Error::WrongPassword { .. }), "{err}");
        assert!(err.to_string().contains("wrong password"), "{err}");
        // No password and no terminal: the error says how to give one.
        let err = build_stack_with(&opts(&[&url, "/m"]), no_prompt).await.unwrap_err();
        assert!(matches!(err, Error::PasswordNeeded { .. }), "{err}");
        let err = s3block_store::with_hint(&err, err.to_string());
        assert!(err.contains("--password-file") && err.contains("S3BLOCK_PASSWORD"), "{err}");
        // The prompt's answer opens it, without --encrypt (the descriptor says so).
        let typed = |_: &str| Ok("correct horse".to_owned());
        let again = build_stack_with(&opts(&[&url, "/m"]), typed).await.unwrap();
        assert_eq!(&again.device.read_at(65_536, 12).await.unwrap()[..], b"secret words");
        (again.release)().await.unwrap();
    }
}
