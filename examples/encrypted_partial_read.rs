//! An encrypted volume read in part: a 4 KiB read of a cold 1 MiB block
//! downloads and authenticates only the 64 KiB chunk it falls in.
//!
//! ```sh
//! cargo run -p s3block-examples --example encrypted_partial_read -- /tmp/my-encrypted-volume
//! ```
//!
//! New encrypted volumes cut each block into 64 KiB chunks, each with its
//! own authentication tag, so a cache that misses a few pages of a large
//! block can fetch their chunk alone (one ranged GET) instead of the whole
//! block. Volumes compressed as well are read whole.

use std::path::Path;

use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{BlockDeviceExt, Bytes, RequestCounters, Result};
use s3block_store::{Create, KdfParams, Password, PasswordSource, Volume};

/// What a cold partial read cost.
#[derive(Debug)]
struct ReadCost {
    bytes: Bytes,
    ranged_gets: u64,
    received: u64,
}

/// Creates (or opens) the 8 MiB volume of 1 MiB blocks in `dir`, encrypted
/// with `password`, writes block 2 whole, then opens it again and reads
/// 4 KiB at byte 300,000 of that block through a cold cache.
async fn write_then_read_part(dir: &Path, password: &str) -> Result<ReadCost> {
    let url = format!("file://{}", dir.display());
    let open = |create| -> Result<_> {
        Ok(Volume::at(&url)?
            .size(8 << 20)
            .block_size(1 << 20)
            .encrypt(None)
            // Small Argon2id costs keep the example quick; a real volume
            // keeps the default ones (`KdfParams::new_default`).
            .kdf(KdfParams::with_cost(1024, 1, 1))
            .password(PasswordSource::Given(Password::new(password)))
            .create(create))
    };

    let volume = open(Create::IfMissing)?.open().await?;
    println!("{}: {}", volume.name(), volume.description());
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i / 4096) as u8 ^ i as u8).collect();
    volume.device().write_at(2 << 20, Bytes::from(block)).await?;
    volume.close().await?;

    let volume = open(Create::Never)?.open().await?;
    let counters: &RequestCounters = &volume.store().counters;
    counters.reset();
    let cache = BlockCache::new(volume.device().clone(), CacheConfig::builder().cache_size(8 << 20).build())?;
    let bytes = cache.read_at((2 << 20) + 300_000, 4096).await?;
    let c = counters.snapshot();
    cache.close().await?;
    volume.close().await?;
    Ok(ReadCost { bytes, ranged_gets: c.ranged_gets, received: c.fetch_bytes_received })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "/tmp/s3block-example-encrypted".to_owned());
    std::fs::create_dir_all(&dir).map_err(|source| s3block_core::Error::Io { path: dir.clone(), source })?;
    let cost = write_then_read_part(Path::new(&dir), "correct horse battery staple").await?;
    println!(
        "read {} bytes of a 1 MiB block: {} ranged GET, {} bytes downloaded",
        cost.bytes.len(),
        cost.ranged_gets,
        cost.received
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_4k_read_downloads_one_chunk_and_the_right_bytes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cost = super::write_then_read_part(dir.path(), "pw").await.expect("the example runs");
        let want: Vec<u8> = (300_000u32..304_096).map(|i| (i / 4096) as u8 ^ i as u8).collect();
        assert_eq!(&cost.bytes[..], &want[..]);
        assert_eq!(cost.ranged_gets, 1);
        assert_eq!(cost.received, (64 << 10) + 16, "one chunk and its tag");
        // Nothing in the store reads as plain text.
        let object = std::fs::read(dir.path().join(format!("{:08x}", 2))).expect("block 2 is stored");
        assert!(!object.windows(want.len()).any(|w| w == &want[..]), "block 2 is stored in clear");
    }
}
