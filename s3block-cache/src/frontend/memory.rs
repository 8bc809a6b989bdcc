//! Whether the caches fit in the memory the daemon may use.
//!
//! A daemon killed for memory loses the dirty blocks it holds, so a
//! frontend checks at start that its RAM cache, the disk cache's index,
//! the blocks in flight and its own baseline fit under the limit it lives
//! under, and refuses to start otherwise, saying what would fit. The limit
//! is the lowest of the memory cgroup's limits on the way to the root
//! (cgroup v1 `memory.limit_in_bytes` and the `hierarchical_memory_limit`
//! it reports; cgroup v2 `memory.max` of the group and each parent), else
//! the machine's RAM (`MemTotal` in `/proc/meminfo`).
//!
//! The baseline ([`BASELINE`]) is measured: the mount program copying a
//! tree of 29,000 files onto ext4 over Garage peaked at its cache plus
//! 16 MiB (`--cache-size 16M`, 256 KiB blocks) and plus 18 MiB
//! (`--cache-size 32M`), code, threads, HTTP and FUSE buffers included;
//! the test `tests/tests/memory_cgroup.rs` runs that workload in cgroups
//! of 40 and 64 MiB.

use std::path::{Path, PathBuf};

use s3block_core::{Geometry, format_size};

use crate::{DEFAULT_CACHE_SIZE, default_requests_in_flight};

use super::args::{DEFAULT_DISK_CACHE_SIZE, VolumeArgs};

/// What the daemon uses beyond its caches and the blocks in flight: code,
/// threads, the HTTP client, FUSE's buffers (one idle 1 MiB buffer for the
/// copies of large writes, and at most 2 MiB of idle buffers for fetched
/// blocks), the allocator's slack.
pub const BASELINE: u64 = 20 << 20;

/// Bytes of disk-cache index per block, rounded up from the measured 23.0.
const INDEX_BYTES_PER_BLOCK: u64 = 24;

/// Bytes of the RAM cache's bookkeeping per block it can hold, rounded up
/// from the 260 measured with heaptrack on a full 64 MiB cache of 4 KiB
/// blocks: the entries' hash table just after it doubled, half its slots
/// empty, 162 bytes a block (a slot of 80 bytes and its control byte,
/// twice); the eviction order's nodes and hash table, 58; the shared
/// handle of each block's buffer, 40. A tenth of a percent at 256 KiB
/// blocks, 7% of the cache at 4 KiB.
pub const CACHE_INDEX_BYTES_PER_BLOCK: u64 = 272;

/// Bytes of the HTTP client's state for each request in flight to the
/// store beyond the [`REQUESTS_IN_BASELINE`] that [`BASELINE`] covers,
/// rounded up from the 34 KiB measured with heaptrack at 4K blocks (61
/// connections of uploads: hyper's connection task 9 KiB, its request
/// channel 9 KiB, 8 KiB more in its pooled client, and a read buffer from
/// 8 KiB). Each fetch and each upload in flight holds a connection.
pub const REQUEST_BYTES: u64 = 40 << 10;

/// Requests in flight whose connections [`BASELINE`] covers: those of the
/// defaults at 256 KiB blocks with the default 64 MiB cache (64 fetches,
/// 32 uploads), whose peak (89.8 MiB in the bench) stays under what is
/// counted for it (92 MiB). At 4K blocks the defaults are 192 (128
/// fetches, 64 uploads): a cold read of 256 MiB through a full 64 MiB
/// cache peaked at 87.4 MiB, the 64 uploads' connections would come on
/// top, and 96 more requests are counted 3.75 MiB.
pub const REQUESTS_IN_BASELINE: u64 = 96;

/// Bytes of RAM of the HTTP client's state for `requests` in flight (fetches
/// and uploads), beyond the [`REQUESTS_IN_BASELINE`] that [`BASELINE`]
/// covers.
pub fn request_state(requests: u64) -> u64 {
    requests.saturating_sub(REQUESTS_IN_BASELINE).saturating_mul(REQUEST_BYTES)
}

/// Fetches at once a volume of `block_size`-byte blocks makes with `opts`:
/// its `--fetch-concurrency`, else the cache's default for that block size
/// and cache size.
pub(crate) fn fetches(opts: &VolumeArgs, block_size: u32) -> u64 {
    let bs = u64::from(block_size.max(1));
    let geometry = Geometry::new(bs.saturating_mul(1 << 20), bs);
    let limits = geometry.as_ref().ok().and_then(|g| super::stack::cache_config(opts, *g).limits(g).ok());
    match (limits, opts.fetch_concurrency) {
        (Some(limits), _) => limits.fetch_concurrency as u64,
        (None, Some(n)) => u64::from(n),
        (None, None) => 2 * default_requests_in_flight(block_size, DEFAULT_CACHE_SIZE) as u64,
    }
}

