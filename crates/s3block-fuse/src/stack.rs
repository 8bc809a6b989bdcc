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
//! 3. unlock an encrypted volume: its descriptor says it is encrypted (or
//!    `--encrypt`, for a volume s3backer made, or to create one); the
//!    password comes from `--password-file`, `S3BLOCK_PASSWORD` or a prompt,
//!    and a wrong one fails here, before anything is mounted, with "wrong
//!    password" (never as EIO on a later read);
//! 4. take the mount lock, unless read-only (see below);
//! 5. an [`ObjectBlockDevice`] (with the deflate codec under `--compress`,
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

use s3block_cache::{BlockCache, CacheConfig, DEFAULT_CACHE_SIZE};
use s3block_core::{BlockDevice, BlockId, Error, Geometry, KeyLayout, MemoryDevice, Result, format_size};
use s3block_store::{
    CodecChain, EncryptionOptions, GeometrySource, LockOptions, MountLock, ObjectBlockDevice, OpenedStore,
    StoreKind, VolumeOptions, create_volume_with, open_volume, open_volume_with, read_lock,
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
    /// The encryption scheme the descriptor records, if any.
    encryption: Option<String>,
}

/// How blocks are encoded: the codecs of an existing volume (its password
/// already checked), or the encryption to create a new one with.
enum Encoding {
    Existing(CodecChain),
    New(Option<EncryptionOptions>),
}

/// Asks for the password on the terminal, without echo (an error when
/// standard input is not a terminal).
pub fn terminal_prompt(text: &str) -> std::io::Result<String> {
    s3block_store::StoreArgs::terminal_prompt(|t: &str| rpassword::prompt_password(t))(text)
}

/// Builds the stack for `opts.store`, asking for a password on the terminal
/// when one is needed and not given. Errors name the option, URL, key or
/// lock holder at fault.
pub async fn build_stack(opts: &Options) -> Result<Stack> {
    build_stack_with(opts, &mut terminal_prompt).await
}

/// [`build_stack`], with `prompt` asked for a password that neither
/// `--password-file` nor `S3BLOCK_PASSWORD` gives.
pub async fn build_stack_with(
    opts: &Options,
    prompt: &mut dyn FnMut(&str) -> std::io::Result<String>,
) -> Result<Stack> {
    let url = opts.store.as_str();
    if !matches!(url.split_once("://").map(|(s, _)| s), Some("s3" | "file" | "memory")) {
        return Err(Error::Config(format!(
            "store {url:?}: expected s3://bucket[/prefix], file:///dir or memory://"
        )));
    }
    let opened = opts.store_args.to_config(url).open()?;
    let found = find_volume(opts, &opened).await?;
    let encoding = unlock(opts, &opened, &found, prompt).await?;
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
    match assemble(opts, &opened, &found, encoding).await {
        Ok((cache, stats, description)) => {
            // An advisory lock was announced once, by a warning, when taken.
            let lock_note = if lock.is_none() { ", read-only, no lock" } else { "" };
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
            encryption: None,
        });
    };
    let size = volume.geometry.size();
    if let Some(requested) = opts.size
        && requested != size
    {
        let show = |v: u64| format!("{} ({v} bytes)", format_size(v));
        return Err(mismatch("size", show(size), show(requested)));
    }
    let (compression, encryption) = match &volume.source {
        GeometrySource::Descriptor(d) => {
            (d.compression, d.encryption_params()?.map(|p| p.scheme().to_string()))
        }
        _ => (None, opts.store_args.encrypt.map(|_| "aes-128-cbc (s3backer's)".to_owned())),
    };
    Ok(Found { geometry: volume.geometry, layout: volume.layout, compression, create: false, encryption })
}

