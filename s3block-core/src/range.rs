//! Byte-range I/O over any [`BlockDevice`]: the block/offset arithmetic, once.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt, stream};

use crate::{BlockDevice, BlockId, Geometry, Result, zeros};

/// How many blocks of one byte-range request are in flight at once.
const PARALLEL_BLOCKS: usize = 64;

/// The part of a byte-range request that falls in one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The block.
    pub block: BlockId,
    /// Offset inside the block.
    pub offset: u32,
    /// Length inside the block.
    pub len: usize,
    /// Offset of this segment inside the request's buffer.
    pub pos: usize,
}

impl Segment {
    /// True when the segment covers its whole block.
    pub fn is_whole(&self, geometry: &Geometry) -> bool {
        self.offset == 0 && self.len == geometry.block_len()
    }
}

/// Splits `offset..offset+len` into per-block segments, in order.
///
/// The range must be inside the volume (see [`Geometry::check_range`]).
pub fn segments(geometry: &Geometry, offset: u64, len: usize) -> impl Iterator<Item = Segment> + use<> {
    let bs = u64::from(geometry.block_size());
    let end = offset + len as u64;
    let mut at = offset;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let block = at / bs;
        let in_block = at % bs;
        let seg_len = (bs - in_block).min(end - at);
        let seg = Segment {
            block: BlockId(block as u32),
            offset: in_block as u32,
            len: seg_len as usize,
            pos: (at - offset) as usize,
        };
        at += seg_len;
        Some(seg)
    })
}

/// The one segment of `offset..offset+len` when the range is not empty and
/// lies inside one block: the common case of the kernel's small reads and
/// writes, which then go to the device without a stream of segments (its
/// allocations and polling were a tenth of the daemon's CPU per random 4K
/// write).
fn single_segment(geometry: &Geometry, offset: u64, len: usize) -> Option<Segment> {
    let mut segs = segments(geometry, offset, len);
    match (segs.next(), segs.next()) {
        (Some(seg), None) => Some(seg),
        _ => None,
    }
}

/// Reads one segment: a whole block, or part of one.
async fn read_segment<D: BlockDevice + ?Sized>(
    device: &D,
    geometry: &Geometry,
    seg: Segment,
) -> Result<Bytes> {
    if seg.is_whole(geometry) {
        device.read_block(seg.block).await
    } else {
        device.read_partial(seg.block, seg.offset, seg.len).await
    }
}

/// Writes `data`, the bytes of one segment: a whole block, or part of one.
async fn write_segment<D: BlockDevice + ?Sized>(
    device: &D,
    geometry: &Geometry,
    seg: Segment,
    data: Bytes,
) -> Result<()> {
    if seg.is_whole(geometry) {
        device.write_block(seg.block, data).await
    } else {
        device.write_partial(seg.block, seg.offset, data).await
    }
}

/// Byte-range reads and writes over any [`BlockDevice`].
///
/// Whole blocks go to `read_block`/`write_block` (a whole-block write never
/// reads); partial blocks go to `read_partial`/`write_partial`, which a cache
/// can serve without waiting for the store. The blocks of one request are
/// handled concurrently.
#[async_trait]
pub trait BlockDeviceExt: BlockDevice {
    /// Reads `len` bytes at byte `offset` of the volume.
    async fn read_at(&self, offset: u64, len: usize) -> Result<Bytes> {
        let geometry = self.geometry();
        geometry.check_range(offset, len as u64)?;
        if let Some(seg) = single_segment(&geometry, offset, len) {
            return read_segment(self, &geometry, seg).await;
        }
        let mut parts = stream::iter(segments(&geometry, offset, len))
            .map(|seg| read_segment(self, &geometry, seg))
            .buffered(PARALLEL_BLOCKS);
        let mut out = BytesMut::with_capacity(len);
        while let Some(part) = parts.try_next().await? {
            out.extend_from_slice(&part);
        }
        Ok(out.freeze())
    }

    /// Writes `data` at byte `offset` of the volume.
    ///
    /// A write that spans several blocks hands each block a copy of its
    /// part, not a slice of `data`: a cache keeps a written block for as
    /// long as it likes, and a slice would keep all of `data` alive with it
    /// (a 4 KiB block would hold a 1 MiB write's buffer until its last
    /// block left the cache), out of the cache's count of bytes. A write
    /// inside one block is handed over as it is.
    async fn write_at(&self, offset: u64, data: Bytes) -> Result<()> {
        let geometry = self.geometry();
        geometry.check_range(offset, data.len() as u64)?;
        if let Some(seg) = single_segment(&geometry, offset, data.len()) {
            return write_segment(self, &geometry, seg, data).await;
        }
        stream::iter(segments(&geometry, offset, data.len()))
            .map(|seg| {
                let part = Bytes::copy_from_slice(&data[seg.pos..seg.pos + seg.len]);
                write_segment(self, &geometry, seg, part)
            })
            .buffer_unordered(PARALLEL_BLOCKS)
            .try_collect::<()>()
            .await
    }

