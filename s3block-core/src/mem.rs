//! A block device held in a hash map: for tests, examples and doctests.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BlockDevice, BlockId, Geometry, Result, check_block_len, check_block_range, is_zero};

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
        Ok(self.map().get(&block).cloned().unwrap_or_else(|| Bytes::from(vec![0; self.geometry.block_len()])))
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
}
