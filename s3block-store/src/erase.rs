//! Erasing a volume: every stored block, then its descriptor, its mount
//! record and its lock. `s3block erase` and `s3block-fuse --erase` both do
//! it through [`Erase`], each asking the user in its own way in between.

use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;
use s3block_core::{Error, Result};

use crate::handle::VolumeBuilder;
use crate::list::{any_block_stored, delete_keys};
use crate::lock::{LOCK_NAME, read_lock};
use crate::mounts::MOUNT_RECORD_NAME;
use crate::volume::DESCRIPTOR_NAME;

/// Keys deleted by one bulk request.
const DELETE_BATCH: usize = 1000;
/// Bulk delete requests at once.
const DELETES_AT_ONCE: usize = 4;

/// What erasing a volume deletes, found before anything is: the keys of its
/// stored blocks. [`plan`](Erase::plan) it, ask the user with
/// [`blocks`](Erase::blocks), then [`run`](Erase::run) it.
#[derive(Debug)]
pub struct Erase {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    keys: Vec<String>,
}

impl Erase {
    /// Finds the stored blocks of the volume `builder` opens (its geometry
    /// as the builder finds and checks it; the volume is only inspected:
    /// no password is asked, no lock is taken). A volume that is locked
    /// (mounted) is refused with [`Error::Locked`] unless `force`.
    pub async fn plan(builder: VolumeBuilder, force: bool) -> Result<Erase> {
        let store = builder.opened_store().store.clone();
        let prefix = builder.opened_store().prefix.clone();
        let sorted = builder.opened_store().list_plan.sorted;
        if !force && let Some(lock) = read_lock(store.as_ref(), &prefix).await? {
            return Err(Error::Locked {
                key: format!("{prefix}{LOCK_NAME}"),
                host: lock.host,
                since: lock.since,
            });
        }
        let volume = builder.without_lock().read_only(true).inspect_only().open().await?;
        let layout = &volume.info().layout;
        // On a store that lists keys in order, one LIST request first looks
        // for any block: an empty volume costs that one request instead of
        // one per range of a parallel listing.
        let stored = if sorted && !any_block_stored(store.as_ref(), layout).await? {
            Vec::new()
        } else {
            volume.device().list_blocks().await?
        };
        let keys = stored.iter().map(|s| layout.key(s.block)).collect();
        Ok(Erase { store, prefix, keys })
    }

    /// How many blocks are stored, to be deleted.
    pub fn blocks(&self) -> u64 {
        self.keys.len() as u64
    }

    /// Deletes every block found, in bulk requests, calling `progress` with
    /// the number deleted by each; then the descriptor, the mount record and
    /// the lock. Returns the number of blocks.
    pub async fn run(self, progress: &mut dyn FnMut(u64)) -> Result<u64> {
        let store = self.store.as_ref();
        let mut deletes = futures::stream::iter(
            self.keys.chunks(DELETE_BATCH).map(|chunk| delete_keys(store, chunk.to_vec())),
        )
        .buffer_unordered(DELETES_AT_ONCE);
        while let Some(deleted) = deletes.next().await {
            progress(deleted?);
        }
        drop(deletes);
        let meta = [DESCRIPTOR_NAME, MOUNT_RECORD_NAME, LOCK_NAME]
            .map(|name| format!("{}{name}", self.prefix))
            .to_vec();
        delete_keys(store, meta).await?;
        Ok(self.keys.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Create, StoreConfig, Volume};
    use s3block_core::{BlockDevice, BlockId, Bytes};

    #[tokio::test]
    async fn erase_deletes_the_blocks_and_the_volume_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("file://{}", dir.path().display());
        let open = || StoreConfig::new(&url).open().expect("store");
        let volume = Volume::builder(open()).size(1 << 20).block_size(4096).create(Create::New).open().await;
        let volume = volume.expect("create");
        for b in [0u32, 7, 200] {
            volume.device().write_block(BlockId(b), Bytes::from(vec![1u8; 4096])).await.expect("write");
        }
        // Locked while the volume is open: refused unless forced.
        let err = Erase::plan(Volume::builder(open()), false).await.expect_err("locked");
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        let plan = Erase::plan(Volume::builder(open()), true).await.expect("plan");
        assert_eq!(plan.blocks(), 3);
        let mut seen = 0;
        assert_eq!(plan.run(&mut |n| seen += n).await.expect("erase"), 3);
        assert_eq!(seen, 3);
        drop(volume);
        let left: Vec<_> =
            std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        let err = Volume::builder(open()).read_only(true).open().await.expect_err("no volume");
        assert!(matches!(err, Error::NoVolume { .. }), "{err}");
    }
}
