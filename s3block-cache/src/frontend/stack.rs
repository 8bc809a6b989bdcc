//! Building the device stack a frontend serves, from the shared options.
//!
//! THE ONE PLACE THAT KNOWS THE LAYERS:
//!
//! 1. open the store named by the URL, with the shared store options
//!    ([`StoreArgs`](s3block_store::StoreArgs)); its requests are retried
//!    without limit once it has answered, or for `--io-timeout` seconds
//!    ([`VolumeArgs::retry_config`]);
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
//!    needs no listing: all its blocks are absent);
//! 6. with `--cache-dir`, a [`DiskCache`] between the two: opened against
//!    the volume's identity and the bucket's record of its last mount (see
//!    [`MountRecord`](s3block_store::MountRecord)), so a directory of
//!    another volume, or one the volume was written past since, is never
//!    served; dirty blocks a crash left there are uploaded, and read, from
//!    the start. Only then is this mount's record written to the bucket.
//!
//! **Read-only mounts take no lock.** They write nothing to the bucket (so
//! read-only credentials suffice) and may run beside the read-write mount
//! of another host, for example to copy files out; they then read blocks as
//! that mount stores them, which a filesystem may find inconsistent. When
//! the volume is locked, the log says by whom.
//!
//! Anything that fails after the lock is taken releases it before the
//! error is returned, so a failed start leaves no lock behind.
//!
//! **A read-write mount is fenced.** Its [`Fence`] checks the lock before
//! each flush and once a minute; one [`FencedDevice`] sits over the caches
//! (writes, discards and flushes fail with EIO once the lock is someone
//! else's) and one under them (uploads and deletes are refused, so the
//! blocks not stored stay in the caches). At exit a fenced mount does not
//! retry: its release hook counts the dirty blocks kept in the disk cache
//! (left there for a person to recover) or dropped (memory only), says
//! who holds the lock, and leaves the lock alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use s3block_core::{BlockDevice, BlockId, Error, Geometry, MemoryDevice, Result, format_size};
use s3block_store::{
    Create, ObjectBlockDevice, STORED_MAX_RUNS, StoreKind, StoredBlock, StoredSource, Volume,
};
use s3block_store::{Fence, FencedDevice, LOCK_CHECK_EVERY};

use s3block_store::StoreArgs;

use super::args::{DEFAULT_BLOCK_SIZE, DEFAULT_DISK_CACHE_SIZE, VolumeArgs};
use super::grow::VolumeGrow;
use super::memory;
use super::metrics::{Metrics, MetricsServer, MetricsSnapshot};
use super::stats::{Stats, StatsSource};
use crate::zeroset::RangeSet;
use crate::{
    BlockCache, CacheBudget, CacheConfig, DEFAULT_CACHE_SIZE, DiskCache, DiskCacheConfig, DiskFigures, Marks,
    OpenState, Share, VolumeIdentity,
};

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
    /// Grows the volume while it is served (`s3block resize MOUNTPOINT`).
    pub grow: Arc<VolumeGrow>,
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
    build_stack_in(opts, prompt, None).await
}

