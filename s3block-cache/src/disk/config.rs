//! Settings of the disk tier.

use std::path::{Path, PathBuf};

use s3block_core::{Error, Geometry, Result, format_size};

use super::format::HEADER_LEN;

/// When [`flush`](s3block_core::BlockDevice::flush) of a
/// [`DiskCache`](crate::DiskCache) returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Once every block written before the flush is stored in the layer
    /// below (the bucket). The default.
    #[default]
    Remote,
    /// Once every block written before the flush is durable on the local
    /// disk; uploads follow in the background, in flush order.
    Local,
}

/// Default uploads in flight from the disk tier.
pub const DEFAULT_DISK_UPLOAD_CONCURRENCY: usize = 8;

/// Smallest segment file: 4 MiB (or four blocks, when larger).
const MIN_SEGMENT: u64 = 4 << 20;
/// Largest segment file: 256 MiB (offsets in the index fit 28 bits).
const MAX_SEGMENT: u64 = 256 << 20;

/// How a [`DiskCache`](crate::DiskCache) behaves. Build with
/// [`DiskCacheConfig::builder`].
#[derive(Debug, Clone)]
pub struct DiskCacheConfig {
    dir: PathBuf,
    size: u64,
    dirty_limit: Option<u64>,
    durability: Durability,
    upload_concurrency: usize,
}

impl DiskCacheConfig {
    /// A builder for a tier in `dir` of at most `size` bytes on disk.
    pub fn builder(dir: impl Into<PathBuf>, size: u64) -> DiskCacheConfigBuilder {
        DiskCacheConfigBuilder {
            config: DiskCacheConfig {
                dir: dir.into(),
                size,
                dirty_limit: None,
                durability: Durability::Remote,
                upload_concurrency: DEFAULT_DISK_UPLOAD_CONCURRENCY,
            },
        }
    }

    /// The cache directory (`--cache-dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Most bytes on disk (`--disk-cache-size`).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Most bytes not yet stored below, when set (else half the size).
    pub fn dirty_limit(&self) -> Option<u64> {
        self.dirty_limit
    }

    /// When flush returns.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Uploads in flight at once.
    pub fn upload_concurrency(&self) -> usize {
        self.upload_concurrency
    }

    /// Bytes of one segment file for this block size: a 64th of the size,
    /// at least 4 MiB (and four entries), at most 256 MiB.
    pub fn segment_size(&self, block_size: u32) -> u64 {
        let entry = u64::from(block_size) + HEADER_LEN as u64;
        (self.size / 64).clamp(MIN_SEGMENT.max(4 * entry), MAX_SEGMENT.max(4 * entry))
    }

    /// These settings with `size` bytes on disk and `dirty_limit` (`None`:
    /// half the size) instead: a tier resized at run time.
    pub(crate) fn resized(&self, size: u64, dirty_limit: Option<u64>) -> DiskCacheConfig {
        DiskCacheConfig { size, dirty_limit, ..self.clone() }
    }

    /// Checks the settings against the volume's block size.
    pub(crate) fn limits(&self, geometry: &Geometry) -> Result<DiskLimits> {
        self.limits_with(geometry, self.segment_size(geometry.block_size()))
    }

