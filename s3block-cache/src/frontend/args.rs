//! The options that say which volume a frontend serves and how it is
//! cached: one clap argument group, flattened by every frontend.

use clap::Args;
use s3block_core::{format_size, parse_size};
use s3block_store::{CompressArgs, StoreArgs};

use crate::{DEFAULT_CACHE_SIZE, MAX_REQUESTS_IN_FLIGHT, MIN_REQUESTS_IN_FLIGHT, TARGET_BYTES_IN_FLIGHT};

/// The default block size, the same for every frontend (see its docs for why 256 KiB).
pub use s3block_core::DEFAULT_BLOCK_SIZE;

/// The volume a frontend serves, and its cache: flatten into a program's
/// clap parser (`#[command(flatten)]`), then call
/// [`with_help`](Self::with_help) on its command and
/// [`check`](Self::check) on the parsed value.
///
/// The store URL is the first positional argument. Sizes accept suffixes
/// (`512K`, `30G`). s3backer's names (`--blockSize`, `--blockCacheSize`,
/// `--readOnly`, ...) are aliases.
#[derive(Debug, Clone, Args)]
pub struct VolumeArgs {
    /// Where the volume lives: s3://bucket[/prefix], file:///dir or memory://.
    pub store: String,

    /// Size of a new volume (e.g. 30G); checked against an existing one.
    #[arg(long, allow_hyphen_values = true, value_parser = size_arg)]
    pub size: Option<u64>,

    /// Block size of a new volume (default 256K); detected for an existing one.
    #[arg(long = "block-size", alias = "blockSize", allow_hyphen_values = true, value_parser = size_arg)]
    pub block_size: Option<u64>,

    /// Do not detect the geometry from block 0's s3backer metadata: a volume
    /// without an s3block descriptor has the --size and --block-size given
    /// (both needed), and none is created. For s3backer volumes whose block
    /// 0 is zero, or stores that drop object metadata.
    #[arg(long = "no-auto-detect", alias = "noAutoDetect")]
    pub no_auto_detect: bool,

    /// Prefix block keys with a hash, spreading them over S3 partitions.
    #[arg(long = "hash-prefix", alias = "blockHashPrefix")]
    pub hash_prefix: bool,

    /// Compression of blocks written: --compress[=deflate|zstd|LEVEL], --compress-level.
    #[command(flatten)]
    pub compression: CompressArgs,

    /// How to reach the store: endpoint, region, credentials, key prefix.
    #[command(flatten)]
    pub store_args: StoreArgs,

    /// List the stored blocks in the background from the start, so that reads of absent blocks need no
    /// request once it is done.
    #[arg(long = "list-blocks", alias = "listBlocks")]
    pub list_blocks: bool,

    /// Memory for cached blocks, in bytes (e.g. 32M); [`DEFAULT_CACHE_SIZE`] when not given.
    #[arg(long = "cache-size", allow_hyphen_values = true, value_parser = size_arg, conflicts_with = "block_cache_blocks")]
    pub cache_size: Option<u64>,

    /// s3backer's cache size, counted in blocks.
    #[arg(long = "blockCacheSize", hide = true, value_name = "BLOCKS")]
    pub block_cache_blocks: Option<u64>,

    /// Most bytes of written blocks waiting for upload before writers wait.
    #[arg(long = "max-dirty", allow_hyphen_values = true, value_parser = size_arg)]
    pub max_dirty: Option<u64>,

    /// s3backer's dirty limit, counted in blocks (0: the default).
    #[arg(long = "blockCacheMaxDirty", hide = true, value_name = "BLOCKS", conflicts_with = "max_dirty")]
    pub block_cache_max_dirty: Option<u64>,

    /// How long a written block waits before its upload, so that rewrites
    /// of it make one PUT (default 250; 0 uploads at once). Not applied
    /// while dirty data is above half the dirty limit.
    #[arg(long = "write-delay", alias = "blockCacheWriteDelay", value_name = "MILLIS",
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub write_delay: Option<u64>,

    /// on (the default): a block written whole is uploaded at once, unless
    /// it was uploaded less than the write delay ago (it is being
    /// rewritten: it waits for the delay). off: every written block waits
    /// for the write delay, so a block written twice in a row after a quiet
    /// spell is one PUT, not two.
    #[arg(long = "prompt-uploads", value_name = "on|off", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub prompt_uploads: Option<bool>,