/// [`build_stack_with`], the memory cache taking its share of `budget`
/// (shared with other volumes' stacks) when given, and leaving it at release.
pub async fn build_stack_in(
    opts: &VolumeArgs,
    prompt: impl FnMut(&str) -> std::io::Result<String> + Send + 'static,
    budget: Option<&Arc<CacheBudget>>,
) -> Result<Stack> {
    let url = opts.store.as_str();
    if !matches!(url.split_once("://").map(|(s, _)| s), Some("s3" | "file" | "memory")) {
        return Err(Error::Config(format!(
            "store {url:?}: expected s3://bucket[/prefix], file:///dir or memory://"
        )));
    }
    // Refuse a cache that cannot fit in this process's memory before
    // anything is written (the block size is checked again once known).
    if opts.block_cache_blocks.is_none() {
        let block_size = opts.block_size.and_then(|b| u32::try_from(b).ok()).unwrap_or(DEFAULT_BLOCK_SIZE);
        memory::check_options(opts, block_size).map_err(Error::Config)?;
    }
    // `--metrics`: the port is taken now, so a taken one fails the start
    // before anything is opened; it is served once the volume is.
    let metrics = opts.metrics.map(MetricsServer::bind).transpose().map_err(Error::Config)?;
    let opened = opts.store_args.to_config(url).retry(opts.retry_config()).open()?;
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
    let kind = opened.kind.clone();
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
    if opts.cache_dir.is_some() {
        builder = builder.defer_mount_record();
    }
    builder = builder
        .auto_detect(!opts.no_auto_detect)
        .default_content_encoding(opts.store_args.default_content_encoding.clone());
    let mut volume = builder.open().await.map_err(|e| with_options(opts, &prefix, e))?;
    if !volume.created()
        && let (Some(Ok(Some(stored))), Some(asked)) =
            (volume.descriptor().map(|d| d.compressed_with()), compression)
        && stored != asked
    {
        tracing::warn!("--compress ({asked}) ignored: the volume records {stored}");
    }
    let bucket = StoreArgs::bucket_name(&kind);
    match assemble(opts, &mut volume, &bucket, &prefix, budget).await {
        Ok((cache, stats, disk)) => {
            if let Some(server) = metrics {
                serve_metrics(server, &stats, &volume, &kind, &bucket);
            }
            // An advisory lock is said once, by the lock's own warning.
            let lock_note = if volume.lock_mode().is_none() { ", read-only, no lock" } else { "" };
            let description = format!(
                "{}{}{lock_note}",
                if volume.created() { "a new volume of " } else { "" },
                volume.description()
            );
            let closing = cache.clone();
            let fence = volume.fence();
            let watch = fence.as_ref().map(|f| f.watch(LOCK_CHECK_EVERY));
            let device: Arc<dyn BlockDevice> = match &fence {
                Some(f) => Arc::new(FencedDevice::top(cache, f.clone())),
                None => cache,
            };
            let grow = Arc::new(VolumeGrow {
                store: volume.store().clone(),
                info: tokio::sync::Mutex::new(volume.info().clone()),
                device: volume.device().clone(),
                cache: closing.clone(),
                top: device.clone(),
                refusal: grow_refusal(opts),
            });
            let cache_dir = opts.cache_dir.clone();
            let release: ReleaseHook = Box::new(move || {
                Box::pin(async move {
                    if let Some(watch) = watch {
                        watch.abort();
                    }
                    let tripped = fence.clone().filter(|f| f.is_tripped());
                    if let Some(fence) = tripped {
                        return Err(fenced_exit(&fence, &closing, disk.as_ref(), cache_dir.as_deref()).await);
                    }
                    if let Err(e) = closing.close().await {
                        return Err(match fence.filter(|f| f.is_tripped()) {
                            Some(fence) => {
                                fenced_exit(&fence, &closing, disk.as_ref(), cache_dir.as_deref()).await
                            }
                            None => e,
                        });
                    }
                    if let Some(disk) = disk {
                        disk.close().await?;
                        disk.leave_budget();
                    }
                    closing.leave_budget();
                    volume.close().await
                })
            });
            Ok(Stack { device, stats: stats as Arc<dyn StatsSource>, release, description, grow })
        }
        Err(e) => {
            if let Err(release) = volume.close().await {
                tracing::warn!("could not release the mount lock after a failed start: {release}");
            }
            Err(e)
        }
    }
}

/// Why a mount with these options cannot grow its volume, if it cannot.
fn grow_refusal(opts: &VolumeArgs) -> Option<String> {
    if opts.read_only {
        return Some("the volume is mounted read-only: a read-only mount cannot grow it".into());
    }
    opts.cache_dir.as_ref().map(|dir| {
        format!(
            "this mount keeps a disk cache ({}), which records the volume's size: unmount, run \
             `s3block resize STORE --size NEW`, and mount again",
            dir.display()
        )
    })
}

/// How long a fenced mount's exit waits for its memory cache to move its
/// dirty blocks to the disk cache.
const FENCED_HANDOVER: Duration = Duration::from_secs(30);

/// The exit of a fenced mount: the memory cache's dirty blocks go to the
/// disk cache, if any, which is then left as it is (its dirty blocks
/// kept, the upload of none attempted); the blocks kept and dropped are
/// counted, and the error says so with who holds the lock now.
async fn fenced_exit(
    fence: &Fence,
    cache: &Cache,
    disk: Option<&Disk>,
    dir: Option<&std::path::Path>,
) -> Error {
    if disk.is_some() {
        // Into the disk tier; its own flush then fails at the fence.
        let _ = tokio::time::timeout(FENCED_HANDOVER, cache.close()).await;
    }
    let dropped = cache.stats().dirty_blocks;
    let kept = match disk {
        Some(disk) => {
            let kept = disk.stats().dirty_blocks;
            disk.stop_keeping_dirty();
            let dir = dir.map(|d| d.display().to_string()).unwrap_or_default();
            format!(
                "{kept} dirty block(s) KEPT in the disk cache {dir} (a mount with this --cache-dir refuses to \
                 start while they are there: `s3block cache inspect {dir}` lists them; keep a copy of the \
                 directory to recover them, or drop them with `s3block cache discard --force {dir}`), {dropped} \
                 dropped"
            )
        }
        None => format!(
            "{dropped} dirty block(s) DROPPED (they were in memory only: no --cache-dir to keep them)"
        ),
    };
    let now = fence.holder().unwrap_or("not this mount's");
    Error::Fenced {
        key: fence.key().to_owned(),
        now: format!("{now}; {kept}; the lock was read {} times", fence.reads()),
    }
}

