//! A block device held in a hash map: for tests, examples and doctests.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    Allocation, BlockDevice, BlockId, Geometry, Result, allocation_runs, check_block_len, check_block_range,
    is_zero, zeros,
};

/// Calls made on a [`MemoryDevice`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryDeviceCounts {
    /// `read_block` calls.
    pub reads: u64,
    /// `write_block` calls.
    pub writes: u64,
    /// `discard` calls.
    pub discards: u64,
    /// `flush` calls.
    pub flushes: u64,
}

/// A volume kept in memory, with all-zero blocks elided like the object store
/// does, and counters of the calls made on it.
///
/// Not meant for data: it is the simplest correct [`BlockDevice`], used to
/// test layers above and as a reference model.
#[derive(Debug)]
pub struct MemoryDevice {
    geometry: Geometry,
    blocks: Mutex<HashMap<BlockId, Bytes>>,
    reads: AtomicU64,
    writes: AtomicU64,
    discards: AtomicU64,
    flushes: AtomicU64,
}

impl MemoryDevice {
    /// An empty (all zero) device.
    pub fn new(geometry: Geometry) -> Self {
        MemoryDevice {
            geometry,
            blocks: Mutex::default(),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            discards: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    /// Number of non-zero blocks held.
    pub fn stored_blocks(&self) -> usize {
        self.map().len()
    }

    /// The calls made so far.
    pub fn counts(&self) -> MemoryDeviceCounts {
        MemoryDeviceCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            discards: self.discards.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<BlockId, Bytes>> {
        // A poisoned map still holds whole blocks: each insert is one step.
        self.blocks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl BlockDevice for MemoryDevice {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    async fn read_block(&self, block: BlockId) -> Result<Bytes> {
        self.geometry.check_block(block)?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self.map().get(&block).cloned().unwrap_or_else(|| zeros(self.geometry.block_len())))
    }

    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
        self.geometry.check_block(block)?;
        check_block_len(&self.geometry, block, &data)?;
        self.writes.fetch_add(1, Ordering::Relaxed);
        if is_zero(&data) {
            self.map().remove(&block);
        } else {
            self.map().insert(block, data);
        }
        Ok(())
    }

    /// A part of a block in memory costs no more than its bytes.
    fn ranged_reads(&self) -> bool {
        true
    }

    async fn discard(&self, blocks: Range<u64>) -> Result<()> {
        check_block_range(&self.geometry, &blocks)?;
        self.discards.fetch_add(1, Ordering::Relaxed);
        self.map().retain(|b, _| !blocks.contains(&u64::from(b.0)));
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Blocks not held (never written, zeros written, or discarded) are holes.
    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        check_block_range(&self.geometry, &blocks)?;
        let map = self.map();
        if blocks.end - blocks.start > map.len() as u64 {
            // Cheaper from the stored blocks than block by block.
            let mut stored: Vec<u64> =
                map.keys().map(|b| u64::from(b.0)).filter(|n| blocks.contains(n)).collect();
            stored.sort_unstable();
            let mut runs = Vec::new();
            let mut at = blocks.start;
            for n in stored {
                crate::push_run(&mut runs, at..n, Allocation::Hole);
                crate::push_run(&mut runs, n..n + 1, Allocation::Data);
                at = n + 1;
            }
            crate::push_run(&mut runs, at..blocks.end, Allocation::Hole);
            return Ok(runs);
        }
        Ok(allocation_runs(blocks, |n| {
            if map.contains_key(&BlockId(n as u32)) { Allocation::Data } else { Allocation::Hole }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BlockDeviceExt;

    #[tokio::test]
    async fn block_status_reports_the_blocks_held() {
        let dev = MemoryDevice::new(Geometry::new(64 * 4096, 4096).expect("valid geometry"));
        assert_eq!(dev.block_status(0..64).await.expect("status"), vec![(0..64, Allocation::Hole)]);
        dev.write_at(4096 * 3, Bytes::from(vec![1u8; 8192])).await.expect("write");
        dev.write_at(4096 * 10, Bytes::from(vec![2u8; 10])).await.expect("write");
        let want = vec![
            (0..3, Allocation::Hole),
            (3..5, Allocation::Data),
            (5..10, Allocation::Hole),
            (10..11, Allocation::Data),
            (11..64, Allocation::Hole),
        ];
        // Both ways of answering agree: from the stored blocks, block by block.
        assert_eq!(dev.block_status(0..64).await.expect("status"), want);
        assert_eq!(
            dev.block_status(4..11).await.expect("status"),
            vec![(4..5, Allocation::Data), (5..10, Allocation::Hole), (10..11, Allocation::Data)]
        );
        assert!(dev.block_status(0..65).await.is_err());
        assert_eq!(dev.block_status(7..7).await.expect("status"), vec![]);
    }

    #[tokio::test]
    async fn the_default_block_status_says_data() {
        #[derive(Debug)]
        struct Plain(MemoryDevice);
        #[async_trait]
        impl BlockDevice for Plain {
            fn geometry(&self) -> Geometry {
                self.0.geometry()
            }
            async fn read_block(&self, block: BlockId) -> Result<Bytes> {
                self.0.read_block(block).await
            }
            async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
                self.0.write_block(block, data).await
            }
            async fn discard(&self, blocks: Range<u64>) -> Result<()> {
                self.0.discard(blocks).await
            }
            async fn flush(&self) -> Result<()> {
                self.0.flush().await
            }
        }
        let dev = Plain(MemoryDevice::new(Geometry::new(8 * 4096, 4096).expect("valid geometry")));
        assert_eq!(dev.block_status(2..6).await.expect("status"), vec![(2..6, Allocation::Data)]);
        // Through an Arc, the forwarding reaches the memory device's answer.
        let shared: std::sync::Arc<dyn BlockDevice> = std::sync::Arc::new(MemoryDevice::new(dev.geometry()));
        assert_eq!(shared.block_status(0..8).await.expect("status"), vec![(0..8, Allocation::Hole)]);
    }
}
