//! Opens a volume kept in a local directory, writes through a RAM cache,
//! flushes, writes the same bytes again (which changes nothing and uploads
//! nothing), closes, then opens it again and reads the bytes back.
//!
//! ```sh
//! cargo run -p s3block-examples --example local_volume -- /tmp/my-volume
//! ```
//!
//! The same code serves an S3 bucket: give `s3://bucket/prefix` to
//! [`Volume::at`] (credentials from `AWS_*` or `~/.s3backer_passwd`).

use std::path::Path;

use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockDeviceExt, Bytes, Result};
use s3block_store::{Create, Volume};

/// Writes `text` at byte 1,000,000 of the volume in `dir` (created at 64 MiB
/// when it does not exist yet), then the same bytes again; returns what a
/// fresh open reads there, and the cache's count of writes that changed
/// nothing.
async fn write_and_read_back(dir: &Path, text: &'static [u8]) -> Result<(Bytes, u64)> {
    let url = format!("file://{}", dir.display());

    // Open or create: the mount lock is taken until `close`.
    let volume = Volume::at(&url)?.size(64 << 20).create(Create::IfMissing).open().await?;
    println!("{}: {}", volume.name(), volume.description());

    // Writes gather in the cache and are uploaded in the background: a
    // block written whole at once, one written in part or rewritten after
    // the write delay (`CacheConfigBuilder::write_delay`, 250 ms;
    // `prompt_uploads(false)` makes every block wait for it). `flush`
    // returns once every one of them is in the store.
    let cache = BlockCache::new(volume.device().clone(), CacheConfig::builder().cache_size(8 << 20).build())?;
    cache.write_at(1_000_000, Bytes::from_static(text)).await?;
    cache.flush().await?;
    // The same bytes again: the cache knows the block holds them, so the
    // block stays clean and nothing is uploaded (the stats count it).
    cache.write_at(1_000_000, Bytes::from_static(text)).await?;
    let unchanged = cache.stats().unchanged_writes;
    cache.close().await?;
    volume.close().await?;

    // A new open finds the volume's geometry in its descriptor.
    let again = Volume::at(&url)?.read_only(true).open().await?;
    let back = again.device().read_at(1_000_000, text.len()).await?;
    again.close().await?;
    Ok((back, unchanged))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/s3block-example-volume".to_owned());
    std::fs::create_dir_all(&dir).map_err(|source| s3block_core::Error::Io { path: dir.clone(), source })?;
    let (back, unchanged) = write_and_read_back(Path::new(&dir), b"hello from s3block").await?;
    println!("read back: {} ({unchanged} write changed nothing)", String::from_utf8_lossy(&back));
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_bytes_come_back_after_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (back, unchanged) =
            super::write_and_read_back(dir.path(), b"kept").await.expect("the example runs");
        assert_eq!(&back[..], b"kept");
        assert_eq!(unchanged, 1, "the second write of the same bytes changed nothing");
        // The volume is in the directory: its descriptor and the written block.
        assert!(dir.path().join("s3block-volume.json").exists());
        assert!(dir.path().join(format!("{:08x}", 1_000_000 / (256 * 1024))).exists());
    }
}