/// Serves `--metrics` from the same figures as the stats files, with the
/// store's health and the lock.
fn serve_metrics(server: MetricsServer, stats: &Arc<Stats>, volume: &Volume, kind: &StoreKind, bucket: &str) {
    let addr = server.local_addr();
    let (stats, counters) = (stats.clone(), volume.store().counters.clone());
    // Held while this mount has the lock and is not fenced.
    let fence = volume.fence();
    let store = match kind {
        StoreKind::S3 { .. } => "s3",
        StoreKind::Local(_) => "file",
        StoreKind::Memory => "memory",
        _ => "other",
    };
    let metrics = Metrics::new(store, bucket, move || MetricsSnapshot {
        stats: stats.snapshot(),
        health: counters.health(),
        lock_held: fence.as_ref().is_some_and(|f| !f.is_tripped()),
    });
    match server.serve(metrics) {
        Ok(_) => tracing::info!("metrics at http://{addr}/metrics"),
        Err(e) => tracing::warn!("--metrics {addr}: cannot serve: {e}"),
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

type Cache = BlockCache<Arc<dyn BlockDevice>>;
type Disk = Arc<DiskCache<FencedDevice<ObjectBlockDevice>>>;

/// The caches over the volume's device (the memory cache told which blocks
/// are stored when that is known), and the stats.
async fn assemble(
    opts: &VolumeArgs,
    volume: &mut Volume,
    bucket: &str,
    prefix: &str,
    budget: Option<&Arc<CacheBudget>>,
) -> Result<(Arc<Cache>, Arc<Stats>, Option<Disk>)> {
    memory::check_options(opts, volume.geometry().block_size()).map_err(Error::Config)?;
    let device = volume.device().clone();
    // The stored figure's baseline starts before anything is uploaded (the
    // disk cache's recovered blocks included): nothing for a new volume,
    // else a listing, blocks stored meanwhile counted as stored.
    if volume.created() {
        device.stored().start_empty();
    } else {
        device.stored().begin_listing();
    }
    // Its share of the budget, once the other volumes made room (their
    // memory caches, then their disk tiers, shrunk).
    let share = match budget {
        Some(budget) => Some(budget.make_room(u64::from(volume.geometry().block_size())).await?),
        None => None,
    };
    let result = async {
        let disk = match &opts.cache_dir {
            Some(dir) => Some(open_disk(opts, volume, dir, bucket, prefix, share).await?),
            None => None,
        };
        let result = assemble_over(opts, volume, device, disk.clone(), budget.zip(share)).await;
        if let (Err(_), Some(disk)) = (&result, &disk) {
            // Leaves the directory as it was (its dirty blocks kept) and unlocked.
            disk.stop_keeping_dirty();
        }
        result.map(|(cache, stats)| (cache, stats, disk))
    }
    .await;
    if let (Err(_), Some(budget)) = (&result, budget) {
        // The others shrank for this volume: they grow back.
        budget.give_back();
    }
    result
}

/// Opens the disk cache in `dir` over `device`, logs what it found, and
/// records this mount in the bucket once the directory knows of it.
async fn open_disk(
    opts: &VolumeArgs,
    volume: &mut Volume,
    dir: &std::path::Path,
    bucket: &str,
    prefix: &str,
    share: Option<Share>,
) -> Result<Disk> {
    let geometry = volume.geometry();
    // The memory cache beside the tier: its default uploads follow its size.
    let ram_cache = share.as_ref().map_or_else(
        || opts.cache_bytes(geometry.block_size()).unwrap_or(crate::DEFAULT_CACHE_SIZE),
        |s| s.cache_size,
    );
    // The volume's share of the budget's disk total, else the options'.
    let (size, dirty) = match share.and_then(|s| s.disk_size.map(|size| (size, s.disk_dirty))) {
        Some(shared) => shared,
        None => (opts.disk_cache_size.unwrap_or(DEFAULT_DISK_CACHE_SIZE), opts.disk_max_dirty),
    };
    let mut config = DiskCacheConfig::builder(dir, size).durability(opts.durability.durability());
    if let Some(bytes) = dirty {
        config = config.dirty_limit(bytes);
    }
    // The disk tier makes the uploads to the store: as many at once as the
    // memory cache would.
    let uploads = opts
        .upload_concurrency
        .map_or_else(|| crate::default_requests_in_flight(geometry.block_size(), ram_cache), |n| n as usize);
    config = config.upload_concurrency(uploads);
    // A volume with a descriptor is named by its id; an s3backer volume
    // (none) by where it is.
    let id = match volume.descriptor() {
        Some(d) if !d.volume_id.is_empty() => format!("volume {}", d.volume_id),
        _ => format!("s3backer volume at {bucket}/{prefix}"),
    };
    let marks = Marks {
        found: volume.previous_mount().map(|r| r.mount.clone()),
        new: volume
            .this_mount()
            .map(|r| r.mount.clone())
            .ok_or_else(|| Error::Config("--cache-dir: a read-only mount keeps no disk cache".into()))?,
    };
    let fence = volume
        .fence()
        .ok_or_else(|| Error::Config("--cache-dir: a read-only mount keeps no disk cache".into()))?;
    let (disk, report) = DiskCache::open(
        FencedDevice::uploads(volume.device().clone(), fence),
        config.build(),
        VolumeIdentity { volume: id, geometry },
        marks,
    )
    .await?;
    match (&report.state, report.lost_dirty.is_empty()) {
        (OpenState::Discarded { .. }, _) | (_, false) => tracing::warn!("{report}"),
        _ => tracing::info!("{report}"),
    }
    let disk = Arc::new(disk);
    let recorded = volume.record_mount().await;
    if let Err(e) = recorded.and_then(|()| disk.confirm_marker()) {
        disk.stop_keeping_dirty();
        return Err(e);
    }
    Ok(disk)
}

/// The memory cache over `device` (or over the disk cache over it), with
/// its share of a budget when in one.
async fn assemble_over(
    opts: &VolumeArgs,
    volume: &Volume,
    device: ObjectBlockDevice,
    disk: Option<Disk>,
    budget: Option<(&Arc<CacheBudget>, Share)>,
) -> Result<(Arc<Cache>, Arc<Stats>)> {
    let geometry = volume.geometry();
    // A new volume needs no listing: all its blocks are absent. With
    // `--list-blocks` the cache learns the others from a listing made in
    // the background while it serves (see `list_in_background`).
    let known: Option<Vec<BlockId>> = volume.created().then(Vec::new);
    let listing = !volume.created() && opts.list_blocks;
    // Blocks the disk cache holds that the bucket does not have yet (a
    // crash left them) are not zero, whatever a listing says. Taken now,
    // before the disk cache starts storing them, so that a block stored
    // while the listing runs is not missed by both.
    let unstored: Vec<BlockId> = match &disk {
        Some(disk) if known.is_some() || listing => {
            disk.unstored_blocks().into_iter().map(|b| BlockId(b as u32)).collect()
        }
        _ => Vec::new(),
    };
    let known = known.map(|mut stored| {
        stored.extend(unstored.iter().copied());
        stored
    });
    let device_tally = device.stored().clone();
    let lister = listing.then(|| device.clone());
    if !listing && device_tally.count().source == StoredSource::Listing {
        count_in_background(&device);
    }
    let lower: Arc<dyn BlockDevice> = match &disk {
        Some(disk) => disk.clone(),
        None => match volume.fence() {
            Some(fence) => Arc::new(FencedDevice::uploads(device, fence)),
            None => Arc::new(device),
        },
    };
    let mut config = cache_config(opts, geometry);
    if let Some((_, share)) = budget {
        (config.cache_size, config.max_dirty) = (share.cache_size, Some(share.max_dirty));
    }
    let cache = Arc::new(
        match known {
            Some(stored) => BlockCache::with_known_blocks(lower, config, stored),
            None => BlockCache::new(lower, config),
        }
        .map_err(bad_cache)?,
    );
    if let Some((budget, share)) = budget {
        match &disk {
            // The disk tier's uploads to the store take the budget's
            // slots; the memory cache's go to the local disk.
            Some(disk) if share.disk_size.is_some() => {
                disk.join_budget(budget);
                cache.join_budget_over_disk(budget);
            }
            _ => cache.join_budget(budget),
        }
    }
    if let Some(lister) = lister {
        cache.begin_listing();
        list_in_background(lister, cache.clone(), unstored);
    }
    let shown = cache.clone();
    let reset = cache.clone();
    let mut stats = Stats::new()
        .with_cache(move || shown.stats(), move || reset.reset_stats())
        .with_requests(volume.store().counters.clone())
        .with_stored(device_tally.clone());
    if let Some(disk) = disk {
        let durability = opts.durability.name();
        stats = stats.with_disk(move || disk_figures(&disk, durability));
    }
    Ok((cache, Arc::new(stats)))
}

/// `--list-blocks`: lists the stored blocks in the background, in parallel
/// key ranges, as the baseline of the stored figure and so that `cache`
/// learns every other block is zero below (reads of them then make no
/// request). `unstored` are the blocks the disk cache held unstored at the
/// start. The mount serves meanwhile: a block stored or deleted during the
/// listing keeps what the mount did, whatever the listing finds for it.
///
/// The listing is kept as runs of consecutive stored blocks, at most
/// [`STORED_MAX_RUNS`] (a few MiB; a volume written by a file system is
/// mostly long runs), not as one entry per block: 4 million blocks of a
/// 1 TiB volume would be 64 MiB. Past that many runs nothing is learned
/// and reads of absent blocks make requests, as without the option.
fn list_in_background(device: ObjectBlockDevice, cache: Arc<Cache>, unstored: Vec<BlockId>) {
    tokio::spawn(async move {
        let started = Instant::now();
        let store = Arc::clone(device.counters());
        let lists = store.snapshot().lists;
        let found = Mutex::new(Listed::default());
        let listed = device
            .for_each_stored_block(&|b| {
                device.stored().listed(b.block, b.size);
                found.lock().unwrap_or_else(PoisonError::into_inner).add(b, STORED_MAX_RUNS);
            })
            .await;
        let found = found.into_inner().unwrap_or_else(PoisonError::into_inner);
        match listed {
            Ok(()) => {
                device.stored().end_listing(store.snapshot().lists.saturating_sub(lists));
                if found.too_many {
                    cache.abandon_listing();
                    tracing::warn!(
                        "listed {} stored blocks in {:.1}s, in more than {STORED_MAX_RUNS} separate runs: more \
                         than the mount keeps in memory, so reads of absent blocks each make a request",
                        found.blocks,
                        started.elapsed().as_secs_f32()
                    );
                    return;
                }
                let unstored = unstored.iter().map(|b| u64::from(b.0)..u64::from(b.0) + 1);
                let zero = cache.end_listing(
                    found.runs.into_ranges().chain(unstored),
                    0..device.geometry().block_count(),
                );
                tracing::info!(
                    "listed {} stored blocks ({} in objects) in {:.1}s; {zero} blocks are known to be \
                     zero and read without a request",
                    found.blocks,
                    format_size(found.bytes),
                    started.elapsed().as_secs_f32()
                );
            }
            Err(e) => {
                cache.abandon_listing();
                device.stored().fail_listing(&e.to_string());
                tracing::warn!(
                    "could not list the stored blocks (reads of absent blocks each make a request, and \
                     the stats say the stored figure is unknown): {e}"
                );
            }
        }
    });
}

/// What [`list_in_background`] found so far.
#[derive(Default)]
struct Listed {
    /// The blocks found, unless they were more than the runs kept.
    runs: RangeSet,
    too_many: bool,
    blocks: u64,
    bytes: u64,
}

impl Listed {
    /// Adds a block the listing found, keeping at most `max_runs` runs;
    /// past that, none.
    fn add(&mut self, b: StoredBlock, max_runs: usize) {
        self.blocks += 1;
        self.bytes += b.size;
        if self.too_many {
            return;
        }
        let n = u64::from(b.block.0);
        self.runs.insert(n..n + 1);
        if self.runs.range_count() > max_runs {
            self.too_many = true;
            self.runs = RangeSet::default();
        }
    }
}

/// Lists the volume's blocks once, in the background, for the stored
/// figure's baseline: page by page, keeping nothing of the listing.
fn count_in_background(device: &ObjectBlockDevice) {
    let (store, layout, tally) = (device.store().clone(), device.layout().clone(), device.stored().clone());
    let blocks = device.geometry().block_count();
    tokio::spawn(async move {
        let started = Instant::now();
        match tally.count_by_listing(store.as_ref(), &layout, blocks).await {
            Ok(()) => {
                let c = tally.count();
                tracing::info!(
                    "counted {} stored blocks ({} in objects) in {:.1}s with {} LIST requests",
                    c.objects,
                    format_size(c.bytes),
                    started.elapsed().as_secs_f32(),
                    c.listing_requests
                );
            }
            Err(e) => tracing::warn!("could not count the stored blocks (the stats say unknown): {e}"),
        }
    });
}

fn disk_figures(disk: &Disk, durability: &str) -> DiskFigures {
    let s = disk.stats();
    DiskFigures {
        durability: durability.to_owned(),
        size_bytes: s.size,
        used_bytes: s.used_bytes,
        blocks: s.cached_blocks,
        unstored_blocks: s.dirty_blocks,
        unstored_bytes: s.dirty_bytes,
        oldest_unstored_secs: s.oldest_dirty_secs,
        hits: s.hits,
        misses: s.misses,
        uploads: s.uploads,
        spills: s.spills,
        waits: s.waits,
        corrupt_entries: s.corrupt_entries,
        index_bytes: s.index_bytes,
    }
}

pub(super) fn cache_config(opts: &VolumeArgs, geometry: Geometry) -> CacheConfig {
    let mut config = CacheConfig::builder()
        .cache_size(opts.cache_bytes(geometry.block_size()).unwrap_or(DEFAULT_CACHE_SIZE));
    if let Some(bytes) = opts.max_dirty_bytes(geometry.block_size()) {
        config = config.max_dirty(bytes);
    }
    if let Some(ms) = opts.write_delay {
        config = config.write_delay(std::time::Duration::from_millis(ms));
    }
    if let Some(reads) = opts.read_ahead_trigger {
        config = config.read_ahead_trigger(reads);
    }
    if let Some(n) = opts.upload_concurrency {
        config = config.upload_concurrency(n as usize);
    }
    if let Some(bytes) = opts.read_ahead_bytes(geometry.block_size()) {
        config = config.read_ahead(bytes);
    }
    if let Some(n) = opts.fetch_concurrency {
        config = config.fetch_concurrency(n as usize);
    }
    if let Some(ms) = opts.cache_timeout {
        config = config.clean_timeout(std::time::Duration::from_millis(ms));
    }
    if let Some(n) = opts.protected_blocks {
        let cache_size = opts.cache_bytes(geometry.block_size()).unwrap_or(DEFAULT_CACHE_SIZE);
        let holds = cache_size / u64::from(geometry.block_size());
        if n > holds {
            tracing::warn!(
                "--protected-blocks {n}: the cache holds {holds} blocks ({}); only the first {holds} are \
                 protected, and they take the whole cache when all are read",
                format_size(cache_size)
            );
        }
        config = config.protected_blocks(n);
    }
    // The disk tier keeps and fetches whole blocks: the memory cache
    // holding only parts of them would just read the tier twice.
    config = config.ranged_reads(opts.ranged_reads.unwrap_or(opts.cache_dir.is_none()));
    if let Some(on) = opts.prompt_uploads {
        config = config.prompt_uploads(on);
    }
    config.build()
}

fn bad_cache(e: Error) -> Error {
    Error::Config(format!(
        "cache options (--cache-size/--blockCacheSize, --max-dirty, --upload-concurrency, --fetch-concurrency): {e}"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::MountStats;
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

    #[test]
    fn s3backers_dirty_limit_in_blocks_and_write_delay_reach_the_cache() {
        let geometry = Geometry::new(64 << 20, 64 << 10).unwrap();
        let c = cache_config(
            &opts(&["--blockCacheMaxDirty=10", "--blockCacheWriteDelay=1500", "memory://"]),
            geometry,
        );
        assert_eq!(
            (c.max_dirty(), c.write_delay()),
            (Some(10 * (64 << 10)), std::time::Duration::from_millis(1500))
        );
        let c = cache_config(&opts(&["--blockCacheMaxDirty=0", "--write-delay=0", "memory://"]), geometry);
        assert_eq!((c.max_dirty(), c.write_delay()), (None, std::time::Duration::ZERO));
        let c = cache_config(&opts(&["memory://"]), geometry);
        assert_eq!((c.max_dirty(), c.write_delay()), (None, crate::DEFAULT_WRITE_DELAY));
        assert_eq!(c.read_ahead_trigger(), crate::DEFAULT_READ_AHEAD_TRIGGER);
        let c = cache_config(&opts(&["--readAheadTrigger=5", "memory://"]), geometry);
        assert_eq!(c.read_ahead_trigger(), 5);
        let c = cache_config(&opts(&["--readAhead=8", "--blockCacheThreads=3", "memory://"]), geometry);
        assert_eq!((c.read_ahead(), c.upload_concurrency()), (Some(8 * (64 << 10)), Some(3)));
        let c = cache_config(&opts(&["memory://"]), geometry);
        assert_eq!((c.read_ahead(), c.upload_concurrency()), (None, None), "scaled to the block size");
        let err = Frontend::try_parse_from(["f", "--max-dirty=1M", "--blockCacheMaxDirty=3", "memory://"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--blockCacheMaxDirty") && err.contains("--max-dirty"), "{err}");
    }

    #[test]
    fn s3backers_cache_timeout_and_protected_blocks_reach_the_cache() {
        let geometry = Geometry::new(64 << 20, 64 << 10).unwrap();
        let c = cache_config(
            &opts(&["--blockCacheTimeout=2500", "--blockCacheNumProtected=16", "memory://"]),
            geometry,
        );
        assert_eq!(
            (c.clean_timeout(), c.protected_blocks()),
            (Some(std::time::Duration::from_millis(2500)), 16)
        );
        let c = cache_config(&opts(&["--cache-timeout=0", "memory://"]), geometry);
        assert_eq!((c.clean_timeout(), c.protected_blocks()), (None, 0));
    }

    #[test]
    fn prompt_uploads_are_on_unless_turned_off() {
        let geometry = Geometry::new(64 << 20, 4096).unwrap();
        assert!(cache_config(&opts(&["memory://"]), geometry).prompt_uploads());
        assert!(!cache_config(&opts(&["--prompt-uploads=off", "memory://"]), geometry).prompt_uploads());
        assert!(cache_config(&opts(&["--prompt-uploads", "on", "memory://"]), geometry).prompt_uploads());
        let err =
            Frontend::try_parse_from(["f", "--prompt-uploads=soon", "memory://"]).unwrap_err().to_string();
        assert!(err.contains("--prompt-uploads"), "{err}");
    }

    #[test]
    fn ranged_reads_are_on_unless_turned_off() {
        let geometry = Geometry::new(64 << 20, 1 << 20).unwrap();
        assert!(cache_config(&opts(&["memory://"]), geometry).ranged_reads());
        assert!(!cache_config(&opts(&["--ranged-reads=off", "memory://"]), geometry).ranged_reads());
        assert!(cache_config(&opts(&["--ranged-reads", "on", "memory://"]), geometry).ranged_reads());
        let tier = opts(&["--cache-dir=/nonexistent", "memory://"]);
        assert!(!cache_config(&tier, geometry).ranged_reads(), "off over a disk tier");
        let tier = opts(&["--cache-dir=/nonexistent", "--ranged-reads=on", "memory://"]);
        assert!(cache_config(&tier, geometry).ranged_reads());
        let err =
            Frontend::try_parse_from(["f", "--ranged-reads=maybe", "memory://"]).unwrap_err().to_string();
        assert!(err.contains("--ranged-reads"), "{err}");
    }

    /// `--noAutoDetect`: blocks s3backer stored without block 0 (so nothing
    /// to detect) open with the geometry given, and no descriptor is
    /// written; `--defaultContentEncoding`: a compressed block whose object
    /// lost its Content-Encoding reads right.
    #[tokio::test]
    async fn without_detection_and_with_a_default_encoding_blocks_read_as_stored() {
        use s3block_store::{Codec, CodecContext, CodecMeta, Deflate};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let plain = Bytes::from(vec![7u8; 4096]);
        std::fs::write(dir.path().join("00000005"), &plain).unwrap();
        let cx = CodecContext { block: BlockId(6), key: "00000006", block_size: 4096 };
        let deflated =
            Deflate::new(6).unwrap().encode(&cx, Bytes::from(vec![9u8; 4096]), &mut CodecMeta::new());
        std::fs::write(dir.path().join("00000006"), deflated.unwrap()).unwrap();
        // Detection finds no block 0, and a new volume would hide the blocks.
        let err = build_stack(&opts(&["--size=1M", "--blockSize=4K", &url])).await.unwrap_err().to_string();
        assert!(err.contains("already") || err.contains("adopt"), "{err}");
        let stack =
            build_stack(&opts(&["--noAutoDetect", "--size=1M", "--blockSize=4K", "--read-only", &url]))
                .await
                .unwrap();
        assert_eq!(stack.device.read_block(BlockId(5)).await.unwrap(), plain);
        assert!(stack.device.read_block(BlockId(6)).await.is_err(), "a zlib stream is not a block");
        (stack.release)().await.unwrap();
        let stack = build_stack(&opts(&[
            "--no-auto-detect",
            "--size=1M",
            "--block-size=4K",
            "--defaultContentEncoding=deflate",
            &url,
        ]))
        .await
        .unwrap();
        assert_eq!(stack.device.read_block(BlockId(6)).await.unwrap(), Bytes::from(vec![9u8; 4096]));
        assert_eq!(stack.device.geometry().size(), 1 << 20);
        (stack.release)().await.unwrap();
        assert!(!dir.path().join(s3block_store::DESCRIPTOR_NAME).exists(), "no descriptor was written");
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

    /// `--metrics`: a port already taken fails the start before the volume
    /// is created; a free one is served once the volume is open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_metrics_port_is_taken_at_start_and_served() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = build_stack(&opts(&["--size=1M", "--block-size=64K", "--metrics", &addr, &url, "/m"]))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("--metrics {addr}: cannot listen")), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing was created");
        let port = taken.local_addr().unwrap().port();
        drop(taken);
        let stack = build_stack(&opts(&[
            "--size=1M",
            "--block-size=64K",
            "--metrics",
            &port.to_string(),
            &url,
            "/m",
        ]))
        .await
        .unwrap();
        stack.device.write_at(0, Bytes::from_static(b"counted")).await.unwrap();
        stack.device.flush().await.unwrap();
        let body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        let bucket = dir.path().file_name().unwrap().to_string_lossy().into_owned();
        let series = format!(
            "s3block_requests_by_purpose_total{{store=\"file\",bucket=\"{bucket}\",purpose=\"block_upload\"}} 1\n"
        );
        assert!(body.starts_with("HTTP/1.1 200 OK") && body.contains(&series), "{series} in {body}");
        let lock = format!("s3block_lock_held{{store=\"file\",bucket=\"{bucket}\"}} 1\n");
        assert!(body.contains(&lock), "{lock} in {body}");
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
        // The listing runs in the background: the blocks it did not find
        // become known zero when it ends.
        let last = build_stack(&opts(&["--list-blocks", &url, "/m"])).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !last.stats.render().contains("known zero      63 blocks") {
            assert!(std::time::Instant::now() < deadline, "{}", last.stats.render());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_disk_cache_starts_warm_and_is_discarded_after_another_mount() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        let cache = dir.path().join("cache");
        std::fs::create_dir(&vol).unwrap();
        let url = format!("file://{}", vol.display());
        let cache_dir = format!("--cache-dir={}", cache.display());
        let with_cache = |extra: &[&str]| {
            let mut args = vec![cache_dir.as_str(), "--disk-cache-size=16M"];
            args.extend_from_slice(extra);
            args.push(url.as_str());
            opts(&args)
        };
        let fetches = |stats: &MountStats| stats.requests.block_fetches;

        let first = build_stack(&with_cache(&["--size=4M", "--block-size=64K"])).await.unwrap();
        first.device.write_at(200_000, Bytes::from_static(b"first words")).await.unwrap();
        first.device.flush().await.unwrap();
        let text = first.stats.render();
        assert!(text.contains("[disk cache]") && text.contains("not in bucket"), "{text}");
        (first.release)().await.unwrap();

        // Warm: the block comes from the disk, not the store.
        let warm = build_stack(&with_cache(&[])).await.unwrap();
        assert_eq!(&warm.device.read_at(200_000, 11).await.unwrap()[..], b"first words");
        let stats: MountStats = serde_json::from_str(&warm.stats.render_json()).unwrap();
        assert_eq!(fetches(&stats), 0, "a warm disk cache fetched from the store: {}", warm.stats.render());
        assert!(stats.disk.as_ref().is_some_and(|d| d.hits > 0), "{}", warm.stats.render());
        (warm.release)().await.unwrap();

        // Another mount, without the disk cache, writes the same block.
        let other = build_stack(&opts(&[url.as_str()])).await.unwrap();
        other.device.write_at(200_000, Bytes::from_static(b"newer words")).await.unwrap();
        (other.release)().await.unwrap();

        // The disk cache is not trusted any more: the newer bytes are read.
        let after = build_stack(&with_cache(&[])).await.unwrap();
        assert_eq!(&after.device.read_at(200_000, 11).await.unwrap()[..], b"newer words");
        let stats: MountStats = serde_json::from_str(&after.stats.render_json()).unwrap();
        assert!(fetches(&stats) > 0, "{}", after.stats.render());
        (after.release)().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_durability_keeps_written_blocks_out_of_the_listing_zero_set() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        let url = format!("file://{}", vol.display());
        let cache_dir = format!("--cache-dir={}", dir.path().join("cache").display());
        let args = |extra: &[&str]| {
            let mut a = vec![cache_dir.as_str(), "--durability=local", "--list-blocks"];
            a.extend_from_slice(extra);
            a.push(url.as_str());
            opts(&a)
        };
        let first = build_stack(&args(&["--size=4M", "--block-size=64K"])).await.unwrap();
        first.device.write_at(70_000, Bytes::from_static(b"on disk first")).await.unwrap();
        first.device.flush().await.unwrap();
        (first.release)().await.unwrap();
        // Closed: every block is in the bucket now, and read back through a listing.
        let again = build_stack(&args(&[])).await.unwrap();
        assert_eq!(&again.device.read_at(70_000, 13).await.unwrap()[..], b"on disk first");
        (again.release)().await.unwrap();
        let plain = build_stack(&opts(&["--read-only", url.as_str()])).await.unwrap();
        assert_eq!(&plain.device.read_at(70_000, 13).await.unwrap()[..], b"on disk first");
        (plain.release)().await.unwrap();
    }

    #[test]
    fn a_listing_keeps_runs_of_blocks_and_gives_up_past_the_most_runs() {
        let block = |n: u32| StoredBlock::new(BlockId(n), 4096);
        let mut found = Listed::default();
        // Out of order, as parallel ranges give them.
        for n in [5, 3, 4, 9, 10] {
            found.add(block(n), 2);
        }
        assert_eq!(found.runs.clone().into_ranges().collect::<Vec<_>>(), vec![3..6, 9..11]);
        assert!(!found.too_many);
        found.add(block(20), 2);
        assert!(found.too_many, "three runs where two are kept");
        assert_eq!(found.runs.range_count(), 0, "nothing is kept past the limit");
        found.add(block(21), 2);
        assert_eq!((found.blocks, found.bytes), (7, 7 * 4096));
        assert!(found.too_many);
    }

    #[test]
    fn disk_cache_options_are_checked() {
        let parse = |args: &[&str]| {
            let mut full = vec!["frontend"];
            full.extend_from_slice(args);
            Frontend::try_parse_from(full).map_err(|e| e.to_string()).and_then(|f| f.volume.check())
        };
        let err = parse(&["--durability=local", "memory://"]).unwrap_err();
        assert!(err.contains("--durability local") && err.contains("--cache-dir"), "{err}");
        let err = parse(&["--cache-dir=/tmp/x", "--read-only", "memory://"]).unwrap_err();
        assert!(err.contains("--cache-dir") && err.contains("--read-only"), "{err}");
        let err = parse(&["--disk-cache-size=1G", "memory://"]).unwrap_err();
        assert!(err.contains("--cache-dir"), "{err}");
        let err = parse(&["--durability=sometimes", "memory://"]).unwrap_err();
        assert!(err.contains("sometimes"), "{err}");
        parse(&["--cache-dir=/tmp/x", "--durability=local", "memory://"]).unwrap();
    }

    /// A mount whose lock is broken (`s3block unlock --force`) and taken by
    /// another: its flush, writes and exit are fenced, its dirty block
    /// never reaches the bucket, and the exit counts it as dropped (memory
    /// only) or kept (in the disk cache, which the next mount with that
    /// directory refuses to overwrite).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mount_whose_lock_was_taken_is_fenced() {
        for with_disk in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let vol = dir.path().join("vol");
            std::fs::create_dir(&vol).unwrap();
            let url = format!("file://{}", vol.display());
            let cache_dir = format!("--cache-dir={}", dir.path().join("cache").display());
            let mut args = vec!["--size=1M", "--block-size=64K", "--write-delay=600000"];
            if with_disk {
                args.push(&cache_dir);
            }
            args.push(&url);
            let a = build_stack(&opts(&args)).await.unwrap();
            a.device.write_at(65_536, Bytes::from_static(b"written by a")).await.unwrap();

            let opened = s3block_store::StoreConfig::new(&url).open().unwrap();
            s3block_store::break_lock(opened.store.as_ref(), &opened.prefix).await.unwrap().unwrap();
            let b = build_stack(&opts(&[url.as_str()])).await.unwrap();
            b.device.write_at(65_536, Bytes::from_static(b"written by b")).await.unwrap();
            b.device.flush().await.unwrap();

            let err = a.device.flush().await.unwrap_err();
            assert!(err.is_fenced() && err.to_string().contains(&s3block_store::hostname()), "{err}");
            let err = a.device.write_at(0, Bytes::from_static(b"more")).await.unwrap_err();
            assert!(err.is_fenced(), "{err}");
            let outcome = super::super::shutdown(
                a.device.as_ref(),
                super::super::Backoff::default(),
                std::future::pending(),
                a.release,
            )
            .await;
            let super::super::ShutdownOutcome::Fenced { report, attempts: 1 } = &outcome else {
                panic!("expected a fenced exit, got {outcome:?}")
            };
            let said = if with_disk { "1 dirty block(s) KEPT" } else { "1 dirty block(s) DROPPED" };
            assert!(report.contains(said), "{report}");
            // B's block is intact, and B's lock too.
            assert_eq!(&b.device.read_at(65_536, 12).await.unwrap()[..], b"written by b");
            (b.release)().await.unwrap();
            let again = build_stack(&opts(&["--read-only", url.as_str()])).await.unwrap();
            assert_eq!(&again.device.read_at(65_536, 12).await.unwrap()[..], b"written by b");
            (again.release)().await.unwrap();
            if with_disk {
                // The kept block stays for a person: the directory is refused.
                let err = build_stack(&opts(&[cache_dir.as_str(), url.as_str()])).await.unwrap_err();
                assert!(err.to_string().contains("1 dirty block(s) not yet in the bucket"), "{err}");
            }
        }
    }
}