    /// Makes `len` bytes at `offset` read as zeros: whole blocks are
    /// discarded, the partial blocks at either end are overwritten with zeros.
    async fn zero_range(&self, offset: u64, len: u64) -> Result<()> {
        let geometry = self.geometry();
        geometry.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let bs = u64::from(geometry.block_size());
        let end = offset + len;
        let first_whole = offset.div_ceil(bs);
        let end_whole = end / bs;
        let mut partial = Vec::with_capacity(2);
        if first_whole > end_whole {
            partial.push((offset, len));
        } else {
            if first_whole < end_whole {
                self.discard(first_whole..end_whole).await?;
            }
            if !offset.is_multiple_of(bs) {
                partial.push((offset, first_whole * bs - offset));
            }
            if !end.is_multiple_of(bs) {
                partial.push((end_whole * bs, end - end_whole * bs));
            }
        }
        for (at, n) in partial {
            let block = BlockId((at / bs) as u32);
            self.write_partial(block, (at % bs) as u32, zeros(n as usize)).await?;
        }
        Ok(())
    }
}

impl<T: BlockDevice + ?Sized> BlockDeviceExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cover_the_range() {
        let g = Geometry::new(1 << 20, 4096).unwrap();
        let segs: Vec<_> = segments(&g, 4000, 9000).collect();
        assert_eq!(
            segs,
            vec![
                Segment { block: BlockId(0), offset: 4000, len: 96, pos: 0 },
                Segment { block: BlockId(1), offset: 0, len: 4096, pos: 96 },
                Segment { block: BlockId(2), offset: 0, len: 4096, pos: 4192 },
                Segment { block: BlockId(3), offset: 0, len: 712, pos: 8288 },
            ]
        );
        assert!(segs[1].is_whole(&g));
        assert!(!segs[3].is_whole(&g));
        assert_eq!(segments(&g, 10, 0).count(), 0);
    }

    #[test]
    fn a_range_inside_one_block_is_its_only_segment() {
        let g = Geometry::new(1 << 20, 4096).unwrap();
        for (offset, len) in [(0, 4096), (8192, 1), (4000, 96), (4096 * 3 + 5, 4091), (100, 512)] {
            let all: Vec<_> = segments(&g, offset, len).collect();
            assert_eq!(single_segment(&g, offset, len), Some(all[0]), "{offset}+{len}");
            assert_eq!(all.len(), 1);
        }
        // Across a block boundary, or nothing at all: the general path.
        for (offset, len) in [(4000, 97), (0, 4097), (4095, 2), (10, 0)] {
            assert_eq!(single_segment(&g, offset, len), None, "{offset}+{len}");
        }
    }

    #[tokio::test]
    async fn reads_and_writes_inside_one_block_reach_the_right_bytes() {
        let dev = crate::MemoryDevice::new(Geometry::new(1 << 20, 4096).unwrap());
        dev.write_at(4096 * 5 + 4000, Bytes::from_static(b"last ninety-six")).await.unwrap();
        dev.write_at(4096 * 6, Bytes::from(vec![3u8; 4096])).await.unwrap();
        let block5 = dev.read_block(BlockId(5)).await.unwrap();
        assert_eq!(&block5[4000..4015], b"last ninety-six");
        assert!(block5[..4000].iter().chain(&block5[4015..]).all(|&b| b == 0));
        assert_eq!(&dev.read_at(4096 * 5 + 4005, 5).await.unwrap()[..], b"ninet");
        assert_eq!(dev.read_at(4096 * 6, 4096).await.unwrap(), Bytes::from(vec![3u8; 4096]));
        assert_eq!(&dev.read_at(4096 * 6 - 3, 5).await.unwrap()[..], b"\0\0\0\x03\x03");
    }

    #[tokio::test]
    async fn blocks_of_a_write_over_several_do_not_keep_the_writes_buffer() {
        let dev = crate::MemoryDevice::new(Geometry::new(1 << 20, 4096).unwrap());
        let data: Vec<u8> = (0..4 * 4096 + 100).map(|i| (i % 251) as u8 + 1).collect();
        let write = Bytes::from(data.clone());
        let kept = write.clone();
        dev.write_at(4096 - 100, write).await.unwrap();
        assert!(kept.is_unique(), "a stored block still holds the write's buffer");
        assert_eq!(&dev.read_at(4096 - 100, data.len()).await.unwrap()[..], &data[..]);
        // Inside one block, the write is handed over as it is.
        let one = Bytes::from(vec![9u8; 4096]);
        dev.write_at(8 * 4096, one.clone()).await.unwrap();
        assert_eq!(dev.read_block(BlockId(8)).await.unwrap().as_ptr(), one.as_ptr());
    }
}
