//! Growing a mounted volume ([`VolumeGrow`]): what `s3block resize
//! MOUNTPOINT --size NEW` asks the running mount to do.
//!
//! The size is recorded in the same two places an offline resize rewrites
//! (see `s3block_store::apply_resize`), in the same order, and only then
//! shown to the frontend:
//!
//! 1. the store device's geometry grows, so every PUT of block 0 from now
//!    on carries the new `s3backer-filesize`; nothing above accepts a block
//!    past the old end yet;
//! 2. block 0 is stored again through the cache, as a write of nothing at
//!    its start: the cache uploads it (fetching it first when it holds none
//!    of it) with the new size in its metadata, in turn with every other
//!    write of block 0, so none is lost to the rewrite. A block 0 that is
//!    zeros has no object and gets none;
//! 3. the descriptor is written with the new size: the commit point;
//! 4. the cache accepts the new blocks, and the frontend shows the new size.
//!
//! A failure in 2 or 3 takes the store device back to the old size and
//! leaves the volume at the old size (a crash there leaves what an offline
//! resize's crash leaves: it mounts at the old size, or at the new one).
//!
//! Refused, with the reason: a smaller size (a mounted volume only grows:
//! the filesystem on it may use any block), a size that is not a whole
//! number of blocks, a read-only mount, and a mount with a disk cache (its
//! directory records the volume's size; resize it unmounted).

use std::sync::Arc;

use bytes::Bytes;
use s3block_core::{BlockDevice, BlockId, Error, Geometry, Result, format_size};
use s3block_store::{
    GeometrySource, ListPlan, ObjectBlockDevice, OpenedStore, VolumeInfo, current_descriptor, plan_resize,
    write_size,
};

use crate::BlockCache;

type Cache = BlockCache<Arc<dyn BlockDevice>>;

/// Grows a mounted volume; one grow at a time.
pub struct VolumeGrow {
    /// The volume's store (retried and counted) and key prefix.
    pub(super) store: OpenedStore,
    pub(super) info: tokio::sync::Mutex<VolumeInfo>,
    pub(super) device: ObjectBlockDevice,
    pub(super) cache: Arc<Cache>,
    /// The top of the stack (the fence over the cache): block 0 is stored
    /// again through it.
    pub(super) top: Arc<dyn BlockDevice>,
    /// Why this mount cannot grow, when it cannot.
    pub(super) refusal: Option<String>,
}

impl std::fmt::Debug for VolumeGrow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeGrow")
            .field("prefix", &self.store.prefix)
            .field("refusal", &self.refusal)
            .finish()
    }
}

/// What a grow did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Grown {
    /// The geometry before.
    pub old: Geometry,
    /// The geometry now.
    pub new: Geometry,
}

impl VolumeGrow {
    /// The volume's geometry now.
    pub fn geometry(&self) -> Geometry {
        self.cache.geometry()
    }