/// Blocks whose bookkeeping [`BASELINE`] covers: a 16 MiB cache of 4 KiB
/// blocks (4,096) peaked at 34.7 MiB in a 40 MiB memory cgroup, against
/// the 36.25 MiB the options were counted to need without it
/// (docs/RELIABILITY.md, the 128 MB host).
pub const BLOCKS_IN_BASELINE: u64 = 4096;

/// The memory limit a process lives under, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The limit, in bytes.
    pub bytes: u64,
    /// Where it was read: a cgroup file or `/proc/meminfo`.
    pub source: String,
}

/// The parts of the memory a frontend with `opts` needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryNeed {
    /// The RAM cache (`--cache-size`).
    pub cache: u64,
    /// The RAM cache's bookkeeping ([`cache_index`]).
    pub cache_index: u64,
    /// The disk cache's index in RAM (`--disk-cache-size` / block size).
    pub disk_index: u64,
    /// Blocks being encoded for upload (`--upload-concurrency` blocks).
    pub in_flight: u64,
    /// The HTTP client's state for the fetches and uploads in flight
    /// ([`request_state`]).
    pub requests: u64,
    /// [`BASELINE`].
    pub baseline: u64,
}

impl MemoryNeed {
    /// What `opts` needs with blocks of `block_size` bytes.
    pub fn of(opts: &VolumeArgs, block_size: u32) -> Self {
        let cache = opts.cache_bytes(block_size).unwrap_or(DEFAULT_CACHE_SIZE);
        let uploads = opts
            .upload_concurrency
            .map_or_else(|| default_requests_in_flight(block_size, cache) as u64, u64::from);
        let fetches = fetches(opts, block_size);
        let block_size = u64::from(block_size.max(1));
        let disk_index = match &opts.cache_dir {
            Some(_) => disk_index(opts.disk_cache_size.unwrap_or(DEFAULT_DISK_CACHE_SIZE), block_size),
            None => 0,
        };
        MemoryNeed {
            cache,
            cache_index: cache_index(cache, block_size),
            disk_index,
            in_flight: uploads.saturating_mul(block_size),
            requests: request_state(uploads.saturating_add(fetches)),
            baseline: BASELINE,
        }
    }

    /// The sum of the parts.
    pub fn total(&self) -> u64 {
        self.cache
            .saturating_add(self.cache_index)
            .saturating_add(self.disk_index)
            .saturating_add(self.in_flight)
            .saturating_add(self.requests)
            .saturating_add(self.baseline)
    }
}

/// Bytes of RAM of the bookkeeping of a RAM cache of `size` bytes holding
/// blocks of `block_size` bytes, beyond the [`BLOCKS_IN_BASELINE`] that
/// [`BASELINE`] covers.
pub fn cache_index(size: u64, block_size: u64) -> u64 {
    (size / block_size.max(1)).saturating_sub(BLOCKS_IN_BASELINE).saturating_mul(CACHE_INDEX_BYTES_PER_BLOCK)
}

/// Bytes of RAM of the index of a disk cache of `size` bytes holding
/// blocks of `block_size` bytes.
pub fn disk_index(size: u64, block_size: u64) -> u64 {
    size / block_size.max(1) * INDEX_BYTES_PER_BLOCK
}

/// The limit this process lives under, read from the system at `root`
/// (`/` but in tests). `None` when nothing can be read.
pub fn limit_at(root: &Path) -> Option<MemoryLimit> {
    let cgroups = std::fs::read_to_string(root.join("proc/self/cgroup")).unwrap_or_default();
    let from_cgroup = cgroup_v1_limit(root, &cgroups).or_else(|| cgroup_v2_limit(root, &cgroups));
    let machine = machine_ram(root);
    match (from_cgroup, machine) {
        (Some(c), Some(m)) if m.bytes < c.bytes => Some(m),
        (Some(c), _) => Some(c),
        (None, m) => m,
    }
}

