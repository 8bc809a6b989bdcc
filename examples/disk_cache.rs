//! A volume in a local directory with both cache tiers, as a library user
//! assembles them: the RAM cache over a disk cache over the volume's
//! device, the disk cache checked against the bucket's record of the last
//! mount. A second open finds the block on the local disk and reads it
//! without a request.
//!
//! ```sh
//! cargo run -p s3block-examples --example disk_cache -- /tmp/vol /tmp/vol-cache
//! ```

use std::path::Path;
use std::sync::Arc;

use s3block_cache::{BlockCache, CacheConfig, DiskCache, DiskCacheConfig, Durability, Marks, VolumeIdentity};
use s3block_core::{BlockDevice, BlockDeviceExt, Bytes, Error, Result};
use s3block_store::{Create, Volume};

/// Opens the volume in `dir` (created at 64 MiB) with a disk cache in
/// `cache_dir`, writes `text` at byte 1,000,000 when given, reads it back,
/// and closes: RAM cache, disk cache, then the lock. Returns the bytes read
/// and the store's block GETs during the open.
async fn session(dir: &Path, cache_dir: &Path, text: Option<&'static [u8]>) -> Result<(Bytes, u64)> {
    let url = format!("file://{}", dir.display());
    // The record of this mount is written only once the disk cache has
    // noted it, so a crash in between never makes the cache look foreign.
    let mut volume =
        Volume::at(&url)?.size(64 << 20).create(Create::IfMissing).defer_mount_record().open().await?;
    let identity = VolumeIdentity {
        volume: volume.descriptor().map(|d| d.volume_id.clone()).unwrap_or_else(|| url.clone()),
        geometry: volume.geometry(),
    };
    let marks = Marks {
        found: volume.previous_mount().map(|r| r.mount.clone()),
        new: volume.this_mount().map(|r| r.mount.clone()).ok_or_else(|| Error::Config("read-only".into()))?,
    };
    let config = DiskCacheConfig::builder(cache_dir, 64 << 20).durability(Durability::Local).build();
    let (disk, report) = DiskCache::open(volume.device().clone(), config, identity, marks).await?;
    println!("{report}");
    volume.record_mount().await?;
    disk.confirm_marker()?;
    let disk = Arc::new(disk);

    let cache = BlockCache::new(Arc::clone(&disk), CacheConfig::builder().cache_size(8 << 20).build())?;
    if let Some(text) = text {
        cache.write_at(1_000_000, Bytes::from_static(text)).await?;
        // With local durability this returns once the disk cache holds it.
        cache.flush().await?;
    }
    let back = cache.read_at(1_000_000, 4).await?;
    let fetched = volume.store().counters.snapshot().block_fetches;
    cache.close().await?;
    disk.close().await?; // uploads whatever is left
    volume.close().await?;
    Ok((back, fetched))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "/tmp/s3block-example-volume".to_owned());
    let cache = args.next().unwrap_or_else(|| "/tmp/s3block-example-cache".to_owned());
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    session(Path::new(&dir), Path::new(&cache), Some(b"warm")).await?;
    let (back, fetched) = session(Path::new(&dir), Path::new(&cache), None).await?;
    println!("read back {:?} with {fetched} block GETs", String::from_utf8_lossy(&back));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_open_reads_from_the_disk_without_a_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (vol, cache) = (dir.path().join("vol"), dir.path().join("cache"));
        std::fs::create_dir(&vol).expect("volume dir");
        let (first, _) = super::session(&vol, &cache, Some(b"warm")).await.expect("first open");
        assert_eq!(&first[..], b"warm");
        let (back, fetched) = super::session(&vol, &cache, None).await.expect("second open");
        assert_eq!(&back[..], b"warm");
        assert_eq!(fetched, 0, "a warm disk cache made a block request");
        // The block reached the volume too.
        assert!(vol.join(format!("{:08x}", 1_000_000 / (256 * 1024))).exists());
    }
}
