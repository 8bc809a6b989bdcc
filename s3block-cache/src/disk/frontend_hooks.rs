//! What a frontend needs of a [`DiskCache`] besides the block device: the
//! blocks only the local disk holds, and a way to stop that keeps them.

use s3block_core::BlockDevice;

use super::DiskCache;

impl<D: BlockDevice + 'static> DiskCache<D> {
    /// The blocks whose newest data is on the local disk only (written, or
    /// recovered after a crash, and not yet stored below), in order. A
    /// listing of the bucket does not show them; a cache above that learns
    /// the stored blocks from a listing must count these as stored too, or
    /// it would read them as zeros.
    pub fn unstored_blocks(&self) -> Vec<u64> {
        let mut blocks: Vec<u64> = self.shared.inner().newest_pending.keys().map(|&b| u64::from(b)).collect();
        blocks.sort_unstable();
        blocks
    }

    /// Stops at once without uploading: the directory is left as it is,
    /// dirty entries included, for the next start to recover; its lock is
    /// released. For a start that fails after the tier was opened.
    pub fn stop_keeping_dirty(&self) {
        self.abandon();
    }
}