/// Limits at or above this mean "no limit" (cgroup v1 writes a page-rounded
/// `i64::MAX`).
const UNLIMITED: u64 = 1 << 60;

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The group's directory under `mount`: its path from `/proc/self/cgroup`,
/// or the mount itself when that path is not visible (a container whose
/// cgroup namespace shows its own group as the root).
fn group_dir(mount: &Path, path: &str) -> Option<PathBuf> {
    let dir = mount.join(path.trim_start_matches('/'));
    if dir.is_dir() {
        Some(dir)
    } else if mount.is_dir() {
        Some(mount.to_path_buf())
    } else {
        None
    }
}

fn cgroup_v1_limit(root: &Path, cgroups: &str) -> Option<MemoryLimit> {
    let path = cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers.split(',').any(|c| c == "memory").then_some(path)
    })?;
    let dir = group_dir(&root.join("sys/fs/cgroup/memory"), path)?;
    let own = dir.join("memory.limit_in_bytes");
    let mut best = read_number(&own)
        .filter(|&b| b < UNLIMITED)
        .map(|bytes| MemoryLimit { bytes, source: own.display().to_string() });
    // The parents' limits, as the kernel applies them.
    let stat = dir.join("memory.stat");
    let hierarchical = std::fs::read_to_string(&stat).ok().and_then(|text| {
        text.lines().find_map(|l| l.strip_prefix("hierarchical_memory_limit ")?.trim().parse::<u64>().ok())
    });
    if let Some(bytes) = hierarchical.filter(|&b| b < UNLIMITED)
        && best.as_ref().is_none_or(|b| bytes < b.bytes)
    {
        best = Some(MemoryLimit { bytes, source: format!("{} (hierarchical_memory_limit)", stat.display()) });
    }
    best
}

fn cgroup_v2_limit(root: &Path, cgroups: &str) -> Option<MemoryLimit> {
    let path = cgroups.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mount = root.join("sys/fs/cgroup");
    let mut dir = group_dir(&mount, path)?;
    let mut best: Option<MemoryLimit> = None;
    loop {
        let file = dir.join("memory.max");
        if let Some(bytes) = read_number(&file).filter(|&b| b < UNLIMITED)
            && best.as_ref().is_none_or(|b| bytes < b.bytes)
        {
            best = Some(MemoryLimit { bytes, source: file.display().to_string() });
        }
        if dir == mount || !dir.pop() || !dir.starts_with(&mount) {
            return best;
        }
    }
}

fn machine_ram(root: &Path) -> Option<MemoryLimit> {
    let path = root.join("proc/meminfo");
    let text = std::fs::read_to_string(&path).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())?;
    Some(MemoryLimit {
        bytes: kib.saturating_mul(1024),
        source: format!("the machine's RAM ({})", path.display()),
    })
}

/// Checks that `need` fits under `limit`: the error says what the limit is,
/// where it comes from, what the options need and the largest
/// `--cache-size` that would fit.
pub fn check(need: &MemoryNeed, limit: &MemoryLimit) -> Result<(), String> {
    let total = need.total();
    if total <= limit.bytes {
        return Ok(());
    }
    let others = total - need.cache - need.cache_index;
    // The index grows with the cache, by CACHE_INDEX_BYTES_PER_BLOCK a
    // block beyond the first BLOCKS_IN_BASELINE: a cache of c bytes of
    // blocks of b bytes fits in `room` when c + (c / b - that many) * the
    // bytes a block <= room. The block size is the one the index was
    // counted at.
    let share = |room: u64| match need.cache_index {
        0 => room,
        index => {
            let per_block = u128::from(CACHE_INDEX_BYTES_PER_BLOCK);
            let blocks = u128::from(index) / per_block + u128::from(BLOCKS_IN_BASELINE);
            let block = (u128::from(need.cache) / blocks).max(1);
            let free = u128::from(BLOCKS_IN_BASELINE) * per_block;
            let with_index = (u128::from(room) + free) * block / (block + per_block);
            // Up to the baseline's blocks the index costs nothing.
            let without = u128::from(room).min(u128::from(BLOCKS_IN_BASELINE) * block);
            u64::try_from(with_index.max(without)).unwrap_or(u64::MAX)
        }
    };
    let fits = match limit.bytes.checked_sub(others).map(share) {
        Some(room) if room >= 1 << 20 => {
            format!("--cache-size {} or less would fit", format_size(room >> 20 << 20))
        }
        _ => "no cache size fits: raise the limit, or lower --upload-concurrency and --disk-cache-size"
            .to_owned(),
    };
    let mut parts = format!("the cache {}", format_size(need.cache));
    if need.cache_index >= 1 << 20 {
        parts.push_str(&format!(" and its bookkeeping {}", format_size(need.cache_index)));
    }
    if need.disk_index > 0 {
        parts.push_str(&format!(", the disk cache's index {}", format_size(need.disk_index)));
    }
    if need.requests > 0 {
        parts.push_str(&format!(
            ", {} of connections for the requests in flight beyond the first {REQUESTS_IN_BASELINE}",
            format_size(need.requests)
        ));
    }
    parts.push_str(&format!(
        ", {} of blocks in flight and the program's own {}",
        format_size(need.in_flight),
        format_size(need.baseline)
    ));
    Err(format!(
        "not enough memory: this process may use {} ({}), but these options need about {} ({parts}); a \
         daemon killed for memory loses the blocks it has not stored. {fits}",
        format_size(limit.bytes),
        limit.source,
        format_size(total)
    ))
}