    /// Drop a clean cached block MILLIS after it was read or stored, even
    /// with room in the cache, so an idle mount gives its memory back
    /// (default 0: only when the cache needs the room). Blocks not yet
    /// stored are never dropped.
    #[arg(long = "cache-timeout", alias = "blockCacheTimeout", value_name = "MILLIS",
          value_parser = clap::value_parser!(u64).range(0..=604_800_000))]
    pub cache_timeout: Option<u64>,

    /// Keep the first N blocks (where filesystems keep their superblock and
    /// journal) cached in preference: every other clean block is evicted
    /// before one of them. They count against the cache size; at most as
    /// many as the cache holds are protected.
    #[arg(long = "protected-blocks", alias = "blockCacheNumProtected", value_name = "N")]
    pub protected_blocks: Option<u64>,

    /// Blocks uploaded at once.
    #[arg(long = "upload-concurrency", alias = "blockCacheThreads", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub upload_concurrency: Option<u32>,

    /// Blocks (or parts of blocks) fetched at once; more wait their turn.
    #[arg(long = "fetch-concurrency", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub fetch_concurrency: Option<u32>,

    /// Bytes of blocks fetched at once ahead of a sequential reader (fetched
    /// blocks not yet read may reach twice that).
    #[arg(long = "read-ahead", allow_hyphen_values = true, value_parser = size_arg)]
    pub read_ahead: Option<u64>,

    /// s3backer's read-ahead, counted in blocks.
    #[arg(long = "readAhead", hide = true, value_name = "BLOCKS", conflicts_with = "read_ahead")]
    pub read_ahead_blocks: Option<u64>,

    /// Sequential reads in a row (each of the block after the last, or from
    /// where the last one ended in the same block) before read-ahead starts
    /// (default 2; 0: from the first read).
    #[arg(long = "read-ahead-trigger", alias = "readAheadTrigger", value_name = "READS",
          value_parser = clap::value_parser!(u32).range(0..=1024))]
    pub read_ahead_trigger: Option<u32>,

    /// on (the default without --cache-dir): a read that misses a small
    /// part of a block of 256 KiB or more fetches only the aligned 64 KiB
    /// around it, with one ranged GET, when the block is stored without
    /// compression, raw or encrypted in 64 KiB chunks (a volume encrypted
    /// by this version); later misses elsewhere in the block fetch their
    /// own 64 KiB. The block is fetched whole when the read is more than a
    /// quarter of it, when reads on it turn sequential, or when they pass
    /// half of it while the cache keeps what it reads. off (the default
    /// with --cache-dir, whose disk tier keeps whole blocks): every miss
    /// fetches the whole block.
    #[arg(long = "ranged-reads", value_name = "on|off", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub ranged_reads: Option<bool>,

    /// Refuse every write (EROFS).
    #[arg(long = "read-only", alias = "readOnly", alias = "ro")]
    pub read_only: bool,

    /// Give up a store request after retrying it for SECONDS, failing the
    /// I/O with EIO. 0 or absent: retry without limit while the store is
    /// unreachable (as an NFS "hard" mount does), so an outage delays I/O
    /// but never fails it.
    #[arg(long = "io-timeout", value_name = "SECONDS")]
    pub io_timeout: Option<u64>,

    /// The first wait before a failed store request is retried is at most
    /// MILLIS (default 200); each wait doubles, up to 10 s or this value.
    #[arg(long = "initial-retry-pause", alias = "initialRetryPause", value_name = "MILLIS",
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub initial_retry_pause: Option<u64>,

    /// Give up a store request MILLIS after its first attempt (the attempts'
    /// time included), failing the I/O with EIO: --io-timeout in milliseconds.
    #[arg(
        long = "max-retry-pause",
        alias = "maxRetryPause",
        value_name = "MILLIS",
        conflicts_with = "io_timeout"
    )]
    pub max_retry_pause: Option<u64>,

    /// Keep a disk cache in DIR, below the memory cache: blocks read or
    /// written stay on the local disk across restarts, and dirty blocks
    /// survive a crash (uploaded at the next start). With several volumes
    /// (--volume, --all-volumes), volume NAME keeps its own in DIR/NAME.
    #[arg(long = "cache-dir", value_name = "DIR")]
    pub cache_dir: Option<std::path::PathBuf>,

    /// Bytes of local disk the disk cache may use (e.g. 2G); with several
    /// volumes, all their disk caches together, in equal shares.
    #[arg(long = "disk-cache-size", allow_hyphen_values = true, value_parser = size_arg, requires = "cache_dir")]
    pub disk_cache_size: Option<u64>,

    /// Most bytes in the disk cache not yet in the bucket before writers
    /// wait (default: half the disk cache size); with several volumes, all
    /// their disk caches together, in equal shares.
    #[arg(long = "disk-max-dirty", allow_hyphen_values = true, value_parser = size_arg, requires = "cache_dir")]
    pub disk_max_dirty: Option<u64>,

    /// When fsync (and NBD FLUSH/FUA) returns: `remote`, once the bucket
    /// holds the data; `local`, once the disk cache does, uploads following
    /// in fsync order (needs --cache-dir).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Remote)]
    pub durability: DurabilityArg,

    /// `--metrics [ADDR:]PORT`: serve Prometheus metrics (see
    /// [`metrics`](super::metrics)).
    #[arg(
        long,
        value_name = "[ADDR:]PORT",
        value_parser = super::metrics::parse_metrics_addr,
        help = "Serve Prometheus metrics at http://ADDR:PORT/metrics: a bare PORT listens on 127.0.0.1 \
                only; give an address (0.0.0.0:9477, [::]:9477) to be scraped from elsewhere. Off unless given"
    )]
    pub metrics: Option<std::net::SocketAddr>,
}

