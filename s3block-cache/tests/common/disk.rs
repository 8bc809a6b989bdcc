//! Helpers for the disk tier's tests: temporary directories, configs, and
//! opening a tier over any device.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use s3block_cache::{DiskCache, DiskCacheConfig, Durability, Marks, OpenReport, VolumeIdentity};
use s3block_core::BlockDevice;

/// A directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory.
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "s3block-disk-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The smallest tier for 512-byte blocks: four 4 MiB segments.
pub const SMALL: u64 = 16 << 20;

/// A config for `dir` of `size` bytes with the given durability.
pub fn disk_config(dir: &Path, size: u64, durability: Durability) -> DiskCacheConfig {
    DiskCacheConfig::builder(dir, size).durability(durability).upload_concurrency(4).build()
}

/// The identity of the test volume "vol" over `lower`.
pub fn identity<D: BlockDevice>(lower: &D) -> VolumeIdentity {
    VolumeIdentity { volume: "vol".into(), geometry: lower.geometry() }
}

/// Marks: the bucket holds `found`, this mount writes `new`.
pub fn marks(found: Option<&str>, new: &str) -> Marks {
    Marks { found: found.map(str::to_owned), new: new.to_owned() }
}

/// Opens a tier of the volume "vol" with no marker in the bucket.
pub async fn open_tier<D: BlockDevice + 'static>(
    lower: D,
    dir: &Path,
    size: u64,
    durability: Durability,
) -> (DiskCache<D>, OpenReport) {
    let id = identity(&lower);
    DiskCache::open(lower, disk_config(dir, size, durability), id, marks(None, "m"))
        .await
        .expect("the disk tier opens")
}

/// Waits until the tier has nothing left to upload (20 s at most).
pub async fn wait_clean<D: BlockDevice + 'static>(cache: &DiskCache<D>) {
    for _ in 0..4000 {
        if cache.stats().dirty_entries == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("uploads did not finish: {:?}", cache.stats());
}

/// Copies every file of `from` into a new directory `to` (a crash image).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for e in std::fs::read_dir(from).expect("read the directory") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy a file");
    }
}

/// The segment files of a cache directory, oldest first.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("seg-")))
        .collect();
    v.sort();
    v
}