/// [`check`] for `opts` with blocks of `block_size` bytes, against the limit
/// of this process (nothing is checked when no limit can be read).
pub fn check_options(opts: &VolumeArgs, block_size: u32) -> Result<(), String> {
    let Some(limit) = limit_at(Path::new("/")) else {
        tracing::debug!("no memory limit could be read; the cache size is not checked against one");
        return Ok(());
    };
    let need = MemoryNeed::of(opts, block_size);
    tracing::debug!(
        "memory: {} may be used ({}); the options need about {}",
        limit.bytes,
        limit.source,
        need.total()
    );
    check(&need, &limit)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

    fn write(root: &Path, path: &str, text: &str) {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn meminfo(root: &Path, mib: u64) {
        write(root, "proc/meminfo", &format!("MemTotal:       {} kB\nMemFree:        1 kB\n", mib * 1024));
    }

    #[test]
    fn a_cgroup_v1_limit_and_its_parents_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        meminfo(root, 24 * 1024);
        write(root, "proc/self/cgroup", "5:cpu,cpuacct:/\n4:memory:/svc/vol\n0::/\n");
        write(root, "sys/fs/cgroup/memory/svc/vol/memory.limit_in_bytes", "41943040\n");
        write(
            root,
            "sys/fs/cgroup/memory/svc/vol/memory.stat",
            "cache 0\nhierarchical_memory_limit 9223372036854771712\n",
        );
        let limit = limit_at(root).unwrap();
        assert_eq!(limit.bytes, 40 << 20);
        assert!(limit.source.ends_with("svc/vol/memory.limit_in_bytes"), "{}", limit.source);
        // A parent's lower limit, reported by the group itself.
        write(root, "sys/fs/cgroup/memory/svc/vol/memory.stat", "hierarchical_memory_limit 33554432\n");
        let limit = limit_at(root).unwrap();
        assert_eq!(limit.bytes, 32 << 20);
        assert!(limit.source.contains("hierarchical_memory_limit"), "{}", limit.source);
        // No limit: the machine's RAM.
        write(root, "sys/fs/cgroup/memory/svc/vol/memory.limit_in_bytes", "9223372036854771712\n");
        write(root, "sys/fs/cgroup/memory/svc/vol/memory.stat", "\n");
        let limit = limit_at(root).unwrap();
        assert_eq!(limit.bytes, 24 << 30);
        assert!(limit.source.contains("RAM"), "{}", limit.source);
    }

    #[test]
    fn a_cgroup_v2_limit_is_the_lowest_on_the_way_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        meminfo(root, 128);
        write(root, "proc/self/cgroup", "0::/system.slice/s3block@vol.service\n");
        write(root, "sys/fs/cgroup/system.slice/s3block@vol.service/memory.max", "max\n");
        write(root, "sys/fs/cgroup/system.slice/memory.max", "67108864\n");
        let limit = limit_at(root).unwrap();
        assert_eq!(limit.bytes, 64 << 20);
        assert!(limit.source.ends_with("system.slice/memory.max"), "{}", limit.source);
        // A group limit above the machine's RAM: the RAM binds.
        write(root, "sys/fs/cgroup/system.slice/memory.max", "1073741824\n");
        assert_eq!(limit_at(root).unwrap().bytes, 128 << 20);
    }

    #[test]
    fn a_group_path_outside_the_namespace_reads_the_mount_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "proc/self/cgroup", "4:memory:/host/path/not/here\n");
        write(root, "sys/fs/cgroup/memory/memory.limit_in_bytes", "50331648\n");
        assert_eq!(limit_at(root).unwrap().bytes, 48 << 20);
        // Nothing readable at all.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(limit_at(empty.path()), None);
    }

    fn args(extra: &[&str]) -> VolumeArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            volume: VolumeArgs,
        }
        let mut argv = vec!["test", "memory://"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).unwrap().volume
    }

    #[test]
    fn what_the_options_need_and_the_refusal() {
        let need = MemoryNeed::of(&args(&["--cache-size", "16M"]), 256 << 10);
        assert_eq!(
            need,
            MemoryNeed {
                cache: 16 << 20,
                cache_index: 0,
                disk_index: 0,
                in_flight: 4 << 20,
                requests: 0,
                baseline: BASELINE
            }
        );
        // 16 uploads of 256K blocks by default with a cache this small (an
        // eighth of a 64M cache: 32); an explicit count wins.
        assert_eq!(MemoryNeed::of(&args(&[]), 256 << 10).in_flight, 8 << 20);
        let two = MemoryNeed::of(&args(&["--cache-size", "16M", "--upload-concurrency", "2"]), 1 << 20);
        assert_eq!(two.in_flight, 2 << 20);
        assert_eq!(MemoryNeed::of(&args(&[]), 4096).in_flight, 64 * 4096);
        // Each fetch and upload in flight holds a connection: the defaults
        // at 256K (64 + 32) are in the baseline, those at 4K (128 + 64)
        // count 96 more, and so does an explicit fetch count.
        assert_eq!(MemoryNeed::of(&args(&[]), 256 << 10).requests, 0);
        assert_eq!(MemoryNeed::of(&args(&[]), 4096).requests, 96 * REQUEST_BYTES);
        let many = MemoryNeed::of(&args(&["--fetch-concurrency", "1000"]), 256 << 10);
        assert_eq!(many.requests, (1000 + 32 - 96) * REQUEST_BYTES);
        let forty = MemoryLimit { bytes: 40 << 20, source: "memory.limit_in_bytes".into() };
        check(&need, &forty).unwrap();
        let need = MemoryNeed::of(&args(&["--cache-size", "32M"]), 256 << 10);
        check(&need, &MemoryLimit { bytes: 64 << 20, source: "x".into() }).unwrap();
        let err = check(&need, &forty).unwrap_err();
        assert!(err.contains("this process may use 40M (memory.limit_in_bytes)"), "{err}");
        assert!(err.contains("need about 56M"), "{err}");
        assert!(err.contains("--cache-size 16M or less would fit"), "{err}");
        // The disk cache's index counts: 4K blocks in 1 GiB of disk cache.
        let need = MemoryNeed::of(&args(&["--cache-size", "16M", "--cache-dir", "/tmp/x"]), 4096);
        assert_eq!(need.disk_index, 262_144 * 24);
        assert!(check(&need, &forty).unwrap_err().contains("the disk cache's index 6M"));
        // The RAM cache's bookkeeping counts, per block it can hold beyond
        // the 4,096 the baseline covers (so 16M of 4K blocks adds nothing),
        // and the size that fits leaves room for it.
        assert_eq!(MemoryNeed::of(&args(&["--cache-size", "16M"]), 4096).cache_index, 0);
        let need = MemoryNeed::of(&args(&["--cache-size", "64M"]), 4096);
        assert_eq!(need.cache_index, 12_288 * 272);
        let err = check(&need, &MemoryLimit { bytes: 80 << 20, source: "x".into() }).unwrap_err();
        assert!(err.contains("the cache 64M and its bookkeeping 3264K"), "{err}");
        let fits = err.split("--cache-size ").nth(1).and_then(|s| s.split('M').next()).unwrap();
        let fits: u64 = fits.parse().unwrap();
        let smaller = MemoryNeed::of(&args(&["--cache-size", &format!("{fits}M")]), 4096);
        check(&smaller, &MemoryLimit { bytes: 80 << 20, source: "x".into() }).unwrap();
        let one_more = MemoryNeed::of(&args(&["--cache-size", &format!("{}M", fits + 1)]), 4096);
        check(&one_more, &MemoryLimit { bytes: 80 << 20, source: "x".into() }).unwrap_err();
        // Nothing fits.
        let tiny = MemoryLimit { bytes: 16 << 20, source: "x".into() };
        let err = check(&MemoryNeed::of(&args(&[]), 256 << 10), &tiny).unwrap_err();
        assert!(err.contains("no cache size fits"), "{err}");
    }
}