/// The values of `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// fsync returns once every block written before it is in the bucket.
    Remote,
    /// fsync returns once every block written before it is on the local
    /// disk (the disk cache); uploads keep fsync order.
    Local,
}

impl DurabilityArg {
    /// The disk cache's durability this value asks for.
    pub fn durability(self) -> crate::Durability {
        match self {
            DurabilityArg::Remote => crate::Durability::Remote,
            DurabilityArg::Local => crate::Durability::Local,
        }
    }

    /// The value as written on the command line (`remote`, `local`).
    pub fn name(self) -> &'static str {
        match self {
            DurabilityArg::Remote => "remote",
            DurabilityArg::Local => "local",
        }
    }
}

/// The disk cache size when `--cache-dir` is given without `--disk-cache-size`.
pub const DEFAULT_DISK_CACHE_SIZE: u64 = 1 << 30;

impl VolumeArgs {
    /// `command` (a program's, which flattens these options) with the
    /// defaults of the cache options in their help, taken from the
    /// constants so the help and the code agree.
    pub fn with_help(command: clap::Command) -> clap::Command {
        let help = |text: String| move |arg: clap::Arg| arg.help(text);
        command
            .mut_arg(
                "cache_size",
                help(format!("Memory for cached blocks, in bytes [default: {}]", format_size(DEFAULT_CACHE_SIZE))),
            )
            .mut_arg(
                "max_dirty",
                help("Most bytes of written blocks waiting for upload before writers wait [default: half the cache size]".into()),
            )
            .mut_arg(
                "upload_concurrency",
                help(format!(
                    "Blocks uploaded at once [default: {} over the block size, at least {MIN_REQUESTS_IN_FLIGHT} \
                     and at most {MAX_REQUESTS_IN_FLIGHT}, at most an eighth of the cache's blocks above \
                     {MIN_REQUESTS_IN_FLIGHT}: 64 at 4K, 32 at 256K, 16 at 1M with a 64M cache]",
                    format_size(TARGET_BYTES_IN_FLIGHT)
                )),
            )
            .mut_arg(
                "fetch_concurrency",
                help(
                    "Blocks, or parts of blocks, fetched from the store at once, for readers and read-ahead \
                     alike; each holds a block's buffer and a connection [default: twice the read-ahead window \
                     in blocks, at least as many as --upload-concurrency's default, at most half the cache's \
                     blocks: 128 at 4K, 64 at 256K, 32 at 1M with a 64M cache]"
                        .into(),
                ),
            )
            .mut_arg(
                "disk_cache_size",
                help(format!(
                    "Bytes of local disk the disk cache may use (e.g. 2G); with several volumes, all their \
                     disk caches together, in equal shares [default: {}]",
                    format_size(DEFAULT_DISK_CACHE_SIZE)
                )),
            )
            .mut_arg(
                "read_ahead",
                help(format!(
                    "Bytes of blocks fetched at once ahead of a sequential reader; fetched blocks not yet read \
                     may reach twice that [default: as many blocks as the default uploads at once, so {} at 256K \
                     blocks, 256K at 4K, 16M at 1M with a 64M cache; at most a quarter of the cache]",
                    format_size(crate::DEFAULT_READ_AHEAD)
                )),
            )
    }