    /// [`limits`](Self::limits) with segments of `seg` bytes (a tier keeps
    /// the segment size it was opened with when resized).
    pub(crate) fn limits_with(&self, geometry: &Geometry, seg: u64) -> Result<DiskLimits> {
        let bs = u64::from(geometry.block_size());
        // Offsets in a segment are kept in 28 bits of the index.
        if seg > 1 << 28 {
            return Err(Error::Config(format!(
                "--disk-cache-size: blocks of {} are too large for the disk cache (segments of at most 256 MiB)",
                format_size(bs)
            )));
        }
        // Four segments at least: one being written, one to copy live
        // entries into while the oldest is reclaimed, and room to spare.
        if self.size < 4 * seg {
            return Err(Error::Config(format!(
                "--disk-cache-size {} is too small for blocks of {}: give at least {}",
                format_size(self.size),
                format_size(bs),
                format_size(4 * seg)
            )));
        }
        if self.dir.as_os_str().is_empty() {
            return Err(Error::Config("--cache-dir: empty path".into()));
        }
        let dirty_limit = self.dirty_limit.unwrap_or(self.size / 2);
        if dirty_limit > self.size {
            return Err(Error::Config(format!(
                "disk cache dirty limit {} is larger than --disk-cache-size {}",
                format_size(dirty_limit),
                format_size(self.size)
            )));
        }
        if dirty_limit < bs + HEADER_LEN as u64 {
            return Err(Error::Config(format!(
                "disk cache dirty limit {} is smaller than one block ({})",
                format_size(dirty_limit),
                format_size(bs)
            )));
        }
        if self.upload_concurrency == 0 {
            return Err(Error::Config("disk cache upload concurrency must be at least 1".into()));
        }
        // One segment is reserved for copying live entries forward while
        // the oldest is reclaimed: the log holds at most `size` bytes.
        let max_segments = (self.size / seg - 1) as usize;
        // Dirty entries pin their place in the log: keep two segments free
        // of them so reclaiming always makes progress.
        let dirty_limit = dirty_limit.min((max_segments as u64 - 2) * seg);
        Ok(DiskLimits { size: self.size, segment_size: seg, max_segments, dirty_limit })
    }
}

/// Validated limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DiskLimits {
    /// Most bytes on disk (the configured size, or the size set since).
    pub(crate) size: u64,
    pub(crate) segment_size: u64,
    pub(crate) max_segments: usize,
    pub(crate) dirty_limit: u64,
}

/// Builds a [`DiskCacheConfig`].
#[derive(Debug, Clone)]
pub struct DiskCacheConfigBuilder {
    config: DiskCacheConfig,
}

impl DiskCacheConfigBuilder {
    /// Most bytes not yet stored below before writers wait (default: half
    /// the size).
    pub fn dirty_limit(mut self, bytes: u64) -> Self {
        self.config.dirty_limit = Some(bytes);
        self
    }

    /// When flush returns (default [`Durability::Remote`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.config.durability = durability;
        self
    }

    /// Uploads in flight at once (default 8).
    pub fn upload_concurrency(mut self, n: usize) -> Self {
        self.config.upload_concurrency = n;
        self
    }

    /// The finished configuration (checked when the cache opens).
    pub fn build(self) -> DiskCacheConfig {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonsense_is_refused_naming_the_option() {
        let g = Geometry::new(1 << 30, 4096).expect("geometry");
        let err = DiskCacheConfig::builder("/tmp/x", 1 << 20).build().limits(&g).unwrap_err();
        assert!(err.to_string().contains("--disk-cache-size"), "{err}");
        let err = DiskCacheConfig::builder("/tmp/x", 64 << 20)
            .dirty_limit(65 << 20)
            .build()
            .limits(&g)
            .unwrap_err();
        assert!(err.to_string().contains("dirty limit"), "{err}");
        let err = DiskCacheConfig::builder("", 64 << 20).build().limits(&g).unwrap_err();
        assert!(err.to_string().contains("--cache-dir"), "{err}");
        let l = DiskCacheConfig::builder("/tmp/x", 2 << 30).build().limits(&g).expect("valid");
        assert_eq!(l.segment_size, 32 << 20);
        assert_eq!(l.max_segments, 63);
        assert_eq!(l.dirty_limit, 1 << 30);
        let l = DiskCacheConfig::builder("/tmp/x", 64 << 30).build().limits(&g).expect("valid");
        assert_eq!((l.segment_size, l.max_segments), (256 << 20, 255));
        let l = DiskCacheConfig::builder("/tmp/x", 16 << 20).build().limits(&g).expect("valid");
        assert_eq!((l.segment_size, l.max_segments), (4 << 20, 3));
    }
}
