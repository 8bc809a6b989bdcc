//! A custom `BlockDevice` layer, stacked under the cache: it counts and
//! logs every request that reaches the store, so the cache's work shows.
//!
//! ```sh
//! cargo run -p s3block-examples --example logging_layer
//! ```
//!
//! A layer wraps the device below it and forwards every method of the
//! trait, the provided ones (`read_partial`, `write_partial`) included, so
//! that no default implementation bypasses the layer below.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use s3block_cache::{BlockCache, CacheConfig};
use s3block_core::{Allocation, BlockDevice, BlockDeviceExt, BlockId, Bytes, Geometry, Result, async_trait};
use s3block_store::{Create, Volume};

/// Counts the reads and writes that pass through it, and prints each one.
#[derive(Debug)]
struct Logged<D> {
    inner: D,
    reads: AtomicU64,
    writes: AtomicU64,
}

impl<D> Logged<D> {
    fn new(inner: D) -> Self {
        Logged { inner, reads: AtomicU64::new(0), writes: AtomicU64::new(0) }
    }
}

#[async_trait]
impl<D: BlockDevice> BlockDevice for Logged<D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        println!("read block {block}");
        self.inner.read_block(block).await
    }

    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        println!("write block {block}");
        self.inner.write_block(block, data).await
    }

    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        println!("read {len} bytes of block {block} at {offset}");
        self.inner.read_partial(block, offset, len).await
    }
    fn ranged_reads(&self) -> bool {
        self.inner.ranged_reads()
    }

    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        println!("write {} bytes of block {block} at {offset}", data.len());
        self.inner.write_partial(block, offset, data).await
    }

    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        println!("discard blocks {blocks:?}");
        self.inner.discard(blocks).await
    }

    async fn flush(&self) -> Result<()> {
        println!("flush");
        self.inner.flush().await
    }

    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        self.inner.block_status(blocks).await
    }
}

/// Writes 100 small pieces into one block through the cache over the
/// logging layer; returns (reads, writes) that reached the layer.
async fn run() -> Result<(u64, u64)> {
    let volume =
        Volume::at("memory://")?.size(16 << 20).block_size(64 << 10).create(Create::IfMissing).open().await?;
    let logged = std::sync::Arc::new(Logged::new(volume.device().clone()));
    let config = CacheConfig::builder().cache_size(4 << 20).build();
    // A volume just created stores no block: telling the cache so saves a
    // GET for every block first written in part.
    let cache = if volume.created() {
        BlockCache::with_known_blocks(logged.clone(), config, Vec::new())?
    } else {
        BlockCache::new(logged.clone(), config)?
    };
    for i in 0..100u64 {
        cache.write_at(i * 512, Bytes::from(vec![i as u8 + 1; 512])).await?;
    }
    cache.flush().await?;
    let back = cache.read_at(99 * 512, 512).await?;
    assert!(back.iter().all(|&b| b == 100));
    cache.close().await?;
    volume.close().await?;
    Ok((logged.reads.load(Ordering::Relaxed), logged.writes.load(Ordering::Relaxed)))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let (reads, writes) = run().await?;
    println!("100 writes of 512 bytes reached the store as {writes} write(s) and {reads} read(s)");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn the_cache_gathers_small_writes_into_one_upload() {
        let (reads, writes) = super::run().await.expect("the example runs");
        assert_eq!(writes, 1, "one block was written, once");
        assert_eq!(reads, 0, "a new volume's blocks are known to be absent: nothing to fetch");
    }
}