    /// Cross-option checks that clap cannot express; the message names the
    /// option at fault.
    pub fn check(&self) -> Result<(), String> {
        if let Some(bs) = self.block_size
            && (!bs.is_power_of_two() || !(512..=64 << 20).contains(&bs))
        {
            return Err(format!(
                "--block-size {bs}: must be a power of two between 512 and 64M (default 256K)"
            ));
        }
        self.compression.compression().map_err(|e| e.to_string())?;
        self.store_args.check()?;
        if self.durability == DurabilityArg::Local && self.cache_dir.is_none() {
            return Err(
                "--durability local: needs --cache-dir (the local disk that fsync then waits for)".into()
            );
        }
        if self.cache_dir.is_some() && self.read_only {
            return Err(
                "--cache-dir with --read-only: a read-only mount keeps no disk cache; leave one out".into()
            );
        }
        if self.no_auto_detect && (self.size.is_none() || self.block_size.is_none()) {
            return Err("--no-auto-detect (--noAutoDetect): give the volume's --size and --block-size \
                        (s3backer's default block size is 4K); without detection they are not read from the \
                        bucket"
                .into());
        }
        if self.block_cache_blocks == Some(0) {
            return Err("--blockCacheSize 0: the cache needs at least one block".into());
        }
        Ok(())
    }

    /// How store requests are retried: without limit, or for
    /// `--io-timeout` seconds. Until the store first answers, the short
    /// connect budget applies either way, so a mount of an unreachable
    /// store fails at start.
    pub fn retry_config(&self) -> s3block_store::RetryConfig {
        use std::time::Duration;
        let limit = match self.max_retry_pause {
            Some(ms) => Some(Duration::from_millis(ms)),
            None => self.io_timeout.map(Duration::from_secs),
        };
        let config = s3block_store::RetryConfig::default().io_timeout(limit);
        match self.initial_retry_pause.map(Duration::from_millis) {
            Some(first) => config.initial_backoff(first).max_backoff(first.max(Duration::from_secs(10))),
            None => config,
        }
    }

    /// The read-ahead in bytes, converting s3backer's `--readAhead`
    /// (counted in blocks) with the volume's block size.
    pub fn read_ahead_bytes(&self, block_size: u32) -> Option<u64> {
        self.read_ahead.or_else(|| self.read_ahead_blocks.map(|n| n.saturating_mul(u64::from(block_size))))
    }

    /// The dirty limit in bytes, converting s3backer's `--blockCacheMaxDirty`
    /// (counted in blocks; 0 leaves the default) with the volume's block size.
    pub fn max_dirty_bytes(&self, block_size: u32) -> Option<u64> {
        self.max_dirty.or_else(|| {
            self.block_cache_max_dirty.filter(|&n| n > 0).map(|n| n.saturating_mul(u64::from(block_size)))
        })
    }

    /// The cache size in bytes, converting s3backer's `--blockCacheSize`
    /// (counted in blocks) with the volume's block size.
    pub fn cache_bytes(&self, block_size: u32) -> Option<u64> {
        self.cache_size.or_else(|| self.block_cache_blocks.map(|n| n.saturating_mul(u64::from(block_size))))
    }
}

