//! Uploads whose request reached the store but whose answer was lost: the
//! store has the new bytes, the cache saw an error. The cache must then stop
//! trusting what it knew about the block below.

mod common;

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{block_data, config, geometry, settle};
use s3block_cache::{BlockCache, default_upload_retry};
use s3block_core::{Allocation, BlockDevice, BlockId, Error, Geometry, MemoryDevice, Result, StoreErrorKind};

/// Stores each write, then reports the first `lost` of them as failed.
#[derive(Debug)]
struct LostAnswers {
    inner: Arc<MemoryDevice>,
    lost: AtomicU32,
}

#[async_trait]
impl BlockDevice for LostAnswers {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.inner.read_block(block).await
    }

    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.inner.write_block(block, data).await?;
        if self.lost.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(Error::Store {
                block: Some(block),
                key: format!("{:08x}", block.0),
                kind: StoreErrorKind::Transient,
                source: "the answer was lost after the write took effect".into(),
            });
        }
        Ok(())
    }

    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        self.inner.discard(blocks).await
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }

    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        self.inner.block_status(blocks).await
    }
}

#[tokio::test(start_paused = true)]
async fn zeros_after_an_upload_whose_answer_was_lost_reach_the_store() {
    let g = geometry(4);
    let mem = Arc::new(MemoryDevice::new(g));
    let lower = LostAnswers { inner: Arc::clone(&mem), lost: AtomicU32::new(1) };
    let schedule = default_upload_retry().with_seed(1);
    let retry_in = schedule.delay(1, &mut schedule.rng());
    assert!(retry_in > Duration::ZERO, "the seed leaves time to write before the retry");
    let cfg = config(&g, 4, 4).to_builder().upload_retry(schedule).build();
    let cache = BlockCache::new(lower, cfg).expect("cache");
    let block = BlockId(1);
    // Found absent: the cache knows block 1 is zero below.
    assert!(cache.read_block(block).await.expect("read").iter().all(|&b| b == 0));
    cache.write_block(block, block_data(&g, 1, 9)).await.expect("write");
    // The upload starts at once (no write delay) and fails; the cache tries
    // again only `retry_in` later, and the zeros come before that.
    settle().await;
    let s = cache.stats();
    assert_eq!((s.upload_errors, s.retries, s.dirty_blocks), (1, 0, 1), "{s}");
    assert_eq!(mem.read_block(block).await.expect("below"), block_data(&g, 1, 9), "the PUT took effect");
    // Zeros over it: block 1 is no longer known zero below, so they must
    // be sent (as a delete), not skipped.
    cache.write_block(block, Bytes::from(vec![0; g.block_len()])).await.expect("write zeros");
    assert_eq!(cache.stats().retries, 0, "written before the retry");
    cache.flush().await.expect("flush");
    assert!(
        mem.read_block(block).await.expect("below").iter().all(|&b| b == 0),
        "the zeros never reached the store: block 1 still holds the data of the lost answer"
    );
    cache.close().await.expect("close");
}