/// Checks the password of an existing volume and returns its codecs, or
/// reads the password to create a new one with (`--encrypt`).
async fn unlock(
    opts: &Options,
    opened: &OpenedStore,
    found: &Found,
    prompt: &mut dyn FnMut(&str) -> std::io::Result<String>,
) -> Result<Encoding> {
    let what = format!("the volume at {}", opts.store);
    if found.create {
        return Ok(Encoding::New(opts.store_args.create_encryption(opened, &what, prompt)?));
    }
    let encryption = opts.store_args.open_encryption(opened, &what, prompt).await?;
    let wanted = VolumeOptions { compression: opts.compress, ..Default::default() };
    let (_, codecs) =
        open_volume_with(opened.store.as_ref(), &opened.prefix, &wanted, encryption.as_ref()).await?;
    Ok(Encoding::Existing(codecs))
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
    encoding: Encoding,
) -> Result<(Arc<Cache>, Arc<dyn StatsSource>, String)> {
    let geometry = found.geometry;
    let block_size = u64::from(geometry.block_size());
    let compression = if found.create { opts.compress } else { found.compression.or(opts.compress) };
    if !found.create
        && found.compression.is_some()
        && opts.compress.is_some()
        && found.compression != opts.compress
    {
        tracing::warn!(
            "--compress={} ignored: the volume records deflate level {}",
            opts.compress.unwrap_or_default(),
            found.compression.unwrap_or_default()
        );
    }
    let (codecs, encrypted) = match encoding {
        Encoding::Existing(codecs) => (codecs, found.encryption.clone()),
        Encoding::New(encryption) => {
            // Refuse bad cache options before anything is written.
            let probe = BlockCache::new(MemoryDevice::new(geometry), cache_config(opts, geometry))
                .map_err(bad_cache)?;
            probe.close().await?;
            let new = VolumeOptions {
                size: Some(geometry.size()),
                block_size: Some(block_size),
                hash_prefix: Some(opts.hash_prefix),
                compression: opts.compress,
            };
            let (d, codecs) =
                create_volume_with(opened.store.as_ref(), &opened.prefix, &new, encryption.as_ref()).await?;
            let scheme = d.encryption_params()?.map(|p| p.scheme().to_string());
            tracing::info!(
                "created a new volume at {} (key prefix {:?}): {} in blocks of {}{}{}, id {}",
                opts.store,
                opened.prefix,
                format_size(d.size),
                format_size(d.block_size),
                d.compression.map(|l| format!(", deflate level {l}")).unwrap_or_default(),
                scheme.as_ref().map(|s| format!(", encrypted with {s}")).unwrap_or_default(),
                d.volume_id
            );
            (codecs, scheme)
        }
    };
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
        .with_requests(opened.counters.clone());
    let description = format!(
        "{}{} in blocks of {}{}{}",
        if found.create { "a new volume of " } else { "" },
        format_size(geometry.size()),
        format_size(block_size),
        compression.map(|l| format!(", deflate level {l}")).unwrap_or_default(),
        encrypted.map(|s| format!(", encrypted with {s}")).unwrap_or_default(),
    );
    Ok((cache, Arc::new(stats), description))
}

fn cache_config(opts: &Options, geometry: Geometry) -> CacheConfig {
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
        let mut no_prompt =
            |_: &str| -> std::io::Result<String> { Err(std::io::Error::other("no terminal")) };

        let first = build_stack_with(
            &opts(&["--size=1M", "--block-size=64K", "--encrypt", &pw(&right), &url, "/m"]),
            &mut no_prompt,
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
        let err = build_stack_with(&opts(&[&pw(&wrong), &url, "/m"]), &mut no_prompt).await.unwrap_err();
        assert!(matches!(err, Error::WrongPassword { .. }), "{err}");
        assert!(err.to_string().contains("wrong password"), "{err}");
        // No password and no terminal: the error says how to give one.
        let err = build_stack_with(&opts(&[&url, "/m"]), &mut no_prompt).await.unwrap_err().to_string();
        assert!(err.contains("--password-file") && err.contains("S3BLOCK_PASSWORD"), "{err}");
        // The prompt's answer opens it, without --encrypt (the descriptor says so).
        let mut typed = |_: &str| Ok("correct horse".to_owned());
        let again = build_stack_with(&opts(&[&url, "/m"]), &mut typed).await.unwrap();
        assert_eq!(&again.device.read_at(65_536, 12).await.unwrap()[..], b"secret words");
        (again.release)().await.unwrap();
    }
}