    /// Grows the volume to `size` bytes, as the module docs say. The same
    /// size is not an error (nothing is written).
    pub async fn grow(&self, size: u64) -> Result<Grown> {
        if let Some(why) = &self.refusal {
            return Err(Error::Config(why.clone()));
        }
        let mut info = self.info.lock().await;
        let old = info.geometry;
        if size == old.size() {
            return Ok(Grown { old, new: old });
        }
        if size < old.size() {
            return Err(Error::Config(format!(
                "cannot shrink a mounted volume ({} to {}): the filesystem on it may use any of its blocks; \
                 shrink what sits on it first, unmount, then `s3block resize STORE --size {}` (refused while \
                 blocks past the new end hold data)",
                format_size(old.size()),
                format_size(size),
                format_size(size)
            )));
        }
        // Refuses a size that is not whole blocks, naming the nearest ones.
        let (store, prefix) = (self.store.store.as_ref(), self.store.prefix.as_str());
        let plan = plan_resize(store, &info, size, ListPlan { parallelism: 1, sorted: false }).await?;
        let new = plan.new;
        let descriptor = current_descriptor(store, prefix, &info).await?;
        let cell = self.device.geometry_cell();
        cell.grow(new)?;
        let committed = async {
            self.top.write_partial(BlockId(0), 0, Bytes::new()).await?;
            self.top.flush().await?;
            if let Some(d) = &descriptor {
                write_size(store, prefix, d, new.size()).await?;
            }
            Ok::<(), Error>(())
        }
        .await;
        if let Err(e) = committed {
            cell.undo_grow(old);
            return Err(e);
        }
        if let (Some(d), GeometrySource::Descriptor(opened)) = (descriptor, &mut info.source) {
            let mut d = d;
            d.size = new.size();
            *opened = d;
        }
        info.geometry = new;
        self.cache.grow(new)?;
        tracing::info!("grew the volume from {} to {}", format_size(old.size()), format_size(new.size()));
        Ok(Grown { old, new })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::frontend::{VolumeArgs, build_stack_with};
    use clap::Parser;
    use s3block_core::BlockDeviceExt;
    use s3block_store::{read_block0_geometry, read_descriptor};

    #[derive(Debug, Parser)]
    struct Frontend {
        #[command(flatten)]
        volume: VolumeArgs,
    }

    async fn stack(args: &[&str]) -> crate::frontend::Stack {
        let mut full = vec!["frontend"];
        full.extend_from_slice(args);
        let opts = Frontend::try_parse_from(full).unwrap().volume;
        build_stack_with(&opts, |_: &str| Err(std::io::Error::other("no prompt"))).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grow_records_the_size_in_both_places_then_serves_the_new_blocks() {
        let stack = stack(&["--size=1M", "--block-size=64K", "memory://"]).await;
        let dev = &stack.device;
        dev.write_at(0, Bytes::from(vec![7u8; 100])).await.unwrap();
        dev.flush().await.unwrap();
        let past = 1u64 << 20;
        assert!(dev.write_at(past, Bytes::from_static(b"x")).await.is_err(), "past the end before");

        let done = stack.grow.grow(3 << 20).await.unwrap();
        assert_eq!((done.old.size(), done.new.size()), (1 << 20, 3 << 20));
        assert_eq!(dev.geometry().size(), 3 << 20);
        let opened = &stack.grow.store;
        let (store, prefix) = (opened.store.as_ref(), opened.prefix.as_str());
        assert_eq!(read_descriptor(store, prefix).await.unwrap().unwrap().size, 3 << 20);
        let (block0, _) = read_block0_geometry(store, prefix).await.unwrap().unwrap();
        assert_eq!(block0.size(), 3 << 20, "block 0 records the new size");
        // Block 0's data is as written; the new blocks read as zeros and take writes.
        assert_eq!(dev.read_at(0, 100).await.unwrap(), vec![7u8; 100]);
        assert_eq!(dev.read_at(past, 4).await.unwrap(), vec![0u8; 4]);
        dev.write_at(past, Bytes::from_static(b"new")).await.unwrap();
        dev.flush().await.unwrap();
        assert_eq!(dev.read_at(past, 3).await.unwrap(), b"new"[..]);

        // Grown twice: the descriptor it wrote is the one it checks next.
        stack.grow.grow(4 << 20).await.unwrap();
        assert_eq!(read_descriptor(store, prefix).await.unwrap().unwrap().size, 4 << 20);
        // The same size changes nothing; smaller and ragged sizes are refused.
        let same = stack.grow.grow(4 << 20).await.unwrap();
        assert_eq!(same.old, same.new);
        let e = stack.grow.grow(2 << 20).await.unwrap_err().to_string();
        assert!(e.contains("cannot shrink a mounted volume (4M to 2M)"), "{e}");
        let e = stack.grow.grow((5 << 20) + 1).await.unwrap_err().to_string();
        assert!(e.contains("not a whole number of the volume's 64K blocks"), "{e}");
        assert_eq!(dev.geometry().size(), 4 << 20);
        (stack.release)().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_only_mount_says_why_it_cannot_grow() {
        let url = "memory://";
        let stack = stack(&["--size=1M", "--read-only", url]).await;
        let e = stack.grow.grow(2 << 20).await.unwrap_err().to_string();
        assert!(e.contains("mounted read-only"), "{e}");
        (stack.release)().await.unwrap();
    }
}
