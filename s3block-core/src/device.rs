//! The `BlockDevice` trait: what every layer of s3block implements.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use crate::{BlockId, Error, Geometry, Result};

/// Whether a run of blocks holds data, as [`BlockDevice::block_status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Allocation {
    /// The blocks are known to read as zeros and to cost no storage: absent
    /// below and not written since, or discarded.
    Hole,
    /// The blocks hold data, or the layer cannot tell (unknown is data).
    Data,
}

/// A fixed-size array of blocks that can be read, written, discarded and flushed.
///
/// Object-safe: frontends hold an `Arc<dyn BlockDevice>`, layers compose by
/// generics (`BlockCache<ObjectBlockDevice>`). Every wrapper must forward every
/// method, the provided ones included, so that a default implementation never
/// bypasses the layer below.
///
/// Byte-range I/O over any device is in [`BlockDeviceExt`](crate::BlockDeviceExt).
#[async_trait]
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// The volume's geometry; fixed for the device's life.
    fn geometry(&self) -> Geometry;

    /// Reads a whole block: `block_size` bytes, all zeros when never written.
    async fn read_block(&self, block: BlockId) -> Result<Bytes>;

    /// Writes a whole block; `data` must be exactly `block_size` bytes.
    async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()>;

    /// Reads `len` bytes at `offset` inside `block`.
    ///
    /// The default reads the whole block and slices it.
    async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
        self.geometry().check_in_block(offset, len)?;
        let data = self.read_block(block).await?;
        let start = offset as usize;
        Ok(data.slice(start..start + len))
    }

    /// True when [`read_partial`](Self::read_partial) fetches only about the
    /// bytes asked for from where the blocks are kept, so that a cache above
    /// gains by asking for parts of blocks (the object store's ranged GETs on
    /// blocks stored raw). False, the default, when a partial read costs a
    /// whole block's fetch anyway (compressed or encrypted objects, the disk
    /// tier's whole blocks): a cache then fetches and keeps whole blocks.
    fn ranged_reads(&self) -> bool {
        false
    }

    /// Writes `data` at `offset` inside `block`, keeping the rest of the block.
    ///
    /// The default reads the block, merges, and writes the whole block. A layer
    /// that can avoid the read on the writer's path (the cache) overrides it.
    async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
        self.geometry().check_in_block(offset, data.len())?;
        let old = self.read_block(block).await?;
        let mut merged = BytesMut::from(&old[..]);
        let start = offset as usize;
        merged[start..start + data.len()].copy_from_slice(&data);
        self.write_block(block, merged.freeze()).await
    }

    /// Makes the blocks `blocks.start..blocks.end` read as zeros and frees
    /// whatever stores them.
    async fn discard(&self, blocks: Range<u64>) -> Result<()>;

    /// Returns once every block written before the call is durable in the
    /// layer at the bottom of the stack.
    async fn flush(&self) -> Result<()>;

    /// Says which blocks of `blocks` are holes (known to read as zeros and to
    /// be stored nowhere) and which hold data, as consecutive runs covering
    /// the range in order; adjacent runs differ. Sparse-aware clients (an NBD
    /// client's block status, `qemu-img map`, `nbdcopy`) skip the holes.
    ///
    /// The answer is a snapshot: a write racing with the call may or may not
    /// be reflected. The default knows nothing and says the whole range is
    /// data, which is always correct; a layer that knows which blocks are
    /// absent (the cache, from its zero set) overrides it. Wrappers must
    /// forward it, or the layer below's knowledge is lost.
    async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
        check_block_range(&self.geometry(), &blocks)?;
        Ok(if blocks.is_empty() { Vec::new() } else { vec![(blocks, Allocation::Data)] })
    }
}

/// Builds the answer of [`BlockDevice::block_status`] from one
/// [`Allocation`] per block of `blocks`, merging equal neighbours.
pub fn allocation_runs(
    blocks: Range<u64>,
    mut allocation: impl FnMut(u64) -> Allocation,
) -> Vec<(Range<u64>, Allocation)> {
    let mut runs: Vec<(Range<u64>, Allocation)> = Vec::new();
    for n in blocks {
        push_run(&mut runs, n..n + 1, allocation(n));
    }
    runs
}

/// Appends a run to a block-status answer, merging it into the last run when
/// it continues it with the same allocation. Empty runs are skipped.
pub fn push_run(runs: &mut Vec<(Range<u64>, Allocation)>, blocks: Range<u64>, allocation: Allocation) {
    if blocks.is_empty() {
        return;
    }
    match runs.last_mut() {
        Some((last, a)) if *a == allocation && last.end == blocks.start => last.end = blocks.end,
        _ => runs.push((blocks, allocation)),
    }
}

/// Checks that `data` is exactly one block long.
pub fn check_block_len(geometry: &Geometry, block: BlockId, data: &[u8]) -> Result<()> {
    if data.len() == geometry.block_len() {
        Ok(())
    } else {
        Err(Error::WrongLength { block, expected: geometry.block_size().into(), actual: data.len() as u64 })
    }
}

/// Checks that a block range is inside the volume.
pub fn check_block_range(geometry: &Geometry, blocks: &Range<u64>) -> Result<()> {
    if blocks.start <= blocks.end && blocks.end <= geometry.block_count() {
        Ok(())
    } else {
        Err(Error::BlockOutOfRange { block: blocks.end.max(blocks.start), count: geometry.block_count() })
    }
}

macro_rules! forward_block_device {
    ($ty:ty) => {
        #[async_trait]
        impl<T: BlockDevice + ?Sized> BlockDevice for $ty {
            fn geometry(&self) -> Geometry {
                (**self).geometry()
            }
            async fn read_block(&self, block: BlockId) -> Result<Bytes> {
                (**self).read_block(block).await
            }
            async fn write_block(&self, block: BlockId, data: Bytes) -> Result<()> {
                (**self).write_block(block, data).await
            }
            async fn read_partial(&self, block: BlockId, offset: u32, len: usize) -> Result<Bytes> {
                (**self).read_partial(block, offset, len).await
            }
            fn ranged_reads(&self) -> bool {
                (**self).ranged_reads()
            }
            async fn write_partial(&self, block: BlockId, offset: u32, data: Bytes) -> Result<()> {
                (**self).write_partial(block, offset, data).await
            }
            async fn discard(&self, blocks: Range<u64>) -> Result<()> {
                (**self).discard(blocks).await
            }
            async fn flush(&self) -> Result<()> {
                (**self).flush().await
            }
            async fn block_status(&self, blocks: Range<u64>) -> Result<Vec<(Range<u64>, Allocation)>> {
                (**self).block_status(blocks).await
            }
        }
    };
}

forward_block_device!(Arc<T>);
forward_block_device!(Box<T>);
forward_block_device!(&T);
