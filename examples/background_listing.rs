//! A cache that learns which blocks are absent from a listing made while it
//! serves, as `s3block-fuse --list-blocks` does: the cache notes the blocks
//! written meanwhile, so the listing's older word never turns them into
//! zeros, and once it ends, reads of blocks it did not find make no
//! request.
//!
//! ```sh
//! cargo run -p s3block-examples --example background_listing -- /tmp/s3block-example-listed
//! ```

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDevice, BlockDeviceExt, Bytes, Error, Result};
use s3block_store::{Create, StoredBlock, Volume};

/// What one session saw: blocks learned zero, block GETs made by reading
/// 1 MiB never written after the listing, and the bytes read back at 0.
struct Seen {
    learned: u64,
    gets_for_absent: u64,
    first: Bytes,
}

/// Opens the volume in `dir` (created at 64 MiB in 64 KiB blocks), writes
/// block 0, lists the stored blocks while a second block is written, and
/// reads 1 MiB that was never written.
async fn session(dir: &Path) -> Result<Seen> {
    let url = format!("file://{}", dir.display());
    let volume =
        Volume::at(&url)?.size(64 << 20).block_size(64 << 10).create(Create::IfMissing).open().await?;
    let device = volume.device().clone();
    let cache =
        Arc::new(BlockCache::new(device.clone(), CacheConfig::builder().cache_size(8 << 20).build())?);
    cache.write_at(0, Bytes::from_static(b"written before")).await?;
    cache.flush().await?;

    // The listing starts; a block stored while it runs may be missed by it.
    cache.begin_listing();
    let found: Mutex<Vec<Range<u64>>> = Mutex::default();
    let each = |b: StoredBlock| {
        let n = u64::from(b.block.0);
        found.lock().expect("not poisoned").push(n..n + 1);
    };
    let listing = device.for_each_stored_block(&each);
    let writing = async {
        cache.write_at(5 << 20, Bytes::from_static(b"written meanwhile")).await?;
        cache.flush().await
    };
    let (listed, written) = tokio::join!(listing, writing);
    written?;
    let learned = match listed {
        Ok(()) => {
            let stored = found.into_inner().expect("not poisoned");
            cache.end_listing(stored, 0..device.geometry().block_count())
        }
        Err(e) => {
            cache.abandon_listing();
            return Err(e);
        }
    };

    let before = volume.store().counters.snapshot().block_fetches;
    let absent = cache.read_at(32 << 20, 1 << 20).await?;
    assert!(absent.iter().all(|&b| b == 0));
    let gets_for_absent = volume.store().counters.snapshot().block_fetches - before;
    let first = cache.read_at(0, 14).await?;
    cache.close().await?;
    volume.close().await?;
    Ok(Seen { learned, gets_for_absent, first })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/s3block-example-listed".to_owned());
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    let seen = session(Path::new(&dir)).await?;
    println!(
        "{} blocks learned zero; reading 1 MiB never written made {} block GETs; block 0 reads {:?}",
        seen.learned,
        seen.gets_for_absent,
        String::from_utf8_lossy(&seen.first)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn absent_blocks_need_no_request_and_what_was_written_stays() {
        let dir = tempfile::tempdir().expect("temp dir");
        let seen = session(dir.path()).await.expect("the example runs");
        // 1,024 blocks of 64 KiB; 0 and 80 (the one written meanwhile) are not zero.
        assert_eq!(seen.learned, 1024 - 2);
        assert_eq!(seen.gets_for_absent, 0);
        assert_eq!(&seen.first[..], b"written before");
        // The block written while the listing ran keeps its bytes in the bucket.
        let again = Volume::at(&format!("file://{}", dir.path().display())).unwrap().open().await.unwrap();
        let back = again.device().read_at(5 << 20, 17).await.unwrap();
        assert_eq!(&back[..], b"written meanwhile");
        again.close().await.unwrap();
    }
}