/// A size option's value parser: a number of bytes with an optional suffix
/// (`512K`, `30G`), as [`parse_size`] reads it.
pub fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    /// A frontend with one option of its own, as the programs flatten it.
    #[derive(Debug, Parser)]
    struct Frontend {
        #[command(flatten)]
        volume: VolumeArgs,
        /// Its own positional, after the store.
        place: String,
    }

    fn parse(args: &[&str]) -> Result<VolumeArgs, String> {
        let mut full = vec!["frontend"];
        full.extend_from_slice(args);
        let matches = VolumeArgs::with_help(Frontend::command())
            .try_get_matches_from(full)
            .map_err(|e| e.to_string())?;
        let parsed = Frontend::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        assert_eq!(parsed.place, "/m");
        parsed.volume.check()?;
        Ok(parsed.volume)
    }

    #[test]
    fn the_store_comes_first_and_sizes_take_suffixes() {
        let v = parse(&["--size=30G", "--blockSize=1M", "--blockCacheSize=10", "s3://b/p", "/m"]).unwrap();
        assert_eq!((v.store.as_str(), v.size, v.block_size), ("s3://b/p", Some(30 << 30), Some(1 << 20)));
        assert_eq!(v.cache_bytes(1 << 20), Some(10 << 20));
        let v = parse(&["--ro", "--cache-size=8M", "--list-blocks", "memory://", "/m"]).unwrap();
        assert!(v.read_only && v.list_blocks);
        assert_eq!(v.cache_bytes(4096), Some(8 << 20));
    }

    #[test]
    fn store_requests_retry_without_limit_unless_an_io_timeout_is_given() {
        for args in [&["memory://", "/m"][..], &["--io-timeout=0", "memory://", "/m"]] {
            assert!(parse(args).unwrap().retry_config().is_unlimited(), "{args:?}");
        }
        let v = parse(&["--io-timeout", "5", "memory://", "/m"]).unwrap();
        let soft = v.retry_config();
        assert!(!soft.is_unlimited());
        let timeout =
            |s| s3block_store::RetryConfig::default().io_timeout(Some(std::time::Duration::from_secs(s)));
        assert_eq!(soft, timeout(5));
        assert_ne!(soft, timeout(6));
        assert!(parse(&["--io-timeout=-1", "memory://", "/m"]).unwrap_err().contains("--io-timeout"));
    }

    #[test]
    fn s3backers_retry_pauses_set_the_first_wait_and_the_budget() {
        use s3block_store::RetryConfig;
        use std::time::Duration;
        let v = parse(&["--initialRetryPause=50", "--maxRetryPause=1500", "memory://", "/m"]).unwrap();
        let expected = RetryConfig::default()
            .io_timeout(Some(Duration::from_millis(1500)))
            .initial_backoff(Duration::from_millis(50))
            .max_backoff(Duration::from_secs(10));
        assert_eq!(v.retry_config(), expected);
        // A first wait above the usual cap raises the cap with it.
        let v = parse(&["--initial-retry-pause=30000", "memory://", "/m"]).unwrap();
        let expected = RetryConfig::default()
            .io_timeout(None)
            .initial_backoff(Duration::from_secs(30))
            .max_backoff(Duration::from_secs(30));
        assert_eq!(v.retry_config(), expected);
        let err = parse(&["--maxRetryPause=1000", "--io-timeout=5", "memory://", "/m"]).unwrap_err();
        assert!(err.contains("--max-retry-pause") && err.contains("--io-timeout"), "{err}");
        let err = parse(&["--initialRetryPause=0", "memory://", "/m"]).unwrap_err();
        assert!(err.contains("--initial-retry-pause"), "{err}");
    }

    #[test]
    fn bad_values_name_the_option() {
        for (args, option) in [
            (&["--block-size=3000", "memory://", "/m"][..], "--block-size"),
            (&["--blockCacheSize=0", "memory://", "/m"], "--blockCacheSize"),
            (&["--compress=12", "memory://", "/m"], "--compress"),
            (&["--cache-size=1M", "--blockCacheSize=3", "memory://", "/m"], "--blockCacheSize"),
            (&["--noAutoDetect", "--size=1G", "memory://", "/m"], "--no-auto-detect (--noAutoDetect)"),
            (&["--no-auto-detect", "--blockSize=4K", "memory://", "/m"], "--size and --block-size"),
            (&["--blockCacheTimeout=-5", "memory://", "/m"], "--cache-timeout"),
            (&["--blockCacheNumProtected=many", "memory://", "/m"], "--protected-blocks"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(option), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_help_shows_the_defaults_of_the_constants() {
        let help = VolumeArgs::with_help(Frontend::command()).render_help().to_string();
        assert!(help.contains(&format!("[default: {}]", format_size(DEFAULT_CACHE_SIZE))), "{help}");
        assert!(help.contains("64 at 4K, 32 at 256K, 16 at 1M with a 64M cache]"), "{help}");
        for (bs, n) in [(4 << 10, 64), (256 << 10, 32), (1 << 20, 16)] {
            assert_eq!(
                crate::default_requests_in_flight(bs, DEFAULT_CACHE_SIZE),
                n,
                "the help's examples at {bs}"
            );
        }
    }
}
